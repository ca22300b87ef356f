//! FUSE requests do not queue behind one slow network call: while a read of one file waits
//! on the lake, other files are listed and read.

mod common;

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use common::mount::wait_for;
use lakemount::config::MountSettings;
use lakemount::lake_url::LakeUrl;
use lakemount::metrics::Metrics;
use lakemount::mount::{build_fs, runtime, Session};
use lakemount::store::memory::MemoryStore;
use lakemount::store::{ListPage, ObjectInfo, Store, StoreResult};

/// Holds every GET of `slow` until the gate opens.
#[derive(Debug)]
struct Gated {
    inner: MemoryStore,
    open: AtomicBool,
    /// A GET of `slow` is waiting at the gate.
    waiting: AtomicBool,
}

#[async_trait]
impl Store for Gated {
    fn describe(&self) -> String {
        "gated://".into()
    }
    async fn list_page(&self, prefix: &str, marker: Option<String>) -> StoreResult<ListPage> {
        self.inner.list_page(prefix, marker).await
    }
    async fn head(&self, key: &str) -> StoreResult<Option<ObjectInfo>> {
        self.inner.head(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>, etag: &str) -> StoreResult<Bytes> {
        while key == "slow" && !self.open.load(Ordering::SeqCst) {
            self.waiting.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.inner.get_range(key, range, etag).await
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.inner.delete(key).await
    }
}

#[test]
fn a_read_waiting_on_the_lake_does_not_block_other_requests() {
    let store = Arc::new(Gated {
        inner: MemoryStore::new(),
        open: AtomicBool::new(false),
        waiting: AtomicBool::new(false),
    });
    store.inner.put("slow", "slow bytes");
    store.inner.put("fast", "fast bytes");
    store.inner.put("dir/other", "other");
    let rt = runtime().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fs = build_fs(
        store.clone(),
        &settings(dir.path()),
        Arc::new(Metrics::default()),
    )
    .unwrap();
    let session = Session::start(fs, dir.path(), false, rt.handle().clone()).unwrap();

    let slow_path = dir.path().join("slow");
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let done = done.clone();
        std::thread::spawn(move || {
            let data = std::fs::read(slow_path);
            done.store(true, Ordering::SeqCst);
            data
        })
    };
    let slow_waits = || store.waiting.load(Ordering::SeqCst);
    assert!(wait_for(Duration::from_secs(10), slow_waits));
    // In a thread, so a filesystem that serialized requests fails this test instead of hanging it.
    let fast = {
        let root = dir.path().to_path_buf();
        std::thread::spawn(move || {
            (
                std::fs::read(root.join("fast")),
                std::fs::read(root.join("dir/other")),
            )
        })
    };
    let served = wait_for(Duration::from_secs(10), || fast.is_finished());
    let slow_still_waiting = !done.load(Ordering::SeqCst);
    store.open.store(true, Ordering::SeqCst);
    assert!(served, "reads of other files waited for the slow one");
    assert!(
        slow_still_waiting,
        "the slow read was not held: the test showed nothing"
    );
    let (f, o) = fast.join().unwrap();
    assert_eq!(
        (f.unwrap(), o.unwrap()),
        (b"fast bytes".to_vec(), b"other".to_vec())
    );
    assert_eq!(reader.join().unwrap().unwrap(), b"slow bytes");
    drop(session);
    assert!(!common::mount::is_mounted(dir.path()));
}

fn settings(mountpoint: &std::path::Path) -> MountSettings {
    MountSettings {
        block_size: 1 << 20,
        max_readahead: 4 << 20,
        max_memory: 64 << 20,
        ..MountSettings::defaults(
            LakeUrl::Local {
                path: "/gated".into(),
            },
            mountpoint.into(),
        )
    }
}
