//! Process telemetry shared by every command: the `/metrics` endpoint, with
//! `/healthz` beside it, and the typed metrics layer every component builds
//! its metrics with ([`metrics`]).
//!
//! The endpoint runs on its own thread with blocking I/O (never on the async
//! runtime) and answers `GET /metrics` with whatever `render` returns, and
//! `GET /healthz` (also `/readyz`) with 200 `ok` or, when `health` reports a
//! problem (a stalled worker), 503 and the problem; any other request gets
//! 404. It never echoes the request.

pub mod metrics;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};

/// Always healthy.
pub fn healthy() -> Result<(), String> {
    Ok(())
}

/// Serves `GET /metrics` and `GET /healthz` on `addr` from a background
/// thread; returns the bound address (port 0 picks one).
pub fn serve_metrics(
    addr: SocketAddr,
    render: impl Fn() -> String + Send + 'static,
    health: impl Fn() -> Result<(), String> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let mut buf = [0u8; 2048];
            let n = stream.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]);
            let (status, ctype, body) = if head.starts_with("GET /metrics") {
                ("200 OK", "text/plain; version=0.0.4", render())
            } else if head.starts_with("GET /healthz") || head.starts_with("GET /readyz") {
                match health() {
                    Ok(()) => ("200 OK", "text/plain", "ok\n".to_string()),
                    Err(why) => ("503 Service Unavailable", "text/plain", format!("{why}\n")),
                }
            } else {
                ("404 Not Found", "text/plain", String::new())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    })?;
    Ok(bound)
}
