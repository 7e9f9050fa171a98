//! Property tests cross-checking the geometry against the `geo` crate.
//!
//! Polygons are built on a dyadic grid (spacing 2^-12 degree around a few
//! dyadic origins, including near the antimeridian), so vertices, edge
//! midpoints and other dyadic fractions along edges are exactly representable
//! and lie exactly on the boundary: the adversarial cases for the boundary
//! rule. Points are also nudged by one ulp in each direction.

use geo::algorithm::coordinate_position::{CoordPos, CoordinatePosition};
use geo::{Destination, Distance, Haversine, Intersects};
use proptest::prelude::*;
use robust::{orient2d, Coord};

use super::polygon::PreparedPolygon;
use super::{haversine_m, LatLon, PreparedFence, Shape, MAX_RADIUS_M};

const GRID: f64 = 1.0 / 4096.0;

const ORIGINS: [(f64, f64); 6] =
    [(-122.25, 37.5), (179.75, -16.5), (0.0, 0.0), (-0.5, 51.5), (150.0, -33.875), (-179.75, 64.25)];

type Ring = Vec<(i64, i64)>;

fn orient(a: (f64, f64), b: (f64, f64), c: (f64, f64)) -> f64 {
    orient2d(Coord { x: a.0, y: a.1 }, Coord { x: b.0, y: b.1 }, Coord { x: c.0, y: c.1 })
}

fn on_segment(a: (f64, f64), b: (f64, f64), p: (f64, f64)) -> bool {
    orient(a, b, p) == 0.0 && p.0 >= a.0.min(b.0) && p.0 <= a.0.max(b.0) && p.1 >= a.1.min(b.1) && p.1 <= a.1.max(b.1)
}

fn segments_touch(a: (f64, f64), b: (f64, f64), c: (f64, f64), d: (f64, f64)) -> bool {
    let (o1, o2) = (orient(a, b, c), orient(a, b, d));
    let (o3, o4) = (orient(c, d, a), orient(c, d, b));
    if o1 * o2 < 0.0 && o3 * o4 < 0.0 {
        return true;
    }
    on_segment(a, b, c) || on_segment(a, b, d) || on_segment(c, d, a) || on_segment(c, d, b)
}

/// Simple (non-self-intersecting) ring without repeated vertices.
fn is_simple(pts: &[(f64, f64)]) -> bool {
    let n = pts.len();
    if n < 3 {
        return false;
    }
    for i in 0..n {
        for j in (i + 1)..n {
            let (a, b) = (pts[i], pts[(i + 1) % n]);
            let (c, d) = (pts[j], pts[(j + 1) % n]);
            if a == c {
                return false;
            }
            if j == i + 1 {
                // Adjacent at b == c: must not fold back over each other.
                let (u, v) = ((a.0 - b.0, a.1 - b.1), (d.0 - c.0, d.1 - c.1));
                if orient(a, b, d) == 0.0 && u.0 * v.0 + u.1 * v.1 > 0.0 {
                    return false;
                }
            } else if i == 0 && j == n - 1 {
                // Adjacent at a == d.
                let (u, v) = ((b.0 - a.0, b.1 - a.1), (c.0 - d.0, c.1 - d.1));
                if orient(c, d, b) == 0.0 && u.0 * v.0 + u.1 * v.1 > 0.0 {
                    return false;
                }
            } else if segments_touch(a, b, c, d) {
                return false;
            }
        }
    }
    let area2: f64 = (0..n).map(|i| pts[i].0 * pts[(i + 1) % n].1 - pts[(i + 1) % n].0 * pts[i].1).sum();
    area2 != 0.0
}

/// Star-shaped ring on the integer grid: `n ∈ [min_n, max_n)` sorted random
/// angles, radii in `[min_r, 1] * scale` with `scale ∈ [8, max_scale)` grid units.
fn star_ring(min_n: usize, max_n: usize, min_r: f64, max_scale: i64) -> impl Strategy<Value = Ring> {
    (min_n..max_n)
        .prop_flat_map(move |n| (prop::collection::vec((0.0f64..1.0, min_r..1.0), n), 8i64..max_scale, any::<bool>()))
        .prop_map(|(mut v, scale, reverse)| {
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut ring: Ring = v
                .iter()
                .map(|&(a, r)| {
                    let t = a * std::f64::consts::TAU;
                    ((r * scale as f64 * t.cos()).round() as i64, (r * scale as f64 * t.sin()).round() as i64)
                })
                .collect();
            ring.dedup();
            if reverse {
                ring.reverse();
            }
            ring
        })
}

/// Rectilinear "histogram" ring: columns of random widths and heights (concave,
/// full of horizontal and vertical edges and collinear vertices); optionally
/// transposed and/or reversed.
fn histogram_ring() -> impl Strategy<Value = Ring> {
    (1usize..16)
        .prop_flat_map(|n| (prop::collection::vec((1i64..12, -20i64..40), n), any::<bool>(), any::<bool>()))
        .prop_map(|(cols, transpose, reverse)| {
            let mut ring: Ring = vec![(0, -25)];
            let mut x = 0;
            for (w, h) in cols {
                ring.push((x, h));
                x += w;
                ring.push((x, h));
            }
            ring.push((x, -25));
            ring.dedup();
            if transpose {
                ring.iter_mut().for_each(|p| *p = (p.1, p.0));
            }
            if reverse {
                ring.reverse();
            }
            ring
        })
}

#[derive(Debug, Clone)]
struct Case {
    ring: Ring,
    origin: (f64, f64),
    kind: u8,
    idx: usize,
    frac: i64,
    nudge: u8,
    u: f64,
    v: f64,
}

fn case(rings: impl Strategy<Value = Ring>) -> impl Strategy<Value = Case> {
    case_at(rings, &ORIGINS)
}

fn case_at(rings: impl Strategy<Value = Ring>, origins: &[(f64, f64)]) -> impl Strategy<Value = Case> {
    (
        rings,
        prop::sample::select(origins.to_vec()),
        0u8..5,
        any::<usize>(),
        0i64..=16,
        0u8..5,
        -0.2f64..1.2,
        -0.2f64..1.2,
    )
        .prop_map(|(ring, origin, kind, idx, frac, nudge, u, v)| Case {
            ring,
            origin,
            kind,
            idx,
            frac,
            nudge,
            u,
            v,
        })
}

fn next_up(x: f64) -> f64 {
    if x == 0.0 {
        f64::from_bits(1)
    } else if x > 0.0 {
        f64::from_bits(x.to_bits() + 1)
    } else {
        f64::from_bits(x.to_bits() - 1)
    }
}

fn next_down(x: f64) -> f64 {
    -next_up(-x)
}

impl Case {
    fn pts(&self) -> Vec<(f64, f64)> {
        self.ring.iter().map(|&(i, j)| (self.origin.0 + i as f64 * GRID, self.origin.1 + j as f64 * GRID)).collect()
    }

    /// The query point `(x = lon, y = lat)`.
    fn point(&self, pts: &[(f64, f64)]) -> (f64, f64) {
        let n = pts.len();
        let (minx, maxx) = pts.iter().fold((f64::MAX, f64::MIN), |m, p| (m.0.min(p.0), m.1.max(p.0)));
        let (miny, maxy) = pts.iter().fold((f64::MAX, f64::MIN), |m, p| (m.0.min(p.1), m.1.max(p.1)));
        let a = pts[self.idx % n];
        let b = pts[(self.idx + 1) % n];
        let p = match self.kind {
            // Uniform float point around the box.
            0 => (minx + self.u * (maxx - minx), miny + self.v * (maxy - miny)),
            // Grid point around the box (shares x/y with vertices).
            1 => {
                let gx = ((minx + self.u * (maxx - minx) - self.origin.0) / GRID).round();
                let gy = ((miny + self.v * (maxy - miny) - self.origin.1) / GRID).round();
                (self.origin.0 + gx * GRID, self.origin.1 + gy * GRID)
            }
            // A vertex.
            2 => a,
            // A dyadic fraction along an edge: exactly on the edge.
            _ => {
                let t = self.frac as f64 / 16.0;
                (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t)
            }
        };
        match self.nudge {
            1 => (next_up(p.0), p.1),
            2 => (next_down(p.0), p.1),
            3 => (p.0, next_up(p.1)),
            4 => (p.0, next_down(p.1)),
            _ => p,
        }
    }
}

fn is_tiny(v: f64) -> bool {
    v != 0.0 && v.abs() < 1e-150
}

fn polygon_shape(pts: &[(f64, f64)], closed: bool) -> Shape {
    let mut ring: Vec<LatLon> = pts.iter().map(|&(x, y)| LatLon::new(y, x)).collect();
    if closed {
        ring.push(ring[0]);
    }
    Shape::Polygon { ring }
}

fn geo_polygon(pts: &[(f64, f64)]) -> geo::Polygon<f64> {
    geo::Polygon::new(geo::LineString::from(pts.to_vec()), vec![])
}

fn check_polygon_case(c: &Case, buffer: f64) -> Result<(), TestCaseError> {
    let pts = c.pts();
    prop_assume!(is_simple(&pts));
    let fence = PreparedFence::new(&polygon_shape(&pts, c.idx.is_multiple_of(2)), buffer)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let gp = geo_polygon(&pts);
    let (x, y) = c.point(&pts);
    // geo's orient2d (like ours) is not exact when products underflow; a
    // one-ulp nudge off 0.0 gives a subnormal coordinate, so skip those.
    prop_assume!(!is_tiny(x) && !is_tiny(y));
    let p = LatLon::new(y, x);
    let ours = fence.contains(p);
    let want = gp.coordinate_position(&geo::Coord { x, y }) != CoordPos::Outside;
    let want2 = gp.intersects(&geo::Point::new(x, y));
    prop_assert_eq!(ours, want, "point ({}, {}) kind {} nudge {}", x, y, c.kind, c.nudge);
    prop_assert_eq!(ours, want2, "intersects: point ({}, {})", x, y);
    // The band index changes nothing: same answer as walking every edge.
    let ring: Vec<LatLon> = pts.iter().map(|&(x, y)| LatLon::new(y, x)).collect();
    let poly = PreparedPolygon::new(&ring).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(poly.contains(p), ours);
    prop_assert_eq!(poly.contains_full_ring(p), ours);
    if ours {
        prop_assert!(fence.within_buffer(p));
    }
    Ok(())
}

fn circle_fence(lat: f64, lon: f64, r: f64, buffer: f64) -> PreparedFence {
    let shape = Shape::Circle { center: LatLon::new(lat, lon), radius_m: r };
    match PreparedFence::new(&shape, buffer) {
        Ok(f) => f,
        Err(e) => panic!("valid circle rejected: {e}"),
    }
}

fn geo_haversine(a: LatLon, b: LatLon) -> f64 {
    Haversine.distance(geo::Point::new(a.lon, a.lat), geo::Point::new(b.lon, b.lat))
}

/// A point at `factor * r` from the centre along `bearing` (degrees), via geo.
fn geo_destination(center: LatLon, bearing: f64, dist: f64) -> LatLon {
    let p = Haversine.destination(geo::Point::new(center.lon, center.lat), bearing, dist);
    let mut lon = p.x();
    if lon > 180.0 {
        lon -= 360.0;
    } else if lon < -180.0 {
        lon += 360.0;
    }
    LatLon::new(p.y().clamp(-90.0, 90.0), lon)
}

fn lon_strategy() -> impl Strategy<Value = f64> {
    prop_oneof![-180.0f64..=180.0, 179.9f64..=180.0, -180.0f64..=-179.9]
}

fn factor_strategy() -> impl Strategy<Value = f64> {
    prop_oneof![0.0f64..2.5, Just(1.0 - 1e-6), Just(1.0 + 1e-6), 0.999f64..1.001, (1.0 - 1e-7)..(1.0 + 1e-7),]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn star_polygons_match_geo(c in case(star_ring(3, 24, 0.1, 600))) {
        check_polygon_case(&c, 25.0)?;
    }

    #[test]
    fn histogram_polygons_match_geo(c in case(histogram_ring())) {
        check_polygon_case(&c, 10.0)?;
    }

    #[test]
    fn circles_match_geo_haversine(
        lat in -85.0f64..=85.0,
        lon in lon_strategy(),
        r in 10.0f64..=MAX_RADIUS_M,
        bearing in 0.0f64..360.0,
        factor in factor_strategy(),
        buffer in 0.0f64..500.0,
    ) {
        let f = circle_fence(lat, lon, r, buffer);
        let center = LatLon::new(lat, lon);
        let p = geo_destination(center, bearing, r * factor);
        let d_geo = geo_haversine(center, p);
        let ours = f.contains(p);
        // Exactly our own definition, with no tolerance.
        prop_assert_eq!(ours, haversine_m(center, p) <= r);
        prop_assert_eq!(f.within_buffer(p), haversine_m(center, p) <= r + buffer);
        if ours {
            prop_assert!(f.within_buffer(p));
        }
        // And geo's haversine away from the rim.
        if ((d_geo - r) / r).abs() > 1e-9 {
            prop_assert_eq!(ours, d_geo <= r, "d_geo {} r {}", d_geo, r);
        }
        if ((d_geo - r - buffer) / (r + buffer)).abs() > 1e-9 {
            prop_assert_eq!(f.within_buffer(p), d_geo <= r + buffer);
        }
        prop_assert!((f.distance_to_center_m(p) - d_geo).abs() <= 1e-9 * d_geo.max(10.0));
    }

    /// The radius set to exactly the point's distance (and one ulp less):
    /// the fast path must never decide these wrongly.
    #[test]
    fn circle_radius_exactly_at_point(
        lat in -89.9f64..=89.9,
        lon in lon_strategy(),
        bearing in 0.0f64..360.0,
        dist in 1.0f64..MAX_RADIUS_M,
    ) {
        let center = LatLon::new(lat, lon);
        let p = geo_destination(center, bearing, dist);
        let d = haversine_m(center, p);
        prop_assume!(d > 0.0 && d <= MAX_RADIUS_M);
        prop_assert!(circle_fence(lat, lon, d, 0.0).contains(p));
        prop_assert!(!circle_fence(lat, lon, next_down(d), 0.0).contains(p));
    }

    #[test]
    fn polygon_buffer_contains_and_is_bounded(c in case(star_ring(3, 16, 0.1, 600)), buffer in 0.0f64..300.0) {
        let pts = c.pts();
        prop_assume!(is_simple(&pts));
        let fence = PreparedFence::new(&polygon_shape(&pts, false), buffer).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (x, y) = c.point(&pts);
        let p = LatLon::new(y, x);
        if fence.contains(p) {
            prop_assert!(fence.within_buffer(p));
        }
        // A point within the buffer is within buffer (+0.1 %) of some vertex
        // or edge point; conversely a point closer than buffer (-0.1 %) to
        // a vertex is within the buffer.
        let near_vertex = pts.iter().any(|&(vx, vy)| haversine_m(p, LatLon::new(vy, vx)) <= buffer * 0.999);
        if near_vertex {
            prop_assert!(fence.within_buffer(p));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Big star polygons (200-400 vertices).
    #[test]
    fn big_polygons_match_geo(c in case_at(star_ring(200, 400, 0.6, 8000), &ORIGINS[2..5])) {
        check_polygon_case(&c, 0.0)?;
    }

    /// Arbitrary (non-grid) float coordinates.
    #[test]
    fn float_polygons_match_geo(
        raw in prop::collection::vec((0.0f64..1.0, 0.05f64..1.0), 3..30),
        cx in -170.0f64..170.0,
        cy in -80.0f64..80.0,
        scale in 1e-4f64..0.5,
        u in -0.2f64..1.2,
        v in -0.2f64..1.2,
        pick in 0usize..1000,
    ) {
        let mut raw = raw;
        raw.sort_by(|a, b| a.0.total_cmp(&b.0));
        let pts: Vec<(f64, f64)> = raw
            .iter()
            .map(|&(a, r)| {
                let t = a * std::f64::consts::TAU;
                (cx + r * scale * t.cos(), cy + r * scale * t.sin())
            })
            .collect();
        prop_assume!(is_simple(&pts));
        let fence = PreparedFence::new(&polygon_shape(&pts, false), 0.0).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let gp = geo_polygon(&pts);
        let (minx, maxx) = pts.iter().fold((f64::MAX, f64::MIN), |m, p| (m.0.min(p.0), m.1.max(p.0)));
        let (miny, maxy) = pts.iter().fold((f64::MAX, f64::MIN), |m, p| (m.0.min(p.1), m.1.max(p.1)));
        let vtx = pts[pick % pts.len()];
        for (x, y) in [(minx + u * (maxx - minx), miny + v * (maxy - miny)), vtx, (next_up(vtx.0), vtx.1), (vtx.0, next_down(vtx.1))] {
            let want = gp.coordinate_position(&geo::Coord { x, y }) != CoordPos::Outside;
            prop_assert_eq!(fence.contains(LatLon::new(y, x)), want, "({}, {})", x, y);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// `segment_touches` on polygons equals geo's Line ∩ Polygon, for
    /// segments between random, grid, vertex and on-edge points.
    #[test]
    fn polygon_segments_match_geo(
        c in case(star_ring(3, 16, 0.1, 600)),
        kind2 in 0u8..4, idx2 in any::<usize>(), frac2 in 0i64..=16, u2 in -0.2f64..1.2, v2 in -0.2f64..1.2,
    ) {
        let pts = c.pts();
        let a = c.point(&pts);
        let other = Case { kind: kind2, idx: idx2, frac: frac2, u: u2, v: v2, nudge: 0, ring: c.ring.clone(), origin: c.origin };
        let b = other.point(&pts);
        prop_assume!(![a.0, a.1, b.0, b.1].into_iter().any(is_tiny));
        // Degenerate generated rings are rejected by `new`; nothing to compare.
        let Ok(fence) = PreparedFence::new(&polygon_shape(&pts, false), 0.0) else { return Ok(()) };
        let ours = fence.segment_touches(LatLon::new(a.1, a.0), LatLon::new(b.1, b.0));
        let theirs = geo::Line::new(geo::coord! { x: a.0, y: a.1 }, geo::coord! { x: b.0, y: b.1 }).intersects(&geo_polygon(&pts));
        prop_assert_eq!(ours, theirs, "segment {:?} -> {:?}", a, b);
    }
}
