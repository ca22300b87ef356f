//! Which blob-name segments can be POSIX names.

/// Why a segment of a blob name cannot be shown as a file or directory name, or `None` if it can.
pub fn invalid_reason(segment: &str) -> Option<&'static str> {
    if segment.is_empty() {
        Some("empty path segment (\"//\")")
    } else if segment == "." || segment == ".." {
        Some("\".\" or \"..\" segment")
    } else if segment.len() > 255 {
        Some("segment longer than 255 bytes")
    } else if segment.bytes().any(|b| b.is_ascii_control()) {
        // Control characters (NUL, newline, ...) are legal in blob names but break shells,
        // tools and the object_store path type alike.
        Some("control character in name")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::invalid_reason;

    #[test]
    fn rejects_names_posix_cannot_hold() {
        for bad in ["", ".", "..", &"x".repeat(256), "a\nb", "nul\0"] {
            assert!(invalid_reason(bad).is_some(), "{bad:?} should be rejected");
        }
        for good in ["a", "...", "ü-ß 1.txt", &"x".repeat(255), "a:b", "#%?"] {
            assert_eq!(invalid_reason(good), None, "{good:?} should be accepted");
        }
    }
}
