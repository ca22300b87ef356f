//! Sizes on the command line and the space of the cache's file system.

use std::io;
use std::path::Path;

/// Sizes like `100G`, `512MiB`, `1T`, `80%` (of the cache file system) or `free:15%`
/// (whatever keeps at least 15% of the file system free, re-checked at every write: the
/// cache yields to other users of the disk, such as a job's checkpoints).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CacheSize {
    Bytes(u64),
    PercentOfDisk(f64),
    KeepFree(f64),
}

impl std::str::FromStr for CacheSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if let Some(f) = t.strip_prefix("free:") {
            return match f.trim().strip_suffix('%').map(|p| p.trim().parse::<f64>()) {
                Some(Ok(v)) if (0.0..100.0).contains(&v) => Ok(CacheSize::KeepFree(v)),
                _ => Err(format!(
                    "invalid size {s:?}: free:PCT keeps PCT percent of the disk free, PCT in [0, 100)"
                )),
            };
        }
        if let Some(p) = t.strip_suffix('%') {
            return match p.trim().parse::<f64>() {
                Ok(v) if v > 0.0 && v <= 100.0 => Ok(CacheSize::PercentOfDisk(v)),
                _ => Err(format!(
                    "invalid size {s:?}: a percentage must be in (0, 100]"
                )),
            };
        }
        parse_bytes(t).map(CacheSize::Bytes)
    }
}

/// Parses `8M`, `8MiB`, `1.5G`, `4096` (binary units; B, K, M, G, T).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit
        .trim()
        .to_ascii_lowercase()
        .trim_end_matches("ib")
        .trim_end_matches('b')
    {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => {
            return Err(format!(
                "invalid size {s:?}: use a number with an optional K, M, G or T suffix"
            ))
        }
    };
    match num.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok((v * mult as f64) as u64),
        _ => Err(format!(
            "invalid size {s:?}: use a number with an optional K, M, G or T suffix"
        )),
    }
}

/// Total size of the file system holding `dir`.
pub fn fs_size(dir: &Path) -> io::Result<u64> {
    fs_space(dir).map(|(total, _)| total)
}

/// Total and available (to unprivileged users) bytes of the file system holding `dir`.
pub fn fs_space(dir: &Path) -> io::Result<(u64, u64)> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    // SAFETY: statvfs writes into the zeroed struct we own; c is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    Ok((st.f_blocks as u64 * frsize, st.f_bavail as u64 * frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_percentages() {
        assert_eq!(parse_bytes("8M").unwrap(), 8 << 20);
        assert_eq!(parse_bytes("8MiB").unwrap(), 8 << 20);
        assert_eq!(parse_bytes("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert!(parse_bytes("lots").is_err());
        assert_eq!(
            "50%".parse::<CacheSize>().unwrap(),
            CacheSize::PercentOfDisk(50.0)
        );
        assert!("150%".parse::<CacheSize>().is_err());
        assert_eq!(
            "free:15%".parse::<CacheSize>().unwrap(),
            CacheSize::KeepFree(15.0)
        );
        assert!("free:100%".parse::<CacheSize>().is_err());
        assert!("free:10G".parse::<CacheSize>().is_err());
        assert_eq!(
            "2T".parse::<CacheSize>().unwrap(),
            CacheSize::Bytes(2 << 40)
        );
    }
}
