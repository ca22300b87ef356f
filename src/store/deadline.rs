//! Every call to the lake ends within a deadline, retries included.
//!
//! A FUSE request the daemon has taken cannot be abandoned by the kernel: the calling process
//! sleeps uninterruptibly (even `kill -9` waits) until the daemon answers. fuser does not pass
//! FUSE_INTERRUPT on (it answers ENOSYS, after which the kernel stops sending them), so a
//! deadline is the only guarantee. Every store a mount or a transfer uses is wrapped here,
//! which states the invariant in one place: **no await on the lake lasts longer than its
//! class's deadline**. A request that runs out of time fails with [`StoreError::TimedOut`]
//! (ETIMEDOUT) and its future is dropped, which closes the connection.
//!
//! Two classes: metadata (listings, HEAD, deletes, directory changes, account probe) and data
//! (block reads and uploads, commits, copies), whose size makes them slower.

use std::future::Future;
use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::Metadata;
use super::{
    Committed, DynStore, ListPage, ObjectInfo, PutOptions, Store, StoreError, StoreResult,
};

/// How long one call to the lake may take, all its retries included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    pub metadata: Duration,
    pub data: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            metadata: Duration::from_secs(30),
            data: Duration::from_secs(120),
        }
    }
}

/// A duration for messages: `30s`, `1.3s`.
pub fn shown(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

impl Deadlines {
    /// How long one attempt of a call may take before it is abandoned and retried: a third of
    /// the deadline, so a stalled connection leaves time for two more tries.
    pub fn attempt(total: Duration) -> Duration {
        (total / 3).max(Duration::from_millis(100))
    }
}

#[derive(Debug)]
pub struct DeadlineStore {
    inner: DynStore,
    deadlines: Deadlines,
}

impl DeadlineStore {
    pub fn wrap(inner: DynStore, deadlines: Deadlines) -> DynStore {
        std::sync::Arc::new(DeadlineStore { inner, deadlines })
    }

    async fn within<T>(
        &self,
        limit: Duration,
        what: &str,
        key: &str,
        call: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        match tokio::time::timeout(limit, call).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::TimedOut(format!(
                "{what} of {key:?} on {}: no answer within {}",
                self.inner.describe(),
                shown(limit)
            ))),
        }
    }

    async fn meta<T>(
        &self,
        what: &str,
        key: &str,
        call: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        self.within(self.deadlines.metadata, what, key, call).await
    }

    async fn data<T>(
        &self,
        what: &str,
        key: &str,
        call: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        self.within(self.deadlines.data, what, key, call).await
    }
}

#[async_trait]
impl Store for DeadlineStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn object_id(&self, key: &str) -> String {
        self.inner.object_id(key)
    }

    async fn list_page(&self, prefix: &str, marker: Option<String>) -> StoreResult<ListPage> {
        let call = self.inner.list_page(prefix, marker);
        self.meta("listing", prefix, call).await
    }

    async fn head(&self, key: &str) -> StoreResult<Option<ObjectInfo>> {
        self.meta("properties", key, self.inner.head(key)).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>, etag: &str) -> StoreResult<Bytes> {
        let call = self.inner.get_range(key, range, etag);
        self.data("read", key, call).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.meta("delete", key, self.inner.delete(key)).await
    }

    async fn put_block(&self, key: &str, block_id: &str, data: Bytes) -> StoreResult<()> {
        let call = self.inner.put_block(key, block_id, data);
        self.data("block upload", key, call).await
    }

    async fn commit_blocks(
        &self,
        key: &str,
        blocks: &[String],
        opts: &PutOptions,
    ) -> StoreResult<Committed> {
        let call = self.inner.commit_blocks(key, blocks, opts);
        self.data("commit", key, call).await
    }

    async fn put(&self, key: &str, data: Bytes, opts: &PutOptions) -> StoreResult<Committed> {
        self.data("upload", key, self.inner.put(key, data, opts))
            .await
    }

    async fn set_metadata(&self, key: &str, meta: &Metadata) -> StoreResult<Committed> {
        self.meta("set metadata", key, self.inner.set_metadata(key, meta))
            .await
    }

    async fn make_dir(&self, key: &str, meta: &Metadata) -> StoreResult<()> {
        self.meta("mkdir", key, self.inner.make_dir(key, meta))
            .await
    }

    async fn remove_dir(&self, key: &str) -> StoreResult<()> {
        self.meta("rmdir", key, self.inner.remove_dir(key)).await
    }

    async fn copy(&self, from: &str, to: &str) -> StoreResult<()> {
        self.data("copy", from, self.inner.copy(from, to)).await
    }

    fn lookups_list(&self) -> bool {
        self.inner.lookups_list()
    }

    fn keeps_committed_blocks(&self) -> bool {
        self.inner.keeps_committed_blocks()
    }

    async fn committed_blocks(&self, key: &str) -> StoreResult<Option<super::BlockList>> {
        self.meta("block list", key, self.inner.committed_blocks(key))
            .await
    }

    async fn copy_version(&self, from: &str, etag: &str, to: &str) -> StoreResult<ObjectInfo> {
        let copy = self.inner.copy_version(from, etag, to);
        self.data("copy", from, copy).await
    }

    async fn hierarchical(&self) -> bool {
        // No answer in time is treated like a failed answer: flat for now, asked again later.
        let call = async { Ok(self.inner.hierarchical().await) };
        self.meta("account properties", "", call)
            .await
            .unwrap_or(false)
    }

    async fn rename(&self, from: &str, to: &str) -> StoreResult<()> {
        self.meta("rename", from, self.inner.rename(from, to)).await
    }

    async fn dir_exists(&self, prefix: &str) -> StoreResult<bool> {
        self.meta("listing", prefix, self.inner.dir_exists(prefix))
            .await
    }

    async fn probe(&self) -> StoreResult<()> {
        self.meta("probe", "", self.inner.probe()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use std::sync::Arc;

    /// A store whose every call waits forever: a hung origin.
    #[derive(Debug)]
    struct Hung;

    #[async_trait]
    impl Store for Hung {
        fn describe(&self) -> String {
            "hung://".into()
        }
        async fn list_page(&self, _: &str, _: Option<String>) -> StoreResult<ListPage> {
            std::future::pending().await
        }
        async fn head(&self, _: &str) -> StoreResult<Option<ObjectInfo>> {
            std::future::pending().await
        }
        async fn get_range(&self, _: &str, _: Range<u64>, _: &str) -> StoreResult<Bytes> {
            std::future::pending().await
        }
        async fn delete(&self, _: &str) -> StoreResult<()> {
            std::future::pending().await
        }
        async fn put_block(&self, _: &str, _: &str, _: Bytes) -> StoreResult<()> {
            std::future::pending().await
        }
        async fn commit_blocks(
            &self,
            _: &str,
            _: &[String],
            _: &PutOptions,
        ) -> StoreResult<Committed> {
            std::future::pending().await
        }
        async fn copy(&self, _: &str, _: &str) -> StoreResult<()> {
            std::future::pending().await
        }
        async fn rename(&self, _: &str, _: &str) -> StoreResult<()> {
            std::future::pending().await
        }
        async fn hierarchical(&self) -> bool {
            std::future::pending().await
        }
    }

    fn short() -> Deadlines {
        Deadlines {
            metadata: Duration::from_secs(3),
            data: Duration::from_secs(7),
        }
    }

    /// How many whole seconds of (paused) time a call took, and whether it timed out.
    async fn timed<T: std::fmt::Debug>(call: impl Future<Output = StoreResult<T>>) -> u64 {
        let t0 = tokio::time::Instant::now();
        let r = call.await;
        assert!(matches!(r, Err(StoreError::TimedOut(_))), "{r:?}");
        t0.elapsed().as_secs()
    }

    #[tokio::test(start_paused = true)]
    async fn every_call_on_a_hung_store_ends_at_its_class_deadline() {
        let s = DeadlineStore::wrap(Arc::new(Hung), short());
        let e = s.list_page("a/", None).await.unwrap_err();
        assert_eq!(e.errno(), libc::ETIMEDOUT);
        assert!(!e.is_transient(), "a timed-out call is not tried again");
        assert!(e.to_string().contains("no answer within 3s"), "{e}");
        assert_eq!(timed(s.list_page("a/", None)).await, 3);
        assert_eq!(timed(s.head("k")).await, 3);
        assert_eq!(timed(s.delete("k")).await, 3);
        assert_eq!(timed(s.dir_exists("d/")).await, 3);
        assert_eq!(timed(s.probe()).await, 3);
        assert_eq!(timed(s.get_range("k", 0..10, "e")).await, 7);
        assert_eq!(timed(s.put_block("k", "b", Bytes::new())).await, 7);
        let opts = PutOptions::default();
        let commit = s.commit_blocks("k", &[], &opts);
        assert_eq!(timed(commit).await, 7);
        assert_eq!(timed(s.rename("a", "b")).await, 3);
        assert_eq!(timed(s.copy("a", "b")).await, 7);
        let t1 = tokio::time::Instant::now();
        assert!(!s.hierarchical().await, "no answer in time counts as flat");
        assert_eq!(tokio::time::Instant::now().duration_since(t1).as_secs(), 3);
    }

    #[tokio::test]
    async fn calls_that_answer_in_time_pass_through_unchanged() {
        let mem = Arc::new(MemoryStore::new());
        mem.put("a/b", b"hello".to_vec());
        let s = DeadlineStore::wrap(mem, short());
        let info = s.head("a/b").await.unwrap().unwrap();
        assert_eq!(info.size, 5);
        let got = s.get_range("a/b", 1..4, &info.etag).await.unwrap();
        assert_eq!(&got[..], b"ell");
        let e = s.get_range("a/b", 0..5, "other").await.unwrap_err();
        assert!(matches!(e, StoreError::Changed(_)), "{e}");
        assert_eq!(s.list_page("a/", None).await.unwrap().objects.len(), 1);
    }
}
