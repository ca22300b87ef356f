//! Getting a staged file into the lake: blocks uploaded early while the writer writes, the
//! rest at commit, then one Put Block List (or one Put Blob for a small file).

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use md5::{Digest, Md5};

use super::{io, State, WriteHandle};
use crate::store::{Committed, PutOptions, StoreError, StoreResult};

/// How often a commit uploads its blocks again when another writer's commit of the same
/// name discarded them (two mounts writing one file): the last commit wins, whole.
const COMMIT_TRIES: usize = 4;

impl WriteHandle {
    pub(super) fn block_id(&self, generation: u64, index: u64) -> String {
        use base64::Engine;
        use sha2::Digest;
        // Every id of one object must have the same length: "16 hex digits-8 digits", as
        // `lakemount upload` names blocks too, so a writer can keep either's blocks (`base`).
        // The 16 digits are this writer's and this generation's.
        let h = sha2::Sha256::digest(format!("{}-{generation}", self.upload_id));
        let tag: String = h[..8].iter().map(|b| format!("{b:02x}")).collect();
        base64::engine::general_purpose::STANDARD.encode(format!("{tag}-{index:08}"))
    }

    /// Uploads the full blocks below `filled` that are not uploaded yet.
    pub(super) fn start_early_uploads(self: &Arc<Self>, st: &mut State) {
        let bs = self.block_size;
        while (st.next_early + 1) * bs <= st.filled {
            let b = st.next_early;
            st.next_early += 1;
            if !st.in_flight.contains(&b) && needs_upload(st, b) {
                self.spawn_upload(st, b);
            }
        }
    }

    fn spawn_upload(self: &Arc<Self>, st: &mut State, b: u64) {
        st.in_flight.insert(b);
        let version = st.version.get(&b).copied().unwrap_or(0);
        let generation = st.generation;
        let end = ((b + 1) * self.block_size).min(st.size);
        let range = b * self.block_size..end;
        let me = self.clone();
        tokio::spawn(async move {
            let result = me.upload_block(generation, b, range).await;
            let mut st = me.st.lock().unwrap();
            st.in_flight.remove(&b);
            match result {
                Ok(()) if st.generation == generation => {
                    st.uploaded.insert(b, (version, me.block_id(generation, b)));
                }
                Ok(()) => {}
                Err(e) => {
                    tracing::debug!("block {b} of {}: {e}", me.key());
                    st.last_error = Some(e);
                }
            }
            drop(st);
            me.idle.notify_waiters();
        });
    }

    async fn upload_block(
        &self,
        generation: u64,
        b: u64,
        range: std::ops::Range<u64>,
    ) -> StoreResult<()> {
        let _slot = self.slots.acquire().await.expect("never closed");
        let mut buf = vec![0u8; (range.end - range.start) as usize];
        self.staged
            .file()
            .read_exact_at(&mut buf, range.start)
            .map_err(|e| io(&self.staging_path(), e))?;
        let id = self.block_id(generation, b);
        self.store
            .put_block(&self.key(), &id, Bytes::from(buf))
            .await
    }

    pub(super) async fn wait_uploads(&self) {
        loop {
            let idle = self.idle.notified();
            if self.st.lock().unwrap().in_flight.is_empty() {
                return;
            }
            idle.await;
        }
    }

    /// The MD5 of the whole content: kept while writes came in order, else read back.
    fn content_md5(&self, st: &State) -> StoreResult<[u8; 16]> {
        if st.hashed == Some(st.size) {
            if let Some(m) = &st.md5 {
                return Ok(m.clone().finalize().into());
            }
        }
        let mut m = Md5::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0;
        while off < st.size {
            let n = ((st.size - off) as usize).min(buf.len());
            self.staged
                .file()
                .read_exact_at(&mut buf[..n], off)
                .map_err(|e| io(&self.staging_path(), e))?;
            m.update(&buf[..n]);
            off += n as u64;
        }
        Ok(m.finalize().into())
    }

    /// Makes the lake object what this handle holds. `Ok(None)`: nothing to commit. No
    /// change lands while it runs (they wait their turn), so clean means uploaded.
    pub async fn commit(self: &Arc<Self>) -> StoreResult<Option<(Committed, u64)>> {
        self.commit_as(false).await
    }

    /// A commit of a file still open for writing, every `--commit-interval`: like
    /// [`WriteHandle::commit`], but a failure is not the writer's (nobody is told EIO): the
    /// next live commit or the last close tries again.
    pub async fn commit_live(self: &Arc<Self>) -> StoreResult<Option<(Committed, u64)>> {
        self.commit_as(true).await
    }

    async fn commit_as(self: &Arc<Self>, live: bool) -> StoreResult<Option<(Committed, u64)>> {
        let _turn = self.turn.lock().await;
        {
            let mut st = self.st.lock().unwrap();
            if st.unlinked {
                return Ok(None);
            }
            // Before the dirty check: a change that failed before it dirtied anything (a
            // full disk while copying in the original) must still fail the close.
            if let Some(why) = &st.broken {
                let e = StoreError::Other(format!(
                    "{}: not uploaded, an earlier write to it failed ({why})",
                    self.key()
                ));
                st.failed = true;
                return Err(e);
            }
            if !st.dirty {
                return Ok(None);
            }
        }
        let mut result = self.commit_now().await;
        for _ in 1..COMMIT_TRIES {
            let Err(StoreError::BlocksMissing(why)) = &result else {
                break;
            };
            if !self.staged_whole() {
                // Blocks of the object this writer started from are gone with it: another
                // writer replaced it. They cannot be sent again (see `base`).
                result = Err(StoreError::Changed(format!(
                    "{}: replaced in the lake by another writer while being changed here ({why})",
                    self.key()
                )));
                break;
            }
            tracing::info!("{}: {why}; uploading its blocks again", self.key());
            self.forget_staged_blocks();
            result = self.commit_now().await;
        }
        let mut st = self.st.lock().unwrap();
        match &result {
            Ok(_) => {
                st.failed = false;
                st.dirty = false;
                st.dirty_since = None;
                drop(st);
                if let Err(e) = self.staged.mark(true) {
                    tracing::debug!("{}: {e}", self.staged.sidecar().display());
                }
            }
            Err(_) if live => {}
            Err(_) => st.failed = true,
        }
        result.map(Some)
    }

    /// Blocks staged in the lake are not there (any more): a new generation uploads afresh.
    pub(super) fn forget_staged_blocks(&self) {
        let mut st = self.st.lock().unwrap();
        st.generation += 1;
        // Blocks only in the lake keep their ids: nothing else holds their bytes.
        let State {
            uploaded, absent, ..
        } = &mut *st;
        uploaded.retain(|b, _| absent.contains(b));
        st.next_early = 0;
    }

    async fn commit_now(self: &Arc<Self>) -> StoreResult<(Committed, u64)> {
        self.wait_uploads().await;
        let key = self.key();
        let (size, md5, metadata) = {
            let mut st = self.st.lock().unwrap();
            // An early upload that failed is uploaded again below, unless it ran out of
            // time: the lake did not answer for a whole deadline, and trying again would
            // make this close wait a second one.
            if let Some(e @ StoreError::TimedOut(_)) = st.last_error.take() {
                return Err(e);
            }
            // Not while blocks are only in the lake: the staging file does not hold them.
            let md5 = if st.absent.is_empty() {
                Some(self.content_md5(&st)?)
            } else {
                None
            };
            let mut metadata = crate::store::Metadata::new();
            st.posix.store_into(&mut metadata);
            (st.size, md5, metadata)
        };
        let opts = PutOptions {
            content_md5: md5,
            metadata,
        };
        let bs = self.block_size;
        let blocks = size.div_ceil(bs);
        let nothing_staged = self.st.lock().unwrap().uploaded.is_empty();
        let done = if blocks <= 1 && nothing_staged {
            // Small files: one request instead of two. Its buffer is an upload's: it takes
            // a slot, which is what bounds the memory of writes.
            let _slot = self.slots.acquire().await.expect("never closed");
            let data = self.read(0, size as u32).await?;
            self.store.put(&key, data, &opts).await?
        } else {
            {
                let mut st = self.st.lock().unwrap();
                for b in 0..blocks {
                    if !st.in_flight.contains(&b) && needs_upload(&st, b) {
                        self.spawn_upload(&mut st, b);
                    }
                }
            }
            self.wait_uploads().await;
            let ids: Vec<String> = {
                let st = self.st.lock().unwrap();
                if let Some(e) = &st.last_error {
                    return Err(e.clone());
                }
                if (0..blocks).any(|b| needs_upload(&st, b)) {
                    return Err(StoreError::Other(format!(
                        "{key}: changed while being committed"
                    )));
                }
                // Each block under the id its copy in the lake has: staged now, or committed
                // by an earlier commit of this handle.
                (0..blocks).map(|b| st.uploaded[&b].1.clone()).collect()
            };
            self.store.commit_blocks(&key, &ids, &opts).await?
        };
        if self.store.keeps_committed_blocks() {
            // The committed blocks stay the object's: the next commit names those it keeps
            // and sends the rest under a new generation's ids.
            let mut st = self.st.lock().unwrap();
            st.generation += 1;
            st.lake_etag = done.etag.clone();
        } else {
            // Committed blocks are gone from the staging area: a later commit uploads afresh.
            self.forget_staged_blocks();
        }
        Ok((done, size))
    }
}

/// Whether the lake's staged copy of block `b` is missing or older than the staging file's.
fn needs_upload(st: &State, b: u64) -> bool {
    st.uploaded.get(&b).map(|u| u.0) != Some(st.version.get(&b).copied().unwrap_or(0))
}
