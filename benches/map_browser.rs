//! The live map in headless Chromium with a big fleet: a generated day of
//! 10,000 vehicles and 5,000 fences served by the map's real routes (page,
//! GeoJSON, event stream) from an in-memory `MapData`, while fixes stream
//! in through the same hub the positions replica feeds.
//!
//! Reports time to first render (navigation start to the first frame with
//! the day drawn, and the GeoJSON's size), then for two views — the whole
//! fleet (clustered) and one town at street zoom — the page's draw time
//! per frame and the browser's CPU per 1,000 fixes applied while fixes
//! stream in (2,000 a second: each vehicle every 5 s), then the frame
//! interval while the map is also panned every frame.
//!
//! `cargo bench --bench map_browser` (full size); under `cargo test` it
//! runs a small day as a smoke test. Needs `chromium` and `chromedriver`
//! (scripts/install-nisshi.sh).

#[path = "../tests/support/browser.rs"]
#[allow(dead_code)]
mod browser;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use browser::{cpu_seconds, Browser};
use chrono::NaiveDate;
use geoclock::config::link;
use geoclock::config::secret::Secret;
use geoclock::config::tenants::{self, Tenant};
use geoclock::geo::{LatLon, Shape};
use geoclock::model::{Id, Ts};
use geoclock::report::access::Access;
use geoclock::report::map::eta::{Basis, Eta};
use geoclock::report::map::geojson::{feature_collection, Trail};
use geoclock::report::map::live::{Hub, MapData, MapError};
use geoclock::report::map::positions::Moved;
use geoclock::report::map::routes::{router, MapMetrics};
use geoclock::report::map::track::Fix;
use geoclock::report::map::view::{FenceState, FenceView, TechView, TenantView, VehicleView};
use geoclock::report::FenceResult;
use prometheus::{IntCounterVec, IntGauge, Opts};
use serde_json::Value;

const TOKEN: &str = "bench-token";
const CENTRE: (f64, f64) = (35.2271, -80.8431);
const M_PER_DEG: f64 = 6_371_008.8 * std::f64::consts::PI / 180.0;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A point within `km` of the centre.
    fn near(&mut self, km: f64) -> LatLon {
        let (dn, de) = ((self.next() - 0.5) * 2.0 * km * 1000.0, (self.next() - 0.5) * 2.0 * km * 1000.0);
        LatLon::new(CENTRE.0 + dn / M_PER_DEG, CENTRE.1 + de / (M_PER_DEG * CENTRE.0.to_radians().cos()))
    }
}

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 28).unwrap()
}

fn at(minutes: i64) -> Ts {
    Ts::parse("2026-11-28T12:00:00Z").unwrap().plus_millis(minutes * 60_000)
}

/// A generated day: `n_fences` fences in every state and `n_vehicles`
/// vehicles over a 60 km square.
fn generate(n_vehicles: usize, n_fences: usize) -> TenantView {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let weights = [
        (FenceState::Scheduled, 0.40),
        (FenceState::EnRoute, 0.15),
        (FenceState::OnSite, 0.20),
        (FenceState::ArrivedOutsideWindow, 0.03),
        (FenceState::Failed, 0.07),
        (FenceState::Completed, 0.15),
    ];
    let fences = (0..n_fences)
        .map(|i| {
            let mut pick = rng.next();
            let state = weights.iter().find(|(_, w)| {
                pick -= w;
                pick < 0.0
            });
            let state = state.map_or(FenceState::Scheduled, |(s, _)| *s);
            let start = at(((i % 20) * 30) as i64);
            let late = state == FenceState::EnRoute && rng.next() < 0.3;
            let centre = rng.near(30.0);
            let shape = if i % 10 == 0 {
                let d = 0.0015;
                Shape::Polygon {
                    ring: vec![
                        LatLon::new(centre.lat - d, centre.lon - d),
                        LatLon::new(centre.lat - d, centre.lon + d),
                        LatLon::new(centre.lat + d, centre.lon + d),
                        LatLon::new(centre.lat + d, centre.lon - d),
                    ],
                }
            } else {
                Shape::Circle { center: centre, radius_m: 100.0 + 200.0 * rng.next() }
            };
            let eta = (state == FenceState::EnRoute).then(|| Eta {
                at: Some(start.plus_millis(if late { 150 } else { 20 } * 60_000)),
                distance_m: 5_000.0,
                speed_mps: 12.0,
                basis: Basis::Moving,
                late,
            });
            FenceView {
                appointment: Id::number(100_000 + i as i64),
                label: format!("Site {i} | J-{i} | {}", 100_000 + i),
                shape,
                state,
                color: state.color(),
                state_reason: (state == FenceState::Failed).then(|| "Vehicle never arrived".to_string()),
                status: if state == FenceState::Completed { "completed" } else { "scheduled" },
                window_start: start,
                window_end: start.plus_millis(2 * 3_600_000),
                location_name: Some(format!("Site {i}")),
                job: Some(Id::number(i as i64)),
                job_number: Some(Id::text(format!("J-{i}"))),
                quick_link: None,
                techs: vec![TechView {
                    id: Some(Id::number((i % n_vehicles.max(1)) as i64)),
                    name: Some(format!("Tech {}", i % n_vehicles.max(1))),
                    vehicle: Some(Id::text(format!("v{}", i % n_vehicles.max(1)))),
                    fence_result: FenceResult::NotArrived,
                    enroute_clock_in: None,
                    enroute_clock_out: None,
                    onsite_clock_in: None,
                    onsite_clock_out: None,
                    service_link_sent: None,
                    arrival: None,
                    eta: eta.clone(),
                    failures: vec![],
                }],
                late,
                eta: eta.and_then(|e| e.at),
                explanation: vec![format!("Tech {i}: generated")],
                failures: vec![],
            }
        })
        .collect();
    let vehicles = (0..n_vehicles)
        .map(|i| {
            let p = rng.near(30.0);
            VehicleView {
                id: Id::text(format!("v{i}")),
                name: format!("Truck {i}"),
                time: at(300),
                lat: p.lat,
                lon: p.lon,
                speed_mph: Some(30.0),
                heading_deg: Some((rng.next() * 360.0).round()),
                stale: false,
                tech: Some(Id::number(i as i64)),
                tech_name: Some(format!("Tech {i}")),
                driver_name: None,
                eta_appointment: None,
                eta: None,
                late: false,
            }
        })
        .collect();
    TenantView { seq: 0, tenant: "bench".into(), day: day(), now: Some(at(300)), fences, vehicles, late: 0 }
}

struct Generated {
    hub: Hub,
    view: Arc<TenantView>,
}

impl MapData for Generated {
    fn hub(&self) -> &Hub {
        &self.hub
    }

    fn ready(&self) -> bool {
        true
    }

    fn view(&self, _: &Tenant, _: Option<NaiveDate>) -> Result<Arc<TenantView>, MapError> {
        Ok(self.view.clone())
    }

    fn trails(&self, _: &Tenant, _: NaiveDate, _: Option<&str>) -> Result<Vec<Trail>, MapError> {
        Ok(Vec::new())
    }
}

fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[((s.len() - 1) as f64 * p).round() as usize]
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (n_vehicles, n_fences, stream_s, rate) =
        if full { (10_000, 5_000, 10u64, 2_000usize) } else { (1_000, 500, 2, 500) };
    let tenant_text = format!(
        "[[tenants]]\nname = \"bench\"\ntimezone = \"America/New_York\"\n[tenants.email]\nfrom = \"B <b@bench.example>\"\n\
         report_token = {{ value = \"{TOKEN}\" }}\n[tenants.map]\ntile_url = \"\"\n"
    );
    let tenants: HashMap<String, Tenant> =
        tenants::parse(&tenant_text, "bench").unwrap().into_iter().map(|t| (t.name.clone(), t)).collect();
    let view = generate(n_vehicles, n_fences);
    let hub = Hub::new(["bench".to_string()]);
    let view = hub.publish(view);
    let built = Instant::now();
    let geojson_bytes = feature_collection(&view, &[]).to_string().len();
    let built_ms = built.elapsed().as_secs_f64() * 1000.0;
    let data = Arc::new(Generated { hub, view: view.clone() });
    let metrics = MapMetrics {
        requests: IntCounterVec::new(Opts::new("bench_requests", "-"), &["endpoint", "status"]).unwrap(),
        streams: IntGauge::new("bench_streams", "-").unwrap(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let running = rt
        .block_on(geoclock::http::server::serve(
            router(data.clone(), Arc::new(tenants), Arc::new(Access::default()), metrics),
            "127.0.0.1:0",
        ))
        .expect("server");
    let expires = chrono::Utc::now().timestamp() + 3600;
    let signed = link::query(&Secret::new(TOKEN), "bench", link::MAP_SCOPE, expires);
    let url = format!("{}/map/bench?{signed}", running.url());

    let b = Browser::start(1600, 1000);
    b.goto(&url);
    b.wait_for("the first render", Duration::from_secs(120), "return document.body.dataset.rendered === '1';");
    let counts = b.eval("return window.geoclockMap.counts();");
    assert_eq!(counts["vehicles"], n_vehicles, "{counts}");
    assert_eq!(counts["fences"], n_fences, "{counts}");
    let ttfr = b.eval("return performance.getEntriesByName('geoclock-first-render')[0].startTime;");
    let nav = b.eval(
        "var n = performance.getEntriesByType('navigation')[0], m = function (k) { var e = performance.getEntriesByName(k)[0]; return e ? e.startTime : null; };\
         return {response: n.responseEnd, dom: n.domContentLoadedEventEnd, request: m('geoclock-geojson-request'),\
         answered: m('geoclock-geojson-response'), parsed: m('geoclock-geojson-parsed'), applied: m('geoclock-geojson-applied')};",
    );
    b.wait_for("the stream", Duration::from_secs(30), "return document.body.dataset.stream === 'open';");
    let ms = |k: &str| nav[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "map_browser: {n_vehicles} vehicles, {n_fences} fences; GeoJSON {:.1} MB, built in {built_ms:.0} ms by this \
         process ({} build)\n  first render at {:.0} ms after navigation start: page {:.0} ms, GeoJSON requested at {:.0}, \
         first byte at {:.0}, parsed at {:.0}, applied at {:.0}",
        geojson_bytes as f64 / 1e6,
        if cfg!(debug_assertions) { "debug" } else { "release" },
        ttfr.as_f64().unwrap_or(f64::NAN),
        ms("response"),
        ms("request"),
        ms("answered"),
        ms("parsed"),
        ms("applied"),
    );

    let views: [(&str, &str); 2] = [
        ("whole fleet (fit, clustered)", "document.getElementById('zoom-fit').click();"),
        ("one town (zoom 14, markers)", "window.geoclockMap.setView(35.2271, -80.8431, 14);"),
    ];
    let ids: Vec<Id> = view.vehicles.iter().map(|v| v.id.clone()).collect();
    let positions: Vec<(f64, f64)> = view.vehicles.iter().map(|v| (v.lat, v.lon)).collect();
    let tick = Arc::new(std::sync::atomic::AtomicI64::new(0));
    for (name, set_view) in views {
        b.eval(set_view);
        std::thread::sleep(Duration::from_millis(500));
        let stop = Arc::new(AtomicBool::new(false));
        let streamer = {
            let (data, ids, positions, stop, tick) =
                (data.clone(), ids.clone(), positions.clone(), stop.clone(), tick.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(42);
                let began = Instant::now();
                let mut sent = 0usize;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // Fix times keep rising across views: a page drops older ones.
                    let k = tick.fetch_add(1, Ordering::Relaxed) + 1;
                    n += 1;
                    let mut batch: Vec<Moved> = (0..rate / 10)
                        .map(|_| {
                            let i = (rng.next() * ids.len() as f64) as usize % ids.len();
                            let (lat, lon) = positions[i];
                            let drift = (k % 600) as f64 * 0.00005;
                            Moved {
                                vehicle: ids[i].clone(),
                                fix: Fix {
                                    time: at(300).plus_millis(k * 100),
                                    lat: lat + drift * (rng.next() - 0.5),
                                    lon: lon + drift * (rng.next() - 0.5),
                                    speed_mph: Some(30.0),
                                },
                                heading_deg: Some((rng.next() * 360.0).round()),
                            }
                        })
                        .collect();
                    batch.sort_by(|a, b| a.vehicle.cmp(&b.vehicle));
                    batch.dedup_by(|a, b| a.vehicle == b.vehicle);
                    sent += batch.len();
                    data.hub.fixes("bench", &batch);
                    if let Some(wait) = Duration::from_millis(100 * n).checked_sub(began.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                sent
            })
        };
        // Fixes stream in while the map stands still: draw time and CPU.
        std::thread::sleep(Duration::from_millis(500));
        b.eval("window.geoclockMap.resetStats();");
        let pids = b.pids();
        let cpu0 = cpu_seconds(&pids);
        std::thread::sleep(Duration::from_secs(stream_s));
        let cpu = cpu_seconds(&pids) - cpu0;
        let s = b.eval(
            "var s = window.geoclockMap.stats; return {frames: s.frames, draw: s.drawMs, applied: s.fixesApplied,\
             markers: s.markersDrawn, clusters: s.clustersDrawn, fences: s.fencesDrawn};",
        );
        // Then panned every frame for 3 s while they keep streaming.
        let gaps = b.eval_async(
            "var done = arguments[arguments.length - 1], m = window.geoclockMap, gaps = [], last = 0, t0 = 0;\
             function step(ts) { if (last) gaps.push(ts - last); else t0 = ts; last = ts; m.panBy(2, 1);\
             if (ts - t0 < 3000) requestAnimationFrame(step); else done(gaps); }\
             requestAnimationFrame(step);",
        );
        stop.store(true, Ordering::Relaxed);
        let sent = streamer.join().unwrap();
        let (draw, gaps) = (numbers(&s["draw"]), numbers(&gaps));
        let applied = s["applied"].as_f64().unwrap_or(0.0);
        println!(
            "  {name}: {} markers, {} clusters, {} fences drawn; {sent} fixes streamed, {applied} applied in {stream_s} s ({:.0}/s)\n    \
             standing still: draw per frame p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms over {} frames; \
             browser CPU {:.2} s = {:.2} ms per 1,000 fixes applied\n    \
             panned every frame: frame interval p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms over {} frames",
            s["markers"],
            s["clusters"],
            s["fences"],
            applied / stream_s as f64,
            percentile(&draw, 0.5),
            percentile(&draw, 0.95),
            percentile(&draw, 1.0),
            draw.len(),
            cpu,
            cpu * 1000.0 / applied.max(1.0) * 1000.0,
            percentile(&gaps, 0.5),
            percentile(&gaps, 0.95),
            percentile(&gaps, 1.0),
            gaps.len(),
        );
        assert!(applied > 0.0, "fixes reached the page");
        assert!(!draw.is_empty() && !gaps.is_empty(), "frames were drawn");
    }
    b.close();
    rt.block_on(running.stop());
}
