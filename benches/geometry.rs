//! Hot-path geometry benchmarks: what every GPS ping pays per active fence.
//!
//! Targets (design): bounding-box reject ~1 ns, 32-vertex point-in-polygon
//! ~45 ns, circle test (flat-earth fast path) < 1 ns.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use geoclock::geo::{LatLon, PreparedFence, Shape};

const LAT0: f64 = 37.7749;
const LON0: f64 = -122.4194;

/// Regular n-gon of "radius" `r_deg` degrees around (LAT0, LON0), with every
/// other vertex pulled in (a concave star when `dent < 1`).
fn ngon(n: usize, r_deg: f64, dent: f64) -> PreparedFence {
    let ring = (0..n)
        .map(|i| {
            let a = i as f64 / n as f64 * std::f64::consts::TAU;
            let r = if i % 2 == 1 { r_deg * dent } else { r_deg };
            LatLon::new(LAT0 + r * a.sin(), LON0 + r * a.cos())
        })
        .collect();
    PreparedFence::new(&Shape::Polygon { ring }, 50.0).expect("valid polygon")
}

fn circle(lat: f64, r: f64) -> PreparedFence {
    PreparedFence::new(&Shape::Circle { center: LatLon::new(lat, LON0), radius_m: r }, 50.0).expect("valid circle")
}

fn bench(c: &mut Criterion) {
    let poly32 = ngon(32, 0.002, 1.0);
    let star32 = ngon(32, 0.002, 0.8);
    let poly256 = ngon(256, 0.002, 0.9);
    let circ = circle(LAT0, 200.0);
    let circ_hi = circle(85.0, 200.0);

    let far = LatLon::new(LAT0 + 0.5, LON0 + 0.5);
    let center = LatLon::new(LAT0, LON0);
    // Inside the box, outside the polygon: near a corner of the box.
    let corner = LatLon::new(LAT0 + 0.0019, LON0 + 0.0019);
    // ~100 m north of the centre: clearly inside the 200 m circle.
    let c_in = LatLon::new(LAT0 + 0.0009, LON0);
    // Box corner of the 200 m circle: clearly outside but in the box.
    let c_out = LatLon::new(LAT0 + 0.0017, LON0 + 0.0021);
    // 200 m north, on the rim within the fast path's band: haversine decides.
    let c_rim = LatLon::new(LAT0 + 200.0 / 111_195.08, LON0);

    let mut g = c.benchmark_group("geometry");
    g.bench_function("bbox_reject/polygon32", |b| b.iter(|| black_box(&poly32).contains(black_box(far))));
    g.bench_function("bbox_reject/circle", |b| b.iter(|| black_box(&circ).contains(black_box(far))));
    g.bench_function("pip32/inside", |b| b.iter(|| black_box(&poly32).contains(black_box(center))));
    g.bench_function("pip32/outside_in_bbox", |b| b.iter(|| black_box(&poly32).contains(black_box(corner))));
    g.bench_function("pip32_concave/inside", |b| b.iter(|| black_box(&star32).contains(black_box(center))));
    g.bench_function("pip256/inside", |b| b.iter(|| black_box(&poly256).contains(black_box(center))));
    g.bench_function("circle/inside_fast", |b| b.iter(|| black_box(&circ).contains(black_box(c_in))));
    g.bench_function("circle/outside_in_bbox_fast", |b| b.iter(|| black_box(&circ).contains(black_box(c_out))));
    g.bench_function("circle/rim_haversine", |b| b.iter(|| black_box(&circ).contains(black_box(c_rim))));
    g.bench_function("circle_85N/inside_haversine", |b| {
        let p = LatLon::new(85.0009, LON0);
        b.iter(|| black_box(&circ_hi).contains(black_box(p)))
    });
    g.bench_function("within_buffer/polygon32_outside", |b| {
        let p = LatLon::new(LAT0 + 0.0025, LON0);
        b.iter(|| black_box(&poly32).within_buffer(black_box(p)))
    });
    g.finish();

    // Throughput: 1024 varied pings against one fence, as the engine does
    // per vehicle; reported per batch (divide by 1024 for per-ping cost).
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut around = |half: f64| -> Vec<LatLon> {
        (0..1024).map(|_| LatLon::new(LAT0 + half * (2.0 * rnd() - 1.0), LON0 + half * (2.0 * rnd() - 1.0))).collect()
    };
    let far_pts = {
        let mut v = around(0.002);
        v.iter_mut().for_each(|p| p.lat += 1.0);
        v
    };
    let near_poly = around(0.002);
    let near_circ = around(0.0022);
    let count = |f: &PreparedFence, pts: &[LatLon]| pts.iter().filter(|&&p| f.contains(p)).count();
    let mut g = c.benchmark_group("batch1024");
    g.throughput(criterion::Throughput::Elements(1024));
    g.bench_function("bbox_reject/polygon32", |b| b.iter(|| count(black_box(&poly32), black_box(&far_pts))));
    g.bench_function("bbox_reject/circle", |b| b.iter(|| count(black_box(&circ), black_box(&far_pts))));
    g.bench_function("pip32/in_bbox_mixed", |b| b.iter(|| count(black_box(&poly32), black_box(&near_poly))));
    g.bench_function("pip256/in_bbox_mixed", |b| b.iter(|| count(black_box(&poly256), black_box(&near_poly))));
    g.bench_function("circle/in_bbox_mixed", |b| b.iter(|| count(black_box(&circ), black_box(&near_circ))));
    g.finish();

    // Sanity: the benchmarked points are what their names say.
    assert!(!poly32.contains(far) && !circ.contains(far));
    assert!(poly32.contains(center) && !poly32.contains(corner) && star32.contains(center) && poly256.contains(center));
    assert!(circ.contains(c_in) && !circ.contains(c_out));
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
