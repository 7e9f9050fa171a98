//! What the map shows of one tenant's day, decided in one place. Pure: the
//! engine's state, the day's report lines, the vehicles' tracks and the
//! event time `now` are passed in.
//!
//! Invariants:
//! - a fence is on the map when its appointment starts on the day (the
//!   report's rule, [`crate::report::render::for_day`]), has had a fence,
//!   and is scheduled, completed or a no-show (a cancelled, unscheduled or
//!   deleted appointment's fence is gone and no visit is expected);
//! - every vehicle with a fix is on the map, labelled with the technician
//!   whose driver is paired with it at `now`;
//! - a fence's state ([`FenceState`]) and its colour are functions of its
//!   report lines and `now` only ([`fence_state`]); lateness is
//!   [`super::eta`]'s;
//! - nothing reads the wall clock: `now` is the tenant's newest fix time.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use super::eta::{estimate, Eta, Motion};
use super::track::{is_stale, Track};
use crate::engine::command::FenceChange;
use crate::engine::state::State;
use crate::engine::{Evidence, Reason};
use crate::geo::{PreparedFence, Shape};
use crate::model::{normalize_email, Id, MapSettings, Settings, Ts};
use crate::report::join::{reason_text, ReportLine};
use crate::report::FenceResult;

/// A fence's state on the map, each with its own colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FenceState {
    Scheduled,
    EnRoute,
    OnSite,
    ArrivedOutsideWindow,
    Failed,
    Completed,
}

impl FenceState {
    pub const ALL: [FenceState; 6] = [
        FenceState::Scheduled,
        FenceState::EnRoute,
        FenceState::OnSite,
        FenceState::ArrivedOutsideWindow,
        FenceState::Failed,
        FenceState::Completed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FenceState::Scheduled => "scheduled",
            FenceState::EnRoute => "en_route",
            FenceState::OnSite => "on_site",
            FenceState::ArrivedOutsideWindow => "arrived_outside_window",
            FenceState::Failed => "failed",
            FenceState::Completed => "completed",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            FenceState::Scheduled => "Scheduled",
            FenceState::EnRoute => "Technician en route",
            FenceState::OnSite => "On site",
            FenceState::ArrivedOutsideWindow => "Arrived outside window",
            FenceState::Failed => "Failed",
            FenceState::Completed => "Completed",
        }
    }

    /// The fence's colour (CSS hex), distinct for every state.
    pub fn color(self) -> &'static str {
        match self {
            FenceState::Scheduled => "#64748b",
            FenceState::EnRoute => "#2563eb",
            FenceState::OnSite => "#16a34a",
            FenceState::ArrivedOutsideWindow => "#d97706",
            FenceState::Failed => "#dc2626",
            FenceState::Completed => "#7c3aed",
        }
    }
}

/// Whether a line can no longer end in an arrival whatever the vehicle does.
fn blocked(l: &ReportLine) -> Option<Reason> {
    l.row
        .failures
        .iter()
        .copied()
        .find(|r| matches!(r, Reason::NoTechAssigned | Reason::TechNotFoundInAzuga | Reason::TechNotPaired))
}

fn en_route(l: &ReportLine) -> bool {
    l.row.enroute_clock_in.is_some() && l.row.enroute_clock_out.is_none() && l.row.onsite_clock_in.is_none()
}

/// The state of an appointment's fence from its report lines (one per
/// technician, at least one) at event time `now` (`None`: no fix seen
/// yet), by precedence:
///
/// 1. completed → `Completed`; no-show → `Failed`;
/// 2. a technician arrived within the window → `OnSite`;
/// 3. one arrived only outside it → `ArrivedOutsideWindow`;
/// 4. no technician can arrive (none assigned, none matched in Azuga or
///    paired with a vehicle), or `now` is past `window_end + window_hours`
///    → `Failed`, with the reason;
/// 5. a technician is clocked En Route (not out, not On Site) → `EnRoute`;
/// 6. else `Scheduled`.
///
/// Other failures (a geofence Azuga refused, a Service Link not sent) do
/// not change the state: the arrival is still detected; they are listed
/// with the fence.
pub fn fence_state(lines: &[&ReportLine], now: Option<Ts>, window_ms: i64) -> (FenceState, Option<String>) {
    let Some(first) = lines.first() else { return (FenceState::Scheduled, None) };
    match first.row.status {
        "completed" => return (FenceState::Completed, None),
        "no_show" => return (FenceState::Failed, Some("Customer no-show".into())),
        _ => {}
    }
    let results = || lines.iter().map(|l| l.row.fence_result);
    if results().any(|r| r == FenceResult::Arrived) {
        return (FenceState::OnSite, None);
    }
    if results().any(|r| r == FenceResult::ArrivedOutsideWindow) {
        return (FenceState::ArrivedOutsideWindow, Some(reason_text(Reason::ArrivedOutsideWindow).into()));
    }
    if lines.iter().all(|l| blocked(l).is_some()) {
        return (FenceState::Failed, blocked(first).map(|r| reason_text(r).to_string()));
    }
    let deadline = first.row.window_end.map(|e| e.plus_millis(window_ms));
    if let (Some(now), Some(deadline)) = (now, deadline) {
        if now > deadline {
            return (FenceState::Failed, Some(reason_text(Reason::VehicleDidNotArrive).into()));
        }
    }
    if lines.iter().any(|l| en_route(l)) {
        return (FenceState::EnRoute, None);
    }
    (FenceState::Scheduled, None)
}

/// One technician of an appointment, as the fence's panel shows them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TechView {
    pub id: Option<Id>,
    pub name: Option<String>,
    /// The vehicle paired with the technician at `now`, else the report's.
    pub vehicle: Option<Id>,
    pub fence_result: FenceResult,
    pub enroute_clock_in: Option<Ts>,
    pub enroute_clock_out: Option<Ts>,
    pub onsite_clock_in: Option<Ts>,
    pub onsite_clock_out: Option<Ts>,
    pub service_link_sent: Option<Ts>,
    pub arrival: Option<Evidence>,
    /// Only for a technician En Route who has not arrived.
    pub eta: Option<Eta>,
    pub failures: Vec<String>,
}

/// An appointment's fence on the map.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FenceView {
    pub appointment: Id,
    /// `{locationName} | {jobNumber} | {appointmentId}`
    pub label: String,
    pub shape: Shape,
    pub state: FenceState,
    pub color: &'static str,
    /// Why it failed (or arrived outside the window).
    pub state_reason: Option<String>,
    pub status: &'static str,
    pub window_start: Ts,
    pub window_end: Ts,
    pub location_name: Option<String>,
    pub job: Option<Id>,
    pub job_number: Option<Id>,
    pub quick_link: Option<String>,
    pub techs: Vec<TechView>,
    /// A technician En Route is estimated to arrive after the window ends.
    pub late: bool,
    /// The earliest ETA of its technicians En Route.
    pub eta: Option<Ts>,
    /// The decision in sentences.
    pub explanation: Vec<String>,
    /// Every failure of every line, in words.
    pub failures: Vec<String>,
}

/// A vehicle's marker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VehicleView {
    pub id: Id,
    pub name: String,
    pub time: Ts,
    pub lat: f64,
    pub lon: f64,
    pub speed_mph: Option<f64>,
    pub heading_deg: Option<f64>,
    pub stale: bool,
    /// The technician whose driver is paired with it at `now`.
    pub tech: Option<Id>,
    pub tech_name: Option<String>,
    pub driver_name: Option<String>,
    /// The appointment it is heading to (its technician is En Route).
    pub eta_appointment: Option<Id>,
    pub eta: Option<Ts>,
    pub late: bool,
}

/// One tenant's day on the map.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantView {
    /// Orders the views the live map published (0: not published).
    pub seq: u64,
    pub tenant: String,
    pub day: NaiveDate,
    /// The tenant's newest fix time (event time).
    pub now: Option<Ts>,
    /// By appointment id.
    pub fences: Vec<FenceView>,
    /// By vehicle id.
    pub vehicles: Vec<VehicleView>,
    /// Appointments running late.
    pub late: usize,
}

/// Everything [`build`] reads.
pub struct Input<'a> {
    pub tenant: &'a str,
    pub day: NaiveDate,
    pub tz: Tz,
    pub now: Option<Ts>,
    pub settings: &'a Settings,
    pub map: &'a MapSettings,
    /// The mirrored entities (any appointment task's: they are global).
    pub state: &'a State,
    /// Each appointment's last fence.
    pub fences: &'a BTreeMap<Id, FenceChange>,
    /// The day's report lines, in report order.
    pub lines: &'a [ReportLine],
    /// By vehicle.
    pub tracks: &'a HashMap<Id, Track>,
}

/// Who drives what at `now`, by matching drivers to technicians by email.
struct Pairs {
    tech_of_vehicle: HashMap<Id, (Option<Id>, Id)>,
    vehicle_of_tech: HashMap<Id, Id>,
}

fn pairs(st: &State, now: Option<Ts>) -> Pairs {
    let mut p = Pairs { tech_of_vehicle: HashMap::new(), vehicle_of_tech: HashMap::new() };
    let Some(now) = now else { return p };
    let mut drivers: Vec<&Id> = st.drivers.keys().collect();
    drivers.sort();
    for d in drivers {
        let Some(vehicle) = st.pairings.vehicle_at(d, now) else { continue };
        let email = normalize_email(st.drivers.get(d).and_then(|d| d.email.as_deref()));
        let tech = email.and_then(|e| st.index.users_by_email.get(&e)).and_then(|u| u.iter().next()).cloned();
        if let Some(t) = &tech {
            p.vehicle_of_tech.entry(t.clone()).or_insert_with(|| vehicle.clone());
        }
        p.tech_of_vehicle.entry(vehicle).or_insert((tech, d.clone()));
    }
    p
}

fn hhmm(t: Ts, tz: Tz) -> String {
    DateTime::<Utc>::from_timestamp_millis(t.millis())
        .unwrap_or_default()
        .with_timezone(&tz)
        .format("%H:%M")
        .to_string()
}

/// The decision in sentences, per technician.
fn explain(tv: &TechView, tz: Tz, window: (Ts, Ts), requires_enroute: bool) -> String {
    let who = tv.name.clone().or_else(|| tv.id.as_ref().map(|i| format!("Technician {i}"))).unwrap_or("Nobody".into());
    let vehicle = tv.vehicle.as_ref().map(|v| format!("vehicle {v}")).unwrap_or("no vehicle".into());
    let w = format!("{}–{}", hhmm(window.0, tz), hhmm(window.1, tz));
    match (tv.fence_result, &tv.arrival) {
        (FenceResult::Arrived, Some(a)) => format!(
            "{who}: {} was inside the fence at {} ({} m from the centre), within the window {w} extended: \
             clocked En Route out and On Site in at {}.",
            a.vehicle,
            hhmm(a.time, tz),
            a.distance_m,
            hhmm(a.time, tz)
        ),
        (FenceResult::Arrived, None) if requires_enroute && tv.enroute_clock_in.is_none() => {
            format!("{who}: {vehicle} was inside the fence within the window, but there was no En Route clock-in, so On Site was not clocked.")
        }
        (FenceResult::Arrived, None) => format!("{who}: {vehicle} was inside the fence within the window {w}."),
        (FenceResult::ArrivedOutsideWindow, _) => {
            format!("{who}: {vehicle} was inside the fence only outside the window {w} extended: not clocked.")
        }
        (FenceResult::NoFence, _) => format!("{who}: the appointment has no fence."),
        (FenceResult::NotArrived, _) => match (&tv.eta, tv.enroute_clock_in) {
            (Some(e), Some(since)) => {
                let km = e.distance_m / 1000.0;
                let at = e.at.map_or("none: heading away from the site".to_string(), |t| hhmm(t, tz));
                format!(
                    "{who}: En Route since {}, {vehicle} {km:.1} km away at {:.0} km/h ({}): ETA {at}, window ends {}{}.",
                    hhmm(since, tz),
                    e.speed_mps * 3.6,
                    match e.basis {
                        super::eta::Basis::Parked => "parked; typical speed assumed",
                        super::eta::Basis::HeadingAway => "moving away",
                        super::eta::Basis::There => "at the site",
                        super::eta::Basis::Moving => "recent speed",
                    },
                    hhmm(window.1, tz),
                    if e.late { " — running late" } else { "" }
                )
            }
            (_, Some(since)) => format!("{who}: En Route since {}; {vehicle} has not arrived.", hhmm(since, tz)),
            (_, None) => format!("{who}: not En Route yet; {vehicle} has not arrived."),
        },
    }
}

/// The view of one tenant's day (see the module docs).
pub fn build(i: &Input) -> TenantView {
    let st = i.state;
    let p = pairs(st, i.now);
    let window_ms = i.settings.window_ms();
    let mut by_appt: BTreeMap<&Id, Vec<&ReportLine>> = BTreeMap::new();
    for l in i.lines {
        by_appt.entry(&l.row.appointment).or_default().push(l);
    }
    let mut fences = Vec::new();
    let mut heading_to: HashMap<Id, (Id, Option<Ts>, bool)> = HashMap::new();
    for (appt, lines) in by_appt {
        let Some(fence) = i.fences.get(appt) else { continue };
        let status = lines[0].row.status;
        if !matches!(status, "scheduled" | "completed" | "no_show") {
            continue;
        }
        let (state, state_reason) = fence_state(&lines, i.now, window_ms);
        let prepared = PreparedFence::new(&fence.shape, 0.0).ok();
        let open = matches!(state, FenceState::Scheduled | FenceState::EnRoute);
        let mut techs = Vec::new();
        for l in &lines {
            let r = &l.row;
            let vehicle = r.tech.as_ref().and_then(|t| p.vehicle_of_tech.get(t)).cloned().or_else(|| r.vehicle.clone());
            let track = vehicle.as_ref().and_then(|v| i.tracks.get(v));
            let eta = match (open && en_route(l) && r.fence_result == FenceResult::NotArrived, track, &prepared, i.now)
            {
                (true, Some(track), Some(f), Some(now)) => {
                    let m = Motion {
                        fix_time: track.latest().time,
                        distance_m: f.distance_m(track.latest().pos()),
                        ground_mps: track.ground_speed_mps(),
                        approach_mps: track.approach_mps(|q| f.distance_m(q)),
                    };
                    Some(estimate(m, fence.window_end, now, i.map))
                }
                _ => None,
            };
            if let (Some(e), Some(v)) = (&eta, &vehicle) {
                heading_to.entry(v.clone()).or_insert((appt.clone(), e.at, e.late));
            }
            techs.push(TechView {
                id: r.tech.clone(),
                name: r.tech_name.clone(),
                vehicle,
                fence_result: r.fence_result,
                enroute_clock_in: r.enroute_clock_in,
                enroute_clock_out: r.enroute_clock_out,
                onsite_clock_in: r.onsite_clock_in,
                onsite_clock_out: r.onsite_clock_out,
                service_link_sent: r.service_link_sent,
                arrival: r.arrival.clone(),
                eta,
                failures: l.failure_texts(),
            });
        }
        let window = (fence.window_start, fence.window_end);
        let requires = i.settings.arrival_requires_enroute;
        let explanation = techs.iter().map(|t| explain(t, i.tz, window, requires)).collect();
        let mut failures: Vec<String> = Vec::new();
        for t in &techs {
            for f in &t.failures {
                if !failures.contains(f) {
                    failures.push(f.clone());
                }
            }
        }
        let etas = techs.iter().filter_map(|t| t.eta.as_ref());
        let late = etas.clone().any(|e| e.late);
        let eta = etas.filter_map(|e| e.at).min();
        let r = &lines[0].row;
        fences.push(FenceView {
            appointment: appt.clone(),
            label: fence.name.clone(),
            shape: fence.shape.clone(),
            state,
            color: state.color(),
            state_reason,
            status,
            window_start: fence.window_start,
            window_end: fence.window_end,
            location_name: r.location_name.clone(),
            job: r.job.clone(),
            job_number: r.job_number.clone(),
            quick_link: lines[0].quick_link.clone(),
            techs,
            late,
            eta,
            explanation,
            failures,
        });
    }
    let mut vehicles: Vec<VehicleView> = i
        .tracks
        .iter()
        .map(|(id, track)| {
            let f = track.latest();
            let (tech, driver) = match p.tech_of_vehicle.get(id) {
                Some((t, d)) => (t.clone(), Some(d)),
                None => (None, None),
            };
            let to = heading_to.get(id);
            VehicleView {
                id: id.clone(),
                name: st.vehicles.get(id).map(|v| v.name.clone()).filter(|n| !n.is_empty()).unwrap_or(id.to_string()),
                time: f.time,
                lat: f.lat,
                lon: f.lon,
                speed_mph: f.speed_mph,
                heading_deg: track.heading_deg().map(|h| (h * 10.0).round() / 10.0),
                stale: i.now.is_some_and(|now| is_stale(f.time, now, i.map.stale_after_s)),
                tech_name: tech.as_ref().and_then(|t| st.users.get(t)).map(|u| u.name.clone()),
                tech,
                driver_name: driver.and_then(|d| st.drivers.get(d)).map(|d| d.name.clone()),
                eta_appointment: to.map(|t| t.0.clone()),
                eta: to.and_then(|t| t.1),
                late: to.is_some_and(|t| t.2),
            }
        })
        .collect();
    vehicles.sort_by(|a, b| a.id.cmp(&b.id));
    let late = fences.iter().filter(|f| f.late).count();
    TenantView { seq: 0, tenant: i.tenant.to_string(), day: i.day, now: i.now, fences, vehicles, late }
}

/// What changed between two views of a tenant, for the live stream.
#[derive(Debug, Default, PartialEq)]
pub struct Delta<'a> {
    /// New or changed fences.
    pub fences: Vec<&'a FenceView>,
    /// Appointments no longer on the map.
    pub removed: Vec<Id>,
    /// New vehicles, and vehicles whose technician, names or ETA changed
    /// (moves travel as fixes).
    pub vehicles: Vec<&'a VehicleView>,
}

impl Delta<'_> {
    pub fn is_empty(&self) -> bool {
        self.fences.is_empty() && self.removed.is_empty() && self.vehicles.is_empty()
    }
}

fn vehicle_meta(v: &VehicleView) -> impl PartialEq + '_ {
    (&v.name, &v.tech, &v.tech_name, &v.driver_name, &v.eta_appointment, v.eta, v.late)
}

/// The changes from `old` to `new` (everything, without `old`).
pub fn diff<'a>(old: Option<&TenantView>, new: &'a TenantView) -> Delta<'a> {
    let Some(old) = old.filter(|o| o.day == new.day) else {
        return Delta {
            fences: new.fences.iter().collect(),
            removed: Vec::new(),
            vehicles: new.vehicles.iter().collect(),
        };
    };
    let before: HashMap<&Id, &FenceView> = old.fences.iter().map(|f| (&f.appointment, f)).collect();
    let after: HashMap<&Id, &FenceView> = new.fences.iter().map(|f| (&f.appointment, f)).collect();
    let vehicles_before: HashMap<&Id, &VehicleView> = old.vehicles.iter().map(|v| (&v.id, v)).collect();
    Delta {
        fences: new.fences.iter().filter(|f| before.get(&f.appointment) != Some(f)).collect(),
        removed: old
            .fences
            .iter()
            .filter(|f| !after.contains_key(&f.appointment))
            .map(|f| f.appointment.clone())
            .collect(),
        vehicles: new
            .vehicles
            .iter()
            .filter(|v| vehicles_before.get(&v.id).is_none_or(|o| vehicle_meta(o) != vehicle_meta(v)))
            .collect(),
    }
}

/// Each appointment's last fence, from the appointment tasks' states (a
/// replica mid-move may hold one twice: the first wins).
pub fn fences_of(states: &[&State]) -> BTreeMap<Id, FenceChange> {
    let mut out = BTreeMap::new();
    for st in states {
        for (id, rec) in &st.fences {
            if let Some(f) = &rec.last {
                out.entry(id.clone()).or_insert_with(|| f.clone());
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "view_tests.rs"]
pub(crate) mod tests;
