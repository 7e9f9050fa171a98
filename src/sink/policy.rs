//! Retry and rate policy for the sinks: pure functions of status codes,
//! attempt numbers, clocks passed in and a jitter value passed in.
//!
//! Invariants:
//! - Classification: 2xx is success; 429, 5xx, 408 and transport errors are
//!   transient; every other status is permanent (retrying cannot help).
//! - A 429's `Retry-After` is honoured exactly (never retried sooner); other
//!   transient failures back off exponentially with equal jitter, capped.
//! - [`Budget`]: calls of one (tenant, API call) key start at least
//!   `interval` after the previous call of that key *completed*. The server
//!   has counted a call by the time its answer arrives, so spacing from the
//!   answer (not from the send) keeps the server-side gap above the budget
//!   whatever the network latency does.

use std::collections::HashMap;
use std::time::Duration;

/// What to do after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    /// Try again; `rate_limited` when the server said 429.
    Transient {
        rate_limited: bool,
    },
    Permanent,
}

/// Classifies an HTTP status (`None`: no answer, a transport failure).
pub fn classify(status: Option<u16>) -> Verdict {
    match status {
        Some(s) if (200..300).contains(&s) => Verdict::Success,
        Some(429) => Verdict::Transient { rate_limited: true },
        Some(408) | Some(500..=599) | None => Verdict::Transient { rate_limited: false },
        Some(_) => Verdict::Permanent,
    }
}

/// Exponential backoff with equal jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    /// Calls per command before giving up (the first included).
    pub max_attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base: Duration::from_millis(200), cap: Duration::from_secs(30), max_attempts: 10 }
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

    /// The wait after a failed attempt: the server's `Retry-After` for a
    /// 429 that carries one, the backoff otherwise.
    pub fn wait_after(&self, attempt: u32, verdict: Verdict, retry_after_s: Option<u64>, jitter: f64) -> Duration {
        match (verdict, retry_after_s) {
            (Verdict::Transient { rate_limited: true }, Some(s)) => Duration::from_secs(s),
            _ => self.delay(attempt, jitter),
        }
    }
}

/// Per-(tenant, API call) spacing of calls; times are caller-supplied ms.
#[derive(Debug, Default)]
pub struct Budget {
    next: HashMap<(String, &'static str), i64>,
}

impl Budget {
    /// Milliseconds to wait before a call of `key` may start at `now_ms`.
    pub fn wait_ms(&self, tenant: &str, call: &'static str, now_ms: i64) -> i64 {
        self.next.get(&(tenant.to_string(), call)).map_or(0, |at| (at - now_ms).max(0))
    }

    /// A call of `key` completed at `now_ms`; the next may start after
    /// `interval_ms`. A server's `Retry-After` can push it further.
    pub fn completed(&mut self, tenant: &str, call: &'static str, now_ms: i64, interval_ms: i64) {
        let e = self.next.entry((tenant.to_string(), call)).or_insert(i64::MIN);
        *e = (*e).max(now_ms + interval_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn statuses_classify() {
        assert_eq!(classify(Some(201)), Verdict::Success);
        assert_eq!(classify(Some(429)), Verdict::Transient { rate_limited: true });
        assert_eq!(classify(Some(503)), Verdict::Transient { rate_limited: false });
        assert_eq!(classify(None), Verdict::Transient { rate_limited: false });
        assert_eq!(classify(Some(404)), Verdict::Permanent);
        assert_eq!(classify(Some(400)), Verdict::Permanent);
    }

    #[test]
    fn retry_after_is_honoured() {
        let b = Backoff::default();
        let v = classify(Some(429));
        assert_eq!(b.wait_after(1, v, Some(7), 0.0), Duration::from_secs(7));
        assert_eq!(b.wait_after(1, v, None, 0.0), b.delay(1, 0.0));
    }

    #[test]
    fn budget_spaces_calls_from_completion() {
        let mut b = Budget::default();
        assert_eq!(b.wait_ms("acme", "POST /v1/geomarks", 1000), 0);
        b.completed("acme", "POST /v1/geomarks", 1500, 60_000);
        assert_eq!(b.wait_ms("acme", "POST /v1/geomarks", 1600), 59_900);
        assert_eq!(b.wait_ms("acme", "PUT /v1/geomarks", 1600), 0, "each call has its own budget");
        assert_eq!(b.wait_ms("other", "POST /v1/geomarks", 1600), 0, "and each tenant");
        b.completed("acme", "POST /v1/geomarks", 1000, 1000);
        assert_eq!(b.wait_ms("acme", "POST /v1/geomarks", 1600), 59_900, "never moves earlier");
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
