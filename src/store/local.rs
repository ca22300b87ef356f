//! A local directory as the lake (`file:///PATH`): the embedded default, for trying lakemount
//! without an Azure account and for tests that need no server.

use std::fs::{File, Metadata};
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::{posix, Committed, ListPage, ObjectInfo, PutOptions, Store, StoreError, StoreResult};

/// Staged blocks of uploads in progress live here, under the lake root (so a commit is a
/// rename within one file system); listings of the root hide it.
const STAGING: &str = ".lakemount-staging";

#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStore { root: root.into() }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// The staging directory of uploads to `key`: named by a hash, as keys can be long.
    fn staging(&self, key: &str) -> PathBuf {
        use sha2::Digest;
        let h = sha2::Sha256::digest(key.as_bytes());
        let name: String = h[..16].iter().map(|b| format!("{b:02x}")).collect();
        self.root.join(STAGING).join(name)
    }
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// A fresh temporary name next to the staging area, unique across threads and processes.
fn temp_path(root: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    root.join(STAGING)
        .join(format!("tmp-{}-{n}", std::process::id()))
}

/// Writes `fill`'s output to a temporary file, then renames it onto `key` atomically.
fn replace_with(
    root: &Path,
    key: &str,
    opts: &PutOptions,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> StoreResult<Committed> {
    let mtime = super::posix::PosixAttrs::from_metadata(&opts.metadata).mtime;
    let owners = opts.metadata.clone();
    let dest = root.join(key);
    let tmp = temp_path(root);
    let result = (|| {
        std::fs::create_dir_all(root.join(STAGING))?;
        let mut f = File::create(&tmp)?;
        fill(&mut f)?;
        if let Some(t) = mtime {
            // A local lake keeps times as the file's own.
            f.set_modified(t)?;
        }
        store_owners(&tmp, &owners);
        f.sync_data()?;
        std::fs::rename(&tmp, &dest)?;
        std::fs::metadata(&dest)
    })();
    match result {
        Ok(m) => Ok(Committed {
            etag: etag(&m),
            mtime: m.modified().unwrap_or(std::time::UNIX_EPOCH),
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(io_err(key, e))
        }
    }
}

/// Inode, size and mtime together change whenever a file is replaced or rewritten.
fn etag(meta: &Metadata) -> String {
    format!(
        "\"{:x}-{:x}-{:x}.{:x}\"",
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec()
    )
}

fn info(key: String, path: &Path, meta: &Metadata) -> ObjectInfo {
    ObjectInfo {
        key,
        size: meta.len(),
        mtime: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
        etag: etag(meta),
        is_dir_marker: false,
        content_md5: None,
        metadata: owners_of(path),
    }
}

/// Where a local lake keeps the mode, owner and group set through a mount, `upload` or a
/// copy: extended attributes of the file (`user.lakemount.mode`, ...), so the file's own
/// permissions and owner, which the daemon may not be allowed to change, stay as they are.
const OWNER_XATTR: &str = "user.lakemount.";
const OWNER_NAMES: [&str; 3] = [posix::MODE, posix::UID, posix::GID];

/// Stores what `meta` sets of mode, uid and gid on `path`. A file system without user
/// extended attributes keeps none (the mount then shows its defaults), as before.
fn store_owners(path: &Path, meta: &super::Metadata) {
    for name in OWNER_NAMES {
        if let Some(v) = meta.get(name) {
            if let Err(e) = xattr::set(path, format!("{OWNER_XATTR}{name}"), v.as_bytes()) {
                tracing::debug!("{}: cannot keep {name}: {e}", path.display());
                return;
            }
        }
    }
}

/// The mode, uid and gid stored on `path` by [`store_owners`], as metadata.
fn owners_of(path: &Path) -> super::Metadata {
    let mut meta = super::Metadata::new();
    for name in OWNER_NAMES {
        if let Ok(Some(v)) = xattr::get(path, format!("{OWNER_XATTR}{name}")) {
            if let Ok(v) = String::from_utf8(v) {
                meta.insert(name.to_string(), v);
            }
        }
    }
    meta
}

fn io_err(key: &str, e: std::io::Error) -> StoreError {
    if e.raw_os_error() == Some(libc::ENAMETOOLONG) {
        return StoreError::NameTooLong(key.to_string());
    }
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => {
            StoreError::NotFound(key.to_string())
        }
        std::io::ErrorKind::PermissionDenied => StoreError::Denied(format!("{key}: {e}")),
        _ => StoreError::Other(format!("{key}: {e}")),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Other(format!("local store task failed: {e}")))?
}

fn list_dir(root: &Path, prefix: &str) -> StoreResult<ListPage> {
    let dir = root.join(prefix);
    let mut page = ListPage::default();
    let entries = std::fs::read_dir(&dir).map_err(|e| io_err(prefix, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_err(prefix, e))?;
        if prefix.is_empty() && entry.file_name() == STAGING {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            tracing::warn!(dir = %dir.display(), name = ?entry.file_name(), "skipping a name that is not UTF-8");
            continue;
        };
        // Follow symlinks: the lake is what the links point at. A dangling link is skipped.
        let Ok(meta) = std::fs::metadata(entry.path()) else {
            continue;
        };
        if meta.is_dir() {
            page.prefixes.push(format!("{prefix}{name}/"));
        } else if meta.is_file() {
            page.objects
                .push(info(format!("{prefix}{name}"), &entry.path(), &meta));
        }
    }
    page.objects.sort_by(|a, b| a.key.cmp(&b.key));
    page.prefixes.sort();
    Ok(page)
}

#[async_trait]
impl Store for LocalStore {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn lookups_list(&self) -> bool {
        false
    }

    async fn list_page(&self, prefix: &str, _marker: Option<String>) -> StoreResult<ListPage> {
        let (root, prefix) = (self.root.clone(), prefix.to_string());
        blocking(move || list_dir(&root, &prefix)).await
    }

    async fn head(&self, key: &str) -> StoreResult<Option<ObjectInfo>> {
        let (path, key) = (self.path(key), key.to_string());
        blocking(move || match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(info(key, &path, &m))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&key, e)),
        })
        .await
    }

    async fn get_range(&self, key: &str, range: Range<u64>, want: &str) -> StoreResult<Bytes> {
        let (path, key, want) = (self.path(key), key.to_string(), want.to_string());
        blocking(move || {
            let file = File::open(&path).map_err(|e| io_err(&key, e))?;
            let meta = file.metadata().map_err(|e| io_err(&key, e))?;
            if etag(&meta) != want {
                return Err(StoreError::Changed(key));
            }
            let end = range.end.min(meta.len());
            let start = range.start.min(end);
            let mut buf = vec![0u8; (end - start) as usize];
            file.read_exact_at(&mut buf, start)
                .map_err(|e| io_err(&key, e))?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let (path, key) = (self.path(key), key.to_string());
        blocking(move || std::fs::remove_file(&path).map_err(|e| io_err(&key, e))).await
    }

    async fn put_block(&self, key: &str, block_id: &str, data: Bytes) -> StoreResult<()> {
        let (dir, key, id) = (self.staging(key), key.to_string(), hex(block_id));
        blocking(move || {
            // Another writer's commit may remove the emptied directory in between: once more.
            let put = || {
                std::fs::create_dir_all(&dir)?;
                std::fs::write(dir.join(&id), &data)
            };
            put().or_else(|_| put()).map_err(|e| io_err(&key, e))
        })
        .await
    }

    async fn commit_blocks(
        &self,
        key: &str,
        blocks: &[String],
        opts: &PutOptions,
    ) -> StoreResult<Committed> {
        let (root, dir, key) = (self.root.clone(), self.staging(key), key.to_string());
        let opts = opts.clone();
        let ids: Vec<String> = blocks.iter().map(|b| hex(b)).collect();
        blocking(move || {
            for id in &ids {
                if !dir.join(id).is_file() {
                    return Err(StoreError::BlocksMissing(format!(
                        "{key}: a block was not staged"
                    )));
                }
            }
            let done = replace_with(&root, &key, &opts, |f| {
                for id in &ids {
                    std::io::copy(&mut File::open(dir.join(id))?, f)?;
                }
                Ok(())
            })?;
            // Only this commit's blocks: another writer of the same name may be staging its own.
            for id in &ids {
                let _ = std::fs::remove_file(dir.join(id));
            }
            let _ = std::fs::remove_dir(&dir);
            Ok(done)
        })
        .await
    }

    async fn put(&self, key: &str, data: Bytes, opts: &PutOptions) -> StoreResult<Committed> {
        let (root, key, opts) = (self.root.clone(), key.to_string(), opts.clone());
        blocking(move || replace_with(&root, &key, &opts, |f| std::io::Write::write_all(f, &data)))
            .await
    }

    /// Times are the file's own; modes and owners are kept beside it (`store_owners`).
    async fn set_metadata(&self, key: &str, meta: &super::Metadata) -> StoreResult<Committed> {
        let (path, key) = (self.path(key), key.to_string());
        let mtime = super::posix::PosixAttrs::from_metadata(meta).mtime;
        let meta = meta.clone();
        blocking(move || {
            store_owners(&path, &meta);
            let f = File::options()
                .write(true)
                .open(&path)
                .map_err(|e| io_err(&key, e))?;
            if let Some(t) = mtime {
                f.set_modified(t).map_err(|e| io_err(&key, e))?;
            }
            let m = f.metadata().map_err(|e| io_err(&key, e))?;
            Ok(Committed {
                etag: etag(&m),
                mtime: m.modified().unwrap_or(std::time::UNIX_EPOCH),
            })
        })
        .await
    }

    async fn make_dir(&self, key: &str, _meta: &super::Metadata) -> StoreResult<()> {
        let (path, key) = (self.path(key), key.to_string());
        blocking(move || std::fs::create_dir(&path).map_err(|e| io_err(&key, e))).await
    }

    async fn remove_dir(&self, key: &str) -> StoreResult<()> {
        let (path, key) = (self.path(key), key.to_string());
        blocking(move || match std::fs::remove_dir(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r.map_err(|e| io_err(&key, e)),
        })
        .await
    }

    async fn copy(&self, from: &str, to: &str) -> StoreResult<()> {
        let (root, src, to) = (self.root.clone(), self.path(from), to.to_string());
        let from = from.to_string();
        blocking(move || {
            let mut input = File::open(&src).map_err(|e| io_err(&from, e))?;
            // A copy keeps the metadata, as Copy Blob does.
            let opts = PutOptions {
                metadata: owners_of(&src),
                ..PutOptions::default()
            };
            replace_with(&root, &to, &opts, |f| {
                std::io::copy(&mut input, f).map(|_| ())
            })
            .map(|_| ())
        })
        .await
    }

    async fn hierarchical(&self) -> bool {
        true
    }

    async fn rename(&self, from: &str, to: &str) -> StoreResult<()> {
        let (src, dst, key) = (self.path(from), self.path(to), from.to_string());
        blocking(move || std::fs::rename(&src, &dst).map_err(|e| io_err(&key, e))).await
    }

    async fn dir_exists(&self, prefix: &str) -> StoreResult<bool> {
        let path = self.path(prefix);
        blocking(move || Ok(std::fs::metadata(&path).is_ok_and(|m| m.is_dir()))).await
    }

    async fn probe(&self) -> StoreResult<()> {
        let root = self.root.clone();
        blocking(move || match std::fs::metadata(&root) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(StoreError::Invalid(format!(
                "{} is not a directory",
                root.display()
            ))),
            Err(e) => Err(StoreError::NoContainer(format!(
                "directory {}: {e}",
                root.display()
            ))),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> super::super::Metadata {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// chmod and chown through a mount of a local lake, `upload` and copies: the mode and
    /// owners come back from every way of reading the lake, and the file's own stay.
    #[tokio::test]
    async fn modes_and_owners_set_are_kept_beside_the_file_and_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path());
        let set = meta(&[("mode", "755"), ("uid", "1234"), ("gid", "99")]);
        let opts = PutOptions {
            metadata: set.clone(),
            ..PutOptions::default()
        };
        s.put("a", Bytes::from_static(b"x"), &opts).await.unwrap();
        s.put("plain", Bytes::from_static(b"y"), &PutOptions::default())
            .await
            .unwrap();
        assert_eq!(s.head("a").await.unwrap().unwrap().metadata, set);
        assert!(s.head("plain").await.unwrap().unwrap().metadata.is_empty());
        s.set_metadata("plain", &meta(&[("mode", "751")]))
            .await
            .unwrap();
        s.copy("a", "b").await.unwrap();
        let page = s.list_page("", None).await.unwrap();
        let got: Vec<_> = page
            .objects
            .iter()
            .map(|o| (o.key.as_str(), o.metadata.get("mode").map(String::as_str)))
            .collect();
        assert_eq!(
            got,
            [
                ("a", Some("755")),
                ("b", Some("755")),
                ("plain", Some("751"))
            ]
        );
        let own = std::fs::metadata(dir.path().join("plain")).unwrap();
        assert_ne!(
            own.mode() & 0o777,
            0o751,
            "the file's own mode is left alone"
        );
    }
}
