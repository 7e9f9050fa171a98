//! How long an effect is worth retrying, and when to try next: pure
//! functions of the command, the fault and clocks passed in.
//!
//! Invariants:
//! - A transient failure never decides a command while its effect still
//!   makes sense ([`give_up_at`]): an outage delays effects, it does not
//!   lose them. After that instant the command fails with a reason saying
//!   why and what the last error was.
//! - The next attempt waits the vendor's `Retry-After` when it sent one
//!   (already capped by the client), else an exponential backoff with
//!   jitter, capped; a budget wait ([`Fault::NotYet`]) is not a failure and
//!   does not grow the backoff.

use std::time::Duration;

use super::Work;
use crate::engine::Action;
use crate::model::Ts;
use crate::vendor::retry::{Backoff, Fault};

/// The instant after which carrying out `action` no longer makes sense
/// (and never less than an hour after the command was issued, so a
/// backlog gets its retries):
/// - a clock change: `max_age` after its time (the arrival, which lies in
///   the appointment window ± the tenant's window hours);
/// - a geofence create or update: its inactivation (`window_end + window
///   hours`);
/// - a geofence delete: `max_age` after the command;
/// - a Service Link: the end of the appointment window (an hour after the
///   technician went En Route at least; twelve hours without a window).
pub fn give_up_at(action: &Action, command_time: Ts, max_age: Duration) -> Ts {
    let age = max_age.as_millis() as i64;
    let hour = 3_600_000;
    let by_effect = match action {
        Action::Clock(c) => c.time.plus_millis(age),
        Action::CreateGeofence(f) | Action::UpdateGeofence(f) => f.active_to,
        Action::DeleteGeofence { .. } => command_time.plus_millis(age),
        Action::SendServiceLink(l) => match l.window_end {
            Some(end) => Ts(end.millis().max(l.enroute_at.millis() + hour)),
            None => l.enroute_at.plus_millis(12 * hour),
        },
    };
    Ts(by_effect.millis().max(command_time.millis() + hour))
}

/// What to do after a transient fault.
#[derive(Debug, Clone, PartialEq)]
pub enum After {
    /// Try again at this wall-clock instant (ms).
    Retry { at_ms: i64 },
    /// Decide the command failed, for this reason.
    GiveUp(String),
}

/// The next step for `work` after `fault` at `now_ms`.
pub fn after_fault(
    work: &Work,
    fault: &Fault,
    now_ms: i64,
    backoff: &Backoff,
    max_age: Duration,
    jitter: f64,
) -> After {
    if let Fault::NotYet { wait, .. } = fault {
        return After::Retry { at_ms: now_ms + wait.as_millis() as i64 };
    }
    let limit = give_up_at(&work.command.action, work.time, max_age);
    if now_ms >= limit.millis() {
        return After::GiveUp(format!(
            "gave up after {} attempts: the effect no longer makes sense after {}; last error: {fault}",
            work.attempts,
            limit.to_rfc3339()
        ));
    }
    let wait = backoff.after(work.attempts.max(1), fault, jitter);
    After::Retry { at_ms: (now_ms + wait.as_millis() as i64).min(limit.millis()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ClockCause, ClockChange, Command};
    use crate::model::{Activity, ClockAction, Id};

    fn clock_work(time: Ts) -> Work {
        let c = ClockChange {
            user: Id::number(11),
            activity: Activity::Onsite,
            action: ClockAction::In,
            time,
            lat: 1.0,
            lon: 2.0,
            vehicle: Id::text("v1"),
            cause: ClockCause::Arrival,
        };
        let command = Command { id: "c".into(), appointment: Id::number(1), action: Action::Clock(c) };
        // Issued an hour after the arrival (a backlog).
        Work::new("acme".into(), command, time.plus_millis(3_600_000), 0, 0, Vec::new())
    }

    #[test]
    fn a_five_minute_outage_is_retried_and_a_day_old_clock_change_gives_up() {
        let t = Ts::parse("2026-11-28T08:00:00Z").unwrap();
        let mut w = clock_work(t);
        w.attempts = 40;
        let fault = Fault::Unknown { api: "POST /api/clock", retry_after: None, message: "HTTP 503".into() };
        let b = Backoff::default();
        let day = Duration::from_secs(86_400);
        let five_min_later = t.millis() + 300_000;
        match after_fault(&w, &fault, five_min_later, &b, day, 0.5) {
            After::Retry { at_ms } => assert!(at_ms > five_min_later && at_ms <= five_min_later + 60_000),
            other => panic!("{other:?}"),
        }
        match after_fault(&w, &fault, t.millis() + 86_400_000, &b, day, 0.5) {
            After::GiveUp(why) => assert!(why.contains("40 attempts") && why.contains("HTTP 503"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retry_after_is_waited_and_budget_waits_are_not_failures() {
        let t = Ts::parse("2026-11-28T08:00:00Z").unwrap();
        let w = clock_work(t);
        let b = Backoff::default();
        let day = Duration::from_secs(86_400);
        let f = Fault::Unknown { api: "X", retry_after: Some(Duration::from_secs(600)), message: "503".into() };
        assert_eq!(after_fault(&w, &f, t.millis(), &b, day, 0.0), After::Retry { at_ms: t.millis() + 600_000 });
        // Even past the give-up instant, a budget wait is only a wait.
        let f = Fault::NotYet { api: "X", wait: Duration::from_secs(60) };
        let late = t.millis() + 2 * 86_400_000;
        assert_eq!(after_fault(&w, &f, late, &b, day, 0.0), After::Retry { at_ms: late + 60_000 });
    }
}
