//! `lakemount upload` and `lakemount download` against a real Azure-API server (Azurite).

mod common;

use std::path::Path;

use common::azurite::{Azurite, ACCOUNT};
use common::mount::{lakemount_on as lm, output_text as text};
use common::tree::{pseudo_random, sha256, snapshot, Node};

const CONTAINER: &str = "lake";

fn url(path: &str) -> String {
    format!("az://{ACCOUNT}/{CONTAINER}/{path}")
}

fn build_source(root: &Path) {
    std::fs::create_dir_all(root.join("crops/a")).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::write(root.join("labels.csv"), b"id,label\n").unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    std::fs::write(root.join("tmp/scratch.bin"), b"scratch").unwrap();
    for i in 0..30u64 {
        let data = pseudo_random(5000 + i as usize, i);
        std::fs::write(root.join(format!("crops/a/{i:03}.jpg")), data).unwrap();
    }
    // Several blocks at --block-size 1M, the last one short.
    std::fs::write(root.join("big.bin"), pseudo_random((5 << 20) + 123, 7)).unwrap();
}

fn files(tree: std::collections::BTreeMap<String, Node>) -> Vec<(String, Node)> {
    tree.into_iter()
        .filter(|(_, n)| matches!(n, Node::File { .. }))
        .collect()
}

#[test]
fn upload_then_download_round_trips_every_byte_with_content_md5() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let src = tempfile::tempdir().unwrap();
    build_source(src.path());
    let s = src.path().to_str().unwrap();
    let up = lm(
        &az,
        &[
            "upload",
            s,
            &url("sets/v1"),
            "--threads",
            "8",
            "--block-size",
            "1M",
        ],
    );
    assert!(up.status.success(), "{}", text(&up));
    assert!(text(&up).contains("uploaded 34 files"), "{}", text(&up));
    let big = az.get_blob(CONTAINER, "sets/v1/big.bin");
    assert_eq!(
        sha256(&big),
        sha256(&std::fs::read(src.path().join("big.bin")).unwrap())
    );
    let head = az
        .request(
            "HEAD",
            &format!("{CONTAINER}/sets/v1/big.bin"),
            &[],
            &[],
            b"",
        )
        .unwrap();
    assert!(
        head.header("content-md5").is_some(),
        "uploads set Content-MD5"
    );

    let dst = tempfile::tempdir().unwrap();
    let out = dst.path().join("copy");
    let down = lm(
        &az,
        &[
            "download",
            &url("sets/v1"),
            out.to_str().unwrap(),
            "--block-size",
            "1M",
        ],
    );
    assert!(down.status.success(), "{}", text(&down));
    assert_eq!(files(snapshot(&out)), files(snapshot(src.path())));
    let leftovers: Vec<_> = snapshot(&out)
        .into_keys()
        .filter(|k| k.contains("lakemount-partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // One blob to a file name.
    let one = dst.path().join("labels-copy.csv");
    let o = lm(
        &az,
        &[
            "download",
            &url("sets/v1/labels.csv"),
            one.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(&one).unwrap(), b"id,label\n");
}

#[test]
fn existing_targets_refuse_the_whole_upload_with_exit_code_3() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    az.put_blob(CONTAINER, "sets/v1/labels.csv", b"someone else's labels");
    let src = tempfile::tempdir().unwrap();
    build_source(src.path());
    let s = src.path().to_str().unwrap();
    let up = lm(&az, &["upload", s, &url("sets/v1")]);
    assert_eq!(up.status.code(), Some(3), "{}", text(&up));
    let err = String::from_utf8_lossy(&up.stderr);
    assert!(
        err.contains("labels.csv") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert_eq!(
        az.list_blobs(CONTAINER, ""),
        ["sets/v1/labels.csv"],
        "nothing uploaded"
    );
    assert_eq!(
        az.get_blob(CONTAINER, "sets/v1/labels.csv"),
        b"someone else's labels"
    );

    let up = lm(&az, &["upload", s, &url("sets/v1"), "--overwrite"]);
    assert!(up.status.success(), "{}", text(&up));
    assert_eq!(az.get_blob(CONTAINER, "sets/v1/labels.csv"), b"id,label\n");
    // Everything is identical now: a rerun without --overwrite succeeds and sends nothing.
    let again = lm(&az, &["upload", s, &url("sets/v1")]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("uploaded 0 files")
            && text(&again).contains("34 identical files skipped"),
        "{}",
        text(&again)
    );
}

#[test]
fn download_refuses_differing_local_files_and_skips_identical_ones() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    az.put_blob(CONTAINER, "x/a.txt", b"a"); // no Content-MD5: never "identical"
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("b.txt"), b"b").unwrap();
    let up = lm(&az, &["upload", src.path().to_str().unwrap(), &url("x")]);
    assert!(up.status.success(), "{}", text(&up));
    let dst = tempfile::tempdir().unwrap();
    let d = dst.path().to_str().unwrap();
    assert!(lm(&az, &["download", &url("x"), d]).status.success());
    std::fs::write(dst.path().join("a.txt"), b"local edit").unwrap();
    let o = lm(&az, &["download", &url("x"), d]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert_eq!(
        std::fs::read(dst.path().join("a.txt")).unwrap(),
        b"local edit"
    );
    std::fs::remove_file(dst.path().join("a.txt")).unwrap();
    let o = lm(&az, &["download", &url("x"), d]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("1 identical files skipped"),
        "{}",
        text(&o)
    );
}

#[test]
fn include_and_exclude_pick_the_files() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let src = tempfile::tempdir().unwrap();
    build_source(src.path());
    let s = src.path().to_str().unwrap();
    let o = lm(
        &az,
        &[
            "upload",
            s,
            &url("only"),
            "--include",
            "**/*.jpg",
            "--include",
            "*.csv",
            "--exclude",
            "crops/a/00*",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let names = az.list_blobs(CONTAINER, "only/");
    assert_eq!(names.len(), 21, "{names:?}");
    assert!(names
        .iter()
        .all(|n| n.ends_with(".jpg") || n.ends_with(".csv")));
    assert!(!names.iter().any(|n| n.contains("/00")), "{names:?}");
}

#[test]
fn bad_input_gets_one_line_and_a_non_zero_exit() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let src = tempfile::tempdir().unwrap();
    let s = src.path().to_str().unwrap();
    for (args, needle) in [
        (
            vec!["upload", s, "az://Bad_Account/x"],
            "invalid storage account name",
        ),
        (vec!["upload", "/no/such/dir", &url("x")], "/no/such/dir"),
        (
            vec!["upload", s, &format!("az://{ACCOUNT}/missing-container/x")],
            "does not exist",
        ),
        (vec!["upload", s, &url("x"), "--include", "["], "--include"),
        (
            vec!["download", &url("nothing/here"), s],
            "nothing to download",
        ),
    ] {
        let o = lm(&az, &args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
