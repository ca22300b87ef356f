use super::*;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::sync::atomic::AtomicU64;

pub(super) fn open(dir: &Path, cap: u64) -> DiskCache {
    DiskCache::open(dir, CacheSize::Bytes(cap), Arc::new(Metrics::default())).unwrap()
}

pub(super) fn key(id: &str, size: u64, block_size: u64) -> ObjectKey {
    ObjectKey {
        id: id.to_string(),
        size,
        block_size,
    }
}

fn complete(c: &DiskCache, k: &ObjectKey) -> Option<File> {
    match c.open_complete(k, true) {
        Complete::File(f) => Some(f),
        _ => None,
    }
}

/// Puts every block of `data`, the bytes of `k`, except block `skip`.
fn put_all(c: &DiskCache, k: &ObjectKey, data: &[u8], skip: Option<u64>) {
    for i in (0..k.blocks()).filter(|i| Some(*i) != skip) {
        let r = (i * k.block_size) as usize..((i + 1) * k.block_size).min(k.size) as usize;
        c.put(k, i, &data[r]);
    }
}

/// A cache in `dir` holding all `blocks` 4 KiB blocks of object `id`, and those bytes.
fn cached(dir: &Path, id: &str, blocks: u64, seed: u8) -> (DiskCache, ObjectKey, Vec<u8>) {
    let data = pattern(blocks as usize * 4096, seed);
    let k = key(id, data.len() as u64, 4096);
    let c = open(dir, 1 << 20);
    put_all(&c, &k, &data, None);
    (c, k, data)
}

pub(super) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn blocks_survive_a_reopen_with_private_permissions() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("cache");
    let c = open(&d, 1 << 20);
    let k = key("az://a/c/k\n\"e\"", 5, 8);
    c.put(&k, 0, b"hello");
    assert_eq!(&c.get(&k, 0).unwrap()[..], b"hello");
    assert!(c.get(&key("az://a/c/k\n\"other-etag\"", 5, 8), 0).is_none());
    drop(c);
    let c = open(&d, 1 << 20);
    assert_eq!(c.stats().blocks, 1);
    assert_eq!(&c.get(&k, 0).unwrap()[..], b"hello");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&d), 0o700);
    assert_eq!(mode(&d.join(SUBDIR)), 0o700);
    let files = c.files(&k.hash());
    assert_eq!(mode(&files.data), 0o600);
    assert_eq!(mode(&files.sums), 0o600);
}

#[test]
fn an_object_is_one_plain_file_with_its_blocks_at_their_offsets() {
    let d = tempfile::tempdir().unwrap();
    let c = open(d.path(), 1 << 20);
    let data = pattern(10_000, 7);
    let k = key("obj", data.len() as u64, 4096);
    // Out of order, as concurrent read-ahead lands them.
    for i in [2u64, 0, 1] {
        let r = (i * 4096) as usize..((i + 1) * 4096).min(10_000) as usize;
        c.put(&k, i, &data[r]);
    }
    assert_eq!(fs::read(&c.files(&k.hash()).data).unwrap(), data);
    let f = complete(&c, &k).expect("complete");
    let mut all = Vec::new();
    io::Read::read_to_end(&mut &f, &mut all).unwrap();
    assert_eq!(all, data);
    drop(f);
    // Reopened: the index finds the three blocks again.
    let c = open(d.path(), 1 << 20);
    assert_eq!(c.stats().blocks, 3);
    assert_eq!(c.stats().bytes, 10_000);
}

#[test]
fn a_partly_cached_object_is_not_complete() {
    let d = tempfile::tempdir().unwrap();
    let c = open(d.path(), 1 << 20);
    let data = pattern(10_000, 1);
    let k = key("obj", data.len() as u64, 4096);
    c.put(&k, 0, &data[..4096]);
    c.put(&k, 2, &data[8192..]);
    assert!(complete(&c, &k).is_none());
    assert!(c.get(&k, 1).is_none());
    assert_eq!(&c.get(&k, 2).unwrap()[..], &data[8192..]);
}

#[test]
fn corrupt_or_truncated_blocks_are_misses_and_dropped() {
    let d = tempfile::tempdir().unwrap();
    let m = Arc::new(Metrics::default());
    let c = DiskCache::open(d.path(), CacheSize::Bytes(1 << 20), m.clone()).unwrap();
    // Not held whole (its third block is missing): a bad block is dropped alone. A file held
    // whole is dropped whole (`eviction_never_punches_a_file_held_whole_...`).
    let data = pattern(3 * 4096, 3);
    let k = key("id", 3 * 4096, 4096);
    c.put(&k, 0, &data[..4096]);
    c.put(&k, 1, &data[4096..8192]);
    let files = c.files(&k.hash());
    // A flipped byte in every position class: first block, last byte of the object.
    for at in [5usize, 8191] {
        let mut bytes = fs::read(&files.data).unwrap();
        bytes[at] ^= 0x40;
        fs::write(&files.data, &bytes).unwrap();
        let index = at as u64 / 4096;
        assert!(c.get(&k, index).is_none(), "flipped byte at {at}");
        assert!(!c.contains(&k, index));
        c.put(&k, index, &data[index as usize * 4096..][..4096]);
    }
    // A data file cut short.
    let f = File::options().write(true).open(&files.data).unwrap();
    f.set_len(6000).unwrap();
    assert!(c.get(&k, 1).is_none(), "truncated");
    // A table cut short: nothing of the object can be trusted.
    c.put(&k, 1, &data[4096..8192]);
    let t = fs::read(&files.sums).unwrap();
    fs::write(&files.sums, &t[..10]).unwrap();
    assert!(c.get(&k, 0).is_none(), "truncated table");
    assert_eq!(Metrics::get(&m.disk_corrupt_blocks_total), 4);
}

#[test]
fn a_flipped_byte_anywhere_in_a_complete_object_keeps_it_from_passthrough() {
    let d = tempfile::tempdir().unwrap();
    let data = pattern(3 * 4096 + 100, 9);
    let k = key("obj", data.len() as u64, 4096);
    for at in [0usize, 4095, 4096, 9000, data.len() - 1] {
        // A new cache each time: checked once per process, so each starts unchecked.
        let c = open(d.path(), 1 << 20);
        for i in 0..k.blocks() {
            let r = (i * 4096) as usize..((i + 1) * 4096).min(data.len() as u64) as usize;
            c.put(&k, i, &data[r]);
        }
        drop(c);
        let c = open(d.path(), 1 << 20);
        let path = c.files(&k.hash()).data;
        let mut bytes = fs::read(&path).unwrap();
        bytes[at] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(complete(&c, &k).is_none(), "flipped byte at {at}");
        assert!(!path.exists(), "the object is dropped");
        assert_eq!(c.stats().blocks, 0);
    }
}

#[test]
fn eviction_never_punches_a_file_held_whole_or_open_with_passthrough() {
    let d = tempfile::tempdir().unwrap();
    let data = pattern(8192, 5);
    let k = key("held", 8192, 4096);
    let c = open(d.path(), 8192);
    c.put(&k, 0, &data[..4096]);
    c.put(&k, 1, &data[4096..]);
    let held = complete(&c, &k).expect("complete");
    // A new object pushes the held one out: it is unlinked whole, and the open file keeps
    // every byte.
    c.put(&key("other", 4096, 4096), 0, &pattern(4096, 6));
    assert!(!c.files(&k.hash()).data.exists());
    let mut all = Vec::new();
    io::Read::read_to_end(&mut &held, &mut all).unwrap();
    assert_eq!(all, data);
    assert_eq!(c.stats().bytes, 4096);
    drop(held);
    // Held whole but not open: unlinked whole all the same (a reader may still map it).
    c.put(&k, 0, &data[..4096]);
    c.put(&k, 1, &data[4096..]);
    c.put(&key("third", 4096, 4096), 0, &pattern(4096, 8));
    assert!(!c.files(&k.hash()).data.exists());
    assert!(!c.contains(&k, 0) && !c.contains(&k, 1));
    // Another mount removing the object has unlinked its table, not yet its data file: the
    // file is still never punched (a missing table is no sign of a partial file), and what a
    // reader holds of it keeps every byte.
    c.put(&k, 0, &data[..4096]);
    c.put(&k, 1, &data[4096..]);
    let files = c.files(&k.hash());
    let mapped = File::open(&files.data).unwrap();
    fs::remove_file(&files.sums).unwrap();
    c.drop_block(&k.hash().into(), &k, 1);
    let mut all = Vec::new();
    io::Read::read_to_end(&mut &mapped, &mut all).unwrap();
    assert!(all == data, "a block of a file held whole was punched");
    // Not held whole: one block is punched out, the file stays.
    let part = key("part", 3 * 4096, 4096);
    let d = tempfile::tempdir().unwrap();
    let c = open(d.path(), 8192);
    c.put(&part, 0, &pattern(4096, 1));
    c.put(&part, 1, &pattern(4096, 2));
    c.put(&key("fourth", 4096, 4096), 0, &pattern(4096, 9));
    assert!(c.files(&part.hash()).data.exists());
    assert!(c.contains(&part, 1) && !c.contains(&part, 0));
}

#[test]
fn a_free_space_reserve_bounds_the_cache_by_what_the_disk_has_left() {
    // A 100 MiB disk, 20 MiB free before the cache writes anything; others may use more.
    let d = tempfile::tempdir().unwrap();
    let others = Arc::new(AtomicU64::new(80 << 20));
    let (root, used) = (d.path().join(SUBDIR), others.clone());
    let probe: SpaceProbe = Box::new(move || {
        // Space the files take (holes do not count).
        let ours: u64 = fs::read_dir(&root)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|sub| fs::read_dir(sub.path()).into_iter().flatten().flatten())
            .filter_map(|f| f.metadata().ok())
            .map(|m| m.blocks() * 512)
            .sum();
        let total = 100u64 << 20;
        Ok((
            total,
            (total - used.load(Ordering::Relaxed)).saturating_sub(ours),
        ))
    });
    let m = Arc::new(Metrics::default());
    let c = DiskCache::open_with(d.path(), CacheSize::KeepFree(10.0), m, probe).unwrap();
    for i in 0..30 {
        c.put(
            &key(&format!("obj-{i}"), 1 << 20, 1 << 20),
            0,
            &vec![i as u8; 1 << 20],
        );
    }
    let held = c.stats().bytes;
    assert!(
        (9 << 20..=10 << 20).contains(&held),
        "10 MiB reserve of a disk with 20 MiB free: {held} bytes held"
    );
    // Someone else takes 6 MiB: the cache gives it back at its next write.
    others.fetch_add(6 << 20, Ordering::Relaxed);
    c.put(&key("one-more", 1 << 20, 1 << 20), 0, &[0u8; 1 << 20]);
    let held = c.stats().bytes;
    assert!(
        (3 << 20..=4 << 20).contains(&held),
        "after others used 6 MiB: {held} bytes held"
    );
}

#[test]
fn least_recently_used_blocks_are_evicted_at_capacity() {
    let d = tempfile::tempdir().unwrap();
    let c = open(d.path(), 3000);
    let k = |i: u64| key(&format!("k{i}"), 1000, 1000);
    for i in 0..3 {
        c.put(&k(i), 0, &[i as u8; 1000]);
    }
    assert!(c.get(&k(0), 0).is_some(), "k0 is now the most recent");
    c.put(&k(3), 0, &[3u8; 1000]);
    assert!(c.contains(&k(0), 0) && !c.contains(&k(1), 0));
    assert!(c.contains(&k(2), 0) && c.contains(&k(3), 0));
    assert!(
        !c.files(&k(1).hash()).data.exists(),
        "an empty object leaves no file"
    );
    assert_eq!(c.stats().bytes, 3000);
    assert_eq!(c.clear().unwrap(), 3);
    assert!(c.get(&k(0), 0).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn written_behind_blocks_have_landed_once_idle() {
    let d = tempfile::tempdir().unwrap();
    let c = Arc::new(open(d.path(), 1 << 30));
    for i in 0..20 {
        let k = key(&format!("k{i}"), 4096, 4096);
        c.write_behind(k, 0, Bytes::from(vec![i as u8; 4096]));
    }
    let c2 = c.clone();
    let idle = tokio::task::spawn_blocking(move || c2.wait_idle(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(idle);
    assert_eq!(c.stats().blocks, 20);
    let got = c.get(&key("k7", 4096, 4096), 0).unwrap();
    assert_eq!(&got[..], &[7u8; 4096][..]);
}

#[test]
fn blocks_of_a_new_object_written_at_once_are_all_held() {
    // Read-ahead lands an object's blocks from several threads (or mounts) at once; each
    // first writer finds no table. None of them may lose another's entry.
    let d = tempfile::tempdir().unwrap();
    let c = Arc::new(open(d.path(), 1 << 30));
    for round in 0..20u64 {
        let data = Arc::new(pattern(8 * 4096, round as u8));
        let k = key(&format!("obj-{round}"), data.len() as u64, 4096);
        std::thread::scope(|s| {
            for i in 0..8u64 {
                let (c, k, data) = (c.clone(), k.clone(), data.clone());
                s.spawn(move || c.put(&k, i, &data[i as usize * 4096..][..4096]));
            }
        });
        let held = objfile::held_blocks(&c.files(&k.hash()), &k).unwrap();
        assert_eq!(held, vec![4096; 8], "round {round}");
        assert!(complete(&c, &k).is_some(), "round {round}");
    }
}

#[test]
fn a_range_read_reads_and_checks_only_the_chunks_it_falls_in() {
    let d = tempfile::tempdir().unwrap();
    let m = Arc::new(Metrics::default());
    let c = DiskCache::open(d.path(), CacheSize::Bytes(1 << 30), m.clone()).unwrap();
    let chunk = objfile::CHUNK as usize;
    let data = pattern(4 * chunk + 100, 4);
    let k = key("obj", data.len() as u64, data.len() as u64);
    c.put(&k, 0, &data);
    // Ranges inside a chunk, across two, at the block's end.
    for r in [100..200, chunk - 10..chunk + 10, 4 * chunk..4 * chunk + 100] {
        let got = c.get_range(&k, 0, r.start as u64..r.end as u64).unwrap();
        assert_eq!(&got[..], &data[r.clone()], "{r:?}");
    }
    // Bytes read from the disk: the chunks, one, two and the last (100 bytes).
    assert_eq!(
        Metrics::get(&m.disk_hit_bytes_total),
        (chunk + 2 * chunk + 100) as u64
    );
    // A flipped byte in chunk 2: ranges elsewhere still read (their chunks are intact)...
    let path = c.files(&k.hash()).data;
    let f = File::options().write(true).open(&path).unwrap();
    f.write_all_at(&[data[2 * chunk + 5] ^ 1], (2 * chunk + 5) as u64)
        .unwrap();
    assert!(c.get_range(&k, 0, 100..200).is_some());
    // ...and a range in chunk 2 is a miss, which drops the block.
    let r = (2 * chunk) as u64..(2 * chunk + 10) as u64;
    assert!(c.get_range(&k, 0, r).is_none());
    assert_eq!(Metrics::get(&m.disk_corrupt_blocks_total), 1);
    assert!(!c.contains(&k, 0));
}

#[test]
fn a_change_another_process_makes_after_the_check_is_seen_by_the_next_passthrough_open() {
    let d = tempfile::tempdir().unwrap();
    let data = pattern(3 * 4096 + 100, 3);
    let k = key("shared", data.len() as u64, 4096);
    let fill = |c: &DiskCache, skip: Option<u64>| put_all(c, &k, &data, skip);
    for i in 0..k.blocks() {
        for replace in [false, true] {
            let mine = open(d.path(), 1 << 20);
            fill(&mine, None);
            drop(complete(&mine, &k).expect("complete and checked"));
            // Another mount sharing the directory punches block i, or replaces the object
            // with one missing it.
            let other = open(d.path(), 1 << 20);
            if replace {
                other.drop_object(&k.hash().into(), &k);
                fill(&other, Some(i));
            } else {
                other.drop_block(&k.hash().into(), &k, i);
            }
            assert!(
                complete(&mine, &k).is_none(),
                "block {i} gone (replaced: {replace}) but a passthrough open was given"
            );
            // Made whole again by the other mount: open, with every byte right.
            fill(&other, None);
            let f = complete(&mine, &k).expect("whole again");
            let mut all = Vec::new();
            io::Read::read_to_end(&mut &f, &mut all).unwrap();
            assert_eq!(all, data);
            drop(f);
            other.drop_object(&k.hash().into(), &k);
        }
    }
}

#[test]
fn a_checked_unchanged_file_opens_without_reading_its_table_again() {
    let d = tempfile::tempdir().unwrap();
    let (c, k, data) = cached(d.path(), "quiet", 2, 4);
    drop(complete(&c, &k).expect("complete"));
    // The table moved away: an open that read it would find the object incomplete.
    let sums = c.files(&k.hash()).sums;
    fs::rename(&sums, sums.with_extension("moved")).unwrap();
    assert!(complete(&c, &k).is_some(), "the table was read again");
    // A change to the data file (a block written again) makes the next open read it.
    c.put(&k, 1, &data[4096..]);
    assert!(
        complete(&c, &k).is_none(),
        "the changed file's table was not read"
    );
}

#[test]
fn a_file_held_open_since_its_check_serves_again_only_while_unchanged_and_linked() {
    let d = tempfile::tempdir().unwrap();
    let (c, k, data) = cached(d.path(), "idle", 2, 4);
    let held = complete(&c, &k).expect("complete");
    assert!(c.still_complete(&k, &held));
    let other = open(d.path(), 1 << 20);
    other.put(&k, 1, &data[4096..]);
    assert!(!c.still_complete(&k, &held), "changed by another process");
    let held = complete(&c, &k).expect("whole");
    assert!(c.still_complete(&k, &held));
    c.put(&k, 0, &data[..4096]);
    assert!(!c.still_complete(&k, &held), "changed by this process");
    let held = complete(&c, &k).expect("whole");
    // Evicted while held: unlinked whole, as the held lock keeps it from being punched.
    c.drop_block(&k.hash().into(), &k, 0);
    assert!(!c.files(&k.hash()).data.exists());
    assert!(!c.still_complete(&k, &held), "evicted");
    let mut all = Vec::new();
    io::Read::read_to_end(&mut &held, &mut all).unwrap();
    assert_eq!(all, data, "a handle on it still reads every byte");
}

#[test]
fn a_read_takes_its_entry_from_memory_until_anyone_changes_the_file() {
    let d = tempfile::tempdir().unwrap();
    // Its fourth block is not held: blocks of a file held whole are never punched alone.
    let data = pattern(4 * 4096, 6);
    let k = key("memo", data.len() as u64, 4096);
    let mine = open(d.path(), 1 << 20);
    put_all(&mine, &k, &data, Some(3));
    for i in 0..3u64 {
        assert!(mine.get_range(&k, i, 100..200).is_some());
    }
    // The table moved away: reads of unchanged blocks do not need it.
    let sums = mine.files(&k.hash()).sums;
    fs::rename(&sums, sums.with_extension("moved")).unwrap();
    let got = mine.get_range(&k, 1, 0..4096).expect("entry from memory");
    assert_eq!(&got[..], &data[4096..8192]);
    fs::rename(sums.with_extension("moved"), &sums).unwrap();
    // Another mount sharing the directory punches block 1: this one's next read of it is a
    // plain miss (the table is read again), not zeros failing their checksum.
    let other = open(d.path(), 1 << 20);
    other.drop_block(&k.hash().into(), &k, 1);
    assert!(mine.get_range(&k, 1, 0..4096).is_none());
    assert_eq!(Metrics::get(&mine.metrics.disk_corrupt_blocks_total), 0);
    let got = mine.get_range(&k, 2, 0..4096).expect("block 2 still held");
    assert_eq!(&got[..], &data[8192..12288]);
}

#[test]
fn kept_pages_count_against_the_capacity_survive_a_reopen_and_give_way_to_whole_blocks() {
    let d = tempfile::tempdir().unwrap();
    let data = pattern(4 * 16384, 3);
    let k = key("pages", data.len() as u64, 16384);
    let at = |i: u64, from: u64| (i * 16384 + from) as usize;
    let c = open(d.path(), 64 << 10);
    c.put_pages(&k, 0, 4096, &data[at(0, 4096)..at(0, 12288)]);
    c.put_pages(&k, 2, 8192, &data[at(2, 8192)..at(2, 12288)]);
    assert_eq!(c.stats().bytes, 3 * 4096);
    assert!(!c.contains(&k, 0), "pages are not the whole block");
    assert_eq!(
        &c.get_range(&k, 0, 5000..9000).unwrap()[..],
        &data[at(0, 5000)..at(0, 9000)]
    );
    assert!(
        c.get_range(&k, 0, 100..5000).is_none(),
        "page 0 was not kept"
    );
    assert!(c.get(&k, 0).is_none());
    assert_eq!(c.stats().bytes, 3 * 4096, "a miss forgets no kept page");
    drop(c);

    let c = open(d.path(), 64 << 10);
    assert_eq!(c.stats().bytes, 3 * 4096, "counted again at the next open");
    assert_eq!(
        &c.get_range(&k, 2, 8192..12288).unwrap()[..],
        &data[at(2, 8192)..at(2, 12288)]
    );
    // A whole block written over its pages is counted once.
    c.put(&k, 0, &data[..16384]);
    assert!(c.contains(&k, 0));
    assert_eq!(c.stats().bytes, 16384 + 4096);
    // At capacity, block 2's page is the least recently used: it goes first, whole.
    c.put(&key("other", 49152, 49152), 0, &[7u8; 49152]);
    assert_eq!(c.stats().bytes, 16384 + 49152);
    assert!(c.get_range(&k, 2, 8192..12288).is_none());
    let files = c.files(&k.hash());
    assert_eq!(pages::held(&files, &k).unwrap(), vec![0; 4]);
    assert_eq!(&c.get(&k, 0).unwrap()[..], &data[..16384]);
}

#[test]
fn a_flipped_byte_in_a_kept_page_is_a_miss_and_drops_the_pages() {
    let d = tempfile::tempdir().unwrap();
    let data = pattern(4 * 16384, 5);
    let k = key("flip", data.len() as u64, 16384);
    let c = open(d.path(), 1 << 20);
    c.put_pages(&k, 1, 0, &data[16384..16384 + 8192]);
    let f = File::options()
        .write(true)
        .open(c.files(&k.hash()).data)
        .unwrap();
    f.write_all_at(&[data[16384 + 5000] ^ 1], 16384 + 5000)
        .unwrap();
    assert!(c.get_range(&k, 1, 4096..8192).is_none());
    assert_eq!(Metrics::get(&c.metrics.disk_corrupt_blocks_total), 1);
    assert_eq!(c.stats().bytes, 0);
    assert!(
        c.get_range(&k, 1, 0..4096).is_none(),
        "the other page of the block went with it"
    );
}

#[test]
fn pages_and_blocks_written_read_and_evicted_at_once_by_two_mounts_never_read_wrong() {
    // Two caches on one directory (two mounts, or a mount and `warm`), small enough that
    // eviction runs all the time, each with threads keeping pages, writing whole blocks and
    // reading ranges of the same objects at once.
    let d = tempfile::tempdir().unwrap();
    let objects: Vec<(ObjectKey, Vec<u8>)> = (0..3)
        .map(|o| {
            let data = pattern(6 * 16384 + 5000, 40 + o as u8);
            (key(&format!("o{o}"), data.len() as u64, 16384), data)
        })
        .collect();
    let caches = [open(d.path(), 96 << 10), open(d.path(), 96 << 10)];
    let (served, wrong) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (c, objects, served, wrong) = (&caches[t as usize % 2], &objects, &served, &wrong);
            s.spawn(move || {
                let mut x = t + 1;
                for _ in 0..6000 {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let (k, data) = &objects[(x >> 60) as usize % objects.len()];
                    let i = (x >> 40) % k.blocks();
                    let len = k.block_len(i);
                    let block = &data[(i * k.block_size) as usize..][..len as usize];
                    match (x >> 20) % 4 {
                        0 => c.put(k, i, block),
                        1 => {
                            let first = (x >> 8) % len.div_ceil(4096);
                            let to = ((first + 1 + (x >> 4) % 3) * 4096).min(len);
                            c.put_pages(
                                k,
                                i,
                                first * 4096,
                                &block[(first * 4096) as usize..to as usize],
                            );
                        }
                        _ => {
                            let start = (x >> 8) % len;
                            let end = (start + 1 + (x >> 30) % 9000).min(len);
                            if let Some(b) = c.get_range(k, i, start..end) {
                                served.fetch_add(1, Ordering::Relaxed);
                                if b[..] != block[start as usize..end as usize] {
                                    wrong.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                }
            });
        }
    });
    assert_eq!(
        wrong.load(Ordering::Relaxed),
        0,
        "a read served wrong bytes"
    );
    assert!(
        served.load(Ordering::Relaxed) > 100,
        "the reads were mostly misses"
    );
    for c in &caches {
        assert!(c.stats().bytes <= 96 << 10);
    }
}
