//! Open readers survive this mount's own replace and delete, as on a local disk: an
//! evaluator streaming `ckpt.pt` finishes the version it opened while the trainer
//! `os.replace`s a new one onto the name, or while checkpoint rotation deletes it.
//!
//! Before this mount replaces or deletes an object that open read handles still read, the
//! version they read is copied server-side (Copy Blob, only if the object is still that
//! version) to a name below [`RETAINED`], and the handles read on from the copy. The copy is
//! deleted when the last of them closes. Another client's replace cannot be seen coming:
//! there the handle's next read from the lake still fails with `ESTALE`, never mixing two
//! versions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::files::OpenFile;
use super::LakeFs;
use crate::reader::{FileReader, ObjectVersion};

/// Where kept versions live, at the lake's root; hidden from this mount's listings.
pub const RETAINED: &str = ".lakemount-retained";

fn retained_key() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{RETAINED}/{}-{nanos:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl LakeFs {
    /// Records a read handle of `version`, so a replace of its object keeps it readable.
    pub(super) fn reading(&self, fh: u64, version: ObjectVersion) {
        self.readers.lock().unwrap().insert(fh, version);
    }

    /// The read handle `fh` closed: a kept copy nobody reads any more is deleted.
    pub(super) fn done_reading(&self, fh: u64) {
        let mut readers = self.readers.lock().unwrap();
        let Some(v) = readers.remove(&fh) else {
            return;
        };
        if v.key.starts_with(RETAINED) && !readers.values().any(|o| o.key == v.key) {
            let store = self.store.clone();
            tokio::spawn(async move {
                if let Err(e) = store.delete(&v.key).await {
                    tracing::warn!("could not delete the kept copy {}: {e}", v.key);
                }
            });
        }
    }

    /// After this mount changed only the metadata of `key` (its content is the same, its
    /// ETag is new): handles reading the old ETag read on under the new one.
    pub(super) fn repin_readers(&self, key: &str, old_etag: &str, new_etag: &str) {
        let mut files = self.files.lock().unwrap();
        let mut readers = self.readers.lock().unwrap();
        for (fh, v) in readers.iter_mut() {
            if v.key == key && v.etag == old_etag {
                v.etag = new_etag.to_string();
                if let Some(OpenFile::Read(r)) = files.get_mut(fh) {
                    *r = Arc::from(self.read_path.open(v.clone()));
                }
            }
        }
    }

    /// Before this mount replaces or deletes `key`: every version of it that handles still
    /// read is copied aside and those handles read the copy. A copy that fails is logged and
    /// the change goes ahead (those handles then get `ESTALE` where they read from the lake).
    pub(super) async fn retain_readers(&self, key: &str) {
        let mut by_version: HashMap<ObjectVersion, Vec<u64>> = HashMap::new();
        for (fh, v) in self.readers.lock().unwrap().iter() {
            if v.key == key {
                by_version.entry(v.clone()).or_default().push(*fh);
            }
        }
        for (v, fhs) in by_version {
            let to = retained_key();
            let kept = match self.store.copy_version(key, &v.etag, &to).await {
                Ok(info) => ObjectVersion {
                    key: to,
                    etag: info.etag,
                    size: v.size,
                },
                Err(e) => {
                    tracing::warn!(
                        "{key} is replaced while {} handle(s) read it, and it could not be \
                         kept for them ({e}): their next reads from the lake fail with ESTALE",
                        fhs.len()
                    );
                    continue;
                }
            };
            let mut files = self.files.lock().unwrap();
            let mut readers = self.readers.lock().unwrap();
            for fh in fhs {
                if let Some(OpenFile::Read(r)) = files.get_mut(&fh) {
                    let reader: Arc<dyn FileReader> = Arc::from(self.read_path.open(kept.clone()));
                    *r = reader;
                    readers.insert(fh, kept.clone());
                }
            }
            if !readers.values().any(|o| o.key == kept.key) {
                // Every handle closed while the copy was made.
                let store = self.store.clone();
                tokio::spawn(async move { store.delete(&kept.key).await });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::RETAINED;
    use crate::fs::inode::ROOT_INO;
    use crate::fs::write::WriteConfig;
    use crate::fs::{FsConfig, FsError, LakeFs, OpenMode};
    use crate::reader::DirectReadPath;
    use crate::store::memory::MemoryStore;

    fn mount(store: &Arc<MemoryStore>, staging: &std::path::Path) -> LakeFs {
        let cfg = FsConfig {
            write: WriteConfig {
                staging_dir: staging.to_path_buf(),
                block_size: 16,
            },
            ..FsConfig::default()
        };
        LakeFs::new(store.clone(), DirectReadPath::new(store.clone()), cfg)
    }

    fn kept(store: &MemoryStore) -> Vec<String> {
        store
            .keys()
            .into_iter()
            .filter(|k| k.starts_with(RETAINED))
            .collect()
    }

    #[derive(Clone, Copy, Debug)]
    enum Change {
        RenameOnto,
        Unlink,
        Rewrite,
    }

    async fn change(fs: &LakeFs, how: Change) {
        match how {
            Change::RenameOnto => {
                let (_, fh) = fs.create(ROOT_INO, "ckpt.tmp", true, 0).await.unwrap();
                fs.write(fh, 0, b"the new checkpoint").await.unwrap();
                fs.flush(fh).await.unwrap();
                fs.release(fh).await;
                fs.rename(ROOT_INO, "ckpt.tmp", ROOT_INO, "ckpt", false)
                    .await
                    .unwrap();
            }
            Change::Unlink => fs.unlink(ROOT_INO, "ckpt").await.unwrap(),
            Change::Rewrite => {
                let f = fs.lookup(ROOT_INO, "ckpt").await.unwrap();
                let mode = OpenMode {
                    write: true,
                    truncate: true,
                    pid: 0,
                };
                let fh = fs.open(f.ino, mode).await.unwrap().0;
                fs.write(fh, 0, b"the new checkpoint").await.unwrap();
                fs.flush(fh).await.unwrap();
                fs.release(fh).await;
            }
        }
    }

    /// Whatever replaces or deletes the name, on either kind of account, and however far
    /// the reader got: it reads the version it opened to the end, and the kept copy goes
    /// with its last close.
    #[tokio::test]
    async fn a_reader_finishes_the_version_it_opened_whatever_replaces_it() {
        let old: Vec<u8> = (0..200u8).collect();
        for hierarchical in [false, true] {
            for how in [Change::RenameOnto, Change::Unlink, Change::Rewrite] {
                for read_first in [0usize, 1, 100, 199] {
                    let s = Arc::new(if hierarchical {
                        MemoryStore::hierarchical()
                    } else {
                        MemoryStore::new()
                    });
                    s.put("ckpt", old.clone());
                    let t = tempfile::tempdir().unwrap();
                    let fs = mount(&s, t.path());
                    let case = format!("{how:?}, hierarchical {hierarchical}, after {read_first}");
                    let f = fs.lookup(ROOT_INO, "ckpt").await.unwrap();
                    let r1 = fs.open(f.ino, OpenMode::READ).await.unwrap().0;
                    let r2 = fs.open(f.ino, OpenMode::READ).await.unwrap().0;
                    let head = fs.read(r1, 0, read_first as u32).await.unwrap();
                    change(&fs, how).await;
                    assert_eq!(kept(&s).len(), 1, "{case}: one copy for both handles");
                    let names: Vec<String> = {
                        let dh = fs.opendir(ROOT_INO).await.unwrap();
                        let names: Vec<String> = crate::fs::readdir::read_all(&fs, dh, false, 64)
                            .await
                            .into_iter()
                            .map(|(name, _, _)| name)
                            .collect();
                        fs.releasedir(dh);
                        names
                    };
                    assert!(
                        !names.iter().any(|n| n.starts_with(".lakemount")),
                        "{case}: {names:?}"
                    );
                    let rest = fs.read(r1, read_first as u64, 1000).await.unwrap();
                    assert_eq!([&head[..], &rest[..]].concat(), old, "{case}");
                    fs.release(r1).await;
                    assert_eq!(&fs.read(r2, 0, 1000).await.unwrap()[..], &old[..], "{case}");
                    fs.release(r2).await;
                    for _ in 0..1000 {
                        if kept(&s).is_empty() {
                            break;
                        }
                        tokio::task::yield_now().await;
                    }
                    assert_eq!(kept(&s), Vec::<String>::new(), "{case}: the copy goes");
                    match how {
                        Change::Unlink => assert_eq!(
                            fs.lookup(ROOT_INO, "ckpt").await,
                            Err(FsError(libc::ENOENT))
                        ),
                        _ => {
                            assert_eq!(s.data("ckpt").as_deref(), Some(&b"the new checkpoint"[..]))
                        }
                    }
                }
            }
        }
    }
}
