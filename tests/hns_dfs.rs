//! The hierarchical-namespace (ADLS Gen2) half of lakemount against a test server for the DFS
//! REST operations (`common::dfs`), which fronts Azurite and shares its storage: the account
//! reports `x-ms-is-hns-enabled: true`, renames are one atomic DFS call, and the tree behaves
//! like a local disk through a real FUSE mount.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;

use common::azurite::{Azurite, ACCOUNT};
use common::dfs::DfsServer;
use common::mount::{errno, Mount};
use common::tree::{pseudo_random, snapshot};

const CONTAINER: &str = "lake";

fn mount(az: &Azurite, dfs: &DfsServer, sas: bool) -> Mount {
    mount_with(az, dfs, sas, &[])
}

fn mount_with(az: &Azurite, dfs: &DfsServer, sas: bool, extra: &[&str]) -> Mount {
    let endpoint = dfs.endpoint();
    let cs = az.connection_string();
    let token = az.account_sas("racwdl");
    let env = if sas {
        [("AZURE_STORAGE_SAS_TOKEN", token.as_str())]
    } else {
        [("AZURE_STORAGE_CONNECTION_STRING", cs.as_str())]
    };
    let mut args = vec!["--endpoint", endpoint.as_str()];
    args.extend_from_slice(extra);
    Mount::start(&format!("az://{ACCOUNT}/{CONTAINER}"), &args, &env)
        .unwrap_or_else(|o| panic!("mount failed: {o:?}"))
}

/// What an answer of the server says: status, `x-ms-error-code`, and the JSON body's code.
fn dfs_error(r: &common::azurite::Response) -> (u16, String, bool) {
    let code = r.header("x-ms-error-code").unwrap_or_default().to_string();
    let body = String::from_utf8_lossy(&r.body);
    let in_body = body.contains(&format!("\"code\":\"{code}\""));
    (r.status, code, in_body)
}

#[test]
fn the_server_answers_as_the_dfs_reference_says() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    az.put_blob(CONTAINER, "d/a b%.txt", b"x");
    az.put_blob(CONTAINER, "f", b"f");
    let dfs = DfsServer::start(&az, az.port());
    let c = az.at_port(dfs.port());
    let props = c
        .request(
            "HEAD",
            "",
            &[("restype", "account"), ("comp", "properties")],
            &[],
            b"",
        )
        .unwrap();
    assert_eq!(props.header("x-ms-is-hns-enabled"), Some("true"));
    let rename = |to: &str, source: &str, extra: &[(&str, &str)]| {
        let mut h = vec![("x-ms-rename-source", source)];
        h.extend_from_slice(extra);
        c.request("PUT", &format!("{CONTAINER}/{to}"), &[], &h, b"")
            .unwrap()
    };
    let src = format!("/{ACCOUNT}/{CONTAINER}/nope");
    assert_eq!(
        dfs_error(&rename("x", &src, &[])),
        (404, "SourcePathNotFound".into(), true)
    );
    let src = format!("/{ACCOUNT}/{CONTAINER}/f");
    let r = rename("missing/x", &src, &[]);
    assert_eq!(
        dfs_error(&r),
        (404, "RenameDestinationParentPathNotFound".into(), true)
    );
    let r = rename("d", &src, &[]);
    assert_eq!(dfs_error(&r), (409, "PathConflict".into(), true));
    // A percent-encoded source, onto an existing name only if allowed.
    let src = format!("/{ACCOUNT}/{CONTAINER}/d/a%20b%25.txt");
    let r = rename("f", &src, &[("if-none-match", "*")]);
    assert_eq!(dfs_error(&r), (409, "PathAlreadyExists".into(), true));
    assert_eq!(rename("f", &src, &[]).status, 201);
    assert_eq!(az.get_blob(CONTAINER, "f"), b"x");
    assert!(az.try_get_blob(CONTAINER, "d/a b%.txt").is_none());
    // Directory create and recursive delete.
    let create = c
        .request(
            "PUT",
            &format!("{CONTAINER}/e"),
            &[("resource", "directory")],
            &[],
            b"",
        )
        .unwrap();
    assert_eq!(create.status, 201);
    assert!(az.is_dir_marker(CONTAINER, "e"));
    az.put_blob(CONTAINER, "e/g", b"g");
    let del = |recursive| {
        c.request(
            "DELETE",
            &format!("{CONTAINER}/e"),
            &[("recursive", recursive)],
            &[],
            b"",
        )
        .unwrap()
    };
    assert_eq!(
        dfs_error(&del("false")),
        (409, "DirectoryNotEmpty".into(), true)
    );
    assert_eq!(del("true").status, 200);
    assert!(az.list_blobs(CONTAINER, "e").is_empty());
    assert_eq!(dfs_error(&del("true")), (404, "PathNotFound".into(), true));
    // A request whose signature is not the account key's is refused.
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", dfs.port())).unwrap();
    let forged = format!(
        "PUT /{ACCOUNT}/{CONTAINER}/z HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\
         x-ms-version: 2023-11-03\r\nx-ms-rename-source: /{ACCOUNT}/{CONTAINER}/f\r\n\
         Authorization: SharedKey {ACCOUNT}:Zm9yZ2Vk\r\n\r\n"
    );
    use std::io::{Read, Write};
    conn.write_all(forged.as_bytes()).unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(
        answer.contains("x-ms-error-code: AuthenticationFailed"),
        "{answer}"
    );
    assert_eq!(az.get_blob(CONTAINER, "f"), b"x", "nothing renamed");
}

/// 1,000 files; `LAKEMOUNT_SOAK=N` makes it N x 1,000. What lakemount does does not depend
/// on the count (one call); the test server's copy of Azurite's blobs does, and Azurite slows
/// down with every blob it holds (10,000 took it over ten minutes here), hence the default.
#[test]
fn a_large_directory_is_renamed_in_one_atomic_call() {
    let soak: usize = std::env::var("LAKEMOUNT_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let files = 1_000 * soak.max(1);
    let az = Azurite::start();
    az.create_container(CONTAINER);
    std::thread::scope(|s| {
        for t in 0..8 {
            let az = &az;
            s.spawn(move || {
                for i in (t..files).step_by(8) {
                    let name = format!("ckpt-tmp/shard-{:02}/{i:05}.bin", i % 50);
                    az.put_blob(CONTAINER, &name, format!("{i}").as_bytes());
                }
            });
        }
    });
    let dfs = DfsServer::start(&az, az.port());
    // The test server moves 20,000 blobs of Azurite's for what ADLS does in one step: its
    // rename gets the time that takes.
    let m = mount_with(
        &az,
        &dfs,
        false,
        &["--metadata-timeout", "900", "--data-timeout", "900"],
    );
    let mp = m.path();
    let st = Command::new("python3")
        .arg("-c")
        .arg("import os, sys; os.replace(sys.argv[1], sys.argv[2])")
        .arg(mp.join("ckpt-tmp"))
        .arg(mp.join("ckpt-500"))
        .status()
        .unwrap();
    assert!(st.success(), "{}", m.log_text());
    assert_eq!(
        dfs.renames.load(Ordering::Relaxed),
        1,
        "one DFS rename, not a copy per file"
    );
    assert_eq!(az.list_files(CONTAINER, "ckpt-500/").len(), files);
    assert!(az.list_blobs(CONTAINER, "ckpt-tmp").is_empty());
    assert_eq!(
        std::fs::read(mp.join("ckpt-500/shard-07/00957.bin")).unwrap(),
        b"957"
    );
    assert_eq!(
        errno(std::fs::metadata(mp.join("ckpt-tmp"))),
        Some(libc::ENOENT)
    );
}

#[test]
fn renames_onto_existing_targets_mkdir_and_rmdir_behave_like_a_local_disk_also_with_a_sas() {
    for sas in [false, true] {
        let az = Azurite::start();
        az.create_container(CONTAINER);
        let dfs = DfsServer::start(&az, az.port());
        let m = mount(&az, &dfs, sas);
        let mp = m.path();
        std::fs::write(mp.join("a.txt"), b"new").unwrap();
        std::fs::write(mp.join("b.txt"), b"old").unwrap();
        std::fs::rename(mp.join("a.txt"), mp.join("b.txt")).unwrap();
        assert_eq!(az.get_blob(CONTAINER, "b.txt"), b"new");
        std::fs::create_dir(mp.join("empty")).unwrap();
        std::fs::create_dir_all(mp.join("full/sub")).unwrap();
        std::fs::write(mp.join("full/sub/x"), b"x").unwrap();
        std::fs::create_dir(mp.join("src")).unwrap();
        std::fs::write(mp.join("src/y"), b"y").unwrap();
        assert_eq!(
            errno(std::fs::rename(mp.join("src"), mp.join("full"))),
            Some(libc::ENOTEMPTY)
        );
        std::fs::rename(mp.join("src"), mp.join("empty"))
            .unwrap_or_else(|e| panic!("sas {sas}: {e}\n{}", m.log_text()));
        assert_eq!(std::fs::read(mp.join("empty/y")).unwrap(), b"y");
        assert_eq!(
            errno(std::fs::remove_dir(mp.join("full"))),
            Some(libc::ENOTEMPTY)
        );
        std::fs::remove_file(mp.join("full/sub/x")).unwrap();
        std::fs::remove_dir(mp.join("full/sub")).unwrap();
        std::fs::remove_dir(mp.join("full")).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(mp)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["b.txt", "empty"], "sas {sas}");
        assert!(dfs.renames.load(Ordering::Relaxed) >= 2, "sas {sas}");
        let sources = dfs.sources.lock().unwrap().clone();
        assert!(
            sources.iter().all(|s| s.contains("sig=") == sas),
            "sas {sas}: a SAS request names its source with the SAS: {sources:?}"
        );
    }
}

/// One step of a random sequence, applied to the mount and to a local directory alike.
fn apply(root: &Path, op: u64, a: &str, b: &str, data: &[u8]) -> Result<(), i32> {
    let (pa, pb) = (root.join(a), root.join(b));
    let r = match op % 6 {
        0 => std::fs::write(&pa, data),
        1 => std::fs::create_dir(&pa),
        2 => std::fs::remove_file(&pa),
        3 => std::fs::remove_dir(&pa),
        _ => std::fs::rename(&pa, &pb),
    };
    r.map_err(|e| e.raw_os_error().unwrap_or(-1))
}

/// Random sequences of writes, mkdir, rmdir, unlink and renames of files and directories
/// (the reference model's hierarchical operations), through the mount and on a local disk:
/// every step answers the same, and the trees end the same.
#[test]
fn random_sequences_through_the_mount_match_a_local_disk() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let dfs = DfsServer::start(&az, az.port());
    let m = mount(&az, &dfs, false);
    let names = ["a", "b", "a/b", "b/a", "a/a", "c", "b/c/a"];
    let mut seed = 0x5eed_u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..12 {
        let mounted = m.path().join(format!("r{round}"));
        let local_dir = tempfile::tempdir().unwrap();
        let local = local_dir.path().join("r");
        std::fs::create_dir(&mounted).unwrap();
        std::fs::create_dir(&local).unwrap();
        let mut steps = Vec::new();
        for _ in 0..25 {
            let (op, a, b) = (
                next(),
                next() as usize % names.len(),
                next() as usize % names.len(),
            );
            let data = pseudo_random(next() as usize % 64, op);
            let want = apply(&local, op, names[a], names[b], &data);
            let got = apply(&mounted, op, names[a], names[b], &data);
            steps.push(format!(
                "op {} {} {} -> {want:?}",
                op % 6,
                names[a],
                names[b]
            ));
            assert_eq!(got, want, "round {round}: {steps:#?}");
        }
        assert_eq!(
            snapshot(&mounted),
            snapshot(&local),
            "round {round}: {steps:#?}"
        );
    }
}
