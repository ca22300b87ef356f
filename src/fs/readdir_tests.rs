//! Directories read page by page: what readdir shows while the lake lists, and changes,
//! under it.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::inode::ROOT_INO;
use super::readdir::read_all;
use super::*;
use crate::reader::DirectReadPath;
use crate::store::memory::MemoryStore;

fn fs_over(store: Arc<MemoryStore>) -> LakeFs {
    let cfg = FsConfig {
        metadata_ttl: Duration::from_secs(60),
        ..FsConfig::default()
    };
    LakeFs::new(store.clone(), DirectReadPath::new(store), cfg)
}

fn lists(s: &MemoryStore) -> u64 {
    s.counters.lists.load(Ordering::Relaxed)
}

/// One readdir reply of at most `room` entries from `offset`: (name, next offset).
async fn reply(fs: &LakeFs, fh: u64, offset: u64, room: usize) -> FsResult<Vec<(String, u64)>> {
    let mut out = Vec::new();
    fs.readdir(fh, offset, false, &mut |e| {
        if out.len() == room {
            return true;
        }
        out.push((e.name.to_string(), e.next_offset));
        false
    })
    .await?;
    Ok(out)
}

fn names(entries: &[(String, u64, Attr)]) -> Vec<&str> {
    entries
        .iter()
        .map(|(n, _, _)| n.as_str())
        .filter(|n| *n != "." && *n != "..")
        .collect()
}

#[tokio::test]
async fn the_first_entries_of_a_large_directory_come_after_one_page() {
    let s = Arc::new(MemoryStore::with_page_size(100));
    for i in 0..1000 {
        s.put(&format!("big/f{i:04}"), "x");
    }
    let fs = fs_over(s.clone());
    let big = fs.lookup(ROOT_INO, "big").await.unwrap().ino;
    let before = lists(&s);
    let fh = fs.opendir(big).await.unwrap();
    assert_eq!(lists(&s), before, "opendir lists nothing");
    let first = reply(&fs, fh, 0, usize::MAX).await.unwrap();
    assert_eq!(
        first.len(),
        2 + 100,
        "the dots and the first page, nothing more"
    );
    assert_eq!(lists(&s), before + 1, "one page listed");
    let rest = read_all(&fs, fh, false, 64).await;
    assert_eq!(names(&rest).len(), 1000);
    assert_eq!(lists(&s), before + 10, "each page listed once");
    fs.releasedir(fh);
}

#[tokio::test]
async fn a_complete_listing_is_cached_and_concurrent_readers_share_one() {
    let s = Arc::new(MemoryStore::with_page_size(10));
    for i in 0..95 {
        s.put(&format!("f{i:03}"), "x");
    }
    let fs = fs_over(s.clone());
    let (a, b) = (
        fs.opendir(ROOT_INO).await.unwrap(),
        fs.opendir(ROOT_INO).await.unwrap(),
    );
    // Interleaved replies of two readers.
    let (mut oa, mut ob) = (0, 0);
    let (mut na, mut nb) = (Vec::new(), Vec::new());
    loop {
        let ra = reply(&fs, a, oa, 7).await.unwrap();
        let rb = reply(&fs, b, ob, 3).await.unwrap();
        if ra.is_empty() && rb.is_empty() {
            break;
        }
        oa = ra.last().map_or(oa, |e| e.1);
        ob = rb.last().map_or(ob, |e| e.1);
        na.extend(ra.into_iter().map(|e| e.0));
        nb.extend(rb.into_iter().map(|e| e.0));
    }
    assert_eq!(na.len(), 97);
    assert_eq!(na, nb, "both readers see one listing");
    assert_eq!(lists(&s), 10, "ten pages, listed once for both");
    fs.releasedir(a);
    fs.releasedir(b);
    let c = fs.opendir(ROOT_INO).await.unwrap();
    assert_eq!(names(&read_all(&fs, c, true, 5).await).len(), 95);
    assert_eq!(
        lists(&s),
        10,
        "a complete listing answers later readers for the TTL"
    );
    fs.releasedir(c);
}

#[tokio::test]
async fn a_change_this_mount_makes_during_a_listing_is_not_hidden_by_it() {
    let s = Arc::new(MemoryStore::with_page_size(4));
    for i in 0..20 {
        s.put(&format!("f{i:03}"), "x");
    }
    let fs = fs_over(s.clone());
    let fh = fs.opendir(ROOT_INO).await.unwrap();
    let first = reply(&fs, fh, 0, usize::MAX).await.unwrap();
    // Deleted behind the listing's marker: this listing still shows it, later ones must not.
    fs.unlink(ROOT_INO, "f000").await.unwrap();
    let rest = read_all(&fs, fh, false, 100).await;
    assert!(first.iter().any(|e| e.0 == "f000"));
    assert_eq!(
        names(&rest).len(),
        20,
        "one listing never changes under its reader"
    );
    fs.releasedir(fh);
    let again = fs.opendir(ROOT_INO).await.unwrap();
    let shown = read_all(&fs, again, false, 100).await;
    assert!(!names(&shown).contains(&"f000"), "{:?}", names(&shown));
    assert_eq!(names(&shown).len(), 19);
    fs.releasedir(again);
}

#[tokio::test]
async fn a_name_that_is_a_file_on_one_page_and_a_directory_on_the_next_shows_once() {
    let s = Arc::new(MemoryStore::with_page_size(1));
    s.put("a", "file");
    s.put("a/inner", "x");
    s.put("b", "x");
    let fs = fs_over(s);
    let fh = fs.opendir(ROOT_INO).await.unwrap();
    let all = read_all(&fs, fh, false, 1).await;
    assert_eq!(names(&all), ["a", "b"]);
    fs.releasedir(fh);
    let again = fs.opendir(ROOT_INO).await.unwrap();
    let cached = read_all(&fs, again, false, 10).await;
    let a = cached.iter().find(|e| e.0 == "a").unwrap();
    assert_eq!(
        a.2.kind,
        Kind::Dir,
        "the directory wins, as in a one-page listing"
    );
    assert_eq!(fs.lookup(ROOT_INO, "a").await.unwrap().kind, Kind::Dir);
}

#[tokio::test]
async fn a_listing_that_never_ends_fails_readdir_instead_of_hanging_it() {
    for fault in [1, 2] {
        let s = Arc::new(MemoryStore::with_page_size(2));
        for i in 0..10 {
            s.put(&format!("f{i}"), "x");
        }
        s.broken_listing.store(fault, Ordering::Relaxed);
        let fs = fs_over(s.clone());
        let fh = fs.opendir(ROOT_INO).await.unwrap();
        let mut offset = 0;
        let err = loop {
            match reply(&fs, fh, offset, 100).await {
                Ok(r) if r.is_empty() => panic!("fault {fault}: the listing ended"),
                Ok(r) => offset = r.last().unwrap().1,
                Err(e) => break e,
            }
        };
        assert_eq!(err, FsError(libc::EIO), "fault {fault}");
        assert!(lists(&s) <= 102, "fault {fault}: {} pages", lists(&s));
        fs.releasedir(fh);
    }
}

/// A change to the lake between two replies of one reader.
#[derive(Clone, Debug)]
enum Change {
    Add(u8),
    Remove(u8),
}

fn name(i: u8) -> String {
    // Files and directories interleaved in name order.
    if i.is_multiple_of(5) {
        format!("n{i:03}/inside")
    } else {
        format!("n{i:03}")
    }
}

fn shown(i: u8) -> String {
    format!("n{i:03}")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever the page size, the reply size, the changes between replies and where a
    /// reader goes back to (telldir/seekdir): no name shows twice, a name there all along
    /// shows once, a name never there never shows, and re-reading from an offset handed
    /// out earlier shows the same entries again.
    #[test]
    fn offsets_stay_valid_while_the_lake_changes_between_pages(
        initial in proptest::collection::btree_set(0u8..60, 0..40),
        page in 1usize..7,
        room in 1usize..9,
        changes in proptest::collection::vec(
            prop_oneof![(0u8..60).prop_map(Change::Add), (0u8..60).prop_map(Change::Remove)],
            0..30,
        ),
        back in 0usize..100,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let s = Arc::new(MemoryStore::with_page_size(page));
            for &i in &initial {
                s.put(&name(i), "x");
            }
            let fs = fs_over(s.clone());
            let fh = fs.opendir(ROOT_INO).await.unwrap();
            let mut touched = BTreeSet::new();
            let mut ever: BTreeSet<u8> = initial.clone();
            let mut changes = changes.into_iter();
            let mut seen: Vec<(String, u64)> = Vec::new();
            let mut offset = 0;
            loop {
                let r = reply(&fs, fh, offset, room).await.unwrap();
                if r.is_empty() {
                    break;
                }
                offset = r.last().unwrap().1;
                seen.extend(r);
                if let Some(c) = changes.next() {
                    match c {
                        Change::Add(i) => {
                            s.put(&name(i), "x");
                            ever.insert(i);
                            touched.insert(i);
                        }
                        Change::Remove(i) => {
                            s.remove(&name(i));
                            touched.insert(i);
                        }
                    }
                }
            }
            let mut count: HashMap<&str, usize> = HashMap::new();
            for (n, _) in &seen {
                *count.entry(n.as_str()).or_default() += 1;
            }
            for (n, c) in &count {
                prop_assert_eq!(*c, 1, "{} shown {} times", n, c);
            }
            for i in initial.difference(&touched) {
                prop_assert!(count.contains_key(shown(*i).as_str()), "{} missing", shown(*i));
            }
            for (n, _) in &seen {
                let known = *n == "." || *n == ".." || ever.iter().any(|&i| shown(i) == *n);
                prop_assert!(known, "{} was never in the lake", n);
            }
            // seekdir back to an offset handed out earlier: the same entries from there on.
            let from = back % (seen.len() + 1);
            let at = if from == 0 { 0 } else { seen[from - 1].1 };
            let mut again = Vec::new();
            let mut o = at;
            loop {
                let r = reply(&fs, fh, o, room).await.unwrap();
                if r.is_empty() {
                    break;
                }
                o = r.last().unwrap().1;
                again.extend(r);
            }
            prop_assert_eq!(&again[..], &seen[from..]);
            fs.releasedir(fh);
            Ok(())
        })?;
    }
}

/// A lake whose listing of `big/` answers its first page, then fails every later page after
/// a while (a lake going away mid-listing), counting the asks.
#[derive(Debug)]
struct FailsAfterOnePage {
    inner: Arc<MemoryStore>,
    asks: std::sync::atomic::AtomicU64,
}

#[async_trait::async_trait]
impl crate::store::Store for FailsAfterOnePage {
    fn describe(&self) -> String {
        "a lake that goes away".into()
    }
    async fn list_page(
        &self,
        prefix: &str,
        marker: Option<String>,
    ) -> crate::store::StoreResult<crate::store::ListPage> {
        if marker.is_none() {
            return self.inner.list_page(prefix, None).await;
        }
        self.asks.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        Err(crate::store::StoreError::TimedOut("no answer".into()))
    }
    async fn head(&self, key: &str) -> crate::store::StoreResult<Option<crate::store::ObjectInfo>> {
        self.inner.head(key).await
    }
    async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
        etag: &str,
    ) -> crate::store::StoreResult<bytes::Bytes> {
        self.inner.get_range(key, range, etag).await
    }
    async fn delete(&self, key: &str) -> crate::store::StoreResult<()> {
        self.inner.delete(key).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_queued_behind_a_failing_page_get_its_error_without_asking_again() {
    let mem = Arc::new(MemoryStore::with_page_size(10));
    for i in 0..30 {
        mem.put(&format!("f{i:03}"), "x");
    }
    let store = Arc::new(FailsAfterOnePage {
        inner: mem.clone(),
        asks: Default::default(),
    });
    let cfg = FsConfig {
        metadata_ttl: Duration::from_secs(60),
        ..FsConfig::default()
    };
    let fs = Arc::new(LakeFs::new(store.clone(), DirectReadPath::new(mem), cfg));
    let handles: Vec<u64> = futures::future::join_all((0..4).map(|_| fs.opendir(ROOT_INO)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    // All four past the first page at once: one asks, three wait for it.
    let results = futures::future::join_all(handles.iter().map(|&fh| reply(&fs, fh, 20, 5))).await;
    for r in &results {
        assert_eq!(r.as_ref().unwrap_err(), &FsError(libc::ETIMEDOUT));
    }
    assert_eq!(store.asks.load(Ordering::SeqCst), 1, "one ask for all four");
    // A later readdir asks again, and the entries listed so far still read.
    assert!(reply(&fs, handles[0], 20, 5).await.is_err());
    assert_eq!(store.asks.load(Ordering::SeqCst), 2);
    assert_eq!(reply(&fs, handles[0], 0, 100).await.unwrap().len(), 12);
    for fh in handles {
        fs.releasedir(fh);
    }
}
