//! Process telemetry shared by every command: the `/metrics` endpoint.
//!
//! The endpoint runs on its own thread with blocking I/O (never on the async
//! runtime) and answers `GET /metrics` with whatever `render` returns; any
//! other request gets 404. It never echoes the request.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};

/// Serves `GET /metrics` on `addr` from a background thread; returns the
/// bound address (port 0 picks one).
pub fn serve_metrics(addr: SocketAddr, render: impl Fn() -> String + Send + 'static) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let mut buf = [0u8; 2048];
            let n = stream.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]);
            let response = if head.starts_with("GET /metrics") {
                let body = render();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
            };
            let _ = stream.write_all(response.as_bytes());
        }
    })?;
    Ok(bound)
}
