//! Read-ahead over the in-memory store behind a throttle that counts requests.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::cache::blocks::{BlockCache, BlockConfig, ReadRetry};
use crate::metrics::Metrics;
use crate::store::memory::MemoryStore;
use crate::store::throttle::{Faults, ThrottledStore};
use crate::store::Store;

const MIB: u64 = 1 << 20;

struct Rig {
    store: Arc<ThrottledStore>,
    cache: Arc<BlockCache>,
    path: Arc<PrefetchReadPath>,
    data: Vec<u8>,
    obj: ObjectVersion,
}

async fn rig(size: u64, block: u64, max_memory: u64, max_readahead: u64) -> Rig {
    let mem = Arc::new(MemoryStore::new());
    let data: Vec<u8> = (0..size)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    mem.put("f", data.clone());
    let etag = mem.head("f").await.unwrap().unwrap().etag;
    let store = Arc::new(ThrottledStore::new(mem, Duration::from_millis(2), None));
    let cfg = BlockConfig {
        block_size: block,
        max_memory,
        retry: ReadRetry::default(),
    };
    Rig::assemble(store, data, etag, cfg, max_readahead)
}

impl Rig {
    /// The read path over `store`, which holds `data` as object `f` under `etag`.
    fn assemble(
        store: Arc<ThrottledStore>,
        data: Vec<u8>,
        etag: String,
        cfg: BlockConfig,
        max_readahead: u64,
    ) -> Rig {
        let cache = BlockCache::new(store.clone(), None, cfg, Arc::new(Metrics::default()));
        let path = PrefetchReadPath::new(cache.clone(), max_readahead);
        let obj = ObjectVersion {
            key: "f".into(),
            etag,
            size: data.len() as u64,
        };
        Rig {
            store,
            cache,
            path,
            data,
            obj,
        }
    }

    fn gets(&self) -> u64 {
        self.store.stats.gets.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until every block fetch, retries included, has finished and its
    /// block is held.
    async fn settle(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.cache.fetches_in_flight() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "fetches never finished"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_reads_fetch_each_block_once_with_a_growing_window() {
    let r = rig(24 * MIB, MIB, 64 * MIB, 8 * MIB).await;
    let h = r.path.open(r.obj.clone());
    let mut got = Vec::new();
    let mut off = 0;
    while off < r.obj.size {
        let b = h.read(off, 128 << 10).await.unwrap();
        off += b.len() as u64;
        got.extend_from_slice(&b);
    }
    assert_eq!(got, r.data);
    r.settle().await;
    assert_eq!(r.gets(), 24, "one GET per block, none twice");
    assert!(
        r.store.stats.max_in_flight.load(Ordering::SeqCst) > 1,
        "blocks were fetched ahead, concurrently"
    );
    let m = r.cache.metrics();
    assert_eq!(Metrics::get(&m.prefetched_unused_bytes_total), 0);
    assert!(
        Metrics::get(&m.memory_hit_bytes_total) > 20 * MIB,
        "reads were served from prefetched blocks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_reads_fetch_only_the_blocks_they_touch() {
    let r = rig(64 * MIB, MIB, 64 * MIB, 16 * MIB).await;
    let h = r.path.open(r.obj.clone());
    for (i, block) in [40u64, 3, 57, 12, 33, 8].iter().enumerate() {
        let off = block * MIB + 1000 * i as u64;
        let b = h.read(off, 4096).await.unwrap();
        assert_eq!(&b[..], &r.data[off as usize..off as usize + 4096]);
    }
    r.settle().await;
    assert_eq!(r.gets(), 6, "no read-ahead for random access");
}

/// Offsets that jump around a `size`-byte object: never within a short seek of the last.
fn scattered(size: u64, n: usize, seed: u64) -> Vec<u64> {
    let mut x = seed;
    let mut out: Vec<u64> = Vec::new();
    while out.len() < n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let off = (x >> 20) % (size - 8192);
        let far = out.last().is_none_or(|&l| off.abs_diff(l) > 17 * MIB);
        if far {
            out.push(off);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_reads_fetch_their_own_bytes_not_whole_blocks() {
    for (read, seed) in [
        (4096u32, 1u64),
        (4096, 2),
        (1000, 3),
        (65536, 4),
        (300_000, 5),
    ] {
        let r = rig(256 * MIB, 8 * MIB, 64 * MIB, 16 * MIB).await;
        let h = r.path.open(r.obj.clone());
        let offsets = scattered(r.obj.size, 40, seed);
        for &off in &offsets {
            let b = h.read(off, read).await.unwrap();
            let end = (off + read as u64).min(r.obj.size) as usize;
            assert_eq!(&b[..], &r.data[off as usize..end], "read {read} at {off}");
        }
        r.settle().await;
        let m = r.cache.metrics();
        let fetched = Metrics::get(&m.store_get_bytes_total);
        let wanted = offsets.len() as u64 * read as u64;
        // Widened to whole pages at most: one page more at each end.
        assert!(
            fetched <= wanted + offsets.len() as u64 * 8192,
            "{read}-byte reads: {fetched} bytes fetched for {wanted} read"
        );
        assert!(
            r.gets() <= offsets.len() as u64 * 2,
            "about one GET per read"
        );
    }
}

/// The next offset of a random reader at `off`: a jump of 256 KiB to 64 MiB, either way,
/// kept below `limit`. Advances the generator `x`.
fn random_jump(x: &mut u64, off: u64, limit: u64) -> u64 {
    *x = x
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let jump = (256 << 10) + (*x >> 20) % (64 * MIB);
    let to = if *x & 1 == 0 {
        off + jump
    } else {
        off.saturating_sub(jump)
    };
    to % limit
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_reader_whose_jump_lands_near_its_last_read_still_fetches_only_its_bytes() {
    // Jumps of any length, some of them short (a random reader's next record can be close).
    for seed in 1..6u64 {
        let r = rig(256 * MIB, 8 * MIB, 64 * MIB, 16 * MIB).await;
        let h = r.path.open(r.obj.clone());
        let mut x = seed;
        let mut off = 100 * MIB;
        let reads = 60;
        for _ in 0..reads {
            off = random_jump(&mut x, off, r.obj.size - 4096);
            let b = h.read(off, 4096).await.unwrap();
            assert_eq!(&b[..], &r.data[off as usize..off as usize + 4096]);
        }
        r.settle().await;
        let fetched = Metrics::get(&r.cache.metrics().store_get_bytes_total);
        // The first read of a handle may take its block (a fresh handle starts sequential).
        assert!(
            fetched <= 8 * MIB + 16 * MIB + reads * 8192,
            "seed {seed}: {fetched} bytes fetched for {reads} reads of 4 KiB"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_reader_of_records_spanning_a_few_pages_still_fetches_only_its_bytes() {
    // A database's get: a jump, then its record's 1 to 4 contiguous pages (LMDB overflow
    // pages, an HDF5 chunk). The contiguous pages must not make the handle sequential, or its
    // next short jump fetches a whole block and reads ahead.
    for seed in 1..6u64 {
        let r = rig(256 * MIB, 8 * MIB, 64 * MIB, 16 * MIB).await;
        let h = r.path.open(r.obj.clone());
        let (mut x, mut off, mut read) = (seed, 100 * MIB, 0u64);
        for _ in 0..40 {
            off = random_jump(&mut x, off, r.obj.size - 4 * 4096);
            for page in 0..1 + (x >> 40) % 4 {
                let at = off + page * 4096;
                let b = h.read(at, 4096).await.unwrap();
                assert_eq!(&b[..], &r.data[at as usize..at as usize + 4096]);
                read += 4096;
            }
        }
        r.settle().await;
        let fetched = Metrics::get(&r.cache.metrics().store_get_bytes_total);
        // The first read of a handle may take its block (a fresh handle starts sequential).
        assert!(
            fetched <= 8 * MIB + 16 * MIB + 2 * read,
            "seed {seed}: {fetched} bytes fetched for {read} bytes read in records"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_read_uses_a_block_already_held_and_a_sequential_one_reads_ahead_again() {
    let r = rig(64 * MIB, 8 * MIB, 64 * MIB, 16 * MIB).await;
    let h = r.path.open(r.obj.clone());
    let mut off = 0;
    while off < 8 * MIB {
        off += h.read(off, 128 << 10).await.unwrap().len() as u64;
    }
    r.settle().await;
    let gets = r.gets();
    // A jump far ahead (random: its own bytes), then back into the first block (held).
    let far = h.read(50 * MIB, 4096).await.unwrap();
    assert_eq!(
        &far[..],
        &r.data[50 * MIB as usize..50 * MIB as usize + 4096]
    );
    assert_eq!(r.gets(), gets + 1);
    let back = h.read(3 * MIB + 7, 4096).await.unwrap();
    assert_eq!(
        &back[..],
        &r.data[3 * MIB as usize + 7..3 * MIB as usize + 7 + 4096]
    );
    assert_eq!(r.gets(), gets + 1, "served from the block held");
    // Reading on from there is sequential again: whole blocks, fetched ahead.
    let mut off = 3 * MIB + 7 + 4096;
    let mut got = 0;
    while got < 40 * MIB {
        let n = h.read(off, 128 << 10).await.unwrap().len() as u64;
        off += n;
        got += n;
    }
    r.settle().await;
    assert!(
        r.store.stats.max_in_flight.load(Ordering::SeqCst) > 1,
        "blocks were fetched ahead again"
    );
    let whole = Metrics::get(&r.cache.metrics().store_get_bytes_total);
    assert!(whole >= 40 * MIB, "whole blocks: {whole}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_seeks_are_served_from_held_blocks() {
    let r = rig(32 * MIB, MIB, 64 * MIB, 4 * MIB).await;
    let h = r.path.open(r.obj.clone());
    let mut off = 0;
    while off < 10 * MIB {
        off += h.read(off, 256 << 10).await.unwrap().len() as u64;
    }
    r.settle().await;
    let hits = || Metrics::get(&r.cache.metrics().memory_hit_bytes_total);
    let before = hits();
    for off in [
        off - 900 * 1024,
        off - 100 * 1024,
        off + 2 * MIB,
        off + 3 * MIB + 5,
    ] {
        let b = h.read(off, 64 << 10).await.unwrap();
        assert_eq!(&b[..], &r.data[off as usize..off as usize + (64 << 10)]);
    }
    assert_eq!(
        hits() - before,
        4 * (64 << 10),
        "back 900 KiB and forward 3 MiB came from memory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_readers_of_a_block_share_one_get() {
    let r = rig(8 * MIB, 8 * MIB, 64 * MIB, 8 * MIB).await;
    let handles: Vec<_> = (0..8).map(|_| r.path.open(r.obj.clone())).collect();
    let reads = handles
        .iter()
        .enumerate()
        .map(|(i, h)| h.read(i as u64 * 4096, 4096));
    let results = futures::future::try_join_all(reads).await.unwrap();
    for (i, b) in results.iter().enumerate() {
        assert_eq!(&b[..], &r.data[i * 4096..(i + 1) * 4096]);
    }
    assert_eq!(r.gets(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_budget_bounds_fetches_and_held_blocks() {
    // 4 MiB budget with 1 MiB blocks: what is fetched, held and in use is at most 4 blocks.
    let r = rig(32 * MIB, MIB, 4 * MIB, 16 * MIB).await;
    let readers: Vec<_> = (0..3).map(|_| r.path.open(r.obj.clone())).collect();
    let mut offs = [0u64, 8 * MIB, 16 * MIB];
    for _ in 0..40 {
        for (h, off) in readers.iter().zip(offs.iter_mut()) {
            let b = h.read(*off, 256 << 10).await.unwrap();
            assert_eq!(&b[..], &r.data[*off as usize..*off as usize + b.len()]);
            *off += b.len() as u64;
            assert!(r.cache.budget_in_use() <= 4 * MIB);
        }
    }
    r.settle().await;
    assert!(r.store.stats.max_in_flight.load(Ordering::SeqCst) <= 4);
    assert!(r.cache.budget_in_use() <= 4 * MIB);
    assert_eq!(r.cache.budget_in_use(), r.cache.memory_bytes());
}

async fn read_block(r: &Rig, h: &dyn FileReader, block: u64) {
    let at = (block * MIB) as usize;
    let b = h.read(at as u64, 4096).await.unwrap();
    assert_eq!(&b[..], &r.data[at..at + 4096]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_handles_hold_no_block_memory_between_reads() {
    // 4 MiB budget with 1 MiB blocks, 16 handles each reading a block of its own (17 MiB
    // apart: random access, nothing read ahead), in both orders of open and read.
    let r = rig(300 * MIB, MIB, 4 * MIB, 16 * MIB).await;
    for interleaved in [false, true] {
        let mut handles = Vec::new();
        for i in 0..16u64 {
            let h = r.path.open(r.obj.clone());
            if interleaved {
                read_block(&r, h.as_ref(), 17 * i + 1).await;
            }
            handles.push(h);
        }
        for (i, h) in handles.iter().enumerate().rev() {
            read_block(&r, h.as_ref(), 17 * i as u64 + 2).await;
            assert!(r.cache.budget_in_use() <= 4 * MIB);
        }
        r.settle().await;
        // The blocks are in the tier (evictable), not held by the handles.
        assert_eq!(r.cache.budget_in_use(), r.cache.memory_bytes());
        // A handle's next small read in its block still comes from memory while the tier
        // has it (handle 0 read last).
        let hits = Metrics::get(&r.cache.metrics().memory_hit_bytes_total);
        read_block(&r, handles[0].as_ref(), 2).await;
        assert_eq!(
            Metrics::get(&r.cache.metrics().memory_hit_bytes_total),
            hits + 4096
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_concurrent_reads_than_the_budget_holds_wait_and_all_get_their_bytes() {
    // 4 MiB budget with 1 MiB blocks, 32 reads at once of 32 different blocks: each waits
    // for memory; none times out or gets wrong bytes. They read at random, so each fetches
    // its own 256 KiB (and a page), not a block. (Reads across blocks: see
    // `random_reads_fetch_their_own_bytes_not_whole_blocks`.)
    use futures::StreamExt;
    let r = rig(64 * MIB, MIB, 4 * MIB, 16 * MIB).await;
    let handles: Vec<_> = (0..32).map(|_| r.path.open(r.obj.clone())).collect();
    let reads = handles.iter().enumerate().map(|(i, h)| {
        let off = 2 * i as u64 * MIB + 5 + 1000 * (i as u64 % 7);
        async move { (off, h.read(off, 256 << 10).await) }
    });
    let mut pending = futures::stream::iter(reads).buffer_unordered(32);
    let mut done = 0;
    while let Some((off, got)) = pending.next().await {
        // Checked and dropped as it comes, as a reply is sent and dropped.
        let got = got.unwrap();
        assert_eq!(&got[..], &r.data[off as usize..off as usize + (256 << 10)]);
        assert!(r.cache.budget_in_use() <= 4 * MIB);
        done += 1;
    }
    assert_eq!(done, 32);
    r.settle().await;
    // Each fetch takes 320 KiB of the budget (260 KiB in 64 KiB units): 12 fit in 4 MiB.
    let most = r.store.stats.max_in_flight.load(Ordering::SeqCst);
    assert!(most <= 12, "{most} fetches at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_object_is_an_error_not_old_or_mixed_bytes() {
    let r = rig(4 * MIB, MIB, 64 * MIB, MIB).await;
    let stale = ObjectVersion {
        etag: "\"not-the-etag\"".into(),
        ..r.obj.clone()
    };
    let h = r.path.open(stale);
    let err = h.read(0, 4096).await.unwrap_err();
    assert!(
        matches!(err, crate::store::StoreError::Changed(_)),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_concurrent_sequential_readers_waste_no_read_ahead() {
    let r = rig(64 * MIB, MIB, 32 * MIB, 8 * MIB).await;
    let readers: Vec<_> = (0..4).map(|_| r.path.open(r.obj.clone())).collect();
    let mut offs = [0u64, 16 * MIB, 32 * MIB, 48 * MIB];
    for _ in 0..64 {
        let futs = readers
            .iter()
            .zip(offs.iter())
            .map(|(h, off)| h.read(*off, 256 << 10));
        let res = futures::future::try_join_all(futs).await.unwrap();
        for (b, off) in res.iter().zip(offs.iter_mut()) {
            assert_eq!(&b[..], &r.data[*off as usize..*off as usize + b.len()]);
            *off += b.len() as u64;
        }
    }
    r.settle().await;
    let m = r.cache.metrics();
    assert_eq!(Metrics::get(&m.prefetched_unused_bytes_total), 0);
    // Read-ahead past each reader's 16 MiB stretch into the next one's is the only extra.
    assert!(r.gets() <= 64 + 4 * 8, "{} GETs for 64 blocks", r.gets());
}

fn fast_retry() -> ReadRetry {
    ReadRetry {
        attempts: 8,
        base_delay: Duration::from_millis(1),
        attempt_timeout: Duration::from_millis(150),
        total: Duration::from_secs(60),
    }
}

/// A rig over a store injecting `faults` into data reads.
async fn faulty_rig(size: u64, faults: Faults, retry: ReadRetry) -> Rig {
    let mem = Arc::new(MemoryStore::new());
    let data: Vec<u8> = (0..size)
        .map(|i| (i.wrapping_mul(40_503) >> 7) as u8)
        .collect();
    mem.put("f", data.clone());
    let etag = mem.head("f").await.unwrap().unwrap().etag;
    let store =
        Arc::new(ThrottledStore::new(mem, Duration::from_millis(1), None).with_faults(faults));
    let cfg = BlockConfig {
        block_size: MIB,
        max_memory: 32 * MIB,
        retry,
    };
    Rig::assemble(store, data, etag, cfg, 8 * MIB)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_are_retried_and_every_byte_is_right() {
    let faults = Faults {
        seed: 7,
        busy: 100,
        retry_after: Duration::from_millis(5),
        internal: 50,
        reset: 100,
        stall: 50,
        stall_for: Duration::from_secs(5),
    };
    // 30% of GETs fail and a run makes about 230 (random reads fetch their own bytes, one
    // GET each): at 8 attempts, one run in about 60 would exhaust a fetch's retries by chance.
    let retry = ReadRetry {
        attempts: 12,
        ..fast_retry()
    };
    let r = faulty_rig(32 * MIB, faults, retry).await;
    // Sequential (with read-ahead), then random, through separate handles.
    let h = r.path.open(r.obj.clone());
    let mut off = 0;
    while off < r.obj.size {
        let b = h.read(off, 256 << 10).await.unwrap();
        assert_eq!(
            &b[..],
            &r.data[off as usize..off as usize + b.len()],
            "at {off}"
        );
        off += b.len() as u64;
    }
    let h = r.path.open(r.obj.clone());
    for i in 0..200u64 {
        let off = (i * 7_919_993) % r.obj.size;
        let b = h.read(off, 3000).await.unwrap();
        assert_eq!(
            &b[..],
            &r.data[off as usize..off as usize + b.len()],
            "at {off}"
        );
    }
    // Read-ahead started by the last reads may still be between a fault and its retry.
    r.settle().await;
    let injected = r.store.stats.faults.load(Ordering::SeqCst);
    let retries = Metrics::get(&r.cache.metrics().store_get_retries_total);
    assert!(injected >= 5, "{injected} faults injected");
    assert!(
        retries >= injected,
        "{retries} retries for {injected} faults"
    );
}

#[tokio::test]
async fn a_lake_that_keeps_failing_gives_eio_after_the_budget() {
    let faults = Faults {
        seed: 1,
        busy: 1000,
        ..Faults::default()
    };
    let retry = fast_retry();
    let r = faulty_rig(4 * MIB, faults, retry).await;
    let h = r.path.open(r.obj.clone());
    let started = std::time::Instant::now();
    let err = h.read(MIB + 3, 4096).await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The block read, and any read ahead of it (4 blocks in all), each tried to the budget.
    let n = retry.attempts as u64;
    assert!(
        (n..=4 * n).contains(&r.gets()),
        "{} GETs for an attempt budget of {n}",
        r.gets()
    );
}

#[tokio::test]
async fn a_short_response_is_retried_then_an_error_never_short_or_wrong_data() {
    let faults = Faults {
        seed: 3,
        reset: 1000,
        ..Faults::default()
    };
    let r = faulty_rig(3 * MIB, faults, fast_retry()).await;
    let h = r.path.open(r.obj.clone());
    for off in [0, MIB + 5, 3 * MIB - 10] {
        let err = h.read(off, 4096).await.unwrap_err();
        assert_eq!(err.errno(), libc::EIO, "{err:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_finds_no_memory_in_time_fails_saying_so_and_works_once_memory_is_let_go() {
    let mem = Arc::new(MemoryStore::new());
    let data: Vec<u8> = (0..4 * MIB).map(|i| (i % 251) as u8).collect();
    mem.put("f", data.clone());
    let etag = mem.head("f").await.unwrap().unwrap().etag;
    let store = Arc::new(ThrottledStore::new(mem, Duration::from_millis(1), None));
    let cfg = BlockConfig {
        block_size: MIB,
        max_memory: 2 * MIB,
        retry: ReadRetry {
            total: Duration::from_millis(300),
            ..fast_retry()
        },
    };
    let r = Rig::assemble(store, data, etag, cfg, MIB);
    // Both blocks of the budget in use (replies being sent): nothing can be evicted.
    let a = r.cache.get(&r.obj, 0, 1).await.unwrap();
    let b = r.cache.get(&r.obj, 1, 1).await.unwrap();
    let err = match r.cache.get(&r.obj, 2, 1).await {
        Err(e) => e,
        Ok(_) => panic!("a third block fitted in a budget of two"),
    };
    assert_eq!(err.errno(), libc::ETIMEDOUT, "{err:?}");
    assert!(err.to_string().contains("no memory free"), "{err}");
    drop(a);
    let c = r.cache.get(&r.obj, 2, 1).await.unwrap();
    assert_eq!(c.data()[0], r.data[2 * MIB as usize]);
    assert!(r.cache.budget_in_use() <= 2 * MIB);
    drop((b, c));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_another_process_put_in_the_shared_disk_cache_are_read_from_it() {
    use crate::cache::disk::{CacheSize, DiskCache};
    let base = rig(8 * MIB, MIB, 64 * MIB, 4 * MIB).await;
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let m = Arc::new(Metrics::default());
        Arc::new(DiskCache::open(dir.path(), CacheSize::Bytes(1 << 30), m).unwrap())
    };
    // This mount's disk cache, opened before another process (`lakemount warm`, another
    // mount) fills the directory: its index knows none of those blocks.
    let mine = open();
    let m = Arc::new(Metrics::default());
    let cache = BlockCache::new(base.store.clone(), Some(mine), base.cache.config(), m);
    let key = cache.object_key(&base.obj);
    let other = open();
    for i in 0..8 {
        other.put(
            &key,
            i,
            &base.data[(i * MIB) as usize..((i + 1) * MIB) as usize],
        );
    }
    let path = PrefetchReadPath::new(cache.clone(), 4 * MIB);
    // Random reads first (each its own bytes), then a whole sequential pass.
    let h = path.open(base.obj.clone());
    for off in [
        5 * MIB + 100,
        MIB + 7,
        7 * MIB + 4000,
        2 * MIB,
        3 * MIB + 65_000,
    ] {
        let b = h.read(off, 4096).await.unwrap();
        assert_eq!(&b[..], &base.data[off as usize..off as usize + 4096]);
    }
    let h = path.open(base.obj.clone());
    let mut got = Vec::new();
    while (got.len() as u64) < base.obj.size {
        got.extend_from_slice(&h.read(got.len() as u64, 128 << 10).await.unwrap());
    }
    assert_eq!(got, base.data);
    assert_eq!(
        base.gets(),
        0,
        "blocks on the shared disk were fetched again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_a_random_reader_fetched_serve_the_next_mount_and_a_sequential_pass_completes_them() {
    // Also with blocks that are no whole number of pages.
    for block in [MIB, MIB - 1000] {
        pages_kept_then_completed(block).await;
    }
}

async fn pages_kept_then_completed(block: u64) {
    use crate::cache::disk::{CacheSize, DiskCache};
    let base = rig(8 * MIB, block, 64 * MIB, 4 * MIB).await;
    let blocks = base.obj.size.div_ceil(block);
    let dir = tempfile::tempdir().unwrap();
    // A mount: its own disk cache on the shared directory and its own block cache.
    let mount = || {
        let m = Arc::new(Metrics::default());
        let disk =
            Arc::new(DiskCache::open(dir.path(), CacheSize::Bytes(1 << 30), m.clone()).unwrap());
        let cache = BlockCache::new(
            base.store.clone(),
            Some(disk.clone()),
            base.cache.config(),
            m,
        );
        (disk, PrefetchReadPath::new(cache.clone(), 4 * MIB), cache)
    };
    // Every fetch of `cache` finished and written to `disk`.
    let quiet = |disk: &DiskCache, cache: &BlockCache| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while cache.fetches_in_flight() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "fetches never finished"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(disk.wait_idle(Duration::from_secs(10)));
    };
    let offsets = [
        5 * MIB + 100,
        MIB + 7,
        7 * MIB + 4000,
        2 * MIB,
        3 * MIB + 65_000,
        MIB + 300_000,
    ];
    let random_reads = |path: Arc<PrefetchReadPath>| {
        let h = path.open(base.obj.clone());
        let data = &base.data;
        async move {
            for off in offsets {
                let b = h.read(off, 4096).await.unwrap();
                assert_eq!(&b[..], &data[off as usize..off as usize + 4096]);
            }
        }
    };
    let (disk, path, cache) = mount();
    random_reads(path.clone()).await;
    quiet(&disk, &cache);
    let key = base.cache.object_key(&base.obj);
    let whole = (0..blocks).filter(|i| disk.contains(&key, *i)).count() as u64;
    assert!(
        whole <= 3,
        "random reads fetched their pages, not {whole} blocks"
    );
    let fetched = base.gets();
    drop((disk, path, cache));

    let (disk, path, cache) = mount();
    random_reads(path.clone()).await;
    assert_eq!(
        base.gets(),
        fetched,
        "the next mount fetched kept pages again"
    );
    // A sequential pass fetches each block not held whole once, and the cache holds them all.
    let h = path.open(base.obj.clone());
    let mut got = Vec::new();
    while (got.len() as u64) < base.obj.size {
        got.extend_from_slice(&h.read(got.len() as u64, 128 << 10).await.unwrap());
    }
    assert_eq!(got, base.data);
    quiet(&disk, &cache);
    assert_eq!(base.gets(), fetched + blocks - whole, "block size {block}");
    assert!(
        (0..blocks).all(|i| disk.contains(&key, i)),
        "every block whole"
    );
    assert_eq!(disk.stats().bytes, base.obj.size, "pages counted once");
}
