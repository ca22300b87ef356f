//! The object-store seam: everything lakemount knows about a lake goes through [`Store`].
//!
//! Keys are relative to the lake root (the URL's container plus prefix), use `/` as the
//! delimiter and never start with `/`. A store lists one directory level at a time, the way
//! Azure's List Blobs does with `delimiter=/`; turning raw names into POSIX names is the
//! filesystem core's job, so a backend returns whatever names the service holds.

pub mod azure;
pub mod azure_list;
pub mod local;
pub mod memory;
pub mod retry;
pub mod throttle;

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

/// One object (blob or file) as listed or headed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Full key relative to the lake root, e.g. `train/img/0001.jpg`.
    pub key: String,
    pub size: u64,
    pub mtime: SystemTime,
    /// Changes whenever the content changes; block caches are keyed by it.
    pub etag: String,
    /// A zero-length blob with metadata `hdi_isfolder=true`: how hierarchical-namespace
    /// accounts (and tools that emulate them) store a directory.
    pub is_dir_marker: bool,
}

/// One page of a one-level listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    pub objects: Vec<ObjectInfo>,
    /// Common prefixes ("sub-directories"), each ending in `/`, e.g. `train/img/`.
    pub prefixes: Vec<String>,
    /// Continuation token; `None` when this was the last page.
    pub next: Option<String>,
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found: {0}")]
    NotFound(String),
    /// The object changed since the caller saw it (If-Match failed).
    #[error("object changed while in use: {0}")]
    Changed(String),
    #[error("access denied: {0}")]
    Denied(String),
    #[error("{0}")]
    NoContainer(String),
    #[error("cannot reach the store: {0}")]
    Unreachable(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("{0}")]
    Other(String),
}

impl StoreError {
    /// The errno a filesystem caller should see for this failure.
    pub fn errno(&self) -> i32 {
        match self {
            StoreError::NotFound(_) => libc::ENOENT,
            StoreError::Changed(_) => libc::ESTALE,
            StoreError::Denied(_) => libc::EACCES,
            StoreError::Invalid(_) => libc::EINVAL,
            StoreError::NoContainer(_) | StoreError::Unreachable(_) | StoreError::Other(_) => {
                libc::EIO
            }
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Where this store points, for messages (never contains credentials).
    fn describe(&self) -> String;

    /// A name for `key` that is the same whichever lake URL prefix reached it, so caches
    /// shared between mounts and `lakemount warm` agree.
    fn object_id(&self, key: &str) -> String {
        format!("{}/{key}", self.describe().trim_end_matches('/'))
    }

    /// One page of the listing of directory `prefix` (`""` for the root, else ending in `/`).
    async fn list_page(&self, prefix: &str, marker: Option<String>) -> StoreResult<ListPage>;

    /// Properties of one object; `Ok(None)` when it does not exist.
    async fn head(&self, key: &str) -> StoreResult<Option<ObjectInfo>>;

    /// Bytes `range` of `key`, only if its ETag is still `etag` ([`StoreError::Changed`] if not).
    /// A range past the end is clipped to the object's size.
    async fn get_range(&self, key: &str, range: Range<u64>, etag: &str) -> StoreResult<Bytes>;

    async fn delete(&self, key: &str) -> StoreResult<()>;

    /// Whether any key starts with `prefix` (which ends in `/`): a directory exists there.
    async fn dir_exists(&self, prefix: &str) -> StoreResult<bool> {
        let page = self.list_page(prefix, None).await?;
        Ok(!page.objects.is_empty() || !page.prefixes.is_empty())
    }

    /// One cheap authenticated call that proves the lake is reachable, the credentials are
    /// accepted and the container exists. Used before mounting so failures are reported up front.
    async fn probe(&self) -> StoreResult<()> {
        self.list_page("", None).await.map(|_| ())
    }
}

pub type DynStore = Arc<dyn Store>;

/// All pages of one directory level, concatenated.
pub async fn list_all(store: &dyn Store, prefix: &str) -> StoreResult<ListPage> {
    let mut all = ListPage::default();
    let mut marker = None;
    loop {
        let page = store.list_page(prefix, marker).await?;
        all.objects.extend(page.objects);
        all.prefixes.extend(page.prefixes);
        match page.next {
            Some(next) if !next.is_empty() => marker = Some(next),
            _ => return Ok(all),
        }
    }
}

/// Opens the store a lake URL names.
pub fn open(
    lake: &crate::lake_url::LakeUrl,
    endpoint: Option<String>,
    auth: azure::AuthMethod,
) -> StoreResult<DynStore> {
    match lake {
        crate::lake_url::LakeUrl::Local { path } => Ok(Arc::new(local::LocalStore::new(path))),
        crate::lake_url::LakeUrl::Azure {
            account,
            container,
            prefix,
        } => {
            let target = azure::AzureTarget {
                account: account.clone(),
                container: container.clone(),
                prefix: prefix.clone(),
                endpoint,
                auth,
            };
            Ok(Arc::new(azure::AzureStore::new(target)?))
        }
    }
}
