//! Runs every `tests/scenarios/*.yaml` through the engine and compares the
//! output with the `*.expected.json` beside it. `GEOCLOCK_BLESS=1 cargo test
//! --test scenarios` rewrites the expectations (review the diff!).

mod support;

use geoclock::scenario::Scenario;
use support::scenario_files;

#[test]
fn every_scenario_matches_its_expected_output() {
    let bless = std::env::var_os("GEOCLOCK_BLESS").is_some();
    let files = scenario_files();
    assert!(files.len() >= 20, "expected the scenario suite, found {} files", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let output = Scenario::load(file).and_then(|s| s.run()).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let actual = output.to_json();
        let expected_path = file.with_extension("expected.json");
        if bless {
            std::fs::write(&expected_path, format!("{actual}\n")).expect("write expectation");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("{} has no {}", file.display(), expected_path.display()));
        let (a, e): (serde_json::Value, serde_json::Value) =
            (serde_json::from_str(&actual).unwrap(), serde_json::from_str(&expected).unwrap());
        if a != e {
            failures.push(format!("{}\n--- expected\n{expected}\n--- actual\n{actual}", file.display()));
        }
    }
    assert!(failures.is_empty(), "{} scenario(s) differ:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn output_is_byte_identical_across_runs() {
    for file in scenario_files() {
        let s = Scenario::load(&file).unwrap();
        let first = s.run().unwrap().to_json();
        for _ in 0..3 {
            assert_eq!(first, Scenario::load(&file).unwrap().run().unwrap().to_json(), "{}", file.display());
        }
    }
}

#[test]
fn malformed_files_fail_with_a_clear_message() {
    let cases = [
        ("events:\n  - pnig: {vehicle: v1}\n", "unknown variant `pnig`"),
        ("servicetrade:\n  users: [{id: 1, emial: x}]\n", "unknown field `emial`"),
        ("events:\n  - tick: \"yesterday\"\n", "invalid RFC 3339"),
        ("settings: {fence_radius_m: 99999}\n", "fence_radius_m"),
        ("events:\n  - ping: {vehicle: v1, lat: 95, lon: 0, time: \"2026-11-28T13:40:00Z\"}\n", "event #0 (ping) rejected"),
        ("servicetrade:\n  appointments: [{id: 1, status: maybe}]\n", "unknown variant `maybe`"),
        ("azuga:\n  pairings: [{driver: d, vehicle: v, from: \"2026-11-28T10:00:00Z\", to: \"2026-11-28T09:00:00Z\"}]\n", "is not after"),
        (": : :\n", "malformed scenario"),
    ];
    for (yaml, needle) in cases {
        let err = Scenario::from_yaml(yaml, "case.yaml").and_then(|s| s.run()).expect_err(yaml).to_string();
        assert!(err.contains(needle), "{yaml:?}: {err:?} lacks {needle:?}");
    }
}
