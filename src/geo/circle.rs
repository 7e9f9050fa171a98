//! Circle fences: exact great-circle test with a flat-earth fast path.
//!
//! # Definition
//!
//! `contains(p)` ⇔ `haversine_m(center, p) <= radius_m`, for every valid `p`
//! (invalid or NaN points are rejected by the bounding box).
//!
//! # Fast path and its error bound
//!
//! Let `φ0` be the centre latitude, `c0 = cos φ0`, `s0 = sin φ0`,
//! `t = tan φ0`, and for a point let `u = Δφ`, `v = Δλ` (radians, `Δλ`
//! normalised into [-π, π]), `φ = φ0 + u`. With `R = EARTH_RADIUS_M`, the
//! great-circle central angle `c` satisfies the haversine identity
//!
//! ```text
//! 4 sin²(c/2) = 4 sin²(u/2) + c0 cos φ · 4 sin²(v/2)              (1)
//! ```
//!
//! The fast path uses the flat-earth square with a first-order latitude
//! correction of the longitude scale (`cos φ ≈ c0 (1 - t u)`):
//!
//! ```text
//! F = u² + c0² v² (1 - t u)      (computed in degrees²: Δlat² + Δlon² (k1 - k2 Δlat))
//! ```
//!
//! Write `c0 cos φ = c0² (cos u - t sin u)` and use, for all real `x`,
//! `|4 sin²(x/2) - x²| <= x⁴/12`, `|cos u - 1| <= u²/2`, `|sin u - u| <= |u|³/6`:
//!
//! ```text
//! 4a - F = [4 sin²(u/2) - u²]
//!        + c0² [ (cos u - t sin u)(4 sin²(v/2) - v²) + v² ((cos u - 1) - t (sin u - u)) ]
//! ```
//!
//! where `4a` is the right side of (1). Every point that passes the bounding
//! box has `|u| <= U` and `|v| <= V` (the box half-widths). With `u² <= F`
//! and `c0² v² <= F / (1 - |t| U)`:
//!
//! ```text
//! |4a - F| / F <= η := U²/12 + [ (1 + |t|U) V²/12 + U²/2 + |t| U³/6 ] / (1 - |t| U)
//! ```
//!
//! Finally `c² (1 - c²/12) <= 4 sin²(c/2) = 4a <= c²`, so with `C² >= c²` over
//! the box, `c² / F ∈ [1 - η, (1 + η) / (1 - C²/12)]`. Hence with
//! `ε_lo = η`, `ε_hi = (1 + η)/(1 - C²/12) - 1`, and `d = R c`:
//!
//! * `R² F (1 + ε_hi) <= r²` ⇒ `d <= r`  (clearly inside),
//! * `R² F (1 - ε_lo) >  r²` ⇒ `d >  r`  (clearly outside).
//!
//! (Both thresholds are precomputed and divided by `(R π/180)²`, so the hot
//! path compares `F` in squared degrees: two subtractions, four
//! multiplications, one subtraction and the comparisons.)
//!
//! To also cover floating-point rounding of both this computation and of
//! [`haversine_m`] (relative ~1e-15, plus ~1e-8 m absolute from wrapping the
//! longitude difference), the thresholds use `r ∓ 1e-6 m` and an extra
//! relative `1e-12`. Between the thresholds the exact haversine decides, so
//! the answer always equals `haversine_m(center, p) <= radius_m`.
//!
//! Magnitudes: `U <= r/R <= 2.53e-3` for `r <= MAX_RADIUS_M`. For a 200 m
//! circle, `ε <= 1.4e-9` up to 60° and `6e-9` at 80°, so the undecided band
//! is dominated by the 1e-6 m slack (about ±1.1 µm around the rim); for a
//! 16 km circle, `ε_hi ≈ 8.6e-6` at 60° (band -7 cm / +5 cm) and `4.1e-5` at
//! 80° (band -33 cm / +18 cm). The first-order correction removes the
//! dominant `|t| U` term that plain `cos φ0` scaling would have (0.7 % of
//! the distance at 80°, a band of about ±115 m at 16 km).
//! Above |80°| (where `t` and `V` grow without bound near the pole) the fast
//! path is disabled and every point inside the box goes to haversine.
//! `circle::tests::fast_path_bound_holds` checks the bound numerically.

use super::bbox::BBox;
use super::{haversine_m, normalize_dlon, LatLon, EARTH_RADIUS_M, M_PER_DEG};

/// Above this |latitude| of the centre, always use haversine.
const FAST_PATH_MAX_LAT_DEG: f64 = 80.0;
/// Absolute slack (metres) covering rounding of the distance computations.
const ABS_SLACK_M: f64 = 1e-6;
/// Relative slack covering rounding of the distance computations.
const REL_SLACK: f64 = 1e-12;

#[derive(Debug, Clone)]
pub(crate) struct PreparedCircle {
    center: LatLon,
    radius_m: f64,
    bbox: BBox,
    /// `cos² φ0`.
    k1: f64,
    /// `cos φ0 · sin φ0 · π/180` (per degree of Δlat).
    k2: f64,
    /// `F <= in_sq` (squared degrees) ⇒ inside.
    in_sq: f64,
    /// `F > out_sq` (squared degrees) ⇒ outside.
    out_sq: f64,
}

/// Relative error bounds `(ε_lo, ε_hi)` of `c² / F` (see the module docs) for
/// a centre at `lat_deg` and box half-widths `u_max`, `v_max` in radians.
/// `None` when the fast path must not be used.
pub(crate) fn flat_error_bounds(lat_deg: f64, u_max: f64, v_max: f64) -> Option<(f64, f64)> {
    if lat_deg.is_nan() || lat_deg.abs() > FAST_PATH_MAX_LAT_DEG || !v_max.is_finite() || !u_max.is_finite() {
        return None;
    }
    let t = lat_deg.to_radians().tan().abs();
    let tu = t * u_max;
    if tu >= 0.5 {
        return None;
    }
    let (u2, v2) = (u_max * u_max, v_max * v_max);
    let eta = u2 / 12.0 + ((1.0 + tu) * v2 / 12.0 + u2 / 2.0 + tu * u2 / 6.0) / (1.0 - tu);
    // C² bound: c² <= 4a / (1 - c²/12) with 4a <= F (1 + η) <= (U² + V²(1 + tU)) (1 + η);
    // the 1.01 factor covers the (tiny) 1/(1 - c²/12).
    let c2 = 1.01 * (1.0 + eta) * (u2 + v2 * (1.0 + tu));
    if c2 >= 1.0 {
        return None;
    }
    let eps_hi = (1.0 + eta) / (1.0 - c2 / 12.0) - 1.0;
    Some((eta, eps_hi))
}

impl PreparedCircle {
    /// Expects a validated centre and radius.
    pub fn new(center: LatLon, radius_m: f64) -> Self {
        let ang = radius_m / EARTH_RADIUS_M;
        let (half_lat, half_lon) = BBox::cap_half_widths(center.lat, ang);
        let bbox = BBox::around(center, half_lat, half_lon);
        let phi0 = center.lat.to_radians();
        let (s0, c0) = phi0.sin_cos();
        let k1 = c0 * c0;
        let k2 = c0 * s0 * (std::f64::consts::PI / 180.0);
        // Box half-widths in radians, padded a little for the rounding of the
        // box edges themselves.
        let u_max = half_lat.to_radians() * (1.0 + 1e-6);
        let v_max = half_lon.to_radians() * (1.0 + 1e-6);
        let (in_sq, out_sq) = match flat_error_bounds(center.lat, u_max, v_max) {
            Some((eps_lo, eps_hi)) => {
                // Thresholds on R² F in m², then converted to squared degrees.
                let m2 = M_PER_DEG * M_PER_DEG;
                let r_in = radius_m - ABS_SLACK_M;
                let in_sq =
                    if r_in > 0.0 { r_in * r_in * (1.0 - REL_SLACK) / (1.0 + eps_hi) / m2 } else { f64::NEG_INFINITY };
                let r_out = radius_m + ABS_SLACK_M;
                let out_sq = r_out * r_out * (1.0 + REL_SLACK) / (1.0 - eps_lo) / m2;
                (in_sq, out_sq)
            }
            None => (f64::NEG_INFINITY, f64::INFINITY),
        };
        Self { center, radius_m, bbox, k1, k2, in_sq, out_sq }
    }

    /// Corrected flat-earth squared distance `F` in squared degrees (see
    /// module docs).
    #[inline(always)]
    fn flat_sq_deg2(&self, p: LatLon) -> f64 {
        let dlat = p.lat - self.center.lat;
        let dlon = normalize_dlon(p.lon - self.center.lon);
        dlat * dlat + dlon * dlon * (self.k1 - self.k2 * dlat)
    }

    /// The fast-path verdict alone: `Some(inside)` when decided, `None` when
    /// the point is in the band (or the fast path is off). Assumes `p` passed
    /// the bounding box.
    #[inline(always)]
    fn fast_verdict(&self, p: LatLon) -> Option<bool> {
        let f = self.flat_sq_deg2(p);
        if f <= self.in_sq {
            Some(true)
        } else if f > self.out_sq {
            Some(false)
        } else {
            None
        }
    }

    /// `haversine_m(center, p) <= radius_m`, boundary inside; false for NaN
    /// or out-of-range points.
    #[cfg(test)]
    pub fn contains(&self, p: LatLon) -> bool {
        self.bbox.contains(p) && self.contains_in_bbox(p)
    }

    /// [`PreparedCircle::contains`] for a point already known to be in
    /// [`PreparedCircle::bbox`].
    #[inline(always)]
    pub fn contains_in_bbox(&self, p: LatLon) -> bool {
        match self.fast_verdict(p) {
            Some(v) => v,
            None => self.contains_slow(p),
        }
    }

    /// The conservative degree box every contained point is in.
    pub fn bbox(&self) -> &BBox {
        &self.bbox
    }

    #[inline(never)]
    fn contains_slow(&self, p: LatLon) -> bool {
        haversine_m(self.center, p) <= self.radius_m
    }

    /// `haversine_m(center, p) <= radius_m + buffer_m` for a valid `p`.
    pub fn within_m(&self, p: LatLon, buffer_m: f64) -> bool {
        p.is_valid() && haversine_m(self.center, p) <= self.radius_m + buffer_m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::MAX_RADIUS_M;

    fn ll(lat: f64, lon: f64) -> LatLon {
        LatLon::new(lat, lon)
    }

    /// Point at distance `d` metres from `c` along initial bearing `brg` (rad).
    pub(crate) fn destination(c: LatLon, d: f64, brg: f64) -> LatLon {
        let ang = d / EARTH_RADIUS_M;
        let (p1, l1) = (c.lat.to_radians(), c.lon.to_radians());
        let p2 = (p1.sin() * ang.cos() + p1.cos() * ang.sin() * brg.cos()).asin();
        let l2 = l1 + (brg.sin() * ang.sin() * p1.cos()).atan2(ang.cos() - p1.sin() * p2.sin());
        let mut lon = l2.to_degrees();
        if lon > 180.0 {
            lon -= 360.0;
        } else if lon < -180.0 {
            lon += 360.0;
        }
        ll(p2.to_degrees(), lon)
    }

    fn reference(c: &PreparedCircle, p: LatLon) -> bool {
        p.is_valid() && haversine_m(c.center, p) <= c.radius_m
    }

    #[test]
    fn equator_and_60n() {
        for lat in [0.0, 60.0, -60.0, 45.0] {
            let center = ll(lat, 10.0);
            let c = PreparedCircle::new(center, 200.0);
            assert!(c.contains(center));
            for k in 0..64 {
                let brg = k as f64 * std::f64::consts::TAU / 64.0;
                assert!(c.contains(destination(center, 199.9, brg)), "lat {lat} brg {brg}");
                assert!(!c.contains(destination(center, 200.1, brg)), "lat {lat} brg {brg}");
                for d in [0.0, 50.0, 199.999, 200.0, 200.001, 250.0, 400.0] {
                    let p = destination(center, d, brg);
                    assert_eq!(c.contains(p), reference(&c, p), "lat {lat} d {d}");
                }
            }
        }
    }

    #[test]
    fn antimeridian() {
        let c = PreparedCircle::new(ll(0.0, 179.999), 500.0);
        // 0.002 degrees ~ 222 m away, across the antimeridian.
        assert!(c.contains(ll(0.0, -179.999)));
        assert!(c.contains(ll(0.0, 180.0)));
        assert!(c.contains(ll(0.0, -180.0)));
        assert!(!c.contains(ll(0.0, -179.99)));
        let c = PreparedCircle::new(ll(-40.0, -179.9995), 200.0);
        assert!(c.contains(ll(-40.0, 179.999)));
        assert!(!c.contains(ll(-40.0, 179.99)));
    }

    #[test]
    fn nan_and_invalid_points() {
        let c = PreparedCircle::new(ll(0.0, 180.0), MAX_RADIUS_M);
        for p in [
            ll(f64::NAN, 180.0),
            ll(0.0, f64::NAN),
            ll(f64::INFINITY, 0.0),
            ll(0.0, 540.0),
            ll(0.0, -540.0),
            ll(90.1, 180.0),
        ] {
            assert!(!c.contains(p), "{p:?}");
            assert!(!c.within_m(p, 100.0), "{p:?}");
        }
    }

    #[test]
    fn poles_and_high_latitudes() {
        // A circle around the north pole contains points at every longitude.
        let c = PreparedCircle::new(ll(90.0, 0.0), 1000.0);
        assert!(c.contains(ll(89.995, -179.0)));
        assert!(c.contains(ll(89.995, 77.0)));
        assert!(!c.contains(ll(89.98, 77.0)));
        let c = PreparedCircle::new(ll(89.95, 30.0), MAX_RADIUS_M);
        assert!(c.contains(ll(89.99, -150.0)));
        for lat in [80.0, 80.5, 85.0, 89.0, -89.9] {
            let center = ll(lat, -20.0);
            let c = PreparedCircle::new(center, 5000.0);
            for k in 0..32 {
                let brg = k as f64 * std::f64::consts::TAU / 32.0;
                for d in [4999.0, 5000.0, 5001.0, 9000.0] {
                    let p = destination(center, d, brg);
                    assert_eq!(c.contains(p), reference(&c, p), "lat {lat} d {d}");
                }
            }
        }
    }

    #[test]
    fn fast_path_is_consistent_with_haversine_on_rim() {
        // Points 1e-6 relative off the rim, where the fast path must defer or
        // agree with the exact answer.
        for lat in [-80.0, -60.0, -20.0, 0.0, 33.3, 60.0, 79.9, 80.0] {
            for r in [10.0, 200.0, 3000.0, MAX_RADIUS_M] {
                let center = ll(lat, 179.9);
                let c = PreparedCircle::new(center, r);
                for k in 0..90 {
                    let brg = k as f64 * std::f64::consts::TAU / 90.0;
                    for f in [0.5, 1.0 - 1e-6, 1.0 + 1e-6, 1.5, 3.0] {
                        let p = destination(center, r * f, brg);
                        let want = reference(&c, p);
                        assert_eq!(c.contains(p), want, "lat {lat} r {r} f {f}");
                        if let (Some(v), true) = (c.fast_verdict(p), c.bbox.contains(p)) {
                            assert_eq!(v, want, "fast path wrong: lat {lat} r {r} f {f}");
                        }
                    }
                }
            }
        }
    }

    /// The proven bound `c²/F ∈ [1 - ε_lo, 1 + ε_hi]` holds on a dense grid of
    /// each box (corners included), and is not absurdly loose.
    #[test]
    fn fast_path_bound_holds() {
        for lat in [0.0, 30.0, 60.0, -70.0, 80.0, -80.0] {
            for r in [10.0, 200.0, 2000.0, MAX_RADIUS_M] {
                let center = ll(lat, 0.0);
                let c = PreparedCircle::new(center, r);
                let ang = r / EARTH_RADIUS_M;
                let (hl, hn) = BBox::cap_half_widths(lat, ang);
                let (eps_lo, eps_hi) =
                    flat_error_bounds(lat, hl.to_radians() * (1.0 + 1e-6), hn.to_radians() * (1.0 + 1e-6)).unwrap();
                let mut worst: f64 = 0.0;
                let n = 40;
                for i in 0..=n {
                    for j in 0..=n {
                        if i == n / 2 && j == n / 2 {
                            continue;
                        }
                        let dlat = hl * (2.0 * i as f64 / n as f64 - 1.0);
                        let dlon = hn * (2.0 * j as f64 / n as f64 - 1.0);
                        let p = ll(lat + dlat, dlon);
                        let d = haversine_m(center, p);
                        let f = c.flat_sq_deg2(p) * M_PER_DEG * M_PER_DEG;
                        let ratio = d * d / f;
                        assert!(ratio >= 1.0 - eps_lo - 1e-12, "lat {lat} r {r}: {ratio} < 1-{eps_lo}");
                        assert!(ratio <= 1.0 + eps_hi + 1e-12, "lat {lat} r {r}: {ratio} > 1+{eps_hi}");
                        worst = worst.max((ratio - 1.0).abs());
                    }
                }
                // Within two orders of magnitude of the observed error (or tiny).
                assert!(eps_hi.max(eps_lo) < 100.0 * worst.max(1e-10), "lat {lat} r {r} loose: {eps_hi} vs {worst}");
            }
        }
    }

    #[test]
    fn fast_path_disabled_above_80() {
        let c = PreparedCircle::new(ll(80.01, 0.0), 200.0);
        assert_eq!(c.in_sq, f64::NEG_INFINITY);
        assert_eq!(c.out_sq, f64::INFINITY);
        let c = PreparedCircle::new(ll(80.0, 0.0), 200.0);
        assert!(c.in_sq > 0.0 && c.out_sq.is_finite());
    }

    #[test]
    fn within_buffer() {
        let center = ll(45.0, 7.0);
        let c = PreparedCircle::new(center, 200.0);
        let p = destination(center, 250.0, 1.0);
        assert!(!c.contains(p));
        assert!(c.within_m(p, 60.0));
        assert!(!c.within_m(p, 40.0));
        assert!(c.within_m(center, 0.0));
    }
}
