//! Sink workers: carry out the processor's commands in the outside world,
//! each effect exactly once, and publish every outcome as a result event.
//!
//! Layout: [`effect`] (the one exactly-once effect protocol: intent, look
//! up when the outcome is unknown, act, outcome), [`policy`] (pure: how
//! long an effect is worth retrying), [`ledger`] (durable per-command steps,
//! RocksDB), [`queue`] (pure: per-partition commit points), [`worker`] (one
//! thread per tenant: due commands → executor → results), [`runner`] (the
//! Kafka consumer: commands in, offsets committed, rebalances), [`render`]
//! (the Service Link email, pure), [`clock`] / [`geofence`] / [`email`] /
//! [`daily`] (the executors), [`metrics`].
//!
//! Invariants (argued in [`effect`], [`runner`] and [`worker`]):
//! - Exactly-once effect per command id: an intent is recorded before every
//!   call that may cause the effect; whenever the outcome is unknown (an
//!   ambiguous answer, an intent left by a crash, a command on a partition
//!   another instance may have worked on) the effect is looked up at the
//!   vendor before it is tried again; re-delivered commands already decided
//!   are duplicates.
//! - Outages delay effects, they do not lose them: transient failures are
//!   retried with capped backoff until the effect no longer makes sense
//!   ([`policy::give_up_at`]), then fail with a reason. Dead-lettered
//!   commands can be re-driven (`geoclock dlq replay`).
//! - Tenants are isolated: each has its own worker and queue, so one
//!   tenant's outage or rate budget never delays another's effects.
//! - Consumer offsets never pass a command that is not durably decided.
//! - Results are published at least once per decided command, always with
//!   the same content (they are stored in the ledger before publishing).
//! - No secret reaches a log line, metric label, error or result.

pub mod clock;
pub mod daily;
pub mod effect;
pub mod email;
pub mod fault;
pub mod geofence;
pub mod ledger;
pub mod metrics;
pub mod policy;
pub mod queue;
pub mod redrive;
pub mod render;
pub mod runner;
pub mod worker;

use std::sync::Arc;

use serde_json::Value;

use crate::config::tenants::Tenant;
use crate::engine::{Action, Command};
use crate::kafka::records::{Outcome, SinkResult};
use crate::model::Ts;
use crate::vendor::retry::Fault;
use crate::vendor::{azuga, servicetrade};

/// Which sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SinkKind {
    Clock,
    Geofence,
    Email,
}

impl SinkKind {
    pub fn name(self) -> &'static str {
        match self {
            SinkKind::Clock => "clock",
            SinkKind::Geofence => "geofence",
            SinkKind::Email => "email",
        }
    }

    /// The process's component name (dead letters, Kafka client logs).
    pub fn component(self) -> &'static str {
        match self {
            SinkKind::Clock => "sink-clock",
            SinkKind::Geofence => "sink-geofence",
            SinkKind::Email => "sink-email",
        }
    }

    /// Whether this sink carries out `action`.
    pub fn handles(self, action: &Action) -> bool {
        matches!(
            (self, action),
            (SinkKind::Clock, Action::Clock(_))
                | (
                    SinkKind::Geofence,
                    Action::CreateGeofence(_) | Action::UpdateGeofence(_) | Action::DeleteGeofence { .. }
                )
                | (SinkKind::Email, Action::SendServiceLink(_))
        )
    }
}

/// A command being carried out, and where it stands in this process.
#[derive(Debug, Clone, PartialEq)]
pub struct Work {
    pub tenant: String,
    pub command: Command,
    /// The command record's timestamp.
    pub time: Ts,
    pub partition: i32,
    pub offset: i64,
    /// The command record as consumed (kept for a dead letter, so the
    /// command can be re-driven).
    pub raw: Vec<u8>,
    /// The effect may already exist (an earlier answer was lost, an intent
    /// left by a crash, a partition another instance worked on): look it up
    /// before acting.
    pub unknown: bool,
    /// Calls made for it so far (by this process and, from the ledger, before).
    pub attempts: u32,
    /// Wall-clock ms before which it is not tried again.
    pub next_at: i64,
    /// When this process first tried it (wall-clock ms).
    pub first_try: Option<i64>,
    pub last_fault: Option<String>,
}

impl Work {
    pub fn new(tenant: String, command: Command, time: Ts, partition: i32, offset: i64, raw: Vec<u8>) -> Work {
        Work {
            tenant,
            command,
            time,
            partition,
            offset,
            raw,
            unknown: false,
            attempts: 0,
            next_at: 0,
            first_try: None,
            last_fault: None,
        }
    }

    /// The result for this command.
    pub fn result(&self, sink: SinkKind, outcome: Outcome, reason: String, remote_ref: Option<String>) -> SinkResult {
        SinkResult {
            command_id: self.command.id.clone(),
            appointment: self.command.appointment.to_string(),
            kind: self.command.action.kind().to_string(),
            sink: sink.name().to_string(),
            outcome,
            reason,
            remote_ref,
            attempts: self.attempts,
            executed_at: now(),
            command_time: self.time,
        }
    }

    pub fn done(&self, sink: SinkKind, remote_ref: Option<String>, note: &str) -> Verdict {
        Verdict::Decided(Decided::new(self.result(sink, Outcome::Done, note.to_string(), remote_ref)))
    }

    pub fn failed(&self, sink: SinkKind, reason: String) -> Verdict {
        Verdict::Decided(Decided::new(self.result(sink, Outcome::Failed, reason, None)))
    }
}

/// What was decided for one command.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    pub result: SinkResult,
    /// Also goes to the dead-letter topic (a failure).
    pub dead: bool,
    /// Ledger extras written with the outcome, atomically (name → value,
    /// `None` deletes).
    pub extras: Vec<(String, Option<Value>)>,
}

impl Decided {
    pub fn new(result: SinkResult) -> Decided {
        Decided { dead: result.outcome == Outcome::Failed, result, extras: Vec::new() }
    }
}

/// An executor's verdict on one attempt at one command.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Decided(Decided),
    /// Not decided: try again later ([`policy`] says when, or gives up).
    Retry(Fault),
}

/// One tenant, as an executor sees it: its configuration and its vendor
/// clients (one per process and tenant, so each keeps its own budget).
pub struct TenantCx {
    pub tenant: Tenant,
    pub servicetrade: Option<Arc<servicetrade::Client>>,
    pub azuga: Option<Arc<azuga::Client>>,
}

/// Where an executor hands each verdict, as soon as it has it (the
/// worker records an outcome before the executor's next call).
pub type Settle<'a> = dyn FnMut(&Work, Verdict) -> Result<(), ledger::LedgerError> + 'a;

/// Carries out one tenant's commands.
pub trait Executor: Send + Sync {
    /// Tries `batch` (due, in order), handing one verdict per command to
    /// `settle`. An `Err` (the ledger failed) ends the sink: a restart
    /// recovers from the intents.
    fn attempt(
        &self,
        cx: &effect::Cx,
        t: &TenantCx,
        batch: &mut [Work],
        settle: &mut Settle<'_>,
    ) -> Result<(), ledger::LedgerError>;

    /// How long a new command waits for others to join its batch (a bulk
    /// API's executor lets commands gather).
    fn linger(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// Work not driven by a command (the daily report), run by the
    /// tenant's worker about once a minute while this process owns
    /// `partition` (the tenant's housekeeping partition): outcomes to publish.
    fn housekeeping(
        &self,
        _cx: &effect::Cx,
        _t: &TenantCx,
        _partition: i32,
    ) -> Result<Vec<Decided>, ledger::LedgerError> {
        Ok(Vec::new())
    }
}

/// Wall-clock now (the I/O edge).
pub fn now() -> Ts {
    Ts(chrono::Utc::now().timestamp_millis())
}
