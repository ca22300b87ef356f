//! The block layer under open files: fixed-size blocks of an object version, held in a memory
//! tier (LRU, bounded by the budget its blocks hold), backed by the disk tier and fetched from the store with one
//! ranged GET per block. Concurrent requests for a block share one fetch. Every block's bytes
//! hold a share of one memory budget (`budget.rs`) from before they are fetched until the last
//! user lets go, so block memory never exceeds `--max-memory` at any number of open handles.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::budget::{Budget, Permit};
use super::disk::{Complete, DiskCache};
use super::objfile::ObjectKey;
use crate::metrics::Metrics;
use crate::reader::ObjectVersion;
use crate::store::{retry, DynStore, Store, StoreError, StoreResult};
use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use lru::LruCache;

#[derive(Clone, Copy, Debug)]
pub struct BlockConfig {
    pub block_size: u64,
    /// Block bytes fetched, held and in use, all together.
    pub max_memory: u64,
    pub retry: ReadRetry,
}

/// How a block fetch survives a flaky lake: each attempt is bounded in time (a stalled body
/// must not hang a reader), and transient failures, short bodies (a connection reset
/// mid-body) and timeouts are retried with backoff. After the last attempt the read fails
/// with EIO; it never returns short or wrong data.
#[derive(Clone, Copy, Debug)]
pub struct ReadRetry {
    pub attempts: u32,
    /// First delay between attempts; it doubles (with jitter).
    pub base_delay: Duration,
    pub attempt_timeout: Duration,
    /// The most one block may take, all attempts together: the data deadline, so a reader
    /// on a hung lake gets ETIMEDOUT instead of waiting `attempts` times `attempt_timeout`.
    pub total: Duration,
}

impl ReadRetry {
    /// Attempts that fit in the data deadline of `deadlines`.
    pub fn within(deadlines: &crate::store::deadline::Deadlines) -> Self {
        ReadRetry {
            attempts: 5,
            base_delay: Duration::from_millis(200),
            attempt_timeout: crate::store::deadline::Deadlines::attempt(deadlines.data),
            total: deadlines.data,
        }
    }
}

impl Default for ReadRetry {
    fn default() -> Self {
        ReadRetry::within(&Default::default())
    }
}

/// Everything that makes a block's bytes what they are: object, ETag, block size, index.
pub fn block_identity(
    store: &dyn Store,
    obj: &ObjectVersion,
    block_size: u64,
    index: u64,
) -> String {
    format!(
        "{}\n{}\n{block_size}\n{index}",
        store.object_id(&obj.key),
        obj.etag
    )
}

/// An object version as the disk cache files it: its bytes and how they are cut into blocks.
pub fn object_key(store: &dyn Store, obj: &ObjectVersion, block_size: u64) -> ObjectKey {
    ObjectKey {
        id: format!("{}\n{}", store.object_id(&obj.key), obj.etag),
        size: obj.size,
        block_size,
    }
}

/// The byte range of block `index` in an object of `size` bytes.
pub fn block_range(block_size: u64, size: u64, index: u64) -> Range<u64> {
    let start = index * block_size;
    start.min(size)..(start + block_size).min(size)
}

pub struct Block {
    pub data: Bytes,
    prefetched: bool,
    /// Read by someone. Changed only under the memory lock.
    used: AtomicBool,
    /// The budget these bytes take, given back when the block is dropped.
    _permit: Permit,
}

/// A block in use: a reply being sent, a block being written to the disk cache. While one
/// exists the block cannot be evicted; letting go wakes readers waiting for memory.
pub struct Lease {
    block: Arc<Block>,
    budget: Arc<Budget>,
}

impl Lease {
    pub fn data(&self) -> &Bytes {
        &self.block.data
    }

    /// Who reads the block next can find it again cheaply, without keeping it in memory.
    pub fn downgrade(&self) -> std::sync::Weak<Block> {
        Arc::downgrade(&self.block)
    }

    /// The bytes `range` of the block, keeping the lease until they are dropped.
    pub fn slice(self, range: Range<usize>) -> Bytes {
        Bytes::from_owner(self).slice(range)
    }
}

impl AsRef<[u8]> for Lease {
    fn as_ref(&self) -> &[u8] {
        &self.block.data
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.budget.let_go();
    }
}

type Fetch = Shared<BoxFuture<'static, Result<Arc<Block>, Arc<StoreError>>>>;

/// The memory tier. Its blocks are bounded by the budget they hold, not by a size of its own.
struct Memory {
    lru: LruCache<String, Arc<Block>>,
    bytes: u64,
    /// Bytes of held blocks that were read ahead and not read yet.
    unread_prefetched: u64,
}

pub struct BlockCache {
    store: DynStore,
    disk: Option<Arc<DiskCache>>,
    cfg: BlockConfig,
    memory: Mutex<Memory>,
    inflight: Mutex<HashMap<String, Fetch>>,
    budget: Arc<Budget>,
    metrics: Arc<Metrics>,
}

impl BlockCache {
    pub fn new(
        store: DynStore,
        disk: Option<Arc<DiskCache>>,
        cfg: BlockConfig,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(BlockCache {
            store,
            disk,
            cfg,
            memory: Mutex::new(Memory {
                lru: LruCache::unbounded(),
                bytes: 0,
                unread_prefetched: 0,
            }),
            inflight: Mutex::new(HashMap::new()),
            budget: Budget::new(cfg.max_memory),
            metrics,
        })
    }

    pub fn config(&self) -> BlockConfig {
        self.cfg
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Everything that makes a block's bytes what they are. A different ETag or block size is
    /// a different block.
    pub fn identity(&self, obj: &ObjectVersion, index: u64) -> String {
        block_identity(self.store.as_ref(), obj, self.cfg.block_size, index)
    }

    /// The object as the disk cache files it.
    pub fn object_key(&self, obj: &ObjectVersion) -> ObjectKey {
        object_key(self.store.as_ref(), obj, self.cfg.block_size)
    }

    /// The data file of `obj` in the disk cache if all of it is there and checks out, for a
    /// passthrough open (see `DiskCache::open_complete`).
    pub fn complete_on_disk(&self, obj: &ObjectVersion, may_verify: bool) -> Complete {
        match &self.disk {
            Some(disk) if obj.size > 0 => disk.open_complete(&self.object_key(obj), may_verify),
            _ => Complete::No,
        }
    }

    /// Whether `file`, given by `complete_on_disk` for `obj` and open since, is unchanged
    /// (see `DiskCache::still_complete`).
    pub fn still_complete_on_disk(&self, obj: &ObjectVersion, file: &std::fs::File) -> bool {
        match &self.disk {
            Some(disk) => disk.still_complete(&self.object_key(obj), file),
            None => false,
        }
    }

    pub fn block_range(&self, size: u64, index: u64) -> Range<u64> {
        block_range(self.cfg.block_size, size, index)
    }

    /// Block fetches started and not yet finished.
    pub fn fetches_in_flight(&self) -> usize {
        self.inflight.lock().unwrap().len()
    }

    /// Bytes currently held by the memory tier.
    pub fn memory_bytes(&self) -> u64 {
        self.memory.lock().unwrap().bytes
    }

    /// Block bytes in memory, all together: held, being fetched or in use.
    pub fn budget_in_use(&self) -> u64 {
        self.budget.in_use()
    }

    /// `block` in use by a reader.
    pub fn lease(&self, block: Arc<Block>) -> Lease {
        Lease {
            block,
            budget: self.budget.clone(),
        }
    }

    /// A held block, marked as read.
    fn held(&self, id: &str) -> Option<Arc<Block>> {
        let mut m = self.memory.lock().unwrap();
        let b = m.lru.get(id).cloned()?;
        if !b.used.swap(true, Ordering::Relaxed) && b.prefetched {
            m.unread_prefetched -= b.data.len() as u64;
        }
        Some(b)
    }

    /// Marks a block read that came from a shared fetch.
    fn mark_used(&self, b: &Block) {
        let mut m = self.memory.lock().unwrap();
        // A block is in the tier from its fetch's end until evicted, and eviction marks it
        // used: one not yet used is counted in `unread_prefetched`.
        if !b.used.swap(true, Ordering::Relaxed) && b.prefetched {
            m.unread_prefetched -= b.data.len() as u64;
        }
    }

    fn remember(&self, id: String, block: Arc<Block>) {
        let mut m = self.memory.lock().unwrap();
        let len = block.data.len() as u64;
        m.bytes += len;
        if block.prefetched && !block.used.load(Ordering::Relaxed) {
            m.unread_prefetched += len;
        }
        if let Some(old) = m.lru.put(id, block) {
            Self::forget(&mut m, &old, &self.metrics);
        }
    }

    /// Bookkeeping for a block leaving the tier.
    fn forget(m: &mut Memory, b: &Block, metrics: &Metrics) {
        m.bytes -= b.data.len() as u64;
        if b.prefetched && !b.used.swap(true, Ordering::Relaxed) {
            m.unread_prefetched -= b.data.len() as u64;
            Metrics::add(&metrics.prefetched_unused_bytes_total, b.data.len() as u64);
        }
    }

    /// Drops one block nobody uses, to give its budget to a new one: blocks already read go
    /// first, oldest first; read-ahead nobody has reached yet only when `unread` allows it.
    /// False when there is no such block.
    fn evict_one(&self, unread: bool) -> bool {
        let mut m = self.memory.lock().unwrap();
        let pick = |m: &Memory, want_used: bool| {
            m.lru
                .iter()
                .rev()
                .find(|(_, b)| {
                    Arc::strong_count(b) == 1 && b.used.load(Ordering::Relaxed) == want_used
                })
                .map(|(k, _)| k.clone())
        };
        let Some(key) = pick(&m, true).or_else(|| unread.then(|| pick(&m, false)).flatten()) else {
            return false;
        };
        let victim = m.lru.pop(&key).expect("picked from the tier");
        Self::forget(&mut m, &victim, &self.metrics);
        Metrics::add(&self.metrics.memory_evictions_total, 1);
        true
    }

    /// Block `index` of `obj` for a reader that wants `want` bytes of it; waits for memory
    /// when the budget is in use by other readers.
    pub async fn get(
        self: &Arc<Self>,
        obj: &ObjectVersion,
        index: u64,
        want: u64,
    ) -> StoreResult<Lease> {
        let id = self.identity(obj, index);
        if let Some(b) = self.held(&id) {
            Metrics::add(&self.metrics.memory_hit_bytes_total, want);
            return Ok(self.lease(b));
        }
        let fetch = self.fetch(obj, index, id, None);
        let block = fetch.await.map_err(|e| (*e).clone())?;
        self.mark_used(&block);
        Ok(self.lease(block))
    }

    /// Bytes `range` of `obj` (within one block) for a reader that reads at random: from the
    /// block when it is held or coming, else only these bytes (widened to whole 4 KiB pages)
    /// from the disk cache (the 64 KiB chunks or the kept pages they fall in) or straight
    /// from the store. A random reader would use little of a whole block, so fetching one per
    /// read multiplies the bytes sent by up to block size / read size. Pages fetched are kept
    /// in the disk cache for the next random reader (the kernel keeps them in its page cache
    /// meanwhile). The bytes count against the memory budget until they are written there.
    pub async fn get_range(
        self: &Arc<Self>,
        obj: &ObjectVersion,
        range: Range<u64>,
    ) -> StoreResult<Bytes> {
        let index = range.start / self.cfg.block_size;
        let block = self.block_range(obj.size, index);
        debug_assert!(range.end <= block.end, "one block at a time");
        let id = self.identity(obj, index);
        let known = self.held(&id).is_some() || self.inflight.lock().unwrap().contains_key(&id);
        if known {
            let lease = self.get(obj, index, range.end - range.start).await?;
            let from = (range.start - block.start) as usize;
            return Ok(lease.slice(from..from + (range.end - range.start) as usize));
        }
        use super::pages::PAGE;
        // Whole pages of the block (counted from its start, as the disk cache keeps them).
        let (from, to) = (range.start - block.start, range.end - block.start);
        let wide = block.start + from / PAGE * PAGE
            ..(block.start + to.div_ceil(PAGE).saturating_mul(PAGE)).min(block.end);
        let len = wide.end - wide.start;
        let total = self.cfg.retry.total;
        let fetched = tokio::time::timeout(total, async {
            let permit = self.budget.clone().take(len, || self.evict_one(true)).await;
            // On disk: only the chunks these bytes fall in are read and checked.
            let key = self.object_key(obj);
            if let Some(disk) = self.disk.as_ref().filter(|d| d.may_hold(&key, index)) {
                let r = wide.start - block.start..wide.end - block.start;
                if let Some(bytes) = disk.get_range_cached(&key, index, r.clone()) {
                    return Ok(bytes);
                }
                let (disk, key) = (disk.clone(), key.clone());
                let hit = tokio::task::spawn_blocking(move || disk.get_range(&key, index, r))
                    .await
                    .map_err(|e| StoreError::Other(format!("disk cache task failed: {e}")))?;
                if let Some(bytes) = hit {
                    return Ok(bytes);
                }
            }
            let data = self.get_with_retry(obj, index, wide.clone()).await?;
            if let Some(disk) = &self.disk {
                let kept = self.lease(Arc::new(Block {
                    data: data.clone(),
                    prefetched: false,
                    used: AtomicBool::new(true),
                    _permit: permit,
                }));
                disk.pages_behind(key, index, wide.start - block.start, kept);
            }
            Ok(data)
        })
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::TimedOut(format!(
                "{}: bytes {}..{}: no answer within {}",
                obj.key,
                wide.start,
                wide.end,
                crate::store::deadline::shown(total)
            )))
        })?;
        let from = (range.start - wide.start) as usize;
        Ok(fetched.slice(from..from + (range.end - range.start) as usize))
    }

    /// Starts fetching block `index` in the background unless it is held, already coming, or
    /// the memory budget is used up. Returns false only in the last case, so read-ahead
    /// windows shrink under memory pressure.
    pub fn prefetch(self: &Arc<Self>, obj: &ObjectVersion, index: u64) -> bool {
        let id = self.identity(obj, index);
        let len = {
            let m = self.memory.lock().unwrap();
            if m.lru.contains(&id) {
                return true;
            }
            let inflight = self.inflight.lock().unwrap();
            if inflight.contains_key(&id) {
                return true;
            }
            // Read-ahead must not push out what it fetched before and nobody has read yet:
            // unread blocks plus blocks coming stay within half the budget.
            let coming = inflight.len() as u64 * self.cfg.block_size;
            let len = self.block_range(obj.size, index);
            let len = len.end - len.start;
            if m.unread_prefetched + coming + len > self.cfg.max_memory / 2 {
                return false;
            }
            len
        };
        // Never waits, and never evicts read-ahead of others nobody has read yet.
        let Some(permit) = self.budget.try_take(len, || self.evict_one(false)) else {
            return false;
        };
        let fetch = self.fetch(obj, index, id, Some(permit));
        tokio::spawn(fetch);
        true
    }

    /// One block from the store, retried per [`ReadRetry`]; exactly the bytes of `range`.
    async fn get_with_retry(
        &self,
        obj: &ObjectVersion,
        index: u64,
        range: Range<u64>,
    ) -> StoreResult<Bytes> {
        let policy = self.cfg.retry;
        let len = range.end - range.start;
        let mut attempt = 0;
        loop {
            let got = tokio::time::timeout(
                policy.attempt_timeout,
                self.store.get_range(&obj.key, range.clone(), &obj.etag),
            )
            .await;
            Metrics::add(&self.metrics.store_get_requests_total, 1);
            let err = match got {
                Ok(Ok(data)) if data.len() as u64 == len => {
                    Metrics::add(&self.metrics.store_get_bytes_total, len);
                    return Ok(data);
                }
                Ok(Ok(data)) => StoreError::Unreachable(format!(
                    "{}: block {index} came back with {} of {len} bytes",
                    obj.key,
                    data.len()
                )),
                Ok(Err(e)) if e.is_transient() => e,
                Ok(Err(e)) => return Err(e),
                Err(_) => StoreError::Unreachable(format!(
                    "{}: block {index}: no answer within {}",
                    obj.key,
                    crate::store::deadline::shown(policy.attempt_timeout)
                )),
            };
            attempt += 1;
            if attempt >= policy.attempts {
                return Err(err);
            }
            let after = match &err {
                StoreError::Busy(_, after) => *after,
                _ => None,
            };
            Metrics::add(&self.metrics.store_get_retries_total, 1);
            tracing::debug!("retrying block {index} of {}: {err}", obj.key);
            let wait = retry::delay_from(policy.base_delay, attempt - 1, after, retry::jitter());
            tokio::time::sleep(wait).await;
        }
    }

    /// The shared fetch of one block, created on first request.
    fn fetch(
        self: &Arc<Self>,
        obj: &ObjectVersion,
        index: u64,
        id: String,
        permit: Option<Permit>,
    ) -> Fetch {
        let mut inflight = self.inflight.lock().unwrap();
        if let Some(f) = inflight.get(&id) {
            return f.clone();
        }
        let prefetched = permit.is_some();
        let me = self.clone();
        let obj = obj.clone();
        let key = id.clone();
        let fut = async move {
            // The wait for memory counts against the block's deadline too: behind fetches
            // stuck on a hung lake, a reader fails at the deadline, not at twice it.
            let total = me.cfg.retry.total;
            let waited_for_memory = AtomicBool::new(permit.is_none());
            let fetched = tokio::time::timeout(total, async {
                let permit = match permit {
                    Some(p) => p,
                    None => {
                        let range = me.block_range(obj.size, index);
                        let budget = me.budget.clone();
                        let p = budget
                            .take(range.end - range.start, || me.evict_one(true))
                            .await;
                        waited_for_memory.store(false, Ordering::Relaxed);
                        p
                    }
                };
                let result = me.load(&obj, index, prefetched, permit).await;
                if let Ok(block) = &result {
                    me.remember(key.clone(), block.clone());
                }
                result
            })
            .await;
            let result = fetched.unwrap_or_else(|_| {
                // Out of time before the GET even started: say so, it is not the lake's fault.
                let why = if waited_for_memory.load(Ordering::Relaxed) {
                    "no memory free (--max-memory is all in use by other reads)"
                } else {
                    "no answer"
                };
                Err(StoreError::TimedOut(format!(
                    "{}: block {index}: {why} within {}",
                    obj.key,
                    crate::store::deadline::shown(total)
                )))
            });
            me.inflight.lock().unwrap().remove(&key);
            result.map_err(Arc::new)
        }
        .boxed()
        .shared();
        inflight.insert(id, fut.clone());
        fut
    }

    async fn load(
        &self,
        obj: &ObjectVersion,
        index: u64,
        prefetched: bool,
        permit: Permit,
    ) -> StoreResult<Arc<Block>> {
        let range = self.block_range(obj.size, index);
        let block = |data: Bytes| {
            Arc::new(Block {
                data,
                prefetched,
                used: AtomicBool::new(false),
                _permit: permit,
            })
        };
        let key = self.object_key(obj);
        // Asked only when the block may be on disk (indexed, or its object has a table): a
        // new object's miss then costs no trip to a blocking thread, which on a busy node
        // delays the fetch it precedes.
        if let Some(disk) = self.disk.as_ref().filter(|d| d.may_hold(&key, index)) {
            if let Some(data) = disk.get_range_cached(&key, index, 0..key.block_len(index)) {
                return Ok(block(data));
            }
            let (disk, key) = (disk.clone(), key.clone());
            let hit = tokio::task::spawn_blocking(move || disk.get(&key, index))
                .await
                .map_err(|e| StoreError::Other(format!("disk cache task failed: {e}")))?;
            if let Some(data) = hit {
                return Ok(block(data));
            }
        }
        let data = self.get_with_retry(obj, index, range).await?;
        let block = block(data);
        if let Some(disk) = &self.disk {
            // The pending write keeps the block (and its budget) until it lands.
            disk.write_behind(key, index, self.lease(block.clone()));
        }
        Ok(block)
    }
}

#[cfg(test)]
#[path = "blocks_tests.rs"]
mod tests;
