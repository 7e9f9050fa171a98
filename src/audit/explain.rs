//! `geoclock explain`: why each decision about one appointment was taken,
//! or what stopped it. Pure: built from an engine's state (and, after a
//! replay, from its [`Trace`]).
//!
//! From the state alone (what the report server holds) it names the
//! fence and its geometry, the window and the settings in force, and per
//! technician the Azuga match, the pairing intervals (or the gap), the
//! clock events, the pings that mattered (the arrival, the first inside
//! ping, an inside ping outside the window, the closest approach, a
//! pass-through, an exit) and, for each decision (fence, Service Link,
//! arrival, exit), the rule that fired with the command ids it emitted, or
//! the first rule that stopped it, in pipeline order (fence, Azuga match,
//! pairing, arrival, En Route, dwell). A replay adds the timeline: every
//! input that touched the appointment and every command emitted for it,
//! in input order, and the last outside ping before the first inside one.
//!
//! Rules are the engine's ([`crate::engine`]); this module only reads.
//! Times are UTC, RFC 3339, so the output is the same wherever it runs.

use serde::Serialize;

use super::trace::Trace;
use crate::engine::command::{assignment_command_id, command_id};
use crate::engine::state::{Assignment, Crossing, State};
use crate::engine::timeline::{PairedSpan, PairingGap};
use crate::engine::watches::{dedup_in_order, EVIDENCE_HORIZON_MS};
use crate::engine::{Engine, Evidence, LinkState, Reason};
use crate::geo::Shape;
use crate::model::{Activity, AppointmentStatus, ClockAction, Id, Settings, Ts};

/// Everything known about one appointment's decisions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub tenant: String,
    pub appointment: Id,
    /// `None`: the engine holds no such appointment (never seen, or
    /// retired by retention).
    pub status: Option<&'static str>,
    pub job: Option<Id>,
    pub job_number: Option<Id>,
    pub location: Option<LocationView>,
    pub window: Option<WindowView>,
    pub settings: Settings,
    pub fence: FenceView,
    pub technicians: Vec<TechView>,
    /// Input order: what touched the appointment, from a replay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Vec<Moment>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocationView {
    pub id: Id,
    pub name: String,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub email: Option<String>,
}

/// The appointment window and the span arrivals count in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowView {
    pub start: Ts,
    pub end: Ts,
    /// `start − window_hours`
    pub earliest: Ts,
    /// `end + window_hours`
    pub latest: Ts,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FenceView {
    /// Changes sent to Azuga so far (each a revision).
    pub revision: u32,
    /// `live` (Azuga holds it), `removed`, or `none` (never created).
    pub state: &'static str,
    pub name: Option<String>,
    pub shape: Option<Shape>,
    pub active_from: Option<Ts>,
    pub active_to: Option<Ts>,
    pub decision: Decision,
}

/// One technician on the appointment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TechView {
    pub user: Id,
    pub name: Option<String>,
    pub email: Option<String>,
    /// The Azuga driver matched by email.
    pub driver: Option<Id>,
    /// The driver's pairings within a day of the window.
    pub pairings: Vec<PairedSpan>,
    pub pairing_gap: Option<PairingGap>,
    pub enroute: Vec<ClockFact>,
    pub onsite: Vec<ClockFact>,
    pub arrival: Option<Evidence>,
    /// First inside ping within the window.
    pub first_inside: Option<Evidence>,
    /// First inside ping outside the window.
    pub inside_outside_window: Option<Evidence>,
    pub closest_approach: Option<Evidence>,
    pub passed_through: Option<Crossing>,
    pub exited: Option<Evidence>,
    /// From a replay: the last in-window ping outside the fence before the
    /// first inside one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_outside: Option<Evidence>,
    /// From a replay: in-window pings of the technician's vehicles tested
    /// against the fence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pings_tested: Option<u64>,
    pub decisions: Vec<Decision>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClockFact {
    pub time: Ts,
    pub action: &'static str,
}

/// A decision: what fired, or the first rule that stopped it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// `fence`, `service_link`, `arrival`, `exit`.
    pub what: &'static str,
    /// `fired`, `stopped`, or `waiting` (nothing stopped it yet).
    pub outcome: &'static str,
    /// The rule: `arrival`, or a reason code (`tech_not_paired`, ...).
    pub rule: &'static str,
    pub because: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<Ts>,
    /// Ids of the commands it emitted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
}

/// One line of a replay's timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Moment {
    /// Position in the input (0-based).
    pub input: u64,
    /// The record's time on its topic (replays of topics only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_time: Option<Ts>,
    pub what: String,
}

fn decision(what: &'static str, outcome: &'static str, rule: &'static str, because: String) -> Decision {
    Decision { what, outcome, rule, because, at: None, commands: Vec::new() }
}

fn stopped(what: &'static str, r: Reason, because: String) -> Decision {
    decision(what, "stopped", r.code(), because)
}

fn t(ts: Ts) -> String {
    ts.to_rfc3339()
}

fn ping(e: &Evidence) -> String {
    format!("ping of {} at {} ({} m from the fence centre)", e.vehicle, t(e.time), e.distance_m)
}

impl Explanation {
    /// The explanation of `appointment` (only technician `tech` when
    /// given) from `engine`'s state, with `trace`'s findings when the
    /// engine comes from a replay.
    pub fn build(engine: &Engine, appointment: &Id, tech: Option<&Id>, trace: Option<&Trace>) -> Explanation {
        let st = engine.state();
        let settings = engine.settings();
        let appt = st.appointments.get(appointment);
        let job = appt.and_then(|a| a.job.as_ref()).and_then(|j| st.jobs.get(j));
        let location = job.and_then(|j| j.location.as_ref()).and_then(|l| st.locations.get(l));
        let h = settings.window_ms();
        let window = appt.and_then(|a| a.window()).map(|(start, end)| WindowView {
            start,
            end,
            earliest: start.minus_millis(h),
            latest: end.plus_millis(h),
        });
        let fence = fence_view(engine, appointment);
        let mut techs = appt.map(|a| a.techs.clone()).unwrap_or_default();
        dedup_in_order(&mut techs);
        let technicians = techs
            .iter()
            .filter(|u| tech.is_none_or(|want| want == *u))
            .map(|u| tech_view(engine, appointment, u, window.as_ref(), &fence, trace))
            .collect();
        Explanation {
            tenant: engine.tenant().to_string(),
            appointment: appointment.clone(),
            status: appt.map(|a| a.status.as_str()),
            job: appt.and_then(|a| a.job.clone()),
            job_number: job.and_then(|j| j.number.clone()),
            location: location.map(|l| LocationView {
                id: l.id.clone(),
                name: l.name.clone(),
                lat: l.lat,
                lon: l.lon,
                email: l.email.clone(),
            }),
            window,
            settings: settings.clone(),
            fence,
            technicians,
            timeline: trace.map(|tr| tr.moments.clone()),
        }
    }
}

fn fence_view(engine: &Engine, appt: &Id) -> FenceView {
    let st = engine.state();
    let rec = st.fences.get(appt);
    let revision = rec.map_or(0, |r| r.revision);
    let spec = rec.and_then(|r| r.live.as_ref().or(r.last.as_ref()));
    let state = match rec {
        Some(r) if r.live.is_some() => "live",
        Some(r) if r.last.is_some() => "removed",
        _ => "none",
    };
    let id = |rev: u32| command_id(&[engine.tenant(), "geofence", appt.as_str(), &rev.to_string()]);
    let d = match (state, spec) {
        ("live", Some(f)) => {
            let mut d = decision(
                "fence",
                "fired",
                "fence",
                format!(
                    "scheduled with a window, job {} at location {} with coordinates: Azuga holds \"{}\" (revision {revision})",
                    f.job, f.location, f.name
                ),
            );
            d.commands.push(id(revision));
            d
        }
        ("removed", Some(f)) => {
            let why = match st.appointments.get(appt).map(|a| a.status) {
                Some(s) if s != AppointmentStatus::Scheduled => format!("the appointment is {}", s.as_str()),
                _ if st.watermark.is_some_and(|w| w > f.active_to) => {
                    format!("event time passed window end + {} h ({})", engine.settings().window_hours, t(f.active_to))
                }
                _ => "it no longer has a job with a located site".to_string(),
            };
            let mut d =
                decision("fence", "fired", "fence_removed", format!("removed from Azuga: {why} (revision {revision})"));
            d.commands.push(id(revision));
            d
        }
        _ => {
            let r = rec.and_then(|r| r.no_fence).unwrap_or(Reason::NotScheduled);
            stopped("fence", r, format!("no fence: {}", r.text()))
        }
    };
    FenceView {
        revision,
        state,
        name: spec.map(|f| f.name.clone()),
        shape: spec.map(|f| f.shape.clone()),
        active_from: spec.map(|f| f.active_from),
        active_to: spec.map(|f| f.active_to),
        decision: d,
    }
}

fn clock_facts(events: impl Iterator<Item = (Ts, ClockAction)>) -> Vec<ClockFact> {
    events.map(|(time, a)| ClockFact { time, action: a.as_str() }).collect()
}

fn tech_view(
    engine: &Engine,
    appt: &Id,
    user: &Id,
    window: Option<&WindowView>,
    fence: &FenceView,
    trace: Option<&Trace>,
) -> TechView {
    let st = engine.state();
    let u = st.users.get(user);
    let driver = st.driver_of(user).cloned();
    let (from, to) = window.map_or((Ts::MIN, Ts::MAX), |w| (w.earliest, w.latest));
    let pairings = driver
        .as_ref()
        .map(|d| {
            let reach = (from.minus_millis(EVIDENCE_HORIZON_MS), to.plus_millis(EVIDENCE_HORIZON_MS));
            st.pairings
                .effective(d)
                .into_iter()
                .filter(|(_, (f, t))| *f <= reach.1 && *t > reach.0)
                .map(|(v, (f, t))| PairedSpan { vehicle: v.clone(), from: f, to: (t != Ts::MAX).then_some(t) })
                .collect()
        })
        .unwrap_or_default();
    let pairing_gap = driver.as_ref().filter(|_| window.is_some()).and_then(|d| st.pairings.gap(d, from, to));
    let empty = Assignment::default();
    let a = st.assignment(appt, user).unwrap_or(&empty);
    let mut view = TechView {
        user: user.clone(),
        name: u.map(|u| u.name.clone()),
        email: u.and_then(|u| u.email.clone()),
        driver,
        pairings,
        pairing_gap,
        enroute: clock_facts(a.enroute.events().copied()),
        onsite: clock_facts(a.onsite.events().copied()),
        arrival: a.arrival.clone(),
        first_inside: a.inside_in_window.clone(),
        inside_outside_window: a.inside_outside_window.clone(),
        closest_approach: a.closest.clone(),
        passed_through: a.passed_through.clone(),
        exited: a.exited.clone(),
        last_outside: trace.and_then(|tr| tr.last_outside.get(user).cloned()),
        pings_tested: trace.map(|tr| tr.pings_tested.get(user).copied().unwrap_or(0)),
        decisions: Vec::new(),
    };
    let ids = |activity: Activity, action: ClockAction| {
        assignment_command_id(
            &[engine.tenant(), "clock", appt.as_str(), user.as_str(), activity.as_str(), action.as_str()],
            a.generation,
        )
    };
    view.decisions.push(arrival_decision(engine, st, appt, a, &view, window, fence, &ids));
    view.decisions.push(link_decision(engine, appt, user, a));
    if engine.settings().auto_clock_out_on_exit && a.arrival.is_some() {
        view.decisions.push(match &a.exited {
            Some(e) => {
                let mut d = decision(
                    "exit",
                    "fired",
                    "exit",
                    format!(
                        "{} was outside the fence grown by {} m and pings stayed out {} s: On Site out",
                        ping(e),
                        engine.settings().exit_buffer_m,
                        engine.settings().min_exit_dwell_s
                    ),
                );
                d.at = Some(e.time);
                d.commands.push(ids(Activity::Onsite, ClockAction::Out));
                d
            }
            None => match &a.leaving {
                Some(l) => decision(
                    "exit",
                    "waiting",
                    "exit_dwell",
                    format!(
                        "{} was outside the fence grown by {} m; pings must stay out {} s (min_exit_dwell_s)",
                        ping(l),
                        engine.settings().exit_buffer_m,
                        engine.settings().min_exit_dwell_s
                    ),
                ),
                None => decision(
                    "exit",
                    "waiting",
                    "exit",
                    format!(
                        "no ping newer than the arrival outside the fence grown by {} m",
                        engine.settings().exit_buffer_m
                    ),
                ),
            },
        });
    }
    view
}

#[allow(clippy::too_many_arguments)]
fn arrival_decision(
    engine: &Engine,
    st: &State,
    appt: &Id,
    a: &Assignment,
    v: &TechView,
    window: Option<&WindowView>,
    fence: &FenceView,
    ids: &dyn Fn(Activity, ClockAction) -> String,
) -> Decision {
    let s = engine.settings();
    let what = "arrival";
    if fence.state == "none" && a.arrival.is_none() {
        let r = st.fences.get(appt).and_then(|f| f.no_fence).unwrap_or(Reason::NotScheduled);
        return stopped(what, r, format!("no fence to arrive in: {}", r.text()));
    }
    let status = st.appointments.get(appt).map(|x| x.status);
    let live = matches!(status, Some(AppointmentStatus::Scheduled | AppointmentStatus::Completed));
    if !live && a.arrival.is_none() {
        let r = Reason::NotScheduled;
        return stopped(what, r, format!("the appointment is {}", status.map_or("unknown", |x| x.as_str())));
    }
    let Some(driver) = &v.driver else {
        let r = Reason::TechNotFoundInAzuga;
        let email = v.email.as_deref().map_or("no email".to_string(), |e| format!("the email {e}"));
        return stopped(what, r, format!("no Azuga driver has {email}"));
    };
    if let Some(g) = &v.pairing_gap {
        let before = g
            .before
            .as_ref()
            .map(|p| format!("; before: {} until {}", p.vehicle, p.to.map(t).unwrap_or_else(|| "open".into())));
        let after = g.after.as_ref().map(|p| format!("; after: {} from {}", p.vehicle, t(p.from)));
        return stopped(
            what,
            Reason::TechNotPaired,
            format!(
                "driver {driver} drove no vehicle from {} to {}{}{}",
                t(g.from),
                t(g.to),
                before.unwrap_or_default(),
                after.unwrap_or_default()
            ),
        );
    }
    if let Some(e) = &a.arrival {
        let enroute = a.enroute.events().filter(|(x, c)| *c == ClockAction::In && *x <= e.time).last().map(|x| x.0);
        let mut d = decision(
            what,
            "fired",
            "arrival",
            format!(
                "{} was inside the fence within the window, driver {driver} paired with {}{}{}",
                ping(e),
                e.vehicle,
                match (s.arrival_requires_enroute, enroute) {
                    (true, Some(x)) => format!(", En Route open since {}", t(x)),
                    _ => String::new(),
                },
                if s.min_dwell_s > 0 { format!(", inside for at least {} s", s.min_dwell_s) } else { String::new() }
            ),
        );
        d.at = Some(e.time);
        if a.enroute.events().any(|x| *x == (e.time, ClockAction::Out)) {
            d.commands.push(ids(Activity::Enroute, ClockAction::Out));
        }
        if a.onsite.first(ClockAction::In) == Some(e.time) {
            d.commands.push(ids(Activity::Onsite, ClockAction::In));
        }
        return d;
    }
    if let Some(e) = &a.inside_in_window {
        if s.arrival_requires_enroute && !a.enroute.open_at(e.time) {
            let when = match a.enroute.first(ClockAction::In) {
                Some(x) => format!("En Route in only at {}", t(x)),
                None => "no En Route clock-in at all".to_string(),
            };
            let mut d = stopped(
                what,
                Reason::NoEnrouteClockIn,
                format!(
                    "{} was inside the fence within the window, but no En Route clock-in was open then ({when})",
                    ping(e)
                ),
            );
            d.at = Some(e.time);
            return d;
        }
        let mut d = decision(
            what,
            "waiting",
            "min_dwell",
            format!(
                "inside from {}, but no run of inside pings spanned min_dwell_s = {} s without an outside ping between",
                t(e.time),
                s.min_dwell_s
            ),
        );
        d.at = Some(e.time);
        return d;
    }
    if let Some(e) = &a.inside_outside_window {
        let span = window.map(|w| format!(" ({} to {})", t(w.earliest), t(w.latest))).unwrap_or_default();
        let mut d = stopped(
            what,
            Reason::ArrivedOutsideWindow,
            format!("{} was inside the fence, but only outside the window{span}", ping(e)),
        );
        d.at = Some(e.time);
        return d;
    }
    let r = Reason::VehicleDidNotArrive;
    let mut d = match (&a.passed_through, &a.closest) {
        (Some(c), _) => stopped(
            what,
            r,
            format!(
                "no ping inside; the straight path of {} between {} and {} crossed the fence (sparse GPS)",
                c.vehicle,
                t(c.from),
                t(c.to)
            ),
        ),
        (None, Some(e)) => {
            let size = match &fence.shape {
                Some(Shape::Circle { radius_m, .. }) => format!(" (a circle of {radius_m} m)"),
                _ => String::new(),
            };
            stopped(what, r, format!("no ping inside; closest approach: {}{size}", ping(e)))
        }
        (None, None) => stopped(
            what,
            r,
            format!(
                "no ping of {} within {} m of the fence during the window",
                v.pairings.iter().map(|p| p.vehicle.to_string()).collect::<Vec<_>>().join(", "),
                crate::engine::arrival::NEAR_M
            ),
        ),
    };
    d.at = a.closest.as_ref().map(|e| e.time);
    d
}

fn link_decision(engine: &Engine, appt: &Id, user: &Id, a: &Assignment) -> Decision {
    let what = "service_link";
    if !engine.settings().service_link {
        return decision(what, "stopped", "service_link_disabled", "the tenant's service_link setting is off".into());
    }
    match &a.link {
        LinkState::Sent { at, vehicle, to } => {
            let mut d = decision(
                what,
                "fired",
                "service_link",
                format!("En Route in at {}: Service Link to {to} with a TrackMe link for {vehicle}", t(*at)),
            );
            d.at = Some(*at);
            d.commands.push(assignment_command_id(
                &[engine.tenant(), "service_link", appt.as_str(), user.as_str()],
                a.generation,
            ));
            d
        }
        LinkState::Failed(r) => stopped(what, *r, r.text().to_string()),
        LinkState::NotAttempted => decision(what, "waiting", "no_enroute_clock_in", "no En Route clock-in".into()),
    }
}
