//! The write handle over the in-memory store.

use super::*;
use crate::store::memory::MemoryStore;
use crate::store::Store;

fn setup(bs: u64) -> (Arc<MemoryStore>, WriteConfig, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = WriteConfig {
        staging_dir: dir.path().join("staging"),
        block_size: bs,
    };
    (Arc::new(MemoryStore::new()), cfg, dir)
}

/// The version of `key` the store holds now.
async fn version_of(store: &MemoryStore, key: &str) -> ObjectVersion {
    let v = store.head(key).await.unwrap().unwrap();
    ObjectVersion {
        key: key.into(),
        etag: v.etag,
        size: v.size,
    }
}

fn handle(store: &Arc<MemoryStore>, cfg: &WriteConfig, start: Start) -> Arc<WriteHandle> {
    WriteHandle::create(store.clone(), "f", start, cfg, Arc::new(Semaphore::new(4))).unwrap()
}

#[tokio::test]
async fn out_of_order_writes_with_a_hole_commit_the_right_bytes() {
    let (store, cfg, _d) = setup(4);
    let h = handle(&store, &cfg, Start::Empty);
    h.write(8, b"IJKL").await.unwrap();
    h.write(0, b"ABCD").await.unwrap();
    h.write(14, b"OP").await.unwrap();
    h.write(2, b"cd").await.unwrap();
    h.commit().await.unwrap().unwrap();
    let want = b"ABcd\0\0\0\0IJKL\0\0OP";
    assert_eq!(&store.data("f").unwrap()[..], want);
    let md5: [u8; 16] = Md5::digest(want).into();
    let info = store.head("f").await.unwrap().unwrap();
    assert_eq!(info.content_md5, Some(crate::store::md5_base64(&md5)));
    assert_eq!(store.staged_blocks(), 0, "nothing left staged");
}

#[tokio::test]
async fn sequential_writes_upload_full_blocks_before_the_commit() {
    let (store, cfg, _d) = setup(4);
    let h = handle(&store, &cfg, Start::Empty);
    h.write(0, b"0123456789").await.unwrap();
    h.wait_uploads().await;
    assert_eq!(store.staged_blocks(), 2, "two full blocks went up early");
    assert!(store.data("f").is_none(), "invisible before the commit");
    h.commit().await.unwrap().unwrap();
    assert_eq!(&store.data("f").unwrap()[..], b"0123456789");
    h.finish().await;
    assert!(!h.staging_path().exists(), "staging removed after success");
}

#[tokio::test]
async fn a_failed_commit_keeps_the_staging_file_and_the_old_object() {
    let (store, cfg, _d) = setup(4);
    store.put("f", "old");
    let h = handle(&store, &cfg, Start::Empty);
    h.write(0, b"new content").await.unwrap();
    store.fail_writes.store(true, Ordering::Relaxed);
    assert!(h.commit().await.is_err());
    h.finish().await;
    assert_eq!(&store.data("f").unwrap()[..], b"old");
    assert_eq!(std::fs::read(h.staging_path()).unwrap(), b"new content");
    let target = std::fs::read_to_string(h.staging_path().with_extension("target")).unwrap();
    assert!(target.ends_with("\nf\n"), "{target}");
}

#[tokio::test]
async fn only_staging_files_without_a_live_handle_are_leftovers() {
    // Blocks larger than the data: no upload task holds the handle.
    let (store, cfg, _d) = setup(1 << 20);
    let h = handle(&store, &cfg, Start::Empty);
    h.write(0, b"written, never committed").await.unwrap();
    assert_eq!(
        leftovers(&cfg.staging_dir),
        [],
        "a live handle's file is not left over"
    );
    let data = h.staging_path().to_path_buf();
    // What a killed daemon leaves: the file and its sidecar, no handle, no commit.
    drop(h);
    assert_eq!(
        leftovers(&cfg.staging_dir),
        [Leftover {
            data,
            target: "memory://f".into(),
            size: 24,
            partial: None,
        }]
    );
}

#[tokio::test]
async fn a_size_past_the_largest_blob_is_refused_and_changes_nothing() {
    let (store, cfg, _d) = setup(4);
    let h = handle(&store, &cfg, Start::Empty);
    h.write(0, b"part").await.unwrap();
    let e = h.set_size(u64::MAX).await.unwrap_err();
    assert_eq!(e.errno(), libc::EFBIG);
    let e = h.write(MAX_FILE_SIZE - 2, b"xyz").await.unwrap_err();
    assert_eq!(e.errno(), libc::EFBIG);
    h.commit().await.unwrap().unwrap();
    assert_eq!(&store.data("f").unwrap()[..], b"part");
}

#[tokio::test]
async fn a_copy_in_that_failed_before_any_change_still_fails_the_commit() {
    let (store, cfg, _d) = setup(4);
    store.put("f", "old content");
    let base = version_of(&store, "f").await;
    let h = handle(&store, &cfg, Start::Existing(base));
    // Replaced meanwhile: copying the original in fails, nothing was changed yet.
    store.put("f", "other");
    assert!(h.write(11, b" appended").await.is_err());
    assert!(h.commit().await.is_err(), "close must not say 0");
    assert!(!h.awaits_commit());
    assert_eq!(&store.data("f").unwrap()[..], b"other");
}

#[tokio::test]
async fn appending_to_an_existing_object_rewrites_it_whole() {
    let (store, cfg, _d) = setup(4);
    store.put("f", "hello");
    let base = version_of(&store, "f").await;
    let h = handle(&store, &cfg, Start::Existing(base));
    assert_eq!(h.size(), 5);
    h.write(5, b", world").await.unwrap();
    h.write(0, b"H").await.unwrap();
    h.commit().await.unwrap().unwrap();
    assert_eq!(&store.data("f").unwrap()[..], b"Hello, world");
}

#[tokio::test]
async fn truncating_then_writing_again_commits_only_the_new_bytes() {
    let (store, cfg, _d) = setup(4);
    let h = handle(&store, &cfg, Start::Empty);
    h.write(0, b"0123456789").await.unwrap();
    h.commit().await.unwrap().unwrap();
    h.set_size(0).await.unwrap();
    h.write(0, b"ab").await.unwrap();
    h.set_size(6).await.unwrap();
    h.commit().await.unwrap().unwrap();
    assert_eq!(&store.data("f").unwrap()[..], b"ab\0\0\0\0");
}

/// A file committed again (fsync of a growing log, a live commit) sends the blocks that
/// changed, and names the ones the lake already holds: for appends and in-place changes,
/// over orders of writes, the lake ends with exactly the staged bytes.
#[tokio::test]
async fn a_commit_sends_only_the_blocks_changed_since_the_last() {
    let (store, cfg, _d) = setup(4);
    let h = handle(&store, &cfg, Start::Empty);
    let sent = || store.counters.put_bytes.load(Ordering::Relaxed);
    let mut model = b"0123456789".to_vec();
    h.write(0, &model).await.unwrap();
    h.commit().await.unwrap().unwrap();
    assert_eq!(sent(), 10);
    // (offset, bytes, bytes a commit must send: the blocks they touch, as long as they are)
    let steps: [(u64, &[u8], u64); 5] = [
        (10, b"abcdef", 8), // the old last block grows, one new block
        (0, b"X", 4),       // one block in place
        (17, b"!", 2),      // past a whole last block: one new block with a hole
        (21, b"?", 6),      // past a part block: the hole grows it, one new block
        (5, b"yy", 4),      // inside one block again
    ];
    for (off, data, cost) in steps {
        let before = sent();
        h.write(off, data).await.unwrap();
        let end = off as usize + data.len();
        if model.len() < end {
            model.resize(end, 0);
        }
        model[off as usize..end].copy_from_slice(data);
        h.commit().await.unwrap().unwrap();
        assert_eq!(&store.data("f").unwrap()[..], &model[..], "after {off}");
        assert_eq!(sent() - before, cost, "write at {off}");
    }
    // Another writer replaced the object: its blocks are gone, everything goes up again.
    store.put("f", "other");
    h.write(0, b"Z").await.unwrap();
    model[0] = b'Z';
    h.commit().await.unwrap().unwrap();
    assert_eq!(&store.data("f").unwrap()[..], &model[..]);
}

#[derive(Clone, Debug)]
enum Op {
    Write { off: u64, len: usize, seed: u8 },
    Truncate { size: u64 },
    Read { off: u64, len: u32 },
    Commit,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (0u64..140, 1usize..24, any::<u8>()).prop_map(|(off, len, seed)| Op::Write { off, len, seed }),
        1 => (0u64..140).prop_map(|size| Op::Truncate { size }),
        3 => (0u64..150, 1u32..40).prop_map(|(off, len)| Op::Read { off, len }),
        2 => Just(Op::Commit),
    ]
}

/// Over an object whose blocks line up with the writer's (left in the lake, see `base`):
/// random writes, truncates, reads and commits read and land exactly what a model says,
/// whichever blocks were read in and whichever were still only in the lake.
async fn over_an_adopted_object(initial: usize, bs: u64, ops: Vec<Op>) -> Result<(), String> {
    let (store, cfg, _d) = setup(bs);
    let mut model: Vec<u8> = (0..initial).map(|i| (i * 7 % 251) as u8).collect();
    let first = handle(&store, &cfg, Start::Empty);
    first.write(0, &model).await.unwrap();
    first.commit().await.unwrap();
    let h = handle(&store, &cfg, Start::Existing(version_of(&store, "f").await));
    for (i, op) in ops.into_iter().enumerate() {
        match op {
            Op::Write { off, len, seed } => {
                let data: Vec<u8> = (0..len).map(|j| seed.wrapping_add(j as u8)).collect();
                h.write(off, &data).await.unwrap();
                let end = off as usize + len;
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[off as usize..end].copy_from_slice(&data);
            }
            Op::Truncate { size } => {
                h.set_size(size).await.unwrap();
                model.resize(size as usize, 0);
            }
            Op::Read { off, len } => {
                if !h.is_loaded() {
                    continue;
                }
                let got = h.read(off, len).await.unwrap();
                let s = (off as usize).min(model.len());
                let e = (off as usize + len as usize).min(model.len());
                if got[..] != model[s..e] {
                    return Err(format!("op {i}: read {off}+{len}"));
                }
            }
            Op::Commit => {
                h.commit().await.unwrap();
                if store.data("f").as_deref() != Some(&model[..]) {
                    return Err(format!("op {i}: the lake after a commit"));
                }
            }
        }
    }
    h.commit().await.unwrap();
    if store.data("f").as_deref() != Some(&model[..]) {
        return Err("the lake at the end".into());
    }
    Ok(())
}

proptest::proptest! {
    #[test]
    fn a_writer_over_an_adopted_object_reads_and_lands_what_a_model_says(
        initial in 9usize..100,
        bs in proptest::prelude::prop_oneof![proptest::prelude::Just(4u64), proptest::prelude::Just(16)],
        ops in proptest::collection::vec(op(), 1..30),
    ) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let r = rt.block_on(over_an_adopted_object(initial, bs, ops));
        proptest::prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}

/// Appending to a large object that a writer committed costs the appended bytes and the
/// block they start in, not the object; an in-place change costs its block.
#[tokio::test]
async fn an_append_to_an_existing_object_sends_what_was_appended_not_the_object() {
    let (store, cfg, _d) = setup(1024);
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let first = handle(&store, &cfg, Start::Empty);
    first.write(0, &body).await.unwrap();
    first.commit().await.unwrap();
    let (sent, gets) = (
        || store.counters.put_bytes.load(Ordering::Relaxed),
        || store.counters.gets.load(Ordering::Relaxed),
    );
    let (before, got) = (sent(), gets());
    let h = handle(&store, &cfg, Start::Existing(version_of(&store, "f").await));
    h.write(body.len() as u64, b"appended line\n")
        .await
        .unwrap();
    h.commit().await.unwrap();
    let want = [&body[..], b"appended line\n"].concat();
    assert_eq!(&store.data("f").unwrap()[..], &want[..]);
    assert!(sent() - before <= 1024 + 14, "sent {}", sent() - before);
    assert!(
        gets() - got <= 1,
        "read in: the one block the append starts in"
    );
    let before = sent();
    h.write(50_000, b"X").await.unwrap();
    h.commit().await.unwrap();
    assert_eq!(sent() - before, 1024, "one block in place");
    let mut want = want;
    want[50_000] = b'X';
    assert_eq!(&store.data("f").unwrap()[..], &want[..]);
    assert_eq!(
        &h.read(49_990, 20).await.unwrap()[..],
        &want[49_990..50_010]
    );
}

/// Drops `h` once upload tasks have let go of it (they hold it until just after they finish),
/// so its staging file is closed and unlocked.
async fn last_reference(h: Arc<WriteHandle>) {
    h.wait_uploads().await;
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while Arc::strong_count(&h) > 1 && std::time::Instant::now() < end {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert_eq!(
        Arc::strong_count(&h),
        1,
        "an upload task still holds the handle"
    );
}

/// A writer that left blocks in the lake and died before its commit: the staging file it
/// leaves is reported as holding only the changed blocks over that version, never as a
/// whole file to upload; once every block is read in, it is a whole file again.
#[tokio::test]
async fn a_staging_file_with_blocks_left_in_the_lake_is_never_taken_for_a_whole_file() {
    let (store, cfg, _d) = setup(4);
    let first = handle(&store, &cfg, Start::Empty);
    first.write(0, b"0123456789abcdef").await.unwrap();
    first.commit().await.unwrap();
    first.finish().await;
    let base = version_of(&store, "f").await;
    let h = handle(&store, &cfg, Start::Existing(base.clone()));
    h.write(16, b"tail").await.unwrap();
    let path = h.staging_path();
    // What a killed daemon leaves: no handle, no upload task holding one.
    last_reference(h).await;
    let left = leftovers(&cfg.staging_dir);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].data, path);
    assert_eq!(left[0].partial.as_deref(), Some(base.etag.as_str()));
    let h = handle(&store, &cfg, Start::Existing(base));
    h.write(16, b"tail").await.unwrap();
    h.read_in_all().await.unwrap();
    last_reference(h).await;
    let left = leftovers(&cfg.staging_dir);
    let whole: Vec<_> = left.iter().filter(|l| l.partial.is_none()).collect();
    assert_eq!(whole.len(), 1, "{left:?}");
    assert_eq!(
        std::fs::read(&whole[0].data).unwrap(),
        b"0123456789abcdeftail"
    );
    for l in &left {
        let _ = std::fs::remove_file(&l.data);
    }
    // Truncated to nothing and written anew: whole again, nothing read in.
    let h = handle(&store, &cfg, Start::Existing(version_of(&store, "f").await));
    h.write(0, b"x").await.unwrap();
    h.set_size(0).await.unwrap();
    h.write(0, b"new").await.unwrap();
    last_reference(h).await;
    let left = leftovers(&cfg.staging_dir);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].partial, None, "{left:?}");
    assert_eq!(std::fs::read(&left[0].data).unwrap(), b"new");
}

/// Another writer replaces an object a writer left blocks of in the lake: those blocks are
/// gone, so the commit fails and the other writer's version stands; nothing with holes is
/// committed or kept.
#[tokio::test]
async fn an_object_replaced_under_a_writer_that_kept_its_blocks_fails_the_commit_and_stands() {
    let (store, cfg, _d) = setup(4);
    let first = handle(&store, &cfg, Start::Empty);
    first.write(0, b"0123456789abcdef").await.unwrap();
    first.commit().await.unwrap();
    let h = handle(&store, &cfg, Start::Existing(version_of(&store, "f").await));
    h.write(16, b"more").await.unwrap();
    let other = handle(&store, &cfg, Start::Empty);
    other.write(0, b"the other writer's").await.unwrap();
    other.commit().await.unwrap();
    let e = h.commit().await.unwrap_err();
    assert_eq!(e.errno(), libc::ESTALE, "{e}");
    assert_eq!(&store.data("f").unwrap()[..], b"the other writer's");
    h.wait_uploads().await;
    h.finish().await;
    assert!(
        leftovers(&cfg.staging_dir).is_empty(),
        "no file with holes is kept for upload"
    );
}
