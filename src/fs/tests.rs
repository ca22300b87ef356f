//! The filesystem core driven directly over the in-memory store.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::reader::DirectReadPath;
use crate::store::memory::MemoryStore;

fn fs_over(store: Arc<MemoryStore>, ttl: Duration) -> LakeFs {
    let cfg = FsConfig {
        uid: 1000,
        gid: 1000,
        metadata_ttl: ttl,
        ..FsConfig::default()
    };
    LakeFs::new(store.clone(), DirectReadPath::new(store), cfg)
}

/// All entry names of directory `ino`, read through opendir/readdir like `ls -a` would,
/// with a small reply buffer (7 entries) so offsets are exercised.
async fn names(fs: &LakeFs, fh: u64, plus: bool) -> Vec<String> {
    let all = super::readdir::read_all(fs, fh, plus, 7).await;
    all.into_iter().map(|(n, _, _)| n).collect()
}

async fn ls(fs: &LakeFs, ino: u64) -> Vec<String> {
    let fh = fs.opendir(ino).await.unwrap();
    let n = names(fs, fh, false).await;
    fs.releasedir(fh);
    n
}

fn sample() -> Arc<MemoryStore> {
    let s = Arc::new(MemoryStore::with_page_size(3));
    s.put("a.txt", "alpha");
    s.put("dir/one", "1");
    s.put("dir/two", "22");
    s.put("dir/sub/three", "333");
    s.put_dir_marker("empty");
    s.put_dir_marker("dir");
    s.put("odd//name", "x");
    s.put("dots/./x", "x");
    s.put(&format!("long/{}", "n".repeat(300)), "x");
    s.put("long/ok", "x");
    s.put("clash", "file hidden by the directory");
    s.put("clash/inner", "i");
    s
}

#[tokio::test]
async fn lists_directories_from_prefixes_and_markers_once() {
    let fs = fs_over(sample(), Duration::from_secs(60));
    assert_eq!(
        ls(&fs, ROOT_INO).await,
        [".", "..", "a.txt", "clash", "dir", "dots", "empty", "long", "odd"]
    );
    let dir = fs.lookup(ROOT_INO, "dir").await.unwrap();
    assert_eq!(dir.kind, Kind::Dir);
    assert_eq!(ls(&fs, dir.ino).await, [".", "..", "one", "sub", "two"]);
    let empty = fs.lookup(ROOT_INO, "empty").await.unwrap();
    assert_eq!(ls(&fs, empty.ino).await, [".", ".."]);
}

#[tokio::test]
async fn names_that_cannot_be_posix_are_skipped_and_the_rest_stays() {
    let fs = fs_over(sample(), Duration::from_secs(60));
    let odd = fs.lookup(ROOT_INO, "odd").await.unwrap();
    assert_eq!(
        ls(&fs, odd.ino).await,
        [".", ".."],
        "a//b has an empty segment"
    );
    let dots = fs.lookup(ROOT_INO, "dots").await.unwrap();
    assert_eq!(ls(&fs, dots.ino).await, [".", ".."]);
    let long = fs.lookup(ROOT_INO, "long").await.unwrap();
    assert_eq!(ls(&fs, long.ino).await, [".", "..", "ok"]);
    assert_eq!(
        fs.lookup(long.ino, &"n".repeat(300)).await,
        Err(FsError(libc::ENAMETOOLONG))
    );
}

#[tokio::test]
async fn a_directory_hides_a_file_of_the_same_name() {
    let fs = fs_over(sample(), Duration::from_secs(60));
    // Without a cached listing (lookup path: HEAD + prefix probe) ...
    assert_eq!(fs.lookup(ROOT_INO, "clash").await.unwrap().kind, Kind::Dir);
    // ... and with one.
    let fs = fs_over(sample(), Duration::from_secs(60));
    ls(&fs, ROOT_INO).await;
    assert_eq!(fs.lookup(ROOT_INO, "clash").await.unwrap().kind, Kind::Dir);
}

#[tokio::test]
async fn lookup_reports_sizes_and_missing_names() {
    let fs = fs_over(sample(), Duration::from_secs(60));
    let a = fs.lookup(ROOT_INO, "a.txt").await.unwrap();
    assert_eq!(
        (a.kind, a.size, a.uid, a.perm),
        (Kind::File, 5, 1000, 0o644)
    );
    assert_eq!(fs.getattr(a.ino).await.unwrap().size, 5);
    assert_eq!(
        fs.lookup(ROOT_INO, "nope").await,
        Err(FsError(libc::ENOENT))
    );
    assert_eq!(fs.lookup(a.ino, "x").await, Err(FsError(libc::ENOTDIR)));
}

#[tokio::test]
async fn reads_return_exact_bytes_and_a_read_only_mount_refuses_changes() {
    let s = Arc::new(MemoryStore::new());
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    s.put("f.bin", data.clone());
    let fs = fs_over(s, Duration::from_secs(60));
    let f = fs.lookup(ROOT_INO, "f.bin").await.unwrap();
    let ro = LakeFs::new(
        fs.store.clone(),
        fs.read_path.clone(),
        FsConfig {
            read_only: true,
            ..FsConfig::default()
        },
    );
    let rf = ro.lookup(ROOT_INO, "f.bin").await.unwrap();
    let w = OpenMode {
        write: true,
        truncate: false,
        pid: 0,
    };
    assert_eq!(ro.open(rf.ino, w).await, Err(FsError(libc::EROFS)));
    assert_eq!(ro.mkdir(ROOT_INO, "d").await, Err(FsError(libc::EROFS)));
    assert_eq!(
        ro.unlink(ROOT_INO, "f.bin").await,
        Err(FsError(libc::EROFS))
    );
    assert!(
        !fs.open(f.ino, OpenMode::READ).await.unwrap().1,
        "first open: nothing cached to keep"
    );
    let fh = fs.open(f.ino, OpenMode::READ).await.unwrap().0;
    assert_eq!(&fs.read(fh, 0, 10).await.unwrap()[..], &data[..10]);
    assert_eq!(
        &fs.read(fh, 99_990, 4096).await.unwrap()[..],
        &data[99_990..]
    );
    assert!(fs.read(fh, 200_000, 10).await.unwrap().is_empty());
    fs.release(fh).await;
    assert_eq!(fs.read(fh, 0, 1).await, Err(FsError(libc::EBADF)));
    let d = fs.lookup(ROOT_INO, "f.bin").await.unwrap();
    assert_eq!(fs.opendir(d.ino).await, Err(FsError(libc::ENOTDIR)));
}

#[tokio::test]
async fn an_open_handle_never_mixes_two_versions() {
    let s = Arc::new(MemoryStore::new());
    s.put("f", "old content");
    let fs = fs_over(s.clone(), Duration::from_secs(60));
    let f = fs.lookup(ROOT_INO, "f").await.unwrap();
    let fh = fs.open(f.ino, OpenMode::READ).await.unwrap().0;
    assert_eq!(&fs.read(fh, 0, 3).await.unwrap()[..], b"old");
    s.put("f", "new content");
    assert_eq!(fs.read(fh, 3, 8).await, Err(FsError(libc::ESTALE)));
}

#[tokio::test]
async fn listings_are_cached_for_the_ttl_only() {
    let s = sample();
    let fs = fs_over(s.clone(), Duration::from_secs(60));
    ls(&fs, ROOT_INO).await;
    let lists = s.counters.lists.load(Ordering::Relaxed);
    ls(&fs, ROOT_INO).await;
    fs.lookup(ROOT_INO, "a.txt").await.unwrap();
    fs.lookup(ROOT_INO, "missing").await.unwrap_err();
    assert_eq!(
        s.counters.lists.load(Ordering::Relaxed),
        lists,
        "answered from the cache"
    );
    assert_eq!(s.counters.heads.load(Ordering::Relaxed), 0);

    let fs = fs_over(s.clone(), Duration::ZERO);
    ls(&fs, ROOT_INO).await;
    let lists = s.counters.lists.load(Ordering::Relaxed);
    ls(&fs, ROOT_INO).await;
    assert!(
        s.counters.lists.load(Ordering::Relaxed) > lists,
        "TTL 0 asks the store every time"
    );
}

#[tokio::test]
async fn out_of_band_changes_show_after_the_ttl() {
    let s = sample();
    let fs = fs_over(s.clone(), Duration::from_millis(50));
    assert!(!ls(&fs, ROOT_INO).await.contains(&"later".to_string()));
    s.put("later", "x");
    s.remove("a.txt");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let names = ls(&fs, ROOT_INO).await;
        if names.contains(&"later".to_string()) {
            assert!(!names.contains(&"a.txt".to_string()));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "new blob never appeared"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        fs.lookup(ROOT_INO, "a.txt").await,
        Err(FsError(libc::ENOENT))
    );
}

#[tokio::test]
async fn ten_thousand_entries_list_completely_across_pages() {
    let s = Arc::new(MemoryStore::with_page_size(1000));
    for i in 0..10_000 {
        s.put(&format!("big/f{i:05}"), "");
    }
    let fs = fs_over(s.clone(), Duration::from_secs(60));
    let big = fs.lookup(ROOT_INO, "big").await.unwrap();
    let names = ls(&fs, big.ino).await;
    assert_eq!(names.len(), 10_002);
    assert_eq!(names[2], "f00000");
    assert_eq!(names[10_001], "f09999");
    assert!(s.counters.lists.load(Ordering::Relaxed) >= 10);
}

#[tokio::test]
async fn readdirplus_counts_lookups_and_forget_releases_inodes() {
    let s = Arc::new(MemoryStore::new());
    for i in 0..20 {
        s.put(&format!("f{i}"), "x");
    }
    let fs = fs_over(s, Duration::from_secs(60));
    let fh = fs.opendir(ROOT_INO).await.unwrap();
    let inos: Vec<u64> = super::readdir::read_all(&fs, fh, true, usize::MAX)
        .await
        .into_iter()
        .filter(|(name, _, _)| name != "." && name != "..")
        .map(|(_, ino, _)| ino)
        .collect();
    fs.releasedir(fh);
    assert_eq!(inos.len(), 20);
    assert_eq!(fs.inode_count(), 21);
    for ino in inos {
        fs.forget(ino, 1);
    }
    assert_eq!(fs.inode_count(), 1, "only the root is left");
}

#[tokio::test]
async fn entries_that_did_not_fit_are_not_counted() {
    let s = Arc::new(MemoryStore::new());
    s.put("a", "x");
    s.put("b", "x");
    let fs = fs_over(s, Duration::from_secs(60));
    let fh = fs.opendir(ROOT_INO).await.unwrap();
    // Room for ".", ".." and "a" only.
    let mut room = 3;
    fs.readdir(fh, 0, true, &mut |_| {
        if room == 0 {
            return true;
        }
        room -= 1;
        false
    })
    .await
    .unwrap();
    assert_eq!(
        fs.inode_count(),
        2,
        "root and a; b was refused by the buffer"
    );
}

#[tokio::test]
async fn the_page_cache_is_kept_only_while_the_etag_is_unchanged() {
    let s = Arc::new(MemoryStore::new());
    s.put("f", "one");
    let fs = fs_over(s.clone(), Duration::from_millis(20));
    let f = fs.lookup(ROOT_INO, "f").await.unwrap();
    assert!(!fs.open(f.ino, OpenMode::READ).await.unwrap().1);
    assert!(
        fs.open(f.ino, OpenMode::READ).await.unwrap().1,
        "same version: keep"
    );
    s.put("f", "two");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (fh, keep) = fs.open(f.ino, OpenMode::READ).await.unwrap();
        match fs.read(fh, 0, 3).await {
            Ok(b) if &b[..] == b"two" => {
                assert!(!keep, "a new version must drop the kernel's pages");
                break;
            }
            // Still within the TTL: opened under the old ETag, which the store no longer has.
            Err(FsError(libc::ESTALE)) => assert!(keep),
            other => panic!("{other:?}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "new version never seen"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Loaders that open paths without listing (zarr, HF datasets): a small directory costs one
/// listing for all its lookups, misses included; a big one one first page, then one lookup
/// per name, and its first page is not listed again within the TTL.
#[tokio::test]
async fn lookups_in_an_unlisted_directory_list_it_once() {
    let s = Arc::new(MemoryStore::with_page_size(10));
    for i in 0..5 {
        s.put(&format!("small/{i}"), "x");
    }
    for i in 0..30 {
        s.put(&format!("big/{i:02}"), "y");
    }
    let fs = fs_over(s.clone(), Duration::from_secs(60));
    let count = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let small = fs.lookup(ROOT_INO, "small").await.unwrap();
    let big = fs.lookup(ROOT_INO, "big").await.unwrap();
    let (lists, heads) = (count(&s.counters.lists), count(&s.counters.heads));
    for round in 0..2 {
        for i in 0..5 {
            assert!(fs.lookup(small.ino, &i.to_string()).await.is_ok());
        }
        for missing in ["5", "zz", "0.0"] {
            assert_eq!(
                fs.lookup(small.ino, missing).await,
                Err(FsError(libc::ENOENT))
            );
        }
        assert_eq!(
            count(&s.counters.lists) - lists,
            1,
            "round {round}: one listing"
        );
        assert_eq!(count(&s.counters.heads) - heads, 0, "round {round}");
    }
    let (lists, heads) = (count(&s.counters.lists), count(&s.counters.heads));
    for i in 0..30 {
        assert!(fs.lookup(big.ino, &format!("{i:02}")).await.is_ok());
    }
    // The first page, then a HEAD and a one-page probe per name.
    assert_eq!(count(&s.counters.lists) - lists, 1 + 30);
    assert_eq!(count(&s.counters.heads) - heads, 30);
}

mod writes {
    use super::*;
    use crate::store::Store;

    const W: OpenMode = OpenMode {
        write: true,
        truncate: false,
        pid: 0,
    };

    fn fs_with(store: Arc<MemoryStore>, staging: &std::path::Path) -> LakeFs {
        let cfg = FsConfig {
            write: WriteConfig {
                staging_dir: staging.to_path_buf(),
                block_size: 4,
            },
            ..FsConfig::default()
        };
        LakeFs::new(store.clone(), DirectReadPath::new(store), cfg)
    }

    async fn read_all(fs: &LakeFs, ino: u64) -> Vec<u8> {
        let fh = fs.open(ino, OpenMode::READ).await.unwrap().0;
        let data = fs.read(fh, 0, 1 << 20).await.unwrap().to_vec();
        fs.release(fh).await;
        data
    }

    #[tokio::test]
    async fn a_created_file_is_listed_at_once_and_in_the_lake_after_close() {
        let s = Arc::new(MemoryStore::new());
        let t = tempfile::tempdir().unwrap();
        let fs = fs_with(s.clone(), t.path());
        let d = fs.mkdir(ROOT_INO, "out").await.unwrap();
        let (a, fh) = fs.create(d.ino, "x.bin", true, 0).await.unwrap();
        assert_eq!(fs.write(fh, 0, b"hello ").await, Ok(6));
        assert_eq!(fs.write(fh, 6, b"world").await, Ok(5));
        let dh = fs.opendir(d.ino).await.unwrap();
        assert_eq!(
            names(&fs, dh, false).await,
            [".", "..", "x.bin"],
            "listed while written"
        );
        assert_eq!(fs.getattr(a.ino).await.unwrap().size, 11);
        assert!(
            s.data("out/x.bin").is_none(),
            "not in the lake before close"
        );
        fs.flush(fh).await.unwrap();
        fs.release(fh).await;
        assert_eq!(&s.data("out/x.bin").unwrap()[..], b"hello world");
        let info = s.head("out/x.bin").await.unwrap().unwrap();
        assert!(info.content_md5.is_some(), "Content-MD5 set");
        assert_eq!(read_all(&fs, a.ino).await, b"hello world");
        assert_eq!(
            fs.create(d.ino, "x.bin", true, 0).await.map(|_| ()),
            Err(FsError(libc::EEXIST))
        );
        assert_eq!(
            std::fs::read_dir(t.path()).unwrap().count(),
            0,
            "staging cleaned up"
        );
    }

    #[tokio::test]
    async fn appends_and_writes_inside_an_existing_file_rewrite_it() {
        let s = Arc::new(MemoryStore::new());
        s.put("log.txt", "line1\n");
        let t = tempfile::tempdir().unwrap();
        let fs = fs_with(s.clone(), t.path());
        let f = fs.lookup(ROOT_INO, "log.txt").await.unwrap();
        let (fh, _) = fs.open(f.ino, W).await.unwrap();
        assert_eq!(&fs.read(fh, 0, 100).await.unwrap()[..], b"line1\n");
        fs.write(fh, 6, b"line2\n").await.unwrap();
        fs.write(fh, 4, b"X").await.unwrap();
        fs.flush(fh).await.unwrap();
        fs.release(fh).await;
        assert_eq!(&s.data("log.txt").unwrap()[..], b"lineX\nline2\n");
    }

    #[tokio::test]
    async fn truncate_without_a_handle_rewrites_the_object() {
        let s = Arc::new(MemoryStore::new());
        s.put("f", "0123456789");
        let t = tempfile::tempdir().unwrap();
        let fs = fs_with(s.clone(), t.path());
        let f = fs.lookup(ROOT_INO, "f").await.unwrap();
        assert_eq!(
            fs.setattr(f.ino, Some(3), None, &Default::default())
                .await
                .unwrap()
                .size,
            3
        );
        assert_eq!(&s.data("f").unwrap()[..], b"012");
        assert_eq!(
            fs.setattr(f.ino, Some(0), None, &Default::default())
                .await
                .unwrap()
                .size,
            0
        );
        assert_eq!(s.data("f").unwrap().len(), 0);
    }

    #[tokio::test]
    async fn rmdir_refuses_a_directory_with_entries_and_unlink_keeps_the_parent() {
        let s = Arc::new(MemoryStore::new());
        s.put("d/a", "a");
        let t = tempfile::tempdir().unwrap();
        let fs = fs_with(s.clone(), t.path());
        let d = fs.lookup(ROOT_INO, "d").await.unwrap();
        assert_eq!(fs.rmdir(ROOT_INO, "d").await, Err(FsError(libc::ENOTEMPTY)));
        assert_eq!(fs.unlink(ROOT_INO, "d").await, Err(FsError(libc::EISDIR)));
        assert_eq!(fs.rmdir(d.ino, "a").await, Err(FsError(libc::ENOTDIR)));
        fs.unlink(d.ino, "a").await.unwrap();
        assert_eq!(s.keys(), ["d"], "a marker keeps the emptied directory");
        assert_eq!(fs.lookup(d.ino, "a").await, Err(FsError(libc::ENOENT)));
        assert!(fs.lookup(ROOT_INO, "d").await.unwrap().kind == Kind::Dir);
        fs.rmdir(ROOT_INO, "d").await.unwrap();
        assert!(s.keys().is_empty());
        assert_eq!(fs.lookup(ROOT_INO, "d").await, Err(FsError(libc::ENOENT)));
        assert_eq!(
            fs.unlink(ROOT_INO, "nope").await,
            Err(FsError(libc::ENOENT))
        );
    }

    #[tokio::test]
    async fn flat_rename_copies_files_and_directories() {
        let s = Arc::new(MemoryStore::new());
        s.put("a.txt", "A");
        s.put("b.txt", "B");
        s.put("dir/x", "x");
        let t = tempfile::tempdir().unwrap();
        let fs = fs_with(s.clone(), t.path());
        let a = fs.lookup(ROOT_INO, "a.txt").await.unwrap();
        let dir = fs.lookup(ROOT_INO, "dir").await.unwrap();
        assert_eq!(
            fs.rename(ROOT_INO, "a.txt", ROOT_INO, "b.txt", true).await,
            Err(FsError(libc::EEXIST))
        );
        fs.rename(ROOT_INO, "a.txt", ROOT_INO, "b.txt", false)
            .await
            .unwrap();
        assert_eq!(&s.data("b.txt").unwrap()[..], b"A", "replaced");
        assert!(s.data("a.txt").is_none());
        assert_eq!(
            read_all(&fs, a.ino).await,
            b"A",
            "the inode follows its name"
        );
        fs.rename(ROOT_INO, "b.txt", dir.ino, "b.txt", false)
            .await
            .unwrap();
        assert_eq!(&s.data("dir/b.txt").unwrap()[..], b"A");
        s.put("full/f", "f");
        assert_eq!(
            fs.rename(ROOT_INO, "dir", ROOT_INO, "full", false).await,
            Err(FsError(libc::ENOTEMPTY)),
            "onto a full directory"
        );
        fs.rename(ROOT_INO, "dir", ROOT_INO, "dir2", false)
            .await
            .unwrap();
        assert_eq!(&s.data("dir2/b.txt").unwrap()[..], b"A");
        assert_eq!(&s.data("dir2/x").unwrap()[..], b"x");
        assert!(
            s.keys().iter().all(|k| !k.starts_with("dir/")),
            "{:?}",
            s.keys()
        );
        assert_eq!(fs.lookup(ROOT_INO, "dir").await, Err(FsError(libc::ENOENT)));
        assert_eq!(
            fs.rename(ROOT_INO, "missing", ROOT_INO, "m2", false).await,
            Err(FsError(libc::ENOENT))
        );
        assert_eq!(
            fs.rename(dir.ino, "x", 9999, "x", false).await,
            Err(FsError(libc::ENOENT)),
            "into a directory that does not exist"
        );
    }

    #[tokio::test]
    async fn hierarchical_rename_moves_a_directory_and_everything_below() {
        let s = Arc::new(MemoryStore::hierarchical());
        s.put("dir/x", "x");
        s.put("dir/sub/y", "y");
        let t = tempfile::tempdir().unwrap();
        let fs = fs_with(s.clone(), t.path());
        let dir = fs.lookup(ROOT_INO, "dir").await.unwrap();
        let sub = fs.lookup(dir.ino, "sub").await.unwrap();
        let y = fs.lookup(sub.ino, "y").await.unwrap();
        fs.rename(ROOT_INO, "dir", ROOT_INO, "moved", false)
            .await
            .unwrap();
        assert_eq!(s.keys(), ["moved/sub/y", "moved/x"]);
        assert_eq!(read_all(&fs, y.ino).await, b"y", "open inodes below follow");
        let m = fs.lookup(ROOT_INO, "moved").await.unwrap();
        assert_eq!(m.ino, dir.ino);
        assert_eq!(
            fs.rename(ROOT_INO, "moved", m.ino, "inside", false).await,
            Err(FsError(libc::EINVAL))
        );
    }

    #[tokio::test]
    async fn a_failed_upload_gives_eio_keeps_the_data_and_leaves_the_lake_alone() {
        let s = Arc::new(MemoryStore::new());
        s.put("f", "old");
        let t = tempfile::tempdir().unwrap();
        let fs = fs_with(s.clone(), t.path());
        let f = fs.lookup(ROOT_INO, "f").await.unwrap();
        let (fh, _) = fs
            .open(
                f.ino,
                OpenMode {
                    write: true,
                    truncate: true,
                    pid: 0,
                },
            )
            .await
            .unwrap();
        fs.write(fh, 0, b"new data!").await.unwrap();
        s.fail_writes.store(true, Ordering::Relaxed);
        assert_eq!(fs.flush(fh).await, Err(FsError(libc::EIO)));
        fs.release(fh).await;
        assert_eq!(&s.data("f").unwrap()[..], b"old");
        let kept: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        let data = kept
            .iter()
            .find(|p| p.extension().unwrap() == "data")
            .unwrap();
        assert_eq!(std::fs::read(data).unwrap(), b"new data!");
    }

    #[tokio::test]
    async fn names_that_cannot_be_blob_names_are_einval() {
        let s = Arc::new(MemoryStore::new());
        let t = tempfile::tempdir().unwrap();
        let fs = fs_with(s.clone(), t.path());
        for bad in ["a\nb", "tab\there", "..", "."] {
            assert_eq!(
                fs.create(ROOT_INO, bad, false, 0).await.map(|_| ()),
                Err(FsError(libc::EINVAL)),
                "{bad:?}"
            );
            assert_eq!(
                fs.mkdir(ROOT_INO, bad).await.map(|_| ()),
                Err(FsError(libc::EINVAL))
            );
        }
        assert!(s.keys().is_empty());
    }

    #[tokio::test]
    async fn two_handles_writing_one_file_share_its_staged_copy() {
        let s = Arc::new(MemoryStore::new());
        let t = tempfile::tempdir().unwrap();
        let fs = fs_with(s.clone(), t.path());
        let (a, fh1) = fs.create(ROOT_INO, "shared", false, 0).await.unwrap();
        let (fh2, _) = fs.open(a.ino, W).await.unwrap();
        fs.write(fh1, 0, b"first ").await.unwrap();
        fs.write(fh2, 6, b"second").await.unwrap();
        assert_eq!(&fs.read(fh1, 0, 100).await.unwrap()[..], b"first second");
        fs.flush(fh2).await.unwrap();
        assert_eq!(&s.data("shared").unwrap()[..], b"first second");
        fs.write(fh1, 0, b"FIRST").await.unwrap();
        fs.release(fh2).await;
        fs.flush(fh1).await.unwrap();
        fs.release(fh1).await;
        assert_eq!(
            &s.data("shared").unwrap()[..],
            b"FIRST second",
            "last write wins per byte"
        );
    }

    fn my_thread() -> u32 {
        // SAFETY: gettid(2) has no preconditions.
        unsafe { libc::gettid() as u32 }
    }

    /// `close` of `fh` by another, live process: a forked child closing its copy of the
    /// descriptor (as every exec does).
    async fn close_by_a_child(fs: &LakeFs, fh: u64) -> FsResult<()> {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let r = fs.close(fh, child.id()).await;
        let _ = child.kill();
        let _ = child.wait();
        r
    }

    #[tokio::test]
    async fn a_close_by_another_process_commits_nothing_and_the_openers_close_commits() {
        let s = Arc::new(MemoryStore::new());
        let t = tempfile::tempdir().unwrap();
        let fs = fs_with(s.clone(), t.path());
        let (_, fh) = fs
            .create(ROOT_INO, "out.bin", false, my_thread())
            .await
            .unwrap();
        fs.write(fh, 0, b"first half, ").await.unwrap();
        assert_eq!(close_by_a_child(&fs, fh).await, Ok(()));
        assert!(
            s.data("out.bin").is_none(),
            "nothing committed by the child"
        );
        fs.write(fh, 12, b"second half").await.unwrap();
        fs.close(fh, my_thread()).await.unwrap();
        assert_eq!(
            &s.data("out.bin").unwrap()[..],
            b"first half, second half",
            "the opener's close commits"
        );
        fs.release(fh).await;
    }

    #[tokio::test]
    async fn a_close_by_another_thread_of_the_opener_commits() {
        let s = Arc::new(MemoryStore::new());
        let t = tempfile::tempdir().unwrap();
        let fs = fs_with(s.clone(), t.path());
        let (_, fh) = fs
            .create(ROOT_INO, "out.bin", false, my_thread())
            .await
            .unwrap();
        fs.write(fh, 0, b"from one thread").await.unwrap();
        // The other thread stays alive until its close is done, so its id can be resolved.
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let other_thread = std::thread::spawn(move || {
            tid_tx.send(my_thread()).unwrap();
            let _ = done_rx.recv();
        });
        let by_other_thread = fs.close(fh, tid_rx.recv().unwrap()).await;
        drop(done_tx);
        other_thread.join().unwrap();
        assert_eq!(by_other_thread, Ok(()));
        assert_eq!(&s.data("out.bin").unwrap()[..], b"from one thread");
        fs.release(fh).await;
    }

    #[tokio::test]
    async fn the_last_close_commits_what_only_another_process_closed() {
        let s = Arc::new(MemoryStore::new());
        let t = tempfile::tempdir().unwrap();
        let fs = fs_with(s.clone(), t.path());
        let (_, fh) = fs
            .create(ROOT_INO, "log", false, my_thread())
            .await
            .unwrap();
        fs.write(fh, 0, b"written by a child").await.unwrap();
        assert_eq!(close_by_a_child(&fs, fh).await, Ok(()));
        assert!(s.data("log").is_none());
        fs.release(fh).await;
        assert_eq!(&s.data("log").unwrap()[..], b"written by a child");
    }

    #[tokio::test]
    async fn a_file_unlinked_while_written_never_reaches_the_lake() {
        let s = Arc::new(MemoryStore::new());
        let t = tempfile::tempdir().unwrap();
        let fs = fs_with(s.clone(), t.path());
        let (_, fh) = fs.create(ROOT_INO, "tmp", false, 0).await.unwrap();
        fs.write(fh, 0, b"scratch").await.unwrap();
        fs.unlink(ROOT_INO, "tmp").await.unwrap();
        fs.flush(fh).await.unwrap();
        fs.release(fh).await;
        assert!(s.keys().is_empty());
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0);
    }
}
