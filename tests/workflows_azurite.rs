//! Training workflows through a real FUSE mount of a flat (Blob) account served by Azurite,
//! run the way training code runs them (Python's `os.replace`, `mv`, `rsync -a`), checked
//! through a second client (Azurite's REST API).

mod common;

use std::path::Path;
use std::process::Command;

use common::azurite::Azurite;
use common::mount::{errno, mount_azurite};
use common::tree::{pseudo_random, sha256, snapshot};

const CONTAINER: &str = "lake";

/// Runs `python3 -c script args...`, which must succeed; returns what it printed.
fn python(script: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A checkpoint saver of the "write a temporary directory, then rename it" kind (Orbax,
/// Lightning): 40 shards and a nested metadata directory, then `os.replace` onto the final name.
const SAVE: &str = r#"
import os, sys
root, step = sys.argv[1], sys.argv[2]
tmp = os.path.join(root, f"ckpt-{step}.tmp")
os.makedirs(os.path.join(tmp, "meta"))
for i in range(40):
    with open(os.path.join(tmp, f"shard-{i:03}.bin"), "wb") as f:
        f.write(bytes([(i * 7 + j) % 251 for j in range(1000 + i * 997)]))
with open(os.path.join(tmp, "meta", "index.json"), "w") as f:
    f.write('{"step": %s}' % step)
os.makedirs(os.path.join(tmp, "empty"))
os.replace(tmp, os.path.join(root, f"ckpt-{step}"))
"#;

#[test]
fn a_checkpoint_directory_saved_then_renamed_with_os_replace_lands_whole_on_a_flat_account() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let m = mount_azurite(&az, CONTAINER, &[]);
    let mp = m.path();
    std::fs::create_dir(mp.join("run")).unwrap();
    for step in ["100", "200"] {
        python(SAVE, &[mp.join("run").as_os_str(), step.as_ref()]);
    }
    for step in ["100", "200"] {
        let names = az.list_files(CONTAINER, &format!("run/ckpt-{step}/"));
        assert_eq!(names.len(), 41, "step {step}: {names:?}");
        assert!(az
            .list_files(CONTAINER, &format!("run/ckpt-{step}.tmp/"))
            .is_empty());
        let shard = az.get_blob(CONTAINER, &format!("run/ckpt-{step}/shard-039.bin"));
        let want: Vec<u8> = (0..1000 + 39 * 997)
            .map(|j| ((39 * 7 + j) % 251) as u8)
            .collect();
        assert_eq!(sha256(&shard), sha256(&want));
        assert!(az.is_dir_marker(CONTAINER, &format!("run/ckpt-{step}/empty")));
    }
    let listed: Vec<String> = std::fs::read_dir(mp.join("run"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut listed = listed;
    listed.sort();
    assert_eq!(listed, ["ckpt-100", "ckpt-200"]);
    // A directory renamed again, by an evaluator that keeps the best one.
    python(
        "import os, sys; os.replace(sys.argv[1], sys.argv[2])",
        &[
            mp.join("run/ckpt-200").as_os_str(),
            mp.join("run/best").as_os_str(),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(mp.join("run/best/meta/index.json")).unwrap(),
        r#"{"step": 200}"#
    );
    // rename(2) keeps POSIX's answers: onto a directory that is not empty, ENOTEMPTY.
    assert_eq!(
        errno(std::fs::rename(
            mp.join("run/ckpt-100"),
            mp.join("run/best")
        )),
        Some(libc::ENOTEMPTY)
    );
    assert_eq!(
        az.list_files(CONTAINER, "run/ckpt-100/").len(),
        41,
        "nothing moved"
    );
}

#[test]
fn past_the_rename_dir_limit_rename_is_exdev_and_mv_still_moves_the_tree() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    for i in 0..12 {
        az.put_blob(
            CONTAINER,
            &format!("a/f{i}"),
            &pseudo_random(100 + i, i as u64),
        );
    }
    let src = tempfile::tempdir().unwrap();
    let m = mount_azurite(&az, CONTAINER, &["--rename-dir-limit", "10"]);
    let mp = m.path();
    let before = snapshot(&mp.join("a"));
    assert_eq!(
        errno(std::fs::rename(mp.join("a"), mp.join("b"))),
        Some(libc::EXDEV)
    );
    let st = Command::new("mv")
        .arg(mp.join("a"))
        .arg(mp.join("b"))
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(snapshot(&mp.join("b")), before);
    assert!(az.list_files(CONTAINER, "a/").is_empty());
    drop(src);
}

/// A dataset tree of `n` small files in 10 directories, with old times and assorted modes.
fn dataset(root: &Path, n: usize) {
    use std::os::unix::fs::PermissionsExt;
    for i in 0..n {
        let dir = root.join(format!("d{}", i % 10));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("{i:05}.jpg"));
        std::fs::write(&p, pseudo_random(200 + i % 700, i as u64)).unwrap();
        let mode = if i % 3 == 0 { 0o600 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        let t =
            std::time::UNIX_EPOCH + std::time::Duration::new(1_600_000_000 + i as u64, 123_456_789);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
}

/// `rsync -a --stats SRC DST`: the number of regular files it transferred.
fn rsync_transferred(src: &Path, dst: &Path) -> usize {
    let out = Command::new("rsync")
        .args(["-a", "--stats"])
        .arg(format!("{}/", src.display()))
        .arg(format!("{}/", dst.display()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("Number of regular files transferred:"))
        .unwrap_or_else(|| panic!("no count in: {text}"));
    line.rsplit(' ')
        .next()
        .unwrap()
        .replace(',', "")
        .parse()
        .unwrap()
}

/// (mtime seconds, nanoseconds, mode bits) of every file below `root`.
fn times_and_modes(root: &Path) -> Vec<(String, i64, i64, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut out: Vec<_> = snapshot(root)
        .into_keys()
        .filter_map(|rel| {
            let m = std::fs::metadata(root.join(&rel)).ok()?;
            m.is_file()
                .then(|| (rel, m.mtime(), m.mtime_nsec(), m.mode() & 0o7777))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_second_rsync_a_transfers_nothing_also_after_a_remount() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let src = tempfile::tempdir().unwrap();
    dataset(src.path(), 300);
    {
        let m = mount_azurite(&az, CONTAINER, &[]);
        let dst = m.path().join("set");
        assert_eq!(rsync_transferred(src.path(), &dst), 300);
        assert_eq!(times_and_modes(&dst), times_and_modes(src.path()));
        assert_eq!(rsync_transferred(src.path(), &dst), 0, "same mount");
    }
    let m = mount_azurite(&az, CONTAINER, &[]);
    let dst = m.path().join("set");
    assert_eq!(rsync_transferred(src.path(), &dst), 0, "after a remount");
    // One file changed: one transferred, and its time is the source's again.
    let p = src.path().join("d3/00013.jpg");
    std::fs::write(&p, b"changed").unwrap();
    assert_eq!(rsync_transferred(src.path(), &dst), 1);
    assert_eq!(times_and_modes(&dst), times_and_modes(src.path()));
}

#[test]
fn upload_stores_times_and_modes_that_the_mount_shows_and_download_restores() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let src = tempfile::tempdir().unwrap();
    dataset(src.path(), 40);
    let endpoint = az.endpoint();
    let cs = az.connection_string();
    let env = [("AZURE_STORAGE_CONNECTION_STRING", cs.as_str())];
    let lake = format!("az://{}/{CONTAINER}/up", common::azurite::ACCOUNT);
    let lm = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--endpoint", endpoint.as_str()]);
        let out = common::mount::lakemount(&all, &env).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    lm(&["upload", src.path().to_str().unwrap(), &lake]);
    // rclone's metadata names, so either tool reads the other's.
    let probe = az
        .request(
            "HEAD",
            &format!("{CONTAINER}/up/d0/00000.jpg"),
            &[],
            &[],
            b"",
        )
        .unwrap();
    assert_eq!(probe.header("x-ms-meta-mode"), Some("600"));
    assert_eq!(
        probe.header("x-ms-meta-mtime"),
        Some("2020-09-13T12:26:40.123456789Z")
    );
    let m = mount_azurite(&az, CONTAINER, &[]);
    assert_eq!(
        times_and_modes(&m.path().join("up")),
        times_and_modes(src.path())
    );
    let dst = tempfile::tempdir().unwrap();
    let out = dst.path().join("copy");
    lm(&["download", &lake, out.to_str().unwrap()]);
    assert_eq!(times_and_modes(&out), times_and_modes(src.path()));
}

/// An evaluator streams a checkpoint while the trainer (another process) replaces it with
/// `os.replace` and checkpoint rotation deletes another: both reads finish the version they
/// opened, as on a local disk.
const EVALUATE: &str = r#"
import hashlib, os, subprocess, sys
root = sys.argv[1]
def trainer(code):
    subprocess.run([sys.executable, "-c", code, root], check=True)
out = []
with open(os.path.join(root, "ckpt.pt"), "rb") as f, open(os.path.join(root, "old.pt"), "rb") as g:
    h, k = hashlib.sha256(f.read(1 << 20)), hashlib.sha256(g.read(1 << 20))
    trainer("import os, sys; r = sys.argv[1]\n"
            "open(os.path.join(r, 'ckpt.pt.tmp'), 'wb').write(b'new' * 100000)\n"
            "os.replace(os.path.join(r, 'ckpt.pt.tmp'), os.path.join(r, 'ckpt.pt'))\n"
            "os.remove(os.path.join(r, 'old.pt'))")
    while chunk := f.read(1 << 20):
        h.update(chunk)
    while chunk := g.read(1 << 20):
        k.update(chunk)
print(h.hexdigest(), k.hexdigest())
"#;

#[test]
fn an_evaluator_finishes_the_checkpoint_it_opened_while_the_trainer_replaces_and_deletes() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let ckpt = pseudo_random(12 << 20, 1);
    let old = pseudo_random(9 << 20, 2);
    az.put_blob_large(CONTAINER, "run/ckpt.pt", &ckpt);
    az.put_blob_large(CONTAINER, "run/old.pt", &old);
    // Small blocks and read-ahead, so most of the file is read from the lake after the change.
    let m = mount_azurite(
        &az,
        CONTAINER,
        &["--block-size", "1M", "--max-readahead", "1M"],
    );
    let mp = m.path();
    let text = python(EVALUATE, &[mp.join("run").as_os_str()]);
    assert_eq!(text, format!("{} {}", sha256(&ckpt), sha256(&old)));
    assert_eq!(az.get_blob(CONTAINER, "run/ckpt.pt"), b"new".repeat(100000));
    assert!(az.try_get_blob(CONTAINER, "run/old.pt").is_none());
    // The kept copies go with the last close.
    assert!(
        common::mount::wait_for(std::time::Duration::from_secs(10), || az
            .list_blobs(CONTAINER, ".lakemount-retained/")
            .is_empty()),
        "{:?}",
        az.list_blobs(CONTAINER, "")
    );
    let listed: Vec<String> = std::fs::read_dir(mp)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(listed, ["run"]);
}

/// How a zarr (v2, `/` separator) reader touches a store: metadata files, then every chunk
/// opened by its path, never listed.
const ZARR_EPOCH: &str = r#"
import os, sys, time
root = sys.argv[1]
t = time.perf_counter()
n = 0
for meta in (".zgroup", "arr/.zarray", "arr/.zattrs"):
    n += len(open(os.path.join(root, meta), "rb").read())
for i in range(8):
    for j in range(10):
        with open(os.path.join(root, "arr", str(i), str(j)), "rb") as f:
            n += len(f.read())
    # A chunk that was never written (a fill-value chunk) is a lookup that fails.
    assert not os.path.exists(os.path.join(root, "arr", str(i), "99"))
print(n, time.perf_counter() - t)
"#;

#[test]
fn a_zarr_epoch_costs_one_listing_per_directory_not_two_requests_per_chunk() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let mut total = 0;
    for (name, len) in [(".zgroup", 24), ("arr/.zarray", 300), ("arr/.zattrs", 2)] {
        az.put_blob(CONTAINER, &format!("z/{name}"), &pseudo_random(len, 9));
        total += len;
    }
    for i in 0..8 {
        for j in 0..10 {
            let data = pseudo_random(4000 + i * 10 + j, (i * 10 + j) as u64);
            total += data.len();
            az.put_blob(CONTAINER, &format!("z/arr/{i}/{j}"), &data);
        }
    }
    // Directories an epoch touches: the root, z, z/arr and its 8 chunk rows.
    let dirs = 11;
    let proxy = common::faultproxy::FaultProxy::faithful(az.port());
    let cache = tempfile::tempdir().unwrap();
    let staging = tempfile::tempdir().unwrap();
    let cs = az.connection_string();
    let env = [("AZURE_STORAGE_CONNECTION_STRING", cs.as_str())];
    let endpoint = proxy.endpoint();
    let args = [
        "--endpoint",
        endpoint.as_str(),
        "--cache-dir",
        cache.path().to_str().unwrap(),
        "--staging-dir",
        staging.path().to_str().unwrap(),
    ];
    let lake = format!("az://{}/{CONTAINER}", common::azurite::ACCOUNT);
    let epoch = |m: &common::mount::Mount| {
        let before = proxy.requests.load(std::sync::atomic::Ordering::Relaxed);
        let printed = python(ZARR_EPOCH, &[m.path().join("z").as_os_str()]);
        let (n, secs) = printed.split_once(' ').unwrap();
        assert_eq!(n, total.to_string());
        let requests = proxy.requests.load(std::sync::atomic::Ordering::Relaxed) - before;
        (requests, secs.parse::<f64>().unwrap())
    };
    // The same tree on local disk, for the time ratio the log shows.
    let local = tempfile::tempdir().unwrap();
    for name in az.list_blobs(CONTAINER, "z/") {
        let path = local.path().join(&name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, az.get_blob(CONTAINER, &name)).unwrap();
    }
    let local_secs = || {
        let printed = python(ZARR_EPOCH, &[local.path().join("z").as_os_str()]);
        printed.split_once(' ').unwrap().1.parse::<f64>().unwrap()
    };
    let files = 83;
    {
        let m = common::mount::Mount::start(&lake, &args, &env).unwrap();
        let (cold, secs) = epoch(&m);
        eprintln!("zarr epoch, cold: {cold} requests, {:.1} ms", secs * 1e3);
        assert!(
            cold <= dirs + files,
            "cold epoch: {cold} requests for {dirs} directories and {files} files"
        );
    }
    // After a remount the data comes from the disk cache: what is left is one listing per
    // directory (before: a HEAD and a listing per name, 2 x 99).
    let m = common::mount::Mount::start(&lake, &args, &env).unwrap();
    let (warm, secs) = epoch(&m);
    let (again, again_secs) = epoch(&m);
    let local = local_secs();
    eprintln!(
        "zarr epoch after a remount: {warm} requests, {:.1} ms; the next epoch: {again} requests, {:.1} ms; local disk {:.1} ms ({:.2}x, {:.2}x)",
        secs * 1e3,
        again_secs * 1e3,
        local * 1e3,
        secs / local,
        again_secs / local
    );
    assert_eq!(
        again, 0,
        "within the metadata TTL the next epoch asks the lake nothing"
    );
    assert!(
        warm <= dirs,
        "warm epoch: {warm} requests for {dirs} directories"
    );
}

/// Azurite behind a proxy that counts requests and uploaded bytes, for mounts through it.
struct Proxied {
    az: Azurite,
    proxy: common::faultproxy::FaultProxy,
    staging: tempfile::TempDir,
}

impl Proxied {
    fn start() -> Proxied {
        let az = Azurite::start();
        az.create_container(CONTAINER);
        let proxy = common::faultproxy::FaultProxy::faithful(az.port());
        Proxied {
            az,
            proxy,
            staging: tempfile::tempdir().unwrap(),
        }
    }

    /// Bytes uploaded through the proxy so far.
    fn sent(&self) -> u64 {
        self.proxy
            .body_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A mount of the container through the proxy, with `extra` flags.
    fn mount(&self, extra: &[&str]) -> common::mount::Mount {
        let endpoint = self.proxy.endpoint();
        let mut args = vec![
            "--endpoint",
            endpoint.as_str(),
            "--staging-dir",
            self.staging.path().to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let cs = self.az.connection_string();
        let lake = format!("az://{}/{CONTAINER}", common::azurite::ACCOUNT);
        common::mount::Mount::start(&lake, &args, &[("AZURE_STORAGE_CONNECTION_STRING", &cs)])
            .unwrap_or_else(|o| panic!("mount failed: {o:?}"))
    }
}

/// A training log kept open (a logger, a TensorBoard event file): with `--commit-interval`,
/// what was written shows in the lake while the file stays open, and each commit sends what
/// was added since the last (widened to its blocks), not the whole file again.
#[test]
fn a_log_kept_open_shows_in_the_lake_as_it_grows_and_each_commit_sends_what_was_added() {
    use std::io::Write;
    let p = Proxied::start();
    let az = &p.az;
    let m = p.mount(&["--commit-interval", "1", "--block-size", "256K"]);
    std::fs::create_dir(m.path().join("run")).unwrap();
    let mut log = std::fs::File::create(m.path().join("run/train.log")).unwrap();
    let mut written = pseudo_random(4 << 20, 3);
    log.write_all(&written).unwrap();
    let shows = |want: &[u8]| {
        common::mount::wait_for(std::time::Duration::from_secs(20), || {
            az.try_get_blob(CONTAINER, "run/train.log").as_deref() == Some(want)
        })
    };
    assert!(
        shows(&written),
        "the first 4 MiB show while the file is open"
    );
    for step in 0..3 {
        let before = p.sent();
        let lines = format!("step {step}: loss 0.{step}\n").repeat(2000);
        log.write_all(lines.as_bytes()).unwrap();
        written.extend_from_slice(lines.as_bytes());
        assert!(
            shows(&written),
            "step {step}: the new lines show, the file still open"
        );
        let sent = p.sent() - before;
        // The block the lines start in and the ones they fill, plus the block list.
        let bound = lines.len() as u64 + 2 * (256 << 10);
        assert!(
            sent <= bound,
            "step {step}: {sent} bytes sent for {} added (the file is {})",
            lines.len(),
            written.len()
        );
    }
    drop(log);
    assert_eq!(az.try_get_blob(CONTAINER, "run/train.log"), Some(written));
}

/// Appending to a large object (`open(..., "ab")`: a log, a record file, a dataset shard
/// grown in place) neither downloads nor uploads it again: an object `lakemount upload`
/// wrote keeps its blocks, and the append sends the block it starts in plus what was
/// appended. 48 MiB by default; `LAKEMOUNT_SOAK=N` makes it N x 48 MiB (22 for 1 GiB).
#[test]
fn an_append_to_a_large_object_sends_the_append_not_the_object() {
    let soak: usize = std::env::var("LAKEMOUNT_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let p = Proxied::start();
    let az = &p.az;
    let src = tempfile::tempdir().unwrap();
    let size = soak * (48 << 20) + 12_345;
    let body = pseudo_random(size, 11);
    std::fs::write(src.path().join("shard.bin"), &body).unwrap();
    let cs = az.connection_string();
    let env = [("AZURE_STORAGE_CONNECTION_STRING", cs.as_str())];
    let lake = format!("az://{}/{CONTAINER}", common::azurite::ACCOUNT);
    let direct = az.endpoint();
    let up = common::mount::lakemount(
        &[
            "upload",
            src.path().to_str().unwrap(),
            &format!("{lake}/data"),
            "--endpoint",
            &direct,
        ],
        &env,
    )
    .output()
    .unwrap();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let m = p.mount(&[]);
    let path = m.path().join("data/shard.bin");
    let appended = b"one more record\n".repeat(4096);
    let before = p.sent();
    let started = std::time::Instant::now();
    python(
        "import sys\nwith open(sys.argv[1], 'ab') as f: f.write(b'one more record\\n' * 4096)",
        &[path.as_os_str()],
    );
    let took = started.elapsed();
    let sent = p.sent() - before;
    eprintln!(
        "append of {} bytes to a {} MiB object: {sent} bytes sent, {took:?}",
        appended.len(),
        size >> 20
    );
    // The 8 MiB block the append starts in, the appended bytes, the block list.
    assert!(
        sent <= (8 << 20) + appended.len() as u64 + 64 * 1024,
        "{sent} bytes sent to append {} to {size}",
        appended.len()
    );
    let want = [&body[..], &appended[..]].concat();
    assert_eq!(
        az.try_get_blob(CONTAINER, "data/shard.bin")
            .map(|b| sha256(&b)),
        Some(sha256(&want))
    );
    // A second append on a fresh handle, read back through the mount.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"tail\n"))
        .unwrap();
    let want = [&want[..], b"tail\n"].concat();
    // Blocks that do not line up (another block size): the object is copied in and sent
    // whole, as before, and still lands right.
    let m2 = p.mount(&["--block-size", "4M"]);
    let read = std::fs::read(m2.path().join("data/shard.bin")).unwrap();
    assert_eq!(sha256(&read), sha256(&want));
    let before = p.sent();
    std::fs::OpenOptions::new()
        .append(true)
        .open(m2.path().join("data/shard.bin"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, &appended))
        .unwrap();
    let whole = p.sent() - before;
    eprintln!("the same append when the blocks do not line up: {whole} bytes sent");
    assert!(whole > size as u64, "{whole}");
    let want = [&want[..], &appended[..]].concat();
    assert_eq!(
        az.try_get_blob(CONTAINER, "data/shard.bin")
            .map(|b| sha256(&b)),
        Some(sha256(&want))
    );
}

/// SQLite on the mount (an experiment tracker's database, an index of a dataset): a
/// transaction that changes a few rows of a large database sends the blocks those pages are
/// in (and its journal), not the database.
#[test]
fn an_sqlite_transaction_on_a_large_database_sends_what_changed_not_the_file() {
    let p = Proxied::start();
    let m = p.mount(&["--block-size", "1M"]);
    let db = m.path().join("runs.db");
    python(
        r#"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.execute("create table runs (id integer primary key, metric real, blob blob)")
c.executemany("insert into runs values (?, ?, ?)", ((i, i / 7, bytes(4000)) for i in range(8000)))
c.commit()
c.close()
"#,
        &[db.as_os_str()],
    );
    let size = std::fs::metadata(&db).unwrap().len();
    let before = p.sent();
    let printed = python(
        r#"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.execute("update runs set metric = -1 where id in (10, 4000)")
c.commit()
print(c.execute("select count(*), sum(metric = -1) from runs").fetchone())
c.close()
"#,
        &[db.as_os_str()],
    );
    assert_eq!(printed, "(8000, 2)");
    let sent = p.sent() - before;
    eprintln!("a two-row transaction on a {size}-byte database: {sent} bytes sent");
    assert!(
        sent < size / 4,
        "{sent} bytes sent for a {size}-byte database"
    );
    // Another mount reads the database the lake now holds.
    drop(m);
    let m = p.mount(&["--block-size", "1M"]);
    let printed = python(
        "import sqlite3, sys\nprint(sqlite3.connect(sys.argv[1]).execute('select sum(metric = -1), count(*) from runs').fetchone())",
        &[m.path().join("runs.db").as_os_str()],
    );
    assert_eq!(printed, "(2, 8000)");
}
