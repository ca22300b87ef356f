//! The write path under many handles: every interleaving of opens, writes, truncates (through
//! a handle and of the path), closes by the opener and by other processes, fsyncs and late
//! (asynchronous) releases ends with
//! the lake holding exactly the bytes written, and every close by the opener leaves the lake
//! holding what was written before it.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::write::WriteConfig;
use super::*;
use crate::reader::DirectReadPath;
use crate::store::memory::MemoryStore;
use crate::store::throttle::ThrottledStore;
use crate::store::DynStore;

#[derive(Clone, Debug)]
enum Op {
    Open {
        truncate: bool,
    },
    Write {
        h: usize,
        off: u8,
        len: u8,
        seed: u8,
    },
    Truncate {
        h: usize,
        size: u8,
    },
    /// truncate(2) of the path, with no handle: also while a release is on its way.
    TruncatePath {
        size: u8,
    },
    Read {
        h: usize,
    },
    Close {
        h: usize,
    },
    CloseByOther {
        h: usize,
    },
    /// The kernel's release: not awaited, it lands whenever it lands.
    Release {
        h: usize,
    },
    Fsync {
        h: usize,
    },
    Settle,
}

fn op() -> impl Strategy<Value = Op> {
    let h = 0usize..4;
    prop_oneof![
        2 => any::<bool>().prop_map(|truncate| Op::Open { truncate }),
        4 => (h.clone(), any::<u8>(), 1u8..40, any::<u8>())
            .prop_map(|(h, off, len, seed)| Op::Write { h, off, len, seed }),
        1 => (h.clone(), any::<u8>()).prop_map(|(h, size)| Op::Truncate { h, size }),
        1 => any::<u8>().prop_map(|size| Op::TruncatePath { size }),
        1 => h.clone().prop_map(|h| Op::Read { h }),
        2 => h.clone().prop_map(|h| Op::Close { h }),
        1 => h.clone().prop_map(|h| Op::CloseByOther { h }),
        2 => h.clone().prop_map(|h| Op::Release { h }),
        1 => h.prop_map(|h| Op::Fsync { h }),
        1 => Just(Op::Settle),
    ]
}

fn fs_with(store: DynStore, staging: &std::path::Path, block_size: u64) -> Arc<LakeFs> {
    let cfg = FsConfig {
        write: WriteConfig {
            staging_dir: staging.to_path_buf(),
            block_size,
        },
        ..FsConfig::default()
    };
    Arc::new(LakeFs::new(store.clone(), DirectReadPath::new(store), cfg))
}

/// `store` as a remote one: every request takes `latency`, so commits overlap later writes.
fn slow(store: &Arc<MemoryStore>, latency: Duration) -> DynStore {
    Arc::new(ThrottledStore::new(store.clone(), latency, None))
}

fn my_thread() -> u32 {
    // SAFETY: gettid(2) has no preconditions.
    unsafe { libc::gettid() as u32 }
}

fn apply_write(model: &mut Vec<u8>, off: usize, data: &[u8]) {
    if model.len() < off + data.len() {
        model.resize(off + data.len(), 0);
    }
    model[off..off + data.len()].copy_from_slice(data);
}

/// Runs `ops` against one file of a fresh mount; `other` is a live process that is not us.
async fn run(
    ops: Vec<Op>,
    block_size: u64,
    latency: Duration,
    other: u32,
) -> Result<(), TestCaseError> {
    let store = Arc::new(MemoryStore::new());
    store.put("f", "0123456789");
    let t = tempfile::tempdir().unwrap();
    let fs = fs_with(slow(&store, latency), t.path(), block_size);
    let ino = fs.lookup(ROOT_INO, "f").await.unwrap().ino;
    let mut model = b"0123456789".to_vec();
    let mut open: Vec<u64> = Vec::new();
    let mut releases = Vec::new();
    let pick = |open: &Vec<u64>, h: usize| (!open.is_empty()).then(|| open[h % open.len()]);
    for op in ops {
        match op {
            Op::Open { truncate } => {
                let mode = OpenMode {
                    write: true,
                    truncate,
                    pid: my_thread(),
                };
                let (fh, _) = fs.open(ino, mode).await.unwrap();
                if truncate {
                    model.clear();
                }
                open.push(fh);
            }
            Op::Write { h, off, len, seed } => {
                let Some(fh) = pick(&open, h) else { continue };
                let data: Vec<u8> = (0..len).map(|i| seed.wrapping_add(i)).collect();
                assert_eq!(fs.write(fh, off as u64, &data).await, Ok(len as u32));
                apply_write(&mut model, off as usize, &data);
            }
            Op::Truncate { h, size } => {
                let Some(fh) = pick(&open, h) else { continue };
                fs.setattr(ino, Some(size as u64), Some(fh), &Default::default())
                    .await
                    .unwrap();
                model.resize(size as usize, 0);
            }
            Op::TruncatePath { size } => {
                let a = fs
                    .setattr(ino, Some(size as u64), None, &Default::default())
                    .await
                    .unwrap();
                model.resize(size as usize, 0);
                prop_assert_eq!(a.size, size as u64, "truncate answers the new size");
                prop_assert_eq!(fs.getattr(ino).await.unwrap().size, size as u64);
                if open.is_empty()
                    && releases
                        .iter()
                        .all(|r: &tokio::task::JoinHandle<()>| r.is_finished())
                {
                    prop_assert_eq!(
                        store.data("f").map(|b| b.to_vec()),
                        Some(model.clone()),
                        "with no handle open, a truncated file is in the lake at once"
                    );
                }
            }
            Op::Read { h } => {
                let Some(fh) = pick(&open, h) else { continue };
                let got = fs.read(fh, 0, 1 << 16).await;
                prop_assert_eq!(
                    got.map(|b| b.to_vec()),
                    Ok(model.clone()),
                    "a handle reads what was written"
                );
            }
            Op::Close { h } => {
                let Some(fh) = pick(&open, h) else { continue };
                fs.close(fh, my_thread()).await.unwrap();
                prop_assert_eq!(
                    store.data("f").map(|b| b.to_vec()),
                    Some(model.clone()),
                    "after the opener's close the lake has every byte written before it"
                );
            }
            Op::CloseByOther { h } => {
                let Some(fh) = pick(&open, h) else { continue };
                let before = store.data("f");
                fs.close(fh, other).await.unwrap();
                prop_assert_eq!(
                    store.data("f"),
                    before,
                    "another process's close commits nothing"
                );
            }
            Op::Release { h } => {
                let Some(fh) = pick(&open, h) else { continue };
                open.retain(|&x| x != fh);
                let fs = fs.clone();
                releases.push(tokio::spawn(async move { fs.release(fh).await }));
            }
            Op::Fsync { h } => {
                let Some(fh) = pick(&open, h) else { continue };
                fs.flush(fh).await.unwrap();
                prop_assert_eq!(store.data("f").map(|b| b.to_vec()), Some(model.clone()));
            }
            Op::Settle => {
                for r in releases.drain(..) {
                    r.await.unwrap();
                }
            }
        }
    }
    for fh in open.drain(..) {
        let fs = fs.clone();
        releases.push(tokio::spawn(async move { fs.release(fh).await }));
    }
    for r in releases {
        r.await.unwrap();
    }
    prop_assert_eq!(
        store.data("f").map(|b| b.to_vec()),
        Some(model),
        "after the last release the lake has every byte written"
    );
    prop_assert_eq!(store.staged_blocks(), 0, "no block left staged");
    let left: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    prop_assert!(left.is_empty(), "staging files left behind: {left:?}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_interleaving_of_handles_ends_with_every_write_in_the_lake(
        ops in proptest::collection::vec(op(), 1..60),
        block_size in prop_oneof![Just(4u64), Just(16), Just(1 << 20)],
        latency_us in prop_oneof![Just(0u64), Just(300), Just(2000)],
    ) {
        let mut other = std::process::Command::new("sleep").arg("60").spawn().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let r = rt.block_on(run(ops, block_size, Duration::from_micros(latency_us), other.id()));
        let _ = other.kill();
        let _ = other.wait();
        r?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_mounts_writing_one_name_the_last_commit_wins_whole() {
    let store = Arc::new(MemoryStore::new());
    let (ta, tb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (
        fs_with(store.clone(), ta.path(), 4),
        fs_with(store.clone(), tb.path(), 4),
    );
    let (_, fa) = a.create(ROOT_INO, "f", false, 0).await.unwrap();
    let (_, fb) = b.create(ROOT_INO, "f", false, 0).await.unwrap();
    // Both have full blocks staged in the lake before either commits.
    a.write(fa, 0, b"AAAAAAAAAAAA").await.unwrap();
    b.write(fb, 0, b"BBBBBBBBBBBBBBBB").await.unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(10), async {
        while store.staged_blocks() < 7 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .is_ok());
    a.flush(fa).await.unwrap();
    assert_eq!(&store.data("f").unwrap()[..], b"AAAAAAAAAAAA");
    // A's commit dropped B's staged blocks, as Azure does: B uploads them again.
    b.flush(fb).await.unwrap();
    assert_eq!(
        &store.data("f").unwrap()[..],
        b"BBBBBBBBBBBBBBBB",
        "the last commit wins, whole"
    );
    a.release(fa).await;
    b.release(fb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlink_during_a_commit_leaves_no_file_whatever_the_timing() {
    // A commit under way (an fsync from another thread, or the last release) when the name is
    // unlinked: the file must not come back once the commit lands. Unlinks at 0 to 7 ms
    // into commits that take about 2 ms a request.
    for delay_ms in 0..8u64 {
        for block_size in [4u64, 1 << 20] {
            let store = Arc::new(MemoryStore::new());
            let t = tempfile::tempdir().unwrap();
            let fs = fs_with(slow(&store, Duration::from_millis(2)), t.path(), block_size);
            let (_, fh) = fs.create(ROOT_INO, "tmp", false, 0).await.unwrap();
            fs.write(fh, 0, b"scratch data of a few blocks")
                .await
                .unwrap();
            let syncing = {
                let fs = fs.clone();
                tokio::spawn(async move { fs.flush(fh).await })
            };
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            fs.unlink(ROOT_INO, "tmp").await.unwrap();
            let _ = syncing.await.unwrap();
            fs.release(fh).await;
            assert!(
                store.keys().is_empty(),
                "unlinked {delay_ms} ms into a commit (blocks of {block_size}): {:?}",
                store.keys()
            );
            assert_eq!(
                fs.lookup(ROOT_INO, "tmp").await.map(|_| ()),
                Err(FsError(libc::ENOENT))
            );
        }
    }
}

#[tokio::test]
async fn an_open_file_whose_name_is_gone_has_no_links_and_still_reads_and_writes() {
    let store = Arc::new(MemoryStore::new());
    store.put("kept", "k");
    let t = tempfile::tempdir().unwrap();
    let fs = fs_with(store.clone(), t.path(), 4);
    let (a, fh) = fs.create(ROOT_INO, "log", false, 0).await.unwrap();
    assert_eq!(a.nlink, 1);
    fs.unlink(ROOT_INO, "log").await.unwrap();
    assert_eq!(fs.getattr(a.ino).await.unwrap().nlink, 0, "unlinked");
    fs.write(fh, 0, b"still here").await.unwrap();
    assert_eq!(&fs.read(fh, 0, 64).await.unwrap()[..], b"still here");
    // Replaced by a rename onto its name: the old inode has no links either.
    let (b, fb) = fs.create(ROOT_INO, "new", false, 0).await.unwrap();
    fs.flush(fb).await.unwrap();
    let kept = fs.lookup(ROOT_INO, "kept").await.unwrap();
    fs.rename(ROOT_INO, "new", ROOT_INO, "kept", false)
        .await
        .unwrap();
    assert_eq!(fs.getattr(kept.ino).await.unwrap().nlink, 0, "replaced");
    assert_eq!(fs.getattr(b.ino).await.unwrap().nlink, 1, "renamed");
    fs.release(fb).await;
    fs.release(fh).await;
    assert_eq!(store.keys(), ["kept"]);
}
