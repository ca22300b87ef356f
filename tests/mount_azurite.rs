//! Mounts of a real Azure-API server (Azurite) through real FUSE.

mod common;

use std::path::Path;

use common::azurite::Azurite;
use common::mount::{errno, is_mounted, lakemount, mount_azurite, Mount};
use common::tree::{pseudo_random, snapshot};

const CONTAINER: &str = "lake";

fn lake() -> String {
    format!("az://{}/{CONTAINER}", common::azurite::ACCOUNT)
}

fn mount(az: &Azurite, extra: &[&str]) -> Mount {
    mount_azurite(az, CONTAINER, extra)
}

/// Writes `rel` under `root` and uploads the same bytes as blob `rel`.
fn both(az: &Azurite, root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, data).unwrap();
    az.put_blob(CONTAINER, rel, data);
}

#[test]
fn azurite_tree_matches_its_source() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let src = tempfile::tempdir().unwrap();
    let root = src.path();

    both(&az, root, "README.txt", b"lake\n");
    both(&az, root, "train/labels.csv", b"id,label\n1,cat\n");
    both(
        &az,
        root,
        "train/img/a/b/c/deep.bin",
        &pseudo_random(300_000, 3),
    );
    both(&az, root, "train/empty.bin", b"");
    both(&az, root, "names/space and ü #1%.txt", b"odd but legal");
    // A hierarchical-namespace style directory: a marker blob, empty ...
    az.put_dir_marker(CONTAINER, "markers/empty-dir");
    std::fs::create_dir_all(root.join("markers/empty-dir")).unwrap();
    // ... and one with content, which must show up once.
    az.put_dir_marker(CONTAINER, "markers/full");
    both(&az, root, "markers/full/x.txt", b"x");

    let big = pseudo_random(64 << 20, 4);
    std::fs::create_dir_all(root.join("big")).unwrap();
    std::fs::write(root.join("big/64MiB.bin"), &big).unwrap();
    az.put_blob_large(CONTAINER, "big/64MiB.bin", &big);

    // 10,000 entries in one directory: two listing pages at Azure's page size.
    std::fs::create_dir_all(root.join("many")).unwrap();
    let names: Vec<String> = (0..10_000).map(|i| format!("many/f{i:05}.txt")).collect();
    std::thread::scope(|s| {
        for chunk in names.chunks(names.len() / 8) {
            let az = &az;
            s.spawn(move || {
                for n in chunk {
                    az.put_blob(CONTAINER, n, n.as_bytes());
                }
            });
        }
    });
    for n in &names {
        std::fs::write(root.join(n), n.as_bytes()).unwrap();
    }

    let m = mount(&az, &[]);
    let got = snapshot(&m.path());
    let want = snapshot(root);
    assert_eq!(got.len(), want.len());
    for (path, node) in &want {
        assert_eq!(got.get(path), Some(node), "{path}");
    }
}

#[test]
fn odd_blob_names_are_skipped_not_fatal() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    az.put_blob(CONTAINER, "odd//double", b"1");
    az.put_blob(CONTAINER, "odd/./dot", b"2");
    az.put_blob(CONTAINER, &format!("odd/{}", "n".repeat(300)), b"3");
    az.put_blob(CONTAINER, "odd/fine.txt", b"fine");
    let m = mount(&az, &[]);
    let mut names: Vec<String> = std::fs::read_dir(m.path().join("odd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["fine.txt"]);
    assert_eq!(
        std::fs::read(m.path().join("odd/fine.txt")).unwrap(),
        b"fine"
    );
    let log = m.log_text();
    assert!(log.contains("skipping blob name \"odd//\""), "{log}");
    assert!(log.contains("skipping blob name \"odd/./\""), "{log}");
}

#[test]
fn missing_names_are_enoent_and_a_read_only_mount_refuses_writes() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    az.put_blob(CONTAINER, "dir/file.txt", b"content");
    let m = mount(&az, &["--read-only"]);
    let mp = m.path();
    assert_eq!(
        errno(std::fs::metadata(mp.join("nope"))),
        Some(libc::ENOENT)
    );
    assert_eq!(
        errno(std::fs::metadata(mp.join("dir/nope"))),
        Some(libc::ENOENT)
    );
    assert_eq!(
        errno(std::fs::File::create(mp.join("dir/new"))),
        Some(libc::EROFS)
    );
    assert_eq!(
        errno(std::fs::remove_file(mp.join("dir/file.txt"))),
        Some(libc::EROFS)
    );
    assert_eq!(errno(std::fs::create_dir(mp.join("d2"))), Some(libc::EROFS));
    assert_eq!(az.get_blob(CONTAINER, "dir/file.txt"), b"content");
    assert_eq!(az.list_blobs(CONTAINER, ""), ["dir/file.txt"]);
}

/// `lakemount mount` against `az` that must fail: exit != 0, one line, no secret in it.
fn refused(endpoint: &str, lake: &str, env: &[(&str, &str)]) -> String {
    let mp = tempfile::tempdir().unwrap();
    let out = lakemount(
        &[
            "mount",
            lake,
            mp.path().to_str().unwrap(),
            "--endpoint",
            endpoint,
        ],
        env,
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "mount should fail: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(!is_mounted(mp.path()));
    for (_, value) in env {
        for secret in secrets(value) {
            assert!(!err.contains(&secret), "a credential leaked into: {err}");
        }
    }
    err
}

/// The secret parts of a credential setting: account keys and SAS signatures.
fn secrets(value: &str) -> Vec<String> {
    value
        .split([';', '&'])
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| k.eq_ignore_ascii_case("AccountKey") || *k == "sig")
        .map(|(_, v)| v.trim_end_matches('=').to_string())
        .collect()
}

#[test]
fn bad_credentials_fail_fast_with_one_line() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let endpoint = az.endpoint();
    let wrong_key = format!(
        "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};BlobEndpoint={endpoint};",
        common::azurite::ACCOUNT,
        "d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXkgd3Jvbmcga2V5IHdyb25nIGtleQ=="
    );
    let err = refused(
        &endpoint,
        &lake(),
        &[("AZURE_STORAGE_CONNECTION_STRING", wrong_key.as_str())],
    );
    // Azure says AuthenticationFailed, Azurite AuthorizationFailure: both are a 403.
    assert!(
        err.contains("access denied") && err.contains("HTTP 403"),
        "{err}"
    );

    let expired_sas = "sv=2021-08-06&ss=b&srt=sco&sp=rl&se=2020-01-01T00:00:00Z&sig=c2lnbmF0dXJlIHRoYXQgaXMgbm90IHZhbGlk";
    let err = refused(
        &endpoint,
        &lake(),
        &[("AZURE_STORAGE_SAS_TOKEN", expired_sas)],
    );
    assert!(err.contains("access denied"), "{err}");
    // A correctly signed SAS whose time is up: the refusal says it expired, and shows no signature.
    let expired = az.account_sas_until("rl", "2020-01-01T00:00:00Z");
    let err = refused(
        &endpoint,
        &lake(),
        &[("AZURE_STORAGE_SAS_TOKEN", expired.as_str())],
    );
    assert!(
        err.contains("the SAS expired at 2020-01-01T00:00:00Z"),
        "{err}"
    );
    assert!(!err.contains("sig="), "{err}");

    let good = az.connection_string();
    let missing = format!("az://{}/no-such-container", common::azurite::ACCOUNT);
    let err = refused(
        &endpoint,
        &missing,
        &[("AZURE_STORAGE_CONNECTION_STRING", good.as_str())],
    );
    assert!(
        err.contains("container \"no-such-container\" does not exist"),
        "{err}"
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_endpoint = format!(
        "http://{}/{}",
        closed.local_addr().unwrap(),
        common::azurite::ACCOUNT
    );
    drop(closed);
    let err = refused(
        &dead_endpoint,
        &lake(),
        &[("AZURE_STORAGE_CONNECTION_STRING", good.as_str())],
    );
    assert!(err.contains("cannot reach"), "{err}");
}

#[test]
fn direct_lookups_find_markers_and_virtual_directories() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    az.put_dir_marker(CONTAINER, "a/empty");
    az.put_blob(CONTAINER, "a/virtual/deep/file.bin", b"0123456789");
    let m = mount(&az, &["--metadata-ttl", "0"]);
    // Straight to the names, no listing first: each lookup is a HEAD plus a one-entry LIST.
    let mp = m.path();
    assert!(std::fs::metadata(mp.join("a/empty")).unwrap().is_dir());
    assert!(std::fs::metadata(mp.join("a/virtual/deep"))
        .unwrap()
        .is_dir());
    let f = std::fs::metadata(mp.join("a/virtual/deep/file.bin")).unwrap();
    assert!(f.is_file() && f.len() == 10);
    assert_eq!(
        std::fs::read(mp.join("a/virtual/deep/file.bin")).unwrap(),
        b"0123456789"
    );
    assert_eq!(std::fs::read_dir(mp.join("a/empty")).unwrap().count(), 0);
    assert!(
        !m.log_text().contains(common::azurite::KEY),
        "the account key is in the log"
    );
}
