//! Counters of the data path, served as Prometheus text on `--metrics-addr`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

macro_rules! counters {
    ($($name:ident: $help:literal),* $(,)?) => {
        /// Monotonic counters; cheap to bump from any thread.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $(#[doc = $help] pub $name: AtomicU64,)*
        }

        impl Metrics {
            /// Prometheus text exposition format.
            pub fn render(&self) -> String {
                let mut out = String::new();
                $(
                    let name = concat!("lakemount_", stringify!($name));
                    let _ = writeln!(out, "# HELP {name} {}", $help);
                    let _ = writeln!(out, "# TYPE {name} counter");
                    let _ = writeln!(out, "{name} {}", self.$name.load(Ordering::Relaxed));
                )*
                out
            }
        }
    };
}

counters! {
    memory_hit_bytes_total: "Bytes read by applications that came from the memory block cache.",
    disk_hit_bytes_total: "Bytes read from the local disk block cache (whole blocks, or the 64 KiB checksum chunks of a random read).",
    disk_reads_inline_total: "Disk cache reads answered from the page cache on the request's own thread, with no wait for the disk.",
    store_get_requests_total: "Ranged GET requests sent to the store for file data.",
    store_get_bytes_total: "Bytes of file data fetched from the store.",
    store_get_retries_total: "Ranged GETs retried after a transient failure, a short body or a timeout.",
    prefetched_unused_bytes_total: "Bytes read ahead that were evicted from memory without being read.",
    memory_evictions_total: "Blocks evicted from the memory block cache.",
    disk_evictions_total: "Blocks evicted from the disk block cache.",
    disk_corrupt_blocks_total: "Disk cache blocks found corrupt or truncated (then refetched).",
    disk_write_errors_total: "Blocks that could not be written to the disk cache.",
    store_list_requests_total: "Listing pages requested from the store (directory listings and lookups).",
    store_head_requests_total: "Property requests (single-name lookups) sent to the store.",
    passthrough_opens_total: "Opens whose reads go from the kernel straight to a file of the disk cache (FUSE passthrough).",
    passthrough_backings_reused_total: "Passthrough opens that named a cache file kept registered with the kernel since an earlier open, opening no file.",
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Serves `GET /metrics` (any path, really) until the runtime stops.
pub async fn serve(
    addr: std::net::SocketAddr,
    metrics: Arc<Metrics>,
) -> std::io::Result<std::net::SocketAddr> {
    if !addr.ip().is_loopback() {
        tracing::warn!(
            "serving metrics on {addr}, beyond this machine: anyone who reaches it can read \
             the mount's counters (bind 127.0.0.1 unless a scraper elsewhere needs them)"
        );
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                // One request per connection; only `GET /metrics` is answered with them.
                let mut buf = [0u8; 1024];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let first = String::from_utf8_lossy(&buf[..n]);
                let wanted = first
                    .lines()
                    .next()
                    .and_then(|l| l.split_whitespace().nth(1))
                    .is_some_and(|path| path == "/metrics" || path.starts_with("/metrics?"));
                let (status, body) = if wanted {
                    ("200 OK", metrics.render())
                } else {
                    ("404 Not Found", "metrics are at /metrics\n".to_string())
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(body.as_bytes()).await;
            });
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_counters_as_prometheus_text() {
        let m = Arc::new(Metrics::default());
        Metrics::add(&m.store_get_requests_total, 3);
        let addr = serve("127.0.0.1:0".parse().unwrap(), m.clone())
            .await
            .unwrap();
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        sock.write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        sock.read_to_string(&mut text).await.unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK"));
        assert!(
            text.contains("\nlakemount_store_get_requests_total 3\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE lakemount_disk_hit_bytes_total counter"));
        for other in [
            "GET / HTTP/1.1",
            "GET /admin HTTP/1.1",
            "GET /metricsx HTTP/1.1",
        ] {
            let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
            sock.write_all(format!("{other}\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut text = String::new();
            sock.read_to_string(&mut text).await.unwrap();
            assert!(text.starts_with("HTTP/1.1 404"), "{other}: {text}");
            assert!(!text.contains("lakemount_store"), "{other}");
        }
    }
}
