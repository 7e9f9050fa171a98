//! `report serve` against a real broker (nisshi) and the real processor.
//!
//! A scenario runs through the processor, which writes its changelog; the
//! sinks' side is a few `SinkResult` records produced by hand (one failed
//! geofence). One report server is started before anything happened and
//! must follow the changelog and the results live; a second one is started
//! at the end and must be complete as soon as it says it is ready. Both are
//! checked against the pure engine's rows, in JSON, CSV and HTML, with the
//! token, status and day rules; the page is also loaded in headless
//! Chromium (when installed: Debian package `chromium`) to check that its
//! script runs under the page's Content-Security-Policy and sorts.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use geoclock::config::link;
use geoclock::config::secret::Secret;
use geoclock::config::tenants;
use geoclock::engine::Action;
use geoclock::kafka::codec::Codec;
use geoclock::kafka::records::{Outcome, SinkResult};
use geoclock::kafka::topics::{key, Catalogue, Topic};
use geoclock::model::Ts;
use geoclock::report::render;
use geoclock::report::ReportRow;
use geoclock::scenario::kafka::ViaKafka;
use geoclock::scenario::Scenario;
use serde_json::Value;
use support::broker::Broker;

const TOKEN: &str = "report-s3cret";
const WEB: &str = "https://app.servicetrade.example";
const FENCE_FAILURE: &str = "Azuga rejected geofence: HTTP 422: radius 5 m, minimum 50 m";

/// Appointment 7001 starts on 2026-11-28 in New York (09:00) with Ann
/// (arrives) and Bob (not in Azuga); 7002 starts at 02:00 UTC, which is
/// the evening of 2026-11-27 in New York, and Ann never gets there.
const SCENARIO: &str = r#"
tenant: acme
servicetrade:
  users:
    - {id: 11, name: "Ann Lee", email: "ann@acme.example"}
    - {id: 12, name: "Bob Ray", email: "bob@acme.example"}
  locations:
    - {id: 5, name: "Plant 7", lat: 35.2271, lon: -80.8431, email: "fm@plant.example"}
    - {id: 6, name: "Depot, North", lat: 35.4000, lon: -80.9000}
  jobs: [{id: 900, number: "J-1001", location: 5}, {id: 901, number: "J-1002", location: 6}]
  appointments:
    - {id: 7001, job: 900, status: scheduled, window_start: "2026-11-28T14:00:00Z", window_end: "2026-11-28T16:00:00Z", techs: [11, 12]}
    - {id: 7002, job: 901, status: scheduled, window_start: "2026-11-28T02:00:00Z", window_end: "2026-11-28T03:00:00Z", techs: [11]}
azuga:
  drivers: [{id: d1, name: "Ann Lee", email: "ann@acme.example"}]
  vehicles: [{id: v1, name: "Truck 1"}]
  pairings: [{driver: d1, vehicle: v1, from: "2026-11-27T00:00:00Z"}]
events:
  - clock: {user: 11, appointment: 7001, activity: enroute, action: in, time: "2026-11-28T13:10:00Z"}
  - ping: {vehicle: v1, lat: 35.2272, lon: -80.8430, time: "2026-11-28T13:40:00Z", speed_mph: 3}
"#;

fn tenants_file() -> Vec<tenants::Tenant> {
    let text = format!(
        r#"
[[tenants]]
name = "acme"
timezone = "America/New_York"
[tenants.email]
from = "Acme <service@acme.example>"
report_token = {{ value = "{TOKEN}" }}
servicetrade_web_url = "{WEB}"

[[tenants]]
name = "quiet"
[tenants.email]
from = "Quiet <service@quiet.example>"
"#
    );
    tenants::parse(&text, "test-tenants.toml").expect("tenants")
}

struct Http(ureq::Agent);

impl Http {
    fn new() -> Http {
        Http(ureq::Agent::config_builder().http_status_as_error(false).build().into())
    }

    /// `(status, content type, body)`.
    fn get(&self, url: &str, bearer: Option<&str>) -> (u16, String, String) {
        let mut req = self.0.get(url);
        if let Some(t) = bearer {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let mut r = req.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let ctype = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let body = r.body_mut().read_to_string().unwrap_or_default();
        (r.status().as_u16(), ctype, body)
    }

    fn json(&self, url: &str) -> Value {
        let (status, _, body) = self.get(url, Some(TOKEN));
        assert_eq!(status, 200, "{url}: {body}");
        serde_json::from_str(&body).expect("JSON")
    }
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn result(tenant_cmd: (&str, &str, &str), outcome: Outcome, reason: &str, remote: Option<&str>, at: i64) -> SinkResult {
    let (id, appointment, kind) = tenant_cmd;
    SinkResult {
        command_id: id.into(),
        appointment: appointment.into(),
        kind: kind.into(),
        sink: if kind == "clock" {
            "clock"
        } else if kind == "send_service_link" {
            "email"
        } else {
            "geofence"
        }
        .into(),
        outcome,
        reason: reason.into(),
        remote_ref: remote.map(str::to_string),
        attempts: 1,
        executed_at: Ts::parse("2026-11-28T15:00:00Z").unwrap().plus_millis(at),
        command_time: Ts::parse("2026-11-28T13:40:00Z").unwrap(),
    }
}

fn produce_results(broker: &Broker, catalogue: &Catalogue, codec: &Codec, results: &[SinkResult]) {
    let records: Vec<(Vec<u8>, Vec<u8>)> = results
        .iter()
        .map(|r| (key("acme", &r.command_id).unwrap(), codec.encode_result("acme", r).unwrap()))
        .collect();
    support::kafka::produce(broker.brokers(), &catalogue.name(Topic::Results), &records);
}

/// The JSON rows of `got` with the sink columns set aside, and the engine's
/// rows, for comparison.
fn engine_columns(mut got: Value) -> Value {
    for row in got.as_array_mut().unwrap() {
        let m = row.as_object_mut().unwrap();
        // Always present in the served JSON; the engine's row leaves them
        // out when the appointment has no office (as here).
        for k in ["office", "office_name"] {
            assert_eq!(m.remove(k), Some(Value::Null), "column {k}");
        }
        for k in [
            "failure_texts",
            "sink_failures",
            "fence_in_azuga",
            "geomark_id",
            "service_link_delivered",
            "trackme_url",
            "clock_events_posted",
            "quick_link",
            "actions",
            "fence_shape",
            "explain",
        ] {
            assert!(m.remove(k).is_some(), "column {k}");
        }
    }
    got
}

/// The engine's rows for `day` in JSON, with `extra` failures appended.
fn expected(rows: &[ReportRow], day: &str, extra: &[&str]) -> Value {
    let day = day.parse().unwrap();
    let tz = render::zone(Some("America/New_York"));
    let mut v = serde_json::to_value(render::for_day(rows.to_vec(), day, tz)).unwrap();
    for row in v.as_array_mut().unwrap() {
        let f = row["failures"].as_array_mut().unwrap();
        f.extend(extra.iter().map(|e| Value::String(e.to_string())));
        row["failure_reason"] = f.first().cloned().unwrap_or(Value::Null);
    }
    v
}

fn tech_row<'a>(rows: &'a Value, appt: &str, tech: &str) -> &'a Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["appointment"].to_string().trim_matches('"') == appt && r["tech"].to_string().trim_matches('"') == tech
        })
        .unwrap_or_else(|| panic!("no row {appt}/{tech} in {rows}"))
}

#[test]
fn report_server_follows_the_pipeline_and_serves_html_csv_json_per_local_day() {
    let world = support::world("report", 2);
    let (broker, catalogue, registry, codec, rt) =
        (&world.broker, &world.catalogue, &world.registry, &world.codec, &world.rt);
    let scratch = world.scratch.clone();
    let http = Http::new();

    // Server A is up before anything happens: an empty, ready report.
    let live = world.report_server(tenants_file(), &scratch.join("a"), "127.0.0.1:0");
    let base = format!("{}/report/acme", live.url());
    wait_until("server A ready", Duration::from_secs(30), || live.ready());
    assert_eq!(http.json(&format!("{base}?format=json&day=2026-11-28")), Value::Array(vec![]));

    // The pipeline runs; the sinks report.
    let sc = Scenario::from_yaml(SCENARIO, "report.yaml").unwrap();
    let pure = sc.run().unwrap();
    let opts = ViaKafka {
        brokers: broker.bootstrap(),
        partitions: catalogue.partitions,
        timeout: Duration::from_secs(60),
        state_dir: Some(scratch.join("processor")),
    };
    let out = sc.run_via_kafka_on(&opts, &catalogue, registry.clone()).expect("scenario through the processor");
    let id = |kind: &str, appt: &str| {
        let c = out.commands.iter().find(|c| c.action.kind() == kind && c.appointment.to_string() == appt);
        c.unwrap_or_else(|| panic!("no {kind} for {appt} in {:?}", out.commands)).id.clone()
    };
    let clocks: Vec<String> =
        out.commands.iter().filter(|c| matches!(c.action, Action::Clock(_))).map(|c| c.id.clone()).collect();
    assert_eq!(clocks.len(), 2, "En Route out and On Site in for Ann");
    let mut results = vec![
        result((&id("create_geofence", "7001"), "7001", "create_geofence"), Outcome::Failed, FENCE_FAILURE, None, 1),
        result((&id("create_geofence", "7002"), "7002", "create_geofence"), Outcome::Done, "", Some("gm-7002"), 2),
        result(
            (&id("send_service_link", "7001"), "7001", "send_service_link"),
            Outcome::Done,
            "",
            Some("https://trackme.azuga.example/t/1"),
            3,
        ),
    ];
    for (n, c) in clocks.iter().enumerate() {
        results.push(result((c, "7001", "clock"), Outcome::Done, "", Some("ce-1"), 4 + n as i64));
    }
    produce_results(&broker, &catalogue, &codec, &results);

    // A follows both the changelog and the results.
    let day28 = format!("{base}?format=json&day=2026-11-28");
    let want28 = expected(&pure.report, "2026-11-28", &[FENCE_FAILURE]);
    assert_eq!(want28.as_array().unwrap().len(), 2, "7001: Ann and Bob");
    wait_until("server A to show the pipeline's rows and the sink failure", Duration::from_secs(60), || {
        let (status, _, body) = http.get(&day28, Some(TOKEN));
        status == 200 && serde_json::from_str::<Value>(&body).is_ok_and(|v| engine_columns(v) == want28)
    });

    // B starts last and is complete as soon as it is ready.
    let late = world.report_server(tenants_file(), &scratch.join("b"), "127.0.0.1:0");
    wait_until("server B ready", Duration::from_secs(60), || {
        http.get(&format!("{}/readyz", late.url()), None).0 == 200
    });
    let from_b = http.json(&format!("{}/report/acme?format=json&day=2026-11-28", late.url()));
    assert_eq!(from_b, http.json(&day28), "the late server is complete when ready");

    // JSON: the engine's rows plus the sinks' columns.
    let rows = http.json(&day28);
    let ann = tech_row(&rows, "7001", "11");
    assert_eq!(ann["fence_in_azuga"], "failed");
    assert_eq!(ann["sink_failures"], serde_json::json!([FENCE_FAILURE]));
    assert_eq!(ann["clock_events_posted"], 2);
    assert_eq!(ann["service_link_delivered"], true);
    assert_eq!(ann["trackme_url"], "https://trackme.azuga.example/t/1");
    assert_eq!(ann["quick_link"], format!("{WEB}/job/900"));
    assert_eq!(ann["fence_result"], "arrived");
    assert!(ann["arrival"]["distance_m"].is_number(), "arrival evidence: {ann}");
    let bob = tech_row(&rows, "7001", "12");
    assert_eq!(bob["clock_events_posted"], 0);
    assert_eq!(bob["failures"][0], "tech_not_found_in_azuga");
    assert_eq!(bob["failure_texts"][1], FENCE_FAILURE);

    // The day is the tenant's: 7002 (02:00 UTC) is on the 27th in New York.
    let day27 = http.json(&format!("{base}.json?day=2026-11-27"));
    assert_eq!(engine_columns(day27.clone()), expected(&pure.report, "2026-11-27", &[]));
    assert_eq!(day27[0]["appointment"], 7002);
    assert_eq!(day27[0]["fence_in_azuga"], "yes");
    assert_eq!(day27[0]["geomark_id"], "gm-7002");
    assert_eq!(http.json(&format!("{base}?format=json&day=2026-11-29")), Value::Array(vec![]));

    // CSV: header, one record per row, New York times, RFC 4180 quoting.
    let (status, ctype, csv) = http.get(&format!("{base}?format=csv&day=2026-11-28"), Some(TOKEN));
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/csv"), "{ctype}");
    let records: Vec<&str> = csv.split_terminator("\r\n").collect();
    assert_eq!(records[0], render::csv_columns().join(","));
    assert!(records[0].starts_with(&render::ARTICLE_COLUMNS.join(",")), "the article's columns lead");
    assert_eq!(records.len(), 1 + 2, "{csv}");
    assert!(records
        .iter()
        .skip(1)
        .all(|r| r.starts_with("7001,900,https://app.servicetrade.example/job/900,scheduled,")));
    assert!(csv.contains("2026-11-28T09:00:00-05:00"), "window start in New York time: {csv}");
    assert!(csv.contains("minimum 50 m\""), "a failure with a comma is quoted: {csv}");
    let (_, _, csv27) = http.get(&format!("{base}.csv?day=2026-11-27"), Some(TOKEN));
    assert!(csv27.contains(",\"Depot, North\","), "{csv27}");

    // HTML: the table, the quick link, the highlighted failures.
    // A signed, expiring link opens the page (the token is not in the URL).
    let expires = chrono::Utc::now().timestamp() + 3600;
    let page_url =
        format!("{base}?day=2026-11-28&{}", link::query(&Secret::new(TOKEN), "acme", "report:2026-11-28", expires));
    let (status, ctype, page) = http.get(&page_url, None);
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/html"));
    assert!(page.contains("<table id=\"report\""));
    assert!(page.contains(&format!("href=\"{WEB}/job/900\"")));
    assert!(page.contains("<tr class=\"failed\">"));
    assert!(page.contains("Azuga rejected geofence: HTTP 422: radius 5 m, minimum 50 m"));
    assert_eq!(page.matches("<tr").count(), 1 + 2);
    assert!(
        !page.contains("?day=2026-11-27") && !page.contains("?day=2026-11-29"),
        "a one-day link offers no other day"
    );
    let map_link =
        format!("{base}?day=2026-11-28&{}", link::query(&Secret::new(TOKEN), "acme", link::MAP_SCOPE, expires));
    let (status, _, page) = http.get(&map_link, None);
    assert_eq!(status, 200);
    assert!(page.contains("?day=2026-11-27") && page.contains("?day=2026-11-29"), "a map link opens every day");

    // Behind every row, its explanation, from the replica's state: linked
    // from the HTML row and the JSON row, with the same facts.
    assert_eq!(ann["explain"], "/report/acme/explain/7001?tech=11");
    assert!(page.contains("<a class=\"keep-token\" href=\"/report/acme/explain/7001?tech=11\">why</a>"), "{page}");
    let why = format!("{}/report/acme/explain/7001?tech=11", live.url());
    let facts = http.json(&format!("{why}&format=json"));
    assert_eq!(facts["technicians"][0]["arrival"], ann["arrival"], "{facts}");
    assert_eq!(facts["technicians"][0]["decisions"][0]["rule"], "arrival");
    assert_eq!(facts["technicians"].as_array().map(Vec::len), Some(1), "only the asked technician");
    let (status, ctype, text) = http.get(&format!("{why}&format=text"), Some(TOKEN));
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/plain") && text.contains("arrival       fired    [arrival]"), "{text}");
    // The page's signed link (scope report:2026-11-28) opens its explanations.
    let signed = page_url.split_once('?').map(|(_, q)| q.to_string()).unwrap();
    let (status, ctype, html) = http.get(&format!("{why}&{signed}"), None);
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/html") && html.contains("<pre>Appointment 7001"), "{html}");
    let bob_why = http.json(&format!("{}/report/acme/explain/7001?tech=12&format=json", live.url()));
    assert_eq!(bob_why["technicians"][0]["decisions"][0]["rule"], "tech_not_found_in_azuga");
    assert_eq!(http.get(&why, None).0, 401, "the report's token rules");
    assert_eq!(http.get(&format!("{}/report/acme/explain/9999", live.url()), Some(TOKEN)).0, 404);

    // Access: token, tenant, format and day rules.
    let status = |url: &str, bearer: Option<&str>| http.get(url, bearer).0;
    assert_eq!(status(&format!("{base}?format=json"), None), 401, "no token");
    assert_eq!(status(&format!("{base}?format=json"), Some("wrong")), 401, "wrong token");
    assert_eq!(status(&format!("{base}?format=json&token={TOKEN}"), None), 401, "no token in the URL");
    assert_eq!(status(&format!("{base}?format=json&day=2026-11-28"), Some(TOKEN)), 200);
    let other_day = page_url.replace("day=2026-11-28", "day=2026-11-27");
    assert_eq!(status(&other_day, None), 401, "a link opens its own day only");
    let expired = format!(
        "{base}?day=2026-11-28&{}",
        link::query(&Secret::new(TOKEN), "acme", "report:2026-11-28", chrono::Utc::now().timestamp() - 1)
    );
    assert_eq!(status(&expired, None), 401, "an expired link");
    assert_eq!(status(&format!("{base}?format=pdf"), Some(TOKEN)), 400);
    assert_eq!(status(&format!("{base}?day=28.11.2026"), Some(TOKEN)), 400);
    // Unknown tenant, tenant without a token, wrong token: one answer.
    let answer = |url: &str, bearer: Option<&str>| {
        let mut req = http.0.get(url);
        if let Some(t) = bearer {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let mut r = req.call().unwrap();
        let mut headers: Vec<String> = r
            .headers()
            .iter()
            .filter(|(k, _)| *k != "date")
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("")))
            .collect();
        headers.sort();
        (r.status().as_u16(), headers, r.body_mut().read_to_string().unwrap_or_default())
    };
    let wrong = answer(&format!("{base}?format=json"), Some("wrong"));
    assert_eq!(wrong.0, 401);
    assert_eq!(answer(&format!("{}/report/nobody?format=json", live.url()), Some(TOKEN)), wrong, "unknown tenant");
    assert_eq!(answer(&format!("{}/report/quiet?format=json", live.url()), Some(TOKEN)), wrong, "no token configured");
    assert!(!wrong.2.contains("acme"), "{wrong:?}");
    // The 11th failure within a minute from one address is throttled, the
    // right token included; other addresses are not.
    let addr: std::net::SocketAddr = live.url().trim_start_matches("http://").parse().unwrap();
    for i in 1..=10 {
        let (code, _) = rt.block_on(get_from("127.0.0.3", addr, "/report/acme?format=json", Some("guess")));
        assert_eq!(code, 401, "bad token #{i}");
    }
    let (code, head) = rt.block_on(get_from("127.0.0.3", addr, "/report/acme?format=json&day=2026-11-28", Some(TOKEN)));
    assert_eq!(code, 429, "the 11th attempt: {head}");
    assert!(head.to_ascii_lowercase().contains("retry-after: "), "{head}");
    let (code, _) = rt.block_on(get_from("127.0.0.4", addr, "/report/acme?format=json&day=2026-11-28", Some(TOKEN)));
    assert_eq!(code, 200, "another address");
    assert_eq!(http.get(&format!("{}/healthz", live.url()), None).0, 200);
    let (_, _, metrics) = http.get(&format!("{}/metrics", live.url()), None);
    assert!(metrics.contains("geoclock_report_requests_total{format=\"json\",status=\"200\"}"), "{metrics}");
    assert!(metrics.contains("geoclock_report_requests_total{format=\"json\",status=\"401\"} 16"), "{metrics}");
    assert!(metrics.contains("geoclock_report_requests_total{format=\"json\",status=\"429\"} 1"), "{metrics}");
    assert!(metrics.contains("geoclock_report_replica_ready 1"), "{metrics}");
    assert!(!metrics.contains(TOKEN) && !metrics.contains("wrong"));

    // A later success clears the geofence failure, live.
    let fix = result(("late-fence-fix", "7001", "update_geofence"), Outcome::Done, "", Some("gm-7001"), 60_000);
    produce_results(&broker, &catalogue, &codec, &[fix]);
    wait_until("the fence fix to show", Duration::from_secs(30), || {
        let rows = http.json(&day28);
        let ann = tech_row(&rows, "7001", "11");
        ann["fence_in_azuga"] == "yes" && ann["sink_failures"] == serde_json::json!([])
    });

    // In a real browser: the script runs under the page's CSP and sorts.
    match chromium() {
        None => eprintln!("SKIPPED browser check: chromium not installed (Debian package `chromium`)"),
        Some(browser) => {
            let dom = dump_dom(&browser, &format!("{page_url}#sort=-tech_name"));
            assert!(dom.contains("data-sortable=\"ready\""), "the page's script ran: {dom}");
            assert_eq!(dom.matches("<tr").count(), 1 + 2);
            let (bob_at, ann_at) = (dom.find("Bob Ray").unwrap(), dom.find("Ann Lee").unwrap());
            assert!(bob_at < ann_at, "sorted by technician, descending");
            // The row's "why" link keeps the page's token, and the page it opens shows the explanation.
            let sig = signed.split("sig=").nth(1).unwrap().split('&').next().unwrap();
            let link = "/report/acme/explain/7001?tech=11&amp;expires=";
            assert!(dom.contains(link) && dom.contains(sig), "the why link carries the signed link: {dom}");
            assert!(dom.contains("&amp;day=2026-11-28\">why</a>") && !dom.contains(TOKEN), "{dom}");
            let why_dom = dump_dom(&browser, &format!("{why}&{signed}"));
            assert!(why_dom.contains("<pre>Appointment 7001"), "{why_dom}");
            assert!(why_dom.contains("arrival       fired    [arrival]"), "{why_dom}");
        }
    }

    rt.block_on(live.stop());
    rt.block_on(late.stop());
    let _ = std::fs::remove_dir_all(&scratch);
}

/// GET `path` from the local address `from` (loopback, any of 127/8):
/// the status and the response head.
async fn get_from(from: &str, to: std::net::SocketAddr, path: &str, bearer: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(to).await.unwrap();
    let auth = bearer.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: report\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let head = text.split("\r\n\r\n").next().unwrap_or("").to_string();
    let code = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, head)
}

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file()))
}

fn dump_dom(browser: &Path, url: &str) -> String {
    let out = Command::new(browser)
        .args(["--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage", "--dump-dom", url])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("chromium runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The page's script, on its own: it sorts every column kind the right way
/// (times by instant, ids by number, empty cells last) and honours
/// `#sort=`. Needs no broker.
#[test]
fn the_report_page_sorts_in_a_real_browser() {
    let Some(browser) = chromium() else {
        eprintln!("SKIPPED: chromium not installed (Debian package `chromium`)");
        return;
    };
    let files = ["multi_tech.yaml", "did_not_arrive.yaml", "reschedule.yaml", "no_job.yaml", "outside_window.yaml"];
    let mut rows = Vec::new();
    for f in files {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios").join(f);
        rows.extend(Scenario::load(&path).unwrap().run().unwrap().report);
    }
    let lines = geoclock::report::join::join(rows, &[], &HashMap::new(), Some(WEB));
    let tz = render::zone(Some("America/New_York"));
    let page = render::html("acme", "2026-11-28".parse().unwrap(), tz, &lines, true);
    let dir = std::env::temp_dir().join(format!("geoclock-report-page-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("report.html");
    std::fs::write(&file, &page).unwrap();

    let starts = |dom: &str| -> Vec<i64> {
        // Each row's window-start cell carries its instant as data-sort.
        let col = render::HTML_COLUMNS.iter().position(|(k, _)| *k == "window_start").unwrap();
        dom.split("<tr")
            .skip(2)
            .map(|row| {
                let cell = row.split("<td").nth(col + 1).unwrap();
                cell.split("data-sort=\"").nth(1).map_or(i64::MAX, |s| s[..s.find('"').unwrap()].parse().unwrap())
            })
            .collect()
    };
    let asc = dump_dom(&browser, &format!("file://{}#sort=window_start", file.display()));
    assert!(asc.contains("data-sortable=\"ready\""), "{asc}");
    let got = starts(&asc);
    assert_eq!(got.len(), lines.len());
    let known: Vec<i64> = got.iter().copied().filter(|t| *t != i64::MAX).collect();
    assert!(known.windows(2).all(|w| w[0] <= w[1]), "ascending by instant: {got:?}");
    assert!(got.iter().skip_while(|t| **t != i64::MAX).all(|t| *t == i64::MAX), "empty cells last: {got:?}");
    let desc = starts(&dump_dom(&browser, &format!("file://{}#sort=-window_start", file.display())));
    let known: Vec<i64> = desc.iter().copied().filter(|t| *t != i64::MAX).collect();
    assert!(known.windows(2).all(|w| w[0] >= w[1]), "descending by instant: {desc:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
