//! Snapshots of a lake: `lakemount snapshot` writes a manifest of every object below a lake
//! URL (`manifest`); `mount --manifest` and `warm --manifest` see exactly that tree
//! (`store`), `snapshot diff` compares two manifests and `snapshot verify` a manifest with
//! the lake as it is now.

pub mod manifest;
pub mod store;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use futures::stream::{FuturesUnordered, StreamExt};

use crate::cli::{SnapshotAction, SnapshotArgs};
use crate::lake_url::LakeUrl;
use crate::store::{list_all, DynStore};
use manifest::{Diff, Entry, Manifest};

/// Every object below the lake root, listing up to `threads` directories at once; `seen`
/// counts the objects found so far (for progress).
pub async fn list_tree(store: &DynStore, threads: usize, seen: &AtomicU64) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut pending = vec![String::new()];
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < threads.max(1) {
            let Some(prefix) = pending.pop() else { break };
            let store = store.clone();
            running.push(async move {
                let page = list_all(store.as_ref(), &prefix).await;
                (prefix, page)
            });
        }
        let Some((prefix, page)) = running.next().await else {
            break;
        };
        let page = page.map_err(|e| anyhow!("listing {prefix:?}: {e}"))?;
        seen.fetch_add(page.objects.len() as u64, Ordering::Relaxed);
        entries.extend(page.objects.iter().map(Entry::from_info));
        pending.extend(page.prefixes);
    }
    Ok(entries)
}

fn open_lake(
    lake: &LakeUrl,
    access: &crate::cli::LakeAccess,
) -> Result<(tokio::runtime::Runtime, DynStore)> {
    let (rt, store, shown) = crate::transfer::open_store(lake, access, "snapshot")?;
    rt.block_on(store.probe())
        .map_err(|e| crate::mount::explain_for("snapshot", &shown, e))?;
    Ok((rt, store))
}

/// Lists the lake with a spinner on stderr (a terminal only).
fn take(rt: &tokio::runtime::Runtime, store: &DynStore, threads: usize) -> Result<Vec<Entry>> {
    let seen = Arc::new(AtomicU64::new(0));
    let bar = indicatif::ProgressBar::new_spinner();
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let listing = {
        let (seen, bar) = (seen.clone(), bar.clone());
        async move {
            let ticker = async {
                loop {
                    bar.set_message(format!("listing: {} objects", seen.load(Ordering::Relaxed)));
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            };
            tokio::select! {
                r = list_tree(store, threads, &seen) => r,
                _ = ticker => unreachable!(),
            }
        }
    };
    let r = rt.block_on(listing);
    bar.finish_and_clear();
    r
}

pub fn run(args: &SnapshotArgs) -> Result<()> {
    match &args.action {
        Some(SnapshotAction::Diff { a, b, json }) => diff(a, b, *json),
        Some(SnapshotAction::Verify(v)) => verify(v),
        None => create(args),
    }
}

fn create(args: &SnapshotArgs) -> Result<()> {
    let Some(lake) = &args.lake else {
        bail!("no lake URL given: lakemount snapshot LAKE_URL -o FILE (or snapshot diff / verify)");
    };
    let Some(output) = &args.output else {
        bail!("no manifest file given: -o FILE");
    };
    let lake = LakeUrl::parse(lake).map_err(|e| anyhow!(e))?;
    let (rt, store) = open_lake(&lake, &args.access)?;
    let started = std::time::Instant::now();
    let entries = take(&rt, &store, args.threads)?;
    let m = Manifest::new(&lake.to_string(), entries)?;
    m.write(output)?;
    let bytes: u64 = m.entries.iter().map(|e| e.size).sum();
    println!(
        "snapshot {} of {}: {} objects, {:.1} MiB, in {:.1} s; manifest {}",
        m.header.identity,
        m.header.lake,
        m.header.objects,
        bytes as f64 / 1048576.0,
        started.elapsed().as_secs_f64(),
        output.display()
    );
    Ok(())
}

fn print_diff(d: &Diff) {
    for (sign, keys) in [("+", &d.added), ("-", &d.removed), ("~", &d.changed)] {
        for k in keys {
            println!("{sign} {k}");
        }
    }
}

fn diff(a: &Path, b: &Path, json: bool) -> Result<()> {
    let (a, b) = (Manifest::load(a)?, Manifest::load(b)?);
    let d = Diff::of(&a.entries, &b.entries);
    if json {
        let out = serde_json::json!({
            "from": a.header.identity,
            "to": b.header.identity,
            "added": d.added,
            "removed": d.removed,
            "changed": d.changed,
        });
        println!("{out}");
    } else {
        println!("{} -> {}: {}", a.id(), b.id(), d.summary());
        print_diff(&d);
    }
    Ok(())
}

fn verify(v: &crate::cli::VerifyArgs) -> Result<()> {
    let m = Manifest::load(&v.manifest)?;
    let lake = LakeUrl::parse(&m.header.lake).map_err(|e| anyhow!(e))?;
    let (rt, store) = open_lake(&lake, &v.access)?;
    let mut now = take(&rt, &store, v.threads)?;
    now.sort_by(|a, b| a.key.cmp(&b.key));
    let d = Diff::of(&m.entries, &now);
    if d.is_empty() {
        println!(
            "the lake still holds snapshot {} ({} objects)",
            m.header.identity, m.header.objects
        );
        return Ok(());
    }
    print_diff(&d);
    bail!(
        "{} no longer holds snapshot {}: {}",
        m.header.lake,
        m.id(),
        d.summary()
    )
}

/// The lake a mount or warm of `manifest` reads (its header's), checking a lake given too.
pub fn lake_of(manifest: &Path, given: Option<&str>) -> Result<String> {
    let header = Manifest::load_header(manifest)?;
    if let Some(g) = given {
        let (a, b) = (
            LakeUrl::parse(g).map_err(|e| anyhow!(e))?.to_string(),
            LakeUrl::parse(&header.lake)
                .map_err(|e| anyhow!(e))?
                .to_string(),
        );
        if a != b {
            bail!(
                "the manifest {} is a snapshot of {b}, not of {a}",
                manifest.display()
            );
        }
        return Ok(g.to_string());
    }
    Ok(header.lake)
}
