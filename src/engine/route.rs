//! Fence routes: the engine split in two stages, the way the processor
//! runs it.
//!
//! Stage one ([`Role::Appointments`], keyed by appointment) holds the
//! entities, decides fences and Service Links, and works out which vehicles
//! each appointment's technicians drive ([`super::watches`]). Whenever it
//! rebuilds an appointment's watches it publishes a [`Route`] to every
//! vehicle that had or has one ([`RouteBody::Watches`]: the fence, the
//! window, the pairing intervals and the technicians' clock lines), and
//! when a technician's clock line changes it publishes the new line to the
//! vehicles watching for them ([`RouteBody::Clock`]). Stage two
//! ([`Role::Vehicles`], keyed by vehicle) holds only what routes told it
//! and the pings: it tests each ping against its vehicle's watches with the
//! same [`super::arrival`] rules, and decides arrival and exit.
//!
//! Invariants:
//! - Routes are published at the position of the stage-one event that
//!   caused them, and [`apply`] changes the vehicle's watches exactly as
//!   [`super::watches::rebuild`] changes them in the one-stage engine
//!   (the appointment's entries leave the vehicle's list and its new ones
//!   are pushed at the end), so stage two fed the routes and pings in
//!   record-time order decides exactly what the one-stage engine decides
//!   for the same input, in the same order (checked over every scenario
//!   file and the property generator), when each technician's vehicles are
//!   on one partition. When they are not, each partition decides for the
//!   vehicles it holds; commands carry the same ids either way.
//! - Idempotent and ordered: a watches route applies only when its
//!   `(generation, seq)` is newer than the last one applied for that
//!   (vehicle, appointment), so a duplicate or a stale route (from a zombie
//!   stage-one task) changes nothing; a clock route merges facts into sets.
//! - A newer generation (an appointment revived after retirement) starts
//!   its assignments afresh, as retirement does in the one-stage engine.
//! - Stage two forgets an appointment when stage one retires it (a watches
//!   route marked `retired` to every vehicle it was routed to): the
//!   retention of [`super::retention`], decided once, in stage one.

use std::sync::Arc;

use super::arrival::try_arrive;
use super::state::{Assignment, RowKey, State, Watch};
use super::{Command, Ctx};
use crate::geo::{PreparedFence, Shape};

pub use super::event::{Route, RouteBody, RouteWatch};
pub use super::state::{Role, Routed};
use crate::model::Id;

/// Stage one: the watches routes for `appt` after a rebuild that removed
/// its watches from `old` vehicles (and pushed its new ones).
pub fn publish_watches(st: &mut State, appt: &Id, old: Vec<Id>) {
    let mut vehicles = st.watched.get(appt).map(|(_, vs)| vs.clone()).unwrap_or_default();
    for v in old {
        if !vehicles.contains(&v) {
            vehicles.push(v);
        }
    }
    if vehicles.is_empty() {
        return;
    }
    let seq = {
        let n = st.route_seq.entry(appt.clone()).or_default();
        *n += 1;
        *n
    };
    let ever = st.routed_vehicles.entry(appt.clone()).or_default();
    for v in &vehicles {
        if !ever.contains(v) {
            ever.push(v.clone());
        }
    }
    st.dirty.mark(|| RowKey::Appointment(appt.clone()));
    let generation = st.generations.get(appt).map_or(0, |g| g.n);
    let shape = st.fences.get(appt).and_then(|f| f.prepared.as_ref()).map(|p| p.shape().clone());
    for vehicle in vehicles {
        let watches: Vec<RouteWatch> = st
            .watches
            .get(&vehicle)
            .into_iter()
            .flat_map(|vw| vw.cold.iter())
            .filter(|w| &w.appointment == appt)
            .map(|w| {
                let a = &st.assignments[w.slot];
                RouteWatch {
                    user: w.user.clone(),
                    earliest: w.earliest,
                    latest: w.latest,
                    paired: w.paired.clone(),
                    enroute: a.enroute.clone(),
                    onsite: a.onsite.clone(),
                }
            })
            .collect();
        let shape = if watches.is_empty() { None } else { shape.clone() };
        let body = RouteBody::Watches { shape, watches, retired: false };
        st.routes_out.push(Route { vehicle, appointment: appt.clone(), generation, seq, body });
    }
}

/// Stage one: a technician's clock lines changed; tell every vehicle the
/// appointment was ever routed to in this generation (pings kept there as
/// samples may become decisive, even after the watch is gone, as in the
/// one-stage engine). Stage two ignores it where it holds nothing for the
/// technician.
pub fn publish_clock(st: &mut State, appt: &Id, user: &Id) {
    let Some(vehicles) = st.routed_vehicles.get(appt) else { return };
    let Some(&slot) = st.slots.get(&(appt.clone(), user.clone())) else { return };
    let generation = st.generations.get(appt).map_or(0, |g| g.n);
    let seq = st.route_seq.get(appt).copied().unwrap_or(0);
    let a = &st.assignments[slot];
    for v in vehicles {
        st.routes_out.push(Route {
            vehicle: v.clone(),
            appointment: appt.clone(),
            generation,
            seq,
            body: RouteBody::Clock { user: user.clone(), enroute: a.enroute.clone(), onsite: a.onsite.clone() },
        });
    }
}

/// Stage two: applies a route (see the module invariants).
pub fn apply(ctx: &Ctx, st: &mut State, r: &Route, out: &mut Vec<Command>) {
    let appt = &r.appointment;
    let current = st.routed.get(appt).map(|x| x.generation);
    if current.is_some_and(|g| r.generation < g) {
        return;
    }
    if current.is_some_and(|g| r.generation > g) {
        restart_generation(st, appt, r.generation);
    }
    match &r.body {
        RouteBody::Clock { user, enroute, onsite } => {
            let Some(&slot) = st.slots.get(&(appt.clone(), user.clone())) else { return };
            let a = &mut st.assignments[slot];
            if a.merge_lines(enroute, onsite) {
                st.dirty.mark(|| RowKey::Appointment(appt.clone()));
                try_arrive(ctx, appt, user, &mut st.assignments[slot], out);
            }
        }
        RouteBody::Watches { retired: true, .. } => forget(st, appt),
        RouteBody::Watches { shape, watches, .. } => {
            let routed = st
                .routed
                .entry(appt.clone())
                .or_insert_with(|| Routed { generation: r.generation, ..Routed::default() });
            if routed.vehicles.get(&r.vehicle).is_some_and(|last| (last.generation, last.seq) >= (r.generation, r.seq))
            {
                return;
            }
            routed.vehicles.insert(r.vehicle.clone(), r.clone());
            st.dirty.mark(|| RowKey::Routes(appt.clone()));
            st.dirty.mark(|| RowKey::Appointment(appt.clone()));
            push_watches(ctx, st, &r.vehicle, appt, r.generation, shape.as_ref(), watches, true);
        }
    }
}

/// Replaces `appt`'s watches on `vehicle` with `watches` of `generation`
/// (merging their clock lines into the assignments when `merge`).
#[allow(clippy::too_many_arguments)]
fn push_watches(
    ctx: &Ctx,
    st: &mut State,
    vehicle: &Id,
    appt: &Id,
    generation: u32,
    shape: Option<&Shape>,
    watches: &[RouteWatch],
    merge: bool,
) {
    let fence = shape.and_then(|s| prepared(ctx, st, appt, s));
    // A vehicle left with no watches is forgotten, its latest ping too,
    // before the new ones are pushed: as `watches::rebuild` does.
    st.unwatch_vehicle(vehicle, appt);
    if let Some(fence) = fence {
        for rw in watches {
            let slot = st.slot(appt, &rw.user);
            let a = &mut st.assignments[slot];
            if a.generation < generation {
                *a = Assignment { generation, ..Assignment::default() };
            }
            if merge {
                a.merge_lines(&rw.enroute, &rw.onsite);
            }
            let done = ctx.is_done(a);
            let watch = Watch {
                appointment: appt.clone(),
                user: rw.user.clone(),
                slot,
                fence: fence.clone(),
                earliest: rw.earliest,
                latest: rw.latest,
                paired: rw.paired.clone(),
            };
            st.watches.entry(vehicle.clone()).or_default().push(watch, done);
        }
    }
}

/// The appointment's prepared fence, re-prepared when its shape changed.
fn prepared(ctx: &Ctx, st: &mut State, appt: &Id, shape: &Shape) -> Option<Arc<PreparedFence>> {
    let rec = st.fences.entry(appt.clone()).or_default();
    if rec.prepared.as_ref().is_none_or(|p| p.shape() != shape) {
        rec.prepared = PreparedFence::new(shape, ctx.settings.exit_buffer_m).ok().map(Arc::new);
    }
    rec.prepared.clone()
}

/// A revived appointment: its earlier generation's assignments and routes
/// here are over.
fn restart_generation(st: &mut State, appt: &Id, generation: u32) {
    for (_, slot) in st.slots_of.get(appt).into_iter().flatten() {
        st.assignments[*slot] = Assignment { generation, ..Assignment::default() };
    }
    if let Some(routed) = st.routed.get_mut(appt) {
        routed.generation = generation;
    }
    st.dirty.mark(|| RowKey::Appointment(appt.clone()));
}

/// Stage one, retiring an appointment ([`super::retention`]): tells every
/// vehicle it was routed to in its last generation.
pub fn publish_retired(st: &mut State, appt: &Id, vehicles: Vec<Id>, generation: u32, seq: u64) {
    for vehicle in vehicles {
        let body = RouteBody::Watches { shape: None, watches: Vec::new(), retired: true };
        st.routes_out.push(Route { vehicle, appointment: appt.clone(), generation, seq: seq + 1, body });
    }
}

/// Stage two: forgets a retired appointment's assignments, routes and fence.
fn forget(st: &mut State, id: &Id) {
    st.routed.remove(id);
    st.fences.remove(id);
    for (user, slot) in st.slots_of.remove(id).into_iter().flatten() {
        st.slots.remove(&(id.clone(), user));
        st.assignments[slot] = Assignment::default();
        st.free_slots.push(slot);
    }
    st.dirty.mark(|| RowKey::Routes(id.clone()));
    st.dirty.mark(|| RowKey::Appointment(id.clone()));
}

/// Stage two, restoring: the watches its rows describe (assignments are
/// restored first).
pub fn restore(ctx: &Ctx, st: &mut State, appt: &Id, routed: Routed) {
    let routes: Vec<Route> = routed.vehicles.values().cloned().collect();
    st.routed.insert(appt.clone(), routed);
    for r in routes {
        if let RouteBody::Watches { shape, watches, .. } = &r.body {
            push_watches(ctx, st, &r.vehicle, appt, r.generation, shape.as_ref(), watches, false);
        }
    }
}

/// The two stages run in one process, in the order the processor runs them
/// (each stage-one event's commands, then stage two's reaction to its
/// routes); stage two split over `partitions` by `partition_of(vehicle)`.
/// Returns every command in that order. For tests and audits.
pub fn run_split(
    tenant: &str,
    settings: &crate::model::Settings,
    events: &[super::Event],
    partitions: usize,
    partition_of: impl Fn(&Id) -> usize,
) -> Result<(super::Engine, Vec<super::Engine>, Vec<Command>), super::EngineError> {
    use super::{Engine, Event};
    let mut one = Engine::new(tenant, settings.clone())?;
    one.set_role(Role::Appointments);
    let mut two: Vec<Engine> = (0..partitions.max(1))
        .map(|_| {
            let mut e = Engine::new(tenant, settings.clone())?;
            e.set_role(Role::Vehicles);
            Ok(e)
        })
        .collect::<Result<_, super::EngineError>>()?;
    let n = two.len();
    let mut out = Vec::new();
    for event in events {
        if let Event::Ping(p) = event {
            // Malformed pings are rejected by stage two alone.
            let _ = two[partition_of(&p.vehicle) % n].handle(event, &mut out);
            continue;
        }
        if one.handle(event, &mut out).is_err() {
            continue;
        }
        for r in one.drain_routes() {
            let _ = two[partition_of(&r.vehicle) % n].handle(&Event::Route(r), &mut out);
        }
    }
    Ok((one, two, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;

    fn whole(s: &crate::scenario::Scenario) -> Vec<Command> {
        let mut e = Engine::new(s.tenant.clone(), s.settings.clone()).unwrap();
        let mut out = Vec::new();
        for ev in s.all_events() {
            let _ = e.handle(&ev, &mut out);
        }
        out
    }

    #[test]
    fn two_stages_decide_what_one_does_for_every_scenario() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
        let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        let mut checked = 0;
        for f in files.iter().filter(|f| f.extension().is_some_and(|x| x == "yaml")) {
            let s = crate::scenario::Scenario::load(f).unwrap();
            let (_, _, split) = run_split(&s.tenant, &s.settings, &s.all_events(), 1, |_| 0).unwrap();
            assert_eq!(split, whole(&s), "{}", f.display());
            checked += 1;
        }
        assert!(checked >= 10, "only {checked} scenario files");
    }
}
