use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::cache::disk::CacheSize;
use crate::store::memory::MemoryStore;

const KIB: u64 = 1024;

/// Whole blocks and random ranges of a block the disk cache holds are read on the caller's
/// thread once their bytes are in the page cache and their checksums known: what a new
/// memory tier (a remount, or blocks evicted from memory) reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_on_disk_in_the_page_cache_are_read_inline_and_right() {
    let mem = Arc::new(MemoryStore::new());
    let data: Vec<u8> = (0..3 * 256 * KIB)
        .map(|i| (i * 7 + i / 4093) as u8)
        .collect();
    mem.put("f", data.clone());
    let obj = ObjectVersion {
        key: "f".into(),
        etag: mem.head("f").await.unwrap().unwrap().etag,
        size: data.len() as u64,
    };
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let disk =
        Arc::new(DiskCache::open(dir.path(), CacheSize::Bytes(1 << 30), metrics.clone()).unwrap());
    let cfg = BlockConfig {
        block_size: 256 * KIB,
        max_memory: 64 << 20,
        retry: ReadRetry::default(),
    };
    // A block cache with a memory tier of its own over the shared disk cache.
    let fresh = || BlockCache::new(mem.clone(), Some(disk.clone()), cfg, metrics.clone());
    let block = |i: u64| &data[(i * 256 * KIB) as usize..((i + 1) * 256 * KIB) as usize];
    // Where the kernel or file system cannot read without waiting, every read takes the
    // blocking path: the bytes are checked, the counts of inline reads are not.
    let works = crate::cache::disk::inline_reads_work_in(dir.path());
    let inline = || {
        if works {
            Metrics::get(&metrics.disk_reads_inline_total)
        } else {
            0
        }
    };
    let n = |k: u64| if works { k } else { 0 };
    let gets = || Metrics::get(&metrics.store_get_requests_total);

    // From the lake, then written to the disk cache.
    let first = fresh();
    for i in 0..3 {
        assert_eq!(&whole(&first, &obj, i).await[..], block(i));
    }
    assert!(disk.wait_idle(Duration::from_secs(10)));
    assert_eq!(gets(), 3);
    // A new memory tier: read from disk by a blocking thread, which learns the checksums.
    let second = fresh();
    for i in 0..3 {
        assert_eq!(&whole(&second, &obj, i).await[..], block(i));
    }
    assert_eq!((gets(), inline()), (3, 0));
    // Another: now every block is read on the caller's thread.
    let third = fresh();
    for i in 0..3 {
        assert_eq!(&whole(&third, &obj, i).await[..], block(i));
    }
    assert_eq!((gets(), inline()), (3, n(3)));
    // A random reader's ranges of a block not in memory: the same.
    let fourth = fresh();
    let r = 256 * KIB + 70_000..256 * KIB + 74_000;
    let got = fourth.get_range(&obj, r.clone()).await.unwrap();
    assert_eq!(&got[..], &data[r.start as usize..r.end as usize]);
    assert_eq!((gets(), inline()), (3, n(4)));
}

async fn whole(c: &Arc<BlockCache>, obj: &ObjectVersion, i: u64) -> Bytes {
    c.get(obj, i, 256 * KIB).await.unwrap().data().clone()
}
