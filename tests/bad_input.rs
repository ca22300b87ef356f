//! Bad input of every kind, to every command: one clear line on stderr, exit code 1, no
//! panic, nothing mounted. Malformed lake URLs, bad config files and flag values, unusable
//! directories, and (against Azurite) lakes that refuse, lack the container, or are not Azure.
//! Mount-specific cases live next to the mount tests: `mount_local::bad_mount_requests_fail_
//! with_one_clear_line` and `mount_azurite::bad_credentials_fail_fast_with_one_line`.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::azurite::{Azurite, ACCOUNT, KEY};
use common::mount::{is_mounted, lakemount};

/// A credential for cases that must fail before any request: never the ambient identity.
const KEY_ENV: [(&str, &str); 1] = [("AZURE_STORAGE_ACCOUNT_KEY", KEY)];

/// `lakemount ARGS` fails as it should: exit 1, one line on stderr saying `want`, no panic.
fn fails(args: &[&str], env: &[(&str, &str)], want: &str) {
    let out = lakemount(args, env).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{args:?}: one line: {err}"
    );
    assert!(err.starts_with("lakemount: error: "), "{args:?}: {err}");
    assert!(err.contains(want), "{args:?}: {err} (wanted {want:?})");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
}

/// A mount point, a source, a destination, a cache dir and a log file below `dir`.
fn work_paths(dir: &Path) -> [String; 5] {
    ["mnt", "src", "dest", "cache", "mount.log"].map(|n| dir.join(n).to_str().unwrap().to_string())
}

/// The same lake URL given to each command that takes one.
fn every_command(dir: &Path, url: &str, want: &str) {
    let [mp, src, dest, cache, log] = work_paths(dir);
    let (mp, src, dest, cache, log) = (&*mp, &*src, &*dest, &*cache, &*log);
    fails(&["mount", url, mp, "--log-file", log], &KEY_ENV, want);
    fails(&["upload", src, url], &KEY_ENV, want);
    fails(&["download", url, dest], &KEY_ENV, want);
    fails(&["warm", url, "--cache-dir", cache], &KEY_ENV, want);
    assert!(!is_mounted(Path::new(mp)));
}

/// A scratch directory with `mnt/` and `src/a.txt`; should a case mount after all (a failing
/// test), the mount is undone before the directory goes.
struct Work(tempfile::TempDir);

impl Work {
    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        let mp = self.path().join("mnt");
        if is_mounted(&mp) {
            let _ = lakemount(&["unmount", "--lazy", mp.to_str().unwrap()], &[]).output();
        }
    }
}

fn workdir() -> Work {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("mnt")).unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/a.txt"), b"a").unwrap();
    Work(dir)
}

#[test]
fn malformed_lake_urls_are_refused_by_every_command() {
    let dir = workdir();
    let d = dir.path();
    for (url, want) in [
        (
            "s3://bucket/data",
            "invalid lake URL \"s3://bucket/data\": expected az://",
        ),
        ("not a url", "invalid lake URL"),
        ("az://", "az URLs are az://ACCOUNT/CONTAINER"),
        ("az://myaccount", "az URLs are az://ACCOUNT/CONTAINER"),
        (
            "az://My_Account/data",
            "invalid storage account name \"My_Account\"",
        ),
        ("az://myaccount/Data", "invalid container name \"Data\""),
        (
            "abfss://myaccount.dfs.core.windows.net/x",
            "abfss URLs are abfss://CONTAINER@",
        ),
        ("abfss://data@example.com/x", "the host of an abfss URL is"),
        (
            "https://example.com/data",
            "for other endpoints (Azurite) use az://",
        ),
        (
            "https://myaccount.blob.core.windows.net/",
            "the URL names no container",
        ),
        ("file://relative/dir", "file URLs need an absolute path"),
        ("az://myaccount/data/%FF", "not valid UTF-8"),
    ] {
        every_command(d, url, want);
    }
}

#[test]
fn bad_config_files_and_flag_values_are_one_line_each() {
    let dir = workdir();
    let d = dir.path();
    let mp = d.join("mnt");
    let mp = mp.to_str().unwrap();
    let log = d.join("mount.log");
    let log = log.to_str().unwrap();
    let lake = format!("az://{ACCOUNT}/data");
    let cfg = |name: &str, text: &str| {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let unknown = cfg(
        "unknown.toml",
        &format!("lake = \"{lake}\"\nmountpoint = \"{mp}\"\ncache_sise = \"10G\"\n"),
    );
    let syntax = cfg("syntax.toml", "lake = \"az://myaccount/data\n");
    // A value quoted back in the error holds a line break: still one line.
    let two_lines = cfg("two-lines.toml", "manifest = '''two\nlines'''\n");
    fails(
        &["mount", "--config", &two_lines, mp],
        &[],
        "cannot read the manifest two\\nlines",
    );
    let table = cfg("table.toml", "[mount\nlake = 1\n");
    let bad_value = cfg(
        "value.toml",
        &format!("lake = \"{lake}\"\nmetadata_ttl = -1\n"),
    );
    let missing = d.join("missing.toml");
    let missing = missing.to_str().unwrap();
    let mount = |extra: &[&str], want: &str| {
        let mut args = vec!["mount", &lake, mp, "--log-file", log];
        args.extend_from_slice(extra);
        fails(&args, &KEY_ENV, want);
    };
    let config = |file: &str, want: &str| {
        fails(
            &["mount", "--config", file, "--log-file", log],
            &KEY_ENV,
            want,
        )
    };
    config(
        &unknown,
        "line 3: unknown field `cache_sise`, expected one of",
    );
    config(&syntax, "syntax.toml, line 1: invalid basic string");
    config(&table, "table.toml, line 1: unclosed table");
    config(&bad_value, "value.toml, line 2: invalid value");
    config(missing, "cannot read config file");
    mount(
        &["--block-size", "1K"],
        "--block-size must be between 64K and 256M",
    );
    mount(
        &["--block-size", "eight"],
        "--block-size: invalid size \"eight\"",
    );
    mount(
        &["--cache-size", "lots"],
        "--cache-size: invalid size \"lots\"",
    );
    mount(
        &["--cache-size", "150%"],
        "a percentage must be in (0, 100]",
    );
    mount(
        &["--max-memory", "1M"],
        "--max-memory (1 MiB) must hold at least four blocks",
    );
    mount(
        &["--metrics-addr", "nope"],
        "--metrics-addr \"nope\": expected HOST:PORT",
    );
    for ttl in ["99999999999", "18446744073709551615"] {
        mount(
            &["--metadata-ttl", ttl],
            "--metadata-ttl: at most 31536000 seconds",
        );
    }
    for (flag, v) in [
        ("--metadata-timeout", "0"),
        ("--metadata-timeout", "3601"),
        ("--data-timeout", "0"),
        ("--data-timeout", "18446744073709551615"),
    ] {
        let want = format!("{flag}: between 1 and 3600 seconds, not {v}");
        mount(&[flag, v], &want);
    }
    mount(&["--dir-mode", "rwx"], "invalid mode \"rwx\"");
    mount(&["--endpoint", "not-a-url"], "endpoint \"not-a-url\"");
    mount(
        &["--endpoint", "ftp://host/acct"],
        "must be an http:// or https:// URL",
    );
    assert!(!is_mounted(Path::new(mp)));
}

#[test]
fn unusable_directories_fail_the_mount_not_a_later_write() {
    let dir = workdir();
    let d = dir.path();
    let lake = format!("file://{}", d.join("src").display());
    let file = d.join("src/a.txt");
    let file = file.to_str().unwrap();
    let mp = d.join("mnt");
    let mp = mp.to_str().unwrap();
    let log = d.join("mount.log");
    let log = log.to_str().unwrap();
    let mount = |extra: &[&str], want: &str| {
        let mut args = vec!["mount", &lake, mp, "--log-file", log];
        args.extend_from_slice(extra);
        fails(&args, &[], want);
    };
    mount(&["--staging-dir", file], "staging directory");
    mount(&["--staging-dir", file], "is not a directory");
    mount(&["--cache-dir", file], "cache directory");
    mount(&["--cache-dir", file], "is not a directory");
    fails(
        &["mount", &lake, file, "--log-file", log],
        &[],
        "is not a directory",
    );
    assert!(!is_mounted(Path::new(mp)));
}

/// What is wrong, lake URL, credential, endpoint, what the error says.
type Case<'a> = (&'a str, &'a str, (&'a str, &'a str), &'a str, &'a str);

/// An HTTP server that answers every request with a 404 web page: an endpoint that is not
/// Azure Blob storage (a typo'd port, a proxy, a web server).
struct NotAzure {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NotAzure {
    fn start() -> NotAzure {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                let body = "<html><body><h1>404 Not Found</h1></body></html>";
                let _ = write!(
                    conn,
                    "HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        NotAzure {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for NotAzure {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept so the thread sees the flag.
        let _ = std::net::TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn lakes_that_refuse_are_missing_or_are_not_azure_fail_every_command_in_one_line() {
    let az = Azurite::start();
    az.create_container("data");
    az.put_blob("data", "a.txt", b"a");
    let dir = workdir();
    let d = dir.path();
    let [mp, src, dest, cache, log] = work_paths(d);
    let (mp, src, dest, cache, log) = (&*mp, &*src, &*dest, &*cache, &*log);
    let good = az.connection_string();
    let endpoint = az.endpoint();
    let expired = "sv=2021-08-06&ss=b&srt=sco&sp=rwdlc&se=2020-01-01T00:00:00Z&sig=c2lnbmF0dXJlIHRoYXQgaXMgbm90IHZhbGlk";
    let not_azure = NotAzure::start();
    let web = format!("http://{}/{ACCOUNT}", not_azure.addr);
    let lake = format!("az://{ACCOUNT}/data");
    let no_container = format!("az://{ACCOUNT}/no-such-container");
    let cases: [Case; 3] = [
        (
            "an expired SAS",
            &lake,
            ("AZURE_STORAGE_SAS_TOKEN", expired),
            &endpoint,
            "access denied",
        ),
        (
            "a missing container",
            &no_container,
            ("AZURE_STORAGE_CONNECTION_STRING", &good),
            &endpoint,
            "container \"no-such-container\" does not exist",
        ),
        (
            "an endpoint that is not Azure",
            &lake,
            ("AZURE_STORAGE_ACCOUNT_KEY", KEY),
            &web,
            "HTTP 404 Not Found from http://127.0.0.1",
        ),
    ];
    for (what, url, env, ep, want) in cases {
        let auth = match env.0 {
            "AZURE_STORAGE_SAS_TOKEN" => "sas",
            _ => "key",
        };
        let tail = ["--endpoint", ep, "--auth", auth];
        for args in [
            &["mount", url, mp, "--log-file", log][..],
            &["upload", src, url],
            &["download", url, dest],
            &["warm", url, "--cache-dir", cache],
        ] {
            let all: Vec<&str> = args.iter().chain(&tail).copied().collect();
            eprintln!("{what}: {}", all[0]);
            fails(&all, &[env], want);
        }
    }
    // The hint for a 404 that names no missing container.
    fails(
        &["warm", &lake, "--cache-dir", cache, "--endpoint", &web, "--auth", "key"],
        &KEY_ENV,
        "cannot warm az://devstoreaccount1/data: not found: HTTP 404 Not Found from http://127.0.0.1",
    );
    fails(
        &["upload", src, &lake, "--endpoint", &web, "--auth", "key"],
        &KEY_ENV,
        "check the endpoint and the account name",
    );
    assert!(!is_mounted(Path::new(mp)));
    assert!(!Path::new(dest).exists(), "nothing downloaded");
    assert_eq!(az.list_blobs("data", ""), ["a.txt"], "nothing uploaded");
}

#[test]
fn a_sas_pasted_into_a_lake_url_is_refused_and_never_printed() {
    // (A SAS URL, https://ACCOUNT.blob.core.windows.net/CONTAINER?...&sig=..., is a lake URL
    // with its credential: security::credentials_never_appear_in_output_logs_or_errors.)
    let dir = workdir();
    let d = dir.path();
    let [mp, src, dest, cache, log] = work_paths(d);
    for url in [
        "az://myaccount/data/x?sv=2024-01-01&sig=TOPSECRET",
        "az://myaccount/lake?sig=TOPSECRET",
        "https://myaccount.blob.core.windows.net/lake?sv=2024&ss=b&x=TOPSECRET",
        "abfss://lake@myaccount.dfs.core.windows.net/p?sig=TOPSECRET",
    ] {
        every_command(d, url, "followed by a query string (not shown)");
        let cfg = d.join("sas.toml");
        std::fs::write(&cfg, format!("lake = \"{url}\"\nmountpoint = \"{mp}\"\n")).unwrap();
        let cfg = cfg.to_str().unwrap();
        for args in [
            vec!["mount", url, &mp, "--log-file", &log],
            vec!["mount", "--config", cfg, "--log-file", &log],
            vec!["upload", &src, url],
            vec!["download", url, &dest],
            vec!["warm", url, "--cache-dir", &cache],
        ] {
            let out = lakemount(&args, &KEY_ENV).output().unwrap();
            let all = format!(
                "{}{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            assert!(!out.status.success(), "{args:?}");
            assert!(
                !all.contains("TOPSECRET") && !all.contains("sig="),
                "{args:?}: {all}"
            );
        }
    }
}

#[test]
fn values_the_argument_parser_refuses_are_one_line_and_exit_1_too() {
    for (args, want) in [
        (
            vec!["mount", "--uid", "abc", "file:///x", "/mnt/x"],
            "invalid value 'abc' for '--uid",
        ),
        (
            vec!["mount", "--metadata-ttl", "1e3", "file:///x", "/mnt/x"],
            "invalid value '1e3'",
        ),
        (
            vec!["upload", "--threads", "0", "a", "az://acct/data"],
            "0 is not in 1..=512",
        ),
        (
            vec!["mount", "--no-such-flag"],
            "unexpected argument '--no-such-flag'",
        ),
        (vec!["frobnicate"], "unrecognized subcommand 'frobnicate'"),
    ] {
        fails(&args, &[], want);
    }
    let agent = env!("CARGO_BIN_EXE_lake-agent");
    let out = std::process::Command::new(agent)
        .arg("--no-such-flag")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.starts_with("lake-agent: error: "), "{err}");
    // Help still prints whole, with success.
    let help = lakemount(&["mount", "--help"], &[]).output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--metadata-ttl"));
}
