//! `lake-agent cost`: node-hours from task records (and bootstrap status files) times the
//! price of the VM size on dedicated or Spot nodes, per job; time lost to preemption (task
//! attempts that never finished) in rows of its own. Records come from status directories or
//! from the lake (`runs/` holds each task's records next to its output).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Result};
use serde::Deserialize;

use super::config::Prices;
use super::status::{
    AttemptRecord, BootstrapStatus, NodeInfo, TaskStatus, ATTEMPT_KIND, BOOTSTRAP_KIND, TASK_KIND,
};

/// The start tasks' time, billed like any other.
pub const BOOTSTRAP_ROW: &str = "(node bootstrap)";

#[derive(Debug, Default, PartialEq)]
pub struct Row {
    pub job: String,
    /// `lake: identity` of each snapshot the job's tasks were mounted from.
    pub snapshots: BTreeSet<String>,
    pub vm_size: String,
    /// `dedicated`, `spot` or `-` (not known: outside Batch, older records); with
    /// `, preempted` for attempts that a preemption (or a lost node) cut short.
    pub priority: String,
    pub nodes: BTreeSet<String>,
    pub tasks: BTreeSet<String>,
    pub node_hours: f64,
}

#[derive(Deserialize)]
struct Kind {
    kind: Option<String>,
}

/// Every record under `dirs` (recursively), as rows per (job, VM size). Files that are not
/// ours (a task's own JSON output) are skipped; files of ours that do not parse are reported.
pub fn collect(dirs: &[&Path]) -> Result<(Vec<Row>, Vec<String>)> {
    let mut rows = Rows::new();
    let mut warnings = Vec::new();
    let mut files = Vec::new();
    for d in dirs {
        if !d.is_dir() {
            bail!("{} is not a directory", d.display());
        }
        walk(d, &mut files);
    }
    files.sort();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let kind = serde_json::from_str::<Kind>(&text)
            .ok()
            .and_then(|k| k.kind)
            .unwrap_or_default();
        let rows = &mut rows;
        match kind.as_str() {
            TASK_KIND => match serde_json::from_str::<TaskStatus>(&text) {
                Ok(t) => {
                    let r = row(rows, &t.job_id, &t.node, false);
                    r.tasks.insert(t.task_id.clone());
                    r.snapshots.extend(
                        t.snapshots
                            .iter()
                            .map(|s| format!("{}: {}", s.lake, s.identity)),
                    );
                    r.node_hours += t.seconds / 3600.0;
                }
                Err(e) => warnings.push(format!("{}: {e}", f.display())),
            },
            // Finished attempts are counted by their task records.
            ATTEMPT_KIND => match serde_json::from_str::<AttemptRecord>(&text) {
                Ok(a) if a.finished_at.is_none() => {
                    let hours = hours_between(&a.started_at, &a.last_seen);
                    let r = row(rows, &a.job_id, &a.node, true);
                    r.tasks.insert(a.task_id.clone());
                    r.node_hours += hours;
                }
                Ok(_) => {}
                Err(e) => warnings.push(format!("{}: {e}", f.display())),
            },
            BOOTSTRAP_KIND => match serde_json::from_str::<BootstrapStatus>(&text) {
                Ok(b) => {
                    row(rows, BOOTSTRAP_ROW, &b.node, false).node_hours +=
                        b.timings.total_ms as f64 / 3_600_000.0;
                }
                Err(e) => warnings.push(format!("{}: {e}", f.display())),
            },
            _ => {}
        }
    }
    Ok((rows.into_values().collect(), warnings))
}

type Rows = BTreeMap<(String, String, String), Row>;

/// The row of `job` on `node`'s VM size and priority (`preempted`: time an attempt lost).
fn row<'a>(rows: &'a mut Rows, job: &str, node: &NodeInfo, preempted: bool) -> &'a mut Row {
    let mut priority = node.priority.clone().unwrap_or_else(|| "-".into());
    if preempted {
        priority.push_str(", preempted");
    }
    let vm_size = node.vm_size.clone().unwrap_or_else(|| "unknown".into());
    let key = (job.to_string(), vm_size, priority);
    let r = rows.entry(key.clone()).or_insert_with(|| Row {
        job: key.0,
        vm_size: key.1,
        priority: key.2,
        ..Row::default()
    });
    r.nodes.insert(node.node_id.clone());
    r
}

/// Hours from one RFC 3339 time to another (0 when either does not parse).
fn hours_between(from: &str, to: &str) -> f64 {
    let parse = |s: &str| chrono::DateTime::parse_from_rfc3339(s).ok();
    match (parse(from), parse(to)) {
        (Some(a), Some(b)) => ((b - a).num_milliseconds().max(0) as f64) / 3_600_000.0,
        _ => 0.0,
    }
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&p, out),
            Ok(t) if t.is_file() && p.extension().is_some_and(|x| x == "json") => out.push(p),
            _ => {}
        }
    }
}

/// The table: one row per job, VM size and priority, a total, and a note for sizes without
/// a price.
pub fn table(rows: &[Row], prices: &Prices) -> String {
    let mut lines = vec![[
        "JOB".to_string(),
        "VM SIZE".into(),
        "PRIORITY".into(),
        "NODES".into(),
        "TASKS".into(),
        "NODE-HOURS".into(),
        "PRICE/H".into(),
        "COST".into(),
    ]];
    let mut total_hours = 0.0;
    let mut total_cost = 0.0;
    let mut unpriced = BTreeSet::new();
    for r in rows {
        let spot = r.priority.starts_with("spot");
        let table = if spot {
            &prices.spot
        } else {
            &prices.dedicated
        };
        let price = table.get(&r.vm_size).copied();
        let cost = price.map(|p| p * r.node_hours);
        total_hours += r.node_hours;
        match cost {
            Some(c) => total_cost += c,
            None => {
                unpriced.insert((r.vm_size.clone(), spot));
            }
        }
        lines.push([
            r.job.clone(),
            r.vm_size.clone(),
            r.priority.clone(),
            r.nodes.len().to_string(),
            if r.job == BOOTSTRAP_ROW {
                "-".into()
            } else {
                r.tasks.len().to_string()
            },
            format!("{:.3}", r.node_hours),
            price.map_or("?".into(), |p| format!("{p:.2}")),
            cost.map_or("?".into(), |c| format!("{c:.2}")),
        ]);
    }
    let total = if unpriced.is_empty() {
        format!("{total_cost:.2}")
    } else {
        format!(">= {total_cost:.2}")
    };
    lines.push([
        "TOTAL".into(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        format!("{total_hours:.3}"),
        String::new(),
        total,
    ]);
    let widths: Vec<usize> = (0..8)
        .map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for l in &lines {
        let cells: Vec<String> = l
            .iter()
            .enumerate()
            .map(|(i, c)| {
                // Text left, numbers right.
                if i < 3 {
                    format!("{c:<w$}", w = widths[i])
                } else {
                    format!("{c:>w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    // Which data each job trained on.
    let mut data: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in rows {
        data.entry(&r.job)
            .or_default()
            .extend(r.snapshots.iter().map(String::as_str));
    }
    for (job, snaps) in data.into_iter().filter(|(_, s)| !s.is_empty()) {
        for s in snaps {
            out.push_str(&format!("{job} read snapshot {s}\n"));
        }
    }
    for (size, spot) in unpriced {
        let section = if spot { "[prices.spot]" } else { "[prices]" };
        out.push_str(&format!(
            "no price for {size}: add `{size} = PRICE` under {section}\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::status::write_json;

    fn task(job: &str, task: &str, node: &str, seconds: f64) -> TaskStatus {
        TaskStatus {
            kind: TASK_KIND.into(),
            job_id: job.into(),
            task_id: task.into(),
            node: NodeInfo {
                node_id: node.into(),
                vm_size: Some("Standard_NC24s_v3".into()),
                ..Default::default()
            },
            seconds,
            ..Default::default()
        }
    }

    #[test]
    fn node_hours_times_price_per_job() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A two-node task (one record per node), and a one-node task of another job.
        write_json(
            &d.join("a/t1.node-0.json"),
            &task("train", "t1", "n1", 1800.0),
        )
        .unwrap();
        write_json(
            &d.join("a/t1.node-1.json"),
            &task("train", "t1", "n2", 1800.0),
        )
        .unwrap();
        write_json(&d.join("b/t9.json"), &task("eval", "t9", "n1", 900.0)).unwrap();
        let boot = BootstrapStatus {
            kind: BOOTSTRAP_KIND.into(),
            node: NodeInfo {
                node_id: "n1".into(),
                vm_size: Some("Standard_NC24s_v3".into()),
                ..Default::default()
            },
            timings: crate::agent::status::Timings {
                total_ms: 360_000,
                ..Default::default()
            },
            ..Default::default()
        };
        write_json(&d.join("bootstrap.json"), &boot).unwrap();
        // Not ours: skipped without a word.
        std::fs::write(d.join("b/metrics.json"), "{\"loss\": 0.1}").unwrap();
        let (rows, warnings) = collect(&[d]).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(rows.len(), 3);
        let train = rows.iter().find(|r| r.job == "train").unwrap();
        assert_eq!(train.nodes.len(), 2);
        assert_eq!(train.tasks.len(), 1);
        assert!((train.node_hours - 1.0).abs() < 1e-9);

        let prices = Prices {
            dedicated: BTreeMap::from([("Standard_NC24s_v3".to_string(), 12.0)]),
            ..Prices::default()
        };
        let t = table(&rows, &prices);
        let line = t.lines().find(|l| l.starts_with("train")).unwrap();
        assert!(line.ends_with("12.00"), "{t}");
        let boot_line = t.lines().find(|l| l.starts_with(BOOTSTRAP_ROW)).unwrap();
        assert!(boot_line.ends_with("1.20"), "{t}");
        let total = t.lines().find(|l| l.starts_with("TOTAL")).unwrap();
        assert!(total.ends_with("16.20"), "{t}");
    }

    #[test]
    fn sizes_without_a_price_are_named() {
        let rows = vec![Row {
            job: "j".into(),
            vm_size: "Standard_X".into(),
            node_hours: 2.0,
            ..Row::default()
        }];
        let t = table(&rows, &Prices::default());
        assert!(t.contains("no price for Standard_X"), "{t}");
        assert!(t
            .lines()
            .find(|l| l.starts_with("TOTAL"))
            .unwrap()
            .ends_with(">= 0.00"));
    }

    /// A job on Spot and dedicated nodes, one of whose attempts a preemption cut short (its
    /// task ran again on a dedicated node): a row for each priority, the lost time in a row of
    /// its own at the Spot price, each at its own price.
    #[test]
    fn spot_dedicated_and_preempted_time_are_rows_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let node = |id: &str, priority: &str| NodeInfo {
            node_id: id.into(),
            vm_size: Some("Standard_NC24ads_A100_v4".into()),
            priority: Some(priority.into()),
            ..Default::default()
        };
        let mut t1 = task("train", "t1", "s1", 7200.0);
        t1.node = node("s1", "spot");
        let mut t2 = task("train", "t2", "d1", 3600.0);
        t2.node = node("d1", "dedicated");
        write_json(&d.join("t1.json"), &t1).unwrap();
        write_json(&d.join("t2/task.json"), &t2).unwrap();
        let cut = AttemptRecord {
            kind: ATTEMPT_KIND.into(),
            job_id: "train".into(),
            task_id: "t2".into(),
            node: node("s2", "spot"),
            started_at: "2026-12-01T10:00:00Z".into(),
            last_seen: "2026-12-01T10:30:00Z".into(),
            finished_at: None,
            ..Default::default()
        };
        let done = AttemptRecord {
            node: node("d1", "dedicated"),
            finished_at: Some("2026-12-01T12:00:00Z".into()),
            ..cut.clone()
        };
        write_json(&d.join("t2/attempts/s2.json"), &cut).unwrap();
        write_json(&d.join("t2/attempts/d1.json"), &done).unwrap();
        let (rows, warnings) = collect(&[d]).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let hours: Vec<(&str, f64)> = rows
            .iter()
            .map(|r| (r.priority.as_str(), r.node_hours))
            .collect();
        assert_eq!(
            hours,
            [("dedicated", 1.0), ("spot", 2.0), ("spot, preempted", 0.5)]
        );
        let prices = Prices {
            dedicated: BTreeMap::from([("Standard_NC24ads_A100_v4".to_string(), 3.67)]),
            spot: BTreeMap::from([("Standard_NC24ads_A100_v4".to_string(), 0.8)]),
        };
        let t = table(&rows, &prices);
        let cost = |prefix: &str| {
            t.lines()
                .find(|l| l.contains(prefix))
                .unwrap_or_else(|| panic!("{prefix}: {t}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_string()
        };
        assert_eq!(cost("  dedicated"), "3.67");
        assert_eq!(cost("  spot  "), "1.60");
        assert_eq!(cost("spot, preempted"), "0.40");
        assert_eq!(cost("TOTAL"), "5.67");
        let no_spot = Prices {
            spot: BTreeMap::new(),
            ..prices
        };
        assert!(table(&rows, &no_spot).contains("under [prices.spot]"));
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let e = collect(&[Path::new("/nonexistent/status")]).unwrap_err();
        assert!(e.to_string().contains("not a directory"));
    }
}
