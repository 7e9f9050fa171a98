//! `geoclock soak` end to end: eight simulated days of a fleet through the
//! whole pipeline (the real broker, both connectors over the vendor
//! simulators, the processor, the three sinks; ServiceTrade on the
//! simulated clock), retention of one day, every store's size read from
//! the process's own `/metrics` once a simulated day. It must exit 0 (no
//! store grew after the warm-up), and the days must have done their work.
//! The verdict's logic is unit-tested in `src/soak.rs`, where a store that
//! keeps growing is shown to fail it.

mod support;

use std::process::Command;

use serde_json::Value;
use support::broker::{Broker, Storage};

#[test]
fn eight_simulated_days_leave_every_store_flat() {
    let broker = Broker::start(Storage::Memory);
    let dir = std::env::temp_dir().join(format!("geoclock-soak-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let json = dir.with_extension("json");
    let out = Command::new(env!("CARGO_BIN_EXE_geoclock"))
        .args(["soak", "--brokers", broker.brokers(), "--days", "8", "--speed", "7200", "--technicians", "6"])
        .arg("--state-dir")
        .arg(&dir)
        .arg("--json")
        .arg(&json)
        .env("GEOCLOCK_LOG", "warn")
        .output()
        .expect("geoclock soak runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "soak failed ({:?}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json).expect("the report")).expect("JSON");
    let samples = report["samples"].as_array().expect("samples");
    assert_eq!(samples.len(), 8, "{stdout}");
    assert_eq!(report["grew"].as_array().map(Vec::len), Some(0), "{stdout}");
    assert_eq!(report["warmup_days"], 4);

    // Every kind of store reported its size, and the later days are not empty.
    let last = &samples[7]["stores"];
    for prefix in ["processor_state:", "sink_ledger:sink-clock/", "sink_ledger:sink-geofence/", "connector_ledger:"] {
        let total: u64 = last
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.as_u64().unwrap())
            .sum();
        assert!(total > 0, "{prefix}: nothing at the end of the run:\n{stdout}");
    }
    for needed in [
        "connector_ledger:servicetrade-acme.ledger/published",
        "connector_ledger:servicetrade-acme.ledger/messages",
        "connector_ledger:azuga-acme.ledger/pings",
    ] {
        assert!(last.get(needed).is_some(), "{needed} missing:\n{stdout}");
    }
    // The days did their work, every day: clock changes and emails keep coming.
    let per_day = |field: &str| -> Vec<u64> {
        samples.windows(2).map(|w| w[1][field].as_u64().unwrap() - w[0][field].as_u64().unwrap()).collect()
    };
    for field in ["clock_changes", "emails"] {
        let d = per_day(field);
        assert!(
            samples[0][field].as_u64().unwrap() > 0 && d.iter().all(|n| *n > 0),
            "{field} per day {d:?}:\n{stdout}"
        );
    }
    // Retention kicked in: the processor holds about as many appointments at
    // the end as after three days, not eight days' worth.
    let held = |i: usize| samples[i]["appointments"].as_i64().unwrap();
    assert!(held(7) > 0 && held(7) as f64 <= held(3) as f64 * 1.25, "held {} then {}:\n{stdout}", held(3), held(7));
    // The ServiceTrade connector let the first days' appointments go.
    assert!(samples[7]["past_horizon"].as_u64().unwrap() > 0, "nothing past the mirror horizon:\n{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&json);
}
