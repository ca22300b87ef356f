//! A test server for the part of the ADLS Gen2 (Data Lake Storage, "DFS") REST API lakemount
//! uses, in front of Azurite, which has no DFS endpoint. It shares Azurite's storage: every
//! request it does not implement goes to Azurite unchanged (the Blob half), and the DFS
//! operations it implements work on the same blobs, the way a hierarchical-namespace account
//! shows its directories on the Blob endpoint (empty blobs with `hdi_isfolder=true`).
//!
//! Implemented, after the REST reference:
//! - Get Account Information (`?restype=account&comp=properties`): Azurite's answer (so the
//!   credential is checked) plus `x-ms-is-hns-enabled: true`.
//! - Path - Create with `x-ms-rename-source: /{filesystem}/{path}[?{sas}]` (percent-encoded):
//!   an atomic rename of a file or a whole directory (no client of this server sees a part:
//!   renames hold every other request off), replacing a destination file, refusing with the
//!   reference's error codes (404 `SourcePathNotFound`, 404
//!   `RenameDestinationParentPathNotFound`, 409 `PathAlreadyExists` under `If-None-Match: *`,
//!   409 `DirectoryNotEmpty`, 409 `PathConflict` across kinds, 400 `InvalidDestinationPath`
//!   into itself). A request authorised by SAS must carry the SAS on its source too (403
//!   `AuthorizationFailure` otherwise), as the service authorises the source with it.
//! - Path - Create with `resource=directory` (201; 409 `PathAlreadyExists` under
//!   `If-None-Match: *`).
//! - Path - Delete with `recursive` (200; 404 `PathNotFound`; 409 `DirectoryNotEmpty`).
//!
//! Errors come as the DFS endpoint sends them: the status, `x-ms-error-code`, and a JSON body
//! `{"error":{"code":...,"message":...}}`. Shared Key requests are verified against the
//! account key; requests the server implements itself with a SAS are taken as authorised.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use percent_encoding::percent_decode_str;

use super::azurite::{sign, Client, ACCOUNT};

pub struct DfsServer {
    port: u16,
    stop: Arc<AtomicBool>,
    /// Renames done (one per Path - Create with a rename source that succeeded).
    pub renames: Arc<AtomicU64>,
    /// Every rename source as received (still encoded, SAS and all), for tests.
    pub sources: Arc<Mutex<Vec<String>>>,
}

struct Request {
    method: String,
    /// The path as sent (percent-encoded).
    path: String,
    /// Decoded query pairs.
    query: Vec<(String, String)>,
    /// Names in lower case.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The request exactly as received.
    raw: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A DFS error answer.
struct DfsError(u16, &'static str, String);

type Answer = Result<(u16, Vec<(String, String)>), DfsError>;

impl DfsServer {
    /// Serves on a free loopback port in front of the Azurite at `az`.
    pub fn start(az: &Client, azurite_port: u16) -> DfsServer {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let renames = Arc::new(AtomicU64::new(0));
        let sources = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(State {
            blob: az.at_port(azurite_port),
            azurite_port,
            turns: RwLock::new(()),
            renames: renames.clone(),
            sources: sources.clone(),
        });
        let s = stop.clone();
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let state = state.clone();
                        std::thread::spawn(move || {
                            let _ = serve(&state, conn);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        DfsServer {
            port,
            stop,
            renames,
            sources,
        }
    }

    /// The endpoint to give lakemount (`--endpoint`), path-style like Azurite's.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for DfsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct State {
    /// Azurite's Blob endpoint, for the operations done here.
    blob: Client,
    azurite_port: u16,
    /// Forwarded requests take it shared, DFS operations exclusively: a rename is atomic
    /// to every client of this server.
    turns: RwLock<()>,
    renames: Arc<AtomicU64>,
    sources: Arc<Mutex<Vec<String>>>,
}

/// One request per connection (answers say `Connection: close`).
fn serve(state: &State, conn: TcpStream) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let Some(req) = read_request(&mut reader)? else {
        return Ok(());
    };
    let mut out = conn;
    let dfs = req.header("x-ms-rename-source").is_some()
        || (req.method == "PUT" && req.param("resource").is_some())
        || (req.method == "DELETE" && req.param("recursive").is_some());
    if !dfs {
        let _shared = state.turns.read().unwrap_or_else(|e| e.into_inner());
        let mut resp = forward(state.azurite_port, &req.raw)?;
        if req.param("restype") == Some("account") && req.param("comp") == Some("properties") {
            resp = with_header(&resp, "x-ms-is-hns-enabled: true");
        }
        return out.write_all(&resp);
    }
    let answer = match verify(&req) {
        Err(e) => Err(e),
        Ok(()) => {
            let _alone = state.turns.write().unwrap_or_else(|e| e.into_inner());
            if let Some(source) = req.header("x-ms-rename-source") {
                state.sources.lock().unwrap().push(source.to_string());
                let r = rename(state, &req, source);
                if r.is_ok() {
                    state.renames.fetch_add(1, Ordering::Relaxed);
                }
                r
            } else if req.method == "PUT" {
                create(state, &req)
            } else {
                delete(state, &req)
            }
        }
    };
    out.write_all(&response(answer))
}

fn read_request(r: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let mut raw = Vec::new();
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    raw.extend_from_slice(line.as_bytes());
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let lower = h.trim_end().to_string();
        if lower.is_empty() {
            break;
        }
        // Each request goes to Azurite on a connection of its own.
        if !lower.to_ascii_lowercase().starts_with("connection:") {
            raw.extend_from_slice(h.as_bytes());
        }
        if let Some((k, v)) = lower.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    raw.extend_from_slice(b"Connection: close\r\n\r\n");
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    raw.extend_from_slice(&body);
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let query = url_query(query);
    Ok(Some(Request {
        method,
        path: path.to_string(),
        query,
        headers,
        body,
        raw,
    }))
}

fn url_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

fn forward(port: u16, raw: &[u8]) -> io::Result<Vec<u8>> {
    let mut up = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    up.write_all(raw)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    Ok(resp)
}

fn with_header(resp: &[u8], header: &str) -> Vec<u8> {
    let Some(eol) = resp.windows(2).position(|w| w == b"\r\n") else {
        return resp.to_vec();
    };
    [
        &resp[..eol + 2],
        header.as_bytes(),
        b"\r\n",
        &resp[eol + 2..],
    ]
    .concat()
}

fn response(answer: Answer) -> Vec<u8> {
    let (status, mut headers, body) = match answer {
        Ok((status, headers)) => (status, headers, String::new()),
        Err(DfsError(status, code, message)) => {
            let body = format!(
                "{{\"error\":{{\"code\":\"{code}\",\"message\":\"{}\"}}}}",
                message.replace('"', "'")
            );
            let headers = vec![
                ("x-ms-error-code".into(), code.into()),
                (
                    "Content-Type".into(),
                    "application/json;charset=utf-8".into(),
                ),
            ];
            (status, headers, body)
        }
    };
    headers.push(("x-ms-version".into(), "2023-11-03".into()));
    headers.push(("x-ms-request-id".into(), format!("{:x}", rand_id())));
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    [head.into_bytes(), body.into_bytes()].concat()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        _ => "Error",
    }
}

fn rand_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed) ^ std::process::id() as u64
}

/// Shared Key: the signature must be the account key's over this very request.
fn verify(req: &Request) -> Result<(), DfsError> {
    if req.param("sig").is_some() {
        return Ok(());
    }
    let Some(auth) = req.header("authorization") else {
        return Err(DfsError(
            403,
            "AuthenticationFailed",
            "no credential".into(),
        ));
    };
    let query: Vec<(&str, &str)> = req
        .query
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let want = sign(&req.method, &req.path, &query, &req.headers, req.body.len());
    if auth != want {
        return Err(DfsError(
            403,
            "AuthenticationFailed",
            "the signature does not match".into(),
        ));
    }
    Ok(())
}

/// `/{account}/{filesystem}/{path}` (path-style, as Azurite's endpoints) into its filesystem
/// and path, decoded.
fn split_path(encoded: &str) -> Option<(String, String)> {
    let decoded = percent_decode_str(encoded).decode_utf8().ok()?.into_owned();
    let rest = decoded.strip_prefix('/')?;
    let rest = rest
        .strip_prefix(ACCOUNT)
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or(rest);
    let (fs, path) = rest.split_once('/')?;
    let path = path.trim_end_matches('/');
    (!fs.is_empty() && !path.is_empty()).then(|| (fs.to_string(), path.to_string()))
}

#[derive(Debug, PartialEq)]
enum Kind {
    File,
    Dir,
}

impl State {
    fn kind(&self, fs: &str, path: &str) -> Option<Kind> {
        let head = self
            .blob
            .request("HEAD", &format!("{fs}/{path}"), &[], &[], b"")
            .ok()?;
        let marker = head
            .header("x-ms-meta-hdi_isfolder")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        match head.status {
            200 if !marker => Some(Kind::File),
            200 => Some(Kind::Dir),
            _ if self.anything_below(fs, path) => Some(Kind::Dir),
            _ => None,
        }
    }

    /// Whether a blob name starts with `path/` (one page of one entry).
    fn anything_below(&self, fs: &str, path: &str) -> bool {
        let prefix = format!("{path}/");
        let query = [
            ("restype", "container"),
            ("comp", "list"),
            ("maxresults", "1"),
            ("prefix", prefix.as_str()),
        ];
        self.blob
            .request("GET", fs, &query, &[], b"")
            .is_ok_and(|r| String::from_utf8_lossy(&r.body).contains("<Blob>"))
    }

    /// `f` on every name, 16 at a time (a directory of 10,000 blobs moves in seconds).
    fn each(
        &self,
        names: &[String],
        f: impl Fn(&str) -> Result<(), DfsError> + Sync,
    ) -> Result<(), DfsError> {
        let next = AtomicU64::new(0);
        let failed = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(name) = names.get(i) else { return };
                    if let Err(e) = f(name) {
                        eprintln!("dfs test server: {}", e.2);
                        *failed.lock().unwrap() = Some(e);
                        return;
                    }
                });
            }
        });
        match failed.into_inner().unwrap() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every blob at or below `path` (its marker included).
    fn tree(&self, fs: &str, path: &str) -> Vec<String> {
        let mut names = self.blob.list_blobs(fs, &format!("{path}/"));
        if self
            .blob
            .request("HEAD", &format!("{fs}/{path}"), &[], &[], b"")
            .is_ok_and(|r| r.status == 200)
        {
            names.push(path.to_string());
        }
        names
    }

    fn copy(&self, fs: &str, from: &str, to: &str) -> Result<(), DfsError> {
        let source = format!(
            "http://127.0.0.1:{}/{ACCOUNT}/{fs}/{}",
            self.azurite_port,
            from.split('/')
                .map(|s| percent_encoding::utf8_percent_encode(
                    s,
                    percent_encoding::NON_ALPHANUMERIC
                )
                .to_string())
                .collect::<Vec<_>>()
                .join("/")
        );
        let r = self
            .blob
            .request(
                "PUT",
                &format!("{fs}/{to}"),
                &[],
                &[("x-ms-copy-source", &source)],
                b"",
            )
            .map_err(|e| DfsError(500, "InternalError", e.to_string()))?;
        if r.status != 202 && r.status != 201 {
            return Err(DfsError(
                500,
                "InternalError",
                format!(
                    "copy {from}: HTTP {} {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ),
            ));
        }
        Ok(())
    }

    fn delete(&self, fs: &str, name: &str) {
        let _ = self
            .blob
            .request("DELETE", &format!("{fs}/{name}"), &[], &[], b"");
    }

    fn marker(&self, fs: &str, path: &str) {
        self.blob.put_dir_marker(fs, path);
    }
}

fn parent(path: &str) -> Option<&str> {
    path.rfind('/').map(|i| &path[..i])
}

fn rename(state: &State, req: &Request, source: &str) -> Answer {
    let bad_dest = || {
        DfsError(
            400,
            "InvalidDestinationPath",
            "the destination is not a path".into(),
        )
    };
    let (fs, to) = split_path(&req.path).ok_or_else(bad_dest)?;
    let (src_path, src_query) = source.split_once('?').unwrap_or((source, ""));
    if req.param("sig").is_some() && !url_query(src_query).iter().any(|(k, _)| k == "sig") {
        return Err(DfsError(
            403,
            "AuthorizationFailure",
            "the rename source carries no SAS".into(),
        ));
    }
    let (src_fs, from) = split_path(src_path)
        .ok_or_else(|| DfsError(400, "InvalidSourceUri", format!("{source:?}")))?;
    if src_fs != fs {
        return Err(DfsError(
            400,
            "InvalidSourceUri",
            "another filesystem".into(),
        ));
    }
    let src = state
        .kind(&fs, &from)
        .ok_or_else(|| DfsError(404, "SourcePathNotFound", from.clone()))?;
    if let Some(p) = parent(&to) {
        if state.kind(&fs, p) != Some(Kind::Dir) {
            return Err(DfsError(
                404,
                "RenameDestinationParentPathNotFound",
                to.clone(),
            ));
        }
    }
    if from == to {
        return Ok((201, vec![]));
    }
    let dst = state.kind(&fs, &to);
    if dst.is_some() && req.header("if-none-match") == Some("*") {
        return Err(DfsError(409, "PathAlreadyExists", to.clone()));
    }
    match (&src, &dst) {
        (Kind::Dir, _) if to.starts_with(&format!("{from}/")) => {
            return Err(DfsError(
                400,
                "InvalidDestinationPath",
                "into itself".into(),
            ))
        }
        (Kind::File, Some(Kind::Dir)) | (Kind::Dir, Some(Kind::File)) => {
            return Err(DfsError(409, "PathConflict", to.clone()))
        }
        (Kind::Dir, Some(Kind::Dir)) if state.tree(&fs, &to).len() > 1 => {
            return Err(DfsError(409, "DirectoryNotEmpty", to.clone()))
        }
        _ => {}
    }
    if src == Kind::File {
        state.copy(&fs, &from, &to)?;
        state.delete(&fs, &from);
        return Ok((201, vec![]));
    }
    // A directory: every blob below moves; the directory itself is real (a marker).
    let names = state.tree(&fs, &from);
    state.marker(&fs, &to);
    let below: Vec<String> = names.iter().filter(|n| **n != from).cloned().collect();
    state.each(&below, |name| {
        state.copy(&fs, name, &format!("{to}{}", &name[from.len()..]))
    })?;
    state.each(&names, |name| {
        state.delete(&fs, name);
        Ok(())
    })?;
    Ok((201, vec![]))
}

fn create(state: &State, req: &Request) -> Answer {
    let (fs, path) = split_path(&req.path)
        .ok_or_else(|| DfsError(400, "InvalidResourceName", req.path.clone()))?;
    if req.param("resource") != Some("directory") {
        return Err(DfsError(
            400,
            "InvalidQueryParameterValue",
            "resource".into(),
        ));
    }
    let exists = state.kind(&fs, &path);
    if exists.is_some() && req.header("if-none-match") == Some("*") {
        return Err(DfsError(409, "PathAlreadyExists", path));
    }
    if exists == Some(Kind::File) {
        return Err(DfsError(409, "PathConflict", path));
    }
    state.marker(&fs, &path);
    Ok((201, vec![]))
}

fn delete(state: &State, req: &Request) -> Answer {
    let (fs, path) = split_path(&req.path)
        .ok_or_else(|| DfsError(400, "InvalidResourceName", req.path.clone()))?;
    let kind = state
        .kind(&fs, &path)
        .ok_or_else(|| DfsError(404, "PathNotFound", path.clone()))?;
    let names = state.tree(&fs, &path);
    if kind == Kind::Dir && names.len() > 1 && req.param("recursive") != Some("true") {
        return Err(DfsError(409, "DirectoryNotEmpty", path));
    }
    for name in names.iter().rev() {
        state.delete(&fs, name);
    }
    Ok((200, vec![]))
}
