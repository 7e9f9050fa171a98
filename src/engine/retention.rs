//! Retention: keeps the state bounded as event time passes.
//!
//! Rules, applied on every [`super::Event::Tick`] after expiry:
//! - An appointment whose `window_end` is before
//!   `t − (window_hours + 24 h + retention_days)` and that has no fence live
//!   in Azuga is retired: the appointment, its fence record, its
//!   technicians' assignments (clock lines, samples, evidence, Service Link)
//!   and its watches are dropped; only its last fence revision is kept
//!   (`State::retired`, row `r/`), a few bytes per appointment.
//! - An appointment without a usable window (none, or an inverted one; or
//!   one only clock events have named) is retired the same way, its last
//!   change standing for the window's end (`State::undated`: the watermark
//!   when it was last upserted or clocked; one changed before the first
//!   tick counts from that tick).
//! - What is kept of a retired appointment is forgotten `retention_days`
//!   after its retirement. One revived after that starts afresh, at
//!   generation 0 and fence revision 1, so its command ids repeat those of
//!   its first visit: by then (at least twice `retention_days` after that
//!   visit) the sinks' ledgers and the commands topic must have let those
//!   go (the sinks' ledgers keep decided commands 14 days by default, and
//!   `retention_days` is 30 by default).
//! - Once per hour of event time, pairings whose effective end is before
//!   both that cut-off and the reach of every kept appointment's watches
//!   (`window_start − window_hours − 24 h`) are pruned.
//!
//! Invariants:
//! - Decided by event time and state only: replay, restore from rows and the
//!   re-processing of a batch cut short retire and prune the same things at
//!   the same tick, so rows and commands are identical.
//! - Nothing retired could still decide anything: its watches were dropped
//!   at `window_end + window_hours + 24 h` and its fence removed from Azuga
//!   at `window_end + window_hours`. A clock event naming a retired
//!   appointment is ignored. An appointment seen again after retirement (a
//!   rescheduled one, say) starts its next generation: its fence continues
//!   from the retired revision (so the geofence sink, which applies only
//!   increasing revisions, takes its commands) and its technicians start
//!   fresh assignments whose clock and Service Link command ids carry the
//!   generation, so the new visit is clocked as a new one.
//! - Pruned pairings are ones no kept appointment's watch window reaches, so
//!   no watch changes.
//! - The Activity Report covers what is kept: a retired appointment has no
//!   report row.

use super::route;
use super::state::{Role, RowKey, State};
use super::watches::{self, EVIDENCE_HORIZON_MS};
use super::Ctx;
use crate::model::{ClockEvent, Id, Ts};

const HOUR_MS: i64 = 3_600_000;

/// A clock event for a retired appointment, or from before the revival of
/// a revived one: it belongs to a visit whose state is gone.
pub fn ignores(st: &State, c: &ClockEvent) -> bool {
    st.retired.contains_key(&c.appointment) || st.generations.get(&c.appointment).is_some_and(|g| c.time < g.since)
}

/// Retires and prunes what event time `t` puts past retention; `before` is
/// the watermark the tick replaced.
pub fn on_tick(ctx: &Ctx, st: &mut State, before: Option<Ts>, t: Ts) {
    stamp_first_tick(st, t);
    let reach = ctx.settings.window_ms() + EVIDENCE_HORIZON_MS;
    let cutoff = t.minus_millis(reach.saturating_add(ctx.settings.retention_ms()));
    let dated = st.retire_at.iter().take_while(|(end, _)| *end < cutoff).map(|(_, id)| id.clone());
    let undated = st.undated_at.iter().take_while(|(at, _)| *at < cutoff).map(|(_, id)| id.clone());
    let due: Vec<Id> = dated.chain(undated).collect();
    for id in due {
        if st.fences.get(&id).is_some_and(|f| f.live.is_some()) {
            continue;
        }
        let routed = st.routed_vehicles.get(&id).cloned().unwrap_or_default();
        let (generation, seq) = (st.generations.get(&id).map_or(0, |g| g.n), st.route_seq.get(&id).copied());
        st.remove_appointment(&id);
        watches::rebuild(ctx, st, &id);
        if st.role == Role::Appointments {
            route::publish_retired(st, &id, routed, generation, seq.unwrap_or(0));
        }
        st.dirty.mark(|| RowKey::Appointment(id.clone()));
        st.dirty.mark(|| RowKey::Retired(id.clone()));
    }
    let forget_before = t.minus_millis(ctx.settings.retention_ms());
    let forgotten: Vec<Id> =
        st.retired_at.iter().take_while(|(at, _)| *at < forget_before).map(|(_, id)| id.clone()).collect();
    for id in forgotten {
        if let Some(r) = st.retired.remove(&id) {
            st.retired_at.remove(&(r.at.unwrap_or(Ts::MIN), id.clone()));
        }
        st.dirty.mark(|| RowKey::Retired(id.clone()));
    }
    if before.is_none_or(|b| b.millis().div_euclid(HOUR_MS) != t.millis().div_euclid(HOUR_MS)) {
        let earliest_start = st.appointments.values().filter_map(|a| a.window()).map(|(ws, _)| ws).min();
        let horizon = earliest_start.map_or(cutoff, |ws| ws.minus_millis(reach).min(cutoff));
        for driver in st.pairings.prune_ended_before(horizon) {
            st.dirty.mark(|| RowKey::Pairings(driver));
        }
    }
}

/// What was changed (or retired, in an older version's rows) before any
/// tick takes this tick's time.
fn stamp_first_tick(st: &mut State, t: Ts) {
    let early: Vec<Id> = st.undated_at.iter().take_while(|(at, _)| *at == Ts::MIN).map(|(_, id)| id.clone()).collect();
    for id in early {
        st.set_undated(&id, Some(t));
        st.dirty.mark(|| RowKey::Appointment(id.clone()));
    }
    let early: Vec<Id> = st.retired_at.iter().take_while(|(at, _)| *at == Ts::MIN).map(|(_, id)| id.clone()).collect();
    for id in early {
        if let Some(r) = st.retired.get(&id).copied() {
            st.put_retired(&id, super::state::Retired { at: Some(t), ..r });
            st.dirty.mark(|| RowKey::Retired(id.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::state::Retired;
    use crate::engine::{Action, Command, Engine, Event};
    use crate::model::{Activity, Appointment, AppointmentStatus, ClockAction, Pairing, Settings};

    fn json<T: serde::de::DeserializeOwned>(text: &str) -> T {
        serde_json::from_str(text).unwrap()
    }

    fn ts(s: &str) -> Ts {
        Ts::parse(s).unwrap()
    }

    fn appt(id: &str, start: &str, end: &str) -> Event {
        Event::Appointment(Appointment {
            id: Id::text(id),
            job: Some(Id::text("j1")),
            status: AppointmentStatus::Scheduled,
            window_start: Some(ts(start)),
            window_end: Some(ts(end)),
            techs: vec![Id::text("u1")],
        })
    }

    type Rows = Vec<(Vec<u8>, Vec<u8>)>;

    /// An engine with two appointments a week apart, and the rows it wrote.
    fn engine() -> (Engine, Vec<Command>, Rows) {
        let settings = Settings { retention_days: 2, ..Settings::default() };
        let mut e = Engine::new("acme", settings).unwrap();
        e.track_changes();
        let mut out = Vec::new();
        let events = [
            Event::User(json(r#"{"id": "u1", "name": "Ann", "email": "ann@acme.example"}"#)),
            Event::Location(json(r#"{"id": "l1", "name": "Plant", "lat": 35.2, "lon": -80.8}"#)),
            Event::Job(json(r#"{"id": "j1", "number": "J-1", "location": "l1"}"#)),
            Event::Driver(json(r#"{"id": "d1", "name": "Ann", "email": "ann@acme.example"}"#)),
            Event::Pairing(Pairing {
                driver: Id::text("d1"),
                vehicle: Id::text("v1"),
                from: ts("2026-11-01T00:00:00Z"),
                to: Some(ts("2026-11-02T00:00:00Z")),
            }),
            Event::Pairing(Pairing {
                driver: Id::text("d1"),
                vehicle: Id::text("v2"),
                from: ts("2026-11-20T00:00:00Z"),
                to: None,
            }),
            appt("a1", "2026-11-20T14:00:00Z", "2026-11-20T16:00:00Z"),
            appt("a2", "2026-11-28T14:00:00Z", "2026-11-28T16:00:00Z"),
            Event::Clock(ClockEvent {
                user: Id::text("u1"),
                appointment: Id::text("a1"),
                activity: Activity::Enroute,
                action: ClockAction::In,
                time: ts("2026-11-20T13:00:00Z"),
            }),
        ];
        for ev in &events {
            e.handle(ev, &mut out).unwrap();
        }
        let rows = e.drain_rows().into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
        (e, out, rows)
    }

    fn tick(e: &mut Engine, t: Ts) -> Vec<Command> {
        let mut out = Vec::new();
        e.handle(&Event::Tick(t), &mut out).unwrap();
        out
    }

    #[test]
    fn appointments_are_retired_after_retention_and_revive_with_later_revisions() {
        let (mut e, _, _) = engine();
        // a1 ends 11-20 16:00; + 8 h + 24 h + 2 days = 11-24 00:00.
        let retire = ts("2026-11-24T00:00:00Z");
        tick(&mut e, retire);
        assert!(e.state().appointments.contains_key(&Id::text("a1")), "not before the cut-off");
        let out = tick(&mut e, Ts(retire.0 + 1));
        assert!(out.is_empty(), "{out:?}");
        let st = e.state();
        assert!(!st.appointments.contains_key(&Id::text("a1")) && !st.fences.contains_key(&Id::text("a1")));
        let at = Some(Ts(retire.0 + 1));
        assert_eq!(
            st.retired.get(&Id::text("a1")),
            Some(&Retired { revision: 2, generation: 0, at }),
            "created, deleted"
        );
        assert!(st.assignment(&Id::text("a1"), &Id::text("u1")).is_none());
        assert_eq!(st.free_slots.len(), 1);
        assert!(st.appointments.contains_key(&Id::text("a2")));
        let rows = e.drain_rows();
        assert!(rows.contains(&(b"a/a1".to_vec(), None)), "{rows:?}");
        let row =
            format!(r#"{{"revision":2,"generation":0,"at":{}}}"#, serde_json::to_string(&Ts(retire.0 + 1)).unwrap());
        assert!(rows.contains(&(b"r/a1".to_vec(), Some(row.into_bytes()))), "{rows:?}");
        // The old pairing (ended 11-02) is pruned; the current one is kept.
        assert_eq!(e.state().pairings.of_driver(&Id::text("d1")).len(), 1);

        // A clock event for a retired appointment changes nothing.
        let mut out = Vec::new();
        let late = ClockEvent {
            user: Id::text("u1"),
            appointment: Id::text("a1"),
            activity: Activity::Onsite,
            action: ClockAction::In,
            time: ts("2026-11-20T15:00:00Z"),
        };
        e.handle(&Event::Clock(late), &mut out).unwrap();
        assert!(out.is_empty() && e.drain_rows().is_empty());

        // Revived with a later window: its fence continues at revision 3, reusing the slot.
        let mut out = Vec::new();
        e.handle(&appt("a1", "2026-11-29T14:00:00Z", "2026-11-29T16:00:00Z"), &mut out).unwrap();
        match &out[..] {
            [Command { action: Action::CreateGeofence(f), .. }] => assert_eq!(f.revision, 3),
            other => panic!("{other:?}"),
        }
        assert!(e.state().retired.is_empty() && e.state().free_slots.is_empty());
        assert_eq!(e.state().assignment(&Id::text("a1"), &Id::text("u1")).map(|a| a.generation), Some(1));
        let rows = e.drain_rows();
        assert!(rows.contains(&(b"r/a1".to_vec(), None)), "{rows:?}");
    }

    #[test]
    fn a_restored_engine_retires_exactly_as_the_original() {
        let settings = Settings { retention_days: 2, ..Settings::default() };
        let (mut e, _, first) = engine();
        let mut rows: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = first.into_iter().collect();
        tick(&mut e, ts("2026-11-25T00:00:00Z"));
        for (k, v) in e.drain_rows() {
            match v {
                Some(v) => rows.insert(k, v),
                None => rows.remove(&k),
            };
        }
        assert!(rows.contains_key(b"r/a1".as_slice()) && !rows.contains_key(b"a/a1".as_slice()));
        let mut restored =
            Engine::from_rows("acme", settings, rows.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))).unwrap();
        assert_eq!(restored.state().retired, e.state().retired);
        assert_eq!(restored.state().appointments, e.state().appointments);
        let revive = appt("a1", "2026-11-29T14:00:00Z", "2026-11-29T16:00:00Z");
        let (mut out_r, mut out_e) = (Vec::new(), Vec::new());
        restored.handle(&revive, &mut out_r).unwrap();
        e.handle(&revive, &mut out_e).unwrap();
        assert!(!out_e.is_empty());
        assert_eq!(out_r, out_e);
    }

    fn undated(id: &str, window: Option<(&str, &str)>) -> Event {
        Event::Appointment(Appointment {
            id: Id::text(id),
            job: Some(Id::text("j1")),
            status: AppointmentStatus::Scheduled,
            window_start: window.map(|w| ts(w.0)),
            window_end: window.map(|w| ts(w.1)),
            techs: vec![Id::text("u1")],
        })
    }

    #[test]
    fn appointments_without_a_window_are_retired_after_their_last_change_and_retired_ones_forgotten() {
        let settings = Settings { retention_days: 2, ..Settings::default() };
        let (mut e, _, first_rows) = engine();
        let mut all: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = first_rows.into_iter().collect();
        let mut out = Vec::new();
        // No window, an inverted one, and only a clock event: all undated.
        e.handle(&undated("w0", None), &mut out).unwrap();
        e.handle(&undated("w1", Some(("2026-11-21T16:00:00Z", "2026-11-21T14:00:00Z"))), &mut out).unwrap();
        let clock = ClockEvent {
            user: Id::text("u1"),
            appointment: Id::text("ghost"),
            activity: Activity::Enroute,
            action: ClockAction::In,
            time: ts("2026-11-21T13:00:00Z"),
        };
        e.handle(&Event::Clock(clock), &mut out).unwrap();
        assert_eq!(e.state().undated.len(), 3);
        assert!(e.state().undated.values().all(|t| *t == Ts::MIN), "changed before the first tick");
        let first = ts("2026-11-22T00:00:00Z");
        tick(&mut e, first);
        assert!(e.state().undated.values().all(|t| *t == first), "stamped by the first tick");
        for (k, v) in e.drain_rows() {
            match v {
                Some(v) => all.insert(k, v),
                None => all.remove(&k),
            };
        }
        // 8 h + 24 h + 2 days after the first tick they are retired, as
        // windowed ones are after their window's end.
        let retire = ts("2026-11-25T08:00:00Z");
        tick(&mut e, retire);
        assert_eq!(e.state().undated.len(), 3, "not at the cut-off");
        // A restored engine (rows as of the first tick) retires alike.
        let mut restored =
            Engine::from_rows("acme", settings.clone(), all.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))).unwrap();
        for t in [retire, Ts(retire.0 + 1)] {
            tick(&mut restored, t);
        }
        tick(&mut e, Ts(retire.0 + 1));
        for st in [e.state(), restored.state()] {
            assert!(st.undated.is_empty() && st.undated_at.is_empty());
            for id in ["w0", "w1", "ghost"] {
                assert!(st.retired.contains_key(&Id::text(id)), "{id} retired");
                assert!(!st.slots_of.contains_key(&Id::text(id)), "{id}'s assignments dropped");
            }
        }
        // What is kept of them is forgotten retention_days after retirement.
        let forget = Ts(retire.0 + 1 + settings.retention_ms() + 1);
        tick(&mut e, forget);
        assert!(e.state().retired.is_empty() && e.state().retired_at.is_empty(), "{:?}", e.state().retired);
        let rows = e.drain_rows();
        assert!(rows.contains(&(b"r/w0".to_vec(), None)), "{rows:?}");
        // Revived after that, an appointment starts afresh.
        let mut out = Vec::new();
        e.handle(&appt("a1", "2026-12-29T14:00:00Z", "2026-12-29T16:00:00Z"), &mut out).unwrap();
        match &out[..] {
            [Command { action: Action::CreateGeofence(f), .. }] => assert_eq!(f.revision, 1),
            other => panic!("{other:?}"),
        }
    }
}
