//! A store wrapper that behaves like a remote one: a first-byte latency on every request and a
//! bandwidth cap shared by all requests. For benchmarks and tests of the read path (never a
//! substitute for Azurite in tests about Azure itself). It also counts what passes through,
//! and can inject the faults a real lake produces (see [`Faults`]).

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use super::Metadata;
use super::{
    Committed, DynStore, ListPage, ObjectInfo, PutOptions, Store, StoreError, StoreResult,
};

/// Faults injected into data reads (ranged GETs), each on a share of requests, chosen by a
/// seeded generator so a run can be repeated. Shares are per mille; what is left succeeds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    pub seed: u64,
    /// 503 ServerBusy with a Retry-After of `retry_after`.
    pub busy: u32,
    pub retry_after: Duration,
    /// 500 InternalError.
    pub internal: u32,
    /// The connection drops mid-body: the response is cut to half.
    pub reset: u32,
    /// The body stalls for `stall_for` before arriving.
    pub stall: u32,
    pub stall_for: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Busy,
    Internal,
    Reset,
    Stall,
}

#[derive(Debug, Default)]
pub struct ThrottleStats {
    pub gets: AtomicU64,
    pub bytes: AtomicU64,
    pub in_flight: AtomicU64,
    pub max_in_flight: AtomicU64,
    /// Faults injected so far.
    pub faults: AtomicU64,
}

#[derive(Debug)]
pub struct ThrottledStore {
    inner: DynStore,
    latency: Duration,
    /// Bytes per second for all GETs together; `None`: unlimited.
    bandwidth: Option<u64>,
    /// When the shared link is next free.
    link_free_at: Mutex<Instant>,
    faults: Option<Faults>,
    /// xorshift state of the fault generator.
    rng: Mutex<u64>,
    pub stats: ThrottleStats,
}

impl ThrottledStore {
    pub fn new(inner: DynStore, latency: Duration, bandwidth: Option<u64>) -> Self {
        ThrottledStore {
            inner,
            latency,
            bandwidth,
            link_free_at: Mutex::new(Instant::now()),
            faults: None,
            rng: Mutex::new(1),
            stats: ThrottleStats::default(),
        }
    }

    /// The same store, injecting `faults` into data reads.
    pub fn with_faults(mut self, faults: Faults) -> Self {
        *self.rng.get_mut().unwrap() = faults.seed | 1;
        self.faults = Some(faults);
        self
    }

    fn next_fault(&self) -> Option<Fault> {
        let f = self.faults?;
        let roll = {
            let mut x = self.rng.lock().unwrap();
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            (*x % 1000) as u32
        };
        let mut edge = 0;
        for (share, fault) in [
            (f.busy, Fault::Busy),
            (f.internal, Fault::Internal),
            (f.reset, Fault::Reset),
            (f.stall, Fault::Stall),
        ] {
            edge += share;
            if roll < edge {
                self.stats.faults.fetch_add(1, Ordering::Relaxed);
                return Some(fault);
            }
        }
        None
    }
}

/// Decrements the in-flight gauge however the request ends.
struct InFlight<'a>(&'a ThrottleStats);

impl<'a> InFlight<'a> {
    fn new(s: &'a ThrottleStats) -> Self {
        let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        s.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(s)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Store for ThrottledStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn list_page(&self, prefix: &str, marker: Option<String>) -> StoreResult<ListPage> {
        tokio::time::sleep(self.latency).await;
        self.inner.list_page(prefix, marker).await
    }

    async fn head(&self, key: &str) -> StoreResult<Option<ObjectInfo>> {
        tokio::time::sleep(self.latency).await;
        self.inner.head(key).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>, etag: &str) -> StoreResult<Bytes> {
        let _g = InFlight::new(&self.stats);
        self.stats.gets.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(self.latency).await;
        let fault = self.next_fault();
        match fault {
            Some(Fault::Busy) => {
                let after = self.faults.map(|f| f.retry_after);
                return Err(StoreError::Busy(
                    format!("{key}: ServerBusy (HTTP 503), injected"),
                    after,
                ));
            }
            Some(Fault::Internal) => {
                return Err(StoreError::Busy(
                    format!("{key}: InternalError (HTTP 500), injected"),
                    None,
                ));
            }
            Some(Fault::Stall) => {
                tokio::time::sleep(self.faults.map_or(Duration::ZERO, |f| f.stall_for)).await;
            }
            _ => {}
        }
        let mut data = self.inner.get_range(key, range, etag).await?;
        if fault == Some(Fault::Reset) {
            data.truncate(data.len() / 2);
        }
        if let Some(bw) = self.bandwidth {
            // Reserve this transfer's share of the link, then wait until it is done.
            let need = Duration::from_secs_f64(data.len() as f64 / bw as f64);
            let done = {
                let mut free = self.link_free_at.lock().unwrap();
                let start = (*free).max(Instant::now());
                *free = start + need;
                *free
            };
            tokio::time::sleep_until(done).await;
        }
        self.stats
            .bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(data)
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        tokio::time::sleep(self.latency).await;
        self.inner.delete(key).await
    }

    async fn put_block(&self, key: &str, block_id: &str, data: Bytes) -> StoreResult<()> {
        tokio::time::sleep(self.latency).await;
        self.inner.put_block(key, block_id, data).await
    }

    async fn commit_blocks(
        &self,
        key: &str,
        blocks: &[String],
        opts: &PutOptions,
    ) -> StoreResult<Committed> {
        tokio::time::sleep(self.latency).await;
        self.inner.commit_blocks(key, blocks, opts).await
    }

    async fn put(&self, key: &str, data: Bytes, opts: &PutOptions) -> StoreResult<Committed> {
        tokio::time::sleep(self.latency).await;
        self.inner.put(key, data, opts).await
    }

    async fn set_metadata(&self, key: &str, meta: &Metadata) -> StoreResult<Committed> {
        tokio::time::sleep(self.latency).await;
        self.inner.set_metadata(key, meta).await
    }

    async fn make_dir(&self, key: &str, meta: &Metadata) -> StoreResult<()> {
        tokio::time::sleep(self.latency).await;
        self.inner.make_dir(key, meta).await
    }

    async fn remove_dir(&self, key: &str) -> StoreResult<()> {
        tokio::time::sleep(self.latency).await;
        self.inner.remove_dir(key).await
    }

    async fn copy(&self, from: &str, to: &str) -> StoreResult<()> {
        tokio::time::sleep(self.latency).await;
        self.inner.copy(from, to).await
    }

    fn lookups_list(&self) -> bool {
        self.inner.lookups_list()
    }

    fn keeps_committed_blocks(&self) -> bool {
        self.inner.keeps_committed_blocks()
    }

    async fn committed_blocks(&self, key: &str) -> StoreResult<Option<super::BlockList>> {
        tokio::time::sleep(self.latency).await;
        self.inner.committed_blocks(key).await
    }

    async fn copy_version(&self, from: &str, etag: &str, to: &str) -> StoreResult<ObjectInfo> {
        tokio::time::sleep(self.latency).await;
        self.inner.copy_version(from, etag, to).await
    }

    async fn hierarchical(&self) -> bool {
        self.inner.hierarchical().await
    }

    async fn rename(&self, from: &str, to: &str) -> StoreResult<()> {
        tokio::time::sleep(self.latency).await;
        self.inner.rename(from, to).await
    }
}
