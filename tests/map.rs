//! The live dispatch map end to end: a real broker (nisshi), the real
//! processor running throughout, the report server with its replicas, and
//! the page in headless Chromium over WebDriver.
//!
//! The day (tests/scenarios/map/day.yaml, with pings of its own): Ann
//! (Truck 1) drives towards Plant 7 in time, Bob (Truck 2) drives away from
//! the Depot (running late before his window ends), Cy is no Azuga driver
//! (failed), 7005 is cancelled (no fence on the map). The page must show
//! every fence and vehicle of the state (the report's fenced appointments),
//! move Ann's marker within 2 s of a ping being produced, turn
//! Plant 7 green when her arrival is decided, keep the stream going across
//! a report server restart, and go through the report's access check: the
//! page opens with a signed link (whose script signs its own requests with
//! it), the data with the token in a header; no token, a token in the URL,
//! a wrong token, a report link and an unknown tenant are the same 401,
//! and the 11th failure within a minute is throttled.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use geoclock::config::link;
use geoclock::config::secret::Secret;
use geoclock::config::tenants;
use geoclock::engine::Event;
use geoclock::kafka::codec::Codec;
use geoclock::kafka::topics::Catalogue;
use geoclock::model::{Id, Ping, Ts};
use geoclock::processor::{self, Processor, Tenants};
use geoclock::scenario::Scenario;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use support::browser::Browser;

const TOKEN: &str = "map-s3cret";
const M_PER_DEG: f64 = 6_371_008.8 * std::f64::consts::PI / 180.0;
const PLANT: (f64, f64) = (35.2271, -80.8431);
const DEPOT: (f64, f64) = (35.4000, -80.9000);

fn tenants_file() -> Vec<tenants::Tenant> {
    let text = format!(
        r#"
[[tenants]]
name = "acme"
timezone = "America/New_York"
settings = {{ window_hours = 2 }}
[tenants.email]
from = "Acme <service@acme.example>"
report_token = {{ value = "{TOKEN}" }}
servicetrade_web_url = "https://app.servicetrade.example"
[tenants.map]
tile_url = ""
"#
    );
    tenants::parse(&text, "map-tenants.toml").expect("tenants")
}

fn t(hhmm: &str) -> Ts {
    Ts::parse(&format!("2026-11-28T{hhmm}Z")).unwrap()
}

/// A ping `south_m` metres south of `at`.
fn ping(vehicle: &str, at: (f64, f64), south_m: f64, time: Ts, kmh: f64) -> Ping {
    Ping {
        vehicle: Id::text(vehicle),
        time,
        lat: at.0 - south_m / M_PER_DEG,
        lon: at.1,
        speed_mph: Some(kmh / 1.609_344),
        accuracy_m: None,
    }
}

struct Pipeline {
    producer: BaseProducer,
    codec: Codec,
    catalogue: Catalogue,
}

impl Pipeline {
    fn send(&self, events: &[Event]) {
        for e in events {
            let r = self.codec.encode_event("acme", e).expect("encodes");
            let topic = self.catalogue.name(r.topic);
            let mut rec = BaseRecord::<Vec<u8>, Vec<u8>>::to(&topic).key(&r.key);
            if let Some(v) = &r.value {
                rec = rec.payload(v);
            }
            self.producer.send(rec).map_err(|(e, _)| e).expect("queued");
        }
        self.producer.flush(Duration::from_secs(30)).expect("acknowledged");
    }
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

fn status(url: &str, bearer: Option<&str>) -> u16 {
    let mut req = http().get(url);
    if let Some(b) = bearer {
        req = req.header("Authorization", &format!("Bearer {b}"));
    }
    req.call().map(|r| r.status().as_u16()).unwrap_or(0)
}

fn get_text(url: &str) -> (u16, String) {
    let mut r = http().get(url).header("Authorization", &format!("Bearer {TOKEN}")).call().expect("GET");
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default())
}

fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn features<'a>(fc: &'a Value, kind: &str) -> Vec<&'a Value> {
    fc["features"].as_array().unwrap().iter().filter(|f| f["properties"]["kind"] == kind).collect()
}

fn epoch_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[test]
fn the_live_map_follows_the_pipeline_in_a_real_browser() {
    let world = support::world("map", 2);
    let (broker, catalogue, registry, rt, scratch) =
        (&world.broker, &world.catalogue, &world.registry, &world.rt, world.scratch.clone());
    let codec = geoclock::kafka::codec::Codec::new(registry.clone(), catalogue).unwrap();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("enable.idempotence", "true")
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    let pipe = Pipeline { producer, codec, catalogue: catalogue.clone() };

    // The processor runs throughout; the report server follows it.
    let day = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/map/day.yaml");
    let sc = Scenario::load(&day).unwrap();
    let mut pc =
        processor::Config::new(broker.brokers(), catalogue.clone(), scratch.join("processor"), registry.clone());
    pc.tenants = Tenants { tenants: BTreeMap::from([("acme".to_string(), sc.settings.clone())]), ..Tenants::default() };
    pc.limits.commit_interval = Duration::from_millis(200);
    pc.group_id = format!("{}-processor", catalogue.prefix);
    let proc = Processor::start(pc).expect("processor starts");
    let server = world.report_server(tenants_file(), &scratch.join("report"), "127.0.0.1:0");
    let base = server.url();
    let map_url = format!("{base}/map/acme");

    // The access check (9 failures here, under the throttle's 10 a minute):
    // without the token, or with it in the URL, 401 for the page, the data
    // and the stream; a wrong token, a link for a report (not the map) and
    // an unknown tenant get the same 401.
    let now_s = epoch_ms() / 1000;
    let map_link = link::query(&Secret::new(TOKEN), "acme", link::MAP_SCOPE, now_s + 3600);
    let report_link = link::query(&Secret::new(TOKEN), "acme", &link::report_scope("2026-11-28"), now_s + 3600);
    let refused = |url: &str, bearer: Option<&str>| {
        let mut req = http().get(url);
        if let Some(b) = bearer {
            req = req.header("Authorization", &format!("Bearer {b}"));
        }
        let mut r = req.call().expect("GET");
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default())
    };
    let unauthorized = refused(&format!("{map_url}/geojson"), None);
    assert_eq!(unauthorized.0, 401);
    for path in ["", "/events"] {
        assert_eq!(refused(&format!("{map_url}{path}"), None), unauthorized, "{path} without a token");
    }
    for path in ["", "/geojson", "/events"] {
        assert_eq!(refused(&format!("{map_url}{path}?token={TOKEN}"), None), unauthorized, "{path}: token in the URL");
    }
    assert_eq!(refused(&format!("{map_url}/geojson"), Some("wrong")), unauthorized, "a wrong token");
    assert_eq!(refused(&format!("{map_url}/geojson?{report_link}"), None), unauthorized, "a report link");
    assert_eq!(refused(&format!("{base}/map/nobody"), Some(TOKEN)), unauthorized, "an unknown tenant");
    assert_eq!(status(&format!("{map_url}?day=28.11.2026"), Some(TOKEN)), 400);

    // The day so far: entities, En Route clock-ins, ten minutes of driving.
    pipe.send(&sc.all_events());
    let mut pings = Vec::new();
    for k in 0..=20 {
        let time = t("13:40:00").plus_millis(k * 30_000);
        pings.push(ping("v1", PLANT, 20_000.0 - 50.0 / 3.6 * 30.0 * k as f64, time, 50.0));
        pings.push(ping("v2", DEPOT, 3_000.0 + 50.0 / 3.6 * 30.0 * k as f64, time, 50.0));
    }
    pipe.send(&pings.iter().cloned().map(Event::Ping).collect::<Vec<_>>());

    let fc = wait_until(
        "the map's data to show the day's fences, two vehicles and Bob running late",
        Duration::from_secs(90),
        || {
            let (code, body) = get_text(&format!("{map_url}/geojson"));
            let fc: Value = serde_json::from_str(&body).ok().filter(|_| code == 200)?;
            let late = fc["geoclock"]["late"] == 1;
            let vehicles_now =
                features(&fc, "vehicle").iter().all(|v| v["properties"]["time"] == "2026-11-28T13:50:00Z");
            (features(&fc, "fence").len() >= 3 && features(&fc, "vehicle").len() == 2 && late && vehicles_now)
                .then_some(fc)
        },
    );
    assert_eq!(status(&format!("{map_url}/geojson?{map_link}"), None), 200, "a map link opens the data");
    let fence = |fc: &Value, appt: &str| -> Value {
        let id = |f: &&Value| f["properties"]["appointment"].to_string().trim_matches('"') == appt;
        features(fc, "fence").into_iter().find(id).cloned().unwrap()
    };
    assert_eq!(fence(&fc, "7001")["properties"]["state"], "en_route");
    assert_eq!(fence(&fc, "7001")["properties"]["late"], false);
    assert_eq!(fence(&fc, "7002")["properties"]["late"], true, "Bob drives away before his window ends");
    assert_eq!(fence(&fc, "7003")["properties"]["state"], "failed");
    let metrics = get_text(&format!("{base}/metrics")).1;
    assert!(metrics.contains("geoclock_report_late_appointments{tenant=\"acme\"} 1"), "{metrics}");

    // The state agrees: the report's fenced appointments and the vehicles
    // that pinged.
    let (_, report) = get_text(&format!("{base}/report/acme?format=json&day=2026-11-28"));
    let report: Value = serde_json::from_str(&report).unwrap();
    let fenced: BTreeSet<String> = report
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["fence_created"] == true && r["status"] != "canceled_by_customer")
        .map(|r| r["appointment"].to_string().trim_matches('"').to_string())
        .collect();
    let pinged: BTreeSet<&str> = pings.iter().map(|p| p.vehicle.as_str()).collect();

    let browser = Browser::start(1400, 900);
    browser.goto(&format!("{map_url}?{map_link}"));
    browser.wait_for("the first render", Duration::from_secs(30), "return document.body.dataset.rendered === '1';");
    let counts = browser.eval("return window.geoclockMap.counts();");
    assert_eq!(counts["fences"], fenced.len(), "every fence of the state: {counts}");
    assert_eq!(counts["vehicles"], pinged.len(), "every vehicle with a fix: {counts}");
    let ids = browser.eval("return window.geoclockMap.fenceIds().sort();");
    assert_eq!(ids, json!(fenced.iter().collect::<Vec<_>>()));
    browser.wait_for(
        "the list",
        Duration::from_secs(5),
        &format!("return document.querySelectorAll('#list tbody tr').length === {};", fenced.len()),
    );
    let first_row = browser.eval("return document.querySelector('#list tbody tr').dataset.id;");
    assert_eq!(first_row, "7002", "the late appointment is listed first");
    assert_eq!(browser.eval("return window.geoclockMap.fence('7002');")["late"], true);
    let ann_fence = browser.eval("return window.geoclockMap.fence('7001');");
    assert_eq!(ann_fence["state"], "en_route");
    let blue = ann_fence["color"].clone();
    browser.wait_for("the stream", Duration::from_secs(10), "return document.body.dataset.stream === 'open';");

    // A ping produced now moves Ann's marker within 2 s.
    let next = ping("v1", PLANT, 20_000.0 - 50.0 / 3.6 * 30.0 * 22.0, t("13:51:00"), 50.0);
    let produced_at = epoch_ms();
    pipe.send(&[Event::Ping(next.clone())]);
    let script = format!(
        "var v = window.geoclockMap.vehicle('v1'); return v && v.t === {} && v.drawnAt ? v : null;",
        next.time.millis()
    );
    let moved = browser.wait_for("Ann's marker to move", Duration::from_secs(30), &script);
    let delay = moved["drawnAt"].as_i64().unwrap() - produced_at;
    eprintln!("ping produced -> marker drawn: {delay} ms");
    assert!(delay <= 2_000, "the marker moved {delay} ms after the ping was produced");
    // The fix comes by the stream (exact) or by a GeoJSON reload, whose
    // positions are rounded to 7 decimals (about 1 cm).
    assert!((moved["lat"].as_f64().unwrap() - next.lat).abs() <= 0.6e-7, "{moved} vs {}", next.lat);

    // Ann reaches Plant 7: the arrival is decided and the fence turns.
    let arrived_at = epoch_ms();
    pipe.send(&[Event::Ping(ping("v1", PLANT, 0.0, t("13:58:00"), 5.0))]);
    browser.wait_for(
        "Plant 7 to turn on site",
        Duration::from_secs(60),
        "var f = window.geoclockMap.fence('7001'); return f && f.state === 'on_site';",
    );
    eprintln!("arrival ping produced -> fence on site on the page: {} ms", epoch_ms() - arrived_at);
    let green = browser.eval("return window.geoclockMap.fence('7001');");
    assert_ne!(green["color"], blue, "a new colour");
    assert_eq!(green["late"], false);

    // Clicking Ann's truck shows her trail for the day.
    browser.eval("window.geoclockMap.select('vehicle', 'v1', false);");
    let trail = browser.wait_for(
        "the breadcrumbs",
        Duration::from_secs(10),
        "return Number(document.body.dataset.trail || 0) > 20 && document.body.dataset.trail;",
    );
    assert_eq!(trail, "23", "every fix of the day");
    let panel = browser.eval("return document.getElementById('panel-content').textContent;");
    let panel = panel.as_str().unwrap();
    assert!(
        panel.contains("Truck 1") && panel.contains("Ann Lee") && panel.contains("Plant 7 | J-1 | 7001"),
        "{panel}"
    );

    // The report server restarts on the same port: the page reconnects by
    // itself and keeps following.
    let addr = base.trim_start_matches("http://").to_string();
    rt.block_on(server.stop());
    let server = world.report_server(tenants_file(), &scratch.join("report"), &addr);
    browser.wait_for(
        "the page to reconnect",
        Duration::from_secs(60),
        "return document.body.dataset.connections === '2' && document.body.dataset.stream === 'open';",
    );
    let later = ping("v2", DEPOT, 20_000.0, t("14:05:00"), 50.0);
    pipe.send(&[Event::Ping(later.clone())]);
    let script =
        format!("var v = window.geoclockMap.vehicle('v2'); return v && v.t === {} && v.drawnAt;", later.time.millis());
    browser.wait_for("Bob's marker to move after the restart", Duration::from_secs(30), &script);

    // The page's report link carries the map's link, which opens the report.
    let report_href = browser.eval("return document.getElementById('report-link').href;");
    let report_href = report_href.as_str().unwrap();
    assert!(report_href.contains(&map_link) && !report_href.contains(TOKEN), "{report_href}");
    // (503 while the restarted server's report replica catches up.)
    wait_until("the page's report link to open the report", Duration::from_secs(60), || {
        let s = status(report_href, None);
        assert!(s == 200 || s == 503, "the page's report link: {s}");
        (s == 200).then_some(())
    });
    browser.close();

    // Failed attempts from one address: the 11th within a minute is 429,
    // even with the right token, on the map as on the report.
    for attempt in 1..=10 {
        assert_eq!(status(&format!("{map_url}/geojson"), Some("wrong")), 401, "attempt {attempt}");
    }
    assert_eq!(status(&format!("{map_url}/geojson"), Some(TOKEN)), 429);
    assert_eq!(status(&format!("{base}/report/acme"), Some(TOKEN)), 429, "the report shares the throttle");

    rt.block_on(server.stop());
    proc.stop().expect("processor stops");
    let _ = std::fs::remove_dir_all(&scratch);
}
