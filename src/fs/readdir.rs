//! Reading directories: opendir, readdir (plain and plus) and releasedir over a
//! [`DirStream`], which lists a directory page by page as readers get to it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::dirstream::DirStream;
use super::listing::EntryKind;
use super::{join_key, DirEntry, FsError, FsResult, LakeFs};

pub(super) struct OpenDir {
    ino: u64,
    parent: u64,
    prefix: String,
    stream: Arc<DirStream>,
    /// Files being written here that were not in the lake at opendir: shown after the
    /// listing, those it does not hold.
    pending: Vec<(String, EntryKind)>,
}

impl LakeFs {
    /// Opens a directory. Nothing is listed yet: a cached listing is taken as it is, else
    /// readdir lists pages as the reader gets to them (shared with readers already listing).
    pub async fn opendir(&self, ino: u64) -> FsResult<u64> {
        let node = self.node(ino)?;
        if !node.kind.is_dir() {
            return Err(FsError(libc::ENOTDIR));
        }
        let prefix = node.dir_prefix();
        let stream = match self.meta.cached_dir(&prefix).await {
            Some(listing) => Arc::new(DirStream::complete(listing)),
            None => {
                let mut streams = self.streams.lock().unwrap();
                match streams.get(&prefix).and_then(std::sync::Weak::upgrade) {
                    Some(s) if !s.is_complete() => s,
                    _ => {
                        let s = Arc::new(DirStream::new());
                        streams.insert(prefix.clone(), Arc::downgrade(&s));
                        s
                    }
                }
            }
        };
        let writers: Vec<_> = self
            .writers
            .lock()
            .unwrap()
            .iter()
            .map(|(ino, w)| (*ino, w.w.clone()))
            .collect();
        let mut pending = Vec::new();
        for (child, w) in writers {
            let name = match self.inodes.lock().unwrap().get(child) {
                Some(n) if n.parent == ino => n.name.clone(),
                _ => continue,
            };
            let kind = EntryKind::File {
                size: w.size(),
                mtime: w.modified(),
                etag: String::new(),
                posix: w.posix().boxed(),
            };
            pending.push((name, kind));
        }
        pending.sort_by(|a, b| a.0.cmp(&b.0));
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let dir = OpenDir {
            ino,
            parent: node.parent,
            prefix,
            stream,
            pending,
        };
        self.dirs.lock().unwrap().insert(fh, Arc::new(dir));
        Ok(fh)
    }

    /// Hands entries from `offset` on to `add` until it reports the reply buffer full (`true`),
    /// listing the next page first when the reader has got past what is listed. With `plus`,
    /// every entry handed over counts as a kernel lookup (READDIRPLUS), except `.` and `..`,
    /// which the kernel does not count.
    pub async fn readdir(
        &self,
        fh: u64,
        offset: u64,
        plus: bool,
        add: &mut (dyn FnMut(DirEntry<'_>) -> bool + Send),
    ) -> FsResult<()> {
        let dir = self
            .dirs
            .lock()
            .unwrap()
            .get(&fh)
            .cloned()
            .ok_or(FsError(libc::EBADF))?;
        let first = offset.saturating_sub(2) as usize;
        let listed = dir
            .stream
            .reach(
                first,
                |marker| async { Ok(self.store.list_page(&dir.prefix, marker).await?) },
                |page| Arc::unwrap_or_clone(self.built(&dir.prefix, page)),
                || {
                    format!(
                        "the listing of {:?} on {}",
                        dir.prefix,
                        self.store.describe()
                    )
                },
            )
            .await?;
        if let Some(listing) = listed {
            self.meta.put_dir(&dir.prefix, listing).await;
            // A change between the listing's end and this put: its invalidation may have come
            // first, so take the listing back out.
            if dir.stream.is_stale() {
                self.meta.invalidate_dir(&dir.prefix).await;
            }
        }
        let dot = EntryKind::Dir { mtime: None };
        let mut i = offset;
        let mut emit = |i: u64, name: &str, kind: &EntryKind| -> bool {
            let ino = match i {
                0 => dir.ino,
                1 => dir.parent,
                _ if plus => {
                    let key = join_key(&dir.prefix, name);
                    let mut t = self.inodes.lock().unwrap();
                    t.upsert(dir.ino, name, key, kind.clone(), 0)
                }
                _ => self
                    .inodes
                    .lock()
                    .unwrap()
                    .child(dir.ino, name)
                    .unwrap_or(u64::MAX),
            };
            let entry = DirEntry {
                ino,
                next_offset: i + 1,
                name,
                attr: self.attr(ino, kind),
            };
            let full = add(entry);
            if plus && i >= 2 {
                let mut t = self.inodes.lock().unwrap();
                if full {
                    // Not sent: drop the inode again if nothing else holds it.
                    t.forget(ino, 0);
                } else {
                    t.add_lookup(ino);
                }
            }
            full
        };
        while i < 2 {
            if emit(i, if i == 0 { "." } else { ".." }, &dot) {
                return Ok(());
            }
            i += 1;
        }
        let complete = dir.stream.from((i - 2) as usize, |entries, complete| {
            for (name, kind) in entries {
                if emit(i, name, kind) {
                    return None;
                }
                i += 1;
            }
            Some(complete)
        });
        if complete != Some(true) {
            return Ok(());
        }
        // The listing is all handed out: then the files only this mount knows of yet.
        let listed = dir.stream.count_and_has(None).0 as u64;
        let unlisted = dir
            .pending
            .iter()
            .filter(|(name, _)| !dir.stream.count_and_has(Some(name)).1);
        for (j, (name, kind)) in unlisted.enumerate() {
            let at = 2 + listed + j as u64;
            if at >= i && emit(at, name, kind) {
                break;
            }
        }
        Ok(())
    }

    pub fn releasedir(&self, fh: u64) {
        let Some(dir) = self.dirs.lock().unwrap().remove(&fh) else {
            return;
        };
        let mut streams = self.streams.lock().unwrap();
        // The last reader of a listing: nobody else can join it any more.
        let ours =
            |w: &std::sync::Weak<DirStream>| std::ptr::eq(w.as_ptr(), Arc::as_ptr(&dir.stream));
        if Arc::strong_count(&dir.stream) == 1 && streams.get(&dir.prefix).is_some_and(ours) {
            streams.remove(&dir.prefix);
        }
    }

    /// This mount changed directory `prefix`: its cached listing goes, and a listing being
    /// read now neither takes new readers nor is cached.
    pub(super) async fn dir_changed(&self, prefix: &str) {
        if let Some(s) = self.streams.lock().unwrap().remove(prefix) {
            if let Some(s) = s.upgrade() {
                s.mark_stale();
            }
        }
        self.meta.invalidate_dir(prefix).await;
    }

    /// Every directory may have changed (a directory was renamed).
    pub(super) fn all_dirs_changed(&self) {
        for (_, s) in self.streams.lock().unwrap().drain() {
            if let Some(s) = s.upgrade() {
                s.mark_stale();
            }
        }
        self.meta.invalidate_all();
    }
}

/// Reads a whole directory the way the kernel does: from offset 0, one reply after another
/// (at most `room` entries each) until an empty one; entries as (name, ino, attr).
#[cfg(test)]
pub(crate) async fn read_all(
    fs: &LakeFs,
    fh: u64,
    plus: bool,
    room: usize,
) -> Vec<(String, u64, super::Attr)> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let before = out.len();
        let mut left = room;
        fs.readdir(fh, offset, plus, &mut |e| {
            if left == 0 {
                return true;
            }
            left -= 1;
            out.push((e.name.to_string(), e.ino, e.attr));
            offset = e.next_offset;
            false
        })
        .await
        .unwrap();
        if out.len() == before {
            return out;
        }
    }
}
