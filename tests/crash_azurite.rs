//! The daemon killed with SIGKILL (a crash, the OOM killer) while it writes files or fills its
//! block cache: the lake never holds a part of a file, the staged data is kept and can be
//! uploaded by hand, and the next `lakemount mount` on the same mount point just works.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use common::azurite::{Azurite, ACCOUNT};
use common::mount::{lakemount, mount_azurite, wait_for};
use common::proc::{daemon_pid, kill_9};
use common::tree::{pseudo_random, sha256, sha256_file};

const CONTAINER: &str = "lake";
const MIB: usize = 1 << 20;

fn lake() -> String {
    format!("az://{ACCOUNT}/{CONTAINER}")
}

/// `lakemount ARGS --endpoint AZURITE` with Azurite's connection string.
fn lakemount_az(az: &Azurite, args: &[&str]) -> Output {
    let (cs, endpoint) = (az.connection_string(), az.endpoint());
    let mut all = args.to_vec();
    all.extend(["--endpoint", &endpoint]);
    lakemount(&all, &[("AZURE_STORAGE_CONNECTION_STRING", &cs)])
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Blocks of `name` staged in the lake (Put Block) and not committed.
fn uncommitted_blocks(az: &Azurite, name: &str) -> usize {
    let query = [("comp", "blocklist"), ("blocklisttype", "uncommitted")];
    match az.request("GET", &format!("{CONTAINER}/{name}"), &query, &[], b"") {
        Ok(r) if r.status == 200 => String::from_utf8_lossy(&r.body).matches("<Block>").count(),
        _ => 0,
    }
}

/// What the kernel answers on a mount whose daemon died: ECONNABORTED for a request caught
/// in the teardown, ENOTCONN after it.
fn daemon_gone(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTCONN | libc::ECONNABORTED))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// The staging directory's `ID.data` files by the key their `ID.target` names, checking
/// that each target names this lake.
fn staged(dir: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let data = e.unwrap().path();
        if data.extension().is_none_or(|x| x != "data") {
            continue;
        }
        let target = std::fs::read_to_string(data.with_extension("target")).unwrap();
        let (lake_line, key) = target.trim_end().split_once('\n').unwrap();
        assert_eq!(lake_line, lake(), "{target}");
        out.insert(key.to_string(), data);
    }
    out
}

#[test]
fn a_daemon_killed_mid_write_leaves_the_lake_whole_and_the_data_staged_for_recovery() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let old = pseudo_random(3 * MIB, 1);
    az.put_blob(CONTAINER, "out/model.pt", &old);
    let work = tempfile::tempdir().unwrap();
    let st = work.path().join("staging");
    let st_arg = st.to_str().unwrap();
    let m = mount_azurite(
        &az,
        CONTAINER,
        &["--staging-dir", st_arg, "--block-size", "1M"],
    );
    let mp = m.path();
    let pid = daemon_pid(&mp).expect("the mount's daemon is running");

    // An overwrite of an existing object and a new file, both half-way when the daemon dies.
    let model = pseudo_random(6 * MIB, 2);
    let model_written = 5 * MIB + 77;
    let new_file = pseudo_random(3 * MIB + 45, 3);
    let mut f1 = File::create(mp.join("out/model.pt")).unwrap();
    f1.write_all(&model[..model_written]).unwrap();
    let mut f2 = File::create(mp.join("out/new.bin")).unwrap();
    f2.write_all(&new_file).unwrap();
    // Full blocks go up while a file is written; once some have, the kill lands between the
    // first uploaded blocks and the commit.
    assert!(
        wait_for(Duration::from_secs(30), || {
            uncommitted_blocks(&az, "out/model.pt") >= 3
                && uncommitted_blocks(&az, "out/new.bin") >= 2
        }),
        "no blocks were uploaded before the commit"
    );
    kill_9(pid);
    let err = f1.write_all(b"more").unwrap_err();
    assert!(daemon_gone(&err), "{err}");
    drop(f1);

    // Another client sees the old object whole and nothing of the new file.
    assert_eq!(
        sha256(&az.get_blob(CONTAINER, "out/model.pt")),
        sha256(&old)
    );
    assert_eq!(az.list_blobs(CONTAINER, ""), ["out/model.pt"]);

    // Staging holds every byte written so far, privately, with the key each was meant for.
    let files = staged(&st);
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["out/model.pt", "out/new.bin"]
    );
    let model_data = &files["out/model.pt"];
    let new_data = &files["out/new.bin"];
    assert_eq!(
        sha256_file(model_data),
        sha256(&model[..model_written]),
        "the overwrite's bytes so far"
    );
    assert_eq!(sha256_file(new_data), sha256(&new_file));
    assert_eq!(mode(&st), 0o700);
    for p in [model_data, new_data] {
        assert_eq!(mode(p), 0o600, "{}", p.display());
        assert_eq!(mode(&p.with_extension("target")), 0o600);
    }

    // The next mount on the same mount point clears the dead mount (a writer still holds a
    // file open on it) and says what was left behind.
    let log = work.path().join("remount.log");
    let out = lakemount_az(
        &az,
        &[
            "mount",
            &lake(),
            mp.to_str().unwrap(),
            "--staging-dir",
            st_arg,
            "--metadata-ttl",
            "1",
            "--log-file",
            log.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("2 staged file(s) from an earlier run were never uploaded"),
        "{stderr}"
    );
    let log_text = std::fs::read_to_string(&log).unwrap();
    let named = format!(
        "not uploaded: {} ({model_written} bytes) was meant for {}/out/model.pt",
        model_data.display(),
        lake()
    );
    assert!(log_text.contains(&named), "{log_text}");
    assert_eq!(sha256_file(&mp.join("out/model.pt")), sha256(&old));
    drop(f2);

    // Recovery as the README describes it: name the data, upload it into its directory
    // (--overwrite where the object exists), remove the staging pair.
    let recover = work.path().join("recover");
    std::fs::create_dir(&recover).unwrap();
    for (key, data) in &files {
        let (dir, name) = key.rsplit_once('/').unwrap();
        let named = recover.join(name);
        std::fs::copy(data, &named).unwrap();
        let dest = format!("{}/{dir}", lake());
        let out = lakemount_az(&az, &["upload", named.to_str().unwrap(), &dest]);
        if key == "out/model.pt" {
            assert_eq!(
                out.status.code(),
                Some(3),
                "an existing target: {}",
                text(&out)
            );
            let out = lakemount_az(
                &az,
                &["upload", named.to_str().unwrap(), &dest, "--overwrite"],
            );
            assert!(out.status.success(), "{}", text(&out));
        } else {
            assert!(out.status.success(), "{}", text(&out));
        }
        std::fs::remove_file(data).unwrap();
        std::fs::remove_file(data.with_extension("target")).unwrap();
    }
    assert_eq!(
        sha256(&az.get_blob(CONTAINER, "out/model.pt")),
        sha256(&model[..model_written])
    );
    assert_eq!(
        sha256(&az.get_blob(CONTAINER, "out/new.bin")),
        sha256(&new_file)
    );
    // The running mount shows the recovered files once its metadata TTL has passed.
    let new_path = mp.join("out/new.bin");
    assert!(wait_for(Duration::from_secs(10), || std::fs::read(
        &new_path
    )
    .is_ok_and(|d| d == new_file)));
}

/// Blocks the cache's tables say are held, as `lakemount cache stats` counts them.
fn cached_blocks(cache: &Path) -> u64 {
    let out = common::mount::lakemount(
        &["cache", "stats", "--cache-dir", cache.to_str().unwrap()],
        &[],
    )
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("blocks:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no block count in {text}"))
}

/// The directories objects are filed in.
fn object_dirs(cache: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(cache.join("objects-v2"))
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().path())
        .collect()
}

/// One counter from the metrics endpoint a daemon logged to `log`.
fn metric(log: &Path, name: &str) -> u64 {
    common::metrics::from_log(&std::fs::read_to_string(log).unwrap_or_default(), name)
}

#[test]
fn a_daemon_killed_while_filling_the_disk_cache_leaves_only_whole_blocks() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let data = pseudo_random(64 * MIB, 9);
    az.put_blob_large(CONTAINER, "big.bin", &data);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let cache_arg = cache.to_str().unwrap();
    let args = [
        "--cache-dir",
        cache_arg,
        "--block-size",
        "1M",
        "--metrics-addr",
        "127.0.0.1:0",
    ];
    let m = mount_azurite(&az, CONTAINER, &args);
    let mp = m.path();
    let pid = daemon_pid(&mp).expect("the mount's daemon is running");

    // A reader takes the first 8 MiB and pauses, while read-ahead goes on fetching blocks
    // and writing them to the cache disk behind it.
    let (paused_tx, paused) = mpsc::channel();
    let (resume, resume_rx) = mpsc::channel::<()>();
    let path = mp.join("big.bin");
    let reader = std::thread::spawn(move || {
        let mut f = File::open(path).unwrap();
        let mut buf = vec![0u8; 8 * MIB];
        f.read_exact(&mut buf).unwrap();
        paused_tx.send(()).unwrap();
        let _ = resume_rx.recv();
        let mut rest = Vec::new();
        f.read_to_end(&mut rest).map(|_| rest.len())
    });
    paused.recv_timeout(Duration::from_secs(60)).unwrap();
    assert!(
        wait_for(Duration::from_secs(30), || cached_blocks(&cache) >= 8),
        "no blocks reached the cache disk"
    );
    kill_9(pid);
    resume.send(()).unwrap();
    let after = reader.join().unwrap();
    assert!(
        after.as_ref().is_err_and(daemon_gone),
        "the reader sees the daemon gone, not short data: {after:?}"
    );
    let blocks = cached_blocks(&cache);
    eprintln!("after the kill: {blocks} blocks held");

    // What a writer killed before its link leaves: temporary files, an old one (removed
    // at the next start) and a recent one (maybe another mount's: ignored, kept).
    let dirs = object_dirs(&cache);
    let sub = &dirs[0];
    let stale = sub.join(".feedface.tmp.1.ThreadId(1)");
    let fresh = sub.join(".c0ffee.tmp.2.ThreadId(2)");
    std::fs::write(&stale, b"half a block").unwrap();
    std::fs::write(&fresh, b"half a block").unwrap();
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();

    let log = work.path().join("remount.log");
    let lake = lake();
    let mut remount = vec![
        "mount",
        &lake,
        mp.to_str().unwrap(),
        "--log-file",
        log.to_str().unwrap(),
    ];
    remount.extend(args);
    let out = lakemount_az(&az, &remount);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(sha256_file(&mp.join("big.bin")), sha256(&data));
    assert_eq!(metric(&log, "disk_corrupt_blocks_total"), 0);
    assert!(
        metric(&log, "disk_hit_bytes_total") >= blocks << 20,
        "the blocks cached before the kill are used"
    );
    assert!(!stale.exists(), "an old temporary file is cleaned up");
    assert!(fresh.exists(), "a recent one may be another mount's");
}
