//! The Azurite harness itself: it starts, stores any blob name byte-exactly, and survives a
//! stop/restart with its data.

mod common;

use common::azurite::{Azurite, ACCOUNT, KEY};
use common::tree::pseudo_random;

#[test]
fn odd_names_round_trip() {
    let az = Azurite::start();
    az.create_container("data");

    let long = format!("{}/f", "s".repeat(300));
    let blobs: Vec<(&str, Vec<u8>)> = vec![
        ("hello.txt", b"hello\n".to_vec()),
        ("a//b", b"double slash".to_vec()),
        ("x/./y", b"dot segment".to_vec()),
        ("x/../z", b"dot-dot segment".to_vec()),
        (long.as_str(), b"long segment".to_vec()),
        (
            "names/with space & \u{fc}?#%.txt",
            b"odd but legal".to_vec(),
        ),
        ("empty", Vec::new()),
        ("bin", pseudo_random(100_000, 7)),
    ];
    for (name, data) in &blobs {
        az.put_blob("data", name, data);
    }
    az.put_dir_marker("data", "dir");

    let mut expected: Vec<&str> = blobs.iter().map(|(n, _)| *n).collect();
    expected.push("dir");
    expected.sort();
    assert_eq!(az.list_blobs("data", ""), expected);
    assert_eq!(
        az.list_blobs_paged("data", "", 2),
        expected,
        "paged listing"
    );
    assert_eq!(az.list_blobs("data", "x/"), ["x/../z", "x/./y"]);
    assert_eq!(az.list_blobs("data", "a/"), ["a//b"]);

    for (name, data) in &blobs {
        assert_eq!(&az.get_blob("data", name), data, "{name:?}");
    }
    let marker = az.request("HEAD", "data/dir", &[], &[], b"").unwrap();
    assert_eq!(marker.status, 200);
    assert_eq!(marker.header("x-ms-meta-hdi_isfolder"), Some("true"));
    assert_eq!(marker.header("content-length"), Some("0"));

    az.delete_blob("data", "a//b");
    assert_eq!(az.list_blobs("data", "a"), Vec::<String>::new());
    let gone = az.request("GET", "data/a//b", &[], &[], b"").unwrap();
    assert_eq!(gone.status, 404);
}

#[test]
fn large_blob_in_blocks() {
    let az = Azurite::start();
    az.create_container("big");
    let data = pseudo_random(64 << 20, 3);
    az.put_blob_large("big", "checkpoints/model.bin", &data);
    assert!(az.get_blob("big", "checkpoints/model.bin") == data);

    let props = az
        .request("HEAD", "big/checkpoints/model.bin", &[], &[], b"")
        .unwrap();
    assert_eq!(props.header("x-ms-blob-type"), Some("BlockBlob"));
    assert_eq!(
        props.header("content-length"),
        Some((64u64 << 20).to_string().as_str())
    );
    // Committed as 8 MiB blocks, as large uploads are.
    let blocks = az
        .request(
            "GET",
            "big/checkpoints/model.bin",
            &[("comp", "blocklist")],
            &[],
            b"",
        )
        .unwrap();
    assert_eq!(blocks.status, 200);
    let xml = String::from_utf8(blocks.body).unwrap();
    assert_eq!(xml.matches("<Block>").count(), 8, "{xml}");
}

#[test]
fn stop_and_restart_keep_data() {
    let mut az = Azurite::start();
    let port = az.port();
    assert_eq!(az.endpoint(), format!("http://127.0.0.1:{port}/{ACCOUNT}"));
    assert!(az
        .connection_string()
        .contains(&format!("AccountKey={KEY};")));
    az.create_container("keep");
    az.put_blob("keep", "a//b", b"before the restart");

    az.stop();
    let err = az
        .request("GET", "keep/a//b", &[], &[], b"")
        .expect_err("Azurite is stopped");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");

    az.restart();
    assert_eq!(az.port(), port);
    assert_eq!(az.get_blob("keep", "a//b"), b"before the restart");
    az.put_blob("keep", "after", b"new");
    assert_eq!(az.list_blobs("keep", ""), ["a//b", "after"]);
}
