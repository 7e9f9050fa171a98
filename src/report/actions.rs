//! What became of each automated action on a report line: the Activity
//! Report's action columns, the integration article's "Fence Created",
//! "Enroute Clock-Out" and "Enroute Clock-In". Pure.
//!
//! An action is
//! - `done` when its sink reported it carried out (a clock change: at the
//!   time it was posted with, the arrival ping's);
//! - `failed` with the sink's reason when the sink's last word on it is a
//!   failure (a refused clock POST, a geofence Azuga rejected);
//! - `pending` when the engine decided it and no result has come yet;
//! - `by technician` when the technician made that clock change
//!   themself, so the integration had nothing to do;
//! - `not attempted` with the engine's reason otherwise (the first of the
//!   row's reasons that concerns the action: a Service Link failure never
//!   explains a missing clock change).
//!
//! "Enroute Clock-In" is the article's name for the On Site clock-in that
//! the integration makes together with the En Route clock-out (its
//! "Enroute Clock Events": En Route "Clock In" > "Clock Out", On-Site
//! "Clock In"); the technician's own En Route clock-in is an evidence
//! column.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::join::FenceInAzuga;
use super::rows::FenceResult;
use super::ReportRow;
use crate::engine::Reason;
use crate::geo::Shape;
use crate::model::{Activity, ClockAction, Ts};
use crate::vendor::azuga::rules::circle_of;

/// The status of one automated action (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ActionStatus {
    Done {
        #[serde(skip_serializing_if = "Option::is_none")]
        at: Option<Ts>,
    },
    Failed {
        reason: String,
    },
    Pending,
    ByTechnician {
        at: Ts,
    },
    NotAttempted {
        reason: String,
    },
}

impl ActionStatus {
    /// The status in words, times as `HH:MM` in `tz`.
    pub fn text(&self, tz: Tz) -> String {
        let hm = |t: Ts| {
            DateTime::<Utc>::from_timestamp_millis(t.millis())
                .unwrap_or_default()
                .with_timezone(&tz)
                .format("%H:%M")
                .to_string()
        };
        match self {
            ActionStatus::Done { at: Some(t) } => format!("done at {}", hm(*t)),
            ActionStatus::Done { at: None } => "done".into(),
            ActionStatus::Failed { reason } => format!("failed: {reason}"),
            ActionStatus::Pending => "pending".into(),
            ActionStatus::ByTechnician { at } => format!("not attempted: done by the technician at {}", hm(*at)),
            ActionStatus::NotAttempted { reason } => format!("not attempted: {reason}"),
        }
    }

    pub fn is_failed(&self) -> bool {
        matches!(self, ActionStatus::Failed { .. })
    }
}

/// A clock change the integration makes: which activity, in or out. What a
/// clock command's result is about ([`super::join::CommandInfo::clock`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClockStep {
    pub activity: Activity,
    pub action: ClockAction,
}

pub const ENROUTE_OUT: ClockStep = ClockStep { activity: Activity::Enroute, action: ClockAction::Out };
pub const ONSITE_IN: ClockStep = ClockStep { activity: Activity::Onsite, action: ClockAction::In };

/// The line's automated actions, in the report's column order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Actions {
    pub fence: ActionStatus,
    pub enroute_clock_out: ActionStatus,
    pub onsite_clock_in: ActionStatus,
}

/// A sink's last word on a clock change: `Ok` carried out, `Err` its
/// failure as a sentence.
pub type ClockOutcome = Result<(), String>;

/// The fence action: the engine's decision, then what the geofence sink
/// reported (`failure`: the standing geofence failure, as a sentence).
pub fn fence(row: &ReportRow, in_azuga: FenceInAzuga, failure: Option<&str>) -> ActionStatus {
    if !row.fence_created && row.fence_result == FenceResult::NoFence {
        return not_attempted(row, |r| {
            matches!(r, Reason::NotScheduled | Reason::NoJob | Reason::NoLocationCoordinates)
        });
    }
    match in_azuga {
        // Deleted after its window: it was made.
        FenceInAzuga::Yes | FenceInAzuga::No => ActionStatus::Done { at: None },
        FenceInAzuga::Failed => {
            ActionStatus::Failed { reason: failure.unwrap_or("Azuga did not create the geofence").to_string() }
        }
        FenceInAzuga::Pending => ActionStatus::Pending,
    }
}

/// The fence's shape in words, and how Azuga holds it: its geomarks are
/// circles, so a polygon goes as the circle that covers it (the processor
/// still tests the polygon).
pub fn fence_shape_text(shape: &Shape) -> String {
    match shape {
        Shape::Circle { radius_m, .. } => format!("circle of {radius_m} m"),
        Shape::Polygon { ring } => {
            let (_, r) = circle_of(shape);
            format!("polygon of {} vertices; sent to Azuga as the circle of {r} m that covers it", ring.len())
        }
    }
}

/// A clock action (`step`, one of [`ENROUTE_OUT`], [`ONSITE_IN`]) of the
/// row's technician, given the sink's last word on it.
pub fn clock(row: &ReportRow, step: ClockStep, outcome: Option<&ClockOutcome>) -> ActionStatus {
    let arrived = row.arrival.as_ref().map(|a| a.time);
    match outcome {
        Some(Ok(())) => return ActionStatus::Done { at: arrived },
        Some(Err(reason)) => return ActionStatus::Failed { reason: reason.clone() },
        None => {}
    }
    let seen = if step == ENROUTE_OUT { row.enroute_clock_out } else { row.onsite_clock_in };
    if let (Some(t), Some(a)) = (seen, arrived) {
        // The engine writes its own change into the clock line at the
        // arrival's time: decided, not reported yet.
        if t == a {
            return ActionStatus::Pending;
        }
    }
    if let Some(t) = seen {
        return ActionStatus::ByTechnician { at: t };
    }
    if arrived.is_some() {
        return ActionStatus::NotAttempted {
            reason: if step == ENROUTE_OUT {
                "no open En Route clock-in at the arrival".into()
            } else {
                "already clocked in On Site".into()
            },
        };
    }
    if row.enroute_clock_in.is_none() && row.failures.is_empty() {
        return ActionStatus::NotAttempted { reason: "no En Route clock-in".into() };
    }
    not_attempted(row, |r| !matches!(r, Reason::NoLocationEmail))
}

fn not_attempted(row: &ReportRow, concerns: impl Fn(Reason) -> bool) -> ActionStatus {
    let reason = row.failures.iter().copied().find(|r| concerns(*r));
    ActionStatus::NotAttempted {
        reason: reason.map_or_else(|| "the vehicle has not arrived".to_string(), |r| lower_first(r.text())),
    }
}

/// "Technician not paired" → "technician not paired", for after a colon.
fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) if !s.starts_with("ServiceTrade") && !s.starts_with("Azuga") => f.to_lowercase().chain(c).collect(),
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::LatLon as LatLonT;

    fn row() -> ReportRow {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/arrival_basic.yaml");
        crate::scenario::Scenario::load(&path).unwrap().run().unwrap().report.remove(0)
    }

    fn ny() -> Tz {
        "America/New_York".parse().unwrap()
    }

    #[test]
    fn a_clock_change_is_done_failed_pending_or_by_the_technician() {
        let r = row();
        let at = r.arrival.as_ref().unwrap().time;
        assert_eq!(r.enroute_clock_out, Some(at), "the engine's own clock-out is in the row");
        assert_eq!(clock(&r, ENROUTE_OUT, Some(&Ok(()))), ActionStatus::Done { at: Some(at) });
        let refused = Err("ServiceTrade clock event not created: HTTP 422: appointment locked".to_string());
        let failed = clock(&r, ENROUTE_OUT, Some(&refused));
        assert!(failed.is_failed());
        assert_eq!(failed.text(ny()), "failed: ServiceTrade clock event not created: HTTP 422: appointment locked");
        assert_eq!(clock(&r, ONSITE_IN, None), ActionStatus::Pending);
        assert!(ActionStatus::Done { at: Some(at) }.text(ny()).starts_with("done at "));

        let mut manual = r.clone();
        manual.arrival = None;
        manual.enroute_clock_out = Some(Ts(at.0 - 60_000));
        assert_eq!(clock(&manual, ENROUTE_OUT, None), ActionStatus::ByTechnician { at: Ts(at.0 - 60_000) });
        assert!(clock(&manual, ENROUTE_OUT, None).text(ny()).starts_with("not attempted: done by the technician at "));
    }

    #[test]
    fn a_polygon_fence_says_azuga_holds_the_circle_around_it() {
        let ring = vec![LatLonT::new(35.0, -80.0), LatLonT::new(35.001, -80.0), LatLonT::new(35.001, -80.001)];
        let text = fence_shape_text(&Shape::Polygon { ring });
        assert!(text.starts_with("polygon of 3 vertices; sent to Azuga as the circle of "), "{text}");
        let circle = Shape::Circle { center: LatLonT::new(35.0, -80.0), radius_m: 200.0 };
        assert_eq!(fence_shape_text(&circle), "circle of 200 m");
    }

    #[test]
    fn not_attempted_names_the_reason_that_concerns_the_action() {
        let mut r = row();
        r.arrival = None;
        r.enroute_clock_out = None;
        r.onsite_clock_in = None;
        r.failures = vec![Reason::NoLocationEmail, Reason::TechNotPaired];
        assert_eq!(clock(&r, ENROUTE_OUT, None).text(ny()), "not attempted: technician not paired with a vehicle");
        r.failures = vec![Reason::NoLocationEmail];
        assert_eq!(clock(&r, ONSITE_IN, None).text(ny()), "not attempted: the vehicle has not arrived");
        r.enroute_clock_in = None;
        r.failures.clear();
        assert_eq!(clock(&r, ONSITE_IN, None).text(ny()), "not attempted: no En Route clock-in");

        let mut unfenced = row();
        unfenced.fence_created = false;
        unfenced.fence_result = FenceResult::NoFence;
        unfenced.failures = vec![Reason::NoJob];
        assert_eq!(fence(&unfenced, FenceInAzuga::No, None).text(ny()), "not attempted: appointment has no job");
        let r = row();
        assert_eq!(fence(&r, FenceInAzuga::Yes, None), ActionStatus::Done { at: None });
        assert_eq!(fence(&r, FenceInAzuga::Pending, None), ActionStatus::Pending);
        assert_eq!(
            fence(&r, FenceInAzuga::Failed, Some("Azuga rejected geofence: HTTP 422")).text(ny()),
            "failed: Azuga rejected geofence: HTTP 422"
        );
    }
}
