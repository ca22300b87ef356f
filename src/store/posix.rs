//! POSIX attributes kept in blob metadata, under the names rclone uses (`mtime` in RFC 3339,
//! `mode` in octal, `uid` and `gid` in decimal), so a tree uploaded by either tool shows its
//! times and modes through the other. A blob without them shows its Last-Modified and the
//! mount's `--file-mode`/`--uid`/`--gid`.

use std::time::SystemTime;

use chrono::{DateTime, SecondsFormat, Utc};

use super::Metadata;

pub const MTIME: &str = "mtime";
pub const MODE: &str = "mode";
pub const UID: &str = "uid";
pub const GID: &str = "gid";

/// The attributes an object's metadata sets; `None` for what it leaves to the defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PosixAttrs {
    pub mtime: Option<SystemTime>,
    /// Permission bits (the file-type bits rclone also writes are dropped).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl PosixAttrs {
    /// What `meta` sets; values that do not parse are ignored (another tool's, or damaged).
    pub fn from_metadata(meta: &Metadata) -> Self {
        let num = |k: &str| meta.get(k).and_then(|v| v.trim().parse::<u32>().ok());
        PosixAttrs {
            mtime: meta
                .get(MTIME)
                .and_then(|v| DateTime::parse_from_rfc3339(v.trim()).ok())
                .map(SystemTime::from),
            mode: meta.get(MODE).and_then(|v| {
                let v = v.trim();
                let v = v.strip_prefix("0o").unwrap_or(v);
                u32::from_str_radix(v, 8).ok().map(|m| m & 0o7777)
            }),
            uid: num(UID),
            gid: num(GID),
        }
    }

    /// `None` when nothing is set, so entries without stored attributes cost one word.
    pub fn boxed(self) -> Option<Box<PosixAttrs>> {
        (self != PosixAttrs::default()).then(|| Box::new(self))
    }

    /// Writes what is set into `meta`, leaving its other names alone.
    pub fn store_into(&self, meta: &mut Metadata) {
        if let Some(t) = self.mtime {
            let t: DateTime<Utc> = t.into();
            meta.insert(MTIME.into(), t.to_rfc3339_opts(SecondsFormat::Nanos, true));
        }
        if let Some(m) = self.mode {
            meta.insert(MODE.into(), format!("{:o}", m & 0o7777));
        }
        if let Some(u) = self.uid {
            meta.insert(UID.into(), u.to_string());
        }
        if let Some(g) = self.gid {
            meta.insert(GID.into(), g.to_string());
        }
    }

    /// `other`'s settings over these.
    pub fn merge(&mut self, other: &PosixAttrs) {
        self.mtime = other.mtime.or(self.mtime);
        self.mode = other.mode.or(self.mode);
        self.uid = other.uid.or(self.uid);
        self.gid = other.gid.or(self.gid);
    }

    /// The attributes of a local file, as `lakemount upload` stores them.
    pub fn of_file(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        PosixAttrs {
            mtime: meta.modified().ok(),
            mode: Some(meta.mode() & 0o7777),
            uid: Some(meta.uid()),
            gid: Some(meta.gid()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    #[test]
    fn reads_what_rclone_writes_and_ignores_what_does_not_parse() {
        let meta: Metadata = [
            ("mtime", "2026-11-25T03:39:11.123456789+01:00"),
            ("mode", "100664"),
            ("uid", "1000"),
            ("gid", "x"),
            ("other", "kept"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let a = PosixAttrs::from_metadata(&meta);
        let want = DateTime::parse_from_rfc3339("2026-11-25T02:39:11.123456789Z").unwrap();
        assert_eq!(a.mtime, Some(SystemTime::from(want)));
        assert_eq!((a.mode, a.uid, a.gid), (Some(0o664), Some(1000), None));
        assert_eq!(PosixAttrs::from_metadata(&Metadata::new()).boxed(), None);
    }

    proptest! {
        #[test]
        fn stored_attributes_come_back_exactly(
            secs in 0u64..4_000_000_000, nanos in 0u32..1_000_000_000,
            mode in 0u32..0o7777, uid: u32, gid: u32,
        ) {
            let a = PosixAttrs {
                mtime: Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)),
                mode: Some(mode),
                uid: Some(uid),
                gid: Some(gid),
            };
            let mut meta = Metadata::new();
            meta.insert("other".into(), "kept".into());
            a.store_into(&mut meta);
            prop_assert_eq!(PosixAttrs::from_metadata(&meta), a);
            prop_assert_eq!(meta.get("other").map(String::as_str), Some("kept"));
        }
    }
}
