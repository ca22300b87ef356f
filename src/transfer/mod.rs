//! Bulk data movement between the lake and local disks, with progress reporting.

pub mod download;
pub mod progress;
pub mod tree;
pub mod upload;
pub mod warm;

use anyhow::{anyhow, Result};

use crate::cli::TransferArgs;
use crate::store::{self, DynStore};

/// What a bulk transfer did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub files: u64,
    pub bytes: u64,
    /// Identical targets (same size and Content-MD5) left alone.
    pub skipped: u64,
    /// Files that failed, with the reason, sorted.
    pub failed: Vec<(String, String)>,
}

impl Report {
    /// Tallies per-file results (`Err` carries the reason).
    fn tally(results: Vec<(String, Result<(), String>)>, bytes: u64, skipped: u64) -> Report {
        let mut report = Report {
            bytes,
            skipped,
            ..Report::default()
        };
        for (name, r) in results {
            match r {
                Ok(()) => report.files += 1,
                Err(e) => report.failed.push((name, e)),
            }
        }
        report.failed.sort();
        report
    }

    /// Prints the summary line, and the first failures on stderr; an error if any failed.
    fn finish(
        &self,
        verb: &str,
        place: &str,
        started: std::time::Instant,
        hint: &str,
    ) -> Result<()> {
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        let mib = self.bytes as f64 / 1048576.0;
        println!(
            "{verb} {} files, {mib:.1} MiB {place} in {secs:.1} s ({:.1} MiB/s); {} identical files skipped",
            self.files,
            mib / secs,
            self.skipped
        );
        if self.failed.is_empty() {
            return Ok(());
        }
        for (name, e) in self.failed.iter().take(tree::SHOWN_CONFLICTS) {
            eprintln!("lakemount: failed: {name}: {e}");
        }
        Err(anyhow!(
            "{} of {} files failed{hint}",
            self.failed.len(),
            self.failed.len() as u64 + self.files
        ))
    }
}

/// Runs `work` on every item, `threads` at a time, counting finished files and their bytes
/// (`size_of`) on `progress`; `name_of` names an item in the report.
async fn run_all<T, Fut>(
    items: Vec<T>,
    threads: usize,
    progress: &std::sync::Arc<progress::Progress>,
    skipped: u64,
    name_of: impl Fn(&T) -> String,
    size_of: impl Fn(&T) -> u64,
    work: impl Fn(T) -> Fut,
) -> Report
where
    Fut: std::future::Future<Output = Result<()>>,
{
    use futures::StreamExt;
    let done = std::sync::atomic::AtomicU64::new(0);
    let results: Vec<(String, Result<(), String>)> = futures::stream::iter(items)
        .map(|it| {
            let (name, size) = (name_of(&it), size_of(&it));
            let fut = work(it);
            let done = &done;
            async move {
                let r = fut.await;
                if r.is_ok() {
                    done.fetch_add(size, std::sync::atomic::Ordering::Relaxed);
                    progress.file_done();
                }
                (name, r.map_err(|e| format!("{e:#}")))
            }
        })
        .buffer_unordered(threads.max(1))
        .collect()
        .await;
    progress.finish();
    Report::tally(results, done.into_inner(), skipped)
}

/// Refuses the whole transfer when targets exist and differ (exit code 3).
fn refuse(mut conflicts: Vec<String>) -> Result<()> {
    if conflicts.is_empty() {
        return Ok(());
    }
    let total = conflicts.len();
    conflicts.truncate(tree::SHOWN_CONFLICTS);
    Err(tree::Conflicts {
        total,
        first: conflicts,
        hint: "use --overwrite to replace them",
    }
    .into())
}

/// The runtime and store of a transfer's lake side, checked to answer (clear errors for a
/// wrong endpoint, missing container or refused credentials before any work starts).
pub fn open_lake(
    url: &str,
    args: &TransferArgs,
) -> Result<(tokio::runtime::Runtime, DynStore, String)> {
    let lake = crate::lake_url::LakeUrl::parse(url).map_err(|e| anyhow!(e))?;
    open_lake_url(&lake, args)
}

/// [`open_lake`] of a parsed URL (one that may carry a SAS).
pub fn open_lake_url(
    lake: &crate::lake_url::LakeUrl,
    args: &TransferArgs,
) -> Result<(tokio::runtime::Runtime, DynStore, String)> {
    let (rt, store, shown) = open_store(lake, &args.access, "reach")?;
    rt.block_on(store.probe())
        .map_err(|e| crate::mount::explain_for("reach", &shown, e))?;
    Ok((rt, store, shown))
}

/// A runtime and the store of `lake` as `access` says to reach it, not yet probed (the
/// caller may wrap it first); errors are one line, "cannot VERB LAKE: ...".
pub fn open_store(
    lake: &crate::lake_url::LakeUrl,
    access: &crate::cli::LakeAccess,
    verb: &str,
) -> Result<(tokio::runtime::Runtime, DynStore, String)> {
    let shown = lake.to_string();
    let rt = crate::mount::runtime()?;
    let store = {
        let _g = rt.enter();
        store::open(
            lake,
            access.endpoint.clone(),
            access.auth.unwrap_or_default(),
            crate::config::deadlines(&access.timeouts)?,
        )
        .map_err(|e| crate::mount::explain_for(verb, &shown, e))?
    };
    Ok((rt, store, shown))
}
