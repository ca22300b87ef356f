//! Azurite (the Azure Storage emulator, Blob service) for integration tests: one private instance
//! per `Azurite`, on a free loopback port with its data in a temp dir, killed on drop.
//!
//! [`Client`] is a small blocking REST client that can write and read *any* blob name. It speaks
//! HTTP/1.1 over a plain `TcpStream` and signs with Shared Key itself, because the usual tools
//! cannot express the odd names tests need: object_store's `Path` rejects `a//b` and `x/./y`,
//! and `url::Url` (under object_store's signer and under reqwest) removes `.` segments, so the
//! request would reach a different blob or fail its signature.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use sha2::Sha256;
use tempfile::TempDir;

/// Azurite's well-known development account and its published key.
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long `stop()` lets Azurite shut down cleanly before killing it.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bounds every request, so a wedged emulator fails a test instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
const API_VERSION: &str = "2023-11-03";
const LARGE_BLOCK: usize = 8 << 20;

/// A running Azurite Blob service. It derefs to its [`Client`], so `az.put_blob(..)` works.
pub struct Azurite {
    child: Option<Child>,
    client: Client,
    /// Holds `data/` (Azurite's `--location`) and `azurite.log` (its stdout and stderr).
    dir: TempDir,
}

impl Azurite {
    /// Starts Azurite and waits until it answers requests.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("azurite-")
            .tempdir()
            .expect("create a temp dir for Azurite");
        std::fs::create_dir(dir.path().join("data")).expect("create Azurite's data dir");
        let mut azurite = Azurite {
            child: None,
            client: Client {
                port: free_port(),
                timeout: IO_TIMEOUT,
            },
            dir,
        };
        azurite.spawn();
        azurite
    }

    pub fn port(&self) -> u16 {
        self.client.port
    }

    /// The Blob endpoint, path-style as Azurite serves it.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port())
    }

    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};BlobEndpoint={};",
            self.endpoint()
        )
    }

    /// An owned client for this instance, to use from another thread while the test stops and
    /// restarts Azurite.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Stops Azurite; its port then refuses connections. Data is kept for `restart()`.
    ///
    /// SIGTERM rather than SIGKILL: Azurite keeps blob metadata in memory and saves it only every
    /// 5 s or on a clean shutdown, so a kill would lose the latest writes. It closes its listener
    /// at once and cuts in-flight responses short (the client sees EOF before Content-Length)
    /// within a fraction of a second; if it is not gone after `STOP_TIMEOUT` it gets SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on our own child, which has not been waited for, so its pid is still ours.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while child.try_wait().expect("wait for Azurite").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Starts Azurite again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// An account SAS with permissions `perms` (e.g. `rl`, `rwdlc`) on blobs, signed with the
    /// account key: for tools (rclone's `sas_url`) that need one.
    pub fn account_sas(&self, perms: &str) -> String {
        self.account_sas_until(perms, "2035-01-01T00:00:00Z")
    }

    /// An account SAS that expires at `se` (RFC 3339, UTC).
    pub fn account_sas_until(&self, perms: &str, se: &str) -> String {
        let key = BASE64.decode(KEY).unwrap();
        let (ss, srt, spr, sv) = ("b", "sco", "http", "2019-12-12");
        let to_sign = format!("{ACCOUNT}\n{perms}\n{ss}\n{srt}\n\n{se}\n\n{spr}\n{sv}\n");
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(to_sign.as_bytes());
        let sig = BASE64.encode(mac.finalize().into_bytes());
        let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        format!(
            "sv={sv}&ss={ss}&srt={srt}&sp={}&se={}&spr={spr}&sig={}",
            enc(perms),
            enc(se),
            enc(&sig)
        )
    }

    /// Everything Azurite has printed so far (all runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("azurite.log")
    }

    fn spawn(&mut self) {
        let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("node_modules/.bin/azurite-blob");
        assert!(
            bin.exists(),
            "{} is missing: run `npm ci` in the repo root first",
            bin.display()
        );
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open Azurite's log");
        let child = Command::new(&bin)
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &self.port().to_string(),
            ])
            .arg("--location")
            .arg(self.dir.path().join("data"))
            // --disableTelemetry: there is no network to send it to.
            .args([
                "--silent",
                "--skipApiVersionCheck",
                "--loose",
                "--disableTelemetry",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        self.child = Some(child);
        self.wait_ready();
    }

    /// Polls until Azurite answers a signed List Containers. A bare TCP connect is not enough:
    /// after the free-port race it could be another process's listener, while ours dies with
    /// EADDRINUSE.
    fn wait_ready(&mut self) {
        let probe = Client {
            port: self.port(),
            timeout: Duration::from_secs(1),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("Azurite was spawned");
            if let Some(status) = child.try_wait().expect("poll Azurite") {
                self.child = None;
                panic!(
                    "Azurite exited ({status}) before it was ready on port {}; its output:\n{}",
                    self.port(),
                    self.log()
                );
            }
            let outcome = probe.request("GET", "", &[("comp", "list")], &[], b"");
            if outcome.as_ref().is_ok_and(|r| r.status == 200) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "Azurite was not ready on port {} within {READY_TIMEOUT:?} (last probe: {:?}); \
                     its output:\n{}",
                    self.port(),
                    outcome.map(|r| r.status),
                    self.log()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Deref for Azurite {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Drop for Azurite {
    /// Kills and reaps Azurite (no zombie, also when the test panicked), before `dir` is removed.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port that was free a moment ago. Racy in principle, but the kernel hands out ports from a
/// large range, so a clash with a parallel test is very unlikely.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// One HTTP response, body fully read.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Blocking Blob REST client for one Azurite instance. The typed helpers panic with Azure's
/// error message on failure (they are test set-up); [`Client::request`] returns errors.
#[derive(Clone, Debug)]
pub struct Client {
    port: u16,
    /// Read and write timeout of each request.
    timeout: Duration,
}

impl Client {
    /// A client of the same account at another port (a server in front of Azurite).
    pub fn at_port(&self, port: u16) -> Client {
        Client {
            port,
            timeout: self.timeout,
        }
    }

    pub fn create_container(&self, name: &str) {
        self.expect("PUT", name, &[("restype", "container")], &[], b"", 201);
    }

    /// Puts a block blob in one request. Any name: it is percent-encoded segment by segment, so
    /// `a//b` and `x/./y` reach Azurite as written.
    pub fn put_blob(&self, container: &str, name: &str, data: &[u8]) {
        let headers = [("x-ms-blob-type", "BlockBlob")];
        self.expect("PUT", &blob(container, name), &[], &headers, data, 201);
    }

    /// A directory as hierarchical-namespace accounts show it on the Blob endpoint: an empty blob
    /// with metadata `hdi_isfolder=true`.
    pub fn put_dir_marker(&self, container: &str, name: &str) {
        let headers = [
            ("x-ms-blob-type", "BlockBlob"),
            ("x-ms-meta-hdi_isfolder", "true"),
        ];
        self.expect("PUT", &blob(container, name), &[], &headers, b"", 201);
    }

    /// Uploads as large files are uploaded: staged blocks (`LARGE_BLOCK` each), then one commit.
    pub fn put_blob_large(&self, container: &str, name: &str, data: &[u8]) {
        let path = blob(container, name);
        let mut ids = Vec::new();
        for (i, chunk) in data.chunks(LARGE_BLOCK).enumerate() {
            // Block ids must all have the same length within a blob.
            let id = BASE64.encode(format!("block-{i:06}"));
            let query = [("comp", "block"), ("blockid", id.as_str())];
            self.expect("PUT", &path, &query, &[], chunk, 201);
            ids.push(id);
        }
        let latest: String = ids
            .iter()
            .map(|id| format!("<Latest>{id}</Latest>"))
            .collect();
        let list =
            format!(r#"<?xml version="1.0" encoding="utf-8"?><BlockList>{latest}</BlockList>"#);
        let query = [("comp", "blocklist")];
        self.expect("PUT", &path, &query, &[], list.as_bytes(), 201);
    }

    pub fn get_blob(&self, container: &str, name: &str) -> Vec<u8> {
        self.expect("GET", &blob(container, name), &[], &[], b"", 200)
            .body
    }

    /// The blob's content, or `None` when there is no such blob.
    pub fn try_get_blob(&self, container: &str, name: &str) -> Option<Vec<u8>> {
        let r = self
            .request("GET", &blob(container, name), &[], &[], b"")
            .unwrap();
        match r.status {
            200 => Some(r.body),
            404 => None,
            s => panic!("GET {container}/{name}: HTTP {s}"),
        }
    }

    /// Whether blob `name` is a directory marker (metadata `hdi_isfolder=true`).
    pub fn is_dir_marker(&self, container: &str, name: &str) -> bool {
        let r = self.expect("HEAD", &blob(container, name), &[], &[], b"", 200);
        r.header("x-ms-meta-hdi_isfolder")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// [`Client::list_blobs`] without directory markers: the files.
    pub fn list_files(&self, container: &str, prefix: &str) -> Vec<String> {
        let mut names = self.list_blobs(container, prefix);
        names.retain(|n| !self.is_dir_marker(container, n));
        names
    }

    pub fn delete_blob(&self, container: &str, name: &str) {
        self.expect("DELETE", &blob(container, name), &[], &[], b"", 202);
    }

    /// Every blob name under `prefix` (flat listing, all pages), in Azure's order.
    pub fn list_blobs(&self, container: &str, prefix: &str) -> Vec<String> {
        self.list_blobs_paged(container, prefix, 5000)
    }

    /// [`Client::list_blobs`] with a chosen page size, to exercise continuation markers.
    pub fn list_blobs_paged(&self, container: &str, prefix: &str, page_size: u32) -> Vec<String> {
        let page_size = page_size.to_string();
        let mut names = Vec::new();
        let mut marker = String::new();
        loop {
            let mut query = vec![
                ("restype", "container"),
                ("comp", "list"),
                ("maxresults", page_size.as_str()),
                ("prefix", prefix),
            ];
            if !marker.is_empty() {
                query.push(("marker", &marker));
            }
            let body = self.expect("GET", container, &query, &[], b"", 200).body;
            let body = String::from_utf8(body).expect("listing is UTF-8");
            // Azure (not Azurite) starts its XML with a byte-order mark.
            let page: EnumerationResults =
                quick_xml::de::from_str(body.trim_start_matches('\u{feff}'))
                    .unwrap_or_else(|e| panic!("parse listing: {e}\n{body}"));
            names.extend(page.blobs.blob.into_iter().map(|b| b.name));
            match page.next_marker {
                Some(next) if !next.is_empty() => marker = next,
                _ => return names,
            }
        }
    }

    /// One signed request. `resource` is the unencoded `container` or `container/blob name`
    /// ("" for the account); `query` values are unencoded too. Errors are transport errors
    /// (refused, reset, timed out); any HTTP status is an `Ok`.
    pub fn request(
        &self,
        method: &str,
        resource: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let path = format!("/{ACCOUNT}/{}", encode_path(resource));
        let mut target = path.clone();
        for (i, (k, v)) in query.iter().enumerate() {
            target.push(if i == 0 { '?' } else { '&' });
            target.push_str(&format!("{}={}", encode(k), encode(v)));
        }

        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let mut headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect();
        headers.push(("x-ms-date".into(), date));
        headers.push(("x-ms-version".into(), API_VERSION.into()));
        let auth = sign(method, &path, query, &headers, body.len());
        headers.push(("authorization".into(), auth));

        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port))?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        // `Connection: close` lets the response end where the stream ends.
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.port,
            body.len()
        );
        for (k, v) in &headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        parse_response(&raw)
    }

    /// `request`, panicking unless the status is `ok`.
    fn expect(
        &self,
        method: &str,
        resource: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: &[u8],
        ok: u16,
    ) -> Response {
        let what = format!("{method} {resource:?} {query:?}");
        let resp = self
            .request(method, resource, query, headers, body)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        if resp.status != ok {
            panic!(
                "{what}: HTTP {} (wanted {ok}): {}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            );
        }
        resp
    }
}

fn blob(container: &str, name: &str) -> String {
    format!("{container}/{name}")
}

/// Everything but RFC 3986's unreserved characters.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn encode(s: &str) -> String {
    utf8_percent_encode(s, ENCODE).to_string()
}

/// Encodes each segment but keeps the `/`s, empty segments included.
fn encode_path(path: &str) -> String {
    path.split('/').map(encode).collect::<Vec<_>>().join("/")
}

/// The Shared Key `Authorization` header:
/// <https://learn.microsoft.com/rest/api/storageservices/authorize-with-shared-key>.
/// `path` is the encoded path as sent (the service signs what it receives); query values are
/// signed decoded. `headers` are lowercase.
pub fn sign(
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    headers: &[(String, String)],
    content_length: usize,
) -> String {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    };
    // Since version 2015-02-21 a zero length is signed as empty.
    let length = if content_length == 0 {
        String::new()
    } else {
        content_length.to_string()
    };
    let mut to_sign = [
        method,
        get("content-encoding"),
        get("content-language"),
        &length,
        get("content-md5"),
        get("content-type"),
        get("date"),
        get("if-modified-since"),
        get("if-match"),
        get("if-none-match"),
        get("if-unmodified-since"),
        get("range"),
    ]
    .join("\n");
    to_sign.push('\n');

    let mut ms: Vec<_> = headers
        .iter()
        .filter(|(k, _)| k.starts_with("x-ms-"))
        .collect();
    ms.sort();
    for (k, v) in ms {
        to_sign.push_str(&format!("{k}:{}\n", v.trim()));
    }

    to_sign.push_str(&format!("/{ACCOUNT}{path}"));
    let mut params: Vec<_> = query
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), *v))
        .collect();
    params.sort();
    for (k, v) in params {
        to_sign.push_str(&format!("\n{k}:{v}"));
    }

    let key = BASE64.decode(KEY).expect("KEY is base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(to_sign.as_bytes());
    format!(
        "SharedKey {ACCOUNT}:{}",
        BASE64.encode(mac.finalize().into_bytes())
    )
}

fn parse_response(raw: &[u8]) -> io::Result<Response> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let end = find(raw, b"\r\n\r\n").ok_or_else(|| bad("response ends inside its head"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("response head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let rest = &raw[end + 4..];
    resp.body = if resp
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        dechunk(rest).ok_or_else(|| bad("bad chunked body"))?
    } else {
        rest.to_vec()
    };
    Ok(resp)
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line = find(data, b"\r\n")?;
        let size = std::str::from_utf8(&data[..line]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        data = &data[line + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The parts of a List Blobs response we use.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EnumerationResults {
    blobs: BlobList,
    next_marker: Option<String>,
}

#[derive(Deserialize)]
struct BlobList {
    #[serde(rename = "Blob", default)]
    blob: Vec<BlobItem>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BlobItem {
    name: String,
}
