//! Report rows from engine state. Pure; rows are ordered by appointment id,
//! then by the technician's position on the appointment.
//!
//! `fence_result` is what the vehicle did: `arrived` means the technician's
//! vehicle was inside the fence within the window (clocked or not; when not,
//! `failure_reason` says why), `arrived_outside_window` that it was inside
//! only outside the window. `failures` lists every reason found, in pipeline
//! order (fence, Azuga match, pairing, arrival, Service Link);
//! `failure_reason` is the first.
//!
//! Every failure of the vehicle's part carries its evidence, after the
//! original columns (each absent when it does not apply):
//! `closest_approach` for `vehicle_did_not_arrive` (the in-window ping
//! nearest the fence, within 2 km of it), `outside_window_ping` for
//! `arrived_outside_window`, `inside_before_enroute` for an inside ping
//! that did not clock (no open En Route clock-in), `pairing_gap` for
//! `tech_not_paired` (the driver's pairings before and after the window).

use serde::Serialize;

use crate::engine::state::Crossing;
use crate::engine::state::{Assignment, State};
use crate::engine::timeline::PairingGap;
use crate::engine::watches::dedup_in_order;
use crate::engine::{Engine, Evidence, LinkState, Reason};
use crate::geo::Shape;
use crate::model::{Appointment, AppointmentStatus, ClockAction, Id, Ts};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FenceResult {
    Arrived,
    ArrivedOutsideWindow,
    NotArrived,
    NoFence,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportRow {
    pub appointment: Id,
    pub job: Option<Id>,
    pub job_number: Option<Id>,
    pub location: Option<Id>,
    pub location_name: Option<String>,
    /// The office the appointment belongs to (its job's location's first
    /// office) and the office's name when mirrored; absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub office: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub office_name: Option<String>,
    pub status: &'static str,
    pub window_start: Option<Ts>,
    pub window_end: Option<Ts>,
    pub tech: Option<Id>,
    pub tech_name: Option<String>,
    pub tech_email: Option<String>,
    pub tech_found_in_azuga: bool,
    pub vehicle: Option<Id>,
    pub fence_created: bool,
    pub fence_name: Option<String>,
    /// The fence's shape (the report says how Azuga holds it:
    /// [`super::actions::fence_shape_text`]).
    #[serde(skip)]
    pub fence_shape: Option<Shape>,
    pub fence_result: FenceResult,
    pub service_link_sent: Option<Ts>,
    pub enroute_clock_in: Option<Ts>,
    pub enroute_clock_out: Option<Ts>,
    pub onsite_clock_in: Option<Ts>,
    pub onsite_clock_out: Option<Ts>,
    pub arrival: Option<Evidence>,
    /// Consecutive pings (both outside) whose path crossed the fence: the
    /// vehicle likely drove through between two sparse fixes.
    pub passed_through: Option<Crossing>,
    pub failure_reason: Option<Reason>,
    pub failures: Vec<Reason>,
    /// Not arrived: the in-window ping nearest the fence centre.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closest_approach: Option<Evidence>,
    /// Arrived outside the window: the first inside ping, outside it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outside_window_ping: Option<Evidence>,
    /// Inside within the window but not clocked: the first such ping
    /// (before an En Route clock-in, or a dwell not completed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inside_before_enroute: Option<Evidence>,
    /// Not paired: the driver's pairings around the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pairing_gap: Option<PairingGap>,
}

impl ReportRow {
    /// How much the row learned from pings, for merging the rows of
    /// processor tasks that each saw some vehicles' pings: a stronger fence
    /// result first, then an earlier arrival, then more ping-derived facts.
    pub fn ping_rank(&self) -> (u8, Option<std::cmp::Reverse<Ts>>, usize) {
        let result = match self.fence_result {
            FenceResult::Arrived => 3,
            FenceResult::ArrivedOutsideWindow => 2,
            FenceResult::NotArrived => 1,
            FenceResult::NoFence => 0,
        };
        (result, self.arrival.as_ref().map(|e| std::cmp::Reverse(e.time)), self.evidence_count())
    }

    fn evidence_count(&self) -> usize {
        [
            self.arrival.is_some(),
            self.passed_through.is_some(),
            self.enroute_clock_out.is_some(),
            self.onsite_clock_in.is_some(),
            self.onsite_clock_out.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count()
    }
}

/// Keeps the rows of one office (`None`: every row).
pub fn of_office(rows: Vec<ReportRow>, office: Option<&Id>) -> Vec<ReportRow> {
    match office {
        None => rows,
        Some(o) => rows.into_iter().filter(|r| r.office.as_ref() == Some(o)).collect(),
    }
}

pub fn rows(engine: &Engine) -> Vec<ReportRow> {
    let st = engine.state();
    let w = engine.settings().window_ms();
    let requires_enroute = engine.settings().arrival_requires_enroute;
    let mut out = Vec::new();
    for (id, appt) in &st.appointments {
        let mut techs = appt.techs.clone();
        dedup_in_order(&mut techs);
        if techs.is_empty() {
            let mut row = base_row(st, id, appt);
            push(&mut row.failures, Reason::NoTechAssigned);
            row.failure_reason = row.failures.first().copied();
            out.push(row);
            continue;
        }
        for tech in techs {
            out.push(tech_row(st, id, appt, &tech, w, requires_enroute));
        }
    }
    out
}

fn push(failures: &mut Vec<Reason>, r: Reason) {
    if !failures.contains(&r) {
        failures.push(r);
    }
}

fn base_row(st: &State, id: &Id, appt: &Appointment) -> ReportRow {
    let job = appt.job.as_ref().and_then(|j| st.jobs.get(j));
    let location = job.and_then(|j| j.location.as_ref());
    let rec = st.fences.get(id);
    let fence = rec.and_then(|r| r.last.as_ref());
    let mut failures = Vec::new();
    let fenced = fence.is_some() || rec.is_some_and(|r| r.prepared.is_some());
    if !fenced {
        push(&mut failures, rec.and_then(|r| r.no_fence).unwrap_or(Reason::NotScheduled));
    }
    let (office, office_name) = st.office_of(id).unzip();
    ReportRow {
        appointment: id.clone(),
        office,
        office_name: office_name.flatten(),
        job: appt.job.clone(),
        job_number: job.and_then(|j| j.number.clone()),
        location: location.cloned(),
        location_name: location.and_then(|l| st.locations.get(l)).map(|l| l.name.clone()),
        status: appt.status.as_str(),
        window_start: appt.window_start,
        window_end: appt.window_end,
        tech: None,
        tech_name: None,
        tech_email: None,
        tech_found_in_azuga: false,
        vehicle: None,
        fence_created: fence.is_some(),
        fence_name: fence.map(|f| f.name.clone()),
        fence_shape: fence.map(|f| f.shape.clone()),
        fence_result: if fenced { FenceResult::NotArrived } else { FenceResult::NoFence },
        service_link_sent: None,
        enroute_clock_in: None,
        enroute_clock_out: None,
        onsite_clock_in: None,
        onsite_clock_out: None,
        arrival: None,
        passed_through: None,
        failure_reason: None,
        failures,
        closest_approach: None,
        outside_window_ping: None,
        inside_before_enroute: None,
        pairing_gap: None,
    }
}

fn tech_row(st: &State, id: &Id, appt: &Appointment, tech: &Id, w: i64, requires_enroute: bool) -> ReportRow {
    let mut row = base_row(st, id, appt);
    let user = st.users.get(tech);
    let driver = st.driver_of(tech);
    let (from, to) = match appt.window() {
        Some((s, e)) => (s.minus_millis(w), e.plus_millis(w)),
        None => (Ts::MIN, Ts::MAX),
    };
    let paired = driver.map(|d| st.pairings.vehicles_during(d, from, to)).unwrap_or_default();
    let empty = Assignment::default();
    let a = st.assignment(id, tech).unwrap_or(&empty);

    row.tech = Some(tech.clone());
    row.tech_name = user.map(|u| u.name.clone());
    row.tech_email = user.and_then(|u| u.email.clone());
    row.tech_found_in_azuga = driver.is_some();
    row.vehicle = a.arrival.as_ref().map(|e| e.vehicle.clone()).or_else(|| paired.first().map(|(v, _)| v.clone()));
    if row.fence_result != FenceResult::NoFence {
        row.fence_result = if a.arrival.is_some() || a.inside_in_window.is_some() {
            FenceResult::Arrived
        } else if a.inside_outside_window.is_some() {
            FenceResult::ArrivedOutsideWindow
        } else {
            FenceResult::NotArrived
        };
    }
    if let LinkState::Sent { at, .. } = a.link {
        row.service_link_sent = Some(at);
    }
    row.enroute_clock_in = a.enroute.first(ClockAction::In);
    row.enroute_clock_out = match row.enroute_clock_in {
        Some(t) => a.enroute.first_from(ClockAction::Out, t),
        None => a.enroute.first(ClockAction::Out),
    };
    row.onsite_clock_in = a.onsite.first(ClockAction::In);
    row.onsite_clock_out = match row.onsite_clock_in {
        Some(t) => a.onsite.first_from(ClockAction::Out, t),
        None => a.onsite.first(ClockAction::Out),
    };
    row.arrival = a.arrival.clone();
    row.passed_through = a.passed_through.clone();
    match row.fence_result {
        FenceResult::NotArrived => row.closest_approach = a.closest.clone(),
        FenceResult::ArrivedOutsideWindow => row.outside_window_ping = a.inside_outside_window.clone(),
        FenceResult::Arrived if a.arrival.is_none() => row.inside_before_enroute = a.inside_in_window.clone(),
        _ => {}
    }
    row.pairing_gap = driver.filter(|_| appt.window().is_some()).and_then(|d| st.pairings.gap(d, from, to));

    let f = &mut row.failures;
    let live_status = matches!(appt.status, AppointmentStatus::Scheduled | AppointmentStatus::Completed);
    if row.fence_result != FenceResult::NoFence && !live_status && a.arrival.is_none() {
        push(f, Reason::NotScheduled);
    }
    if driver.is_none() {
        push(f, Reason::TechNotFoundInAzuga);
    } else if paired.is_empty() {
        push(f, Reason::TechNotPaired);
    } else if live_status {
        match row.fence_result {
            FenceResult::Arrived if a.arrival.is_none() && requires_enroute => push(f, Reason::NoEnrouteClockIn),
            FenceResult::ArrivedOutsideWindow => push(f, Reason::ArrivedOutsideWindow),
            FenceResult::NotArrived => push(f, Reason::VehicleDidNotArrive),
            _ => {}
        }
    }
    if let LinkState::Failed(r) = a.link {
        push(f, r);
    }
    row.failure_reason = row.failures.first().copied();
    row
}
