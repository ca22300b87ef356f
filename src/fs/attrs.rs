//! chmod, chown and utimens: stored in the object's metadata (see `store::posix`), without
//! copying its data. A file still being written takes them along with its next commit.

use super::listing::EntryKind;
use super::{FsError, FsResult, LakeFs};
use crate::store::posix::PosixAttrs;

impl LakeFs {
    /// Stores `a` (what the call sets) for `ino`. Directories take them without storing:
    /// a directory has no object of its own on every account.
    pub(super) async fn store_attrs(&self, ino: u64, a: &PosixAttrs) -> FsResult<()> {
        self.writable()?;
        let node = self.node(ino)?;
        if node.kind.is_dir() {
            return Ok(());
        }
        if let Some(w) = self.writer(ino) {
            if w.set_posix(a) {
                // Goes up with the content at the next commit.
                return Ok(());
            }
        }
        let head = self
            .store
            .head(&node.key)
            .await?
            .ok_or(FsError(libc::ENOENT))?;
        // Other tools' metadata stays; only the names set here change.
        let mut meta = head.metadata.clone();
        let mut stored = PosixAttrs::from_metadata(&meta);
        stored.merge(a);
        stored.store_into(&mut meta);
        self.store.set_metadata(&node.key, &meta).await?;
        // What the lake keeps, which is what every later lookup shows (a local lake keeps
        // the time only).
        let kind = match self.store.head(&node.key).await? {
            Some(h) => EntryKind::file(&h),
            None => return Err(FsError(libc::ENOENT)),
        };
        if let EntryKind::File { etag, .. } = &kind {
            self.repin_readers(&node.key, &head.etag, etag);
        }
        if let Some(n) = self.inodes.lock().unwrap().get_mut(ino) {
            n.kind = kind.clone();
            n.checked = std::time::Instant::now();
        }
        self.changed(&node.key, Some(kind)).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use crate::fs::inode::ROOT_INO;
    use crate::fs::write::WriteConfig;
    use crate::fs::{FsConfig, LakeFs};
    use crate::reader::DirectReadPath;
    use crate::store::memory::MemoryStore;
    use crate::store::posix::PosixAttrs;

    fn mount(store: &Arc<MemoryStore>, staging: &std::path::Path) -> LakeFs {
        let cfg = FsConfig {
            write: WriteConfig {
                staging_dir: staging.to_path_buf(),
                block_size: 4,
            },
            ..FsConfig::default()
        };
        LakeFs::new(store.clone(), DirectReadPath::new(store.clone()), cfg)
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::new(secs, 123_456_789)
    }

    #[tokio::test]
    async fn chmod_chown_and_utimens_go_into_metadata_without_copying_data() {
        let s = Arc::new(MemoryStore::new());
        s.put("f.bin", "0123456789");
        let t = tempfile::tempdir().unwrap();
        let fs = mount(&s, t.path());
        let f = fs.lookup(ROOT_INO, "f.bin").await.unwrap();
        let reader = fs.open(f.ino, crate::fs::OpenMode::READ).await.unwrap().0;
        let puts = s.counters.puts.load(Ordering::Relaxed);
        let set = |mtime, mode, uid| PosixAttrs {
            mtime,
            mode,
            uid,
            gid: None,
        };
        let a = fs
            .setattr(f.ino, None, None, &set(Some(at(1_700_000_000)), None, None))
            .await
            .unwrap();
        assert_eq!(a.mtime, at(1_700_000_000));
        let a = fs
            .setattr(f.ino, None, None, &set(None, Some(0o600), Some(1234)))
            .await
            .unwrap();
        assert_eq!((a.mtime, a.perm, a.uid), (at(1_700_000_000), 0o600, 1234));
        assert_eq!(
            s.counters.puts.load(Ordering::Relaxed),
            puts,
            "no data sent"
        );
        assert_eq!(s.data("f.bin").as_deref(), Some(&b"0123456789"[..]));
        // A handle open meanwhile reads on: the content did not change, only the ETag.
        assert_eq!(&fs.read(reader, 0, 100).await.unwrap()[..], b"0123456789");
        fs.release(reader).await;
        let stored = PosixAttrs::from_metadata(&s.head_now("f.bin").unwrap().metadata);
        assert_eq!(
            stored,
            set(Some(at(1_700_000_000)), Some(0o600), Some(1234))
        );
        // A new mount (and another tool's listing) shows them.
        let fs2 = mount(&s, t.path());
        let a = fs2.lookup(ROOT_INO, "f.bin").await.unwrap();
        assert_eq!(
            (a.mtime, a.perm, a.uid, a.gid),
            (at(1_700_000_000), 0o600, 1234, 0)
        );
    }

    #[tokio::test]
    async fn a_file_being_written_keeps_a_time_set_until_its_content_changes_again() {
        let s = Arc::new(MemoryStore::new());
        s.put("old", "xy");
        let t = tempfile::tempdir().unwrap();
        let fs = mount(&s, t.path());
        let set = |secs| PosixAttrs {
            mtime: Some(at(secs)),
            mode: Some(0o640),
            ..Default::default()
        };
        // utimens while the content is not yet committed: it goes up with it.
        let (f, fh) = fs.create(ROOT_INO, "new", true, 0).await.unwrap();
        fs.write(fh, 0, b"abc").await.unwrap();
        fs.setattr(f.ino, None, Some(fh), &set(1_000))
            .await
            .unwrap();
        assert_eq!(fs.getattr(f.ino).await.unwrap().mtime, at(1_000));
        fs.flush(fh).await.unwrap();
        let stored = PosixAttrs::from_metadata(&s.head_now("new").unwrap().metadata);
        assert_eq!(stored, set(1_000));
        // A later write makes the time the write's again; the mode stays.
        fs.write(fh, 3, b"d").await.unwrap();
        fs.flush(fh).await.unwrap();
        fs.release(fh).await;
        let stored = PosixAttrs::from_metadata(&s.head_now("new").unwrap().metadata);
        assert_eq!((stored.mtime, stored.mode), (None, Some(0o640)));
        assert_eq!(s.data("new").as_deref(), Some(&b"abcd"[..]));
        // An append to a file with a stored mode keeps the mode.
        let o = fs.lookup(ROOT_INO, "old").await.unwrap();
        fs.setattr(o.ino, None, None, &set(5)).await.unwrap();
        let fh = fs
            .open(
                o.ino,
                crate::fs::OpenMode {
                    write: true,
                    truncate: false,
                    pid: 0,
                },
            )
            .await
            .unwrap()
            .0;
        fs.write(fh, 2, b"z").await.unwrap();
        fs.flush(fh).await.unwrap();
        fs.release(fh).await;
        let stored = PosixAttrs::from_metadata(&s.head_now("old").unwrap().metadata);
        assert_eq!((stored.mtime, stored.mode), (None, Some(0o640)));
    }
}
