//! The Activity Report of one demo day, as CSV, against a golden file
//! (`tests/golden/demo-day.csv`).
//!
//! The day is the demo's (`FleetConfig::demo`: 24 technicians with a real
//! day's failures) on a fixed date. The pure engine decides it; the real
//! sinks carry its commands out over a real broker against the vendor
//! simulators (which refuse clock events on locked appointments); the
//! report joins the two as the report server does. The CSV must lead with
//! the integration article's eleven columns, in its order, with action
//! statuses, a refused clock POST among them.
//!
//! Azuga's geomark ids depend on the order the sinks' workers created them
//! in, so that one column is masked. `GEOCLOCK_BLESS=1` rewrites the file.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::NaiveDate;
use geoclock::engine::{Command, Engine};
use geoclock::kafka::records::Outcome;
use geoclock::model::{Settings, Ts};
use geoclock::report::join::join;
use geoclock::report::render::{self, csv, csv_columns, for_day, zone};
use geoclock::report::replica::command_info;
use geoclock::sim::fleet::{generate, FleetConfig};
use geoclock::sink::SinkKind;
use support::sinks::Rig;

const GOLDEN: &str = "tests/golden/demo-day.csv";
const DAY: &str = "2026-11-28";

#[test]
fn a_demo_day_reports_the_articles_columns_first_with_action_statuses() {
    let world = generate(&FleetConfig::demo(1, 24, Ts::from_secs(1_795_881_600))); // 2026-11-28T12:00:00Z
    let settings = Settings { window_hours: 2.0, ..Settings::default() };
    let mut engine = Engine::new("acme", settings).expect("settings");
    let mut commands: Vec<Command> = Vec::new();
    for e in world.events() {
        engine.handle(&e, &mut commands).expect("the engine takes the day");
    }
    let rows = geoclock::report::rows(&engine);
    assert!(!world.clock_locked.is_empty(), "the demo day has a locked appointment");

    let rig = Rig::with_world("golden", 20, &["acme"], world);
    let sinks: Vec<_> = [SinkKind::Geofence, SinkKind::Clock, SinkKind::Email].map(|k| rig.start(k)).into();
    rig.send(&commands);
    let ids: HashSet<String> = commands.iter().map(|c| c.id.clone()).collect();
    let results = rig.wait_results(&ids, Duration::from_secs(300));
    drop(sinks);
    let results: Vec<_> = results.into_values().collect();
    let refused: Vec<_> = results.iter().filter(|r| r.kind == "clock" && r.outcome == Outcome::Failed).collect();
    assert!(!refused.is_empty(), "the locked appointment's clock POST is refused");

    let infos: HashMap<String, _> =
        commands.iter().filter_map(|c| command_info(c).map(|i| (c.id.clone(), i))).collect();
    let tz = zone(Some("America/New_York"));
    let day = NaiveDate::parse_from_str(DAY, "%Y-%m-%d").expect("day");
    let lines = join(for_day(rows, day, tz), &results, &infos, Some("https://app.servicetrade.com"));
    let text = mask_geomarks(&csv(&lines, tz));

    // The article's eleven columns lead, in its order.
    let header = text.lines().next().expect("header");
    assert!(header.starts_with(&render::ARTICLE_COLUMNS.join(",")), "{header}");
    assert_eq!(header, csv_columns().join(","));
    // Each failure the article lists is on some row, as is a refused POST.
    for needle in [
        "not attempted: appointment not scheduled",
        "not attempted: appointment has no job",
        "not attempted: technician not paired with a vehicle",
        "not attempted: technician's email not found among Azuga drivers",
        "failed: ServiceTrade",
        "done at ",
        "https://app.servicetrade.com/job/",
    ] {
        assert!(text.contains(needle), "no row says {needle:?}:\n{text}");
    }
    assert!(!text.contains("pending"), "every action has its result:\n{text}");

    if std::env::var_os("GEOCLOCK_BLESS").is_some() {
        std::fs::create_dir_all("tests/golden").expect("dir");
        std::fs::write(GOLDEN, &text).expect("golden written");
    }
    let golden = std::fs::read_to_string(GOLDEN).expect("tests/golden/demo-day.csv (GEOCLOCK_BLESS=1 writes it)");
    if golden != text {
        let diff: Vec<String> = golden
            .split("\r\n")
            .zip(text.split("\r\n"))
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .take(5)
            .map(|(i, (a, b))| format!("line {}:\n  golden: {a}\n  now:    {b}", i + 1))
            .collect();
        panic!("the report differs from {GOLDEN} (GEOCLOCK_BLESS=1 to accept):\n{}", diff.join("\n"));
    }
}

/// The `geomark_id` column's values as `gm-*` (Azuga numbers geomarks in
/// the order they were created).
fn mask_geomarks(text: &str) -> String {
    let col = csv_columns().iter().position(|c| *c == "geomark_id").expect("geomark_id column");
    text.split_terminator("\r\n")
        .enumerate()
        .map(|(i, line)| {
            if i == 0 {
                return line.to_string();
            }
            let cells = split_csv(line);
            cells
                .into_iter()
                .enumerate()
                .map(|(j, c)| if j == col && !c.is_empty() { "gm-*".to_string() } else { c })
                .collect::<Vec<_>>()
                .join(",")
        })
        .map(|l| l + "\r\n")
        .collect()
}

/// One CSV record's raw fields (quotes kept), split at unquoted commas.
fn split_csv(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    for ch in line.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                out.last_mut().expect("field").push(ch);
            }
            ',' if !quoted => out.push(String::new()),
            _ => out.last_mut().expect("field").push(ch),
        }
    }
    out
}
