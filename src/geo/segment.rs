//! Does the straight path between two consecutive pings cross a fence?
//!
//! Sparse trackers (a fix every 2 minutes) can jump over a small fence; the
//! report wants to know. A segment is straight in the lon/lat plane, the
//! same convention as polygon edges. For polygons the test is exact: an
//! endpoint inside, or the segment meeting an edge (exact orientation signs,
//! touching and collinear overlap included). For circles it is the distance
//! from the centre to the segment in a local equirectangular projection
//! around the centre, accurate to well under 0.1% at fence scale; it is
//! report evidence, never an arrival.

use robust::{orient2d, Coord};

use super::{normalize_dlon, LatLon, M_PER_DEG};

fn c(q: [f64; 2]) -> Coord<f64> {
    Coord { x: q[0], y: q[1] }
}

fn sign(v: f64) -> i8 {
    if v > 0.0 {
        1
    } else if v < 0.0 {
        -1
    } else {
        0
    }
}

/// `q` lies within the bounding box of segment `p`–`r` (used when collinear).
fn on_box(p: [f64; 2], q: [f64; 2], r: [f64; 2]) -> bool {
    q[0] >= p[0].min(r[0]) && q[0] <= p[0].max(r[0]) && q[1] >= p[1].min(r[1]) && q[1] <= p[1].max(r[1])
}

/// Exact: closed segments `a`–`b` and `p`–`q` (as `[x, y]`) share a point.
pub(crate) fn segments_intersect(a: [f64; 2], b: [f64; 2], p: [f64; 2], q: [f64; 2]) -> bool {
    let d1 = sign(orient2d(c(p), c(q), c(a)));
    let d2 = sign(orient2d(c(p), c(q), c(b)));
    let d3 = sign(orient2d(c(a), c(b), c(p)));
    let d4 = sign(orient2d(c(a), c(b), c(q)));
    if d1 * d2 < 0 && d3 * d4 < 0 {
        return true;
    }
    (d1 == 0 && on_box(p, a, q))
        || (d2 == 0 && on_box(p, b, q))
        || (d3 == 0 && on_box(a, p, b))
        || (d4 == 0 && on_box(a, q, b))
}

/// Distance in metres from `center` to the segment `a`–`b`, in the local
/// equirectangular projection around `center`.
pub(crate) fn distance_to_segment_m(center: LatLon, a: LatLon, b: LatLon) -> f64 {
    let k = center.lat.to_radians().cos();
    let xy = |p: LatLon| (normalize_dlon(p.lon - center.lon) * k * M_PER_DEG, (p.lat - center.lat) * M_PER_DEG);
    let ((ax, ay), (bx, by)) = (xy(a), xy(b));
    let (dx, dy) = (bx - ax, by - ay);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 { (-(ax * dx + ay * dy) / len2).clamp(0.0, 1.0) } else { 0.0 };
    let (x, y) = (ax + t * dx, ay + t * dy);
    (x * x + y * y).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crossing_touching_collinear_and_apart() {
        assert!(segments_intersect([0.0, 0.0], [2.0, 2.0], [0.0, 2.0], [2.0, 0.0]));
        assert!(segments_intersect([0.0, 0.0], [1.0, 1.0], [1.0, 1.0], [2.0, 0.0]), "touch at an end");
        assert!(segments_intersect([0.0, 0.0], [2.0, 0.0], [1.0, 0.0], [3.0, 0.0]), "collinear overlap");
        assert!(!segments_intersect([0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]), "collinear apart");
        assert!(!segments_intersect([0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.4, 0.6]), "stops short");
    }

    #[test]
    fn distance_to_a_passing_segment() {
        let center = LatLon::new(35.0, -80.0);
        // A north-south segment 100 m east of the centre.
        let dlon = 100.0 / (M_PER_DEG * 35f64.to_radians().cos());
        let d = distance_to_segment_m(center, LatLon::new(34.99, -80.0 + dlon), LatLon::new(35.01, -80.0 + dlon));
        assert!((d - 100.0).abs() < 0.01, "{d}");
        // Segment ending before the centre's latitude: distance to its end.
        let d = distance_to_segment_m(center, LatLon::new(34.99, -80.0), LatLon::new(34.999, -80.0));
        assert!((d - 0.001 * M_PER_DEG).abs() < 0.01, "{d}");
    }
}
