//! What an answer means and when to try again: pure functions of status
//! codes, attempt numbers, clocks passed in and a jitter value passed in.
//!
//! Invariants:
//! - Every vendor answer is one of: success (2xx); refused (any other
//!   4xx: nothing was applied and retrying cannot help); not applied (429,
//!   or a connection that never opened: try later); or **unknown** (a
//!   timeout, a dropped connection, 408 or 5xx, 503 included: the vendor may
//!   have applied the call before failing to answer). A caller that cannot
//!   repeat a call blindly (a POST that creates something) must look the
//!   effect up before trying again after an unknown answer
//!   ([`crate::sink::effect`]).
//! - `Retry-After` is honoured on 429 and 503, never above the policy's cap
//!   (a vendor answering `Retry-After: 86400` waits the cap, not a day).
//! - Backoff is exponential with equal jitter, capped, and never zero.
//! - [`Budget`]: calls of one (tenant, API call) key start at least
//!   `interval` after the previous call of that key *completed*. The server
//!   has counted a call by the time its answer arrives, so spacing from the
//!   answer (not from the send) keeps the server-side gap above the budget
//!   whatever the network latency does. A `Retry-After` pushes the key's
//!   next call further.

use std::collections::HashMap;
use std::time::Duration;

use crate::http::client::{Answer, TransportError};

/// Why a call did not succeed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Fault {
    /// The vendor refused: nothing applied, retrying cannot help.
    #[error("{api} refused ({status}): {message}")]
    Refused { api: &'static str, status: u16, message: String },
    /// Not applied; try again after `retry_after` (or a backoff).
    #[error("{api} not applied: {message}")]
    NotApplied { api: &'static str, retry_after: Option<Duration>, message: String },
    /// The vendor may or may not have applied it.
    #[error("{api} outcome unknown: {message}")]
    Unknown { api: &'static str, retry_after: Option<Duration>, message: String },
    /// The call's rate budget is not free before `wait` has passed; it was
    /// not sent (not an attempt, not a failure).
    #[error("{api} waits {wait:?} for its rate budget")]
    NotYet { api: &'static str, wait: Duration },
    /// Shutting down: the call was not sent.
    #[error("{api} not sent: shutting down")]
    Stopped { api: &'static str },
}

impl Fault {
    pub fn api(&self) -> &'static str {
        match self {
            Fault::Refused { api, .. }
            | Fault::NotApplied { api, .. }
            | Fault::Unknown { api, .. }
            | Fault::NotYet { api, .. }
            | Fault::Stopped { api } => api,
        }
    }

    /// Whether the vendor may have applied the call.
    pub fn maybe_applied(&self) -> bool {
        matches!(self, Fault::Unknown { .. })
    }

    /// Whether trying again later can help.
    pub fn transient(&self) -> bool {
        !matches!(self, Fault::Refused { .. })
    }

    /// The vendor's own wait, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Fault::NotApplied { retry_after, .. } | Fault::Unknown { retry_after, .. } => *retry_after,
            Fault::NotYet { wait, .. } => Some(*wait),
            _ => None,
        }
    }

    /// The HTTP status, when there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Fault::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The vendor's error text from a body: ServiceTrade's `messages.error`,
/// Azuga's `message`/`error`, or the start of the body.
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

/// Classifies one call's result; `cap` bounds a `Retry-After`.
pub fn classify(api: &'static str, result: Result<Answer, TransportError>, cap: Duration) -> Result<Answer, Fault> {
    let a = match result {
        Ok(a) => a,
        Err(e) if e.not_sent => return Err(Fault::NotApplied { api, retry_after: None, message: e.message }),
        Err(e) => return Err(Fault::Unknown { api, retry_after: None, message: e.message }),
    };
    let retry_after = a.retry_after_s.map(|s| Duration::from_secs(s).min(cap));
    match a.status {
        200..=299 => Ok(a),
        429 => Err(Fault::NotApplied { api, retry_after, message: format!("HTTP 429: {}", vendor_message(&a.body)) }),
        408 | 500..=599 => {
            let retry_after = retry_after.filter(|_| a.status == 503);
            Err(Fault::Unknown { api, retry_after, message: format!("HTTP {}: {}", a.status, vendor_message(&a.body)) })
        }
        s => Err(Fault::Refused { api, status: s, message: vendor_message(&a.body) }),
    }
}

/// Exponential backoff with equal jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base: Duration::from_millis(200), cap: Duration::from_secs(60) }
    }
}

impl Backoff {
    /// The wait before attempt `attempt + 1` (`attempt` ≥ 1 calls made),
    /// with `jitter` in `[0, 1)`: half the exponential step plus up to half
    /// again, so waits never collapse to zero and never exceed the cap.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = self.base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let step = exp.min(self.cap);
        let half = step / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }

    /// The wait after a failed attempt: the vendor's (capped) `Retry-After`
    /// when it sent one, else the backoff.
    pub fn after(&self, attempt: u32, fault: &Fault, jitter: f64) -> Duration {
        fault.retry_after().unwrap_or_else(|| self.delay(attempt.max(1), jitter))
    }
}

/// How a client retries the calls it may repeat (reads, lists, logins).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub backoff: Backoff,
    /// Calls per request before giving up (the first included; `NotYet`
    /// waits are not calls).
    pub max_attempts: u32,
    /// The longest `Retry-After` honoured.
    pub retry_after_cap: Duration,
    /// Budget waits up to this long are slept through inside a call;
    /// longer ones come back as [`Fault::NotYet`] so the caller can do
    /// other work meanwhile.
    pub max_inline_wait: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            backoff: Backoff::default(),
            max_attempts: 6,
            retry_after_cap: Duration::from_secs(600),
            max_inline_wait: Duration::from_secs(120),
        }
    }
}

/// Per-API spacing of one tenant's calls; times are caller-supplied ms.
#[derive(Debug, Default)]
pub struct Budget {
    next: HashMap<&'static str, i64>,
}

impl Budget {
    /// Milliseconds to wait before a call of `api` may start at `now_ms`.
    pub fn wait_ms(&self, api: &'static str, now_ms: i64) -> i64 {
        self.next.get(api).map_or(0, |at| (at - now_ms).max(0))
    }

    /// A call of `api` completed at `now_ms`; the next may start after
    /// `interval_ms`. A vendor's `Retry-After` can push it further.
    pub fn completed(&mut self, api: &'static str, now_ms: i64, interval_ms: i64) {
        let e = self.next.entry(api).or_insert(i64::MIN);
        *e = (*e).max(now_ms.saturating_add(interval_ms));
    }
}

/// A jitter value in `[0, 1)` from the clock's nanoseconds (the I/O edge).
pub fn jitter() -> f64 {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    f64::from(n.wrapping_mul(2_654_435_761) % 1_000_000) / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn answer(status: u16, retry_after_s: Option<u64>) -> Result<Answer, TransportError> {
        Ok(Answer { status, body: String::new(), retry_after_s, date_ms: None, set_cookie: Vec::new() })
    }

    #[test]
    fn answers_classify_by_whether_they_may_have_been_applied() {
        let cap = Duration::from_secs(600);
        assert!(classify("X", answer(201, None), cap).is_ok());
        let f = classify("X", answer(429, Some(7)), cap).unwrap_err();
        assert!(matches!(f, Fault::NotApplied { .. }) && f.retry_after() == Some(Duration::from_secs(7)));
        for s in [408, 500, 502, 503, 504] {
            let f = classify("X", answer(s, None), cap).unwrap_err();
            assert!(f.maybe_applied() && f.transient(), "{s}");
        }
        let f = classify("X", answer(503, Some(30)), cap).unwrap_err();
        assert_eq!(f.retry_after(), Some(Duration::from_secs(30)), "503 carries Retry-After");
        assert_eq!(classify("X", answer(502, Some(30)), cap).unwrap_err().retry_after(), None);
        for s in [400, 401, 403, 404, 409, 422] {
            let f = classify("X", answer(s, None), cap).unwrap_err();
            assert!(!f.transient() && !f.maybe_applied(), "{s}");
        }
        let refused = Err(TransportError { not_sent: true, message: "connection refused".into() });
        assert!(matches!(classify("X", refused, cap), Err(Fault::NotApplied { .. })));
        let timeout = Err(TransportError { not_sent: false, message: "timed out".into() });
        assert!(classify("X", timeout, cap).unwrap_err().maybe_applied());
    }

    #[test]
    fn retry_after_is_capped_and_cannot_overflow() {
        let cap = Duration::from_secs(600);
        let f = classify("X", answer(429, Some(86_400)), cap).unwrap_err();
        assert_eq!(f.retry_after(), Some(cap));
        let f = classify("X", answer(503, Some(u64::MAX)), cap).unwrap_err();
        assert_eq!(f.retry_after(), Some(cap));
        let b = Backoff::default();
        assert_eq!(b.after(1, &f, 0.0), cap);
        let mut budget = Budget::default();
        budget.completed("X", i64::MAX - 5, i64::MAX);
        assert_eq!(budget.wait_ms("X", 0), i64::MAX, "saturates instead of wrapping");
    }

    #[test]
    fn budget_spaces_calls_from_completion() {
        let mut b = Budget::default();
        assert_eq!(b.wait_ms("POST /v1/geomarks", 1000), 0);
        b.completed("POST /v1/geomarks", 1500, 60_000);
        assert_eq!(b.wait_ms("POST /v1/geomarks", 1600), 59_900);
        assert_eq!(b.wait_ms("PUT /v1/geomarks", 1600), 0, "each call has its own budget");
        b.completed("POST /v1/geomarks", 1000, 1000);
        assert_eq!(b.wait_ms("POST /v1/geomarks", 1600), 59_900, "never moves earlier");
    }

    #[test]
    fn vendor_messages_are_extracted() {
        assert_eq!(
            vendor_message(r#"{"messages":{"success":[],"error":["user 11 not found"]},"data":null}"#),
            "user 11 not found"
        );
        assert_eq!(vendor_message(r#"{"message":"item 0: name is required"}"#), "item 0: name is required");
        assert_eq!(vendor_message("  gateway timeout "), "gateway timeout");
    }

    proptest! {
        #[test]
        fn backoff_grows_is_capped_and_never_zero(attempt in 1u32..64, jitter in 0.0f64..1.0) {
            let b = Backoff::default();
            let d = b.delay(attempt, jitter);
            prop_assert!(d <= b.cap);
            prop_assert!(d >= b.base / 2);
            prop_assert!(b.delay(attempt + 1, 0.0) >= b.delay(attempt, 0.0));
        }
    }
}
