//! Arrival: a ping from vehicle V at time t, inside an appointment's fence,
//! with t in `[window_start − h, window_end + h]`, where the driver paired
//! with V at t is a technician on the appointment who (by default) has an
//! open En Route clock-in at t, clocks that one technician En Route out and
//! On Site in, both at t.
//!
//! Invariants:
//! - At most one arrival per (appointment, technician), ever: once
//!   `Assignment::arrival` is set nothing here emits arrival clocks again,
//!   and the commands' ids name only (appointment, technician, activity,
//!   action), so even a replay yields the same ids.
//! - Exit (with `auto_clock_out_on_exit`) is decided by a vehicle's newest
//!   pings only: a run of them beyond the exit buffer spanning
//!   `min_exit_dwell_s` clocks On Site out once, at the run's first ping;
//!   a ping back inside the buffer ends the run.
//! - Decisions use the ping's time only. Pings are kept as samples (sorted,
//!   distinct times) until they decide, so a late ping, a late En Route
//!   clock-in or a dwell completed out of order all decide at the earliest
//!   qualifying time known; a duplicate ping is a no-op.
//! - The hot path (a ping outside every fence of its vehicle, dwell off)
//!   touches only the vehicle's watch list: no allocation, no lookup beyond
//!   one hash probe.

use super::command::{assignment_command_id, Action, ClockCause, ClockChange, Command};
use super::state::{keep_closest, keep_earliest, Assignment, Crossing, Evidence, RowKey, Sample, State, Watch};
use super::{Ctx, EngineError};
use crate::geo::LatLon;
use crate::model::{Activity, ClockAction, Id, Ping, Ts};

pub fn on_ping(ctx: &Ctx, st: &mut State, p: &Ping, out: &mut Vec<Command>) -> Result<(), EngineError> {
    let point = LatLon::new(p.lat, p.lon).validate().map_err(EngineError::InvalidPing)?;
    if let (Some(max), Some(acc)) = (ctx.settings.max_accuracy_m, p.accuracy_m) {
        if acc.is_nan() || acc > max {
            return Ok(());
        }
    }
    let State { watches, assignments, dirty, .. } = st;
    let Some(vw) = watches.get_mut(&p.vehicle) else { return Ok(()) };
    let wants_outside = ctx.settings.min_dwell_s > 0 || ctx.settings.auto_clock_out_on_exit;
    // The previous ping in time order; a late ping is no segment's end.
    let prev = vw.last.filter(|(t0, _)| *t0 < p.time);
    // Only a ping newer than every ping seen from this vehicle can clock
    // out on exit: a late or re-delivered ping never does, so an outside
    // ping delivered before the arrival that precedes it in time decides
    // the same whether it is seen once or again later.
    let newest = vw.last.is_none_or(|(t0, _)| t0 < p.time);
    if newest {
        vw.last = Some((p.time, point));
        if dirty.tracking && !vw.last_dirty {
            vw.last_dirty = true;
            dirty.vehicles.push(p.vehicle.clone());
        }
    }
    for (i, hot) in vw.hot.iter_mut().enumerate() {
        // Hot path: most pings end here, reading only the inline bucket.
        if hot.done || !hot.paired_may_cover(p.time) {
            continue;
        }
        // `near` contains `bbox`: a ping far from the fence costs one test.
        let near = hot.near.contains(point);
        let in_box = near && hot.bbox.contains(point);
        let segment = prev.filter(|(t0, p0)| {
            p.time.millis() - t0.millis() <= MAX_SEGMENT_GAP_MS && hot.bbox.meets_segment(*p0, point)
        });
        if !near && !wants_outside && segment.is_none() {
            continue;
        }
        let w = &vw.cold[i];
        if !hot.single_pairing && !w.paired_at(p.time) {
            continue;
        }
        let a = &mut assignments[w.slot];
        if !in_box && !wants_outside && segment.is_none() {
            // Near the fence only: the closest approach may change.
            if note_closest(w, a, p, point) {
                dirty.mark(|| RowKey::Appointment(w.appointment.clone()));
            }
            continue;
        }
        let inside = in_box && w.fence.contains(point);
        dirty.mark(|| RowKey::Appointment(w.appointment.clone()));
        if near {
            note_closest(w, a, p, point);
        }
        if let (Some((t0, p0)), false) = (segment, inside) {
            note_pass_through(w, a, p, t0, p0, point);
        }
        if !inside && !wants_outside {
            continue;
        }
        observe(ctx, w, a, p, point, inside, newest, out);
        hot.done = ctx.is_done(a);
    }
    Ok(())
}

/// Fixes further apart than this are a gap in the data, not a path.
pub const MAX_SEGMENT_GAP_MS: i64 = 15 * 60_000;

/// The closest approach is kept among pings within this many metres of a
/// fence (its box grown by this): a vehicle never this near has none.
pub const NEAR_M: f64 = 2_000.0;

/// Keeps the ping as the assignment's closest approach if it is nearer the
/// fence centre than the one kept, within the window and before an arrival
/// was decided; whether it did.
fn note_closest(w: &Watch, a: &mut Assignment, p: &Ping, point: LatLon) -> bool {
    let in_window = w.earliest <= p.time && p.time <= w.latest;
    in_window && a.arrival.is_none() && keep_closest(&mut a.closest, &evidence(w, p, point))
}

/// Records (earliest first) that the straight path from the previous ping
/// `(t0, p0)` to this one, both outside, crossed the fence in the window.
fn note_pass_through(w: &Watch, a: &mut Assignment, p: &Ping, t0: Ts, p0: LatLon, point: LatLon) {
    // The caller only passes segments at most MAX_SEGMENT_GAP_MS long.
    let overlaps_window = t0 <= w.latest && p.time >= w.earliest;
    if a.arrival.is_some() || !overlaps_window || a.passed_through.as_ref().is_some_and(|c| c.from <= t0) {
        return;
    }
    if !w.fence.contains(p0) && w.fence.segment_crosses(p0, point) {
        a.passed_through = Some(Crossing { from: t0, to: p.time, vehicle: p.vehicle.clone() });
    }
}

fn evidence(w: &Watch, p: &Ping, point: LatLon) -> Evidence {
    Evidence {
        time: p.time,
        vehicle: p.vehicle.clone(),
        lat: p.lat,
        lon: p.lon,
        distance_m: (w.fence.distance_to_center_m(point) * 10.0).round() / 10.0,
    }
}

#[allow(clippy::too_many_arguments)]
fn observe(
    ctx: &Ctx,
    w: &Watch,
    a: &mut Assignment,
    p: &Ping,
    point: LatLon,
    inside: bool,
    newest: bool,
    out: &mut Vec<Command>,
) {
    let in_window = w.earliest <= p.time && p.time <= w.latest;
    if inside {
        if newest {
            a.leaving = None;
        }
        let ev = evidence(w, p, point);
        if !in_window {
            keep_earliest(&mut a.inside_outside_window, &ev);
            return;
        }
        keep_earliest(&mut a.inside_in_window, &ev);
        if a.arrival.is_none() && a.insert_sample(Sample { inside: true, evidence: ev }) {
            try_arrive(ctx, &w.appointment, &w.user, a, out);
        }
        return;
    }
    if a.arrival.is_none() {
        if in_window && ctx.settings.min_dwell_s > 0 {
            a.insert_sample(Sample { inside: false, evidence: evidence(w, p, point) });
        }
        return;
    }
    if !ctx.settings.auto_clock_out_on_exit || !newest || a.exited.is_some() {
        return;
    }
    if w.fence.within_buffer(point) {
        // Back within the buffer: whatever looked like leaving was jitter.
        a.leaving = None;
        return;
    }
    if !a.onsite.open_at(p.time) {
        return;
    }
    let start = a.leaving.get_or_insert_with(|| evidence(w, p, point));
    if !a.onsite.open_at(start.time) {
        // On Site opened (a late clock event) after the run began.
        *start = evidence(w, p, point);
    }
    let ev = start.clone();
    if p.time.millis() - ev.time.millis() < ctx.settings.min_exit_dwell_ms() {
        return;
    }
    a.leaving = None;
    a.onsite.insert(ev.time, ClockAction::Out);
    out.push(clock(
        ctx,
        &w.appointment,
        &w.user,
        a.generation,
        Activity::Onsite,
        ClockAction::Out,
        &ev,
        ClockCause::Exit,
    ));
    a.exited = Some(ev);
}

/// The earliest sample that decides arrival: the first of a run of inside
/// samples spanning `min_dwell_s`, each with an open En Route clock-in when
/// that is required, with no outside or non-qualifying sample between.
fn decisive(ctx: &Ctx, a: &Assignment) -> Option<Evidence> {
    let dwell = ctx.settings.min_dwell_ms();
    let mut start: Option<&Sample> = None;
    for s in &a.samples {
        let qualifies = !ctx.settings.arrival_requires_enroute || a.enroute.open_at(s.evidence.time);
        if !qualifies || !s.inside {
            start = None;
            continue;
        }
        let first = *start.get_or_insert(s);
        if s.evidence.time.millis() - first.evidence.time.millis() >= dwell {
            return Some(first.evidence.clone());
        }
    }
    None
}

/// Decides arrival from the samples if they now suffice; emits the clock
/// changes once. Called on new samples and on new clock events.
pub fn try_arrive(ctx: &Ctx, appt: &Id, user: &Id, a: &mut Assignment, out: &mut Vec<Command>) {
    if a.arrival.is_some() {
        return;
    }
    let Some(ev) = decisive(ctx, a) else { return };
    a.samples = Vec::new();
    let t = ev.time;
    if a.enroute.open_from(t) {
        a.enroute.insert(t, ClockAction::Out);
        out.push(clock(ctx, appt, user, a.generation, Activity::Enroute, ClockAction::Out, &ev, ClockCause::Arrival));
    }
    if !a.onsite.has(ClockAction::In) {
        a.onsite.insert(t, ClockAction::In);
        out.push(clock(ctx, appt, user, a.generation, Activity::Onsite, ClockAction::In, &ev, ClockCause::Arrival));
    }
    a.arrival = Some(ev);
}

#[allow(clippy::too_many_arguments)]
fn clock(
    ctx: &Ctx,
    appt: &Id,
    user: &Id,
    generation: u32,
    activity: Activity,
    action: ClockAction,
    ev: &Evidence,
    cause: ClockCause,
) -> Command {
    let (act, dir) = (activity.as_str(), action.as_str());
    Command {
        id: assignment_command_id(&[ctx.tenant, "clock", appt.as_str(), user.as_str(), act, dir], generation),
        appointment: appt.clone(),
        action: Action::Clock(ClockChange {
            user: user.clone(),
            activity,
            action,
            time: ev.time,
            lat: ev.lat,
            lon: ev.lon,
            vehicle: ev.vehicle.clone(),
            cause,
        }),
    }
}
