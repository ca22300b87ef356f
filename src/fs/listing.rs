//! Turning one page-set of a store listing into the entries of one POSIX directory.

use std::time::SystemTime;

use indexmap::IndexMap;

use crate::store::posix::PosixAttrs;
use crate::store::{ListPage, ObjectInfo};

/// What a name in a directory is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File {
        size: u64,
        /// The stored `mtime` when the object has one, else its Last-Modified.
        mtime: SystemTime,
        etag: String,
        /// Modes and owners stored with the object (`None` for most: one word).
        posix: Option<Box<PosixAttrs>>,
    },
    Dir {
        /// Only real directories (hierarchical-namespace markers) have one.
        mtime: Option<SystemTime>,
    },
}

impl EntryKind {
    /// A file as the store describes it, with the attributes its metadata stores.
    pub fn file(o: &ObjectInfo) -> EntryKind {
        let posix = PosixAttrs::from_metadata(&o.metadata);
        EntryKind::File {
            size: o.size,
            mtime: posix.mtime.unwrap_or(o.mtime),
            etag: o.etag.clone(),
            posix: posix.boxed(),
        }
    }

    pub fn is_dir(&self) -> bool {
        matches!(self, EntryKind::Dir { .. })
    }
}

/// The entries of one directory, in listing order (by name within a page). An entry's index
/// is its readdir offset, so a listing grows by appending and never reorders.
#[derive(Clone, Debug, Default)]
pub struct DirListing {
    pub entries: IndexMap<String, EntryKind>,
}

impl DirListing {
    /// Appends the entries of a later page. A name seen on an earlier page keeps its index:
    /// a directory replaces a file of the same name there (directories win, as in `build`),
    /// anything else seen twice (a directory's marker and its prefix) is dropped. Returns the
    /// names of files a directory hid.
    pub fn append(&mut self, page: DirListing) -> Vec<String> {
        let mut hidden = Vec::new();
        for (name, kind) in page.entries {
            match self.entries.get_mut(&name) {
                None => {
                    self.entries.insert(name, kind);
                }
                Some(old) if kind.is_dir() && !old.is_dir() => {
                    *old = kind;
                    hidden.push(name);
                }
                Some(old) if !kind.is_dir() && old.is_dir() => hidden.push(name),
                Some(_) => {}
            }
        }
        hidden
    }
}

/// A name in a listing that cannot be shown, with the full key and the reason.
#[derive(Debug, PartialEq, Eq)]
pub struct Skipped {
    pub key: String,
    pub reason: &'static str,
}

/// Builds the directory at `prefix` from its listing. Sub-directories come from common
/// prefixes and from directory markers, merged so each appears once; when a file and a
/// directory share a name the directory wins and the file is reported as skipped.
pub fn build(prefix: &str, page: ListPage) -> (DirListing, Vec<Skipped>) {
    let mut listing = DirListing::default();
    let mut skipped = Vec::new();
    let name_of = |key: &str| -> Option<String> { key.strip_prefix(prefix).map(str::to_string) };

    // Versions kept for open readers (see `retain`) are not part of the tree.
    let kept = |key: &str| prefix.is_empty() && key.starts_with(super::retain::RETAINED);
    for p in &page.prefixes {
        let Some(name) = name_of(p.strip_suffix('/').unwrap_or(p)) else {
            continue;
        };
        if kept(p) {
            continue;
        }
        if let Some(reason) = super::names::invalid_reason(&name) {
            skipped.push(Skipped {
                key: p.clone(),
                reason,
            });
            continue;
        }
        listing.entries.insert(name, EntryKind::Dir { mtime: None });
    }
    for o in page.objects {
        let Some(name) = name_of(&o.key) else {
            continue;
        };
        if kept(&o.key) {
            continue;
        }
        if let Some(reason) = super::names::invalid_reason(&name) {
            skipped.push(Skipped { key: o.key, reason });
            continue;
        }
        if o.is_dir_marker {
            listing.entries.insert(
                name,
                EntryKind::Dir {
                    mtime: Some(o.mtime),
                },
            );
        } else if listing.entries.get(&name).is_some_and(EntryKind::is_dir) {
            skipped.push(Skipped {
                key: o.key,
                reason: "a directory of the same name hides this file",
            });
        } else {
            let kind = EntryKind::file(&o);
            listing.entries.insert(name, kind);
        }
    }
    listing.entries.sort_unstable_keys();
    (listing, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ObjectInfo;

    fn obj(key: &str, marker: bool) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            size: if marker { 0 } else { 3 },
            mtime: SystemTime::UNIX_EPOCH,
            etag: "\"e\"".into(),
            is_dir_marker: marker,
            content_md5: None,
            metadata: Default::default(),
        }
    }

    #[test]
    fn markers_and_prefixes_make_one_directory_and_directories_win() {
        let page = ListPage {
            objects: vec![
                obj("d/a", false),
                obj("d/empty", true),
                obj("d/full", true),
                obj("d/x", false),
            ],
            prefixes: vec!["d/full/".into(), "d/x/".into(), "d//".into()],
            next: None,
        };
        let (listing, skipped) = build("d/", page);
        let kinds: Vec<_> = listing
            .entries
            .iter()
            .map(|(n, k)| (n.as_str(), k.is_dir()))
            .collect();
        assert_eq!(
            kinds,
            [("a", false), ("empty", true), ("full", true), ("x", true)]
        );
        let keys: Vec<_> = skipped.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, ["d//", "d/x"]);
    }
}
