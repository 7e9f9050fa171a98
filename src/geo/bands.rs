//! Horizontal band index over a polygon's edges, so point-in-polygon only
//! walks the few edges whose y-range can matter for the point.
//!
//! The polygon's y-range is split into `K` equal bands by the function
//! `band_of(y) = min(K - 1, trunc_sat((y - y0) * inv_h))` (`as usize`
//! saturates, so negatives and NaN give 0). Each edge is listed in every band
//! from `band_of(min y)` to `band_of(max y)`.
//!
//! Exactness: `band_of` is monotone non-decreasing in `y`, because IEEE
//! subtraction and multiplication by a positive constant are monotone under
//! rounding, and truncation, saturation and `min` are monotone. So for every
//! edge with `min y <= py <= max y`, `band_of(py)` lies between the edge's
//! first and last band: every edge that can straddle the point's horizontal
//! line, or have an endpoint on it, is in the point's band. Those are exactly
//! the edges the crossing-number test acts on (all others are skipped by its
//! exact y comparisons), so the banded test gives the same answer as the
//! full-ring test for every point, not merely an approximation. Extra edges
//! in a band are harmless: the test skips them itself.

/// Edge as `[x1, y1, x2, y2]`.
pub(crate) type Edge = [f64; 4];

/// Most bands per polygon.
const MAX_BANDS: usize = 1024;

#[derive(Debug, Clone)]
pub(crate) struct BandIndex {
    y0: f64,
    inv_h: f64,
    last: usize,
    /// `start[b]..start[b + 1]` indexes `edges` for band `b`; `len = K + 1`.
    start: Box<[usize]>,
    edges: Box<[Edge]>,
}

impl BandIndex {
    /// Builds the index for a closed ring of `[x, y]` (last = first) whose
    /// y-range is `[y_min, y_max]`.
    pub fn new(pts: &[[f64; 2]], y_min: f64, y_max: f64) -> Self {
        let n_edges = pts.len().saturating_sub(1);
        // About two edges' worth of vertices per band; fewer bands if long
        // edges would make the index large (each edge is copied into every
        // band it spans): at most 8 copies per edge on average.
        let budget = n_edges.saturating_mul(8).saturating_add(64);
        let mut k = (n_edges / 2).clamp(1, MAX_BANDS);
        loop {
            let idx = Self::empty(y_min, y_max, k);
            let total = pts.windows(2).fold(0usize, |acc, w| {
                let (lo, hi) = idx.span(w[0][1], w[1][1]);
                acc.saturating_add(hi - lo + 1)
            });
            if k == 1 || total <= budget {
                return idx.filled(pts);
            }
            k /= 2;
        }
    }

    /// `k` bands over `[y_min, y_max]`, no edges yet.
    fn empty(y_min: f64, y_max: f64, k: usize) -> Self {
        let mut inv_h = k as f64 / (y_max - y_min);
        if !(inv_h.is_finite() && inv_h > 0.0) {
            inv_h = 0.0; // everything in band 0
        }
        BandIndex { y0: y_min, inv_h, last: k - 1, start: Box::new([]), edges: Box::new([]) }
    }

    /// First and last band of an edge with endpoint latitudes `ya`, `yb`.
    fn span(&self, ya: f64, yb: f64) -> (usize, usize) {
        (self.band_of(ya.min(yb)), self.band_of(ya.max(yb)))
    }

    /// Lists every edge of the ring in each of its bands.
    fn filled(mut self, pts: &[[f64; 2]]) -> Self {
        let k = self.last + 1;
        let mut start = vec![0usize; k + 1];
        for w in pts.windows(2) {
            let (lo, hi) = self.span(w[0][1], w[1][1]);
            for c in &mut start[lo..=hi] {
                *c += 1;
            }
        }
        // Prefix sums: start[b] becomes the offset of band b.
        let mut acc = 0usize;
        for c in start.iter_mut() {
            let here = *c;
            *c = acc;
            acc += here;
        }
        let mut fill = start.clone();
        let mut edges = vec![[0.0; 4]; acc];
        for w in pts.windows(2) {
            let e = [w[0][0], w[0][1], w[1][0], w[1][1]];
            let (lo, hi) = self.span(e[1], e[3]);
            for slot in &mut fill[lo..=hi] {
                if let Some(dst) = edges.get_mut(*slot) {
                    *dst = e;
                }
                *slot += 1;
            }
        }
        self.start = start.into_boxed_slice();
        self.edges = edges.into_boxed_slice();
        self
    }

    /// The band of `y` (monotone in `y`; see the module docs).
    #[inline(always)]
    fn band_of(&self, y: f64) -> usize {
        (((y - self.y0) * self.inv_h) as usize).min(self.last)
    }

    /// Every edge that can straddle, or touch, the horizontal line at `y`
    /// (and possibly some more).
    #[inline(always)]
    pub fn edges_near(&self, y: f64) -> &[Edge] {
        let b = self.band_of(y);
        let (s, e) = match (self.start.get(b), self.start.get(b + 1)) {
            (Some(&s), Some(&e)) => (s, e),
            _ => (0, 0),
        };
        self.edges.get(s..e).unwrap_or(&[])
    }

    #[cfg(test)]
    pub fn band_count(&self) -> usize {
        self.last + 1
    }

    #[cfg(test)]
    pub fn entry_count(&self) -> usize {
        self.edges.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(n: usize) -> Vec<[f64; 2]> {
        let mut pts: Vec<[f64; 2]> = (0..n)
            .map(|i| {
                let a = i as f64 / n as f64 * std::f64::consts::TAU;
                [a.cos(), a.sin()]
            })
            .collect();
        pts.push(pts[0]);
        pts
    }

    #[test]
    fn every_touching_edge_is_in_its_band() {
        let pts = ring(64);
        let (lo, hi) = pts.iter().fold((f64::MAX, f64::MIN), |m, p| (m.0.min(p[1]), m.1.max(p[1])));
        let idx = BandIndex::new(&pts, lo, hi);
        assert_eq!(idx.band_count(), 32);
        assert!(idx.entry_count() < 4 * 64);
        // Every vertex y and many y in between: each edge spanning y is listed.
        let mut ys: Vec<f64> = pts.iter().map(|p| p[1]).collect();
        ys.extend((0..=1000).map(|i| lo + (hi - lo) * i as f64 / 1000.0));
        for y in ys {
            let near = idx.edges_near(y);
            for w in pts.windows(2) {
                let e = [w[0][0], w[0][1], w[1][0], w[1][1]];
                if e[1].min(e[3]) <= y && y <= e[1].max(e[3]) {
                    assert!(near.contains(&e), "edge {e:?} missing at y {y}");
                }
            }
        }
        // Out of range and NaN never panic.
        let _ = idx.edges_near(f64::NAN);
        let _ = idx.edges_near(-1e300);
        let _ = idx.edges_near(1e300);
    }

    #[test]
    fn long_edges_shrink_the_index() {
        // A comb: many long vertical teeth spanning the whole height.
        let mut pts = vec![];
        for i in 0..200 {
            let x = i as f64;
            pts.push([x, 0.0]);
            pts.push([x, 100.0]);
            pts.push([x + 0.5, 100.0]);
            pts.push([x + 0.5, 0.0]);
        }
        pts.push([200.0, -1.0]);
        pts.push([0.0, -1.0]);
        pts.push(pts[0]);
        let idx = BandIndex::new(&pts, -1.0, 100.0);
        assert!(idx.entry_count() <= 8 * (pts.len() - 1) + 64);
    }
}
