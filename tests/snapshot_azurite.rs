//! Snapshots against Azurite and through real FUSE: a manifest taken, the lake changed out of
//! band (a blob added, one replaced, one deleted), then the manifest mounted (the old tree,
//! old bytes where they still exist, ESTALE where they changed, no listing or lookup
//! request), compared (`snapshot diff`), checked against the lake (`snapshot verify`) and
//! warmed (`warm --manifest`).

mod common;

use std::process::Output;
use std::sync::atomic::Ordering;

use common::azurite::{Azurite, ACCOUNT};
use common::faultproxy::FaultProxy;
use common::mount::{errno, lakemount, lakemount_on, output_text as text, Mount};
use common::tree::pseudo_random;

const CONTAINER: &str = "lake";

/// `lakemount ARGS` against Azurite; `snapshot diff` reads files only and takes no endpoint.
fn run(az: &Azurite, args: &[&str]) -> Output {
    if args.get(1) == Some(&"diff") {
        return lakemount(args, &[]).output().unwrap();
    }
    lakemount_on(az, args)
}

#[test]
fn a_mounted_snapshot_shows_the_old_tree_with_no_listing_and_never_other_bytes() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let files = [
        ("ds/a.bin", pseudo_random(3000, 1)),
        ("ds/sub/b.bin", pseudo_random(9 << 20, 2)),
        ("ds/sub/c.bin", pseudo_random(5000, 3)),
        ("ds/del.bin", pseudo_random(700, 4)),
        ("ds/deep/er/d.bin", pseudo_random(10, 5)),
    ];
    for (k, v) in &files {
        az.put_blob(CONTAINER, k, v);
    }
    let dir = tempfile::tempdir().unwrap();
    let (m1, m2) = (dir.path().join("m1"), dir.path().join("m2"));
    let lake = format!("az://{ACCOUNT}/{CONTAINER}/ds");
    let out = run(&az, &["snapshot", &lake, "-o", m1.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("5 objects"),
        "one line with the count: {}",
        text(&out)
    );

    // The lake moves on.
    az.put_blob(CONTAINER, "ds/new.bin", b"new");
    az.put_blob(CONTAINER, "ds/sub/b.bin", b"replaced");
    az.delete_blob(CONTAINER, "ds/del.bin");

    let out = run(&az, &["snapshot", &lake, "-o", m2.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run(
        &az,
        &[
            "snapshot",
            "diff",
            m1.to_str().unwrap(),
            m2.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = said.lines().collect();
    assert!(
        lines[0].ends_with("1 added, 1 removed, 1 changed"),
        "{said}"
    );
    assert_eq!(
        lines[1..],
        ["+ new.bin", "- del.bin", "~ sub/b.bin"],
        "{said}"
    );
    let out = run(
        &az,
        &[
            "snapshot",
            "diff",
            m1.to_str().unwrap(),
            m2.to_str().unwrap(),
            "--json",
        ],
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["added"], serde_json::json!(["new.bin"]));
    assert_eq!(j["removed"], serde_json::json!(["del.bin"]));
    assert_eq!(j["changed"], serde_json::json!(["sub/b.bin"]));

    let out = run(&az, &["snapshot", "verify", m1.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no longer holds snapshot sha256:")
            && err.contains("1 added, 1 removed, 1 changed"),
        "{err}"
    );
    let out = run(&az, &["snapshot", "verify", m2.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("the lake still holds snapshot"));

    // The first snapshot, mounted through a proxy that counts requests.
    let proxy = FaultProxy::faithful(az.port());
    let endpoint = proxy.endpoint();
    let cs = az.connection_string();
    let m = Mount::start(
        m1.to_str().unwrap(),
        &["--manifest", m1.to_str().unwrap(), "--endpoint", &endpoint],
        &[("AZURE_STORAGE_CONNECTION_STRING", cs.as_str())],
    );
    // `mount --manifest FILE MOUNTPOINT` takes the lake from the manifest: Mount::start puts
    // the manifest where the lake goes, which must fail as a lake URL.
    assert!(m.is_err(), "a file path is no lake URL");
    let m = Mount::start_with_mountpoint_only(
        &["--manifest", m1.to_str().unwrap(), "--endpoint", &endpoint],
        &[("AZURE_STORAGE_CONNECTION_STRING", cs.as_str())],
    )
    .unwrap_or_else(|o| panic!("mount --manifest: {o:?}"));
    let mut seen: Vec<String> = walkdir(&m.path());
    seen.sort();
    assert_eq!(
        seen,
        [
            "a.bin",
            "deep/er/d.bin",
            "del.bin",
            "sub/b.bin",
            "sub/c.bin"
        ],
        "the tree as the snapshot saw it"
    );
    for (k, v) in [&files[0], &files[2], &files[4]] {
        let rel = k.strip_prefix("ds/").unwrap();
        assert_eq!(&std::fs::read(m.path().join(rel)).unwrap(), v, "{rel}");
    }
    for rel in ["sub/b.bin", "del.bin"] {
        assert_eq!(
            errno(std::fs::read(m.path().join(rel))),
            Some(libc::ESTALE),
            "{rel} changed since the snapshot"
        );
    }
    assert!(m.log_text().contains("changed since snapshot sha256:"));
    assert!(!m.path().join("new.bin").exists());
    assert_eq!(
        errno(std::fs::write(m.path().join("x"), b"x")),
        Some(libc::EROFS)
    );
    assert_eq!(
        (
            proxy.lists.load(Ordering::Relaxed),
            proxy.heads.load(Ordering::Relaxed)
        ),
        (0, 0),
        "no listing and no lookup reached the lake"
    );
    drop(m);

    // Warming a snapshot fetches exactly its blobs; one changed since is named.
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path().to_str().unwrap();
    let out = run(
        &az,
        &["warm", "--manifest", m2.to_str().unwrap(), "--cache-dir", c],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("5 files"), "{}", text(&out));
    let out = run(
        &az,
        &["warm", "--manifest", m1.to_str().unwrap(), "--cache-dir", c],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("changed since snapshot"),
        "{}",
        text(&out)
    );
}

/// Every file below `root`, relative, as `find -type f` would list it.
fn walkdir(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                dirs.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out
}
