//! One vendor call with the tenant's rate budget, retries and backoff.
//!
//! The budget is waited for before every attempt (429s included) and moved
//! after every answer; transient failures back off ([`super::policy`]); a
//! 429 waits its `Retry-After` and does not use up an attempt (at most
//! [`MAX_RATE_LIMITED`] of them per call); a permanent answer or the last
//! attempt ends the call with an error that
//! names the call and the vendor's own message, never the URL or headers.

use std::sync::Mutex;
use std::time::Duration;

use super::ledger::Ledger;
use super::metrics::Metrics;
use super::policy::{classify, Backoff, Budget, Verdict};
use super::SinkKind;
use crate::connect::http::{Answer, Http};
use crate::connect::tenants::AzugaTenant;

/// What every executor shares.
pub struct Cx {
    pub sink: SinkKind,
    pub ledger: Ledger,
    pub http: Http,
    pub budget: Mutex<Budget>,
    pub backoff: Backoff,
    pub metrics: Metrics,
}

/// One request.
pub struct Request {
    /// `METHOD /path` without ids: the rate budget's and metrics' key.
    pub api: &'static str,
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<String>,
    /// Spacing between calls of `api` for this tenant.
    pub interval_ms: i64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("{api} refused ({status}): {message}")]
    Permanent { api: &'static str, status: u16, message: String },
    #[error("{api} still failing after {attempts} attempts: {last}")]
    Exhausted { api: &'static str, attempts: u32, last: String },
}

impl CallError {
    pub fn status(&self) -> Option<u16> {
        match self {
            CallError::Permanent { status, .. } => Some(*status),
            CallError::Exhausted { .. } => None,
        }
    }
}

/// The vendor's error text from a body: ServiceTrade's
/// `messages.error`, Azuga's `message`/`error`, or the start of the body.
pub fn vendor_message(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    let from_envelope =
        v["messages"]["error"].as_array().map(|a| a.iter().filter_map(|m| m.as_str()).collect::<Vec<_>>().join("; "));
    let text = from_envelope
        .filter(|s| !s.is_empty())
        .or_else(|| v["message"].as_str().map(str::to_string))
        .or_else(|| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string());
    text.chars().take(300).collect()
}

/// Spacing for an Azuga call: its budget plus a margin (none when the
/// tenant has no budget).
pub fn azuga_interval_ms(az: &AzugaTenant) -> i64 {
    if az.rate_limit_ms == 0 {
        0
    } else {
        az.rate_limit_ms as i64 + 50
    }
}

/// Azuga's v1 auth header: `Basic base64(apiKey:)`.
pub fn azuga_auth(az: &AzugaTenant) -> (&'static str, String) {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:", az.api_key.expose()));
    ("Authorization", format!("Basic {token}"))
}

/// 429 answers tolerated per call on top of the attempts.
pub const MAX_RATE_LIMITED: u32 = 50;

fn jitter() -> f64 {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    f64::from(n.wrapping_mul(2_654_435_761) % 1_000_000) / 1_000_000.0
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Cx {
    /// Sends `req` until it succeeds, fails permanently or runs out of
    /// attempts; `attempts` counts the calls made (added to).
    pub fn call(&self, tenant: &str, req: &Request, attempts: &mut u32) -> Result<Answer, CallError> {
        let sink = self.sink.name();
        let mut tries = 0u32;
        let mut limited = 0u32;
        loop {
            let wait = self.budget.lock().unwrap_or_else(|e| e.into_inner()).wait_ms(tenant, req.api, now_ms());
            if wait > 0 {
                self.metrics.rate_wait(sink, req.api, wait as f64 / 1000.0);
                std::thread::sleep(Duration::from_millis(wait as u64));
            }
            tries += 1;
            *attempts += 1;
            let answer = self.http.call_blocking(req.method, &req.url, &req.headers, req.body.clone());
            let status = answer.as_ref().ok().map(|a| a.status);
            let verdict = classify(status);
            {
                let mut b = self.budget.lock().unwrap_or_else(|e| e.into_inner());
                b.completed(tenant, req.api, now_ms(), req.interval_ms);
                if let (Verdict::Transient { rate_limited: true }, Ok(a)) = (verdict, &answer) {
                    if let Some(s) = a.retry_after_s {
                        b.completed(tenant, req.api, now_ms(), (s * 1000) as i64);
                    }
                }
            }
            self.metrics.api_call(sink, req.api, status);
            let last = match (&answer, verdict) {
                (Ok(a), Verdict::Success) => return Ok(a.clone()),
                (Ok(a), Verdict::Permanent) => {
                    return Err(CallError::Permanent {
                        api: req.api,
                        status: a.status,
                        message: vendor_message(&a.body),
                    })
                }
                (Ok(a), _) => format!("HTTP {}: {}", a.status, vendor_message(&a.body)),
                (Err(e), _) => e.clone(),
            };
            // A 429 is the vendor pacing us, not failing: it does not use up
            // an attempt (up to a bound, so a vendor stuck at 429 still ends).
            if verdict == (Verdict::Transient { rate_limited: true }) && limited < MAX_RATE_LIMITED {
                limited += 1;
                tries -= 1;
            }
            if tries >= self.backoff.max_attempts {
                return Err(CallError::Exhausted { api: req.api, attempts: tries, last });
            }
            self.metrics.retry(sink, req.api);
            let retry_after = answer.as_ref().ok().and_then(|a| a.retry_after_s);
            let pause = self.backoff.wait_after(tries.max(1), verdict, retry_after, jitter());
            tracing::debug!(sink, api = req.api, tenant, attempt = tries, wait_ms = pause.as_millis() as u64, error = %last, "retrying");
            std::thread::sleep(pause);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_messages_are_extracted() {
        assert_eq!(
            vendor_message(r#"{"messages":{"success":[],"error":["user 11 not found"]},"data":null}"#),
            "user 11 not found"
        );
        assert_eq!(vendor_message(r#"{"message":"item 0: name is required"}"#), "item 0: name is required");
        assert_eq!(vendor_message("  gateway timeout "), "gateway timeout");
    }
}
