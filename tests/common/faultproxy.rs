//! An HTTP proxy in front of Azurite that injects the faults a real lake produces: every
//! `every`-th request is answered 503 ServerBusy (with Retry-After), 500 InternalError, or
//! forwarded with its response cut off mid-body, in turn. One request per connection (it
//! answers `Connection: close`), which keeps the forwarding simple and the faults exact.
//! Any proxy can also be told to [`FaultProxy::hang`]: requests then get no answer (or half of
//! one) until it is told to stop, as a hung origin behaves.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub struct FaultProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    /// Requests answered with a fault so far.
    pub injected: Arc<AtomicU64>,
    /// Requests seen so far.
    pub requests: Arc<AtomicU64>,
    /// Requests held without a (whole) answer so far.
    pub hung: Arc<AtomicU64>,
    /// Bytes of request bodies received so far (what the client uploaded).
    pub body_bytes: Arc<AtomicU64>,
    /// List Blobs requests and HEAD requests (properties, lookups) seen so far.
    pub lists: Arc<AtomicU64>,
    pub heads: Arc<AtomicU64>,
    hang: Arc<AtomicU8>,
    accept: Option<JoinHandle<()>>,
}

/// How a hung origin behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hang {
    /// Answers normally.
    Off = 0,
    /// Takes the request and never answers.
    Silent = 1,
    /// Sends the response head and half the body, then nothing more.
    MidBody = 2,
}

/// What each connection's thread shares with the proxy.
#[derive(Clone)]
struct Shared {
    stop: Arc<AtomicBool>,
    hang: Arc<AtomicU8>,
    hung: Arc<AtomicU64>,
    body_bytes: Arc<AtomicU64>,
    lists: Arc<AtomicU64>,
    heads: Arc<AtomicU64>,
}

impl Shared {
    fn hang(&self) -> Hang {
        match self.hang.load(Ordering::SeqCst) {
            1 => Hang::Silent,
            2 => Hang::MidBody,
            _ => Hang::Off,
        }
    }

    /// Holds a connection open, answering nothing, until the hang is lifted or the proxy stops.
    fn hold(&self) {
        self.hung.fetch_add(1, Ordering::SeqCst);
        while self.hang() != Hang::Off && !self.stop.load(Ordering::Relaxed) {
            // The hung origin's own pace, not synchronisation: it polls two flags.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Faults,
    LoopListings,
    DropIfMatch,
    /// List Blobs pages of at most this many entries (the query is rewritten: SAS only).
    SmallPages(u32),
}

#[derive(Clone, Copy)]
enum Fault {
    Busy,
    Internal,
    CutBody,
}

impl FaultProxy {
    pub fn start(upstream: u16, every: u64) -> FaultProxy {
        FaultProxy::start_with(upstream, every, Mode::Faults)
    }

    /// A proxy that forwards every request without its `If-Match` header, as a cache or an
    /// origin that ignores conditions would. Only SAS requests still pass Azurite's checks
    /// (a shared key signs the header). No other faults.
    pub fn dropping_if_match(upstream: u16) -> FaultProxy {
        FaultProxy::start_with(upstream, u64::MAX, Mode::DropIfMatch)
    }

    /// A proxy whose every List Blobs answer names the same continuation marker: a listing
    /// that never ends. No other faults.
    pub fn looping_listings(upstream: u16) -> FaultProxy {
        FaultProxy::start_with(upstream, u64::MAX, Mode::LoopListings)
    }

    fn start_with(upstream: u16, every: u64, mode: Mode) -> FaultProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let injected = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let (s, i, r) = (stop.clone(), injected.clone(), requests.clone());
        let hang = Arc::new(AtomicU8::new(Hang::Off as u8));
        let hung = Arc::new(AtomicU64::new(0));
        let body_bytes = Arc::new(AtomicU64::new(0));
        let (lists, heads) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let shared = Shared {
            stop: stop.clone(),
            hang: hang.clone(),
            hung: hung.clone(),
            body_bytes: body_bytes.clone(),
            lists: lists.clone(),
            heads: heads.clone(),
        };
        let accept = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let n = r.fetch_add(1, Ordering::Relaxed) + 1;
                        let fault = (n % every == 0).then(|| {
                            let k = i.fetch_add(1, Ordering::Relaxed);
                            [Fault::Busy, Fault::Internal, Fault::CutBody][(k % 3) as usize]
                        });
                        let shared = shared.clone();
                        std::thread::spawn(move || {
                            let _ = serve(conn, upstream, fault, mode, &shared);
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // The accept loop's own pace, not synchronisation: it polls a stop flag.
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => return,
                }
            }
        });
        FaultProxy {
            port,
            stop,
            injected,
            requests,
            hung,
            body_bytes,
            lists,
            heads,
            hang,
            accept: Some(accept),
        }
    }

    /// A proxy that asks Azurite for listing pages of at most `entries` (lakemount asks for
    /// 5,000), so a directory of a few dozen blobs lists over several pages. Only SAS requests
    /// pass (a shared key signs the query). No other faults.
    pub fn small_pages(upstream: u16, entries: u32) -> FaultProxy {
        FaultProxy::start_with(upstream, u64::MAX, Mode::SmallPages(entries))
    }

    /// A proxy that forwards everything faithfully until told to [`FaultProxy::hang`].
    pub fn faithful(upstream: u16) -> FaultProxy {
        FaultProxy::start_with(upstream, u64::MAX, Mode::Faults)
    }

    /// From now on, requests are answered as `how` says (connections already held stay held
    /// until the hang is lifted with [`Hang::Off`], then they are closed).
    pub fn hang(&self, how: Hang) {
        self.hang.store(how as u8, Ordering::SeqCst);
    }

    /// The Blob endpoint to give lakemount (`--endpoint`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{}", self.port, super::azurite::ACCOUNT)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request (head and Content-Length body).
fn read_request(conn: &mut TcpStream, drop_if_match: bool) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 << 10];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    // One request per connection: ask upstream to close, so its response ends at EOF.
    let text = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut out: Vec<u8> = text
        .split("\r\n")
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            let dropped = drop_if_match && l.starts_with("if-match:");
            !(l.starts_with("connection:") || l.is_empty() || dropped)
        })
        .map(|l| format!("{l}\r\n"))
        .collect::<String>()
        .into_bytes();
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(&buf[head_end..]);
    Ok(out)
}

/// The same response with `<NextMarker>` set to one constant, and its length fixed.
fn loop_marker(response: Vec<u8>) -> Vec<u8> {
    let Some(head_end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return response;
    };
    let head = String::from_utf8_lossy(&response[..head_end]).into_owned();
    let raw = &response[head_end + 4..];
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(raw) } else { raw.to_vec() };
    let body = String::from_utf8_lossy(&body).into_owned();
    let re_start = body.find("<NextMarker");
    let Some(start) = re_start else {
        return response;
    };
    let end = body[start..]
        .find("</NextMarker>")
        .map(|i| start + i + "</NextMarker>".len())
        .or_else(|| body[start..].find("/>").map(|i| start + i + 2))
        .unwrap_or(start);
    let body = format!(
        "{}<NextMarker>LOOP</NextMarker>{}",
        &body[..start],
        &body[end..]
    );
    let head: String = head
        .split("\r\n")
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            !l.starts_with("content-length:") && !l.starts_with("transfer-encoding:")
        })
        .collect::<Vec<_>>()
        .join("\r\n");
    format!("{head}\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

/// The body of a chunked transfer encoding.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&raw[..eol]);
        let size =
            usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if size == 0 || raw.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[(eol + 4 + size).min(raw.len())..];
    }
    out
}

fn serve(
    mut conn: TcpStream,
    upstream: u16,
    fault: Option<Fault>,
    mode: Mode,
    shared: &Shared,
) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut request = read_request(&mut conn, mode == Mode::DropIfMatch)?;
    if let Mode::SmallPages(n) = mode {
        let from = b"maxresults=5000";
        if let Some(i) = request.windows(from.len()).position(|w| w == from) {
            let to = format!("maxresults={n}");
            request.splice(i..i + from.len(), to.into_bytes());
        }
    }
    let head_len = request
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(request.len(), |i| i + 4);
    shared
        .body_bytes
        .fetch_add((request.len() - head_len) as u64, Ordering::Relaxed);
    let first_line = String::from_utf8_lossy(&request[..head_len.min(4096)])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    if first_line.starts_with("HEAD ") {
        shared.heads.fetch_add(1, Ordering::Relaxed);
    } else if first_line.starts_with("GET ") && first_line.contains("comp=list") {
        shared.lists.fetch_add(1, Ordering::Relaxed);
    }
    let hang = shared.hang();
    if hang == Hang::Silent {
        shared.hold();
        return Ok(());
    }
    let canned = |status: &str, code: &str, extra: &str| {
        format!(
            "HTTP/1.1 {status}\r\nx-ms-error-code: {code}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
    };
    match fault {
        Some(Fault::Busy) => {
            let r = canned("503 Server Busy", "ServerBusy", "Retry-After: 1\r\n");
            conn.write_all(r.as_bytes())?;
        }
        Some(Fault::Internal) => {
            let r = canned("500 Internal Server Error", "InternalError", "");
            conn.write_all(r.as_bytes())?;
        }
        _ => {
            let mut up = TcpStream::connect((Ipv4Addr::LOCALHOST, upstream))?;
            up.set_read_timeout(Some(Duration::from_secs(60)))?;
            up.write_all(&request)?;
            let mut response = Vec::new();
            up.read_to_end(&mut response)?;
            if matches!(fault, Some(Fault::CutBody)) {
                // The head and half the body, then the connection drops.
                let head_end = response
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map_or(response.len(), |i| i + 4);
                let body = response.len() - head_end;
                response.truncate(head_end + body / 2);
            }
            let listing = request.starts_with(b"GET ")
                && String::from_utf8_lossy(&request[..request.len().min(2048)])
                    .lines()
                    .next()
                    .is_some_and(|l| l.contains("comp=list"));
            if mode == Mode::LoopListings && listing {
                response = loop_marker(response);
            }
            if hang == Hang::MidBody {
                let head_end = response
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map_or(response.len(), |i| i + 4);
                let half = head_end + (response.len() - head_end) / 2;
                conn.write_all(&response[..half])?;
                conn.flush()?;
                shared.hold();
                return Ok(());
            }
            conn.write_all(&response)?;
        }
    }
    conn.flush()?;
    let _ = conn.shutdown(Shutdown::Both);
    Ok(())
}
