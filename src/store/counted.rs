//! A store that counts the metadata requests made through it (listing pages, property
//! lookups) into the mount's metrics: how a walk's cost in requests is seen from outside.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    BlockList, Committed, DynStore, ListPage, Metadata, ObjectInfo, PutOptions, Store, StoreResult,
};
use crate::metrics::Metrics;

#[derive(Debug)]
pub struct CountedStore {
    inner: DynStore,
    metrics: Arc<Metrics>,
}

impl CountedStore {
    pub fn wrap(inner: DynStore, metrics: Arc<Metrics>) -> DynStore {
        Arc::new(CountedStore { inner, metrics })
    }
}

#[async_trait]
impl Store for CountedStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn object_id(&self, key: &str) -> String {
        self.inner.object_id(key)
    }

    async fn list_page(&self, prefix: &str, marker: Option<String>) -> StoreResult<ListPage> {
        Metrics::add(&self.metrics.store_list_requests_total, 1);
        self.inner.list_page(prefix, marker).await
    }

    async fn head(&self, key: &str) -> StoreResult<Option<ObjectInfo>> {
        Metrics::add(&self.metrics.store_head_requests_total, 1);
        self.inner.head(key).await
    }

    async fn dir_exists(&self, prefix: &str) -> StoreResult<bool> {
        Metrics::add(&self.metrics.store_list_requests_total, 1);
        self.inner.dir_exists(prefix).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>, etag: &str) -> StoreResult<Bytes> {
        self.inner.get_range(key, range, etag).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.inner.delete(key).await
    }

    async fn put_block(&self, key: &str, block_id: &str, data: Bytes) -> StoreResult<()> {
        self.inner.put_block(key, block_id, data).await
    }

    async fn commit_blocks(
        &self,
        key: &str,
        blocks: &[String],
        opts: &PutOptions,
    ) -> StoreResult<Committed> {
        self.inner.commit_blocks(key, blocks, opts).await
    }

    async fn put(&self, key: &str, data: Bytes, opts: &PutOptions) -> StoreResult<Committed> {
        self.inner.put(key, data, opts).await
    }

    async fn set_metadata(&self, key: &str, meta: &Metadata) -> StoreResult<Committed> {
        self.inner.set_metadata(key, meta).await
    }

    async fn make_dir(&self, key: &str, meta: &Metadata) -> StoreResult<()> {
        self.inner.make_dir(key, meta).await
    }

    async fn remove_dir(&self, key: &str) -> StoreResult<()> {
        self.inner.remove_dir(key).await
    }

    async fn copy(&self, from: &str, to: &str) -> StoreResult<()> {
        self.inner.copy(from, to).await
    }

    fn lookups_list(&self) -> bool {
        self.inner.lookups_list()
    }

    fn keeps_committed_blocks(&self) -> bool {
        self.inner.keeps_committed_blocks()
    }

    async fn committed_blocks(&self, key: &str) -> StoreResult<Option<BlockList>> {
        self.inner.committed_blocks(key).await
    }

    async fn copy_version(&self, from: &str, etag: &str, to: &str) -> StoreResult<ObjectInfo> {
        self.inner.copy_version(from, etag, to).await
    }

    async fn hierarchical(&self) -> bool {
        self.inner.hierarchical().await
    }

    async fn rename(&self, from: &str, to: &str) -> StoreResult<()> {
        self.inner.rename(from, to).await
    }

    async fn probe(&self) -> StoreResult<()> {
        self.inner.probe().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn listing_pages_and_lookups_are_counted_and_nothing_else() {
        let mem = Arc::new(MemoryStore::with_page_size(2));
        for k in ["a", "b", "c", "d/e"] {
            mem.put(k, "x");
        }
        let metrics = Arc::new(Metrics::default());
        let s = CountedStore::wrap(mem, metrics.clone());
        let all = super::super::list_all(s.as_ref(), "").await.unwrap();
        assert_eq!(all.objects.len() + all.prefixes.len(), 4);
        s.head("a").await.unwrap();
        s.get_range("a", 0..1, &s.head("b").await.unwrap().unwrap().etag)
            .await
            .unwrap_err();
        assert_eq!(Metrics::get(&metrics.store_list_requests_total), 2);
        assert_eq!(Metrics::get(&metrics.store_head_requests_total), 2);
    }
}
