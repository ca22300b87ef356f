//! The two sides of a bulk transfer as lists of files: a local directory tree (with
//! --include/--exclude) and everything below a lake prefix.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use futures::{StreamExt, TryStreamExt};
use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::fs::names;
use crate::store::{list_all, DynStore, ObjectInfo};

/// Which relative paths take part: all of `include` (if any) must let a path in, none of
/// `exclude` may match it. Patterns match the whole relative path (`**/*.jpg`, `raw/**`).
pub struct Filter {
    include: Option<GlobSet>,
    exclude: GlobSet,
}

fn globs(patterns: &[String], flag: &str) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(Glob::new(p).map_err(|e| anyhow!("--{flag} {p:?}: {e}"))?);
    }
    b.build().map_err(|e| anyhow!("--{flag}: {e}"))
}

impl Filter {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Filter> {
        Ok(Filter {
            include: if include.is_empty() {
                None
            } else {
                Some(globs(include, "include")?)
            },
            exclude: globs(exclude, "exclude")?,
        })
    }

    pub fn admits(&self, rel: &str) -> bool {
        self.include.as_ref().is_none_or(|i| i.is_match(rel)) && !self.exclude.is_match(rel)
    }
}

/// A local file to upload, or a local target of a download.
#[derive(Clone, Debug)]
pub struct LocalFile {
    /// `/`-separated path relative to the transfer root.
    pub rel: String,
    pub path: PathBuf,
    pub size: u64,
}

/// The files below `root` (or `root` itself when it is a file, named by its file name),
/// sorted by relative path. Symbolic links to files are followed; links to directories are
/// not (they may loop), and are reported.
pub fn local_files(root: &Path, filter: &Filter) -> Result<Vec<LocalFile>> {
    let meta =
        std::fs::metadata(root).with_context(|| format!("cannot read {}", root.display()))?;
    if meta.is_file() {
        let name = root
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("{}: not a UTF-8 file name", root.display()))?;
        let f = LocalFile {
            rel: name.to_string(),
            path: root.to_path_buf(),
            size: meta.len(),
        };
        return Ok(if filter.admits(name) { vec![f] } else { vec![] });
    }
    let mut out = Vec::new();
    let mut dirs = VecDeque::from([(root.to_path_buf(), String::new())]);
    while let Some((dir, rel)) = dirs.pop_front() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                bail!(
                    "{}: not a UTF-8 file name (blob names are UTF-8)",
                    path.display()
                );
            };
            let child = format!("{rel}{name}");
            let ft = entry.file_type()?;
            if ft.is_dir() {
                dirs.push_back((path, format!("{child}/")));
                continue;
            }
            let meta = match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => m,
                Ok(_) if ft.is_symlink() => {
                    tracing::warn!("skipping {}: a link to a directory", path.display());
                    continue;
                }
                Ok(_) => continue, // sockets, fifos, devices
                Err(e) => bail!("cannot read {}: {e}", path.display()),
            };
            if filter.admits(&child) {
                out.push(LocalFile {
                    rel: child,
                    path,
                    size: meta.len(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

/// Every object below the store's root (directory markers and names no file system can
/// hold left out), keys relative to the root, sorted. Directories are listed `threads` at a time.
pub async fn lake_files(store: &DynStore, threads: usize) -> Result<Vec<ObjectInfo>> {
    let mut files = Vec::new();
    let mut level = vec![String::new()];
    while !level.is_empty() {
        let pages: Vec<_> = futures::stream::iter(level.drain(..))
            .map(|prefix| {
                let store = store.clone();
                async move { list_all(store.as_ref(), &prefix).await }
            })
            .buffer_unordered(threads.max(1))
            .try_collect()
            .await?;
        for page in pages {
            for p in page.prefixes {
                let name = p
                    .trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .unwrap_or_default();
                if names::invalid_reason(name).is_none() {
                    level.push(p);
                }
            }
            for o in page.objects {
                let name = o.key.rsplit('/').next().unwrap_or_default();
                if o.is_dir_marker || names::invalid_reason(name).is_some() {
                    continue;
                }
                files.push(o);
            }
        }
    }
    files.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(files)
}

/// MD5 of a local file, base64 as Azure shows Content-MD5.
pub fn md5_file(path: &Path) -> std::io::Result<String> {
    use md5::{Digest, Md5};
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(crate::store::md5_base64(&h.finalize().into()))
}

/// Targets that exist and are not identical, refused without --overwrite (exit code 3).
#[derive(Debug)]
pub struct Conflicts {
    pub total: usize,
    pub first: Vec<String>,
    pub hint: &'static str,
}

impl std::fmt::Display for Conflicts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} target(s) exist and differ; nothing was transferred ({}): {}{}",
            self.total,
            self.hint,
            self.first.join(", "),
            if self.total > self.first.len() {
                ", ..."
            } else {
                ""
            }
        )
    }
}

impl std::error::Error for Conflicts {}

/// How many conflicting names a refusal lists.
pub const SHOWN_CONFLICTS: usize = 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_whole_relative_paths() {
        let f = Filter::new(&["**/*.jpg".into()], &["tmp/**".into()]).unwrap();
        assert!(f.admits("a/b/c.jpg"));
        assert!(f.admits("c.jpg"));
        assert!(!f.admits("a/c.png"));
        assert!(!f.admits("tmp/x.jpg"));
        assert!(Filter::new(&["[".into()], &[]).is_err());
    }

    #[test]
    fn local_trees_list_files_with_relative_names() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/x.jpg"), "x").unwrap();
        std::fs::write(d.path().join("top.txt"), "top").unwrap();
        std::os::unix::fs::symlink(d.path().join("a"), d.path().join("loop")).unwrap();
        let all = local_files(d.path(), &Filter::new(&[], &[]).unwrap()).unwrap();
        let rels: Vec<_> = all.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(rels, ["a/b/x.jpg", "top.txt"]);
        let one = local_files(&d.path().join("top.txt"), &Filter::new(&[], &[]).unwrap()).unwrap();
        assert_eq!(one[0].rel, "top.txt");
        assert_eq!(one[0].size, 3);
    }
}
