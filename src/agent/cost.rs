//! `lake-agent cost`: node-hours from task records (and bootstrap status files) times the
//! price of the VM size, per job. Records come from status directories or from the lake
//! (`runs/` holds each task's record next to its output).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Result};
use serde::Deserialize;

use super::status::{BootstrapStatus, TaskStatus, BOOTSTRAP_KIND, TASK_KIND};

/// The start tasks' time, billed like any other.
pub const BOOTSTRAP_ROW: &str = "(node bootstrap)";

#[derive(Debug, Default, PartialEq)]
pub struct Row {
    pub job: String,
    pub vm_size: String,
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
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
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
        let unknown = |n: &Option<String>| n.clone().unwrap_or_else(|| "unknown".into());
        match kind.as_str() {
            TASK_KIND => match serde_json::from_str::<TaskStatus>(&text) {
                Ok(t) => {
                    let key = (t.job_id.clone(), unknown(&t.node.vm_size));
                    let row = rows.entry(key.clone()).or_insert_with(|| Row {
                        job: key.0,
                        vm_size: key.1,
                        ..Row::default()
                    });
                    row.nodes.insert(t.node.node_id.clone());
                    row.tasks.insert(t.task_id.clone());
                    row.node_hours += t.seconds / 3600.0;
                }
                Err(e) => warnings.push(format!("{}: {e}", f.display())),
            },
            BOOTSTRAP_KIND => match serde_json::from_str::<BootstrapStatus>(&text) {
                Ok(b) => {
                    let key = (BOOTSTRAP_ROW.to_string(), unknown(&b.node.vm_size));
                    let row = rows.entry(key.clone()).or_insert_with(|| Row {
                        job: key.0,
                        vm_size: key.1,
                        ..Row::default()
                    });
                    row.nodes.insert(b.node.node_id.clone());
                    row.node_hours += b.timings.total_ms as f64 / 3_600_000.0;
                }
                Err(e) => warnings.push(format!("{}: {e}", f.display())),
            },
            _ => {}
        }
    }
    Ok((rows.into_values().collect(), warnings))
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

/// The table: one row per job and VM size, a total, and a note for sizes without a price.
pub fn table(rows: &[Row], prices: &BTreeMap<String, f64>) -> String {
    let mut lines = vec![[
        "JOB".to_string(),
        "VM SIZE".into(),
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
        let price = prices.get(&r.vm_size).copied();
        let cost = price.map(|p| p * r.node_hours);
        total_hours += r.node_hours;
        match cost {
            Some(c) => total_cost += c,
            None => {
                unpriced.insert(r.vm_size.clone());
            }
        }
        lines.push([
            r.job.clone(),
            r.vm_size.clone(),
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
        format!("{total_hours:.3}"),
        String::new(),
        total,
    ]);
    let widths: Vec<usize> = (0..7)
        .map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for l in &lines {
        let cells: Vec<String> = l
            .iter()
            .enumerate()
            .map(|(i, c)| {
                // Text left, numbers right.
                if i < 2 {
                    format!("{c:<w$}", w = widths[i])
                } else {
                    format!("{c:>w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    for size in unpriced {
        out.push_str(&format!(
            "no price for {size}: add `{size} = PRICE` under [prices]\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::status::{write_json, NodeInfo};

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

        let prices = BTreeMap::from([("Standard_NC24s_v3".to_string(), 12.0)]);
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
        let t = table(&rows, &BTreeMap::new());
        assert!(t.contains("no price for Standard_X"), "{t}");
        assert!(t
            .lines()
            .find(|l| l.starts_with("TOTAL"))
            .unwrap()
            .ends_with(">= 0.00"));
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let e = collect(&[Path::new("/nonexistent/status")]).unwrap_err();
        assert!(e.to_string().contains("not a directory"));
    }
}
