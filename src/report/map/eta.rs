//! Running late, before it happens: an ETA for a technician En Route, from
//! the vehicle's distance to the fence and its recent speed, and whether
//! it passes the window's end. Pure: event time only (the fix's time and
//! the tenant's newest fix time), no wall clock.
//!
//! The rule, with `d` the straight-line distance to the fence (0 inside),
//! `rf` the tenant's road factor and the speeds from the vehicle's recent
//! path ([`super::track`]):
//!
//! - **There** (`d = 0`): the ETA is the fix's time.
//! - **Heading away**: moving (ground speed at least
//!   [`MOVING_MPS`]) and the distance grew over the recent path by at least
//!   that speed: on its course it never arrives. No ETA; late.
//! - **Moving** (towards, or the course is not known yet): ETA = fix time
//!   + `rf · d / ground speed`.
//! - **Parked** (below [`MOVING_MPS`], or no speed known): it is assumed
//!   to set off at `now` at the tenant's typical speed: ETA = `now` +
//!   `rf · d / typical`.
//!
//! Late: no ETA (heading away), an ETA after the window's end, or `now`
//! already past the window's end.

use serde::Serialize;

use super::track::MOVING_MPS;
use crate::model::{MapSettings, Ts};

/// What the ETA was based on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    There,
    Moving,
    Parked,
    HeadingAway,
}

/// A technician's estimated arrival.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Eta {
    /// `None` when heading away.
    pub at: Option<Ts>,
    /// Straight-line metres to the fence.
    pub distance_m: f64,
    /// The speed the estimate used (m/s).
    pub speed_mps: f64,
    pub basis: Basis,
    /// Arrives after the window's end (or not at all).
    pub late: bool,
}

/// What is known of the vehicle when the estimate is made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Motion {
    /// The time of the newest fix.
    pub fix_time: Ts,
    /// Straight-line metres from that fix to the fence.
    pub distance_m: f64,
    /// Recent ground speed, m/s.
    pub ground_mps: Option<f64>,
    /// Recent rate of closing in on the fence, m/s (negative: away).
    pub approach_mps: Option<f64>,
}

/// The ETA of a vehicle in `motion` for a window ending at `window_end`,
/// at event time `now` (see the module docs).
pub fn estimate(m: Motion, window_end: Ts, now: Ts, s: &MapSettings) -> Eta {
    let late_at = |at: Ts| at > window_end || now > window_end;
    let d = m.distance_m.max(0.0);
    if d == 0.0 {
        return Eta {
            at: Some(m.fix_time),
            distance_m: 0.0,
            speed_mps: 0.0,
            basis: Basis::There,
            late: late_at(m.fix_time),
        };
    }
    let travel = |speed: f64| (s.road_factor * d / speed * 1000.0).round() as i64;
    match m.ground_mps.filter(|v| *v >= MOVING_MPS) {
        Some(v) if m.approach_mps.is_some_and(|a| a <= -MOVING_MPS) => {
            Eta { at: None, distance_m: d, speed_mps: v, basis: Basis::HeadingAway, late: true }
        }
        Some(v) => {
            let at = m.fix_time.plus_millis(travel(v));
            Eta { at: Some(at), distance_m: d, speed_mps: v, basis: Basis::Moving, late: late_at(at) }
        }
        None => {
            let v = s.typical_speed_kmh / 3.6;
            let at = now.max(m.fix_time).plus_millis(travel(v));
            Eta { at: Some(at), distance_m: d, speed_mps: v, basis: Basis::Parked, late: late_at(at) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(min: i64) -> Ts {
        Ts::from_secs(1_800_000_000 + min * 60)
    }

    fn motion(distance_km: f64, ground_kmh: Option<f64>, approach_kmh: Option<f64>) -> Motion {
        Motion {
            fix_time: t(0),
            distance_m: distance_km * 1000.0,
            ground_mps: ground_kmh.map(|v| v / 3.6),
            approach_mps: approach_kmh.map(|v| v / 3.6),
        }
    }

    fn s() -> MapSettings {
        MapSettings { road_factor: 1.5, typical_speed_kmh: 40.0, ..MapSettings::default() }
    }

    #[test]
    fn a_vehicle_on_its_way_in_time_is_not_late() {
        // 10 km at 60 km/h along roads 1.5× longer: 15 minutes.
        let e = estimate(motion(10.0, Some(60.0), Some(40.0)), t(30), t(0), &s());
        assert_eq!((e.at, e.basis, e.late), (Some(t(15)), Basis::Moving, false));
        assert!((e.speed_mps - 60.0 / 3.6).abs() < 1e-9);
        // The same with the course not known yet.
        let e = estimate(motion(10.0, Some(60.0), None), t(30), t(0), &s());
        assert_eq!((e.at, e.late), (Some(t(15)), false));
    }

    #[test]
    fn too_slow_towards_the_fence_is_late_before_the_window_ends() {
        // 10 km at 12 km/h: 75 minutes, the window ends in 30.
        let e = estimate(motion(10.0, Some(12.0), Some(10.0)), t(30), t(0), &s());
        assert_eq!((e.at, e.basis, e.late), (Some(t(75)), Basis::Moving, true));
    }

    #[test]
    fn driving_away_is_late_however_close() {
        let e = estimate(motion(2.0, Some(50.0), Some(-45.0)), t(240), t(0), &s());
        assert_eq!((e.at, e.basis, e.late), (None, Basis::HeadingAway, true));
        // Sideways (the distance barely changes) is not away.
        let e = estimate(motion(2.0, Some(50.0), Some(-1.0)), t(240), t(0), &s());
        assert_eq!((e.basis, e.late), (Basis::Moving, false));
    }

    #[test]
    fn a_parked_vehicle_sets_off_now_at_the_typical_speed() {
        // 20 km at 40 km/h × 1.5 = 45 minutes from now (10 minutes after the fix).
        let e = estimate(motion(20.0, Some(0.2), Some(0.0)), t(60), t(10), &s());
        assert_eq!((e.at, e.basis, e.late), (Some(t(55)), Basis::Parked, false));
        let e = estimate(motion(20.0, None, None), t(50), t(10), &s());
        assert_eq!((e.at, e.basis, e.late), (Some(t(55)), Basis::Parked, true));
    }

    #[test]
    fn inside_the_fence_is_there_and_past_the_window_is_late() {
        let e = estimate(motion(0.0, Some(0.0), None), t(30), t(1), &s());
        assert_eq!((e.at, e.basis, e.late), (Some(t(0)), Basis::There, false));
        let e = estimate(motion(0.5, Some(60.0), Some(60.0)), t(30), t(31), &s());
        assert!(e.late, "the window ended already");
    }
}
