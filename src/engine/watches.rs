//! Routing fences to vehicles: for each scheduled, fenced appointment and
//! each of its technicians, the vehicles that technician's driver drives near
//! the window get a [`Watch`]. Derived state only: [`rebuild`] throws an
//! appointment's watches away and recomputes them from the entities, so it
//! is safe to call after any change, any number of times. Decisions live in
//! the assignments, which rebuilding never touches.

use super::state::{State, Watch};
use super::Ctx;
use crate::model::{AppointmentStatus, Id, Ts};

/// Watches are kept this long past `window_end + window_hours`, so that a
/// late arrival can still be reported as outside the window.
pub const EVIDENCE_HORIZON_MS: i64 = 24 * 3_600_000;

/// Returns the vehicles the appointment's watches were removed from.
pub fn rebuild(ctx: &Ctx, st: &mut State, appt: &Id) -> Vec<Id> {
    let old = unwatch(st, appt);
    watch(ctx, st, appt);
    old
}

fn unwatch(st: &mut State, appt: &Id) -> Vec<Id> {
    let Some((until, vehicles)) = st.watched.remove(appt) else { return Vec::new() };
    st.watch_until.remove(&(until, appt.clone()));
    for v in &vehicles {
        st.unwatch_vehicle(v, appt);
    }
    vehicles
}

fn watch(ctx: &Ctx, st: &mut State, appt: &Id) {
    let Some(a) = st.appointments.get(appt) else { return };
    let (Some((ws, we)), AppointmentStatus::Scheduled) = (a.window(), a.status) else { return };
    let Some(fence) = st.fences.get(appt).and_then(|r| r.prepared.clone()) else { return };
    let w = ctx.settings.window_ms();
    let (earliest, latest) = (ws.minus_millis(w), we.plus_millis(w));
    let until = latest.plus_millis(EVIDENCE_HORIZON_MS);
    if st.watermark.is_some_and(|m| m > until) {
        return;
    }
    // A revived appointment watches only from its revival on.
    let since = st.generations.get(appt).map_or(Ts::MIN, |g| g.since);
    let mut techs = a.techs.clone();
    dedup_in_order(&mut techs);
    let mut routed: Vec<Id> = Vec::new();
    for tech in techs {
        let Some(driver) = st.driver_of(&tech).cloned() else { continue };
        let vehicles = st.pairings.vehicles_during(&driver, earliest.minus_millis(EVIDENCE_HORIZON_MS), until);
        if vehicles.is_empty() {
            continue;
        }
        let slot = st.slot(appt, &tech);
        let done = ctx.is_done(&st.assignments[slot]);
        for (vehicle, paired) in vehicles {
            let paired: Vec<_> = paired.into_iter().map(|(f, t)| (f.max(since), t)).filter(|(f, t)| f < t).collect();
            if paired.is_empty() {
                continue;
            }
            let watch = Watch {
                appointment: appt.clone(),
                user: tech.clone(),
                slot,
                fence: fence.clone(),
                earliest,
                latest,
                paired,
            };
            st.watches.entry(vehicle.clone()).or_default().push(watch, done);
            if !routed.contains(&vehicle) {
                routed.push(vehicle);
            }
        }
    }
    if !routed.is_empty() {
        st.watch_until.insert((until, appt.clone()));
        st.watched.insert(appt.clone(), (until, routed));
    }
}

/// Appointments whose watches or live fence are due at event time `t`.
pub fn due(st: &State, t: Ts) -> Vec<Id> {
    let mut ids: Vec<Id> = st
        .live_until
        .iter()
        .take_while(|(to, _)| *to < t)
        .chain(st.watch_until.iter().take_while(|(to, _)| *to < t))
        .map(|(_, id)| id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

pub fn dedup_in_order(ids: &mut Vec<Id>) {
    let mut seen = Vec::with_capacity(ids.len());
    ids.retain(|id| {
        if seen.contains(id) {
            false
        } else {
            seen.push(id.clone());
            true
        }
    });
}
