//! Sink workers: carry out the processor's commands in the outside world,
//! each effect exactly once, and publish every outcome as a result event.
//!
//! Layout: `policy` (pure retry classification, backoff and per-API rate
//! budget), `ledger` (durable per-command steps, RocksDB), `call` (one
//! vendor call with budget, retries and backoff), `render` (the Service
//! Link email, pure), `clock` / `geofence` / `email` (the executors),
//! `metrics`, `runner` (the Kafka consume → execute → publish → commit loop).
//!
//! Invariants (argued in [`ledger`] and [`runner`]):
//! - Exactly-once effect per command id: the ledger's intent/done steps plus
//!   a vendor-side check on recovery; re-delivered commands are duplicates.
//! - Results are published at least once per decided command, always with
//!   the same content (they are stored in the ledger before publishing), and
//!   consumer offsets are committed only after the batch's results are
//!   acknowledged, so a crash never loses an outcome.
//! - Permanent failures (4xx other than 429, invalid addresses) and
//!   exhausted retries are dead-lettered with the reason, and reported as a
//!   `failed` result; nothing else in the batch is held back by them.
//! - No secret reaches a log line, metric label, error or result.

pub mod call;
pub mod clock;
pub mod daily;
pub mod email;
pub mod geofence;
pub mod ledger;
pub mod metrics;
pub mod policy;
pub mod render;
pub mod runner;

use crate::connect::tenants::Tenant;
use crate::engine::{Action, Command};
use crate::kafka::records::{Outcome, SinkResult};
use crate::model::Ts;

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

/// A command as consumed: its tenant and its record's timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub tenant: String,
    pub command: Command,
    pub time: Ts,
}

/// What an executor decided for one command.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    pub result: SinkResult,
    /// Also goes to the dead-letter topic (a failure).
    pub dead: bool,
}

impl Pending {
    /// The result for this command.
    pub fn result(
        &self,
        sink: SinkKind,
        outcome: Outcome,
        reason: String,
        remote_ref: Option<String>,
        attempts: u32,
        now: Ts,
    ) -> SinkResult {
        SinkResult {
            command_id: self.command.id.clone(),
            appointment: self.command.appointment.to_string(),
            kind: self.command.action.kind().to_string(),
            sink: sink.name().to_string(),
            outcome,
            reason,
            remote_ref,
            attempts,
            executed_at: now,
            command_time: self.time,
        }
    }
}

/// Carries out one tenant's commands (in order) and decides each.
pub trait Executor: Send + Sync {
    /// A ledger failure ends the sink (a restart recovers from the intents).
    fn execute(&self, cx: &call::Cx, tenant: &Tenant, batch: Vec<Pending>)
        -> Result<Vec<Decided>, ledger::LedgerError>;

    /// Work not driven by a command (the daily report), run between
    /// batches about once a minute: (tenant, outcome) pairs to publish.
    fn housekeeping(&self, _cx: &call::Cx, _tenants: &[Tenant]) -> Result<Vec<(String, Decided)>, ledger::LedgerError> {
        Ok(Vec::new())
    }
}

/// Wall-clock now (the I/O edge).
pub fn now() -> Ts {
    Ts(chrono::Utc::now().timestamp_millis())
}

/// Every command of a tenant the sink cannot serve: failed, dead-lettered.
pub(crate) fn unconfigured(sink: SinkKind, batch: Vec<Pending>, why: &str) -> Vec<Decided> {
    batch
        .into_iter()
        .map(|p| Decided { result: p.result(sink, Outcome::Failed, why.to_string(), None, 0, now()), dead: true })
        .collect()
}
