//! Security: credentials never reach any output, cached and staged data is private on disk,
//! and other users reach a mount only with `--allow-other`, then as the kernel checks the
//! configured owner and modes.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use common::azurite::{Azurite, ACCOUNT, KEY};
use common::mount::{lakemount, wait_for, Mount};
use common::tree::pseudo_random;

const CONTAINER: &str = "lake";

fn lake() -> String {
    format!("az://{ACCOUNT}/{CONTAINER}")
}

/// The environment variables of one credential.
type Env<'a> = Vec<(&'a str, &'a str)>;

/// Everything a run printed or logged, to be searched for secrets.
#[derive(Default)]
struct Outputs(Vec<(String, Vec<u8>)>);

impl Outputs {
    fn command(&mut self, what: &str, out: &Output) {
        self.0.push((format!("{what}: stdout"), out.stdout.clone()));
        self.0.push((format!("{what}: stderr"), out.stderr.clone()));
    }

    fn file(&mut self, what: &str, path: &Path) {
        let data = std::fs::read(path).unwrap_or_default();
        assert!(!data.is_empty(), "{what}: {} is empty", path.display());
        self.0.push((format!("{what}: {}", path.display()), data));
    }

    /// Panics naming the output and the form in which a secret shows up.
    fn assert_free_of(&self, secrets: &[(String, Vec<u8>)]) {
        for (what, data) in &self.0 {
            for (form, secret) in secrets {
                let found = data.windows(secret.len()).any(|w| w == &secret[..]);
                assert!(!found, "{form} appears in {what}");
            }
        }
    }
}

fn percent(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The forms in which the account key and a SAS signature could leak, and the markers of
/// an Authorization header or a connection string being printed whole.
fn secret_forms(sas: &str) -> Vec<(String, Vec<u8>)> {
    let raw = BASE64.decode(KEY).unwrap();
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let sig_enc = sas
        .split('&')
        .find_map(|kv| kv.strip_prefix("sig="))
        .unwrap();
    let sig = percent_encoding::percent_decode_str(sig_enc)
        .decode_utf8()
        .unwrap()
        .to_string();
    let mut forms = vec![
        ("the account key".to_string(), KEY.as_bytes().to_vec()),
        (
            "the account key, percent-encoded".into(),
            percent(KEY).into(),
        ),
        ("the account key's bytes".into(), raw),
        ("the account key's bytes in hex".into(), hex.into()),
        ("the SAS signature".into(), sig.trim_end_matches('=').into()),
        ("the SAS signature, percent-encoded".into(), sig_enc.into()),
        ("a Shared Key authorization".into(), b"SharedKey ".to_vec()),
        ("a SAS query".into(), b"sig=".to_vec()),
        ("a connection string".into(), b"AccountKey=".to_vec()),
    ];
    // A prefix long enough to be unique: catches a key cut short in a message.
    forms.push((
        "the start of the account key".into(),
        KEY.as_bytes()[..16].to_vec(),
    ));
    forms
}

/// `lakemount -vv ARGS` (trace logging, so every layer that logs does) with one credential.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut all = vec!["-vv"];
    all.extend_from_slice(args);
    lakemount(&all, env).output().unwrap()
}

/// Mounts with one credential, reads, lists and writes through the mount, unmounts, and
/// collects the command's output and the daemon's log.
fn mount_read_write(
    az: &Azurite,
    work: &Path,
    lake_url: &str,
    name: &str,
    env: &[(&str, &str)],
    extra: &[&str],
    outputs: &mut Outputs,
) {
    let mp = work.join(format!("mnt-{name}"));
    std::fs::create_dir(&mp).unwrap();
    let log = work.join(format!("{name}.log"));
    let staging = work.join(format!("staging-{name}"));
    let endpoint = az.endpoint();
    let mut args = vec![
        "mount",
        lake_url,
        mp.to_str().unwrap(),
        "--endpoint",
        &endpoint,
        "--log-file",
        log.to_str().unwrap(),
        "--staging-dir",
        staging.to_str().unwrap(),
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&args, env);
    let _guard = Unmount(mp.clone());
    assert!(out.status.success(), "{name}: {out:?}");
    outputs.command(&format!("{name}: mount"), &out);
    assert_eq!(std::fs::read(mp.join("in/a.txt")).unwrap(), b"a");
    assert_eq!(std::fs::read_dir(mp.join("in")).unwrap().count(), 2);
    // What anyone on the machine can read of the daemon: its command line.
    let pid = common::proc::daemon_pid(&mp).expect("the daemon runs");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    outputs
        .0
        .push((format!("{name}: daemon command line"), cmdline));
    std::fs::write(
        mp.join(format!("out-{name}.bin")),
        pseudo_random(3 << 20, 1),
    )
    .unwrap();
    // A refused request (a missing name) and a failed one (a write the credential may not do).
    assert!(std::fs::metadata(mp.join("missing")).is_err());
    drop(_guard);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains(" TRACE "),
        "{name}: the daemon logs at trace level"
    );
    outputs.file(&format!("{name}: daemon log"), &log);
}

/// Unmounts a mount point made by a test, also when the test fails.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = lakemount(&["unmount", "--lazy", self.0.to_str().unwrap()], &[]).output();
        wait_for(Duration::from_secs(10), || {
            !common::mount::is_mounted(&self.0)
        });
    }
}

#[test]
fn credentials_never_appear_in_output_logs_or_errors() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    az.put_blob(CONTAINER, "in/a.txt", b"a");
    az.put_blob(CONTAINER, "in/b.bin", &pseudo_random(2 << 20, 2));
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let sas = az.account_sas("racwdl");
    let endpoint = az.endpoint();
    let cs = az.connection_string();
    let cs_sas = format!("BlobEndpoint={endpoint};SharedAccessSignature={sas}");
    let mut outputs = Outputs::default();

    // Every credential form, through a mount that reads and writes.
    let key_env = [("AZURE_STORAGE_ACCOUNT_KEY", KEY)];
    let creds: [(&str, Env, Vec<&str>); 4] = [
        (
            "connection-string",
            vec![("AZURE_STORAGE_CONNECTION_STRING", &cs)],
            vec![],
        ),
        ("account-key", key_env.to_vec(), vec!["--auth", "key"]),
        (
            "sas",
            vec![("AZURE_STORAGE_SAS_TOKEN", &sas)],
            vec!["--auth", "sas"],
        ),
        (
            "sas-connection-string",
            vec![("AZURE_STORAGE_CONNECTION_STRING", &cs_sas)],
            vec![],
        ),
    ];
    for (name, env, extra) in &creds {
        mount_read_write(&az, w, &lake(), name, env, extra, &mut outputs);
    }
    // A SAS URL as the lake, as the portal and azcopy hand them out, with no other credential.
    let sas_url =
        |path: &str| format!("https://{ACCOUNT}.blob.core.windows.net/{CONTAINER}{path}?{sas}");
    mount_read_write(&az, w, &sas_url(""), "sas-url", &[], &[], &mut outputs);
    assert!(
        az.try_get_blob(CONTAINER, "out-sas-url.bin").is_some(),
        "written through the SAS URL's mount"
    );

    // upload and download, with the key and with the SAS.
    let src = w.join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("up.bin"), pseudo_random(3 << 20, 3)).unwrap();
    for (name, env, extra) in [&creds[1], &creds[2]] {
        let dest = format!("{}/up-{name}", lake());
        let mut args = vec![
            "upload",
            src.to_str().unwrap(),
            &dest,
            "--endpoint",
            &endpoint,
        ];
        args.extend(extra);
        let out = run(&args, env);
        assert!(out.status.success(), "{out:?}");
        outputs.command(&format!("{name}: upload"), &out);
        let down = w.join(format!("down-{name}"));
        let mut args = vec![
            "download",
            &dest,
            down.to_str().unwrap(),
            "--endpoint",
            &endpoint,
        ];
        args.extend(extra);
        let out = run(&args, env);
        assert!(out.status.success(), "{out:?}");
        outputs.command(&format!("{name}: download"), &out);
    }
    let up = sas_url("/up-sas-url");
    let out = run(
        &[
            "upload",
            src.to_str().unwrap(),
            &up,
            "--endpoint",
            &endpoint,
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    outputs.command("sas-url: upload", &out);
    let down = w.join("down-sas-url");
    let out = run(
        &[
            "download",
            &up,
            down.to_str().unwrap(),
            "--endpoint",
            &endpoint,
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read(down.join("up.bin")).unwrap(),
        std::fs::read(src.join("up.bin")).unwrap()
    );
    outputs.command("sas-url: download", &out);

    // Failures, which print the most: a missing container, a refused credential (a SAS
    // without the list permission), a dead endpoint, a conflicting upload.
    let mp = w.join("mnt-fail");
    std::fs::create_dir(&mp).unwrap();
    // Only if a failure case mounted after all.
    let _fail_guard = Unmount(mp.clone());
    let mps = mp.to_str().unwrap();
    let missing = format!("az://{ACCOUNT}/no-such-container");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/{ACCOUNT}", closed.local_addr().unwrap());
    drop(closed);
    let read_only_sas = az.account_sas("r");
    let (lake, into_in) = (lake(), format!("{}/in", lake()));
    let fail_log = w.join("failed-mounts.log");
    let fail_log_arg = fail_log.to_str().unwrap();
    let failing: [(&str, Vec<&str>, Env); 4] = [
        (
            "missing container",
            vec![
                "mount",
                &missing,
                mps,
                "--endpoint",
                &endpoint,
                "--log-file",
                fail_log_arg,
            ],
            vec![("AZURE_STORAGE_CONNECTION_STRING", &cs)],
        ),
        (
            "SAS without list",
            vec![
                "mount",
                &lake,
                mps,
                "--endpoint",
                &endpoint,
                "--auth",
                "sas",
                "--log-file",
                fail_log_arg,
            ],
            vec![("AZURE_STORAGE_SAS_TOKEN", &read_only_sas)],
        ),
        (
            "dead endpoint",
            vec![
                "mount",
                &lake,
                mps,
                "--endpoint",
                &dead,
                "--auth",
                "key",
                "--log-file",
                fail_log_arg,
            ],
            key_env.to_vec(),
        ),
        (
            "upload conflict",
            vec![
                "upload",
                src.to_str().unwrap(),
                &into_in,
                "--endpoint",
                &endpoint,
            ],
            vec![("AZURE_STORAGE_SAS_TOKEN", &sas)],
        ),
    ];
    // The upload conflict needs a differing target.
    az.put_blob(CONTAINER, "in/up.bin", b"different");
    for (name, args, env) in &failing {
        let out = run(args, env);
        assert!(!out.status.success(), "{name} should fail: {out:?}");
        assert!(!out.stderr.is_empty(), "{name}: says why");
        outputs.command(name, &out);
    }
    assert!(!common::mount::is_mounted(&mp));
    outputs.file("failed mounts: daemon log", &fail_log);

    let forms = secret_forms(&sas);
    let mut read_only_forms = secret_forms(&read_only_sas);
    read_only_forms.retain(|(f, _)| f.contains("SAS signature"));
    outputs.assert_free_of(&forms);
    outputs.assert_free_of(&read_only_forms);
    let logged: usize = outputs.0.iter().map(|(_, d)| d.len()).sum();
    eprintln!(
        "searched {} outputs, {} KiB, for {} forms of the secrets: none found",
        outputs.0.len(),
        logged >> 10,
        forms.len() + read_only_forms.len()
    );
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every directory and file below `root` (not `root` itself).
fn walk(root: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut dirs, mut files) = (Vec::new(), Vec::new());
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            let (d, f) = walk(&p);
            dirs.push(p);
            dirs.extend(d);
            files.extend(f);
        } else {
            files.push(p);
        }
    }
    (dirs, files)
}

#[test]
fn cached_blocks_and_staged_writes_are_private_on_disk() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    az.put_blob(CONTAINER, "data.bin", &pseudo_random(3 << 20, 4));
    let work = tempfile::tempdir().unwrap();
    // Created by the mount: a cache directory that does not exist yet.
    let cache = work.path().join("cache");
    // A permissive umask: the modes must come from lakemount, not from the environment.
    // SAFETY: umask only changes this process's file creation mask (inherited by the daemon).
    let old_umask = unsafe { libc::umask(0) };
    let m = common::mount::mount_azurite(
        &az,
        CONTAINER,
        &["--cache-dir", cache.to_str().unwrap(), "--block-size", "1M"],
    );
    // SAFETY: as above.
    unsafe { libc::umask(old_umask) };
    assert_eq!(
        std::fs::read(m.path().join("data.bin")).unwrap(),
        pseudo_random(3 << 20, 4)
    );
    // The object's data file and its table.
    let files = || {
        walk(&cache.join("objects-v2"))
            .1
            .iter()
            .filter(|p| !p.file_name().unwrap().to_string_lossy().contains(".tmp"))
            .count()
    };
    assert!(wait_for(Duration::from_secs(10), || files() == 2));
    // A file being written: its staging pair exists until the close.
    let mut f = std::fs::File::create(m.path().join("out.bin")).unwrap();
    std::io::Write::write_all(&mut f, &pseudo_random(1 << 20, 5)).unwrap();
    let (dirs, files) = walk(&cache);
    let staging = cache.join("staging");
    assert!(dirs.contains(&staging), "{dirs:?}");
    assert_eq!(
        files.iter().filter(|p| p.starts_with(&staging)).count(),
        2,
        "ID.data and ID.target: {files:?}"
    );
    assert_eq!(mode(&cache), 0o700, "{}", cache.display());
    for d in &dirs {
        assert_eq!(mode(d), 0o700, "{}", d.display());
    }
    for p in &files {
        assert_eq!(mode(p), 0o600, "{}", p.display());
    }
    drop(f);
}

/// Runs `args` as user `uid` (group `uid`, no supplementary groups).
fn as_user(uid: u32, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "--",
        ])
        .args(args)
        .output()
        .unwrap()
}

const NOBODY: u32 = 65534;

/// `args` run as `uid` fail with "Permission denied".
fn denied(uid: u32, args: &[&str]) {
    let out = as_user(uid, args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Permission denied"),
        "{args:?} as {uid}: {out:?}"
    );
}

/// `args` run as `uid` succeed; returns stdout.
fn allowed(uid: u32, args: &[&str]) -> String {
    let out = as_user(uid, args);
    assert!(out.status.success(), "{args:?} as {uid}: {out:?}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A local lake with one file, mounted with `extra`; the mount's parent directory is opened
/// to everyone so that only the mount itself decides who gets in.
fn local_mount(src: &Path, extra: &[&str]) -> Mount {
    std::fs::write(src.join("secret.txt"), b"for the owner\n").unwrap();
    let staging = src.parent().unwrap().join("staging");
    let mut args = vec!["--staging-dir", staging.to_str().unwrap()];
    args.extend_from_slice(extra);
    let m = Mount::start(&format!("file://{}", src.display()), &args, &[])
        .unwrap_or_else(|o| panic!("{o:?}"));
    let parent = m.path().parent().unwrap().to_path_buf();
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
    m
}

#[test]
fn without_allow_other_other_users_cannot_enter_the_mount() {
    let lake = tempfile::tempdir().unwrap();
    let src = lake.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let m = local_mount(&src, &["--file-mode", "0644", "--dir-mode", "0755"]);
    let mp = m.path();
    let file = mp.join("secret.txt");
    // Even with modes that would let anyone read: FUSE refuses every other user.
    denied(NOBODY, &["stat", mp.to_str().unwrap()]);
    denied(NOBODY, &["cat", file.to_str().unwrap()]);
    assert_eq!(std::fs::read(&file).unwrap(), b"for the owner\n");
}

#[test]
fn with_allow_other_the_kernel_checks_the_configured_owner_and_modes() {
    let lake = tempfile::tempdir().unwrap();
    let src = lake.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let owner_only = [
        "--allow-other",
        "--uid",
        "0",
        "--gid",
        "0",
        "--file-mode",
        "0600",
        "--dir-mode",
        "0755",
    ];
    {
        let m = local_mount(&src, &owner_only);
        let (mp, file) = (m.path(), m.path().join("secret.txt"));
        let listing = allowed(NOBODY, &["ls", mp.to_str().unwrap()]);
        assert_eq!(listing.trim(), "secret.txt");
        let st = allowed(NOBODY, &["stat", "-c", "%u %g %a", file.to_str().unwrap()]);
        assert_eq!(st.trim(), "0 0 600");
        denied(NOBODY, &["cat", file.to_str().unwrap()]);
        let new = mp.join("new.txt");
        denied(NOBODY, &["touch", new.to_str().unwrap()]);
        assert!(!src.join("new.txt").exists());
    }
    {
        let mut readable = owner_only;
        readable[6] = "0644";
        let m = local_mount(&src, &readable);
        let file = m.path().join("secret.txt");
        assert_eq!(
            allowed(NOBODY, &["cat", file.to_str().unwrap()]),
            "for the owner\n"
        );
    }
    {
        // Owned by nobody, private: nobody reads and writes, another user gets nowhere.
        let m = local_mount(
            &src,
            &[
                "--allow-other",
                "--uid",
                "65534",
                "--gid",
                "65534",
                "--file-mode",
                "0600",
                "--dir-mode",
                "0700",
            ],
        );
        let (mp, file) = (m.path(), m.path().join("secret.txt"));
        assert_eq!(
            allowed(NOBODY, &["cat", file.to_str().unwrap()]),
            "for the owner\n"
        );
        let new = mp.join("by-nobody.txt");
        allowed(
            NOBODY,
            &["sh", "-c", &format!("echo hi > '{}'", new.display())],
        );
        assert_eq!(std::fs::read(src.join("by-nobody.txt")).unwrap(), b"hi\n");
        denied(65533, &["ls", mp.to_str().unwrap()]);
        denied(65533, &["cat", file.to_str().unwrap()]);
    }
}
