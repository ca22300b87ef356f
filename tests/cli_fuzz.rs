//! Generated command lines and config files for `lakemount` and `lake-agent`: whatever they
//! hold, each command ends in bounded time with exit 0 or 1, never panics, answers a failure
//! with one `PROGRAM: error:` line, and never prints a signature it was given. Everything a
//! case names lies below a scratch directory (mount points never exist there, so nothing is
//! mounted); `lake-agent` only runs the commands that change nothing on the machine.

#[path = "common/agent.rs"]
mod agent_common;
mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use agent_common::agent;
use common::mount::lakemount;

const SECRET: &str = "TOPSECRET";
/// Past the metadata deadline (30 s) that bounds the one call a failing command may make.
const LIMIT: Duration = Duration::from_secs(45);

/// Runs `cmd` from `dir` with stdin closed; None if it was still running after [`LIMIT`].
fn run_bounded(mut cmd: Command, dir: &Path) -> Option<Output> {
    let mut child = cmd
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + LIMIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Some(child.wait_with_output().unwrap())
}

/// A record of the log a `-v` or `-vv` run asks for: `2026-01-02T03:04:05.678Z DEBUG ...`.
fn is_log_record(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 20
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[10] == b'T'
        && ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
            .iter()
            .any(|l| line.split_whitespace().nth(1) == Some(l))
}

/// The checks every generated case must pass. A verbose run (`-v`, `-vv`) may log before its
/// error line; the log's records are set aside before the error is counted.
fn judge(program: &str, what: &str, out: Option<Output>) -> Result<(), TestCaseError> {
    let out =
        out.ok_or_else(|| TestCaseError::fail(format!("{what}: still running after {LIMIT:?}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    prop_assert!(
        matches!(code, Some(0) | Some(1)),
        "{what}: exit {:?}\n{stderr}",
        out.status
    );
    prop_assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    prop_assert!(
        !stdout.contains(SECRET) && !stderr.contains(SECRET),
        "{what}: a signature was printed:\n{stdout}{stderr}"
    );
    if code == Some(1) {
        let verbose = what.contains("\"-v\"") || what.contains("\"-vv\"");
        let lines: Vec<&str> = stderr
            .trim_end()
            .lines()
            .filter(|l| !(verbose && is_log_record(l)))
            .collect();
        prop_assert_eq!(lines.len(), 1, "{}: not one line:\n{}", what, stderr);
        let prefix = format!("{program}: error: ");
        prop_assert!(lines[0].starts_with(&prefix), "{what}: {stderr}");
    }
    Ok(())
}

const FLAGS: &[&str] = &[
    "--metadata-ttl",
    "--commit-interval",
    "--metadata-budget",
    "--manifest",
    "--rename-dir-limit",
    "--metadata-timeout",
    "--data-timeout",
    "--max-memory",
    "--block-size",
    "--max-readahead",
    "--cache-size",
    "--threads",
    "--uid",
    "--gid",
    "--file-mode",
    "--dir-mode",
    "--endpoint",
    "--auth",
    "--metrics-addr",
    "--log-file",
    "--cache-dir",
    "--staging-dir",
    "--config",
    "--read-only",
    "--allow-other",
    "--passthrough",
    "--no-such-flag",
    "-v",
    "-vv",
];

/// Values of every kind a user gets wrong; `@` is the scratch directory.
const VALUES: &[&str] = &[
    "0",
    "1",
    "-1",
    "4096",
    "3601",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999",
    "1e3",
    "1.5",
    "abc",
    "",
    " ",
    "64M",
    "1G",
    "3K",
    "99999999999999T",
    "50%",
    "0x10",
    "0777",
    "rwx",
    "127.0.0.1:0",
    "0.0.0.0:9",
    "[::1]:x",
    "key",
    "sas",
    "azure-cli",
    "az://",
    "az://acct",
    "az://acct/data/x?sv=2024&sig=TOPSECRET",
    "az://acct/data?sig=TOPSECRET",
    "https://acct.blob.core.windows.net/data?sv=2024&sig=TOPSECRET",
    "abfss://data@acct.dfs.core.windows.net/p",
    "abfss://@acct.dfs.core.windows.net",
    "file://",
    "file:///@/no/lake",
    "file://@/lake",
    "http://127.0.0.1:1/devstoreaccount1",
    "not a url",
    "é✓",
    "%00",
    "-",
    "--",
    "@/no/mnt",
    "@/no/file",
    "@/src",
    "@/src/a.txt",
    "@/config.toml",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(VALUES).prop_map(String::from),
        1 => "[ -~]{0,12}",
    ]
}

fn token() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        3 => (proptest::sample::select(FLAGS), value()).prop_map(|(f, v)| vec![f.into(), v]),
        1 => proptest::sample::select(FLAGS).prop_map(|f| vec![f.to_string()]),
        2 => value().prop_map(|v| vec![v]),
    ]
}

fn lakemount_argv() -> impl Strategy<Value = Vec<String>> {
    let sub = proptest::sample::select(
        &[
            "mount",
            "mount",
            "unmount",
            "warm",
            "upload",
            "download",
            "help",
            "--version",
            "-h",
            "cahce",
        ][..],
    );
    (sub, proptest::collection::vec(token(), 0..6)).prop_map(|(sub, tokens)| {
        let mut argv = vec![sub.to_string()];
        argv.extend(tokens.into_iter().flatten());
        argv
    })
}

const MOUNT_KEYS: &[&str] = &[
    "lake",
    "mountpoint",
    "read_only",
    "allow_other",
    "uid",
    "gid",
    "file_mode",
    "dir_mode",
    "metadata_ttl",
    "commit_interval",
    "metadata_budget",
    "manifest",
    "rename_dir_limit",
    "metadata_timeout",
    "data_timeout",
    "endpoint",
    "auth",
    "log_file",
    "block_size",
    "max_readahead",
    "max_memory",
    "cache_dir",
    "cache_size",
    "staging_dir",
    "metrics_addr",
    "passthrough",
    "no_such_key",
];

const AGENT_KEYS: &[&str] = &[
    "[agent]",
    "[lake]",
    "[[lake]]",
    "[cache]",
    "[container]",
    "[output]",
    "[pool]",
    "[job]",
    "[prices]",
    "[prices.spot]",
    "[nope]",
    "name",
    "url",
    "lake",
    "mountpoint",
    "datasets",
    "warm",
    "dir",
    "disks",
    "size",
    "image",
    "runtime",
    "gpus",
    "vm_size",
    "nodes",
    "id",
    "Standard_NC24s_v3",
    "endpoint",
    "max_memory",
    "metadata_ttl",
    "devices",
    "volume_mount",
    "spot_nodes",
    "max_nodes",
    "image_sku",
    "node_agent_sku_id",
    "heartbeat_seconds",
];

/// TOML values of each type, right and wrong, and lines that are not TOML at all.
const TOML_VALUES: &[&str] = &[
    "1",
    "-1",
    "0",
    "3601",
    "18446744073709551615",
    "9223372036854775807",
    "1e400",
    "1.5",
    "true",
    "\"64M\"",
    "\"99999999999999T\"",
    "\"x\"",
    "\"\"",
    "\"file:///@/no/lake\"",
    "\"@/no/mnt\"",
    "\"az://acct/data?sv=2024&sig=TOPSECRET\"",
    "\"https://acct.blob.core.windows.net/data?sig=TOPSECRET\"",
    "[1, 2]",
    "[\"a\", 1]",
    "{ a = 1 }",
    "'''two\nlines'''",
    "\"unterminated",
    "= =",
    "1979-05-27T07:32:00Z",
];

fn toml_file(keys: &'static [&'static str]) -> impl Strategy<Value = String> {
    let line = prop_oneof![
        4 => (proptest::sample::select(keys), proptest::sample::select(TOML_VALUES)).prop_map(
            |(k, v)| if k.starts_with('[') { k.to_string() } else { format!("{k} = {v}") }
        ),
        1 => "[ -~]{0,20}",
    ];
    proptest::collection::vec(line, 0..8).prop_map(|lines| lines.join("\n") + "\n")
}

/// A scratch directory with `src/a.txt` and a lake directory; `@` in a value becomes its path.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/a.txt"), "a").unwrap();
    // Not empty: no directory of the scratch area could serve as a mount point.
    std::fs::create_dir_all(dir.path().join("lake")).unwrap();
    std::fs::write(dir.path().join("lake/b.txt"), "b").unwrap();
    dir
}

/// Mount points below `dir`, from this process's mount table.
fn mounts_below(dir: &Path) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = dir.to_str().unwrap();
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(dir))
        .map(String::from)
        .collect()
}

fn place(text: &str, dir: &Path) -> String {
    text.replace('@', dir.to_str().unwrap())
}

/// A fake key, so that a case that gets as far as the lake fails at once instead of looking
/// for the machine's identity; no Azure variable of the developer's is seen.
const ENV: [(&str, &str); 1] = [("AZURE_STORAGE_ACCOUNT_KEY", "Zm9vYmFy")];

fn lakemount_case(argv: &[String], config: Option<&str>) -> Result<(), TestCaseError> {
    let dir = scratch();
    if let Some(c) = config {
        std::fs::write(dir.path().join("config.toml"), place(c, dir.path())).unwrap();
    }
    let mut args: Vec<String> = argv.iter().map(|a| place(a, dir.path())).collect();
    // Commands that keep blocks write them below the scratch directory by default too.
    if matches!(args[0].as_str(), "mount" | "warm") && !args.iter().any(|a| a == "--cache-dir") {
        args.push("--cache-dir".into());
        args.push(place("@/cache", dir.path()));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_bounded(lakemount(&refs, &ENV), dir.path());
    judge(
        "lakemount",
        &format!("lakemount {args:?} config {config:?}"),
        out,
    )?;
    let mounted = mounts_below(dir.path());
    for m in &mounted {
        let _ = Command::new("fusermount3")
            .args(["-u", "-z"])
            .arg(m)
            .status();
    }
    prop_assert!(mounted.is_empty(), "{args:?} mounted {mounted:?}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn generated_lakemount_command_lines_end_in_one_line_or_success(argv in lakemount_argv()) {
        lakemount_case(&argv, None)?;
    }

    #[test]
    fn generated_lakemount_config_files_end_in_one_line_or_success(
        file in toml_file(MOUNT_KEYS),
        positionals in any::<bool>(),
    ) {
        let mut argv: Vec<String> =
            ["mount", "--config", "@/config.toml"].map(String::from).to_vec();
        if positionals {
            argv.extend(["file:///@/no/lake".to_string(), "@/no/mnt".to_string()]);
        }
        lakemount_case(&argv, Some(&file))?;
    }

    #[test]
    fn generated_lake_agent_config_files_end_in_one_line_or_success(
        file in toml_file(AGENT_KEYS),
        sub in proptest::sample::select(&["pool-spec", "job-spec", "task-spec", "cost", "status"][..]),
    ) {
        let dir = scratch();
        let conf = dir.path().join("agent.toml");
        std::fs::write(&conf, place(&file, dir.path())).unwrap();
        let mut args = vec!["--config", conf.to_str().unwrap(), sub];
        match sub {
            "task-spec" => args.extend(["--id", "t1", "--", "true"]),
            "cost" => args.push(dir.path().to_str().unwrap()),
            _ => {}
        }
        let out = run_bounded(agent(&args, &[]), dir.path());
        judge("lake-agent", &format!("lake-agent {args:?} with\n{file}"), out)?;
    }
}
