//! The disk cache's index, rebuilt at open from the tables on disk: which blocks are held,
//! whole or in part, in the order of their last use before the restart.

use std::fs;
use std::io;
use std::sync::Arc;
use std::time::SystemTime;

use super::{DiskCache, Held, Slot, STALE_TMP};
use crate::cache::objfile::{self, ObjectFiles, ObjectKey};
use crate::cache::pages;

impl DiskCache {
    /// Reads every table (no data) and orders the blocks held, whole or in part, oldest first.
    pub(super) fn rebuild(&self) -> io::Result<()> {
        let mut found: Vec<(SystemTime, ObjectKey, Vec<Slot>)> = Vec::new();
        for sub in fs::read_dir(&self.root)? {
            let sub = sub?;
            if !sub.file_type()?.is_dir() {
                continue;
            }
            for f in fs::read_dir(sub.path())? {
                let f = f?;
                let name = f.file_name().to_string_lossy().into_owned();
                let Ok(meta) = f.metadata() else { continue };
                let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                if name.contains(".tmp") {
                    if mtime.elapsed().unwrap_or_default() > STALE_TMP {
                        let _ = fs::remove_file(f.path());
                    }
                    continue;
                }
                let Some(hash) = name.strip_suffix(".sums") else {
                    // A data file without a table holds nothing anyone can trust, unless it
                    // is young: a writer (another mount, `warm`) writes a new object's first
                    // block before linking its table.
                    let orphan = !sub.path().join(format!("{name}.sums")).exists();
                    if orphan && mtime.elapsed().unwrap_or_default() > STALE_TMP {
                        let _ = fs::remove_file(f.path());
                    }
                    continue;
                };
                let files = ObjectFiles::new(&self.root, hash);
                let held = |k: ObjectKey| {
                    let whole = objfile::held_blocks(&files, &k)?;
                    let parts = pages::held(&files, &k)?;
                    let slots =
                        parts
                            .into_iter()
                            .enumerate()
                            .map(|(i, bytes)| match whole.get(i) {
                                Some(&len) if len > 0 => Slot {
                                    bytes: len,
                                    whole: true,
                                },
                                _ => Slot {
                                    bytes,
                                    whole: false,
                                },
                            });
                    Ok::<_, io::Error>((k, slots.collect::<Vec<_>>()))
                };
                match objfile::read_key(&files.sums).and_then(held) {
                    Ok((key, held)) if key.hash() == hash => found.push((mtime, key, held)),
                    _ => objfile::remove(&files),
                }
            }
        }
        found.sort_by_key(|(t, ..)| *t);
        let mut idx = self.index.lock().unwrap();
        for (mtime, key, held) in found {
            let hash: Arc<str> = key.hash().into();
            let n = held.iter().filter(|s| s.bytes > 0).count() as u64;
            if n == 0 {
                continue;
            }
            for (i, slot) in held.into_iter().enumerate() {
                if slot.bytes > 0 {
                    idx.bytes += slot.bytes;
                    idx.lru.put((hash.clone(), i as u64), slot);
                }
            }
            let held = Held {
                key,
                blocks: n,
                touched: mtime,
            };
            idx.objects.insert(hash, held);
        }
        drop(idx);
        self.evict_to(self.capacity());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{key, open, pattern};
    use super::super::OLD_SUBDIR;
    use super::*;
    use std::fs::File;

    #[test]
    fn the_old_layout_is_removed_at_open() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join(OLD_SUBDIR).join("ab")).unwrap();
        fs::write(d.path().join(OLD_SUBDIR).join("ab").join("abcd"), b"old").unwrap();
        let _c = open(d.path(), 1 << 20);
        assert!(!d.path().join(OLD_SUBDIR).exists());
    }

    #[test]
    fn a_data_file_without_a_table_is_removed_at_open_only_once_it_is_old() {
        let d = tempfile::tempdir().unwrap();
        let k = key("orphan", 4096, 4096);
        let c = open(d.path(), 1 << 20);
        c.put(&k, 0, &pattern(4096, 2));
        let files = c.files(&k.hash());
        drop(c);
        // As a writer leaves it between its first block's bytes and its table.
        fs::remove_file(&files.sums).unwrap();
        drop(open(d.path(), 1 << 20));
        assert!(files.data.exists(), "a writer's new object was removed");
        // As a writer that died there leaves it.
        let old = SystemTime::now() - 2 * STALE_TMP;
        File::options()
            .write(true)
            .open(&files.data)
            .unwrap()
            .set_modified(old)
            .unwrap();
        drop(open(d.path(), 1 << 20));
        assert!(!files.data.exists(), "an orphan data file was kept");
    }
}
