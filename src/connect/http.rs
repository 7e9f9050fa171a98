//! A small async HTTP client for the vendor APIs: blocking `ureq` calls run
//! on tokio's blocking pool. Answers of any status come back as
//! [`Answer`]; only transport failures are errors. Error texts carry the
//! call's name, never its URL (a webhook URL holds a secret) or headers.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub retry_after_s: Option<u64>,
    pub set_cookie: Vec<String>,
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
    ) -> Result<Answer, String> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.call_blocking(method, &url, &headers, body))
            .await
            .map_err(|_| "http task failed".to_string())?
    }

    /// Sends one request on the calling thread (never call this from an
    /// async task). Same contract as [`Http::call`].
    pub fn call_blocking(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: Option<String>,
    ) -> Result<Answer, String> {
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
            ureq::Error::Timeout(_) => "timed out".to_string(),
            ureq::Error::Io(io) => format!("i/o error: {}", io.kind()),
            ureq::Error::ConnectionFailed => "connection failed".to_string(),
            other => format!("transport error ({})", other.to_string().chars().take(80).collect::<String>()),
        })?;
        let status = resp.status().as_u16();
        let retry_after_s =
            resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
        let set_cookie =
            resp.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect();
        let body = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("reading the answer: {}", e.to_string().chars().take(80).collect::<String>()))?;
        Ok(Answer { status, body, retry_after_s, set_cookie })
    }
}
