//! Directory rename on a flat (Blob) account, which has no rename: every object below the
//! source is copied server-side to its new name, and only once all copies exist are the
//! sources deleted.
//!
//! The invariant a crash cannot break: **a source object is deleted only after the whole
//! target exists.** Before the first copy, the target's directory marker is written with
//! metadata naming the source (`lakemount_renaming_from`); it is cleared after the last
//! delete. A crash while copying leaves the source whole and part of the target; a crash
//! while deleting leaves the target whole and part of the source. Either way the same
//! rename run again (`os.replace`, `mv -T`) sees the note and finishes it, instead of
//! refusing the target that is not empty with `ENOTEMPTY`.

use std::collections::HashMap;

use futures::{StreamExt, TryStreamExt};

use super::{FsError, FsResult, LakeFs};
use crate::store::{list_all, ObjectInfo, StoreError, StoreResult};

/// Copies or deletes in flight at once: Copy Blob of a small blob takes one round trip, so
/// a 10,000-file tree moves in seconds, not minutes.
const PARALLEL: usize = 32;

/// Metadata of a target's marker while a rename into it is under way: the source's key,
/// percent-encoded (metadata values are HTTP header values).
pub const RENAMING_FROM: &str = "lakemount_renaming_from";

fn note(from: &str) -> String {
    url::form_urlencoded::byte_serialize(from.as_bytes()).collect()
}
/// Every object below directory `key`, by its name relative to the directory (`""` is the
/// directory's own marker).
type Tree = HashMap<String, ObjectInfo>;

impl LakeFs {
    /// Every object below `key` (its own marker included); `None` past `limit` objects.
    async fn tree_below(&self, key: &str, limit: u64) -> FsResult<Option<Tree>> {
        let mut tree = Tree::new();
        if let Some(marker) = self.store.head(key).await? {
            if marker.is_dir_marker {
                tree.insert(String::new(), marker);
            }
        }
        let root = format!("{key}/");
        let mut todo = vec![root.clone()];
        while let Some(prefix) = todo.pop() {
            let page = list_all(self.store.as_ref(), &prefix).await?;
            for o in page.objects {
                tree.insert(o.key[root.len()..].to_string(), o);
                if tree.len() as u64 > limit {
                    return Ok(None);
                }
            }
            todo.extend(page.prefixes);
        }
        Ok(Some(tree))
    }

    /// rename(2) of directory `from` onto `to` (absent, or a directory) on a flat account.
    /// `to` not empty is `ENOTEMPTY`, unless it is what an interrupted rename of `from` left;
    /// a source past `--rename-dir-limit` objects is `EXDEV` (`mv` then copies it itself).
    pub(super) async fn rename_dir_flat(&self, from: &str, to: &str) -> FsResult<()> {
        let limit = self.cfg.rename_dir_limit;
        // ENOTEMPTY comes before EXDEV: `mv` answers EXDEV by copying, which would merge.
        let (Some(dst), Some(src)) = (
            self.tree_below(to, limit).await?,
            self.tree_below(from, limit).await?,
        ) else {
            let empty = self
                .tree_below(to, 1)
                .await?
                .is_some_and(|t| t.keys().all(String::is_empty));
            if !empty {
                return Err(FsError(libc::ENOTEMPTY));
            }
            tracing::info!(
                "rename of directory {from}: more than --rename-dir-limit={limit} objects, EXDEV"
            );
            return Err(FsError(libc::EXDEV));
        };
        let resuming = dst
            .get("")
            .and_then(|m| m.metadata.get(RENAMING_FROM))
            .is_some_and(|n| *n == note(from));
        if dst.keys().any(|rel| !rel.is_empty()) && !resuming {
            return Err(FsError(libc::ENOTEMPTY));
        }
        let src_meta = src.get("").map(|m| m.metadata.clone()).unwrap_or_default();
        if !resuming {
            let mut noted = src_meta.clone();
            noted.insert(RENAMING_FROM.into(), note(from));
            self.store.make_dir(to, &noted).await?;
        }
        // Copy what the target lacks; on a resumed rename, a copy already made is kept.
        let same =
            |a: &ObjectInfo, b: &ObjectInfo| a.size == b.size && a.content_md5 == b.content_md5;
        let copies: Vec<(String, String)> = src
            .iter()
            .filter(|(rel, o)| !rel.is_empty() && !dst.get(*rel).is_some_and(|d| same(o, d)))
            .map(|(rel, o)| (o.key.clone(), format!("{to}/{rel}")))
            .collect();
        let store = self.store.clone();
        futures::stream::iter(copies)
            .map(|(a, b)| {
                let store = store.clone();
                async move { store.copy(&a, &b).await }
            })
            .buffer_unordered(PARALLEL)
            .try_collect::<Vec<()>>()
            .await?;
        // Deepest names first and the directory's own marker last, so a source cut short
        // still shows as a directory until its last object goes.
        let mut gone: Vec<String> = src
            .iter()
            .filter(|(rel, _)| !rel.is_empty())
            .map(|(_, o)| o.key.clone())
            .collect();
        gone.sort_by_key(|k| std::cmp::Reverse(k.matches('/').count()));
        self.delete_all(gone).await?;
        if let Some(marker) = src.get("") {
            self.delete_all(vec![marker.key.clone()]).await?;
        }
        // Done: the note goes (a crash before this leaves a note that nothing reads again).
        self.store.make_dir(to, &src_meta).await?;
        Ok(())
    }

    async fn delete_all(&self, keys: Vec<String>) -> StoreResult<()> {
        let store = self.store.clone();
        futures::stream::iter(keys)
            .map(|key| {
                let store = store.clone();
                async move {
                    match store.delete(&key).await {
                        Err(StoreError::NotFound(_)) => Ok(()),
                        r => r,
                    }
                }
            })
            .buffer_unordered(PARALLEL)
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use super::RENAMING_FROM;
    use crate::fs::inode::ROOT_INO;
    use crate::fs::write::WriteConfig;
    use crate::fs::{FsConfig, FsError, LakeFs, OpenMode};
    use crate::reader::DirectReadPath;
    use crate::store::memory::MemoryStore;
    use crate::store::Store;

    fn mount(store: &Arc<MemoryStore>, staging: &std::path::Path, limit: u64) -> LakeFs {
        let cfg = FsConfig {
            write: WriteConfig {
                staging_dir: staging.to_path_buf(),
                block_size: 4,
            },
            rename_dir_limit: limit,
            ..FsConfig::default()
        };
        LakeFs::new(store.clone(), DirectReadPath::new(store.clone()), cfg)
    }

    /// A checkpoint directory: its marker, files, a subdirectory and an empty one.
    const TREE: &[(&str, &str)] = &[("a", "A"), ("sub/c", "C"), ("sub/d", "DD")];

    fn checkpoint(store: &MemoryStore) {
        store.put_dir_marker("ckpt-tmp");
        store.put_dir_marker("ckpt-tmp/empty");
        for (k, v) in TREE {
            store.put(&format!("ckpt-tmp/{k}"), *v);
        }
    }

    fn under(store: &MemoryStore, dir: &str) -> Vec<String> {
        let sub = format!("{dir}/");
        let mut keys: Vec<String> = store
            .keys()
            .into_iter()
            .filter_map(|k| k.strip_prefix(&sub).map(str::to_string))
            .collect();
        keys.sort();
        keys
    }

    async fn rename(fs: &LakeFs) -> Result<(), FsError> {
        fs.lookup(ROOT_INO, "ckpt-tmp").await?;
        fs.rename(ROOT_INO, "ckpt-tmp", ROOT_INO, "ckpt-500", false)
            .await
    }

    fn moved_whole(store: &MemoryStore) {
        for (k, v) in TREE {
            let data = store.data(&format!("ckpt-500/{k}"));
            assert_eq!(data.as_deref(), Some(v.as_bytes()), "ckpt-500/{k}");
        }
        assert!(store
            .head_now("ckpt-500/empty")
            .is_some_and(|o| o.is_dir_marker));
    }

    #[tokio::test]
    async fn a_directory_moves_whole_with_its_markers_and_leaves_no_note() {
        let s = Arc::new(MemoryStore::with_page_size(2));
        checkpoint(&s);
        let t = tempfile::tempdir().unwrap();
        let fs = mount(&s, t.path(), 100);
        rename(&fs).await.unwrap();
        moved_whole(&s);
        assert!(under(&s, "ckpt-tmp").is_empty() && s.data("ckpt-tmp").is_none());
        let marker = s.head("ckpt-500").await.unwrap().unwrap();
        assert!(marker.is_dir_marker && !marker.metadata.contains_key(RENAMING_FROM));
        let moved = fs.lookup(ROOT_INO, "ckpt-500").await.unwrap();
        let sub = fs.lookup(moved.ino, "sub").await.unwrap();
        assert!(fs.lookup(sub.ino, "d").await.is_ok());
        assert_eq!(
            fs.lookup(ROOT_INO, "ckpt-tmp").await,
            Err(FsError(libc::ENOENT))
        );
    }

    /// Every point a crash can come at (after 0, 1, ... writes reached the lake): a source
    /// object is never gone unless the whole target is there, and the same rename run again
    /// by a new mount finishes it.
    #[tokio::test]
    async fn a_rename_cut_short_anywhere_loses_nothing_and_a_rerun_finishes_it() {
        let mut cut_at = 0;
        loop {
            let s = Arc::new(MemoryStore::new());
            checkpoint(&s);
            let t = tempfile::tempdir().unwrap();
            s.writes_left.store(cut_at, Ordering::Relaxed);
            let first = rename(&mount(&s, t.path(), 100)).await;
            s.writes_left.store(-1, Ordering::Relaxed);
            if first.is_ok() {
                assert!(cut_at > 5, "a rename needs more than {cut_at} writes");
                break;
            }
            let src = under(&s, "ckpt-tmp");
            if src.len() < TREE.len() + 1 || s.data("ckpt-tmp").is_none() {
                moved_whole(&s);
            }
            match rename(&mount(&s, t.path(), 100)).await {
                Ok(()) => {}
                // Cut after the last delete: only the note was left to clear.
                Err(FsError(libc::ENOENT)) => assert!(src.is_empty(), "cut at {cut_at}"),
                Err(e) => panic!("rerun after a cut at {cut_at}: {e:?}"),
            }
            moved_whole(&s);
            assert_eq!(
                under(&s, "ckpt-tmp"),
                Vec::<String>::new(),
                "cut at {cut_at}"
            );
            assert_eq!(
                under(&s, "ckpt-500").len(),
                TREE.len() + 1,
                "cut at {cut_at}"
            );
            cut_at += 1;
        }
    }

    #[tokio::test]
    async fn past_the_limit_is_exdev_and_a_full_target_is_enotempty_first() {
        let s = Arc::new(MemoryStore::new());
        checkpoint(&s);
        let t = tempfile::tempdir().unwrap();
        for limit in [0, 3] {
            let fs = mount(&s, t.path(), limit);
            assert_eq!(
                rename(&fs).await,
                Err(FsError(libc::EXDEV)),
                "limit {limit}"
            );
        }
        s.put("ckpt-500/other", "o");
        for limit in [0, 3, 100] {
            let fs = mount(&s, t.path(), limit);
            assert_eq!(
                rename(&fs).await,
                Err(FsError(libc::ENOTEMPTY)),
                "limit {limit}"
            );
        }
        assert_eq!(under(&s, "ckpt-tmp").len(), TREE.len() + 1, "nothing moved");
        // An empty target directory is replaced, as rename(2) does.
        s.remove("ckpt-500/other");
        s.put_dir_marker("ckpt-500");
        rename(&mount(&s, t.path(), 100)).await.unwrap();
        moved_whole(&s);
    }

    #[tokio::test]
    async fn a_file_being_written_below_moves_along_and_writes_on_under_its_new_name() {
        let s = Arc::new(MemoryStore::new());
        checkpoint(&s);
        let t = tempfile::tempdir().unwrap();
        let fs = mount(&s, t.path(), 100);
        let dir = fs.lookup(ROOT_INO, "ckpt-tmp").await.unwrap();
        let (_, fh) = fs.create(dir.ino, "log", true, 0).await.unwrap();
        fs.write(fh, 0, b"hello ").await.unwrap();
        rename(&fs).await.unwrap();
        fs.write(fh, 6, b"world").await.unwrap();
        fs.flush(fh).await.unwrap();
        fs.release(fh).await;
        assert_eq!(s.data("ckpt-500/log").as_deref(), Some(&b"hello world"[..]));
        assert!(s.data("ckpt-tmp/log").is_none());
        let moved = fs.lookup(ROOT_INO, "ckpt-500").await.unwrap();
        let log = fs.lookup(moved.ino, "log").await.unwrap();
        let rh = fs.open(log.ino, OpenMode::READ).await.unwrap().0;
        assert_eq!(&fs.read(rh, 0, 100).await.unwrap()[..], b"hello world");
        fs.release(rh).await;
    }
}
