//! A lake that stops answering (a proxy in front of Azurite holds requests without a reply, or
//! after half a reply): every process waiting on the mount gets an error, or dies of SIGKILL,
//! within the deadline plus a margin, and the mount stays up and serves correct bytes after.
//! A FUSE request the daemon has taken cannot be abandoned by the kernel, so this is the bound
//! on how long a process can sit in uninterruptible sleep.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::azurite::{Azurite, ACCOUNT};
use common::faultproxy::{FaultProxy, Hang};
use common::mount::{is_mounted, wait_for, Mount};
use common::tree::{pseudo_random, sha256};

const CONTAINER: &str = "lake";
const METADATA_TIMEOUT: u64 = 2;
const DATA_TIMEOUT: u64 = 4;
/// What the kernel, the process and a loaded machine may add to the deadline: less than
/// either deadline, so a second wait of a whole deadline fails the test.
const MARGIN: Duration = Duration::from_millis(1500);

struct Rig {
    az: Azurite,
    proxy: FaultProxy,
    m: Mount,
    _staging: tempfile::TempDir,
}

fn rig(seed: impl FnOnce(&Azurite)) -> Rig {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    seed(&az);
    let proxy = FaultProxy::faithful(az.port());
    let staging = tempfile::tempdir().unwrap();
    let cs = az.connection_string();
    let (meta, data) = (METADATA_TIMEOUT.to_string(), DATA_TIMEOUT.to_string());
    let m = Mount::start(
        &format!("az://{ACCOUNT}/{CONTAINER}"),
        &[
            "--endpoint",
            &proxy.endpoint(),
            "--metadata-timeout",
            &meta,
            "--data-timeout",
            &data,
            "--metadata-ttl",
            "3600",
            "--block-size",
            "1M",
            "--max-readahead",
            "1M",
            "--staging-dir",
            staging.path().to_str().unwrap(),
        ],
        &[("AZURE_STORAGE_CONNECTION_STRING", cs.as_str())],
    )
    .unwrap_or_else(|o| panic!("mount through the proxy failed: {o:?}"));
    Rig {
        az,
        proxy,
        m,
        _staging: staging,
    }
}

/// Runs `cmd` against a hung lake. With `kill`, SIGKILLs it once the lake holds one of its
/// requests and asserts it is gone within `deadline` + [`MARGIN`]; without, asserts it fails
/// by itself, with ETIMEDOUT or EIO, within two deadlines + [`MARGIN`]. Lifts the hang before returning.
fn against_hung_lake(rig: &Rig, how: Hang, mut cmd: Command, deadline: Duration, kill: bool) {
    let what = format!("{cmd:?} with the lake {how:?}, kill: {kill}");
    let held = rig.proxy.hung.load(std::sync::atomic::Ordering::SeqCst);
    rig.proxy.hang(how);
    let mut child: Child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let reached = wait_for(Duration::from_secs(30), || {
        rig.proxy.hung.load(std::sync::atomic::Ordering::SeqCst) > held
    });
    assert!(reached, "{what}: no request reached the hung lake");
    let t0 = Instant::now();
    if kill {
        child.kill().unwrap();
    }
    // A process that waits for its error may see two requests time out: the kernel retries
    // a failed readahead with a read of its own. A killed one waits for one at most.
    let bound = if kill { deadline } else { 2 * deadline } + MARGIN;
    let (done, took, out) = end_of(rig, child, t0, bound);
    eprintln!("{what}: ended {took:?} after its request hung (deadline {deadline:?})");
    assert!(done, "{what}: still running {took:?} after the lake hung");
    if !kill {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: succeeded on a hung lake");
        // ETIMEDOUT where the call ran out of time, EIO where a close's upload failed or a
        // half-sent body broke off: an error either way, never a partial result.
        let named = err.contains("Connection timed out") || err.contains("Input/output error");
        assert!(named, "{what}: {err}");
    }
    assert!(is_mounted(&rig.m.path()), "{what}: the mount went away");
}

/// Waits up to `bound` (from `t0`) for `child` to end, then lifts the hang and collects it
/// (killed if it had not ended): whether it ended in time, when, and its output.
fn end_of(rig: &Rig, mut child: Child, t0: Instant, bound: Duration) -> (bool, Duration, Output) {
    let done = wait_for(bound, || child.try_wait().unwrap().is_some());
    let took = t0.elapsed();
    rig.proxy.hang(Hang::Off);
    if !done {
        let _ = child.kill();
    }
    (done, took, child.wait_with_output().unwrap())
}

fn cmd(program: &str, args: &[&Path]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

const HANGS: [Hang; 2] = [Hang::Silent, Hang::MidBody];

#[test]
fn a_read_on_a_hung_lake_ends_by_the_data_deadline_and_later_reads_are_right() {
    let data = pseudo_random(3 << 20, 7);
    let names: Vec<String> = (0..4).map(|i| format!("r/{i}.bin")).collect();
    let r = rig(|az| {
        for n in &names {
            az.put_blob(CONTAINER, n, &data);
        }
    });
    let deadline = Duration::from_secs(DATA_TIMEOUT);
    let mut cases = HANGS.iter().flat_map(|h| [(*h, true), (*h, false)]);
    for name in &names {
        let (how, kill) = cases.next().unwrap();
        let path = r.m.path().join(name);
        // Known to the mount (its lookup is cached), none of its bytes fetched.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), data.len() as u64);
        against_hung_lake(&r, how, cmd("cat", &[&path]), deadline, kill);
        let again = std::fs::read(&path).unwrap();
        assert_eq!(
            sha256(&again),
            sha256(&data),
            "{name}: bytes after the hang"
        );
    }
}

#[test]
fn a_listing_on_a_hung_lake_ends_by_the_metadata_deadline_and_lists_right_after() {
    let dirs: Vec<String> = (0..4).map(|i| format!("d{i}")).collect();
    let r = rig(|az| {
        for d in &dirs {
            for f in ["a.txt", "b.txt"] {
                az.put_blob(CONTAINER, &format!("{d}/{f}"), f.as_bytes());
            }
        }
    });
    let deadline = Duration::from_secs(METADATA_TIMEOUT);
    let mut cases = HANGS.iter().flat_map(|h| [(*h, true), (*h, false)]);
    // Known (the root is listed), but not listed themselves yet.
    let root: Vec<_> = std::fs::read_dir(r.m.path()).unwrap().collect();
    assert_eq!(root.len(), dirs.len());
    for d in &dirs {
        let (how, kill) = cases.next().unwrap();
        let path = r.m.path().join(d);
        against_hung_lake(&r, how, cmd("ls", &[&path]), deadline, kill);
        let mut names: Vec<String> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["a.txt", "b.txt"], "{d} after the hang");
    }
}

#[test]
fn a_write_on_a_hung_lake_fails_by_the_data_deadline_and_lands_once_it_answers() {
    let r = rig(|_| {});
    let src = tempfile::NamedTempFile::new().unwrap();
    let data = pseudo_random(3 << 20, 9);
    std::fs::write(src.path(), &data).unwrap();
    // The commit and the block uploads before it wait on data calls, the first lookup on
    // metadata ones: the data deadline bounds them all.
    let deadline = Duration::from_secs(DATA_TIMEOUT);
    for (i, kill) in [true, false].into_iter().enumerate() {
        let path = r.m.path().join(format!("w{i}.bin"));
        // The file exists, so the hang meets the writes and the commit, not the create.
        std::fs::write(&path, b"").unwrap();
        against_hung_lake(
            &r,
            Hang::Silent,
            cmd("cp", &[src.path(), &path]),
            deadline,
            kill,
        );
        std::fs::write(&path, &data).unwrap();
        assert_eq!(sha256(&std::fs::read(&path).unwrap()), sha256(&data));
        let landed = r.az.get_blob(CONTAINER, &format!("w{i}.bin"));
        assert_eq!(sha256(&landed), sha256(&data), "w{i}.bin in the lake");
    }
}

#[test]
fn transfers_on_a_hung_lake_fail_by_their_deadline_with_one_line() {
    let r = rig(|az| az.put_blob(CONTAINER, "t/a.bin", &pseudo_random(1 << 20, 3)));
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("up.bin"), pseudo_random(1 << 20, 4)).unwrap();
    let w = |name: &str| work.path().join(name).to_str().unwrap().to_string();
    let lake = format!("az://{ACCOUNT}/{CONTAINER}/t");
    let cs = r.az.connection_string();
    let (meta, data, endpoint) = (
        METADATA_TIMEOUT.to_string(),
        DATA_TIMEOUT.to_string(),
        r.proxy.endpoint(),
    );
    let timeouts = [
        "--endpoint",
        &endpoint,
        "--metadata-timeout",
        &meta,
        "--data-timeout",
        &data,
    ];
    for how in HANGS {
        for mut args in [
            vec!["download".to_string(), lake.clone(), w("down")],
            vec!["upload".into(), src.to_str().unwrap().into(), lake.clone()],
            vec![
                "warm".into(),
                lake.clone(),
                "--cache-dir".into(),
                w("cache"),
            ],
        ] {
            args.extend(timeouts.iter().map(|s| s.to_string()));
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            r.proxy.hang(how);
            let child = common::mount::lakemount(
                &argv,
                &[("AZURE_STORAGE_CONNECTION_STRING", cs.as_str())],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
            // Its first call is the probe, a metadata call; what follows never starts.
            let t0 = Instant::now();
            let bound = Duration::from_secs(METADATA_TIMEOUT) + MARGIN;
            let (done, took, out) = end_of(&r, child, t0, bound);
            let err = String::from_utf8_lossy(&out.stderr);
            eprintln!("{argv:?} with the lake {how:?}: ended after {took:?}: {err}");
            assert!(done, "{argv:?}: still running {took:?} after the lake hung");
            assert_eq!(out.status.code(), Some(1), "{argv:?}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "{argv:?}: {err}");
            // Out of time (a silent lake), or a body that broke off (half an answer).
            assert!(err.contains(&lake), "names the lake: {err}");
        }
    }
}
