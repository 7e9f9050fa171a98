//! Clock events and the Service Link.
//!
//! A technician's En Route clock-in for an appointment sends the job's
//! location's primary contact (else the location itself: see
//! [`super::offices`]) a Service Link with a TrackMe link for the vehicle
//! the technician drives at that moment, when the tenant enabled it, the
//! appointment is scheduled, the technician is found in Azuga and paired,
//! and one of those has a valid email — whether or not the location has
//! coordinates (the link does not depend on the fence; its TrackMe then
//! has no destination). At most once per (appointment, technician); the id
//! names only those. A failed attempt is retried when the entities it
//! depends on change, as long as the technician is still En Route and has
//! not arrived (topics are not ordered against each other: the driver,
//! pairing or contact may be mirrored after the clock event).
//!
//! Clock events are facts kept as a set per (appointment, technician,
//! activity): a duplicate changes nothing. A new one can make buffered
//! pings decisive (a late En Route clock-in), so arrival is re-tried.

use super::arrival::try_arrive;
use super::command::{assignment_command_id, Action, Command, ServiceLink};
use super::fences::location_point;
use super::state::{LinkState, Reason, State};
use super::Ctx;
use crate::model::{Activity, AppointmentStatus, ClockAction, ClockEvent, Id, Ts};

pub fn on_clock(ctx: &Ctx, st: &mut State, c: &ClockEvent, out: &mut Vec<Command>) {
    let slot = st.slot(&c.appointment, &c.user);
    let a = &mut st.assignments[slot];
    let line = match c.activity {
        Activity::Enroute => &mut a.enroute,
        Activity::Onsite => &mut a.onsite,
        Activity::Offsite => return,
    };
    if !line.insert(c.time, c.action) {
        return;
    }
    if st.role == super::state::Role::Appointments {
        super::route::publish_clock(st, &c.appointment, &c.user);
    }
    if c.activity == Activity::Enroute && c.action == ClockAction::In && ctx.settings.service_link {
        attempt(ctx, st, &c.appointment, &c.user, c.time, out);
    }
    try_arrive(ctx, &c.appointment, &c.user, &mut st.assignments[slot], out);
}

/// Re-tries failed links of an appointment whose entities changed.
pub fn retry_pending(ctx: &Ctx, st: &mut State, appt: &Id, out: &mut Vec<Command>) {
    if !ctx.settings.service_link {
        return;
    }
    let Some(techs) = st.appointments.get(appt).map(|a| a.techs.clone()) else { return };
    for tech in techs {
        let Some(&slot) = st.slots.get(&(appt.clone(), tech.clone())) else { continue };
        let a = &st.assignments[slot];
        if matches!(a.link, LinkState::Failed(_)) && a.enroute.is_open() && a.arrival.is_none() {
            if let Some(at) = a.enroute.last(ClockAction::In) {
                attempt(ctx, st, appt, &tech, at, out);
            }
        }
    }
}

fn attempt(ctx: &Ctx, st: &mut State, appt: &Id, user: &Id, at: Ts, out: &mut Vec<Command>) {
    let slot = st.slot(appt, user);
    if matches!(st.assignments[slot].link, LinkState::Sent { .. }) {
        return;
    }
    match build(ctx, st, appt, user, at) {
        Ok(link) => {
            st.assignments[slot].link = LinkState::Sent { at, vehicle: link.vehicle.clone(), to: link.to.clone() };
            out.push(Command {
                id: assignment_command_id(
                    &[ctx.tenant, "service_link", appt.as_str(), user.as_str()],
                    st.assignments[slot].generation,
                ),
                appointment: appt.clone(),
                action: Action::SendServiceLink(link),
            });
        }
        Err(reason) => st.assignments[slot].link = LinkState::Failed(reason),
    }
}

fn build(ctx: &Ctx, st: &State, appt: &Id, user: &Id, at: Ts) -> Result<ServiceLink, Reason> {
    let a = st.appointments.get(appt).ok_or(Reason::NotScheduled)?;
    if a.status != AppointmentStatus::Scheduled {
        return Err(Reason::NotScheduled);
    }
    let driver = st.driver_of(user).ok_or(Reason::TechNotFoundInAzuga)?;
    let vehicle = st.pairings.vehicle_at(driver, at).ok_or(Reason::TechNotPaired)?;
    let job = a.job.as_ref().and_then(|j| st.jobs.get(j)).ok_or(Reason::NoJob)?;
    let loc = job.location.as_ref().and_then(|l| st.locations.get(l)).ok_or(Reason::NoContactEmail)?;
    let to = st.link_recipient(loc)?;
    // No coordinates: no fence, but the link still goes, its TrackMe
    // without a destination.
    let destination = location_point(ctx, loc);
    Ok(ServiceLink {
        user: user.clone(),
        tech_name: st.users.get(user).map(|u| u.name.clone()).unwrap_or_default(),
        vehicle_name: st.vehicles.get(&vehicle).map(|v| v.name.clone()).unwrap_or_default(),
        vehicle,
        to,
        location_name: loc.name.clone(),
        job_number: job.number.clone(),
        window_start: a.window_start,
        window_end: a.window_end,
        destination,
        timezone: loc.timezone.clone(),
        enroute_at: at,
    })
}
