//! A lake as a manifest saw it: listings and properties come from the manifest (no LIST, no
//! HEAD), bytes from the lake, pinned to the manifest's ETags. A blob changed or removed
//! since the snapshot is an error naming it (`ESTALE`), never other bytes. Read-only.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use super::manifest::{Entry, Manifest};
use crate::store::{DynStore, ListPage, Metadata, ObjectInfo, Store, StoreError, StoreResult};

/// One object as the store keeps it: a manifest [`Entry`] in about a third of the memory
/// (no strings for times, nothing for empty metadata); a million cost ~100 MB less.
#[derive(Debug)]
struct Object {
    /// Directory markers end in `/`.
    key: Box<str>,
    etag: Box<str>,
    size: u64,
    mtime: std::time::SystemTime,
    md5: Option<Box<str>>,
    meta: Option<Box<Metadata>>,
}

impl Object {
    fn of(e: Entry) -> Object {
        let info = e.to_info();
        Object {
            key: e.key.into(),
            etag: e.etag.into(),
            size: e.size,
            mtime: info.mtime,
            md5: e.md5.map(Into::into),
            meta: (!e.meta.is_empty()).then(|| Box::new(e.meta)),
        }
    }

    fn dir(&self) -> bool {
        self.key.ends_with('/')
    }

    fn to_info(&self) -> ObjectInfo {
        ObjectInfo {
            key: self.key.trim_end_matches('/').to_string(),
            size: self.size,
            mtime: self.mtime,
            etag: self.etag.to_string(),
            is_dir_marker: self.dir(),
            content_md5: self.md5.as_deref().map(str::to_string),
            metadata: self.meta.as_deref().cloned().unwrap_or_default(),
        }
    }
}

#[derive(Debug)]
pub struct ManifestStore {
    inner: DynStore,
    /// Sorted by key.
    entries: Vec<Object>,
    id: String,
    /// Keys already reported as changed (one log line each).
    reported: Mutex<HashSet<String>>,
}

impl ManifestStore {
    pub fn wrap(inner: DynStore, manifest: Manifest) -> DynStore {
        let id = manifest.id().to_string();
        let mut entries: Vec<Object> = manifest.entries.into_iter().map(Object::of).collect();
        entries.shrink_to_fit();
        Arc::new(ManifestStore {
            inner,
            entries,
            id,
            reported: Mutex::new(HashSet::new()),
        })
    }

    fn find(&self, key: &str) -> Option<&Object> {
        self.entries
            .binary_search_by(|e| e.key.as_ref().cmp(key))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// The first entry at or after `key`.
    fn from(&self, key: &str) -> usize {
        self.entries.partition_point(|e| e.key.as_ref() < key)
    }
}

/// The smallest string after every string that starts with `prefix` (`prefix` ends in `/`,
/// and `0` follows `/`).
fn past(prefix: &str) -> String {
    let mut s = prefix[..prefix.len() - 1].to_string();
    s.push('0');
    s
}

#[async_trait]
impl Store for ManifestStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn object_id(&self, key: &str) -> String {
        self.inner.object_id(key)
    }

    /// The whole directory in one page, with blob-delimiter semantics: children skip ahead
    /// past each sub-directory, so a listing costs its entries, not the objects below them.
    async fn list_page(&self, prefix: &str, _marker: Option<String>) -> StoreResult<ListPage> {
        let mut page = ListPage::default();
        let mut i = self.from(prefix);
        while let Some(e) = self.entries.get(i) {
            let Some(rest) = e.key.strip_prefix(prefix) else {
                break;
            };
            match rest.find('/') {
                Some(slash) if slash + 1 < rest.len() || !e.dir() => {
                    let sub = format!("{prefix}{}", &rest[..=slash]);
                    i = self.from(&past(&sub));
                    page.prefixes.push(sub);
                }
                _ => {
                    page.objects.push(e.to_info());
                    i += 1;
                }
            }
        }
        Ok(page)
    }

    async fn head(&self, key: &str) -> StoreResult<Option<ObjectInfo>> {
        Ok(self.find(key).filter(|e| !e.dir()).map(Object::to_info))
    }

    async fn get_range(&self, key: &str, range: Range<u64>, etag: &str) -> StoreResult<Bytes> {
        match self.inner.get_range(key, range, etag).await {
            Err(StoreError::Changed(_) | StoreError::NotFound(_)) => {
                if self.reported.lock().unwrap().insert(key.to_string()) {
                    tracing::error!(
                        "{key}: changed since snapshot {} (its bytes then are no longer in the lake)",
                        self.id
                    );
                }
                Err(StoreError::Changed(format!(
                    "{key}: changed since snapshot {}",
                    self.id
                )))
            }
            r => r,
        }
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        Err(StoreError::Unsupported(format!(
            "{key}: a snapshot is read-only"
        )))
    }

    fn lookups_list(&self) -> bool {
        // A listing here is free: it answers every name of the directory.
        true
    }

    async fn dir_exists(&self, prefix: &str) -> StoreResult<bool> {
        Ok(self
            .entries
            .get(self.from(prefix))
            .is_some_and(|e| e.key.starts_with(prefix)))
    }

    /// The manifest loaded is the proof: no request (the first read shows whether the
    /// credentials work).
    async fn probe(&self) -> StoreResult<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use std::sync::atomic::Ordering;

    #[tokio::test]
    async fn listings_and_heads_come_from_the_manifest_and_reads_are_pinned() {
        let lake = Arc::new(MemoryStore::new());
        for k in ["a/1", "a/2", "a/b/3", "c", "d/e/f/4"] {
            lake.put(k, k);
        }
        lake.make_dir("empty", &Default::default()).await.unwrap();
        let page = crate::store::list_all(lake.as_ref(), "").await.unwrap();
        let mut all = page.objects;
        for p in ["a/", "a/b/", "d/", "d/e/", "d/e/f/"] {
            all.extend(
                crate::store::list_all(lake.as_ref(), p)
                    .await
                    .unwrap()
                    .objects,
            );
        }
        let m = Manifest::new("memory://", all.iter().map(Entry::from_info).collect()).unwrap();
        let s = ManifestStore::wrap(lake.clone(), m);
        let (lists, heads) = (
            lake.counters.lists.load(Ordering::Relaxed),
            lake.counters.heads.load(Ordering::Relaxed),
        );
        let root = s.list_page("", None).await.unwrap();
        let keys: Vec<&str> = root.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["c", "empty"]);
        assert!(root.objects[1].is_dir_marker);
        assert_eq!(root.prefixes, ["a/", "d/"]);
        let a = s.list_page("a/", None).await.unwrap();
        assert_eq!(a.objects.len(), 2);
        assert_eq!(a.prefixes, ["a/b/"]);
        assert!(s.head("a/b/3").await.unwrap().is_some());
        assert!(s.head("nope").await.unwrap().is_none());
        assert!(s.dir_exists("d/e/").await.unwrap());
        assert!(!s.dir_exists("x/").await.unwrap());
        assert_eq!(lake.counters.lists.load(Ordering::Relaxed), lists);
        assert_eq!(lake.counters.heads.load(Ordering::Relaxed), heads);

        let c = s.head("c").await.unwrap().unwrap();
        assert_eq!(&s.get_range("c", 0..1, &c.etag).await.unwrap()[..], b"c");
        lake.put("c", "changed");
        let e = s.get_range("c", 0..1, &c.etag).await.unwrap_err();
        assert_eq!(e.errno(), libc::ESTALE);
        assert!(
            e.to_string().contains("changed since snapshot sha256:"),
            "{e}"
        );
        lake.delete("a/1").await.unwrap();
        let gone = s.head("a/1").await.unwrap().unwrap();
        let e = s.get_range("a/1", 0..1, &gone.etag).await.unwrap_err();
        assert_eq!(e.errno(), libc::ESTALE, "a removed blob too");
    }
}
