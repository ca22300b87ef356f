//! `lakemount warm`: fill the disk block cache with a dataset before a job starts, so the
//! job's first epoch reads local disk instead of the network.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use futures::{StreamExt, TryStreamExt};

use super::progress::Progress;
use crate::cache::blocks::{block_range, object_key};
use crate::cache::disk::DiskCache;
use crate::cli::WarmArgs;
use crate::fs::listing::{self, EntryKind};
use crate::lake_url::LakeUrl;
use crate::metrics::Metrics;
use crate::reader::ObjectVersion;
use crate::store::{list_all, DynStore};

/// Every file below the lake root that a mount would show, with its version.
pub async fn visible_files(store: &DynStore) -> Result<Vec<ObjectVersion>> {
    let mut files = Vec::new();
    let mut dirs = VecDeque::from([String::new()]);
    while let Some(prefix) = dirs.pop_front() {
        let page = list_all(store.as_ref(), &prefix).await?;
        let (dir, skipped) = listing::build(&prefix, page);
        for s in skipped {
            tracing::warn!("skipping blob name {:?}: {}", s.key, s.reason);
        }
        for (name, kind) in dir.entries {
            match kind {
                EntryKind::Dir { .. } => dirs.push_back(format!("{prefix}{name}/")),
                EntryKind::File { size, etag, .. } => files.push(ObjectVersion {
                    key: format!("{prefix}{name}"),
                    etag,
                    size,
                }),
            }
        }
    }
    Ok(files)
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct WarmReport {
    pub files: u64,
    pub bytes: u64,
    /// Bytes that were in the cache already.
    pub cached_bytes: u64,
    pub gets: u64,
}

/// Puts every block of every visible file into `disk`, `threads` blocks at a time.
pub async fn warm(
    store: DynStore,
    disk: Arc<DiskCache>,
    block_size: u64,
    threads: usize,
) -> Result<WarmReport> {
    let files = visible_files(&store).await?;
    if files.is_empty() {
        return Err(anyhow!(
            "no files below {} (warm takes a directory)",
            store.describe()
        ));
    }
    let total: u64 = files.iter().map(|f| f.size).sum();
    let progress = Progress::new("warm", files.len() as u64, total);
    let (cached, gets) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let blocks = files.iter().flat_map(|f| {
        let n = f.size.div_ceil(block_size);
        (0..n).map(move |i| (f, i, i + 1 == n))
    });
    futures::stream::iter(blocks)
        .map(|(f, index, last)| {
            let (store, disk, progress) = (store.clone(), disk.clone(), progress.clone());
            let (cached, gets) = (cached.clone(), gets.clone());
            async move {
                let key = object_key(store.as_ref(), f, block_size);
                let range = block_range(block_size, f.size, index);
                let len = range.end - range.start;
                if disk.contains(&key, index) {
                    cached.fetch_add(len, Ordering::Relaxed);
                } else {
                    let data = store
                        .get_range(&f.key, range, &f.etag)
                        .await
                        .with_context(|| format!("reading {}", f.key))?;
                    gets.fetch_add(1, Ordering::Relaxed);
                    if data.len() as u64 != len {
                        return Err(anyhow!("{}: short read of block {index}", f.key));
                    }
                    tokio::task::spawn_blocking(move || disk.put(&key, index, &data)).await?;
                }
                progress.add_bytes(len);
                if last {
                    progress.file_done();
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(threads.max(1))
        .try_collect::<()>()
        .await?;
    // Empty files have no blocks but count as done.
    for _ in files.iter().filter(|f| f.size == 0) {
        progress.file_done();
    }
    progress.finish();
    Ok(WarmReport {
        files: files.len() as u64,
        bytes: total,
        cached_bytes: cached.load(Ordering::Relaxed),
        gets: gets.load(Ordering::Relaxed),
    })
}

pub fn run(args: &WarmArgs) -> Result<()> {
    let lake = match &args.manifest {
        Some(m) => crate::snapshot::lake_of(m, args.lake.as_deref())?,
        None => args
            .lake
            .clone()
            .ok_or_else(|| anyhow!("no lake URL given (LAKE_URL or --manifest FILE)"))?,
    };
    let lake = LakeUrl::parse(&lake).map_err(|e| anyhow!(e))?;
    let block_size = crate::config::block_size(args.block_size.as_deref())?;
    let size = crate::config::cache_size(args.cache_size.as_deref())?;
    let (rt, store, shown) = super::open_store(&lake, &args.access, "warm")?;
    // A snapshot: exactly its files, pinned to its ETags, without a listing.
    let store = match &args.manifest {
        Some(m) => crate::snapshot::store::ManifestStore::wrap(
            store,
            crate::snapshot::manifest::Manifest::load(m)?,
        ),
        None => store,
    };
    rt.block_on(store.probe())
        .map_err(|e| crate::mount::explain_for("warm", &shown, e))?;
    let disk = Arc::new(
        DiskCache::open(&args.cache_dir, size, Arc::new(Metrics::default()))
            .with_context(|| format!("cache directory {}", args.cache_dir.display()))?,
    );
    let started = std::time::Instant::now();
    let r = rt.block_on(warm(store, disk.clone(), block_size, args.threads))?;
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    let fetched = r.bytes - r.cached_bytes;
    println!(
        "warmed {shown}: {} files, {:.1} MiB ({:.1} MiB already cached) in {secs:.1} s, {:.1} MiB/s; cache {} now holds {:.1} MiB",
        r.files,
        r.bytes as f64 / 1048576.0,
        r.cached_bytes as f64 / 1048576.0,
        fetched as f64 / 1048576.0 / secs,
        args.cache_dir.display(),
        disk.stats().bytes as f64 / 1048576.0
    );
    if disk.stats().bytes < fetched {
        eprintln!("lakemount: warning: the dataset is larger than --cache-size; the first blocks were evicted");
    }
    Ok(())
}
