//! Reading one counter from a lakemount daemon's Prometheus endpoint.

use std::io::{Read, Write};

/// The value of `lakemount_NAME` served at `addr` (HOST:PORT).
pub fn scrape(addr: &str, name: &str) -> u64 {
    let mut sock =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("metrics at {addr}: {e}"));
    sock.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut text = String::new();
    sock.read_to_string(&mut text).unwrap();
    let want = format!("lakemount_{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&want))
        .unwrap_or_else(|| panic!("{name} not in {text}"))
        .trim()
        .parse()
        .unwrap()
}

/// One counter of the daemon whose log is `log_text`: it logs where its metrics are served
/// (the last address, after remounts).
pub fn from_log(log_text: &str, name: &str) -> u64 {
    let addr = log_text
        .rsplit_once("metrics at http://")
        .and_then(|(_, rest)| rest.split('/').next())
        .unwrap_or_else(|| panic!("no metrics address in the log: {log_text}"));
    scrape(addr, name)
}
