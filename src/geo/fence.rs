//! Fence shapes and their prepared (hot-path) form.

use serde::{Deserialize, Serialize};

use super::bbox::BBox;
use super::circle::PreparedCircle;
use super::polygon::{distinct_vertices, open_ring, PreparedPolygon};
use super::{haversine_m, GeoError, LatLon, MAX_RADIUS_M};

/// A geofence shape as stored and exchanged (JSON: `{"type": "circle", ...}`
/// or `{"type": "polygon", "ring": [...]}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Shape {
    /// All points within `radius_m` metres (great-circle) of `center`.
    Circle {
        /// Centre of the circle.
        center: LatLon,
        /// Radius in metres, `0 < radius_m <= MAX_RADIUS_M`.
        radius_m: f64,
    },
    /// A simple polygon given by its outer ring; edges are straight in the
    /// lon/lat plane. The first vertex may be repeated at the end or not.
    Polygon {
        /// The ring's vertices.
        ring: Vec<LatLon>,
    },
}

impl Shape {
    /// The circle's centre, or the polygon's vertex centroid: the mean of its
    /// distinct vertices (a repeated closing vertex is not counted twice).
    /// For an empty ring, both coordinates are NaN.
    pub fn center(&self) -> LatLon {
        match self {
            Shape::Circle { center, .. } => *center,
            Shape::Polygon { ring } => {
                let v = distinct_vertices(open_ring(ring));
                if v.is_empty() {
                    return LatLon::new(f64::NAN, f64::NAN);
                }
                let n = v.len() as f64;
                let (sl, so) = v.iter().fold((0.0, 0.0), |(a, b), q| (a + q.lat, b + q.lon));
                LatLon::new(sl / n, so / n)
            }
        }
    }

    /// Checks the shape as [`PreparedFence::new`] does (without preparing it).
    pub fn validate(&self) -> Result<(), GeoError> {
        match self {
            Shape::Circle { center, radius_m } => validate_circle(*center, *radius_m),
            Shape::Polygon { ring } => PreparedPolygon::new(ring).map(|_| ()),
        }
    }
}

fn validate_circle(center: LatLon, radius_m: f64) -> Result<(), GeoError> {
    center.validate()?;
    if radius_m > 0.0 && radius_m <= MAX_RADIUS_M {
        Ok(())
    } else {
        Err(GeoError::InvalidRadius(radius_m))
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Circle(PreparedCircle),
    Polygon {
        poly: PreparedPolygon,
        /// The polygon's box grown by the exit buffer (prefilter for
        /// `within_buffer`).
        buffer_bbox: BBox,
    },
}

/// A fence ready for the hot path: everything per-fence precomputed.
#[derive(Debug, Clone)]
pub struct PreparedFence {
    /// Inclusive degree box containing the fence: the first, cheapest reject.
    bbox: BBox,
    kind: Kind,
    shape: Shape,
    center: LatLon,
    exit_buffer_m: f64,
}

impl PreparedFence {
    /// Validates `shape` and precomputes its hot-path form.
    ///
    /// `exit_buffer_m` >= 0: the fence grown by this many metres is what
    /// [`PreparedFence::within_buffer`] tests.
    pub fn new(shape: &Shape, exit_buffer_m: f64) -> Result<Self, GeoError> {
        if !(exit_buffer_m >= 0.0 && exit_buffer_m.is_finite()) {
            return Err(GeoError::InvalidBuffer(exit_buffer_m));
        }
        let kind = match shape {
            Shape::Circle { center, radius_m } => {
                validate_circle(*center, *radius_m)?;
                Kind::Circle(PreparedCircle::new(*center, *radius_m))
            }
            Shape::Polygon { ring } => {
                let poly = PreparedPolygon::new(ring)?;
                let buffer_bbox = poly.bbox().grown_by_m(exit_buffer_m);
                Kind::Polygon { poly, buffer_bbox }
            }
        };
        let bbox = match &kind {
            Kind::Circle(c) => *c.bbox(),
            Kind::Polygon { poly, .. } => *poly.bbox(),
        };
        Ok(Self { bbox, kind, shape: shape.clone(), center: shape.center(), exit_buffer_m })
    }

    /// The inclusive degree box containing the fence. Callers on a hot path
    /// may keep a copy beside their own data and test it first, so that a
    /// reject never touches the fence itself.
    pub fn bbox(&self) -> BBox {
        self.bbox
    }

    /// Whether the straight segment between two fixes `a`, `b` passes
    /// through the fence (see `segment.rs` for the accuracy). False when
    /// either point is invalid.
    pub fn segment_touches(&self, a: LatLon, b: LatLon) -> bool {
        self.contains(a) || self.contains(b) || self.segment_crosses(a, b)
    }

    /// [`PreparedFence::segment_touches`] for two points already known to be
    /// outside: only the boundary is tested.
    pub fn segment_crosses(&self, a: LatLon, b: LatLon) -> bool {
        if !(a.is_valid() && b.is_valid() && self.bbox.meets_segment(a, b)) {
            return false;
        }
        match (&self.kind, &self.shape) {
            (Kind::Polygon { poly, .. }, _) => poly.segment_meets_ring(a, b),
            (Kind::Circle(_), Shape::Circle { center, radius_m }) => {
                super::segment::distance_to_segment_m(*center, a, b) <= *radius_m
            }
            (Kind::Circle(_), Shape::Polygon { .. }) => false,
        }
    }

    /// The shape this fence was prepared from.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The exit buffer in metres given to [`PreparedFence::new`].
    pub fn exit_buffer_m(&self) -> f64 {
        self.exit_buffer_m
    }

    /// Whether `p` is in the fence. Boundary (edges, vertices, circle rim)
    /// counts as inside. Exact: for polygons the answer of exact arithmetic
    /// on the `f64` inputs; for circles exactly `haversine_m(center, p) <=
    /// radius_m`. False for NaN or out-of-range points.
    ///
    /// Inlined: the box reject and the circle fast path run at the call
    /// site; the polygon walk and the circle's haversine fallback are calls.
    #[inline(always)]
    pub fn contains(&self, p: LatLon) -> bool {
        if !self.bbox.contains(p) {
            return false;
        }
        match &self.kind {
            Kind::Circle(c) => c.contains_in_bbox(p),
            Kind::Polygon { poly, .. } => poly.contains_in_bbox(p),
        }
    }

    /// Whether `p` is in the fence grown by `exit_buffer_m` (boundary
    /// inside). Circle: `haversine_m(center, p) <= radius_m + exit_buffer_m`.
    /// Polygon: `contains(p)` or the distance from `p` to the nearest edge
    /// (local projection, see the module docs) is `<= exit_buffer_m`.
    /// Always true when `contains(p)` is; false for NaN or out-of-range points.
    pub fn within_buffer(&self, p: LatLon) -> bool {
        if !p.is_valid() {
            return false;
        }
        match &self.kind {
            // contains ⇔ d <= r ⇒ d <= r + buffer: the fast path settles the
            // common case (still inside) without trigonometry.
            Kind::Circle(c) => self.contains(p) || c.within_m(p, self.exit_buffer_m),
            Kind::Polygon { poly, buffer_bbox } => {
                self.contains(p) || (buffer_bbox.contains(p) && poly.distance_to_ring_m(p) <= self.exit_buffer_m)
            }
        }
    }

    /// Distance in metres from `p` to the fence: 0 inside (boundary
    /// included); for a circle `haversine_m(center, p) - radius_m`, for a
    /// polygon the distance to its ring (see `within_buffer`). NaN for a
    /// NaN point.
    pub fn distance_m(&self, p: LatLon) -> f64 {
        if self.contains(p) {
            return 0.0;
        }
        match (&self.kind, &self.shape) {
            (Kind::Polygon { poly, .. }, _) => poly.distance_to_ring_m(p),
            (Kind::Circle(_), Shape::Circle { center, radius_m }) => {
                let d = haversine_m(*center, p) - radius_m;
                // Written so that NaN stays NaN.
                if d < 0.0 {
                    0.0
                } else {
                    d
                }
            }
            (Kind::Circle(_), Shape::Polygon { .. }) => f64::NAN,
        }
    }

    /// Great-circle distance in metres from the shape's centre (see
    /// [`Shape::center`]) to `p`. NaN for a NaN point.
    pub fn distance_to_center_m(&self, p: LatLon) -> f64 {
        haversine_m(self.center, p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ll(lat: f64, lon: f64) -> LatLon {
        LatLon::new(lat, lon)
    }

    fn circle(lat: f64, lon: f64, r: f64) -> Shape {
        Shape::Circle { center: ll(lat, lon), radius_m: r }
    }

    #[test]
    fn distance_to_a_fence_is_zero_inside_and_to_the_edge_outside() {
        let c = PreparedFence::new(&circle(10.0, 10.0, 200.0), 0.0).unwrap();
        assert_eq!(c.distance_m(ll(10.0, 10.0)), 0.0);
        let one_km_north = ll(10.0 + 1000.0 / crate::geo::M_PER_DEG, 10.0);
        assert!((c.distance_m(one_km_north) - 800.0).abs() < 0.01, "{}", c.distance_m(one_km_north));
        let square = Shape::Polygon { ring: vec![ll(0.0, 0.0), ll(0.0, 0.01), ll(0.01, 0.01), ll(0.01, 0.0)] };
        let p = PreparedFence::new(&square, 0.0).unwrap();
        assert_eq!(p.distance_m(ll(0.005, 0.005)), 0.0);
        assert_eq!(p.distance_m(ll(0.0, 0.005)), 0.0, "the edge is inside");
        let d = p.distance_m(ll(0.02, 0.005));
        assert!((d - 0.01 * crate::geo::M_PER_DEG).abs() < 1.0, "{d}");
        assert!(p.distance_m(ll(f64::NAN, 0.0)).is_nan());
        assert!(c.distance_m(ll(f64::NAN, 0.0)).is_nan());
    }

    #[test]
    fn validation() {
        assert!(PreparedFence::new(&circle(10.0, 10.0, 200.0), 50.0).is_ok());
        assert!(PreparedFence::new(&circle(10.0, 10.0, MAX_RADIUS_M), 0.0).is_ok());
        for r in [0.0, -1.0, MAX_RADIUS_M * 1.000001, f64::NAN, f64::INFINITY] {
            let e = PreparedFence::new(&circle(10.0, 10.0, r), 0.0).unwrap_err();
            assert!(matches!(e, GeoError::InvalidRadius(_)), "{r}");
        }
        for (lat, lon) in [(91.0, 0.0), (0.0, -181.0), (f64::NAN, 0.0), (0.0, f64::NEG_INFINITY)] {
            let e = PreparedFence::new(&circle(lat, lon, 100.0), 0.0).unwrap_err();
            assert!(matches!(e, GeoError::InvalidCoordinate { .. }));
        }
        for b in [-0.001, f64::NAN, f64::INFINITY] {
            let e = PreparedFence::new(&circle(10.0, 10.0, 100.0), b).unwrap_err();
            assert!(matches!(e, GeoError::InvalidBuffer(_)));
        }
        let tri = Shape::Polygon { ring: vec![ll(0.0, 0.0), ll(0.0, 1.0), ll(1.0, 0.0)] };
        assert!(PreparedFence::new(&tri, 10.0).is_ok());
        assert!(tri.validate().is_ok());
        let bad = Shape::Polygon { ring: vec![ll(0.0, 0.0), ll(0.0, 1.0), ll(0.0, 0.0)] };
        assert_eq!(PreparedFence::new(&bad, 0.0).unwrap_err(), GeoError::TooFewVertices(2));
        assert_eq!(bad.validate().unwrap_err(), GeoError::TooFewVertices(2));
    }

    #[test]
    fn center_of_polygon() {
        let open = Shape::Polygon { ring: vec![ll(0.0, 0.0), ll(0.0, 2.0), ll(2.0, 2.0), ll(2.0, 0.0)] };
        let closed =
            Shape::Polygon { ring: vec![ll(0.0, 0.0), ll(0.0, 2.0), ll(2.0, 2.0), ll(2.0, 0.0), ll(0.0, 0.0)] };
        assert_eq!(open.center(), ll(1.0, 1.0));
        assert_eq!(closed.center(), ll(1.0, 1.0));
        let empty = Shape::Polygon { ring: vec![] };
        assert!(empty.center().lat.is_nan());
        assert_eq!(circle(3.0, 4.0, 5.0).center(), ll(3.0, 4.0));
        let f = PreparedFence::new(&closed, 0.0).unwrap();
        assert_eq!(f.distance_to_center_m(ll(1.0, 1.0)), 0.0);
        assert!(f.distance_to_center_m(ll(f64::NAN, 1.0)).is_nan());
    }

    #[test]
    fn serde_round_trip() {
        let s = circle(1.5, -2.5, 200.0);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#"{"type":"circle","center":{"lat":1.5,"lon":-2.5},"radius_m":200.0}"#);
        assert_eq!(serde_json::from_str::<Shape>(&json).unwrap(), s);
        let p: Shape = serde_json::from_str(
            r#"{"type":"polygon","ring":[{"lat":0,"lon":0},{"lat":0,"lon":1},{"lat":1,"lon":1}]}"#,
        )
        .unwrap();
        assert!(matches!(p, Shape::Polygon { ref ring } if ring.len() == 3));
    }

    #[test]
    fn circle_fence() {
        let f = PreparedFence::new(&circle(60.0, 25.0, 200.0), 100.0).unwrap();
        assert!(f.contains(ll(60.0, 25.0)));
        let north = |m: f64| ll(60.0 + m / crate::geo::M_PER_DEG, 25.0);
        assert!(f.contains(north(199.0)));
        assert!(!f.contains(north(201.0)));
        assert!(f.within_buffer(north(201.0)));
        assert!(f.within_buffer(north(299.0)));
        assert!(!f.within_buffer(north(301.0)));
        assert!((f.distance_to_center_m(north(150.0)) - 150.0).abs() < 1e-6);
        assert!(!f.contains(ll(f64::NAN, 25.0)));
        assert!(!f.within_buffer(ll(60.0, f64::NAN)));
        assert_eq!(f.shape(), &circle(60.0, 25.0, 200.0));
        assert_eq!(f.exit_buffer_m(), 100.0);
    }

    #[test]
    fn polygon_fence_buffer() {
        let d = 0.001;
        let sq = Shape::Polygon { ring: vec![ll(0.0, 0.0), ll(0.0, d), ll(d, d), ll(d, 0.0)] };
        let f = PreparedFence::new(&sq, 50.0).unwrap();
        let m = crate::geo::M_PER_DEG;
        assert!(f.contains(ll(d / 2.0, d / 2.0)));
        assert!(f.within_buffer(ll(d / 2.0, d / 2.0)));
        assert!(!f.contains(ll(d / 2.0, d + 40.0 / m)));
        assert!(f.within_buffer(ll(d / 2.0, d + 40.0 / m)));
        assert!(!f.within_buffer(ll(d / 2.0, d + 60.0 / m)));
        assert!(f.within_buffer(ll(-49.0 / m, d / 2.0)));
        assert!(!f.within_buffer(ll(-51.0 / m, d / 2.0)));
        // Corner: diagonal distance.
        let c = 30.0 / m;
        assert!(f.within_buffer(ll(d + c, d + c))); // ~42 m
        let c = 40.0 / m;
        assert!(!f.within_buffer(ll(d + c, d + c))); // ~57 m
        assert!(!f.within_buffer(ll(f64::NAN, 0.0)));
        let f0 = PreparedFence::new(&sq, 0.0).unwrap();
        assert!(f0.within_buffer(ll(0.0, d / 3.0)));
        assert!(!f0.within_buffer(ll(-1e-9, d / 3.0)));
    }

    #[test]
    fn antimeridian_circle_fence() {
        let f = PreparedFence::new(&circle(-16.5, 179.999, 200.0), 0.0).unwrap();
        assert!(f.contains(ll(-16.5, -179.9995)));
        assert!(f.contains(ll(-16.5, -179.999 - 0.0008)));
        assert!(!f.contains(ll(-16.5, -179.997)));
    }
}
