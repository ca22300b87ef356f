//! pjdfstest (the POSIX file system test suite, installed by `./scripts/install-deps`) against
//! real mounts of a `file://` lake and of Azurite. Every test it fails must be listed in
//! `tests/pjdfstest/expected-failures` with the SEMANTICS.md row that explains the failure; a
//! listed test that passes fails too, so the list stays exactly what the mount does.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::lake::Lake;

const LIST: &str = "tests/pjdfstest/expected-failures";

/// pjdfstest's own settings: short naps between timestamp checks, no remounts, and two
/// unprivileged users for its permission tests.
const CONFIG: &str = "[settings]\nnaptime = 0.01\nallow_remount = false\n\n\
                      [dummy_auth]\nentries = [[\"nobody\", \"nogroup\"], [\"daemon\", \"daemon\"]]\n";

fn pjdfstest_bin() -> PathBuf {
    common::tools::cargo_installed("pjdfstest")
}

#[derive(Debug)]
struct Expected {
    /// `both`, `local` or `azurite`.
    lakes: String,
    /// Listed with a trailing `?`: it may also pass (a whole-second timestamp that may or may
    /// not cross a second).
    may_pass: bool,
    /// The first cell of the SEMANTICS.md row that explains the failure.
    row: String,
}

/// `tests/pjdfstest/expected-failures`: `test | lakes | SEMANTICS.md row` per line.
fn expected() -> BTreeMap<String, Expected> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(LIST);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.splitn(3, " | ").map(str::trim).collect();
        let [test, lakes, row] = parts[..] else {
            panic!("{LIST}:{}: not `test | lakes | row`: {line}", n + 1);
        };
        let (lakes, may_pass) = match lakes.strip_suffix('?') {
            Some(l) => (l, true),
            None => (lakes, false),
        };
        assert!(
            ["both", "local", "azurite"].contains(&lakes),
            "{LIST}:{}: lakes must be both, local or azurite, not {lakes}",
            n + 1
        );
        let old = out.insert(
            test.to_string(),
            Expected {
                lakes: lakes.into(),
                may_pass,
                row: row.into(),
            },
        );
        assert!(old.is_none(), "{LIST}:{}: {test} is listed twice", n + 1);
    }
    out
}

/// The first cells of SEMANTICS.md's table rows.
fn semantics_rows() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("SEMANTICS.md");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        .filter_map(|l| l.split(" | ").next())
        .map(str::to_string)
        .collect()
}

/// `LAKEMOUNT_PJDFSTEST=PATTERN` runs only the tests whose names contain it (to look at one
/// failure; the daemon's log is then kept and named).
fn only() -> Vec<String> {
    std::env::var("LAKEMOUNT_PJDFSTEST").into_iter().collect()
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Passed,
    Failed(String),
    Skipped,
}

/// Runs the whole suite in `dir` (on a mount) and returns each test's outcome.
fn run(dir: &Path, work: &Path) -> BTreeMap<String, Outcome> {
    let conf = work.join("pjdfstest.toml");
    std::fs::write(&conf, CONFIG).unwrap();
    let started = Instant::now();
    let out = Command::new(pjdfstest_bin())
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir)
        .args(only())
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let mut results = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        let mut words = line.split_whitespace();
        let (Some(name), Some(verdict)) = (words.next(), words.next()) else {
            continue;
        };
        if !name.contains("::") {
            continue;
        }
        let outcome = match verdict {
            "ok" => Outcome::Passed,
            "FAILED" => Outcome::Failed(
                lines
                    .get(i + 1)
                    .map(|l| l.trim().to_string())
                    .unwrap_or_default(),
            ),
            v if v.starts_with("skipped") => Outcome::Skipped,
            _ => continue,
        };
        results.insert(name.to_string(), outcome);
    }
    eprintln!(
        "pjdfstest in {:.0} s: {} tests",
        started.elapsed().as_secs_f64(),
        results.len()
    );
    assert!(
        results.len() > 300 || !only().is_empty(),
        "pjdfstest ran {} tests (exit {:?}):\n{text}\n{}",
        results.len(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    results
}

fn exercise(lake: &Lake, kind: &str) {
    let staging = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let m = lake.mount(&["--staging-dir", staging.path().to_str().unwrap()]);
    let results = run(&m.path(), work.path());
    let expected = expected();
    let on_this = |e: &Expected| e.lakes == "both" || e.lakes == kind;
    let mut problems = Vec::new();
    let (mut passed, mut failed, mut unexplained, mut skipped) = (0, 0, 0, 0);
    for (name, outcome) in &results {
        let listed = expected.get(name).filter(|e| on_this(e));
        match (outcome, listed) {
            (Outcome::Passed, None) => passed += 1,
            (Outcome::Passed, Some(e)) => {
                passed += 1;
                if !e.may_pass {
                    problems.push(format!("{name} passes, but is listed ({})", e.row));
                }
            }
            (Outcome::Failed(_), Some(_)) => failed += 1,
            (Outcome::Failed(why), None) => {
                unexplained += 1;
                problems.push(format!("{name} fails, not listed: {why}"));
            }
            (Outcome::Skipped, _) => skipped += 1,
        }
    }
    if !only().is_empty() {
        let log = m.log_text();
        eprintln!("daemon log:\n{log}");
        problems.retain(|p| p.contains("fails"));
    }
    for (name, e) in &expected {
        if on_this(e) && !results.contains_key(name) && only().is_empty() {
            problems.push(format!("{name} is listed but pjdfstest has no such test"));
        }
    }
    eprintln!(
        "pjdfstest on {}: {passed} passed, {failed} failed as listed, {unexplained} failed \
         unexplained, {skipped} skipped (features not enabled)",
        lake.name()
    );
    assert!(
        problems.is_empty(),
        "pjdfstest on {}: {} problems:\n{}",
        lake.name(),
        problems.len(),
        problems.join("\n")
    );
    // The mount survived all of it.
    assert!(m.path().join(".").metadata().is_ok_and(|md| md.is_dir()));
}

#[test]
fn every_expected_failure_names_a_row_of_semantics_md() {
    let rows = semantics_rows();
    let missing: Vec<String> = expected()
        .into_iter()
        .filter(|(_, e)| !rows.contains(&e.row))
        .map(|(name, e)| format!("{name}: {}", e.row))
        .collect();
    assert!(
        missing.is_empty(),
        "rows not in SEMANTICS.md:\n{}",
        missing.join("\n")
    );
}

#[test]
fn pjdfstest_on_a_local_lake_fails_only_where_semantics_md_says() {
    exercise(&Lake::local(), "local");
}

#[test]
fn pjdfstest_on_azurite_fails_only_where_semantics_md_says() {
    exercise(&Lake::azurite(), "azurite");
}
