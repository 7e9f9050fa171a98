//! Geometry for geofences: coordinates, great-circle distance, and
//! [`PreparedFence`], the per-fence precomputed form used on the hot path
//! (every GPS ping is tested against every active fence of its vehicle).
//!
//! Pure code: no I/O, no clock, no `unsafe`, no panics on any `f64` input.
//!
//! # Units and conventions
//!
//! * Coordinates are WGS84 degrees: [`LatLon`] `{ lat, lon }`, valid when finite
//!   with `lat ∈ [-90, 90]` and `lon ∈ [-180, 180]`. Note the order: the `geo`
//!   crate and GeoJSON use `(x = lon, y = lat)`.
//! * Distances are metres on a sphere of radius [`EARTH_RADIUS_M`] (the mean
//!   Earth radius, the same constant as `geo::Haversine`), computed by
//!   [`haversine_m`].
//! * Circle radii are metres in `(0, MAX_RADIUS_M]`; exit buffers are metres `>= 0`.
//!
//! # Boundary rule
//!
//! The boundary belongs to the fence: a point on a polygon edge or vertex, or
//! exactly on a circle's rim (`distance == radius`), is inside. Two fences that
//! share an edge therefore both contain the points of that edge.
//!
//! # Polygons
//!
//! Vertices are lat/lon; edges are straight lines in the lon/lat plane (the
//! GeoJSON / PostGIS `geometry` convention, and what the `geo` crate tests).
//! The ring may repeat its first vertex or not; it needs 3 distinct vertices
//! not all on one line (checked exactly). Polygons are not unwrapped
//! across the antimeridian: as RFC 7946 says, a polygon crossing ±180° must be
//! cut in two. Self-intersecting rings are evaluated with the even-odd rule.
//!
//! Point-in-polygon is **exact**: the answer is the one exact arithmetic on the
//! given `f64` coordinates would give. Argument: after an inclusive
//! bounding-box reject, edges are tested with the crossing-number rule,
//! half-open in y (an edge counts when exactly one endpoint is strictly above
//! the point). Those comparisons are exact for floats. Only the edges listed
//! in the point's horizontal band are walked; the band function is monotone,
//! so every edge whose y-range contains the point's y is listed (`bands.rs`),
//! and the skipped edges are ones the test would skip anyway. A straddling
//! edge lying entirely left or right of the point is decided by exact
//! comparisons of x; only a straddling edge whose x-range contains the point
//! needs the side test, and that uses `robust::orient2d`, which returns the
//! exact sign of the orientation determinant (Shewchuk's adaptive
//! predicate). Boundary points are detected exactly: `orient2d == 0` on a
//! straddling edge, the point equal to a vertex, or the point on a horizontal
//! edge between its ends. No tolerance is applied anywhere. (Caveat inherited
//! from `robust`: exactness assumes the determinant's products do not
//! underflow, i.e. coordinate differences larger than ~1e-150 degrees.)
//!
//! # Circles
//!
//! A circle contains `p` exactly when `haversine_m(center, p) <= radius_m`
//! (for a valid `p`). The hot path usually avoids the trigonometry: an
//! inclusive, conservatively enlarged degree bounding box rejects far points,
//! then a flat-earth squared distance (with precomputed `cos(lat0)` and a
//! first-order latitude correction) decides points that are clearly inside or
//! clearly outside by a proven relative margin; only points in the thin band
//! around the rim fall back to [`haversine_m`]. See `circle.rs` for the bound.
//! Above |80°| latitude the fast path is disabled and haversine always decides.
//! Longitude differences are normalised into [-180, 180], so circles work
//! across the antimeridian.
//!
//! # Buffers
//!
//! [`PreparedFence::within_buffer`] tests the fence grown by its exit buffer:
//! for a circle `haversine_m(center, p) <= radius_m + buffer`; for a polygon
//! `contains(p)` or the distance from `p` to the nearest edge `<= buffer`,
//! that distance being measured in a local equirectangular (tangent-plane)
//! projection centred on `p` (see `polygon.rs` for its accuracy).
//!
//! # Invalid input
//!
//! Constructors validate and return [`GeoError`]. Query methods never panic:
//! a point with a NaN/infinite or out-of-range coordinate is never contained
//! and never within a buffer.

mod bands;
mod bbox;
mod circle;
mod fence;
mod polygon;
#[cfg(test)]
mod proptests;
mod segment;

pub use bbox::BBox;
pub use fence::{PreparedFence, Shape};

use serde::{Deserialize, Serialize};

/// Mean Earth radius in metres (IUGG), the same value as `geo`'s `Haversine`.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Largest accepted circle radius in metres (10 miles).
pub const MAX_RADIUS_M: f64 = 16_093.44;

/// Metres per degree of latitude (and of longitude at the equator) on the
/// sphere of radius [`EARTH_RADIUS_M`].
pub(crate) const M_PER_DEG: f64 = EARTH_RADIUS_M * std::f64::consts::PI / 180.0;

/// A WGS84 position in degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatLon {
    /// Latitude in degrees, north positive, valid range [-90, 90].
    pub lat: f64,
    /// Longitude in degrees, east positive, valid range [-180, 180].
    pub lon: f64,
}

impl LatLon {
    /// Builds a position without validating it (see [`LatLon::validate`]).
    #[inline]
    pub fn new(lat: f64, lon: f64) -> Self {
        Self { lat, lon }
    }

    /// Returns `self` if both coordinates are finite, `lat ∈ [-90, 90]` and
    /// `lon ∈ [-180, 180]`, else [`GeoError::InvalidCoordinate`].
    pub fn validate(self) -> Result<Self, GeoError> {
        if self.is_valid() {
            Ok(self)
        } else {
            Err(GeoError::InvalidCoordinate { lat: self.lat, lon: self.lon })
        }
    }

    /// The same check as [`LatLon::validate`] as a boolean (NaN fails every comparison).
    #[inline]
    pub(crate) fn is_valid(self) -> bool {
        (-90.0..=90.0).contains(&self.lat) && (-180.0..=180.0).contains(&self.lon)
    }
}

/// Normalises a longitude difference in degrees into [-180, 180] (for inputs
/// in [-360, 360], which is all that valid longitudes produce).
#[inline(always)]
pub(crate) fn normalize_dlon(d: f64) -> f64 {
    if d > 180.0 {
        d - 360.0
    } else if d < -180.0 {
        d + 360.0
    } else {
        d
    }
}

/// Great-circle distance in metres between `a` and `b` on the sphere of radius
/// [`EARTH_RADIUS_M`] (haversine formula, as in `geo::Haversine`).
///
/// Returns NaN if any coordinate is NaN; never panics.
#[inline]
pub fn haversine_m(a: LatLon, b: LatLon) -> f64 {
    let phi1 = a.lat.to_radians();
    let phi2 = b.lat.to_radians();
    let dphi = (b.lat - a.lat).to_radians();
    let dlambda = normalize_dlon(b.lon - a.lon).to_radians();
    let s_phi = (dphi * 0.5).sin();
    let s_lambda = (dlambda * 0.5).sin();
    let h = s_phi * s_phi + phi1.cos() * phi2.cos() * s_lambda * s_lambda;
    // Rounding can push `h` a hair above 1 for antipodal points; clamp so
    // `asin` stays defined. (Written as a comparison so NaN stays NaN.)
    let h = if h > 1.0 { 1.0 } else { h };
    2.0 * EARTH_RADIUS_M * h.sqrt().asin()
}

/// Why a coordinate, shape or fence was rejected.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum GeoError {
    /// A coordinate is NaN/infinite, or latitude is outside [-90, 90] or
    /// longitude outside [-180, 180].
    #[error("invalid coordinate (lat {lat}, lon {lon}): need finite lat in [-90, 90] and lon in [-180, 180]")]
    InvalidCoordinate {
        /// The offending latitude.
        lat: f64,
        /// The offending longitude.
        lon: f64,
    },
    /// A circle radius that is not finite, not positive, or above [`MAX_RADIUS_M`].
    #[error("invalid circle radius {0} m: need 0 < radius <= {MAX_RADIUS_M} m")]
    InvalidRadius(f64),
    /// A polygon ring with fewer than 3 distinct vertices (the count is given).
    #[error("polygon has {0} distinct vertices: need at least 3")]
    TooFewVertices(usize),
    /// A polygon whose vertices are all collinear (zero area).
    #[error("polygon is degenerate: all its vertices are collinear")]
    DegeneratePolygon,
    /// An exit buffer that is negative or not finite.
    #[error("invalid exit buffer {0} m: need a finite value >= 0")]
    InvalidBuffer(f64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_ranges() {
        assert!(LatLon::new(0.0, 0.0).validate().is_ok());
        assert!(LatLon::new(90.0, 180.0).validate().is_ok());
        assert!(LatLon::new(-90.0, -180.0).validate().is_ok());
        for (lat, lon) in
            [(90.000001, 0.0), (0.0, -180.000001), (f64::NAN, 0.0), (0.0, f64::INFINITY), (f64::NEG_INFINITY, 0.0)]
        {
            let err = LatLon::new(lat, lon).validate().unwrap_err();
            assert!(matches!(err, GeoError::InvalidCoordinate { .. }));
            assert!(err.to_string().contains("invalid coordinate"));
        }
    }

    #[test]
    fn haversine_known_values() {
        // One degree of latitude.
        let d = haversine_m(LatLon::new(0.0, 0.0), LatLon::new(1.0, 0.0));
        assert!((d - M_PER_DEG).abs() < 1e-6, "{d}");
        // Symmetric, zero on identical points.
        let a = LatLon::new(48.8566, 2.3522);
        let b = LatLon::new(51.5074, -0.1278);
        assert_eq!(haversine_m(a, a), 0.0);
        assert!((haversine_m(a, b) - haversine_m(b, a)).abs() < 1e-6);
        // Paris-London ~343.5 km.
        assert!((haversine_m(a, b) - 343_560.0).abs() < 500.0);
        // Across the antimeridian: 0.002 degrees of longitude at the equator.
        let d = haversine_m(LatLon::new(0.0, 179.999), LatLon::new(0.0, -179.999));
        assert!((d - 0.002 * M_PER_DEG).abs() < 1e-6, "{d}");
        // Antipodes do not produce NaN.
        let d = haversine_m(LatLon::new(0.0, 0.0), LatLon::new(0.0, 180.0));
        assert!((d - std::f64::consts::PI * EARTH_RADIUS_M).abs() < 1e-3);
        assert!(haversine_m(LatLon::new(f64::NAN, 0.0), a).is_nan());
    }

    #[test]
    fn normalize_dlon_range() {
        assert_eq!(normalize_dlon(359.0), -1.0);
        assert_eq!(normalize_dlon(-359.0), 1.0);
        assert_eq!(normalize_dlon(180.0), 180.0);
        assert_eq!(normalize_dlon(-180.0), -180.0);
        assert!(normalize_dlon(f64::NAN).is_nan());
    }
}
