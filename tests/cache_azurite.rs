//! The block caches against Azurite through real FUSE: warm, remount, out-of-band changes,
//! corrupted blocks. Request counts come from the daemon's own metrics endpoint.

mod common;

use std::path::Path;
use std::time::Duration;

use common::azurite::Azurite;
use common::mount::{lakemount, mount_azurite, wait_for, Mount};
use common::tree::{pseudo_random, sha256, sha256_file};

const CONTAINER: &str = "lake";

fn lake() -> String {
    format!("az://{}/{CONTAINER}", common::azurite::ACCOUNT)
}

fn mount(az: &Azurite, cache: &Path, extra: &[&str]) -> Mount {
    let cache = cache.to_str().unwrap();
    let mut args = vec![
        "--cache-dir",
        cache,
        "--block-size",
        "1M",
        "--metrics-addr",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    mount_azurite(az, CONTAINER, &args)
}

/// One counter from the daemon's Prometheus endpoint (its address is in the log).
fn metric(m: &Mount, name: &str) -> u64 {
    common::metrics::from_log(&m.log_text(), name)
}

fn dataset(az: &Azurite) -> Vec<(String, Vec<u8>)> {
    az.create_container(CONTAINER);
    let files = vec![
        (
            "data/big.bin".to_string(),
            pseudo_random((5 << 20) + 12345, 7),
        ),
        ("data/small.txt".to_string(), b"small".to_vec()),
        ("data/empty".to_string(), Vec::new()),
        ("data/sub/exact.bin".to_string(), pseudo_random(2 << 20, 8)),
    ];
    for (k, v) in &files {
        az.put_blob(CONTAINER, k, v);
    }
    files
}

/// `lakemount warm URL --cache-dir CACHE --block-size 1M` against `az`.
fn warm_output(az: &Azurite, url: &str, cache: &Path) -> std::process::Output {
    let endpoint = az.endpoint();
    let cs = az.connection_string();
    let cache = cache.to_str().unwrap();
    let args = [
        "warm",
        url,
        "--cache-dir",
        cache,
        "--block-size",
        "1M",
        "--endpoint",
        &endpoint,
    ];
    lakemount(&args, &[("AZURE_STORAGE_CONNECTION_STRING", cs.as_str())])
        .output()
        .unwrap()
}

/// Warms the whole container; returns the summary line.
fn warm(az: &Azurite, cache: &Path) -> String {
    let out = warm_output(az, &lake(), cache);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// What `lakemount cache stats` prints for `cache`.
fn cache_stats(cache: &Path) -> String {
    let out = lakemount(
        &["cache", "stats", "--cache-dir", cache.to_str().unwrap()],
        &[],
    )
    .output()
    .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn check_all(m: &Mount, files: &[(String, Vec<u8>)]) {
    for (k, v) in files {
        assert_eq!(sha256_file(&m.path().join(k)), sha256(v), "{k}");
    }
}

#[test]
fn warmed_data_is_served_with_zero_data_gets() {
    let az = Azurite::start();
    let files = dataset(&az);
    let cache = tempfile::tempdir().unwrap();
    let summary = warm(&az, cache.path());
    assert!(summary.contains("4 files"), "{summary}");
    let stats = cache_stats(cache.path());
    assert!(
        stats.contains("blocks:          9"),
        "6 + 1 + 2 blocks of 1 MiB: {stats}"
    );

    let m = mount(&az, cache.path(), &[]);
    check_all(&m, &files);
    assert_eq!(metric(&m, "store_get_requests_total"), 0);
    let total: u64 = files.iter().map(|(_, v)| v.len() as u64).sum();
    assert_eq!(metric(&m, "disk_hit_bytes_total"), total);

    // A second warm finds everything in place.
    let again = warm(&az, cache.path());
    assert!(
        again.contains(&format!(
            "({:.1} MiB already cached)",
            total as f64 / 1048576.0
        )),
        "{again}"
    );
}

#[test]
fn the_cache_survives_a_remount_and_never_serves_a_replaced_blob() {
    let az = Azurite::start();
    let files = dataset(&az);
    let cache = tempfile::tempdir().unwrap();
    {
        let m = mount(&az, cache.path(), &[]);
        check_all(&m, &files);
        assert!(metric(&m, "store_get_requests_total") >= 9);
    }
    let m = mount(&az, cache.path(), &["--metadata-ttl", "1"]);
    check_all(&m, &files);
    assert_eq!(
        metric(&m, "store_get_requests_total"),
        0,
        "all from the disk cache"
    );

    // Replaced out of band, same size: new opens see the new bytes after the TTL, and every
    // read is one version or the other, never a mix.
    let old = files[0].1.clone();
    let new = pseudo_random(old.len(), 99);
    az.put_blob(CONTAINER, &files[0].0, &new);
    let path = m.path().join(&files[0].0);
    let seen_new = wait_for(Duration::from_secs(20), || match std::fs::read(&path) {
        Ok(got) if got == new => true,
        Ok(got) => {
            assert!(got == old, "a read mixed old and new bytes");
            false
        }
        Err(e) => {
            // A handle opened under the old ETag just before the change.
            assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "{e}");
            false
        }
    });
    assert!(seen_new, "the new blob never showed up");
}

#[test]
fn a_corrupted_block_file_is_a_miss_and_refetched() {
    let az = Azurite::start();
    let files = dataset(&az);
    let cache = tempfile::tempdir().unwrap();
    warm(&az, cache.path());
    // Flip one byte near the end of some cached object (its last block).
    let mut objects = Vec::new();
    for sub in std::fs::read_dir(cache.path().join("objects-v2")).unwrap() {
        for f in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_none() {
                objects.push(p);
            }
        }
    }
    objects.sort();
    let victim = &objects[0];
    let mut bytes = std::fs::read(victim).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 0xff;
    std::fs::write(victim, bytes).unwrap();

    // A writable mount: no passthrough, so every block goes through the daemon's check.
    let m = mount(&az, cache.path(), &[]);
    check_all(&m, &files);
    assert_eq!(metric(&m, "disk_corrupt_blocks_total"), 1);
    // A file held whole is never punched (a reader may have it mapped): the bad block's
    // object goes whole. Its blocks read before the bad one were served already; those read
    // again after it come from the lake. The other objects stay.
    let gets = metric(&m, "store_get_requests_total");
    let blocks = n.div_ceil(1 << 20) as u64;
    assert!(
        (1..=blocks).contains(&gets),
        "{gets} GETs: only blocks of the bad block's object ({blocks}) may come from the lake"
    );
}

#[test]
fn cache_clear_empties_the_cache() {
    let az = Azurite::start();
    dataset(&az);
    let cache = tempfile::tempdir().unwrap();
    warm(&az, cache.path());
    let dir = cache.path().to_str().unwrap();
    let out = lakemount(&["cache", "clear", "--cache-dir", dir], &[])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("removed 9 blocks"),
        "{out:?}"
    );
    let out = lakemount(&["cache", "stats", "--cache-dir", dir], &[])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("blocks:          0"));
    let out = lakemount(&["cache", "stats", "--cache-dir", "/no/such/dir"], &[])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn two_mounts_share_one_cache_dir() {
    let az = Azurite::start();
    let files = dataset(&az);
    let cache = tempfile::tempdir().unwrap();
    {
        let a = mount(&az, cache.path(), &[]);
        let b = mount(&az, cache.path(), &[]);
        std::thread::scope(|s| {
            s.spawn(|| check_all(&a, &files));
            s.spawn(|| check_all(&b, &files));
        });
    }
    // Both wrote the same blocks at once; a third mount finds every one of them intact.
    let c = mount(&az, cache.path(), &[]);
    check_all(&c, &files);
    assert_eq!(metric(&c, "store_get_requests_total"), 0);
    assert_eq!(metric(&c, "disk_corrupt_blocks_total"), 0);
}

#[test]
fn pages_read_at_random_serve_the_next_mount_and_warm_completes_their_blocks() {
    use std::os::unix::fs::FileExt;
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let data = pseudo_random(16 << 20, 11);
    az.put_blob(CONTAINER, "db/data.mdb", &data);
    let cache = tempfile::tempdir().unwrap();
    // A database's gets: 4 KiB pages far apart, in no order.
    let offsets: Vec<u64> = [13u64, 2, 9, 5, 15, 7, 11, 3]
        .iter()
        .map(|m| m * (1 << 20) + m * 4096 + 123)
        .collect();
    let preads = |m: &Mount| {
        let f = std::fs::File::open(m.path().join("db/data.mdb")).unwrap();
        let mut buf = vec![0u8; 4096];
        for &off in &offsets {
            f.read_exact_at(&mut buf, off).unwrap();
            assert!(
                buf[..] == data[off as usize..off as usize + 4096],
                "at {off}"
            );
        }
    };
    {
        let m = mount(&az, cache.path(), &[]);
        preads(&m);
        let fetched = metric(&m, "store_get_bytes_total");
        assert!(
            fetched < 4 << 20,
            "{fetched} bytes fetched for 8 random reads"
        );
    }
    let stats = cache_stats(cache.path());
    assert!(stats.contains("partly held:"), "{stats}");
    {
        let m = mount(&az, cache.path(), &[]);
        preads(&m);
        assert_eq!(
            metric(&m, "store_get_requests_total"),
            0,
            "pages kept in the disk cache were fetched again"
        );
        assert!(metric(&m, "disk_hit_bytes_total") >= 8 * 4096);
    }
    // Pages are not blocks: warm fetches every block not held whole.
    let summary = warm(&az, cache.path());
    assert!(!summary.contains("(16.0 MiB already cached)"), "{summary}");
    let m = mount(&az, cache.path(), &[]);
    assert_eq!(sha256_file(&m.path().join("db/data.mdb")), sha256(&data));
    assert_eq!(metric(&m, "store_get_requests_total"), 0);
    assert_eq!(metric(&m, "disk_corrupt_blocks_total"), 0);
}

#[test]
fn warm_of_a_directory_with_no_files_is_an_error() {
    let az = Azurite::start();
    dataset(&az);
    let cache = tempfile::tempdir().unwrap();
    let out = warm_output(&az, &format!("{}/no/such/dir", lake()), cache.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no files below"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}
