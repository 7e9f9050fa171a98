//! `geoclock explain` golden outputs: one appointment of a scenario file per
//! case, as text and JSON, in `tests/explain/`; and the same facts in the
//! Activity Report's rows. `GEOCLOCK_BLESS=1 cargo test --test explain`
//! rewrites the goldens (review the diff!).

use std::path::{Path, PathBuf};
use std::process::Command;

use geoclock::audit::trace::explain_events;
use geoclock::audit::Explanation;
use geoclock::model::Id;
use geoclock::report::{FenceResult, ReportRow};
use geoclock::scenario::Scenario;

/// `(scenario file, appointment, what it shows)`.
const CASES: [(&str, &str, &str); 6] = [
    ("arrival_basic", "7001", "arrival"),
    ("outside_window", "7001", "arrival outside the window"),
    ("enroute_timing", "7001", "inside before the En Route clock-in"),
    ("pairing_gap", "7001", "technician not paired"),
    ("pass_through", "7001", "a pass-through"),
    ("did_not_arrive", "7001", "closest approach"),
];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

fn explain(file: &str, appt: &str) -> (Scenario, Explanation) {
    let s = Scenario::load(&dir().join("scenarios").join(format!("{file}.yaml"))).expect("scenario");
    let e = explain_events(&s.tenant, s.settings.clone(), &s.all_events(), &Id::from(appt), None).expect("explain");
    (s, e)
}

#[test]
fn explanations_match_their_golden_outputs() {
    let bless = std::env::var_os("GEOCLOCK_BLESS").is_some();
    let mut failures = Vec::new();
    for (file, appt, what) in CASES {
        let (_, e) = explain(file, appt);
        let outputs = [("txt", e.text()), ("json", format!("{}\n", serde_json::to_string_pretty(&e).unwrap()))];
        for (ext, actual) in outputs {
            let path = dir().join("explain").join(format!("{file}.{appt}.{ext}"));
            if bless {
                std::fs::write(&path, &actual).expect("write golden");
                continue;
            }
            let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("{} missing", path.display()));
            if actual != expected {
                failures.push(format!("{} ({what})\n--- expected\n{expected}\n--- actual\n{actual}", path.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{} golden output(s) differ:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn each_case_shows_what_it_is_for() {
    let rule = |file: &str| {
        let (_, e) = explain(file, "7001");
        let d = e.technicians[0].decisions.iter().find(|d| d.what == "arrival").cloned().unwrap();
        (d.outcome, d.rule, d.because)
    };
    assert_eq!(rule("arrival_basic").0, "fired");
    assert_eq!(rule("outside_window").1, "arrived_outside_window");
    assert_eq!(rule("enroute_timing").1, "no_enroute_clock_in");
    assert_eq!(rule("pairing_gap").1, "tech_not_paired");
    let (_, r, because) = rule("pass_through");
    assert!(r == "vehicle_did_not_arrive" && because.contains("crossed the fence"), "{because}");
    let (_, r, because) = rule("did_not_arrive");
    assert!(r == "vehicle_did_not_arrive" && because.contains("closest approach"), "{because}");
    let (_, e) = explain("arrival_basic", "7001");
    let timeline = e.timeline.expect("a replay has a timeline");
    assert!(
        timeline.iter().any(|m| m.what.contains("clock onsite in") || m.what.contains("onsite in")),
        "{timeline:#?}"
    );
    assert!(e.technicians[0].last_outside.is_some(), "the last outside ping before the first inside one");
}

fn row<'a>(rows: &'a [ReportRow], appt: &str, tech: &Id) -> &'a ReportRow {
    rows.iter().find(|r| r.appointment.as_str() == appt && r.tech.as_ref() == Some(tech)).expect("a row")
}

#[test]
fn the_report_rows_carry_the_same_facts() {
    for (file, appt, what) in CASES {
        let (s, e) = explain(file, appt);
        let rows = s.run().expect("scenario runs").report;
        for t in &e.technicians {
            let r = row(&rows, appt, &t.user);
            assert_eq!(r.arrival, t.arrival, "{file}: {what}");
            assert_eq!(r.passed_through, t.passed_through, "{file}");
            assert_eq!(r.pairing_gap, t.pairing_gap, "{file}");
            match r.fence_result {
                FenceResult::NotArrived => assert_eq!(r.closest_approach, t.closest_approach, "{file}"),
                FenceResult::ArrivedOutsideWindow => assert_eq!(r.outside_window_ping, t.inside_outside_window),
                FenceResult::Arrived if r.arrival.is_none() => assert_eq!(r.inside_before_enroute, t.first_inside),
                _ => {}
            }
            let arrival = t.decisions.iter().find(|d| d.what == "arrival").unwrap();
            if arrival.outcome == "stopped" {
                let codes: Vec<String> =
                    r.failures.iter().map(|f| serde_json::to_value(f).unwrap().as_str().unwrap().to_string()).collect();
                assert!(codes.contains(&arrival.rule.to_string()), "{file}: {codes:?} lacks {}", arrival.rule);
            }
        }
    }
    // Each evidence column is shown somewhere.
    let evidence = |file: &str| {
        let (s, _) = explain(file, "7001");
        let r = s.run().unwrap().report.into_iter().find(|r| r.appointment.as_str() == "7001").unwrap();
        serde_json::to_value(&r).unwrap()
    };
    assert!(evidence("did_not_arrive")["closest_approach"]["distance_m"].is_number());
    assert!(evidence("outside_window")["outside_window_ping"]["time"].is_string());
    assert!(evidence("enroute_timing")["inside_before_enroute"]["vehicle"].is_string());
    assert!(evidence("pairing_gap")["pairing_gap"]["before"]["vehicle"] == "v1");
}

#[test]
fn geoclock_explain_prints_the_golden_output() {
    for (format, ext) in [("text", "txt"), ("json", "json")] {
        let out = Command::new(env!("CARGO_BIN_EXE_geoclock"))
            .args(["explain", "--appointment", "7001", "--format", format, "--scenario"])
            .arg(dir().join("scenarios/did_not_arrive.yaml"))
            .output()
            .expect("geoclock explain runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let golden = std::fs::read_to_string(dir().join(format!("explain/did_not_arrive.7001.{ext}"))).unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), golden);
    }
}
