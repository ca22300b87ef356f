//! `lakemount download`: everything below a lake prefix (or one blob) into a local directory,
//! files and blocks in parallel. Each file is written to a temporary name, checked against
//! the blob's Content-MD5 when it has one, and renamed into place: a failed download leaves
//! no partial file under the real name.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use futures::{StreamExt, TryStreamExt};

use super::progress::Progress;
use super::tree;
use super::Report;
use crate::cli::TransferArgs;
use crate::store::{DynStore, ObjectInfo};

/// Where each object goes: `dest/KEY` (for a single blob, `dest` or `dest/NAME` as `cp` would).
pub struct Item {
    pub object: ObjectInfo,
    pub path: PathBuf,
}

pub async fn download(
    store: DynStore,
    items: Vec<Item>,
    threads: usize,
    block_size: u64,
    overwrite: bool,
) -> Result<Report> {
    let mut todo = Vec::new();
    let mut conflicts = Vec::new();
    let mut skipped = 0;
    for it in items {
        match std::fs::metadata(&it.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => todo.push(it),
            Err(e) => bail!("cannot check {}: {e}", it.path.display()),
            Ok(m) if m.is_dir() => bail!("{} is a directory", it.path.display()),
            Ok(m) => {
                let same = m.len() == it.object.size
                    && it.object.content_md5.is_some()
                    && tree::md5_file(&it.path).ok() == it.object.content_md5;
                if same {
                    skipped += 1;
                } else if overwrite {
                    todo.push(it);
                } else {
                    conflicts.push(it.path.display().to_string());
                }
            }
        }
    }
    super::refuse(conflicts)?;
    let total: u64 = todo.iter().map(|i| i.object.size).sum();
    let progress = Progress::new("download", todo.len() as u64, total);
    Ok(super::run_all(
        todo,
        threads,
        &progress,
        skipped,
        |it| it.object.key.clone(),
        |it| it.object.size,
        |it| {
            let (store, progress) = (store.clone(), progress.clone());
            async move { download_file(&store, &it, threads, block_size, &progress).await }
        },
    )
    .await)
}

fn partial_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.lakemount-partial"))
}

async fn download_file(
    store: &DynStore,
    it: &Item,
    threads: usize,
    block_size: u64,
    progress: &Arc<Progress>,
) -> Result<()> {
    let o = &it.object;
    if let Some(dir) = it.path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = partial_path(&it.path);
    let file = Arc::new(
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?,
    );
    let result = async {
        let blocks = o.size.div_ceil(block_size);
        futures::stream::iter(0..blocks)
            .map(|i| {
                let (store, file, progress) = (store.clone(), file.clone(), progress.clone());
                async move {
                    let range = i * block_size..((i + 1) * block_size).min(o.size);
                    let want = range.end - range.start;
                    let data = store.get_range(&o.key, range.clone(), &o.etag).await?;
                    if data.len() as u64 != want {
                        bail!("short read at {}", range.start);
                    }
                    tokio::task::spawn_blocking(move || file.write_all_at(&data, range.start))
                        .await??;
                    progress.add_bytes(want);
                    Ok(())
                }
            })
            .buffer_unordered(threads.max(1))
            .try_collect::<()>()
            .await?;
        file.sync_all()?;
        if let Some(want) = &o.content_md5 {
            let got = tree::md5_file(&tmp)?;
            if &got != want {
                bail!("content MD5 mismatch (lake says {want}, received {got})");
            }
        }
        // The times and modes `upload` (or rclone) stored, else the blob's Last-Modified.
        let stored = crate::store::posix::PosixAttrs::from_metadata(&o.metadata);
        let _ = file.set_modified(stored.mtime.unwrap_or(o.mtime));
        if let Some(mode) = stored.mode {
            use std::os::unix::fs::PermissionsExt;
            let _ = file.set_permissions(std::fs::Permissions::from_mode(mode));
        }
        std::fs::rename(&tmp, &it.path)
            .with_context(|| format!("cannot rename into {}", it.path.display()))?;
        Ok(())
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

pub fn run(args: &TransferArgs) -> Result<()> {
    let block_size = crate::config::block_size(args.block_size.as_deref())?;
    let filter = tree::Filter::new(&args.include, &args.exclude)?;
    let dest = PathBuf::from(&args.dest);
    let (rt, store, shown) = super::open_lake(&args.src, args)?;
    let mut objects = rt.block_on(tree::lake_files(&store, args.threads))?;
    let (store, items) = if objects.is_empty() {
        // Not a directory: maybe one blob.
        let lake = crate::lake_url::LakeUrl::parse(&args.src).map_err(|e| anyhow!(e))?;
        let Some((parent, name)) = lake.split_last() else {
            bail!("nothing to download below {shown}");
        };
        let (_, parent_store, _) = super::open_lake_url(&parent, args)?;
        let Some(o) = rt
            .block_on(parent_store.head(&name))?
            .filter(|o| !o.is_dir_marker)
        else {
            bail!("nothing to download: {shown} is neither a file nor a directory with files");
        };
        let path = if dest.is_dir() {
            dest.join(&name)
        } else {
            dest.clone()
        };
        (parent_store, vec![Item { object: o, path }])
    } else {
        objects.retain(|o| filter.admits(&o.key));
        let items = objects
            .into_iter()
            .map(|o| Item {
                path: dest.join(&o.key),
                object: o,
            })
            .collect();
        (store, items)
    };
    let started = std::time::Instant::now();
    let r = rt.block_on(download(
        store,
        items,
        args.threads,
        block_size,
        args.overwrite,
    ))?;
    r.finish(
        "downloaded",
        &format!("from {shown}"),
        started,
        " to download",
    )
}
