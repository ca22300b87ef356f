//! Metadata cache: directory listings and single-name lookups (positive and negative), each
//! kept for the metadata TTL, so `ls -lR` or a training loader's `stat` storm does not
//! re-list what was just listed. A TTL of zero turns it off.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;

use crate::fs::listing::{DirListing, EntryKind};
use crate::store::StoreError;

#[derive(Clone)]
pub struct MetaCache {
    ttl: Duration,
    dirs: Cache<String, Arc<DirListing>>,
    entries: Cache<String, Option<EntryKind>>,
    /// First pages listed to answer lookups (see `first_page`): `None` for a directory with
    /// more pages, whose names are then looked up one by one.
    first_pages: Cache<String, Option<Arc<DirListing>>>,
}

impl MetaCache {
    /// `max_entries` bounds the number of directory entries held across all cached listings.
    pub fn new(ttl: Duration, max_entries: u64) -> Self {
        let ttl_or_min = ttl.max(Duration::from_millis(1));
        MetaCache {
            ttl,
            dirs: Cache::builder()
                .time_to_live(ttl_or_min)
                .weigher(|_k: &String, v: &Arc<DirListing>| v.entries.len().max(1) as u32)
                .max_capacity(max_entries)
                .build(),
            entries: Cache::builder()
                .time_to_live(ttl_or_min)
                .max_capacity(max_entries)
                .build(),
            first_pages: Cache::builder()
                .time_to_live(ttl_or_min)
                .weigher(|_k: &String, v: &Option<Arc<DirListing>>| {
                    v.as_ref().map_or(1, |l| l.entries.len().max(1) as u32)
                })
                .max_capacity(max_entries)
                .build(),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    /// The listing of directory `prefix`, loading it at most once however many callers ask at once.
    pub async fn dir<F>(&self, prefix: &str, load: F) -> Result<Arc<DirListing>, Arc<StoreError>>
    where
        F: Future<Output = Result<Arc<DirListing>, StoreError>>,
    {
        if !self.enabled() {
            return load.await.map_err(Arc::new);
        }
        self.dirs.try_get_with(prefix.to_string(), load).await
    }

    /// A listing already held for `prefix`, if fresh.
    pub async fn cached_dir(&self, prefix: &str) -> Option<Arc<DirListing>> {
        if !self.enabled() {
            return None;
        }
        self.dirs.get(prefix).await
    }

    /// What `key` was last found to be (`Some(None)`: known not to exist).
    pub async fn cached_entry(&self, key: &str) -> Option<Option<EntryKind>> {
        if !self.enabled() {
            return None;
        }
        self.entries.get(key).await
    }

    /// The first page of `prefix` as `load` lists it, at most once per TTL however many
    /// lookups ask at once; a complete one also becomes the directory's listing.
    pub async fn first_page<F>(
        &self,
        prefix: &str,
        load: F,
    ) -> Result<Option<Arc<DirListing>>, Arc<StoreError>>
    where
        F: Future<Output = Result<Option<Arc<DirListing>>, StoreError>>,
    {
        if !self.enabled() {
            return Ok(None);
        }
        let entry = self
            .first_pages
            .entry_by_ref(prefix)
            .or_try_insert_with(load)
            .await?;
        // Only a page just listed: a listing is never trusted past the TTL of its request.
        if let (true, Some(listing)) = (entry.is_fresh(), entry.value()) {
            self.dirs.insert(prefix.to_string(), listing.clone()).await;
        }
        Ok(entry.into_value())
    }

    /// Drops what expired now (the caches otherwise do it as they are used) and returns the
    /// directory entries and names still cached.
    pub async fn upkeep(&self) -> u64 {
        self.dirs.run_pending_tasks().await;
        self.entries.run_pending_tasks().await;
        self.first_pages.run_pending_tasks().await;
        self.dirs.weighted_size() + self.entries.entry_count() + self.first_pages.weighted_size()
    }

    /// Keeps `listing` as the listing of `prefix` for the TTL.
    pub async fn put_dir(&self, prefix: &str, listing: Arc<DirListing>) {
        if self.enabled() {
            self.dirs.insert(prefix.to_string(), listing).await;
        }
    }

    /// Forgets the listing of `prefix` (this mount changed it).
    pub async fn invalidate_dir(&self, prefix: &str) {
        self.dirs.invalidate(prefix).await;
        self.first_pages.invalidate(prefix).await;
    }

    /// Forgets everything (a directory was renamed: every name below it moved).
    pub fn invalidate_all(&self) {
        self.dirs.invalidate_all();
        self.entries.invalidate_all();
        self.first_pages.invalidate_all();
    }

    pub async fn put_entry(&self, key: &str, kind: Option<EntryKind>) {
        if self.enabled() {
            self.entries.insert(key.to_string(), kind).await;
        }
    }
}
