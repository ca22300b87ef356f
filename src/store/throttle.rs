//! A store wrapper that behaves like a remote one: a first-byte latency on every request and a
//! bandwidth cap shared by all requests. For benchmarks and tests of the read path (never a
//! substitute for Azurite in tests about Azure itself). It also counts what passes through.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use super::{Committed, DynStore, ListPage, ObjectInfo, PutOptions, Store, StoreResult};

#[derive(Debug, Default)]
pub struct ThrottleStats {
    pub gets: AtomicU64,
    pub bytes: AtomicU64,
    pub in_flight: AtomicU64,
    pub max_in_flight: AtomicU64,
}

#[derive(Debug)]
pub struct ThrottledStore {
    inner: DynStore,
    latency: Duration,
    /// Bytes per second for all GETs together; `None`: unlimited.
    bandwidth: Option<u64>,
    /// When the shared link is next free.
    link_free_at: Mutex<Instant>,
    pub stats: ThrottleStats,
}

impl ThrottledStore {
    pub fn new(inner: DynStore, latency: Duration, bandwidth: Option<u64>) -> Self {
        ThrottledStore {
            inner,
            latency,
            bandwidth,
            link_free_at: Mutex::new(Instant::now()),
            stats: ThrottleStats::default(),
        }
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
        let data = self.inner.get_range(key, range, etag).await?;
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

    async fn make_dir(&self, key: &str) -> StoreResult<()> {
        tokio::time::sleep(self.latency).await;
        self.inner.make_dir(key).await
    }

    async fn remove_dir(&self, key: &str) -> StoreResult<()> {
        tokio::time::sleep(self.latency).await;
        self.inner.remove_dir(key).await
    }

    async fn copy(&self, from: &str, to: &str) -> StoreResult<()> {
        tokio::time::sleep(self.latency).await;
        self.inner.copy(from, to).await
    }

    async fn hierarchical(&self) -> bool {
        self.inner.hierarchical().await
    }

    async fn rename(&self, from: &str, to: &str) -> StoreResult<()> {
        tokio::time::sleep(self.latency).await;
        self.inner.rename(from, to).await
    }
}
