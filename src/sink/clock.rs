//! The clock sink: posts a technician's clock events to ServiceTrade as the
//! tenant's integration admin user (`POST /api/clock`), at the command's
//! time, for the technician the command names.
//!
//! ServiceTrade's clock POST has no idempotency key, so the effect protocol
//! ([`super::effect`]) looks a clock event up before posting whenever the
//! outcome of an earlier post is unknown: `GET /api/clock` by user,
//! appointment and activity, an event of the same type at the same second.
//! Found → done, not posted again. Session renewal (a 401 logs in again)
//! is the client's ([`crate::vendor::servicetrade::Client`]).

use std::time::Duration;

use super::effect::{attempt, on_fault, Attempt, Cx, Effect};
use super::ledger::LedgerError;
use super::{Executor, Settle, SinkKind, TenantCx, Work};
use crate::engine::{Action, ClockChange};
use crate::vendor::retry::Fault;
use crate::vendor::servicetrade::Client;

#[derive(Default)]
pub struct ClockSink;

struct Post<'a> {
    client: &'a Client,
    appointment: &'a str,
    change: &'a ClockChange,
}

impl Effect for Post<'_> {
    type Out = String;

    fn lookup(&self) -> Result<Option<String>, Fault> {
        self.client.find_clock(self.appointment, self.change)
    }

    fn act(&self) -> Result<String, Fault> {
        self.client.post_clock(self.appointment, self.change)
    }

    fn ready_in(&self) -> Duration {
        self.client.caller().ready_in("POST /api/clock")
    }
}

impl Executor for ClockSink {
    fn attempt(&self, cx: &Cx, t: &TenantCx, batch: &mut [Work], settle: &mut Settle<'_>) -> Result<(), LedgerError> {
        for w in batch.iter_mut() {
            let Some(client) = &t.servicetrade else {
                let v = w.failed(SinkKind::Clock, "no [tenants.servicetrade] in the tenants file".into());
                settle(w, v)?;
                continue;
            };
            let Action::Clock(change) = w.command.action.clone() else {
                let v = w.failed(SinkKind::Clock, "not a clock command".into());
                settle(w, v)?;
                continue;
            };
            let appointment = w.command.appointment.to_string();
            let post = Post { client, appointment: &appointment, change: &change };
            let v = match attempt(cx, w, &post)? {
                Attempt::Done { out, found } => w.done(
                    SinkKind::Clock,
                    Some(out).filter(|s| !s.is_empty()),
                    if found { "found at ServiceTrade after an unknown outcome; not posted again" } else { "" },
                ),
                Attempt::Failed(f) => on_fault(w, SinkKind::Clock, "ServiceTrade clock event not created", f),
            };
            settle(w, v)?;
        }
        Ok(())
    }
}
