//! The call log: every request a simulator answered, so tests can count
//! effects ("exactly one clock-in was posted", "no call was repeated within
//! the rate budget") — and the chaos that makes a simulator misbehave the
//! way real vendors do.
//!
//! Chaos ([`Chaos`], set with `POST /admin/chaos`), per API call:
//! - `count` / `rate`: the next `count` calls, or each later call with
//!   probability `rate`, fail with `status` (default 502);
//! - `apply`: the call takes effect first, then the error is answered —
//!   the answer is lost, not the effect;
//! - `stall_ms`: the call is held that long (past a client's timeout):
//!   before the handler runs, or after it with `apply`; without a
//!   `status`, the real answer comes, late;
//! - `outage_s`: every call fails with `status` (default 503) for that long;
//! - `retry_after_s`: the failure carries `Retry-After` (a 429 without it
//!   says 1 s);
//! - `methods`: only calls with these methods (all when empty);
//! - `truncate` / `omit_page_count`: the real answer, with its lists cut
//!   short / without ServiceTrade's `totalPages` (a partial listing).
//!
//! Invariants: entries are appended in the order responses were produced
//! and carry a strictly increasing `seq`; whether the n-th API call is hit
//! by a `rate` rule is a pure function of `(seed, n)` ([`Rng::stream`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::rng::Rng;

/// One answered request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Call {
    pub seq: u64,
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    /// Wall-clock milliseconds when it was answered.
    pub at_ms: i64,
    /// The answer was injected chaos (`applied`: after the call took effect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injected: Option<Injected>,
}

/// A chaos rule (the body of `POST /admin/chaos`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chaos {
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub count: u64,
    #[serde(default)]
    pub rate: f64,
    #[serde(default)]
    pub apply: bool,
    #[serde(default)]
    pub stall_ms: u64,
    #[serde(default)]
    pub outage_s: f64,
    #[serde(default)]
    pub retry_after_s: Option<u64>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub seed: u64,
    /// The real answer, with every list in it cut to this many items (a
    /// vendor answering a list short).
    #[serde(default)]
    pub truncate: Option<usize>,
    /// The real answer without ServiceTrade's `totalPages`.
    #[serde(default)]
    pub omit_page_count: bool,
}

impl Chaos {
    /// Why the rule makes no sense, if it does not.
    pub fn check(&self) -> Result<(), String> {
        if let Some(s) = self.status {
            if !(400..600).contains(&s) {
                return Err("status must be 400..599".into());
            }
        }
        if !(0.0..=1.0).contains(&self.rate) {
            return Err("rate must be in [0, 1]".into());
        }
        if !(self.outage_s >= 0.0 && self.outage_s.is_finite()) {
            return Err("outage_s must be a finite number >= 0".into());
        }
        Ok(())
    }

    fn covers(&self, method: &str) -> bool {
        self.methods.is_empty() || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method))
    }
}

/// What to do to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Injected {
    /// `None`: the real answer (late after a stall, or rewritten).
    pub status: Option<u16>,
    pub applied: bool,
    pub stall_ms: u64,
    pub retry_after_s: Option<u64>,
    pub truncate: Option<usize>,
    pub omit_page_count: bool,
}

#[derive(Debug, Default)]
struct ChaosState {
    counted: Option<(Chaos, u64)>,
    rated: Option<Chaos>,
    outage: Option<(Chaos, Instant)>,
    /// API calls seen (numbers the `rate` draws).
    calls: u64,
    injected: u64,
}

#[derive(Debug, Default)]
pub struct CallLog {
    calls: Mutex<Vec<Call>>,
    chaos: Mutex<ChaosState>,
    /// Calls refused by the simulator's own rate limiter.
    rate_limited: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl CallLog {
    pub fn record(&self, method: &str, path: &str, query: &str, status: u16, injected: Option<Injected>) {
        let mut calls = lock(&self.calls);
        let seq = calls.len() as u64 + 1;
        calls.push(Call {
            seq,
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            status,
            at_ms: chrono::Utc::now().timestamp_millis(),
            injected,
        });
    }

    /// Every call so far whose path starts with `prefix` (all with `""`).
    pub fn snapshot(&self, prefix: &str) -> Vec<Call> {
        lock(&self.calls).iter().filter(|c| c.path.starts_with(prefix)).cloned().collect()
    }

    /// Adds a chaos rule: an outage, a count, or a rate (each replaces the
    /// rule of its sort; `{count: 0}` without a rate or outage clears all).
    pub fn chaos(&self, c: Chaos) {
        let mut s = lock(&self.chaos);
        if c.outage_s > 0.0 {
            s.outage = Some((c.clone(), Instant::now() + Duration::from_secs_f64(c.outage_s)));
        } else if c.rate > 0.0 {
            s.rated = Some(c);
        } else if c.count > 0 {
            s.counted = Some((c.clone(), c.count));
        } else {
            *s = ChaosState { calls: s.calls, injected: s.injected, ..ChaosState::default() };
        }
    }

    /// Answers the next `count` API calls with `status` (0 clears).
    pub fn inject(&self, status: u16, count: u64) {
        self.chaos(Chaos { status: Some(status), count, ..Chaos::default() });
    }

    /// What chaos does to this API call, if anything.
    pub fn decide(&self, method: &str) -> Option<Injected> {
        let mut s = lock(&self.chaos);
        s.calls += 1;
        let n = s.calls;
        let pick = |c: &Chaos, default: u16| {
            let rewrites = c.truncate.is_some() || c.omit_page_count;
            Injected {
                status: c.status.or((c.stall_ms == 0 && !rewrites).then_some(default)),
                applied: c.apply,
                stall_ms: c.stall_ms,
                retry_after_s: c.retry_after_s,
                truncate: c.truncate,
                omit_page_count: c.omit_page_count,
            }
        };
        let hit =
            if let Some((c, _)) = s.outage.as_ref().filter(|(c, until)| Instant::now() < *until && c.covers(method)) {
                Some(Injected { applied: false, stall_ms: 0, truncate: None, omit_page_count: false, ..pick(c, 503) })
            } else if let Some((c, left)) = s.counted.as_mut().filter(|(c, _)| c.covers(method)) {
                let i = pick(c, 502);
                *left -= 1;
                if *left == 0 {
                    s.counted = None;
                }
                Some(i)
            } else if let Some(c) = s.rated.as_ref().filter(|c| c.covers(method)) {
                Rng::stream(c.seed, n).chance(c.rate).then(|| pick(c, 502))
            } else {
                None
            };
        if hit.is_some() {
            s.injected += 1;
        }
        hit
    }

    /// Injected failures still to answer by count.
    pub fn injected_left(&self) -> u64 {
        lock(&self.chaos).counted.as_ref().map_or(0, |(_, n)| *n)
    }

    /// `{pending, injected, outage_left_s, rate}` for `GET /admin/chaos`.
    pub fn chaos_state(&self) -> serde_json::Value {
        let s = lock(&self.chaos);
        let outage_left =
            s.outage.as_ref().map_or(0.0, |(_, u)| u.saturating_duration_since(Instant::now()).as_secs_f64());
        serde_json::json!({
            "pending": s.counted.as_ref().map_or(0, |(_, n)| *n),
            "injected": s.injected,
            "outage_left_s": outage_left,
            "rate": s.rated.as_ref().map_or(0.0, |c| c.rate),
            "rate_limited": self.rate_limited(),
        })
    }

    pub fn note_rate_limited(&self) {
        self.rate_limited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Calls the simulator's rate limiter refused (injected 429s excluded).
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many calls matched `method` and `path` exactly.
    pub fn count(&self, method: &str, path: &str) -> usize {
        lock(&self.calls).iter().filter(|c| c.method == method && c.path == path).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_rule_is_deterministic_and_respects_methods() {
        let run = || {
            let log = CallLog::default();
            log.chaos(Chaos { rate: 0.3, apply: true, seed: 7, methods: vec!["POST".into()], ..Chaos::default() });
            (0..200).map(|i| log.decide(if i % 2 == 0 { "POST" } else { "GET" }).is_some()).collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let hits = a.iter().filter(|h| **h).count();
        assert!((10..50).contains(&hits), "{hits}");
        assert!(a.iter().enumerate().all(|(i, h)| !h || i % 2 == 0), "GETs are spared");
    }

    #[test]
    fn counts_outages_and_stalls() {
        let log = CallLog::default();
        log.inject(500, 2);
        assert_eq!(log.decide("GET").and_then(|i| i.status), Some(500));
        assert_eq!(log.injected_left(), 1);
        assert!(log.decide("GET").is_some());
        assert!(log.decide("GET").is_none());
        log.chaos(Chaos { outage_s: 30.0, retry_after_s: Some(5), ..Chaos::default() });
        let i = log.decide("POST").unwrap();
        assert_eq!((i.status, i.retry_after_s, i.applied), (Some(503), Some(5), false));
        log.chaos(Chaos::default());
        assert!(log.decide("POST").is_none(), "cleared");
        log.chaos(Chaos { count: 1, apply: true, stall_ms: 100, ..Chaos::default() });
        let i = log.decide("POST").unwrap();
        assert_eq!((i.status, i.applied, i.stall_ms), (None, true, 100), "the real answer, late");
        assert!(Chaos { rate: 2.0, ..Chaos::default() }.check().is_err());
    }
}
