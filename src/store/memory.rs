//! An in-memory store with blob semantics, for unit tests and benchmarks.
//! It accepts any key (including ones that are not valid POSIX paths) so the filesystem
//! core's handling of odd names can be tested without a server.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    md5_base64, Committed, ListPage, Metadata, ObjectInfo, PutOptions, Store, StoreError,
    StoreResult,
};

#[derive(Clone, Debug)]
struct Object {
    data: Bytes,
    etag: String,
    mtime: SystemTime,
    is_dir_marker: bool,
    content_md5: Option<String>,
    metadata: Metadata,
}

/// Request counters, so tests can prove what reached the store.
#[derive(Debug, Default)]
pub struct Counters {
    pub lists: AtomicU64,
    pub heads: AtomicU64,
    pub gets: AtomicU64,
    /// Blocks staged plus whole objects written.
    pub puts: AtomicU64,
    /// Bytes those carried.
    pub put_bytes: AtomicU64,
}

/// Block ids and their bytes, in order.
type Blocks = Vec<(String, Bytes)>;

#[derive(Debug)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Object>>,
    page_size: usize,
    next_etag: AtomicU64,
    /// Staged, uncommitted blocks per (key, block id): invisible, like Azure's.
    staged: Mutex<HashMap<(String, String), Bytes>>,
    /// The committed block list of each object a block commit made, with the ETag it made:
    /// valid while the object still has that ETag (a metadata change keeps it, as on Azure).
    committed: Mutex<HashMap<String, (String, Blocks)>>,
    hierarchical: bool,
    /// While set, every write fails as if the network were down (fault injection).
    pub fail_writes: AtomicBool,
    /// Writes (puts, copies, deletes, markers) left before every write fails as if the
    /// network went down; negative: no limit (fault injection: a crash after N writes).
    pub writes_left: AtomicI64,
    /// Listing faults (injection): 1, every page names the same continuation marker; 2, every
    /// page is empty and names a new marker.
    pub broken_listing: AtomicU64,
    pub counters: Counters,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::with_page_size(1000)
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store whose listings return at most `page_size` entries per page.
    pub fn with_page_size(page_size: usize) -> Self {
        MemoryStore {
            objects: Mutex::new(BTreeMap::new()),
            page_size: page_size.max(1),
            next_etag: AtomicU64::new(1),
            staged: Mutex::new(HashMap::new()),
            committed: Mutex::new(HashMap::new()),
            hierarchical: false,
            fail_writes: AtomicBool::new(false),
            writes_left: AtomicI64::new(-1),
            broken_listing: AtomicU64::new(0),
            counters: Counters::default(),
        }
    }

    /// A store that behaves like a hierarchical-namespace account: atomic renames.
    pub fn hierarchical() -> Self {
        MemoryStore {
            hierarchical: true,
            ..Self::default()
        }
    }

    fn insert_with(
        &self,
        key: &str,
        data: Bytes,
        is_dir_marker: bool,
        md5: Option<String>,
        metadata: Metadata,
    ) -> Committed {
        let etag = format!("\"0x{:X}\"", self.next_etag.fetch_add(1, Ordering::Relaxed));
        let mtime = SystemTime::now();
        let obj = Object {
            data,
            etag: etag.clone(),
            mtime,
            is_dir_marker,
            content_md5: md5,
            metadata,
        };
        self.objects.lock().unwrap().insert(key.to_string(), obj);
        Committed { etag, mtime }
    }

    fn insert(&self, key: &str, data: Bytes, is_dir_marker: bool) {
        self.insert_with(key, data, is_dir_marker, None, Metadata::new());
    }

    /// The content of `key`, if it exists.
    pub fn data(&self, key: &str) -> Option<Bytes> {
        self.objects
            .lock()
            .unwrap()
            .get(key)
            .map(|o| o.data.clone())
    }

    /// What a head of `key` would answer, without counting a request.
    pub fn head_now(&self, key: &str) -> Option<ObjectInfo> {
        self.objects
            .lock()
            .unwrap()
            .get(key)
            .map(|o| Self::info(key, o))
    }

    /// Every key, in order.
    pub fn keys(&self) -> Vec<String> {
        self.objects.lock().unwrap().keys().cloned().collect()
    }

    /// Staged blocks not yet committed (or abandoned).
    /// The committed blocks of `key` if the object there is still the one they made.
    fn committed_now(&self, key: &str) -> Vec<(String, Bytes)> {
        let etag = self
            .objects
            .lock()
            .unwrap()
            .get(key)
            .map(|o| o.etag.clone());
        match (self.committed.lock().unwrap().get(key), etag) {
            (Some((made, blocks)), Some(etag)) if *made == etag => blocks.clone(),
            _ => Vec::new(),
        }
    }

    pub fn staged_blocks(&self) -> usize {
        self.staged.lock().unwrap().len()
    }

    fn check_writes(&self, key: &str) -> StoreResult<()> {
        let left = self
            .writes_left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n > 0).then(|| n - 1)
            });
        if self.fail_writes.load(Ordering::Relaxed) || left == Err(0) {
            return Err(StoreError::Unreachable(format!(
                "{key}: injected write failure"
            )));
        }
        Ok(())
    }

    pub fn put(&self, key: &str, data: impl Into<Bytes>) {
        self.insert(key, data.into(), false);
    }

    pub fn put_dir_marker(&self, key: &str) {
        self.insert(key, Bytes::new(), true);
    }

    pub fn remove(&self, key: &str) -> bool {
        self.objects.lock().unwrap().remove(key).is_some()
    }

    fn info(key: &str, obj: &Object) -> ObjectInfo {
        ObjectInfo {
            key: key.to_string(),
            size: obj.data.len() as u64,
            mtime: obj.mtime,
            etag: obj.etag.clone(),
            is_dir_marker: obj.is_dir_marker,
            content_md5: obj.content_md5.clone(),
            metadata: obj.metadata.clone(),
        }
    }
}

enum Item {
    Object(ObjectInfo),
    Prefix(String),
}

impl Item {
    fn name(&self) -> &str {
        match self {
            Item::Object(o) => &o.key,
            Item::Prefix(p) => p,
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn describe(&self) -> String {
        "memory://".to_string()
    }

    async fn list_page(&self, prefix: &str, marker: Option<String>) -> StoreResult<ListPage> {
        let n = self.counters.lists.fetch_add(1, Ordering::Relaxed);
        match self.broken_listing.load(Ordering::Relaxed) {
            1 => {
                return Ok(ListPage {
                    next: Some("again".into()),
                    ..ListPage::default()
                })
            }
            2 => {
                return Ok(ListPage {
                    next: Some(format!("m{n}")),
                    ..ListPage::default()
                })
            }
            _ => {}
        }
        // Build the delimiter view of this level, in key order, then cut one page after `marker`.
        let mut items: Vec<Item> = Vec::new();
        {
            let objects = self.objects.lock().unwrap();
            for (key, obj) in objects.range(prefix.to_string()..) {
                let Some(rest) = key.strip_prefix(prefix) else {
                    break;
                };
                match rest.find('/') {
                    Some(i) => {
                        let p = format!("{prefix}{}", &rest[..=i]);
                        if !matches!(items.last(), Some(Item::Prefix(last)) if *last == p) {
                            items.push(Item::Prefix(p));
                        }
                    }
                    None if !rest.is_empty() => items.push(Item::Object(Self::info(key, obj))),
                    None => {}
                }
            }
        }
        let start = match &marker {
            Some(m) => items
                .iter()
                .position(|i| i.name() > m.as_str())
                .unwrap_or(items.len()),
            None => 0,
        };
        let total = items.len();
        let end = (start + self.page_size).min(total);
        let mut page = ListPage::default();
        for item in items.drain(start..end) {
            if end < total {
                page.next = Some(item.name().to_string());
            }
            match item {
                Item::Object(o) => page.objects.push(o),
                Item::Prefix(p) => page.prefixes.push(p),
            }
        }
        Ok(page)
    }

    async fn head(&self, key: &str) -> StoreResult<Option<ObjectInfo>> {
        self.counters.heads.fetch_add(1, Ordering::Relaxed);
        Ok(self
            .objects
            .lock()
            .unwrap()
            .get(key)
            .map(|o| Self::info(key, o)))
    }

    async fn get_range(&self, key: &str, range: Range<u64>, etag: &str) -> StoreResult<Bytes> {
        self.counters.gets.fetch_add(1, Ordering::Relaxed);
        let objects = self.objects.lock().unwrap();
        let obj = objects
            .get(key)
            .ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        if obj.etag != etag {
            return Err(StoreError::Changed(key.to_string()));
        }
        let len = obj.data.len() as u64;
        let (start, end) = (range.start.min(len), range.end.min(len));
        Ok(obj.data.slice(start as usize..end as usize))
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.check_writes(key)?;
        if self.remove(key) {
            Ok(())
        } else {
            Err(StoreError::NotFound(key.to_string()))
        }
    }

    async fn put_block(&self, key: &str, block_id: &str, data: Bytes) -> StoreResult<()> {
        self.check_writes(key)?;
        self.counters.puts.fetch_add(1, Ordering::Relaxed);
        let n = data.len() as u64;
        self.counters.put_bytes.fetch_add(n, Ordering::Relaxed);
        self.staged
            .lock()
            .unwrap()
            .insert((key.to_string(), block_id.to_string()), data);
        Ok(())
    }

    async fn commit_blocks(
        &self,
        key: &str,
        blocks: &[String],
        opts: &PutOptions,
    ) -> StoreResult<Committed> {
        self.check_writes(key)?;
        let mut staged = self.staged.lock().unwrap();
        let now = self.committed_now(key);
        let mut data = Vec::new();
        let mut list = Vec::new();
        for id in blocks {
            // `<Latest>`: a staged block, else one of the object's committed blocks.
            let block = staged
                .get(&(key.to_string(), id.clone()))
                .or_else(|| now.iter().find(|(c, _)| c == id).map(|(_, b)| b))
                .ok_or_else(|| {
                    StoreError::BlocksMissing(format!("{key}: block {id} was not staged"))
                })?;
            data.extend_from_slice(block);
            list.push((id.clone(), block.clone()));
        }
        // Committing drops every staged block of the key, as Azure does.
        staged.retain(|(k, _), _| k != key);
        drop(staged);
        let md5 = opts.content_md5.as_ref().map(md5_base64);
        let done = self.insert_with(key, Bytes::from(data), false, md5, opts.metadata.clone());
        self.committed
            .lock()
            .unwrap()
            .insert(key.to_string(), (done.etag.clone(), list));
        Ok(done)
    }

    async fn put(&self, key: &str, data: Bytes, opts: &PutOptions) -> StoreResult<Committed> {
        self.check_writes(key)?;
        self.counters.puts.fetch_add(1, Ordering::Relaxed);
        let n = data.len() as u64;
        self.counters.put_bytes.fetch_add(n, Ordering::Relaxed);
        let md5 = opts.content_md5.as_ref().map(md5_base64);
        Ok(self.insert_with(key, data, false, md5, opts.metadata.clone()))
    }

    async fn set_metadata(&self, key: &str, meta: &Metadata) -> StoreResult<Committed> {
        self.check_writes(key)?;
        let obj = self
            .objects
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        let blocks = self.committed_now(key);
        let done = self.insert_with(
            key,
            obj.data,
            obj.is_dir_marker,
            obj.content_md5,
            meta.clone(),
        );
        if !blocks.is_empty() {
            self.committed
                .lock()
                .unwrap()
                .insert(key.to_string(), (done.etag.clone(), blocks));
        }
        Ok(done)
    }

    fn keeps_committed_blocks(&self) -> bool {
        true
    }

    async fn committed_blocks(&self, key: &str) -> StoreResult<Option<super::BlockList>> {
        let Some(etag) = self
            .objects
            .lock()
            .unwrap()
            .get(key)
            .map(|o| o.etag.clone())
        else {
            return Ok(None);
        };
        let blocks = self.committed_now(key);
        Ok((!blocks.is_empty()).then(|| super::BlockList {
            etag,
            blocks: blocks
                .into_iter()
                .map(|(id, b)| (id, b.len() as u64))
                .collect(),
        }))
    }

    async fn make_dir(&self, key: &str, meta: &Metadata) -> StoreResult<()> {
        self.check_writes(key)?;
        self.insert_with(key, Bytes::new(), true, None, meta.clone());
        Ok(())
    }

    async fn remove_dir(&self, key: &str) -> StoreResult<()> {
        self.check_writes(key)?;
        let mut objects = self.objects.lock().unwrap();
        if objects.get(key).is_some_and(|o| o.is_dir_marker) {
            objects.remove(key);
        }
        Ok(())
    }

    async fn copy(&self, from: &str, to: &str) -> StoreResult<()> {
        self.check_writes(to)?;
        let obj = self
            .objects
            .lock()
            .unwrap()
            .get(from)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(from.to_string()))?;
        self.insert_with(
            to,
            obj.data,
            obj.is_dir_marker,
            obj.content_md5,
            obj.metadata,
        );
        Ok(())
    }

    async fn hierarchical(&self) -> bool {
        self.hierarchical
    }

    async fn rename(&self, from: &str, to: &str) -> StoreResult<()> {
        if !self.hierarchical {
            return Err(StoreError::Unsupported(format!("rename of {from}")));
        }
        self.check_writes(to)?;
        let mut objects = self.objects.lock().unwrap();
        let sub = format!("{from}/");
        let moving: Vec<String> = objects
            .keys()
            .filter(|k| *k == from || k.starts_with(&sub))
            .cloned()
            .collect();
        if moving.is_empty() {
            return Err(StoreError::NotFound(from.to_string()));
        }
        for k in moving {
            let obj = objects.remove(&k).expect("listed");
            objects.insert(format!("{to}{}", &k[from.len()..]), obj);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::list_all;

    #[tokio::test]
    async fn a_listing_that_never_ends_fails_in_bounded_pages() {
        // A repeated marker is caught at its second sight; endless empty pages after 100.
        for (fault, pages) in [(1, 2), (2, 100)] {
            let s = MemoryStore::new();
            s.put("a", "a");
            s.broken_listing.store(fault, Ordering::Relaxed);
            let e = list_all(&s, "").await.unwrap_err();
            assert!(e.to_string().contains("does not end"), "{e}");
            assert_eq!(e.errno(), libc::EIO);
            assert!(!e.is_transient(), "not retried");
            assert_eq!(s.counters.lists.load(Ordering::Relaxed), pages);
        }
    }

    #[tokio::test]
    async fn listing_has_blob_delimiter_semantics_across_pages() {
        let s = MemoryStore::with_page_size(2);
        s.put("a.txt", "a");
        s.put("d/x", "x");
        s.put("d/y/z", "z");
        s.put("e", "e");
        s.put("f/g", "g");
        let root = list_all(&s, "").await.unwrap();
        let names: Vec<_> = root.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(names, ["a.txt", "e"]);
        assert_eq!(root.prefixes, ["d/", "f/"]);
        let d = list_all(&s, "d/").await.unwrap();
        assert_eq!(d.objects.len(), 1);
        assert_eq!(d.prefixes, ["d/y/"]);
        assert!(
            s.counters.lists.load(Ordering::Relaxed) >= 3,
            "root took several pages"
        );
    }

    #[tokio::test]
    async fn get_range_refuses_a_changed_object() {
        let s = MemoryStore::new();
        s.put("k", "hello");
        let etag = s.head("k").await.unwrap().unwrap().etag;
        assert_eq!(&s.get_range("k", 1..3, &etag).await.unwrap()[..], b"el");
        assert_eq!(&s.get_range("k", 3..99, &etag).await.unwrap()[..], b"lo");
        s.put("k", "world");
        assert!(matches!(
            s.get_range("k", 0..5, &etag).await,
            Err(StoreError::Changed(_))
        ));
    }
}
