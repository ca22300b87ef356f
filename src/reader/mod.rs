//! The data path behind an open file handle: the filesystem core asks a [`FileReader`] for
//! byte ranges and never talks to the store for data itself. Read-ahead and block caches
//! plug in here by providing another [`ReadPath`].

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

pub use crate::cache::disk::Complete;
use crate::store::{DynStore, StoreResult};

/// What an open handle reads: one object, pinned to the ETag it was opened under.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectVersion {
    pub key: String,
    pub etag: String,
    pub size: u64,
}

#[async_trait]
pub trait FileReader: Send + Sync {
    /// Up to `len` bytes at `offset`; shorter only at the end of the object.
    async fn read(&self, offset: u64, len: u32) -> StoreResult<Bytes>;
}

/// Creates one reader per open file handle.
pub trait ReadPath: Send + Sync {
    fn open(&self, object: ObjectVersion) -> Box<dyn FileReader>;

    /// A local file holding all of `object`'s bytes, checked, for the kernel to read
    /// directly (passthrough). Without `may_verify` it answers at once, and `NeedsCheck`
    /// when a file would first have to be read whole.
    fn complete_file(&self, _object: &ObjectVersion, _may_verify: bool) -> Complete {
        Complete::No
    }

    /// Whether `file`, which `complete_file` gave for `object` and which has stayed open
    /// since, may serve another passthrough open: unchanged since its check.
    fn still_complete(&self, _object: &ObjectVersion, _file: &std::fs::File) -> bool {
        false
    }
}

/// Reads straight from the store: one ranged GET per read call.
pub struct DirectReadPath {
    store: DynStore,
}

impl DirectReadPath {
    pub fn new(store: DynStore) -> Arc<Self> {
        Arc::new(DirectReadPath { store })
    }
}

impl ReadPath for DirectReadPath {
    fn open(&self, object: ObjectVersion) -> Box<dyn FileReader> {
        Box::new(DirectReader {
            store: self.store.clone(),
            object,
        })
    }
}

struct DirectReader {
    store: DynStore,
    object: ObjectVersion,
}

#[async_trait]
impl FileReader for DirectReader {
    async fn read(&self, offset: u64, len: u32) -> StoreResult<Bytes> {
        let end = offset.saturating_add(len as u64).min(self.object.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let o = &self.object;
        let data = self.store.get_range(&o.key, offset..end, &o.etag).await?;
        if data.len() as u64 != end - offset {
            // Never hand the kernel a short read in the middle of a file: that is wrong bytes.
            return Err(crate::store::StoreError::Other(format!(
                "{}: short read ({} of {} bytes at {offset})",
                o.key,
                data.len(),
                end - offset
            )));
        }
        Ok(data)
    }
}
