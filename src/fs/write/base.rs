//! The original object under a writer, block by block. An existing block blob whose
//! committed blocks line up with this mount's blocks (same size, ids of the same length: what
//! this mount and `lakemount upload` write) is not copied in at the first change: its blocks
//! stay in the lake, named again by every commit, and only the blocks a change touches are
//! read in (once) and sent. An append to a 1 GiB object sends the appended bytes and the
//! block list; a page rewritten in place sends its block.
//!
//! The invariant: a block in `absent` is unchanged since the writer started (its version is
//! the one its id in the lake has), so the lake object at `lake_etag` holds its bytes at its
//! offset. Before anything changes such a block it is read into the staging file; reads of
//! it go to the lake.

use std::os::unix::fs::FileExt;

use bytes::{Bytes, BytesMut};

use super::{io, WriteHandle};
use crate::store::{StoreError, StoreResult};

impl WriteHandle {
    /// At the first change of an existing object: leaves its blocks in the lake when they
    /// line up with ours. Returns false when they do not (the caller copies it all in).
    pub(super) async fn adopt_base(&self) -> StoreResult<bool> {
        let Some(base) = &self.base else {
            return Ok(false);
        };
        if !self.store.keeps_committed_blocks() {
            return Ok(false);
        }
        let list = match self.store.committed_blocks(&base.key).await {
            Ok(Some(list)) if list.etag == base.etag => list,
            Ok(_) => return Ok(false),
            Err(StoreError::TimedOut(e)) => return Err(StoreError::TimedOut(e)),
            Err(e) => {
                tracing::debug!("{}: no block list ({e}); copying it in", base.key);
                return Ok(false);
            }
        };
        let bs = self.block_size;
        let id_len = self.block_id(0, 0).len();
        let n = list.blocks.len() as u64;
        let lines_up = n == base.size.div_ceil(bs)
            && list.blocks.iter().enumerate().all(|(i, (id, size))| {
                let want = if i as u64 + 1 < n {
                    bs
                } else {
                    base.size - (n - 1) * bs
                };
                *size == want && id.len() == id_len
            });
        if !lines_up {
            return Ok(false);
        }
        // The sidecar says the file has holes before it has any: a daemon killed from here
        // on leaves a file nobody mistakes for a whole one.
        self.staged
            .set_partial(Some(&base.etag), false)
            .map_err(|e| io(&self.staged.sidecar(), e))?;
        // The staging file gets the object's size; its blocks stay holes until read in.
        self.staged
            .file()
            .set_len(base.size)
            .map_err(|e| io(&self.staging_path(), e))?;
        let mut st = self.st.lock().unwrap();
        st.now_loaded(base.size);
        st.lake_etag = base.etag.clone();
        for (b, (id, _)) in list.blocks.into_iter().enumerate() {
            let b = b as u64;
            st.absent.insert(b);
            let version = st.version.get(&b).copied().unwrap_or(0);
            st.uploaded.insert(b, (version, id));
        }
        Ok(true)
    }

    /// Reads the blocks of `blocks` that are still only in the lake into the staging file,
    /// before a change to them. Called with the turn held.
    pub(super) async fn read_in(&self, blocks: impl IntoIterator<Item = u64>) -> StoreResult<()> {
        for b in blocks {
            let (range, etag) = {
                let st = self.st.lock().unwrap();
                if !st.absent.contains(&b) {
                    continue;
                }
                let start = b * self.block_size;
                (
                    start..(start + self.block_size).min(st.size),
                    st.lake_etag.clone(),
                )
            };
            let data = self
                .store
                .get_range(&self.key(), range.clone(), &etag)
                .await?;
            if data.len() as u64 != range.end - range.start {
                return Err(StoreError::Other(format!("{}: short read", self.key())));
            }
            self.staged
                .file()
                .write_all_at(&data, range.start)
                .map_err(|e| io(&self.staging_path(), e))?;
            self.st.lock().unwrap().absent.remove(&b);
            self.whole_again()?;
        }
        Ok(())
    }

    /// Once no block is only in the lake any more (read in, overwritten or cut off), the
    /// sidecar stops saying the file has holes: a kept copy is a whole file.
    pub(super) fn whole_again(&self) -> StoreResult<()> {
        let (whole, dirty) = {
            let st = self.st.lock().unwrap();
            (st.absent.is_empty(), st.dirty)
        };
        if whole && self.staged.is_partial() {
            self.staged
                .set_partial(None, !dirty)
                .map_err(|e| io(&self.staged.sidecar(), e))?;
        }
        Ok(())
    }

    /// Reads every block still only in the lake into the staging file (before a rename,
    /// after which the lake object may not be the one those blocks are in).
    pub async fn read_in_all(&self) -> StoreResult<()> {
        let _turn = self.turn.lock().await;
        let all: Vec<u64> = self.st.lock().unwrap().absent.iter().copied().collect();
        self.read_in(all).await
    }

    /// Whether the staging file holds every byte (false while blocks are only in the lake).
    pub(super) fn staged_whole(&self) -> bool {
        self.st.lock().unwrap().absent.is_empty()
    }

    /// `[offset, end)` of the file: from the staging file, and from the lake for blocks
    /// still only there. A commit may replace the lake object meanwhile (same bytes, new
    /// ETag): such a read is tried again with the new one.
    pub(super) async fn read_mixed(&self, offset: u64, end: u64) -> StoreResult<Bytes> {
        let bs = self.block_size;
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        let mut pos = offset;
        while pos < end {
            let b = pos / bs;
            let stop = ((b + 1) * bs).min(end);
            let lake = {
                let st = self.st.lock().unwrap();
                st.absent.contains(&b).then(|| st.lake_etag.clone())
            };
            match lake {
                Some(etag) => {
                    let data = match self.store.get_range(&self.key(), pos..stop, &etag).await {
                        Err(StoreError::Changed(_)) if self.lake_moved_from(b, &etag) => continue,
                        r => r?,
                    };
                    out.extend_from_slice(&data);
                    if (data.len() as u64) < stop - pos {
                        break;
                    }
                }
                None => {
                    let mut buf = vec![0u8; (stop - pos) as usize];
                    let n = self.read_staged_at(&mut buf, pos)?;
                    out.extend_from_slice(&buf[..n]);
                    if n < buf.len() {
                        break;
                    }
                }
            }
            pos = stop;
        }
        Ok(out.freeze())
    }

    /// Whether block `b` was read in, or a commit moved the lake object on from `etag`.
    fn lake_moved_from(&self, b: u64, etag: &str) -> bool {
        let st = self.st.lock().unwrap();
        !st.absent.contains(&b) || st.lake_etag != etag
    }
}
