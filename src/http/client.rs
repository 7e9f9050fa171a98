//! A small blocking HTTP client for the vendor APIs and the report server
//! (`ureq`). Answers of any status come back as [`Answer`]; only transport
//! failures are errors ([`TransportError`]), and they say whether the
//! request can have reached the server: a refused connection cannot, a
//! timeout or a dropped connection can (the vendor may have applied it).
//! Error texts never carry the URL (a webhook URL holds a secret) or
//! headers.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub retry_after_s: Option<u64>,
    /// The server's clock (`Date` header), unix ms.
    pub date_ms: Option<i64>,
    pub set_cookie: Vec<String>,
}

/// Why no answer came.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TransportError {
    /// The request was never sent (no connection, no DNS answer).
    pub not_sent: bool,
    pub message: String,
}

impl TransportError {
    fn sent(message: impl Into<String>) -> TransportError {
        TransportError { not_sent: false, message: message.into() }
    }
}

#[derive(Clone)]
pub struct Http {
    agent: ureq::Agent,
}

impl Http {
    pub fn new(timeout: Duration) -> Http {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        Http { agent }
    }

    /// Sends one request. `headers` values may be secrets; they are never
    /// part of an error. Runs on tokio's blocking pool.
    pub async fn call(
        &self,
        method: &'static str,
        url: String,
        headers: Vec<(&'static str, String)>,
        body: Option<String>,
    ) -> Result<Answer, TransportError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.call_blocking(method, &url, &headers, body))
            .await
            .map_err(|_| TransportError::sent("http task failed"))?
    }

    /// Sends one request on the calling thread (never call this from an
    /// async task). Same contract as [`Http::call`].
    pub fn call_blocking(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: Option<String>,
    ) -> Result<Answer, TransportError> {
        let agent = &self.agent;
        let result = match (method, body) {
            ("GET", _) => {
                let mut r = agent.get(url);
                for (k, v) in headers {
                    r = r.header(*k, v);
                }
                r.call()
            }
            (m, body) => {
                let mut r = match m {
                    "PUT" => agent.put(url),
                    "DELETE" => agent.delete(url).force_send_body(),
                    _ => agent.post(url),
                };
                for (k, v) in headers {
                    r = r.header(*k, v);
                }
                r.header("Content-Type", "application/json").send(body.unwrap_or_default())
            }
        };
        let mut resp = result.map_err(|e| match e {
            ureq::Error::Timeout(_) => TransportError::sent("timed out"),
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                TransportError { not_sent: true, message: "connection refused".into() }
            }
            ureq::Error::Io(io) => TransportError::sent(format!("i/o error: {}", io.kind())),
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
                TransportError { not_sent: true, message: "connection failed".into() }
            }
            other => TransportError::sent(format!(
                "transport error ({})",
                other.to_string().chars().take(80).collect::<String>()
            )),
        })?;
        let status = resp.status().as_u16();
        let retry_after_s =
            resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
        let date_ms = resp
            .headers()
            .get("date")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| chrono::DateTime::parse_from_rfc2822(v.trim()).ok())
            .map(|d| d.timestamp_millis());
        let set_cookie =
            resp.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect();
        let body = resp.body_mut().read_to_string().map_err(|e| {
            TransportError::sent(format!("reading the answer: {}", e.to_string().chars().take(80).collect::<String>()))
        })?;
        Ok(Answer { status, body, retry_after_s, date_ms, set_cookie })
    }
}

/// Percent-encodes a query or path value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
