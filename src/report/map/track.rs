//! Vehicle tracks: each vehicle's newest fix and its recent path, from
//! which the map reads heading, speed and course. Pure: fixes in, facts
//! out, times are the fixes' own.
//!
//! Invariants:
//! - `recent` is sorted by time, one fix per time (a duplicate replaces
//!   nothing), never empty, and spans at most the window given to
//!   [`Track::apply`] back from its newest fix;
//! - a late fix (older than the newest) never moves the vehicle: it only
//!   joins the recent path when it falls inside the window.

use serde::{Deserialize, Serialize};

use crate::geo::{haversine_m, LatLon};
use crate::model::{Ping, Ts};

/// Below this a vehicle counts as parked (m/s, about 3.6 km/h: GPS jitter
/// of a parked vehicle stays under it over a minute).
pub const MOVING_MPS: f64 = 1.0;
/// Speed and course need fixes spanning at least this long.
pub const MIN_SPAN_MS: i64 = 30_000;
/// Heading is taken between positions at least this far apart (jitter).
const MIN_HEADING_M: f64 = 5.0;
const MPS_PER_MPH: f64 = 0.447_04;

/// One position report.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fix {
    pub time: Ts,
    pub lat: f64,
    pub lon: f64,
    /// As the tracker reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_mph: Option<f64>,
}

impl Fix {
    pub fn pos(&self) -> LatLon {
        LatLon::new(self.lat, self.lon)
    }
}

impl From<&Ping> for Fix {
    fn from(p: &Ping) -> Fix {
        Fix { time: p.time, lat: p.lat, lon: p.lon, speed_mph: p.speed_mph }
    }
}

/// A vehicle's newest fix and recent path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Track {
    recent: Vec<Fix>,
    /// The last course over ground, kept while the vehicle stands still.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    heading: Option<f64>,
}

impl Track {
    pub fn new(fix: Fix) -> Track {
        Track { recent: vec![fix], heading: None }
    }

    /// The newest fix.
    pub fn latest(&self) -> &Fix {
        // Never empty (module invariant).
        &self.recent[self.recent.len() - 1]
    }

    /// The recent path, oldest first.
    pub fn recent(&self) -> &[Fix] {
        &self.recent
    }

    /// Adds a fix; `window_ms` bounds the recent path. Whether the newest
    /// fix changed (the vehicle moved on the map).
    pub fn apply(&mut self, fix: Fix, window_ms: i64) -> bool {
        let newest = self.latest().time;
        match self.recent.binary_search_by_key(&fix.time, |f| f.time) {
            Ok(_) => return false,
            Err(i) if i == self.recent.len() => {
                let from = self.latest().pos();
                if haversine_m(from, fix.pos()) >= MIN_HEADING_M {
                    self.heading = Some(bearing_deg(from, fix.pos()));
                }
                self.recent.push(fix);
            }
            Err(_) if fix.time.millis() < newest.millis() - window_ms => return false,
            Err(i) => self.recent.insert(i, fix),
        }
        let cutoff = self.latest().time.millis() - window_ms;
        let keep_from = self.recent.partition_point(|f| f.time.millis() < cutoff);
        self.recent.drain(..keep_from);
        fix.time > newest
    }

    /// Course over ground in degrees clockwise from north, from the last
    /// move of at least a few metres; `None` before the first.
    pub fn heading_deg(&self) -> Option<f64> {
        self.heading
    }

    /// Recent ground speed (m/s): path length over elapsed time when the
    /// recent fixes span at least [`MIN_SPAN_MS`], else the speed the
    /// newest fix reported, else `None`.
    pub fn ground_speed_mps(&self) -> Option<f64> {
        let (first, last) = (self.recent[0], *self.latest());
        let span = last.time.millis() - first.time.millis();
        if span >= MIN_SPAN_MS {
            let path: f64 = self.recent.windows(2).map(|w| haversine_m(w[0].pos(), w[1].pos())).sum();
            return Some(path / (span as f64 / 1000.0));
        }
        last.speed_mph.map(|mph| mph * MPS_PER_MPH)
    }

    /// How fast the vehicle recently closed in on something (m/s; negative
    /// when it moved away): the change of `distance_m` between the oldest
    /// and the newest recent fix over the time between them. `None` when
    /// the recent fixes span less than [`MIN_SPAN_MS`].
    pub fn approach_mps(&self, distance_m: impl Fn(LatLon) -> f64) -> Option<f64> {
        let (first, last) = (self.recent[0], *self.latest());
        let span = last.time.millis() - first.time.millis();
        (span >= MIN_SPAN_MS).then(|| (distance_m(first.pos()) - distance_m(last.pos())) / (span as f64 / 1000.0))
    }
}

/// Initial great-circle bearing from `a` to `b`, degrees in `[0, 360)`.
pub fn bearing_deg(a: LatLon, b: LatLon) -> f64 {
    let (p1, p2) = (a.lat.to_radians(), b.lat.to_radians());
    let dl = (b.lon - a.lon).to_radians();
    let y = dl.sin() * p2.cos();
    let x = p1.cos() * p2.sin() - p1.sin() * p2.cos() * dl.cos();
    y.atan2(x).to_degrees().rem_euclid(360.0)
}

/// Whether a fix taken at `fix` is stale at event time `now`.
pub fn is_stale(fix: Ts, now: Ts, stale_after_s: u64) -> bool {
    now.millis() - fix.millis() > stale_after_s as i64 * 1000
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::EARTH_RADIUS_M;

    const M_PER_DEG: f64 = EARTH_RADIUS_M * std::f64::consts::PI / 180.0;

    fn fix(s: i64, north_m: f64) -> Fix {
        Fix { time: Ts::from_secs(s), lat: 35.0 + north_m / M_PER_DEG, lon: -80.0, speed_mph: None }
    }

    #[test]
    fn the_newest_fix_moves_the_vehicle_and_late_ones_do_not() {
        let mut t = Track::new(fix(100, 0.0));
        assert!(t.apply(fix(160, 600.0), 600_000));
        assert_eq!(t.latest().time, Ts::from_secs(160));
        assert!(!t.apply(fix(130, 300.0), 600_000), "a late fix");
        assert_eq!(t.latest().time, Ts::from_secs(160));
        assert_eq!(t.recent().len(), 3, "but it joins the path");
        assert!(!t.apply(fix(160, 999.0), 600_000), "a duplicate time");
        assert_eq!(t.latest().lat, fix(160, 600.0).lat, "changes nothing");
        assert!(!t.apply(fix(-1000, 0.0), 600_000), "older than the window");
        assert_eq!(t.recent().len(), 3);
        assert!(t.apply(fix(1000, 700.0), 600_000));
        assert_eq!(t.recent().iter().map(|f| f.time.millis() / 1000).collect::<Vec<_>>(), vec![1000]);
    }

    #[test]
    fn speed_heading_and_course_come_from_the_recent_path() {
        // North at 10 m/s for two minutes.
        let mut t = Track::new(fix(0, 0.0));
        assert_eq!(t.ground_speed_mps(), None);
        assert_eq!(t.heading_deg(), None);
        for s in 1..=12 {
            t.apply(fix(s * 10, s as f64 * 100.0), 600_000);
        }
        assert!((t.ground_speed_mps().unwrap() - 10.0).abs() < 0.01);
        assert!(t.heading_deg().unwrap() < 0.01 || t.heading_deg().unwrap() > 359.99);
        // Towards a point 5 km north: closing at 10 m/s; away from one south.
        let north = LatLon::new(35.0 + 5000.0 / M_PER_DEG, -80.0);
        let south = LatLon::new(35.0 - 5000.0 / M_PER_DEG, -80.0);
        assert!((t.approach_mps(|p| haversine_m(p, north)).unwrap() - 10.0).abs() < 0.01);
        assert!((t.approach_mps(|p| haversine_m(p, south)).unwrap() + 10.0).abs() < 0.01);
        // Standing still keeps the heading; jitter does not turn it.
        t.apply(Fix { lon: -80.0 + 1.0 / M_PER_DEG, ..fix(130, 1200.0) }, 600_000);
        assert!(t.heading_deg().unwrap() < 0.01 || t.heading_deg().unwrap() > 359.99);
        // Too short a span: the reported speed.
        let mut short = Track::new(fix(0, 0.0));
        short.apply(Fix { speed_mph: Some(10.0), ..fix(10, 100.0) }, 600_000);
        assert!((short.ground_speed_mps().unwrap() - 4.4704).abs() < 1e-9);
        assert_eq!(short.approach_mps(|p| haversine_m(p, north)), None);
    }

    #[test]
    fn bearings_and_staleness() {
        let o = LatLon::new(0.0, 0.0);
        assert!((bearing_deg(o, LatLon::new(0.0, 1.0)) - 90.0).abs() < 1e-9);
        assert!((bearing_deg(o, LatLon::new(-1.0, 0.0)) - 180.0).abs() < 1e-9);
        assert!((bearing_deg(o, LatLon::new(0.0, -1.0)) - 270.0).abs() < 1e-9);
        assert!(!is_stale(Ts::from_secs(0), Ts::from_secs(600), 600));
        assert!(is_stale(Ts::from_secs(0), Ts::from_secs(601), 600));
    }
}
