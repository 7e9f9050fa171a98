//! `geoclock demo` end to end, as a newcomer runs it: one process, the
//! embedded broker, a bounded simulated day. Checked only from the outside:
//! its printed endpoints, the simulators' state, the mailbox, the report,
//! the live map (in headless Chromium) and the metrics.
//!
//! `GEOCLOCK_MAP_SCREENSHOT=docs/map.png cargo test --test demo` also
//! saves a screenshot of the map in the middle of the day.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::browser::Browser;

fn get(url: &str) -> String {
    ureq::get(url).call().expect("GET").body_mut().read_to_string().expect("body")
}

fn get_json(url: &str) -> Value {
    serde_json::from_str(&get(url)).expect("JSON")
}

#[test]
fn demo_runs_a_day_fences_clocks_mails_and_reports() {
    let dir = std::env::temp_dir().join(format!("geoclock-demo-test-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_geoclock"))
        .args(["demo", "--technicians", "4", "--speed", "1800", "--json"])
        .args(["--report", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(&dir)
        .env("GEOCLOCK_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("geoclock demo starts");
    let (tx, rx) = mpsc::channel::<String>();
    let out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(120)).expect("the demo prints its endpoints");
    let ep: Value = serde_json::from_str(&first).expect("endpoints JSON");
    assert_eq!(ep["embedded_broker"], true, "no broker needed");
    let map = ep["map"].as_str().expect("the map's URL").to_string();
    let (map_base, map_link) = map.split_once('?').expect("a signed link to the map");
    assert!(map_base.ends_with("/map/acme") && map_link.starts_with("expires=") && map_link.contains("&sig="), "{map}");
    assert!(!map.contains(ep["report_token"].as_str().unwrap()), "no token in the map's URL: {map}");
    let screenshot = std::env::var_os("GEOCLOCK_MAP_SCREENSHOT").map(std::path::PathBuf::from);

    // Progress until the simulated day is over and effects have landed.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut last = Value::Null;
    loop {
        assert!(Instant::now() < deadline, "the day did not complete: {last}");
        let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) else { continue };
        last = serde_json::from_str(&line).expect("progress JSON");
        let n = |k: &str| last[k].as_u64().unwrap_or(0);
        if let Some(path) = screenshot.as_ref().filter(|_| n("fixes_released") * 3 >= n("fixes_total").max(1)) {
            if !path.exists() {
                let b = Browser::start(1400, 900);
                b.goto(&map);
                b.wait_for("the map", Duration::from_secs(60), "return document.body.dataset.rendered === '1';");
                // With a technician on the way selected, as a dispatcher would.
                b.eval(
                    "var m = window.geoclockMap, ids = m.fenceIds();\
                     var pick = ids.find(function (i) { return m.fence(i).late; })\
                       || ids.find(function (i) { return m.fence(i).state === 'en_route'; }) || ids[0];\
                     if (pick) m.select('fence', pick, false);",
                );
                std::thread::sleep(Duration::from_secs(2));
                std::fs::write(path, b.screenshot()).expect("screenshot written");
                b.close();
            }
        }
        if last["day_over"] == true && n("geofences") > 0 && n("arrivals_clocked") >= 4 && n("emails") >= 4 {
            break;
        }
    }
    // Let the last commands land.
    std::thread::sleep(Duration::from_secs(5));

    // Fences at Azuga, arrivals clocked at ServiceTrade, Service Links in the mailbox.
    let az = get_json(&format!("{}/admin/state", ep["azuga"].as_str().unwrap()));
    assert!(!az["geomarks"].as_array().unwrap().is_empty() || az["trackme"].as_array().is_some_and(|t| !t.is_empty()));
    let st = get_json(&format!("{}/admin/state", ep["servicetrade"].as_str().unwrap()));
    let posted: Vec<&Value> = st["clocks"].as_array().unwrap().iter().filter(|c| !c["lat"].is_null()).collect();
    let onsite_in: Vec<&Value> =
        posted.iter().copied().filter(|c| c["event"]["activity"] == "onsite" && c["event"]["action"] == "in").collect();
    assert!(onsite_in.len() >= 4, "arrivals clocked On Site: {}", onsite_in.len());
    let mails = get_json(ep["mailbox"].as_str().unwrap());
    let mails = mails.as_array().unwrap();
    assert!(mails.len() >= 4);
    for m in mails {
        assert!(m["subject"].as_str().unwrap().contains("is on the way to"), "{m}");
        assert!(m["text"].as_str().unwrap().contains("https://trackme.azuga.example/"), "TrackMe link in {m}");
        assert_eq!(m["deliveries"], 1, "each email once");
    }

    // The report agrees with what happened: every On Site clock-in posted
    // is an arrival row, with its evidence.
    let token = ep["report_token"].as_str().unwrap();
    let base = ep["report"].as_str().unwrap();
    let day = &last["sim_time"].as_str().unwrap()[..10];
    let rows_json: Value = serde_json::from_str(
        &ureq::get(&format!("{base}?format=json&day={day}"))
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .expect("GET with the token in a header")
            .body_mut()
            .read_to_string()
            .unwrap(),
    )
    .expect("JSON");
    let rows =
        rows_json.as_array().cloned().unwrap_or_else(|| rows_json["rows"].as_array().cloned().unwrap_or_default());
    assert!(!rows.is_empty(), "report rows: {rows_json}");
    for c in &onsite_in {
        let (user, appt) = (&c["event"]["user"], &c["event"]["appointment"]);
        let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
        let row = rows
            .iter()
            .find(|r| text(&r["appointment"]) == text(appt) && text(&r["tech"]) == text(user))
            .unwrap_or_else(|| panic!("no report row for appointment {appt} tech {user}"));
        assert_eq!(row["fence_result"], "arrived", "{row}");
        assert!(row["arrival"]["distance_m"].is_number(), "arrival evidence in {row}");
        assert!(row["onsite_clock_in"].is_string());
    }
    // The printed signed link opens the day's HTML report (no token in it).
    let page = ep["report_link"].as_str().unwrap().to_string();
    assert!(page.contains(&format!("day={day}")) && !page.contains(token), "{page}");
    let html = get(&page);
    assert!(html.contains("<table"), "HTML report");
    // In a real browser: the page loads, its sorting script runs, every row is there.
    let browser = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--dump-dom", &page])
        .stderr(Stdio::null())
        .output()
        .expect("chromium is installed (scripts/install-nisshi.sh installs it)");
    let dom = String::from_utf8_lossy(&browser.stdout);
    assert!(dom.contains("data-sortable=\"ready\""), "the page's script ran in the browser: {dom}");
    assert_eq!(dom.matches("<tr").count(), rows.len() + 1, "header and one row per report line");
    assert_eq!(
        ureq::get(&format!("{base}?format=json&token={token}")).call().map(|_| 200).unwrap_or_else(|e| match e {
            ureq::Error::StatusCode(s) => s,
            _ => 0,
        }),
        401,
        "the report takes no token in its URL"
    );

    // The live map: its data is the state's, its page shows all of it.
    let status_of = |url: &str| {
        ureq::get(url).call().map(|r| r.status().as_u16()).unwrap_or_else(|e| match e {
            ureq::Error::StatusCode(s) => s,
            _ => 0,
        })
    };
    assert_eq!(status_of(map_base), 401, "the map needs the token");
    assert_eq!(status_of(&format!("{map_base}/events")), 401, "so does its stream");
    assert_eq!(status_of(&format!("{map_base}/geojson?token={token}")), 401, "no token in its URL");
    let fc = get_json(&format!("{map_base}/geojson?{map_link}&breadcrumbs=all"));
    assert_eq!(fc["type"], "FeatureCollection");
    let kinds: BTreeSet<&str> =
        fc["features"].as_array().unwrap().iter().filter_map(|f| f["properties"]["kind"].as_str()).collect();
    assert_eq!(kinds, BTreeSet::from(["breadcrumb", "fence", "vehicle"]), "{kinds:?}");
    let count =
        |kind: &str| fc["features"].as_array().unwrap().iter().filter(|f| f["properties"]["kind"] == kind).count();
    let fenced: BTreeSet<String> = rows
        .iter()
        .filter(|r| {
            r["fence_created"] == true
                && ["scheduled", "completed", "no_show"].contains(&r["status"].as_str().unwrap_or(""))
        })
        .map(|r| r["appointment"].to_string())
        .collect();
    assert_eq!(count("fence"), fenced.len(), "a fence per fenced appointment of the day");
    let pinged: BTreeSet<String> =
        az["released"].as_array().unwrap().iter().map(|p| p["vehicle"].to_string()).collect();
    assert_eq!(count("vehicle"), pinged.len(), "a marker per vehicle that reported");
    let b = Browser::start(1400, 860);
    b.goto(&map);
    b.wait_for("the map", Duration::from_secs(60), "return document.body.dataset.rendered === '1';");
    let on_page = b.eval("return window.geoclockMap.counts();");
    assert_eq!(on_page["fences"], fenced.len(), "{on_page}");
    assert_eq!(on_page["vehicles"], pinged.len(), "{on_page}");
    b.close();

    let metrics = get(ep["metrics"].as_str().unwrap());
    for name in [
        "geoclock_processor_records_total",
        "geoclock_sink_commands_total",
        "geoclock_connector_records_published_total",
        "geoclock_report_late_appointments{tenant=\"acme\"}",
    ] {
        assert!(metrics.contains(name), "{name} in /metrics");
    }

    // Ctrl-C: a clean stop.
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let status = child.wait().expect("exit");
    assert!(status.success(), "clean shutdown: {status}");
    let _ = std::fs::remove_dir_all(&dir);
}
