//! The manifest: what a lake held at one moment, as a file a team can keep, share, mount and
//! compare. JSON Lines, sorted by key: a header line, then one object per line:
//!
//! ```text
//! {"format":"lakemount-manifest/1","lake":"az://acct/data/imagenet","created":"2026-12-04T17:20:00Z","objects":2,"identity":"sha256:9f2c..."}
//! {"key":"train/0001.jpg","size":104233,"etag":"\"0x8DD...\"","mtime":"2026-11-30T08:12:01Z","md5":"q1w2..."}
//! {"key":"train/empty/","size":0,"etag":"\"0x8DD...\"","mtime":"...","dir":true}
//! ```
//!
//! Why this format: it streams (a line at a time, in key order, so two manifests diff by a
//! merge), any language and `grep`, `jq`, `diff` read it, and it compresses well. The identity
//! is the SHA-256 of the object lines alone, so two snapshots of the same bytes (same keys,
//! sizes, ETags, MD5s and metadata) have the same identity whenever and wherever they were
//! taken; it is what a paper or a run record cites.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{Metadata, ObjectInfo};

pub const FORMAT: &str = "lakemount-manifest/1";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Header {
    pub format: String,
    /// The lake URL the snapshot is of (never with a SAS).
    pub lake: String,
    pub created: String,
    pub objects: u64,
    pub identity: String,
}

/// One object of the lake as the snapshot saw it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub size: u64,
    pub etag: String,
    /// Last-Modified, RFC 3339.
    pub mtime: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// A directory marker (an empty directory on a flat account, every directory on ADLS).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dir: bool,
    /// User metadata (stored times and modes among it).
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub meta: Metadata,
}

impl Entry {
    pub fn from_info(o: &ObjectInfo) -> Entry {
        let mtime: chrono::DateTime<chrono::Utc> = o.mtime.into();
        Entry {
            key: if o.is_dir_marker && !o.key.ends_with('/') {
                format!("{}/", o.key)
            } else {
                o.key.clone()
            },
            size: o.size,
            etag: o.etag.clone(),
            mtime: mtime.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            md5: o.content_md5.clone(),
            dir: o.is_dir_marker,
            meta: o.metadata.clone(),
        }
    }

    pub fn to_info(&self) -> ObjectInfo {
        ObjectInfo {
            key: self.key.trim_end_matches('/').to_string(),
            size: self.size,
            mtime: chrono::DateTime::parse_from_rfc3339(&self.mtime)
                .map(Into::into)
                .unwrap_or(std::time::UNIX_EPOCH),
            etag: self.etag.clone(),
            is_dir_marker: self.dir,
            content_md5: self.md5.clone(),
            metadata: self.meta.clone(),
        }
    }

    /// Whether `other` is the same object content (a changed ETag or size is a change).
    pub fn same_as(&self, other: &Entry) -> bool {
        self.etag == other.etag && self.size == other.size
    }
}

/// A loaded manifest: its header and its objects in key order.
#[derive(Debug)]
pub struct Manifest {
    pub header: Header,
    pub entries: Vec<Entry>,
}

/// The identity of `entries` (sorted): SHA-256 of their lines.
fn identity_of(lines: &[String]) -> String {
    let mut h = Sha256::new();
    for l in lines {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    let d = h.finalize();
    format!(
        "sha256:{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

impl Manifest {
    /// A manifest of `entries` (any order) of `lake`, taken now.
    pub fn new(lake: &str, mut entries: Vec<Entry>) -> Result<Manifest> {
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        entries.dedup_by(|a, b| a.key == b.key);
        let lines = entries
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Manifest {
            header: Header {
                format: FORMAT.into(),
                lake: lake.into(),
                created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                objects: entries.len() as u64,
                identity: identity_of(&lines),
            },
            entries,
        })
    }

    /// Writes it to `path` whole or not at all (a temporary file, then a rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("partial");
        let written = (|| -> Result<()> {
            let mut w = BufWriter::new(
                std::fs::File::create(&tmp)
                    .with_context(|| format!("cannot create {}", tmp.display()))?,
            );
            serde_json::to_writer(&mut w, &self.header)?;
            w.write_all(b"\n")?;
            for e in &self.entries {
                serde_json::to_writer(&mut w, e)?;
                w.write_all(b"\n")?;
            }
            w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&tmp, path)?;
            Ok(())
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.with_context(|| format!("cannot write the manifest {}", path.display()))
    }

    /// Reads and checks a manifest: its format, its key order, and that its objects are the
    /// ones its identity names (a manifest edited by hand, cut short or damaged is refused).
    pub fn load(path: &Path) -> Result<Manifest> {
        let f = std::fs::File::open(path)
            .with_context(|| format!("cannot read the manifest {}", path.display()))?;
        let mut lines = BufReader::new(f).lines();
        let at = |n: usize| format!("manifest {}, line {n}", path.display());
        let first = lines
            .next()
            .ok_or_else(|| anyhow!("manifest {}: empty", path.display()))??;
        let header: Header = serde_json::from_str(&first)
            .map_err(|e| anyhow!("{}: not a lakemount manifest header ({e})", at(1)))?;
        if header.format != FORMAT {
            bail!(
                "{}: format {:?}, this lakemount reads {FORMAT}",
                at(1),
                header.format
            );
        }
        let mut entries = Vec::with_capacity(header.objects.min(1 << 24) as usize);
        let mut h = Sha256::new();
        for (i, line) in lines.enumerate() {
            let line = line.with_context(|| at(i + 2))?;
            let e: Entry =
                serde_json::from_str(&line).map_err(|err| anyhow!("{}: {err}", at(i + 2)))?;
            if entries.last().is_some_and(|p: &Entry| p.key >= e.key) {
                bail!("{}: {:?} is out of key order", at(i + 2), e.key);
            }
            // The identity covers the lines as written.
            h.update(serde_json::to_string(&e)?.as_bytes());
            h.update(b"\n");
            entries.push(e);
        }
        let d = h.finalize();
        let identity = format!(
            "sha256:{}",
            d.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        if identity != header.identity || entries.len() as u64 != header.objects {
            bail!(
                "manifest {}: its {} objects are not the ones its identity names (damaged or edited)",
                path.display(),
                entries.len()
            );
        }
        Ok(Manifest { header, entries })
    }

    /// Only the header of the manifest at `path` (its first line).
    pub fn load_header(path: &Path) -> Result<Header> {
        let f = std::fs::File::open(path)
            .with_context(|| format!("cannot read the manifest {}", path.display()))?;
        let mut first = String::new();
        BufReader::new(f).read_line(&mut first)?;
        let header: Header = serde_json::from_str(first.trim_end()).map_err(|e| {
            anyhow!(
                "manifest {}, line 1: not a lakemount manifest header ({e})",
                path.display()
            )
        })?;
        if header.format != FORMAT {
            bail!(
                "manifest {}: format {:?}, this lakemount reads {FORMAT}",
                path.display(),
                header.format
            );
        }
        Ok(header)
    }

    /// The short form of the identity, for messages.
    pub fn id(&self) -> &str {
        let id = &self.header.identity;
        &id[..id.len().min(7 + 12)]
    }
}

/// What changed from `a` to `b`: added, removed and changed keys, in key order.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl Diff {
    pub fn of(a: &[Entry], b: &[Entry]) -> Diff {
        let mut d = Diff::default();
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) if x.key == y.key => {
                    if !x.same_as(y) {
                        d.changed.push(x.key.clone());
                    }
                    i += 1;
                    j += 1;
                }
                (Some(x), Some(y)) if x.key < y.key => {
                    d.removed.push(x.key.clone());
                    i += 1;
                }
                (Some(x), None) => {
                    d.removed.push(x.key.clone());
                    i += 1;
                }
                (_, Some(y)) => {
                    d.added.push(y.key.clone());
                    j += 1;
                }
                (None, None) => unreachable!(),
            }
        }
        d
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    pub fn summary(&self) -> String {
        format!(
            "{} added, {} removed, {} changed",
            self.added.len(),
            self.removed.len(),
            self.changed.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, etag: &str) -> Entry {
        Entry {
            key: key.into(),
            size: 3,
            etag: etag.into(),
            mtime: "2026-12-01T00:00:00Z".into(),
            md5: None,
            dir: false,
            meta: Metadata::new(),
        }
    }

    #[test]
    fn a_manifest_round_trips_and_its_identity_is_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::new("az://a/c", vec![entry("b", "2"), entry("a", "1")]).unwrap();
        assert_eq!(m.entries[0].key, "a", "sorted");
        let p = dir.path().join("m.jsonl");
        m.write(&p).unwrap();
        let back = Manifest::load(&p).unwrap();
        assert_eq!(back.entries, m.entries);
        assert_eq!(back.header, m.header);
        let again = Manifest::new("az://a/c", vec![entry("a", "1"), entry("b", "2")]).unwrap();
        assert_eq!(
            again.header.identity, m.header.identity,
            "same objects, same identity"
        );
        let other = Manifest::new("az://a/c", vec![entry("a", "1"), entry("b", "3")]).unwrap();
        assert_ne!(other.header.identity, m.header.identity);

        // Edited by hand: refused.
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("\"2\"", "\"9\"");
        std::fs::write(&p, text).unwrap();
        let e = Manifest::load(&p).unwrap_err().to_string();
        assert!(e.contains("not the ones its identity names"), "{e}");
        std::fs::write(&p, "garbage\n").unwrap();
        assert!(Manifest::load(&p)
            .unwrap_err()
            .to_string()
            .contains("not a lakemount manifest header"));
    }

    #[test]
    fn a_diff_names_added_removed_and_changed_keys() {
        let a = [entry("a", "1"), entry("b", "1"), entry("c", "1")];
        let b = [entry("b", "2"), entry("c", "1"), entry("d", "1")];
        let d = Diff::of(&a, &b);
        assert_eq!(d.added, ["d"]);
        assert_eq!(d.removed, ["a"]);
        assert_eq!(d.changed, ["b"]);
        assert_eq!(d.summary(), "1 added, 1 removed, 1 changed");
        assert!(Diff::of(&a, &a).is_empty());
    }
}
