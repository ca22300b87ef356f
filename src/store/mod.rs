//! The object-store seam: everything lakemount knows about a lake goes through [`Store`].
//!
//! Keys are relative to the lake root (the URL's container plus prefix), use `/` as the
//! delimiter and never start with `/`. A store lists one directory level at a time, the way
//! Azure's List Blobs does with `delimiter=/`; turning raw names into POSIX names is the
//! filesystem core's job, so a backend returns whatever names the service holds.

pub mod azure;
pub mod azure_auth;
pub mod azure_list;
pub mod counted;
pub mod deadline;
pub mod local;
pub mod memory;
pub mod posix;
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
    /// Base64 MD5 of the content when the store keeps one (Azure's Content-MD5, which
    /// lakemount's uploads always set): lets transfers skip identical files and check downloads.
    pub content_md5: Option<String>,
    /// User metadata (`x-ms-meta-NAME`), names in lower case, `hdi_isfolder` left out (it is
    /// `is_dir_marker`).
    pub metadata: Metadata,
}

/// User metadata of an object, by lower-case name.
pub type Metadata = std::collections::BTreeMap<String, String>;

/// A block blob's committed blocks (Get Block List).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockList {
    /// The ETag of the object these blocks make.
    pub etag: String,
    /// Block id (base64, as sent) and size, in order.
    pub blocks: Vec<(String, u64)>,
}

/// The metadata name of directory markers, which [`ObjectInfo::metadata`] leaves out.
pub const DIR_MARKER_META: &str = "hdi_isfolder";

/// Metadata as a store hands it back: names in lower case, the directory flag apart.
pub fn user_metadata<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Metadata {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .filter(|(k, _)| k != DIR_MARKER_META)
        .collect()
}

/// What a write returns: the new version of the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub etag: String,
    pub mtime: SystemTime,
}

/// Options of a whole-object write.
#[derive(Clone, Debug, Default)]
pub struct PutOptions {
    /// MD5 of the whole content, stored with the object (Content-MD5).
    pub content_md5: Option<[u8; 16]>,
    /// User metadata of the new object (a write replaces the old object's).
    pub metadata: Metadata,
}

/// Base64 of an MD5 digest, the form Azure stores and returns.
pub fn md5_base64(d: &[u8; 16]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(d)
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
    /// The service is busy or failed transiently (503 ServerBusy, 500); worth retrying,
    /// after the delay it asked for, if any.
    #[error("{0}")]
    Busy(String, Option<std::time::Duration>),
    /// The target exists (create-only writes, renames that must not replace).
    #[error("already exists: {0}")]
    Exists(String),
    /// A local file on the way to the store failed (a write's staging file), with its errno:
    /// a full staging disk is ENOSPC to the writer, not a vague EIO.
    #[error("{0}")]
    Local(String, i32),
    /// A block list named blocks the store no longer holds: another writer's commit of the
    /// same name discarded them (Azure drops every uncommitted block of a blob at a commit).
    /// The writer can upload them again.
    #[error("staged blocks are gone: {0}")]
    BlocksMissing(String),
    /// The store answered something that cannot be right (a listing that never ends): not
    /// worth another try.
    #[error("{0}")]
    Protocol(String),
    /// No answer within the deadline of the call (see [`deadline`]): a hung or very slow
    /// origin. Not tried again, so the caller's wait stays bounded.
    #[error("{0}")]
    TimedOut(String),
    /// A name longer than the store takes (a path past PATH_MAX on a local lake).
    #[error("name too long: {0}")]
    NameTooLong(String),
    /// The store cannot do this (e.g. an atomic rename without a hierarchical namespace).
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error("{0}")]
    Other(String),
}

impl StoreError {
    /// Whether another attempt may succeed: the network, the service being busy, or a
    /// failure the store could not classify. Answers about the object (not found, changed,
    /// denied, invalid) are final.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unreachable(_) | StoreError::Busy(..) | StoreError::Other(_)
        )
    }

    /// The errno a filesystem caller should see for this failure.
    pub fn errno(&self) -> i32 {
        match self {
            StoreError::NotFound(_) => libc::ENOENT,
            StoreError::Changed(_) => libc::ESTALE,
            StoreError::Denied(_) => libc::EACCES,
            StoreError::Invalid(_) => libc::EINVAL,
            StoreError::Exists(_) => libc::EEXIST,
            StoreError::Unsupported(_) => libc::EOPNOTSUPP,
            StoreError::Local(_, errno) => *errno,
            StoreError::NameTooLong(_) => libc::ENAMETOOLONG,
            StoreError::TimedOut(_) => libc::ETIMEDOUT,
            StoreError::NoContainer(_)
            | StoreError::Unreachable(_)
            | StoreError::Busy(..)
            | StoreError::BlocksMissing(_)
            | StoreError::Protocol(_)
            | StoreError::Other(_) => libc::EIO,
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

    /// Stages one block of a coming write of `key`, under `block_id` (the same length for
    /// every block of one upload). Staged blocks are invisible until [`Store::commit_blocks`];
    /// staging an id again replaces that block.
    async fn put_block(&self, key: &str, _block_id: &str, _data: Bytes) -> StoreResult<()> {
        Err(read_only(key))
    }

    /// Makes `key` the concatenation of the staged `blocks`, replacing any object there in
    /// one step: readers see the old object or the new one, never a part.
    async fn commit_blocks(
        &self,
        key: &str,
        _blocks: &[String],
        _opts: &PutOptions,
    ) -> StoreResult<Committed> {
        Err(read_only(key))
    }

    /// Whether [`Store::commit_blocks`] may also name blocks of the object's committed block
    /// list (Azure's `<Latest>`), not only staged ones: a file committed again (a live file,
    /// an append) then sends only the blocks that changed.
    fn keeps_committed_blocks(&self) -> bool {
        false
    }

    /// The committed block list of `key` as it is now: its ETag, then each block's id and
    /// size in order. `Ok(None)` when it has none (no such object, or one Put Blob made it).
    async fn committed_blocks(&self, _key: &str) -> StoreResult<Option<BlockList>> {
        Ok(None)
    }

    /// Writes `key` in one request (small objects), replacing any object there.
    async fn put(&self, key: &str, _data: Bytes, _opts: &PutOptions) -> StoreResult<Committed> {
        Err(read_only(key))
    }

    /// Replaces the user metadata of object `key`, leaving its content alone (Set Blob
    /// Metadata). The object gets a new ETag, as Azure gives it.
    async fn set_metadata(&self, key: &str, _meta: &Metadata) -> StoreResult<Committed> {
        Err(read_only(key))
    }

    /// Creates directory `key` (without the trailing `/`): a marker blob on flat accounts,
    /// carrying `meta` (replacing the marker and its metadata if one is there).
    async fn make_dir(&self, key: &str, _meta: &Metadata) -> StoreResult<()> {
        Err(read_only(key))
    }

    /// Removes the directory `key`, which the caller found empty. A directory that exists
    /// only because keys were below it has nothing to remove: that is not an error.
    async fn remove_dir(&self, key: &str) -> StoreResult<()> {
        Err(read_only(key))
    }

    /// Server-side copy of object `from` onto `to`, replacing `to`.
    async fn copy(&self, _from: &str, to: &str) -> StoreResult<()> {
        Err(read_only(to))
    }

    /// Server-side copy of `from` onto `to`, only while `from` is still version `etag`
    /// ([`StoreError::Changed`] if not); returns the copy as the store holds it.
    async fn copy_version(&self, from: &str, etag: &str, to: &str) -> StoreResult<ObjectInfo> {
        match self.head(from).await? {
            Some(h) if h.etag == etag => {}
            Some(_) => return Err(StoreError::Changed(from.to_string())),
            None => return Err(StoreError::NotFound(from.to_string())),
        }
        self.copy(from, to).await?;
        self.head(to)
            .await?
            .ok_or_else(|| StoreError::NotFound(to.to_string()))
    }

    /// Whether [`Store::rename`] works: a hierarchical namespace, where files and whole
    /// directories are renamed atomically.
    async fn hierarchical(&self) -> bool {
        false
    }

    /// Atomic rename of a file or directory (hierarchical stores only), replacing a file at `to`.
    async fn rename(&self, from: &str, _to: &str) -> StoreResult<()> {
        Err(StoreError::Unsupported(format!(
            "rename of {from}: the store has no hierarchical namespace"
        )))
    }

    /// Whether a lookup of a name in a directory not listed yet had better list the
    /// directory (one request answering every name in it) than ask for the name (two).
    /// A local directory answers a name as cheaply as a listing, and more exactly
    /// (`ENAMETOOLONG` for a path past `PATH_MAX`).
    fn lookups_list(&self) -> bool {
        true
    }

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

/// What a store that cannot write (a test double, say) answers to writes.
fn read_only(key: &str) -> StoreError {
    StoreError::Unsupported(format!("{key}: this store is read-only"))
}

pub type DynStore = Arc<dyn Store>;

/// Most pages one listing may take: 100 million entries at Azure's 5,000 a page.
const MAX_PAGES: usize = 20_000;
/// Most empty pages in a row (Azure may return some, with a marker, while it skips deleted
/// blobs; an endless run of them is a listing that never ends).
const MAX_EMPTY_PAGES: usize = 100;

/// All pages of one directory level, concatenated.
pub async fn list_all(store: &dyn Store, prefix: &str) -> StoreResult<ListPage> {
    let mut all = ListPage::default();
    let mut marker: Option<String> = None;
    let mut guard = PageGuard::default();
    loop {
        let page = store.list_page(prefix, marker.clone()).await?;
        let next = guard.next(&page, || {
            format!("listing of {prefix:?} on {}", store.describe())
        })?;
        all.objects.extend(page.objects);
        all.prefixes.extend(page.prefixes);
        match next {
            Some(next) => marker = Some(next),
            None => return Ok(all),
        }
    }
}

/// Keeps a listing finite whatever the store answers: it ends at a page without a marker,
/// and fails at a marker named twice, a long run of empty pages or too many pages.
#[derive(Debug, Default)]
pub struct PageGuard {
    seen: std::collections::HashSet<String>,
    empty_run: usize,
    pages: usize,
}

impl PageGuard {
    /// The marker of the page after `page`, `None` at the end, or why the listing is broken.
    /// `what` names the listing for the error.
    pub fn next(
        &mut self,
        page: &ListPage,
        what: impl FnOnce() -> String,
    ) -> StoreResult<Option<String>> {
        self.pages += 1;
        self.empty_run = if page.objects.is_empty() && page.prefixes.is_empty() {
            self.empty_run + 1
        } else {
            0
        };
        let next = match &page.next {
            Some(next) if !next.is_empty() => next.clone(),
            _ => return Ok(None),
        };
        let what = what();
        if !self.seen.insert(next.clone()) {
            return Err(StoreError::Protocol(format!(
                "{what} does not end: the store named the same continuation marker twice"
            )));
        }
        if self.empty_run >= MAX_EMPTY_PAGES {
            return Err(StoreError::Protocol(format!(
                "{what} does not end: {} empty pages in a row",
                self.empty_run
            )));
        }
        if self.pages >= MAX_PAGES {
            return Err(StoreError::Protocol(format!(
                "{what} does not end within {MAX_PAGES} pages"
            )));
        }
        Ok(Some(next))
    }
}

/// Opens the store a lake URL names, every call bounded by `deadlines`.
pub fn open(
    lake: &crate::lake_url::LakeUrl,
    endpoint: Option<String>,
    auth: azure::AuthMethod,
    deadlines: deadline::Deadlines,
) -> StoreResult<DynStore> {
    let store: DynStore = match lake {
        crate::lake_url::LakeUrl::Local { path } => Arc::new(local::LocalStore::new(path)),
        crate::lake_url::LakeUrl::Azure {
            account,
            container,
            prefix,
            sas,
        } => {
            let target = azure::AzureTarget {
                account: account.clone(),
                container: container.clone(),
                prefix: prefix.clone(),
                endpoint,
                auth,
                sas: sas.clone(),
                deadlines,
            };
            Arc::new(azure::AzureStore::new(target)?)
        }
    };
    Ok(deadline::DeadlineStore::wrap(store, deadlines))
}
