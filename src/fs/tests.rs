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

/// All entry names of directory `ino`, read through opendir/readdir like `ls -a` would.
fn names(fs: &LakeFs, fh: u64, plus: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let before = out.len();
        // A small reply buffer: at most 7 entries per call, so offsets are exercised.
        let mut room = 7;
        fs.readdir(fh, offset, plus, &mut |e| {
            if room == 0 {
                return true;
            }
            room -= 1;
            out.push(e.name.to_string());
            offset = e.next_offset;
            false
        })
        .unwrap();
        if out.len() == before {
            return out;
        }
    }
}

async fn ls(fs: &LakeFs, ino: u64) -> Vec<String> {
    let fh = fs.opendir(ino).await.unwrap();
    let n = names(fs, fh, false);
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
async fn reads_return_exact_bytes_and_writes_are_refused() {
    let s = Arc::new(MemoryStore::new());
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    s.put("f.bin", data.clone());
    let fs = fs_over(s, Duration::from_secs(60));
    let f = fs.lookup(ROOT_INO, "f.bin").await.unwrap();
    assert_eq!(fs.open(f.ino, true).await, Err(FsError(libc::EROFS)));
    assert!(
        !fs.open(f.ino, false).await.unwrap().1,
        "first open: nothing cached to keep"
    );
    let fh = fs.open(f.ino, false).await.unwrap().0;
    assert_eq!(&fs.read(fh, 0, 10).await.unwrap()[..], &data[..10]);
    assert_eq!(
        &fs.read(fh, 99_990, 4096).await.unwrap()[..],
        &data[99_990..]
    );
    assert!(fs.read(fh, 200_000, 10).await.unwrap().is_empty());
    fs.release(fh);
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
    let fh = fs.open(f.ino, false).await.unwrap().0;
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
    let mut inos = Vec::new();
    let mut offset = 0;
    loop {
        let before = inos.len();
        fs.readdir(fh, offset, true, &mut |e| {
            if e.name != "." && e.name != ".." {
                inos.push(e.ino);
            }
            offset = e.next_offset;
            false
        })
        .unwrap();
        if inos.len() == before {
            break;
        }
    }
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
    assert!(!fs.open(f.ino, false).await.unwrap().1);
    assert!(fs.open(f.ino, false).await.unwrap().1, "same version: keep");
    s.put("f", "two");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (fh, keep) = fs.open(f.ino, false).await.unwrap();
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
