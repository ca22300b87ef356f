//! The mount against a lake that goes away and comes back (Azurite stopped and restarted).

mod common;

use std::time::Duration;

use common::azurite::Azurite;
use common::mount::{is_mounted, mount_azurite, wait_for};
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
