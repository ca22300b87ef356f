//! The block layer under open files: fixed-size blocks of an object version, held in a memory
//! tier (LRU, bounded in bytes), backed by the disk tier and fetched from the store with one
//! ranged GET per block. Concurrent requests for a block share one fetch, and the bytes being
//! fetched plus the bytes held never exceed `--max-memory`.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use lru::LruCache;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::disk::DiskCache;
use crate::metrics::Metrics;
use crate::reader::ObjectVersion;
use crate::store::{retry, DynStore, Store, StoreError, StoreResult};

#[derive(Clone, Copy, Debug)]
pub struct BlockConfig {
    pub block_size: u64,
    /// In-flight plus cached block bytes.
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

impl BlockConfig {
    /// Blocks that may be in flight at once: half the budget (at least one block).
    fn fetch_slots(&self) -> u64 {
        (self.max_memory / 2 / self.block_size).max(1)
    }

    fn memory_capacity(&self) -> u64 {
        self.max_memory
            .saturating_sub(self.fetch_slots() * self.block_size)
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

/// The byte range of block `index` in an object of `size` bytes.
pub fn block_range(block_size: u64, size: u64, index: u64) -> Range<u64> {
    let start = index * block_size;
    start.min(size)..(start + block_size).min(size)
}

pub struct Block {
    pub data: Bytes,
    prefetched: bool,
    /// Read by someone. Changed only under the memory lock, like `held`.
    used: AtomicBool,
    /// Counted in the memory tier.
    held: AtomicBool,
    /// Evicted while a reader still held it: counted in `orphans` until dropped.
    orphaned: AtomicBool,
    orphans: Arc<AtomicU64>,
}

impl Drop for Block {
    fn drop(&mut self) {
        if self.orphaned.load(Ordering::SeqCst) {
            self.orphans
                .fetch_sub(self.data.len() as u64, Ordering::SeqCst);
        }
    }
}

type Fetch = Shared<BoxFuture<'static, Result<Arc<Block>, Arc<StoreError>>>>;

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
    slots: Arc<Semaphore>,
    /// Bytes of blocks evicted from the memory tier that readers still hold (an open
    /// handle keeps the block it reads): memory in use, so the tier holds that much less.
    orphans: Arc<AtomicU64>,
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
            slots: Arc::new(Semaphore::new(cfg.fetch_slots() as usize)),
            orphans: Arc::new(AtomicU64::new(0)),
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

    /// Bytes of evicted blocks that readers still hold.
    pub fn orphaned_bytes(&self) -> u64 {
        self.orphans.load(Ordering::SeqCst)
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
        if !b.used.swap(true, Ordering::Relaxed) && b.prefetched && b.held.load(Ordering::Relaxed) {
            m.unread_prefetched -= b.data.len() as u64;
        }
    }

    fn remember(&self, id: String, block: Arc<Block>) {
        let cap = self.cfg.memory_capacity();
        let mut m = self.memory.lock().unwrap();
        let len = block.data.len() as u64;
        m.bytes += len;
        block.held.store(true, Ordering::Relaxed);
        if block.prefetched && !block.used.load(Ordering::Relaxed) {
            m.unread_prefetched += len;
        }
        if let Some(old) = m.lru.put(id, block) {
            m.bytes -= old.data.len() as u64;
            if old.prefetched && !old.used.swap(true, Ordering::Relaxed) {
                m.unread_prefetched -= old.data.len() as u64;
            }
        }
        while m.bytes + self.orphans.load(Ordering::SeqCst) > cap {
            // Blocks already read and held by nobody else go first, oldest first; then
            // read-ahead nobody has reached yet; a block a handle is reading (its current
            // block) only when nothing else is left and the tier alone is over.
            let pick = |want_used: bool| {
                m.lru
                    .iter()
                    .rev()
                    .find(|(_, b)| {
                        Arc::strong_count(b) == 1 && b.used.load(Ordering::Relaxed) == want_used
                    })
                    .map(|(k, _)| k.clone())
            };
            let victim = match pick(true).or_else(|| pick(false)) {
                Some(k) => m.lru.pop(&k),
                None if m.bytes > cap => m.lru.pop_lru().map(|(_, b)| b),
                None => None,
            };
            let Some(victim) = victim else {
                break;
            };
            m.bytes -= victim.data.len() as u64;
            if Arc::strong_count(&victim) > 1 {
                // Our reference keeps it alive until this is counted: its Drop subtracts.
                victim.orphaned.store(true, Ordering::SeqCst);
                self.orphans
                    .fetch_add(victim.data.len() as u64, Ordering::SeqCst);
            }
            Metrics::add(&self.metrics.memory_evictions_total, 1);
            if victim.prefetched && !victim.used.swap(true, Ordering::Relaxed) {
                m.unread_prefetched -= victim.data.len() as u64;
                Metrics::add(
                    &self.metrics.prefetched_unused_bytes_total,
                    victim.data.len() as u64,
                );
            }
        }
    }

    /// Block `index` of `obj` for a reader that wants `want` bytes of it; waits for memory
    /// budget if all fetch slots are busy.
    pub async fn get(
        self: &Arc<Self>,
        obj: &ObjectVersion,
        index: u64,
        want: u64,
    ) -> StoreResult<Arc<Block>> {
        let id = self.identity(obj, index);
        if let Some(b) = self.held(&id) {
            Metrics::add(&self.metrics.memory_hit_bytes_total, want);
            return Ok(b);
        }
        let fetch = self.fetch(obj, index, id, None);
        let block = fetch.await.map_err(|e| (*e).clone())?;
        self.mark_used(&block);
        Ok(block)
    }

    /// Starts fetching block `index` in the background unless it is held, already coming, or
    /// the memory budget is used up. Returns false only in the last case, so read-ahead
    /// windows shrink under memory pressure.
    pub fn prefetch(self: &Arc<Self>, obj: &ObjectVersion, index: u64) -> bool {
        let id = self.identity(obj, index);
        {
            let m = self.memory.lock().unwrap();
            if m.lru.contains(&id) {
                return true;
            }
            let inflight = self.inflight.lock().unwrap();
            if inflight.contains_key(&id) {
                return true;
            }
            // Read-ahead must not push out what it fetched before and nobody has read yet:
            // unread blocks plus blocks coming stay within half the memory tier (what is
            // left of it next to evicted blocks readers still hold).
            let coming = inflight.len() as u64 * self.cfg.block_size;
            let room = self
                .cfg
                .memory_capacity()
                .saturating_sub(self.orphans.load(Ordering::SeqCst))
                / 2;
            if m.unread_prefetched + coming + self.cfg.block_size > room {
                return false;
            }
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            return false;
        };
        let fetch = self.fetch(obj, index, id, Some(slot));
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
        slot: Option<OwnedSemaphorePermit>,
    ) -> Fetch {
        let mut inflight = self.inflight.lock().unwrap();
        if let Some(f) = inflight.get(&id) {
            return f.clone();
        }
        let prefetched = slot.is_some();
        let me = self.clone();
        let obj = obj.clone();
        let key = id.clone();
        let fut = async move {
            // The wait for a fetch slot counts against the block's deadline too: behind
            // fetches stuck on a hung lake, a reader fails at the deadline, not at twice it.
            let total = me.cfg.retry.total;
            let fetched = tokio::time::timeout(total, async {
                let slot = match slot {
                    Some(s) => s,
                    None => me
                        .slots
                        .clone()
                        .acquire_owned()
                        .await
                        .expect("semaphore is never closed"),
                };
                let result = me.load(&obj, index, &key, prefetched).await;
                if let Ok(block) = &result {
                    // Count the block in memory before its fetch slot is released.
                    me.remember(key.clone(), block.clone());
                }
                drop(slot);
                result
            })
            .await;
            let result = fetched.unwrap_or_else(|_| {
                Err(StoreError::TimedOut(format!(
                    "{}: block {index}: no answer within {}",
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
        id: &str,
        prefetched: bool,
    ) -> StoreResult<Arc<Block>> {
        let range = self.block_range(obj.size, index);
        let len = range.end - range.start;
        let block = |data: Bytes| {
            Arc::new(Block {
                data,
                prefetched,
                used: AtomicBool::new(false),
                held: AtomicBool::new(false),
                orphaned: AtomicBool::new(false),
                orphans: self.orphans.clone(),
            })
        };
        if let Some(disk) = &self.disk {
            let (disk, id) = (disk.clone(), id.to_string());
            let hit = tokio::task::spawn_blocking(move || disk.get(&id, len))
                .await
                .map_err(|e| StoreError::Other(format!("disk cache task failed: {e}")))?;
            if let Some(data) = hit {
                return Ok(block(data));
            }
        }
        let data = self.get_with_retry(obj, index, range).await?;
        if let Some(disk) = &self.disk {
            disk.write_behind(id.to_string(), data.clone());
        }
        Ok(block(data))
    }
}
