//! The exactly-once effect protocol, written once: every executor (clock,
//! geofence, email, the daily report) carries out its effects through
//! [`attempt`] or, for bulk calls, through the same steps by hand
//! ([`crate::sink::geofence`]).
//!
//! Per command id, each attempt:
//! 1. If the outcome is **unknown** — an earlier attempt got an ambiguous
//!    answer (timeout, dropped connection, 408, 5xx: the vendor may have
//!    applied it), the ledger holds an intent without an outcome (a crash
//!    between acting and recording), or the command sits on a partition
//!    another instance may have worked on ([`crate::sink::runner`]) — look
//!    the effect up at the vendor first (ServiceTrade clock events by user,
//!    appointment, activity and second; Azuga geomarks by appointment;
//!    TrackMe links by vehicle, destination and window). Found: it is done,
//!    and is not done again. SMTP cannot be asked: a message whose delivery
//!    is unknown is sent again with the same `Message-ID`, the one handle a
//!    receiver has to drop the copy.
//! 2. Record the intent (durably) before the call that causes the effect.
//! 3. Act, once. Success: done. A refusal (4xx): failed, with the vendor's
//!    reason. Anything transient: not decided; the outcome is unknown again
//!    if the answer was ambiguous, and the worker retries later
//!    ([`crate::sink::policy`]).
//! 4. The outcome is recorded by the worker (with the result), before the
//!    result is published ([`crate::sink::worker`]).
//!
//! So an effect happens at most once whatever the vendor answers, and at
//! least once unless the vendor refuses it or it stops making sense.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::ledger::{Ledger, LedgerError, Step};
use super::metrics::Metrics;
use super::{SinkKind, Work};
use crate::vendor::call::{Observer, Stop};
use crate::vendor::retry::{Fault, Policy};

/// Which partitions this process may act for, and until when.
pub struct Fence {
    owned: Mutex<HashSet<i32>>,
    last_poll: Mutex<Instant>,
    /// How long after its last poll the process trusts it still owns its
    /// partitions (well under the group's session timeout).
    lease: Duration,
}

impl Fence {
    pub fn new(lease: Duration) -> Fence {
        Fence { owned: Mutex::new(HashSet::new()), last_poll: Mutex::new(Instant::now()), lease }
    }

    pub fn polled(&self) {
        *lock(&self.last_poll) = Instant::now();
    }

    pub fn assign(&self, partitions: &[i32]) {
        lock(&self.owned).extend(partitions.iter().copied());
    }

    pub fn revoke(&self, partitions: &[i32]) {
        let mut o = lock(&self.owned);
        for p in partitions {
            o.remove(p);
        }
    }

    pub fn owns(&self, partition: i32) -> bool {
        lock(&self.owned).contains(&partition)
    }

    /// Whether a call for a command of `partition` may start now.
    pub fn may_act(&self, partition: i32) -> bool {
        lock(&self.last_poll).elapsed() < self.lease && self.owns(partition)
    }
}

/// What every executor shares.
pub struct Cx {
    pub sink: SinkKind,
    pub ledger: Ledger,
    pub metrics: Metrics,
    pub stop: Stop,
    /// The policy of this sink's vendor clients.
    pub policy: Policy,
    /// Vendor call timeout.
    pub timeout: Duration,
    /// Which partitions this process may act for.
    pub fence: Arc<Fence>,
}

impl Cx {
    /// The observer a vendor client of this sink reports to.
    pub fn observer(&self) -> Arc<dyn Observer> {
        Arc::new(SinkCalls { metrics: self.metrics.clone(), sink: self.sink.name() })
    }
}

/// Counts a sink's vendor calls into its metrics.
struct SinkCalls {
    metrics: Metrics,
    sink: &'static str,
}

impl Observer for SinkCalls {
    fn call(&self, api: &str, status: Option<u16>) {
        self.metrics.api_call(self.sink, api, status);
    }
    fn rate_wait(&self, api: &str, seconds: f64) {
        self.metrics.rate_wait(self.sink, api, seconds);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One effect, as the protocol sees it.
pub trait Effect {
    type Out;
    /// Whether the vendor can be asked at all (SMTP cannot).
    const LOOKS_UP: bool = true;
    /// The effect if it exists at the vendor (`Ok(None)`: it does not).
    fn lookup(&self) -> Result<Option<Self::Out>, Fault>;
    /// Causes the effect: one call.
    fn act(&self) -> Result<Self::Out, Fault>;
    /// How long before the acting call's rate budget is free.
    fn ready_in(&self) -> Duration {
        Duration::ZERO
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt<T> {
    /// Done now, or `found` done already at the vendor.
    Done {
        out: T,
        found: bool,
    },
    Failed(Fault),
}

/// What the protocol tracks of the thing whose effect it carries out (a
/// command's [`Work`], the daily report).
pub trait Tracked {
    fn tenant(&self) -> &str;
    fn id(&self) -> &str;
    /// The commands partition whose owner may act for it.
    fn partition(&self) -> i32;
    /// Whether the effect may already exist.
    fn unknown(&mut self) -> &mut bool;
    /// Calls made for it.
    fn attempts(&mut self) -> &mut u32;
}

impl Tracked for Work {
    fn tenant(&self) -> &str {
        &self.tenant
    }
    fn id(&self) -> &str {
        &self.command.id
    }
    fn partition(&self) -> i32 {
        self.partition
    }
    fn unknown(&mut self) -> &mut bool {
        &mut self.unknown
    }
    fn attempts(&mut self) -> &mut u32 {
        &mut self.attempts
    }
}

/// One attempt at `effect` for `work` (steps 1–3 of the module doc).
pub fn attempt<E: Effect, T: Tracked>(cx: &Cx, work: &mut T, effect: &E) -> Result<Attempt<E::Out>, LedgerError> {
    if !cx.fence.may_act(work.partition()) {
        // Revoked, or the last poll is too old to be sure it is still ours.
        return Ok(Attempt::Failed(Fault::Stopped { api: "fence" }));
    }
    if *work.unknown() && E::LOOKS_UP {
        cx.metrics.lookup(cx.sink.name());
        match effect.lookup() {
            Ok(Some(out)) => {
                tracing::info!(sink = cx.sink.name(), tenant = %work.tenant(), command = %work.id(), "effect found at the vendor; not doing it again");
                return Ok(Attempt::Done { out, found: true });
            }
            Ok(None) => *work.unknown() = false,
            Err(f) => return Ok(Attempt::Failed(f)),
        }
    }
    let wait = effect.ready_in();
    if wait > cx.policy.max_inline_wait {
        let api = "budget";
        return Ok(Attempt::Failed(Fault::NotYet { api, wait }));
    }
    record_intent(&cx.ledger, work)?;
    match effect.act() {
        Ok(out) => Ok(Attempt::Done { out, found: false }),
        Err(f) => {
            // Not sent at all (budget, shutdown): what we knew stands.
            if !matches!(f, Fault::NotYet { .. } | Fault::Stopped { .. }) {
                *work.unknown() = f.maybe_applied();
            }
            Ok(Attempt::Failed(f))
        }
    }
}

/// Step 2: one more call, recorded before it is made.
pub fn record_intent<T: Tracked>(ledger: &Ledger, work: &mut T) -> Result<(), LedgerError> {
    *work.attempts() += 1;
    let calls = *work.attempts();
    ledger.record(&[(work.tenant(), work.id(), Step::Intent { calls })], &[])
}

/// The verdict for a failed attempt: a refusal decides (failed, with
/// `what` and the vendor's reason); anything else is retried.
pub fn on_fault(work: &Work, sink: SinkKind, what: &str, f: Fault) -> super::Verdict {
    match f {
        Fault::Refused { .. } => work.failed(sink, format!("{what}: {f}")),
        other => super::Verdict::Retry(other),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use super::*;
    use crate::engine::{Action, Command};
    use crate::model::{Id, Ts};

    struct Fake {
        held: RefCell<Option<u32>>,
        answers: RefCell<Vec<Result<u32, Fault>>>,
        lookups: Cell<u32>,
        acts: Cell<u32>,
    }

    impl Effect for Fake {
        type Out = u32;
        fn lookup(&self) -> Result<Option<u32>, Fault> {
            self.lookups.set(self.lookups.get() + 1);
            Ok(*self.held.borrow())
        }
        fn act(&self) -> Result<u32, Fault> {
            self.acts.set(self.acts.get() + 1);
            let a = self.answers.borrow_mut().remove(0);
            // An ambiguous answer after applying: the vendor holds it.
            if matches!(a, Err(Fault::Unknown { .. })) || a.is_ok() {
                *self.held.borrow_mut() = Some(7);
            }
            a
        }
    }

    fn work() -> Work {
        let command = Command {
            id: "c1".into(),
            appointment: Id::number(1),
            action: Action::DeleteGeofence { revision: 1, name: "x".into() },
        };
        Work::new("acme".into(), command, Ts(0), 0, 0, Vec::new())
    }

    fn cx(dir: &std::path::Path) -> Cx {
        Cx {
            sink: SinkKind::Clock,
            ledger: Ledger::open(dir, false).unwrap(),
            metrics: Metrics::new(&["clock"], ["acme"]),
            stop: Stop::new(),
            policy: Policy::default(),
            timeout: Duration::from_secs(1),
            fence: {
                let f = Arc::new(Fence::new(Duration::from_secs(60)));
                f.assign(&[0]);
                f
            },
        }
    }

    #[test]
    fn an_ambiguous_answer_is_looked_up_before_acting_again() {
        let dir = std::env::temp_dir().join(format!("geoclock-effect-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cx = cx(&dir);
        let fake = Fake {
            held: RefCell::new(None),
            answers: RefCell::new(vec![Err(Fault::Unknown {
                api: "POST /x",
                retry_after: None,
                message: "502".into(),
            })]),
            lookups: Cell::new(0),
            acts: Cell::new(0),
        };
        let mut w = work();
        assert!(matches!(attempt(&cx, &mut w, &fake).unwrap(), Attempt::Failed(_)));
        assert!(w.unknown, "a 502 leaves the outcome unknown");
        assert_eq!(cx.ledger.step("acme", "c1").unwrap(), Some(Step::Intent { calls: 1 }));
        // The next attempt finds it and does not act again.
        assert_eq!(attempt(&cx, &mut w, &fake).unwrap(), Attempt::Done { out: 7, found: true });
        assert_eq!((fake.acts.get(), fake.lookups.get()), (1, 1));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_refusal_or_a_429_was_not_applied_and_is_not_looked_up() {
        let dir = std::env::temp_dir().join(format!("geoclock-effect2-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cx = cx(&dir);
        let fake = Fake {
            held: RefCell::new(None),
            answers: RefCell::new(vec![
                Err(Fault::NotApplied {
                    api: "POST /x",
                    retry_after: Some(Duration::from_secs(1)),
                    message: "429".into(),
                }),
                Ok(3),
            ]),
            lookups: Cell::new(0),
            acts: Cell::new(0),
        };
        let mut w = work();
        assert!(matches!(attempt(&cx, &mut w, &fake).unwrap(), Attempt::Failed(Fault::NotApplied { .. })));
        assert!(!w.unknown);
        assert_eq!(attempt(&cx, &mut w, &fake).unwrap(), Attempt::Done { out: 3, found: false });
        assert_eq!((fake.acts.get(), fake.lookups.get(), w.attempts), (2, 0, 2));
        let refused = Fault::Refused { api: "POST /x", status: 404, message: "user 11 not found".into() };
        assert!(
            matches!(on_fault(&w, SinkKind::Clock, "clock event", refused), super::super::Verdict::Decided(d) if d.dead)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
