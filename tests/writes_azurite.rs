//! Writing through a real FUSE mount of a real Azure-API server (Azurite): what lands in the
//! lake is checked through a second client (Azurite's REST API directly).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::IntoRawFd;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::azurite::Azurite;
use common::mount::{errno, mount_azurite, wait_for};
use common::tree::{pseudo_random, sha256, snapshot, Node};

const CONTAINER: &str = "lake";

/// Every blob below `prefix` (relative names) with its size and SHA-256, as another client sees them.
fn lake_tree(az: &Azurite, prefix: &str) -> BTreeMap<String, Node> {
    az.list_files(CONTAINER, prefix)
        .into_iter()
        .map(|name| {
            let data = az.get_blob(CONTAINER, &name);
            let rel = name[prefix.len()..].to_string();
            let node = Node::File {
                size: data.len() as u64,
                sha256: sha256(&data),
            };
            (rel, node)
        })
        .collect()
}

/// Only the files of a local snapshot (directories have no blob of their own).
fn files_only(tree: BTreeMap<String, Node>) -> BTreeMap<String, Node> {
    tree.into_iter()
        .filter(|(_, n)| matches!(n, Node::File { .. }))
        .collect()
}

fn build_source(root: &Path, big: usize) {
    std::fs::create_dir_all(root.join("imgs/a/b")).unwrap();
    std::fs::write(root.join("README.txt"), b"generated set\n").unwrap();
    std::fs::write(root.join("empty.bin"), b"").unwrap();
    for i in 0..20u64 {
        let data = pseudo_random(1000 + i as usize * 997, i);
        std::fs::write(root.join(format!("imgs/a/crop{i:02}.jpg")), data).unwrap();
    }
    std::fs::write(root.join("imgs/a/b/deep.txt"), b"deep").unwrap();
    std::fs::write(root.join("big.bin"), pseudo_random(big, 99)).unwrap();
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cp_r_of_a_tree_with_a_256mib_file_lands_whole_in_the_lake() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let src = tempfile::tempdir().unwrap();
    build_source(src.path(), 256 << 20);
    let m = mount_azurite(&az, CONTAINER, &[]);
    let dst = m.path().join("sets/v1");
    std::fs::create_dir_all(m.path().join("sets")).unwrap();
    run(Command::new("cp").arg("-r").arg(src.path()).arg(&dst));

    let want = files_only(snapshot(src.path()));
    assert_eq!(
        lake_tree(&az, "sets/v1/"),
        want,
        "a second client sees every file whole"
    );
    assert_eq!(
        files_only(snapshot(&dst)),
        want,
        "the mount shows its own writes at once"
    );
}

#[test]
fn rsync_a_into_the_mount_works() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let src = tempfile::tempdir().unwrap();
    build_source(src.path(), 3 << 20);
    let m = mount_azurite(&az, CONTAINER, &[]);
    // rsync writes a temporary name, renames it into place, then sets times and modes.
    let dst = format!("{}/", m.path().join("r").display());
    let src_arg = format!("{}/", src.path().display());
    run(Command::new("rsync").args(["-a", &src_arg, &dst]));
    let want = files_only(snapshot(src.path()));
    assert_eq!(lake_tree(&az, "r/"), want);
    // A second run over an existing copy succeeds too (it replaces files by rename).
    std::fs::write(src.path().join("README.txt"), b"changed\n").unwrap();
    run(Command::new("rsync").args(["-a", &src_arg, &dst]));
    assert_eq!(az.get_blob(CONTAINER, "r/README.txt"), b"changed\n");
    let names = az.list_blobs(CONTAINER, "r/");
    assert!(
        names.iter().all(|n| !n.contains("/.README.txt.")),
        "no temporary file left: {names:?}"
    );
}

#[test]
fn mv_of_a_file_and_of_a_directory_works() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    az.put_blob(CONTAINER, "a/one.txt", b"one");
    az.put_blob(CONTAINER, "a/sub/two.txt", b"two");
    az.put_blob(CONTAINER, "keep.txt", b"old");
    az.put_blob(CONTAINER, "x.txt", b"new");
    let m = mount_azurite(&az, CONTAINER, &[]);
    let mp = m.path();
    // A file: server-side copy + delete, replacing the target.
    run(Command::new("mv")
        .arg(mp.join("x.txt"))
        .arg(mp.join("keep.txt")));
    assert_eq!(az.get_blob(CONTAINER, "keep.txt"), b"new");
    // A directory on a flat account: copied server-side, then the originals deleted.
    run(Command::new("mv").arg(mp.join("a")).arg(mp.join("b")));
    let names = az.list_files(CONTAINER, "");
    assert_eq!(names, ["b/one.txt", "b/sub/two.txt", "keep.txt"]);
    assert_eq!(std::fs::read(mp.join("b/sub/two.txt")).unwrap(), b"two");
    assert_eq!(errno(std::fs::metadata(mp.join("a"))), Some(libc::ENOENT));
    // Into a directory that does not exist.
    assert_eq!(
        errno(std::fs::rename(mp.join("keep.txt"), mp.join("nodir/k.txt"))),
        Some(libc::ENOENT)
    );
}

#[test]
fn unlink_mkdir_and_rmdir_change_the_lake() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    az.put_blob(CONTAINER, "d/f.txt", b"f");
    let m = mount_azurite(&az, CONTAINER, &[]);
    let mp = m.path();
    assert_eq!(
        errno(std::fs::remove_dir(mp.join("d"))),
        Some(libc::ENOTEMPTY)
    );
    std::fs::remove_file(mp.join("d/f.txt")).unwrap();
    assert_eq!(
        std::fs::read_dir(mp.join("d")).unwrap().count(),
        0,
        "the emptied directory stays"
    );
    std::fs::remove_dir(mp.join("d")).unwrap();
    assert!(az.list_blobs(CONTAINER, "").is_empty());
    std::fs::create_dir(mp.join("new")).unwrap();
    assert_eq!(
        errno(std::fs::create_dir(mp.join("new"))),
        Some(libc::EEXIST)
    );
    assert_eq!(az.list_blobs(CONTAINER, ""), ["new"]);
    assert!(
        az.is_dir_marker(CONTAINER, "new"),
        "mkdir makes a directory marker"
    );
    std::fs::write(mp.join("new/x"), b"x").unwrap();
    run(Command::new("rm").arg("-r").arg(mp.join("new")));
    assert!(az.list_blobs(CONTAINER, "").is_empty());
}

#[test]
fn o_trunc_replaces_and_appends_rewrite_the_blob() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    az.put_blob(CONTAINER, "log.txt", b"first\n");
    let m = mount_azurite(&az, CONTAINER, &[]);
    let p = m.path().join("log.txt");
    let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
    f.write_all(b"second\n").unwrap();
    drop(f);
    assert_eq!(az.get_blob(CONTAINER, "log.txt"), b"first\nsecond\n");
    std::fs::write(&p, b"replaced").unwrap();
    assert_eq!(az.get_blob(CONTAINER, "log.txt"), b"replaced");
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 8);
    assert_eq!(std::fs::read(&p).unwrap(), b"replaced");
    // truncate(1) without an open file.
    run(Command::new("truncate").args(["-s", "0"]).arg(&p));
    assert_eq!(az.get_blob(CONTAINER, "log.txt"), b"");
    // chmod and touch are stored in the blob's metadata; the content stays.
    std::fs::write(&p, b"kept").unwrap();
    run(Command::new("chmod").arg("600").arg(&p));
    run(Command::new("touch")
        .args(["-d", "2020-02-03 04:05:06"])
        .arg(&p));
    let st = std::fs::metadata(&p).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(st.mode() & 0o7777, 0o600);
    let want = Command::new("date")
        .args(["-d", "2020-02-03 04:05:06", "+%s"])
        .output()
        .unwrap();
    let want: i64 = String::from_utf8_lossy(&want.stdout)
        .trim()
        .parse()
        .unwrap();
    assert_eq!(st.mtime(), want);
    assert_eq!(az.get_blob(CONTAINER, "log.txt"), b"kept");
}

#[test]
fn azurite_stopped_mid_upload_gives_eio_keeps_the_staging_file_and_shows_nothing() {
    let mut az = Azurite::start();
    az.create_container(CONTAINER);
    let staging = tempfile::tempdir().unwrap();
    let st = staging.path().to_str().unwrap();
    let m = mount_azurite(&az, CONTAINER, &["--staging-dir", st]);
    let data = pseudo_random(40 << 20, 5);
    let mut f = std::fs::File::create(m.path().join("result.bin")).unwrap();
    f.write_all(&data[..24 << 20]).unwrap();
    az.stop();
    f.write_all(&data[24 << 20..]).unwrap();
    assert_eq!(
        errno(f.sync_all()),
        Some(libc::EIO),
        "fsync reports the failure"
    );
    let fd = f.into_raw_fd();
    // SAFETY: closing the descriptor we own, once; close(2)'s own result is what is tested.
    let r = unsafe { libc::close(fd) };
    assert_eq!(
        (r, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::EIO)),
        "close reports the failure"
    );
    let kept: Vec<_> = std::fs::read_dir(staging.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let staged = kept
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "data"))
        .unwrap_or_else(|| panic!("no staging file in {kept:?}"));
    assert!(
        wait_for(Duration::from_secs(10), || m
            .log_text()
            .contains(&staged.display().to_string())),
        "the log names the staging file: {}",
        m.log_text()
    );
    assert_eq!(sha256(&std::fs::read(staged).unwrap()), sha256(&data));
    az.restart();
    let visible = az.list_blobs(CONTAINER, "");
    assert!(
        visible.is_empty(),
        "nothing half-written is visible: {visible:?}\n{}",
        m.log_text()
    );
}

#[test]
fn a_child_closing_an_inherited_descriptor_uploads_nothing_and_the_last_close_uploads_all() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let m = mount_azurite(&az, CONTAINER, &[]);
    let data = pseudo_random(12 << 20, 9);
    let mut f = std::fs::File::create(m.path().join("model.pt")).unwrap();
    f.write_all(&data[..5 << 20]).unwrap();
    // The child gets a copy of the descriptor at fork and closes it at exec (O_CLOEXEC): a
    // FUSE flush that is answered before the child runs, so it is over once `status` returns.
    run(&mut Command::new("true"));
    assert_eq!(
        az.list_blobs(CONTAINER, ""),
        Vec::<String>::new(),
        "a child's close uploads no partial file"
    );
    f.write_all(&data[5 << 20..]).unwrap();
    drop(f);
    assert_eq!(sha256(&az.get_blob(CONTAINER, "model.pt")), sha256(&data));

    // A file handed to a child as its stdout, closed by the parent before the child writes
    // (as `subprocess.Popen(stdout=f)` then `f.close()` does): the child's output lands at
    // the last close.
    let out = std::fs::File::create(m.path().join("child.log")).unwrap();
    let mut child = Command::new("sh")
        .args(["-c", "read go; echo written by the child"])
        .stdin(std::process::Stdio::piped())
        .stdout(out.try_clone().unwrap())
        .spawn()
        .unwrap();
    drop(out);
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(child.wait().unwrap().success());
    assert!(
        wait_for(Duration::from_secs(20), || az
            .list_blobs(CONTAINER, "child.log")
            .len()
            == 1
            && az.get_blob(CONTAINER, "child.log")
                == b"written by the child\n"),
        "the child's output is in the lake after its last close"
    );
}

#[test]
fn a_full_staging_disk_fails_the_write_with_enospc_and_leaves_the_lake_alone() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    az.put_blob(CONTAINER, "big.bin", b"old");
    let staging = common::tmpfs::Tmpfs::mount("2m");
    let st = staging.path();
    let m = mount_azurite(&az, CONTAINER, &["--staging-dir", st.to_str().unwrap()]);
    let mut f = std::fs::File::create(m.path().join("big.bin")).unwrap();
    let err = f.write_all(&pseudo_random(8 << 20, 7)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    // What did fit is a part: close refuses to commit it.
    // SAFETY: closing the descriptor we own, once.
    let r = unsafe { libc::close(f.into_raw_fd()) };
    assert_eq!(
        (r, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::EIO))
    );
    let blob = az.get_blob(CONTAINER, "big.bin");
    assert_eq!(
        sha256(&blob),
        sha256(b"old"),
        "{} bytes in the lake",
        blob.len()
    );
    drop(m);
}

#[test]
fn a_mount_with_a_sas_unlinks_renames_and_removes_directories() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    az.put_blob(CONTAINER, "x", b"x");
    az.put_blob(CONTAINER, "d/y", b"y");
    let endpoint = az.endpoint();
    let token = az.account_sas("racwdl");
    let m = common::mount::Mount::start(
        &format!("az://{}/{CONTAINER}", common::azurite::ACCOUNT),
        &["--endpoint", &endpoint],
        &[("AZURE_STORAGE_SAS_TOKEN", token.as_str())],
    )
    .unwrap();
    let mp = m.path();
    std::fs::remove_file(mp.join("x")).unwrap();
    std::fs::rename(mp.join("d"), mp.join("e")).unwrap();
    std::fs::remove_file(mp.join("e/y")).unwrap();
    std::fs::remove_dir(mp.join("e")).unwrap();
    assert!(
        az.list_blobs(CONTAINER, "").is_empty(),
        "{:?}",
        az.list_blobs(CONTAINER, "")
    );
}
