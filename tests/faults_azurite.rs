//! The mount against a lake that goes away and comes back (Azurite stopped and restarted),
//! and against one that answers with faults (an injecting proxy in front of Azurite).

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::azurite::{Azurite, ACCOUNT};
use common::dirents::getdents;
use common::faultproxy::FaultProxy;
use common::mount::{is_mounted, lakemount, mount_azurite, wait_for, Mount};
use common::tree::{pseudo_random, sha256};

const CONTAINER: &str = "lake";

#[test]
fn the_mount_survives_the_lake_going_away_and_coming_back() {
    let mut az = Azurite::start();
    az.create_container(CONTAINER);
    let first = pseudo_random(6 << 20, 11);
    let second = pseudo_random(6 << 20, 12);
    az.put_blob(CONTAINER, "first.bin", &first);
    az.put_blob(CONTAINER, "second.bin", &second);
    let m = mount_azurite(
        &az,
        CONTAINER,
        &["--block-size", "1M", "--max-readahead", "2M"],
    );
    let (p1, p2) = (m.path().join("first.bin"), m.path().join("second.bin"));
    assert_eq!(sha256(&std::fs::read(&p1).unwrap()), sha256(&first));
    // Known to the kernel and to the mount, but none of its data fetched yet.
    assert_eq!(std::fs::metadata(&p2).unwrap().len(), second.len() as u64);

    az.stop();
    // What is held in memory is still served.
    assert_eq!(sha256(&std::fs::read(&p1).unwrap()), sha256(&first));
    // A read that needs the lake waits for it (retrying) rather than failing at once ...
    let reader = std::thread::spawn(move || std::fs::read(p2));
    assert!(
        !wait_for(Duration::from_secs(2), || reader.is_finished()),
        "gave up while the lake was down"
    );
    az.restart();
    // ... and then returns the right bytes, or EIO if the lake stayed away too long: never others.
    match reader.join().unwrap() {
        Ok(data) => assert_eq!(sha256(&data), sha256(&second)),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}"),
    }
    // The mount is still up and reads again.
    assert!(is_mounted(&m.path()));
    assert_eq!(
        sha256(&std::fs::read(m.path().join("second.bin")).unwrap()),
        sha256(&second)
    );
}

#[test]
fn faults_on_the_wire_are_retried_and_every_byte_stays_right() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let big = pseudo_random(12 << 20, 21);
    az.put_blob_large(CONTAINER, "data/big.bin", &big);
    for i in 0..6 {
        az.put_blob(
            CONTAINER,
            &format!("data/small{i}.txt"),
            format!("small {i}").as_bytes(),
        );
    }
    // Every 4th request: 503 ServerBusy (Retry-After: 1), 500, or a body cut off, in turn.
    let proxy = FaultProxy::start(az.port(), 4);
    let cs = az.connection_string();
    let env = [("AZURE_STORAGE_CONNECTION_STRING", cs.as_str())];
    let endpoint = proxy.endpoint();
    let m = Mount::start(
        &format!("az://{ACCOUNT}/{CONTAINER}"),
        &["--endpoint", &endpoint, "--block-size", "1M"],
        &env,
    )
    .unwrap_or_else(|o| panic!("mount through the proxy failed: {o:?}"));
    let d = m.path().join("data");
    let mut names: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 7, "{names:?}");
    assert_eq!(
        sha256(&std::fs::read(d.join("big.bin")).unwrap()),
        sha256(&big)
    );
    for i in 0..6 {
        let got = std::fs::read(d.join(format!("small{i}.txt"))).unwrap();
        assert_eq!(got, format!("small {i}").as_bytes());
    }
    // Writes go through the same faults: staged blocks and the commit are retried.
    let out = pseudo_random(5 << 20, 22);
    std::fs::write(m.path().join("out.bin"), &out).unwrap();
    assert_eq!(sha256(&az.get_blob(CONTAINER, "out.bin")), sha256(&out));
    let injected = proxy.injected.load(Ordering::Relaxed);
    assert!(injected >= 6, "only {injected} faults injected");
    // So does `lakemount upload`.
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("up.bin"), &out).unwrap();
    let up = lakemount(
        &[
            "upload",
            src.path().to_str().unwrap(),
            &format!("az://{ACCOUNT}/{CONTAINER}/up"),
            "--endpoint",
            &endpoint,
            "--block-size",
            "1M",
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
    assert_eq!(sha256(&az.get_blob(CONTAINER, "up/up.bin")), sha256(&out));
}

#[test]
fn a_blob_replaced_while_read_gives_estale_never_a_mix() {
    // Straight to Azurite, and through a proxy that drops If-Match (then only the ETag of
    // each response tells an old version from a new one).
    for drop_if_match in [false, true] {
        replaced_while_read(drop_if_match);
    }
}

fn replaced_while_read(drop_if_match: bool) {
    use std::io::Read;
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let old = pseudo_random(16 << 20, 31);
    let new = pseudo_random(16 << 20, 32);
    az.put_blob_large(CONTAINER, "f.bin", &old);
    let flags = [
        "--block-size",
        "1M",
        "--max-readahead",
        "1M",
        "--metadata-ttl",
        "1",
    ];
    let proxy = drop_if_match.then(|| FaultProxy::dropping_if_match(az.port()));
    let m = match &proxy {
        None => mount_azurite(&az, CONTAINER, &flags),
        Some(p) => {
            let sas = az.account_sas("racwdl");
            let endpoint = p.endpoint();
            let mut args = flags.to_vec();
            args.extend(["--endpoint", &endpoint]);
            Mount::start(
                &format!("az://{ACCOUNT}/{CONTAINER}"),
                &args,
                &[("AZURE_STORAGE_SAS_TOKEN", sas.as_str())],
            )
            .unwrap_or_else(|o| panic!("mount through the proxy failed: {o:?}"))
        }
    };
    let p = m.path().join("f.bin");
    let mut f = std::fs::File::open(&p).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    f.read_exact(&mut buf).unwrap();
    assert_eq!(buf, old[..1 << 20]);
    az.put_blob_large(CONTAINER, "f.bin", &new);
    // The handle reads on: every byte it gets is the old blob's, until it gets ESTALE.
    let mut off = 1 << 20;
    let err = loop {
        match f.read(&mut buf) {
            Ok(0) => panic!("read the whole old blob although most of it was not fetched yet"),
            Ok(n) => {
                assert_eq!(
                    buf[..n],
                    old[off..off + n],
                    "bytes at {off} are not the old blob's"
                );
                off += n;
            }
            Err(e) => break e,
        }
    };
    assert_eq!(err.raw_os_error(), Some(libc::ESTALE), "{err}");
    // New opens see the new blob once the metadata TTL has passed.
    assert!(
        wait_for(Duration::from_secs(10), || {
            std::fs::read(&p).is_ok_and(|d| sha256(&d) == sha256(&new))
        }),
        "the new blob never showed"
    );
}

#[test]
fn a_listing_that_never_ends_is_eio_at_once_through_the_mount_and_one_line_from_warm() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    for i in 0..3 {
        az.put_blob(CONTAINER, &format!("data/f{i}"), b"x");
    }
    // Every List Blobs answer names the same continuation marker.
    let proxy = FaultProxy::looping_listings(az.port());
    let cs = az.connection_string();
    let env = [("AZURE_STORAGE_CONNECTION_STRING", cs.as_str())];
    let endpoint = proxy.endpoint();
    let lake = format!("az://{ACCOUNT}/{CONTAINER}");
    let m = Mount::start(&lake, &["--endpoint", &endpoint], &env)
        .unwrap_or_else(|o| panic!("mount through the proxy failed: {o:?}"));
    let before = proxy.requests.load(Ordering::Relaxed);
    let e = std::fs::read_dir(m.path().join("data")).and_then(|d| d.collect::<Result<Vec<_>, _>>());
    assert_eq!(e.err().and_then(|e| e.raw_os_error()), Some(libc::EIO));
    let used = proxy.requests.load(Ordering::Relaxed) - before;
    assert!(used < 20, "{used} requests for one listing");
    assert!(
        wait_for(Duration::from_secs(10), || m
            .log_text()
            .contains("does not end")),
        "the log says why: {}",
        m.log_text()
    );
    let cache = tempfile::tempdir().unwrap();
    let out = lakemount(
        &[
            "warm",
            &format!("{lake}/data"),
            "--cache-dir",
            cache.path().to_str().unwrap(),
            "--endpoint",
            &endpoint,
        ],
        &env,
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("does not end"), "{err}");
}

#[test]
fn a_large_directory_shows_its_first_entries_after_one_listing_page() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    for i in 0..45 {
        az.put_blob(CONTAINER, &format!("big/f{i:03}"), b"x");
    }
    // Pages of 10 entries: the directory lists over 5 pages.
    let proxy = FaultProxy::small_pages(az.port(), 10);
    let sas = az.account_sas("rl");
    let endpoint = proxy.endpoint();
    let m = Mount::start(
        &format!("az://{ACCOUNT}/{CONTAINER}"),
        &[
            "--read-only",
            "--endpoint",
            &endpoint,
            "--metadata-ttl",
            "60",
        ],
        &[("AZURE_STORAGE_SAS_TOKEN", sas.as_str())],
    )
    .unwrap_or_else(|o| panic!("mount through the proxy failed: {o:?}"));
    let big = m.path().join("big");
    assert!(std::fs::metadata(&big).unwrap().is_dir());
    let dir = std::fs::File::open(&big).unwrap();
    let before = proxy.lists.load(Ordering::SeqCst);
    let mut buf = vec![0u8; 64 << 10];
    let first = getdents(&dir, &mut buf);
    assert_eq!(
        first.len(),
        2 + 10,
        "room for all 45, but only the first page's are listed: {first:?}"
    );
    assert_eq!(proxy.lists.load(Ordering::SeqCst) - before, 1);
    let mut all = first;
    loop {
        let more = getdents(&dir, &mut buf);
        if more.is_empty() {
            break;
        }
        all.extend(more);
    }
    let mut names: Vec<_> = all
        .iter()
        .filter(|n| !n.starts_with('.'))
        .cloned()
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 45, "each name once");
    assert_eq!(all.len(), 47);
    assert_eq!(
        proxy.lists.load(Ordering::SeqCst) - before,
        5,
        "each page once"
    );
    // The complete listing answers the next reader.
    assert_eq!(std::fs::read_dir(&big).unwrap().count(), 45);
    assert_eq!(proxy.lists.load(Ordering::SeqCst) - before, 5);
    drop(dir);
}
