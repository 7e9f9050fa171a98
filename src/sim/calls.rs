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

    /// How many calls matched `method` and `path` exactly.
    pub fn count(&self, method: &str, path: &str) -> usize {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.iter().filter(|c| c.method == method && c.path == path).count()
    }
}
