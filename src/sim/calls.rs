//! The call log: every request a simulator answered, so tests can count
//! effects ("exactly one clock-in was posted", "no call was repeated within
//! the rate budget").
//!
//! Invariant: entries are appended in the order responses were produced and
//! carry a strictly increasing `seq`.

use std::sync::Mutex;

use serde::Serialize;

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
}

#[derive(Debug, Default)]
pub struct CallLog {
    calls: Mutex<Vec<Call>>,
    /// Injected failures: answer the next `.1` API calls with status `.0`.
    chaos: Mutex<Option<(u16, u64)>>,
    /// Calls refused by the simulator's own rate limiter.
    rate_limited: std::sync::atomic::AtomicU64,
}

impl CallLog {
    pub fn record(&self, method: &str, path: &str, query: &str, status: u16) {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let seq = calls.len() as u64 + 1;
        calls.push(Call {
            seq,
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            status,
            at_ms: chrono::Utc::now().timestamp_millis(),
        });
    }

    /// Every call so far whose path starts with `prefix` (all with `""`).
    pub fn snapshot(&self, prefix: &str) -> Vec<Call> {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.iter().filter(|c| c.path.starts_with(prefix)).cloned().collect()
    }

    /// Answers the next `count` API calls with `status` (0 clears).
    pub fn inject(&self, status: u16, count: u64) {
        *self.chaos.lock().unwrap_or_else(|e| e.into_inner()) = (count > 0).then_some((status, count));
    }

    /// Takes one injected failure, if any is pending: its status.
    pub fn take_injected(&self) -> Option<u16> {
        let mut c = self.chaos.lock().unwrap_or_else(|e| e.into_inner());
        let (status, left) = (*c)?;
        *c = (left > 1).then_some((status, left - 1));
        Some(status)
    }

    /// Injected failures still to answer.
    pub fn injected_left(&self) -> u64 {
        self.chaos.lock().unwrap_or_else(|e| e.into_inner()).map_or(0, |(_, n)| n)
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
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.iter().filter(|c| c.method == method && c.path == path).count()
    }
}
