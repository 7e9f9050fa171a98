//! Inclusive bounding boxes in degrees, with antimeridian wrap-around.
//!
//! A box is `lat ∈ [lat_min, lat_max]` and either `lon ∈ [lon_min, lon_max]`
//! (normal) or, when it crosses ±180°, `lon ∈ [lon_min, 180] ∪ [-180, lon_max]`
//! (then `lon_min > lon_max`). All comparisons are inclusive so that boundary
//! points are never rejected, and all are false for NaN, so a NaN point is
//! always rejected. Boxes never extend outside the valid coordinate range, so
//! an out-of-range point is rejected too.

use super::{LatLon, M_PER_DEG};

/// Relative and absolute (degrees) slack added when a box is derived from a
/// distance, to absorb rounding in that derivation. 1e-9 degree is ~0.1 mm.
const REL_SLACK: f64 = 1e-9;
const ABS_SLACK_DEG: f64 = 1e-9;

/// Above this |latitude| a box grown by a distance spans all longitudes
/// (the longitude extent blows up near the poles).
const POLAR_LAT_DEG: f64 = 89.9;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BBox {
    pub lat_min: f64,
    pub lat_max: f64,
    pub lon_min: f64,
    pub lon_max: f64,
    /// `lon_min > lon_max`: the box crosses the antimeridian.
    wraps: bool,
}

impl BBox {
    /// The whole globe.
    pub const WORLD: BBox = BBox { lat_min: -90.0, lat_max: 90.0, lon_min: -180.0, lon_max: 180.0, wraps: false };

    /// Planar min/max box of the points (no wrap-around: polygon edges are
    /// straight in the lon/lat plane). `None` for an empty input.
    pub fn of_points(points: impl IntoIterator<Item = LatLon>) -> Option<BBox> {
        let mut it = points.into_iter();
        let first = it.next()?;
        let mut b =
            BBox { lat_min: first.lat, lat_max: first.lat, lon_min: first.lon, lon_max: first.lon, wraps: false };
        for p in it {
            b.lat_min = b.lat_min.min(p.lat);
            b.lat_max = b.lat_max.max(p.lat);
            b.lon_min = b.lon_min.min(p.lon);
            b.lon_max = b.lon_max.max(p.lon);
        }
        Some(b)
    }

    /// Box `center ± (half_lat, half_lon)` degrees, clamped to the poles,
    /// wrapped across the antimeridian, and spanning all longitudes when it
    /// touches a pole or `half_lon >= 180`. Expects a valid `center` and
    /// non-negative half-widths.
    pub fn around(center: LatLon, half_lat: f64, half_lon: f64) -> BBox {
        let lat_min = (center.lat - half_lat).max(-90.0);
        let lat_max = (center.lat + half_lat).min(90.0);
        let full_lon = lat_max >= 90.0 || lat_min <= -90.0 || half_lon >= 180.0 || half_lon.is_nan();
        if full_lon {
            return BBox { lat_min, lat_max, ..BBox::WORLD };
        }
        let mut lon_min = center.lon - half_lon;
        let mut lon_max = center.lon + half_lon;
        // `half_lon < 180` and `|center.lon| <= 180`: at most one end overflows.
        if lon_min < -180.0 {
            lon_min += 360.0;
        } else if lon_max > 180.0 {
            lon_max -= 360.0;
        }
        BBox { lat_min, lat_max, lon_min, lon_max, wraps: lon_min > lon_max }
    }

    /// Inclusive containment test. False for NaN and for out-of-range points.
    /// Whether the box of segment `a`–`b` meets this box (conservative:
    /// true for a box that wraps the antimeridian).
    #[inline(always)]
    pub fn meets_segment(&self, a: LatLon, b: LatLon) -> bool {
        let lat_ok = a.lat.max(b.lat) >= self.lat_min && a.lat.min(b.lat) <= self.lat_max;
        lat_ok && (self.wraps || (a.lon.max(b.lon) >= self.lon_min && a.lon.min(b.lon) <= self.lon_max))
    }

    #[inline(always)]
    pub fn contains(&self, p: LatLon) -> bool {
        let lat_ok = p.lat >= self.lat_min && p.lat <= self.lat_max;
        if !self.wraps {
            lat_ok && p.lon >= self.lon_min && p.lon <= self.lon_max
        } else {
            lat_ok && ((p.lon >= self.lon_min && p.lon <= 180.0) || (p.lon >= -180.0 && p.lon <= self.lon_max))
        }
    }

    /// This (non-wrapping) box grown so that it contains every point whose
    /// local equirectangular distance (see `polygon::distance_to_ring_m`) to
    /// some point of the box is at most `metres`. Conservative: may be larger.
    pub fn grown_by_m(&self, metres: f64) -> BBox {
        if metres <= 0.0 {
            return *self;
        }
        let half_lat = metres / M_PER_DEG * (1.0 + REL_SLACK) + ABS_SLACK_DEG;
        let lat_min = (self.lat_min - half_lat).max(-90.0);
        let lat_max = (self.lat_max + half_lat).min(90.0);
        // The longitude scale of the projection is cos(lat of the tested
        // point); that point's latitude lies in the grown range, so the
        // smallest cosine there bounds the longitude extent.
        let max_abs_lat = lat_min.abs().max(lat_max.abs());
        if max_abs_lat >= POLAR_LAT_DEG {
            return BBox { lat_min, lat_max, ..BBox::WORLD };
        }
        let half_lon = metres / (M_PER_DEG * max_abs_lat.to_radians().cos()) * (1.0 + REL_SLACK) + ABS_SLACK_DEG;
        let (lo, hi) = if self.wraps { (self.lon_min, self.lon_max + 360.0) } else { (self.lon_min, self.lon_max) };
        if hi - lo + 2.0 * half_lon >= 360.0 {
            return BBox { lat_min, lat_max, ..BBox::WORLD };
        }
        let mut lon_min = lo - half_lon;
        let mut lon_max = hi + half_lon;
        if lon_min < -180.0 {
            lon_min += 360.0;
        }
        if lon_max > 180.0 {
            lon_max -= 360.0;
        }
        BBox { lat_min, lat_max, lon_min, lon_max, wraps: lon_min > lon_max }
    }

    /// Conservative half-widths in degrees of the box around a spherical cap
    /// of angular radius `ang_rad` centred at latitude `lat_deg`:
    /// `(half_lat, half_lon)`, with `half_lon = +inf` when the cap reaches a
    /// pole or comes close to it. On the sphere every point of the cap has
    /// `|Δlat| <= ang` and `sin|Δlon| <= sin(ang) / cos(lat)`.
    pub fn cap_half_widths(lat_deg: f64, ang_rad: f64) -> (f64, f64) {
        let half_lat = ang_rad.to_degrees() * (1.0 + REL_SLACK) + ABS_SLACK_DEG;
        if lat_deg.abs() + half_lat >= POLAR_LAT_DEG {
            return (half_lat, f64::INFINITY);
        }
        let ratio = ang_rad.sin() / lat_deg.to_radians().cos();
        if ratio.is_nan() || ratio >= 0.9 {
            return (half_lat, f64::INFINITY);
        }
        let half_lon = ratio.asin().to_degrees() * (1.0 + REL_SLACK) + ABS_SLACK_DEG;
        (half_lat, half_lon)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ll(lat: f64, lon: f64) -> LatLon {
        LatLon::new(lat, lon)
    }

    #[test]
    fn inclusive_and_nan() {
        let b = BBox::of_points([ll(1.0, 2.0), ll(3.0, 4.0)]).unwrap();
        assert!(b.contains(ll(1.0, 2.0)));
        assert!(b.contains(ll(3.0, 4.0)));
        assert!(b.contains(ll(2.0, 3.0)));
        assert!(!b.contains(ll(3.0000000001, 3.0)));
        assert!(!b.contains(ll(f64::NAN, 3.0)));
        assert!(!b.contains(ll(2.0, f64::NAN)));
        assert!(BBox::of_points(std::iter::empty()).is_none());
    }

    #[test]
    fn wraps_across_antimeridian() {
        let b = BBox::around(ll(0.0, 179.9), 0.5, 0.5);
        assert!(b.wraps);
        assert!(b.contains(ll(0.0, 179.95)));
        assert!(b.contains(ll(0.0, 180.0)));
        assert!(b.contains(ll(0.0, -180.0)));
        assert!(b.contains(ll(0.2, -179.7)));
        assert!(!b.contains(ll(0.0, -179.3)));
        assert!(!b.contains(ll(0.0, 179.3)));
        assert!(!b.contains(ll(0.0, 0.0)));
        // Out-of-range longitudes are rejected even on the wrapping side.
        assert!(!b.contains(ll(0.0, 540.0)));
        assert!(!b.contains(ll(0.0, -181.0)));
        let b = BBox::around(ll(0.0, -179.9), 0.5, 0.5);
        assert!(b.wraps);
        assert!(b.contains(ll(0.0, 179.7)));
        assert!(!b.contains(ll(0.0, 179.3)));
    }

    #[test]
    fn polar_cap_spans_all_longitudes() {
        let b = BBox::around(ll(89.95, 10.0), 0.1, 5.0);
        assert_eq!(b.lat_max, 90.0);
        assert!(b.contains(ll(89.99, -170.0)));
        let (hl, hlon) = BBox::cap_half_widths(89.95, 0.001);
        assert!(hl > 0.0 && hlon.is_infinite());
        let (_, hlon) = BBox::cap_half_widths(60.0, 200.0 / crate::geo::EARTH_RADIUS_M);
        // ~ 2 * 200 m / 111.2 km per degree at 60N.
        assert!((hlon - 0.003597).abs() < 1e-5, "{hlon}");
    }

    #[test]
    fn grown_box() {
        let b = BBox::of_points([ll(10.0, 179.99), ll(10.01, 179.9999)]).unwrap();
        let g = b.grown_by_m(100.0);
        assert!(g.wraps);
        assert!(g.contains(ll(10.0, -179.9995)));
        assert!(g.contains(ll(10.0 - 80.0 / M_PER_DEG, 179.99)));
        assert!(!g.contains(ll(10.0 - 120.0 / M_PER_DEG, 179.99)));
        assert!(!g.contains(ll(10.0, -179.99)));
        assert_eq!(b.grown_by_m(0.0), b);
        let polar = BBox::of_points([ll(89.95, 0.0), ll(89.96, 1.0)]).unwrap();
        assert_eq!(polar.grown_by_m(10.0).lon_min, -180.0);
    }
}
