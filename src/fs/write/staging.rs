//! The staging file of a write: the file's whole content on a local disk, and beside it a
//! sidecar naming where it goes and whether the lake already has it.
//!
//! `ID.data` holds the bytes; `ID.target` holds the lake, the key and, once the lake holds
//! exactly these bytes, a third line `uploaded`. The data file carries a lock while a handle
//! uses it, so the next mount can tell what a dead daemon left behind: an unlocked file
//! whose sidecar does not say `uploaded` never reached the lake.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const UPLOADED: &str = "uploaded";
const PARTIAL: &str = "partial-over ";

pub struct StagedFile {
    file: File,
    dir: PathBuf,
    id: String,
    /// `ID.data`; a new name when the old one was removed under us (see [`StagedFile::keep`]).
    path: Mutex<PathBuf>,
    /// Lake and key, as written to the sidecar; `None` once removed, so a late rename of the
    /// handle cannot write a sidecar for data that is gone.
    target: Mutex<Option<(String, String)>>,
    /// The ETag of the lake object whose unchanged blocks this file lacks (holes), while it
    /// lacks any: the sidecar says so, and such a file is never offered for upload.
    partial: Mutex<Option<String>>,
}

impl StagedFile {
    /// A new, empty staging file for `key` of `lake`. Nothing is left behind if this fails
    /// (a full disk gives ENOSPC, not a stray empty file that later mounts report).
    pub fn create(
        dir: &Path,
        id: &str,
        lake: &str,
        key: &str,
        uploaded: bool,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        // Staged data is the user's file content: private, like the block cache.
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let path = dir.join(format!("{id}.data"));
        // The sidecar first: a daemon killed in between leaves no data file that names no
        // target (the next mount would report it as lost data).
        write_private(
            &sidecar_of(&path),
            target_text(lake, key, uploaded, None).as_bytes(),
        )?;
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_file(sidecar_of(&path));
                return Err(e);
            }
        };
        // Held while the handle lives and dropped by the kernel when the process dies however
        // it dies. Only the leftover report needs it: a file system without locks must not
        // stop writes.
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            tracing::debug!("cannot lock {}: {e}", path.display());
        }
        Ok(StagedFile {
            file,
            dir: dir.to_path_buf(),
            id: id.to_string(),
            path: Mutex::new(path),
            target: Mutex::new(Some((lake.to_string(), key.to_string()))),
            partial: Mutex::new(None),
        })
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn path(&self) -> PathBuf {
        self.path.lock().unwrap().clone()
    }

    pub fn sidecar(&self) -> PathBuf {
        sidecar_of(&self.path())
    }

    /// Records whether the lake holds exactly these bytes. Must say `false` before a change
    /// is acknowledged: a daemon killed after it leaves a file the next mount reports.
    pub fn mark(&self, uploaded: bool) -> std::io::Result<()> {
        let target = self.target.lock().unwrap();
        let Some((lake, key)) = target.as_ref() else {
            return Ok(());
        };
        let partial = self.partial.lock().unwrap().clone();
        write_private(
            &self.sidecar(),
            target_text(lake, key, uploaded, partial.as_deref()).as_bytes(),
        )
    }

    pub fn is_partial(&self) -> bool {
        self.partial.lock().unwrap().is_some()
    }

    /// Records that the file lacks the unchanged blocks of lake object version `etag`
    /// (`None`: it holds every byte again); the sidecar says so before the caller goes on.
    pub fn set_partial(&self, etag: Option<&str>, uploaded: bool) -> std::io::Result<()> {
        *self.partial.lock().unwrap() = etag.map(str::to_string);
        self.mark(uploaded)
    }

    /// The file was renamed while open: the sidecar names the new key.
    pub fn retarget(&self, key: &str, uploaded: bool) {
        if let Some(t) = self.target.lock().unwrap().as_mut() {
            t.1 = key.to_string();
        }
        let _ = self.mark(uploaded);
    }

    /// Makes sure the data has a name in the staging directory, for someone to recover: when
    /// the file (or the whole directory) was removed while we held it open, its content is
    /// copied out of the open descriptor to a new name. Returns where the data is.
    pub fn keep(&self) -> std::io::Result<PathBuf> {
        let path = self.path();
        let ours = self.file.metadata()?;
        if std::fs::metadata(&path).is_ok_and(|m| m.dev() == ours.dev() && m.ino() == ours.ino()) {
            return Ok(path);
        }
        std::fs::create_dir_all(&self.dir)?;
        // Copied to a temporary name and renamed: whoever reads the kept copy (a recovery
        // running while the handle is still open) sees a whole one, never one being written.
        let fresh = self.dir.join(format!("{}-kept.data", self.id));
        let tmp = self.dir.join(format!("{}-kept.partial", self.id));
        let copied = (|| {
            use std::io::Seek;
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            let mut input = self.file.try_clone()?;
            input.seek(std::io::SeekFrom::Start(0))?;
            std::io::copy(&mut input, &mut out)?;
            out.sync_all()?;
            // The kept copy's sidecar before the copy itself, so it never lacks one.
            if let Some((lake, key)) = self.target.lock().unwrap().as_ref() {
                write_private(
                    &sidecar_of(&fresh),
                    target_text(lake, key, false, None).as_bytes(),
                )?;
            }
            std::fs::rename(&tmp, &fresh)
        })();
        if let Err(e) = copied {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        *self.path.lock().unwrap() = fresh.clone();
        Ok(fresh)
    }

    /// Removes the data and its sidecar (the lake has it, or nobody wants it).
    pub fn remove(&self) {
        let mut target = self.target.lock().unwrap();
        *target = None;
        let path = self.path();
        // The data first: a daemon killed in between leaves a sidecar alone, which names no
        // data and is never reported, not data without its target.
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(sidecar_of(&path));
    }
}

fn sidecar_of(data: &Path) -> PathBuf {
    data.with_extension("target")
}

/// A staging file no handle holds any more whose data never reached the lake (the upload
/// failed, or the daemon died before the commit).
#[derive(Debug, PartialEq, Eq)]
pub struct Leftover {
    /// `STAGING/ID.data`.
    pub data: PathBuf,
    /// Where it was meant to go: the lake URL and the path below it (from `ID.target`).
    pub target: String,
    pub size: u64,
    /// Only the blocks changed over this version (ETag) of the target: holes elsewhere, so
    /// not a file to upload as it is.
    pub partial: Option<String>,
}

/// The staging files in `dir` that are not being written and were never uploaded. Files a
/// dead daemon left after their upload succeeded are removed on the way.
pub fn leftovers(dir: &Path) -> Vec<Leftover> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let data = e.path();
        if data.extension().is_none_or(|x| x != "data") {
            continue;
        }
        let Ok(f) = File::open(&data) else { continue };
        // SAFETY: flock on a descriptor we own; closing it (drop) releases the lock.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } != 0 {
            continue;
        }
        let mut text = String::new();
        let _ = File::open(sidecar_of(&data)).and_then(|mut s| s.read_to_string(&mut text));
        let lines: Vec<&str> = text.lines().collect();
        if lines.iter().skip(2).any(|l| *l == UPLOADED) {
            let _ = std::fs::remove_file(sidecar_of(&data));
            let _ = std::fs::remove_file(&data);
            continue;
        }
        let target = match (lines.first(), lines.get(1)) {
            (Some(lake), Some(key)) => {
                let sep = if lake.ends_with('/') { "" } else { "/" };
                format!("{lake}{sep}{key}")
            }
            _ => "an unknown target".to_string(),
        };
        let size = f.metadata().map_or(0, |m| m.len());
        let partial = lines
            .iter()
            .skip(2)
            .find_map(|l| l.strip_prefix(PARTIAL))
            .map(str::to_string);
        out.push(Leftover {
            data,
            target,
            size,
            partial,
        });
    }
    out.sort_by(|a, b| a.data.cmp(&b.data));
    out
}

/// What a sidecar says: the lake, the key, `uploaded` while the lake holds these bytes, and
/// `partial-over ETAG` while the file lacks that version's unchanged blocks.
fn target_text(lake: &str, key: &str, uploaded: bool, partial: Option<&str>) -> String {
    let mut text = format!("{lake}\n{key}\n");
    if uploaded {
        text.push_str(UPLOADED);
        text.push('\n');
    }
    if let Some(etag) = partial {
        text.push_str(&format!("{PARTIAL}{etag}\n"));
    }
    text
}

/// Writes a sidecar whole or not at all (a temporary name, then rename): a daemon killed
/// while it writes leaves the old sidecar, never an empty or partial one.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("target-{n}"));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_uploaded_file_left_by_a_dead_daemon_is_removed_not_reported() {
        let dir = tempfile::tempdir().unwrap();
        let s = StagedFile::create(dir.path(), "a", "file:///lake", "k", false).unwrap();
        let path = s.path();
        s.mark(true).unwrap();
        drop(s);
        assert_eq!(leftovers(dir.path()), []);
        assert!(!path.exists(), "the clean copy is gone");
    }

    #[test]
    fn nothing_is_written_for_a_removed_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = StagedFile::create(dir.path(), "a", "file:///lake", "k", false).unwrap();
        s.remove();
        // A rename of the handle that comes after its last close.
        s.retarget("k2", true);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_file_changed_after_its_upload_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let s = StagedFile::create(dir.path(), "a", "file:///lake", "k", true).unwrap();
        s.mark(false).unwrap();
        let path = s.path();
        drop(s);
        let left = leftovers(dir.path());
        assert_eq!(left.len(), 1);
        assert_eq!(
            (left[0].data.clone(), left[0].target.as_str()),
            (path, "file:///lake/k")
        );
    }

    #[test]
    fn data_whose_directory_was_removed_is_kept_under_a_new_name() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join("staging");
        let s = StagedFile::create(&staging, "a", "file:///lake", "k", false).unwrap();
        std::os::unix::fs::FileExt::write_all_at(s.file(), b"precious", 0).unwrap();
        std::fs::remove_dir_all(&staging).unwrap();
        let kept = s.keep().unwrap();
        assert_eq!(std::fs::read(&kept).unwrap(), b"precious");
        assert_eq!(s.path(), kept);
        drop(s);
        let left = leftovers(&staging);
        assert_eq!(left.len(), 1, "the next mount names it");
        assert_eq!(left[0].data, kept);
    }
}
