//! One tenant's calls to one vendor: the rate budget, one attempt
//! ([`Caller::once`]), and the retry loop for calls that may be repeated
//! ([`Caller::retrying`]).
//!
//! Blocking, for the sinks' threads; the connectors reach it through
//! tokio's blocking pool. Every wait (budget, backoff, `Retry-After`) is
//! interruptible by the caller's [`Stop`], so a shutdown never sleeps out a
//! vendor's pacing. Errors name the call (`METHOD /path` without ids) and
//! the vendor's message, never the URL or headers.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::retry::{classify, jitter, Budget, Fault, Policy};
use crate::http::client::{Answer, Http};

/// A shutdown flag that waits can be interrupted by.
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    pub fn new() -> Stop {
        Stop::default()
    }

    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Sleeps `d` unless stopped meanwhile; `false` when stopped.
    pub fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        loop {
            if self.is_stopped() {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }
}

/// Where a client reports its calls (the component's metrics).
pub trait Observer: Send + Sync {
    /// One call answered with `status` (`None`: no answer).
    fn call(&self, api: &str, status: Option<u16>);
    /// A call is tried again after a transient failure.
    fn retry(&self, _api: &str) {}
    /// Time slept waiting for a rate budget.
    fn rate_wait(&self, _api: &str, _seconds: f64) {}
}

/// An observer that records nothing.
pub struct Unobserved;

impl Observer for Unobserved {
    fn call(&self, _api: &str, _status: Option<u16>) {}
}

/// One request.
#[derive(Debug, Clone)]
pub struct Request {
    /// `METHOD /path` without ids: the rate budget's and metrics' key.
    pub api: &'static str,
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<String>,
}

/// Why a repeatable call gave up.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VendorError {
    #[error("{0}")]
    Refused(Fault),
    #[error("{api} still failing after {attempts} attempts: {last}")]
    Unavailable { api: &'static str, attempts: u32, last: Fault },
    #[error("{api}: unexpected answer: {message}")]
    Protocol { api: &'static str, message: String },
    #[error("{api} not sent: shutting down")]
    Stopped { api: &'static str },
}

impl VendorError {
    /// The vendor's status when it refused.
    pub fn status(&self) -> Option<u16> {
        match self {
            VendorError::Refused(f) => f.status(),
            _ => None,
        }
    }
}

/// A tenant's caller: HTTP, its budget per API, its policy.
pub struct Caller {
    http: Http,
    policy: Policy,
    /// Spacing between calls of one API (0: none).
    interval_ms: i64,
    budget: Mutex<Budget>,
    stop: Stop,
    observer: Arc<dyn Observer>,
    /// The vendor's clock minus ours, from its last `Date` header (ms).
    skew_ms: AtomicI64,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Caller {
    pub fn new(http: Http, policy: Policy, interval_ms: i64, stop: Stop, observer: Arc<dyn Observer>) -> Caller {
        Caller {
            http,
            policy,
            interval_ms,
            budget: Mutex::new(Budget::default()),
            stop,
            observer,
            skew_ms: AtomicI64::new(0),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn stop(&self) -> &Stop {
        &self.stop
    }

    /// The vendor's clock now, as its last answer told it (ours when it
    /// never sent a `Date`).
    pub fn vendor_now_ms(&self) -> i64 {
        now_ms() + self.skew_ms.load(Ordering::Relaxed)
    }

    /// How long before a call of `api` may go out.
    pub fn ready_in(&self, api: &'static str) -> Duration {
        let ms = self.budget.lock().unwrap_or_else(|e| e.into_inner()).wait_ms(api, now_ms());
        Duration::from_millis(ms.max(0) as u64)
    }

    /// One attempt: waits the budget (up to the policy's inline wait),
    /// sends, classifies, moves the budget.
    pub fn once(&self, req: &Request) -> Result<Answer, Fault> {
        let wait = self.ready_in(req.api);
        if wait > self.policy.max_inline_wait {
            return Err(Fault::NotYet { api: req.api, wait });
        }
        if !wait.is_zero() {
            self.observer.rate_wait(req.api, wait.as_secs_f64());
            if !self.stop.sleep(wait) {
                return Err(Fault::Stopped { api: req.api });
            }
        }
        if self.stop.is_stopped() {
            return Err(Fault::Stopped { api: req.api });
        }
        let raw = self.http.call_blocking(req.method, &req.url, &req.headers, req.body.clone());
        self.observer.call(req.api, raw.as_ref().ok().map(|a| a.status));
        if let Some(d) = raw.as_ref().ok().and_then(|a| a.date_ms) {
            // Whole seconds: keep within a second of the truth.
            self.skew_ms.store(d + 500 - now_ms(), Ordering::Relaxed);
        }
        let result = classify(req.api, raw, self.policy.retry_after_cap);
        let mut b = self.budget.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_ms();
        b.completed(req.api, now, if self.interval_ms > 0 { self.interval_ms + 50 } else { 0 });
        if let Err(f) = &result {
            if let Some(ra) = f.retry_after() {
                b.completed(req.api, now, ra.as_millis() as i64);
            }
        }
        result
    }

    /// Repeats `attempt` (which makes one call) while it fails transiently,
    /// up to the policy's attempts, with backoff and `Retry-After`; for
    /// calls that are safe to repeat. Budget waits are not attempts.
    pub fn retrying<T>(
        &self,
        api: &'static str,
        mut attempt: impl FnMut() -> Result<T, Fault>,
    ) -> Result<T, VendorError> {
        let mut tries = 0u32;
        loop {
            let fault = match attempt() {
                Ok(v) => return Ok(v),
                Err(Fault::Stopped { api }) => return Err(VendorError::Stopped { api }),
                Err(f @ Fault::Refused { .. }) => return Err(VendorError::Refused(f)),
                Err(Fault::NotYet { wait, .. }) => {
                    if !self.stop.sleep(wait) {
                        return Err(VendorError::Stopped { api });
                    }
                    continue;
                }
                Err(f) => f,
            };
            tries += 1;
            if tries >= self.policy.max_attempts {
                return Err(VendorError::Unavailable { api, attempts: tries, last: fault });
            }
            self.observer.retry(api);
            let pause = self.policy.backoff.after(tries, &fault, jitter());
            tracing::debug!(api, attempt = tries, wait_ms = pause.as_millis() as u64, error = %fault, "retrying");
            if !self.stop.sleep(pause) {
                return Err(VendorError::Stopped { api });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_interrupts_a_sleep() {
        let s = Stop::new();
        let t = Instant::now();
        let s2 = s.clone();
        let h = std::thread::spawn(move || s2.sleep(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(20));
        s.stop();
        assert!(!h.join().unwrap());
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn retrying_gives_up_on_refusals_and_after_the_attempts() {
        let c = Caller::new(
            Http::new(Duration::from_secs(1)),
            Policy {
                backoff: super::super::retry::Backoff { base: Duration::from_millis(1), cap: Duration::from_millis(2) },
                max_attempts: 3,
                ..Policy::default()
            },
            0,
            Stop::new(),
            Arc::new(Unobserved),
        );
        let mut n = 0;
        let r: Result<(), _> = c.retrying("GET /x", || {
            n += 1;
            Err(Fault::Unknown { api: "GET /x", retry_after: None, message: "502".into() })
        });
        assert!(matches!(r, Err(VendorError::Unavailable { attempts: 3, .. })));
        assert_eq!(n, 3);
        let mut n = 0;
        let r: Result<(), _> = c.retrying("GET /x", || {
            n += 1;
            Err(Fault::Refused { api: "GET /x", status: 403, message: "no".into() })
        });
        assert!(matches!(r, Err(VendorError::Refused(_))));
        assert_eq!(n, 1);
        let mut n = 0;
        let r = c.retrying("GET /x", || {
            n += 1;
            if n < 3 {
                Err(Fault::NotApplied {
                    api: "GET /x",
                    retry_after: Some(Duration::from_millis(1)),
                    message: "429".into(),
                })
            } else {
                Ok(n)
            }
        });
        assert_eq!(r, Ok(3));
    }
}
