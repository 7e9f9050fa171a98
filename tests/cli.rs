//! The `geoclock` binary as a user runs it.

use std::process::Command;

fn geoclock(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_geoclock"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("runs")
}

#[test]
fn scenario_run_prints_one_json_object() {
    let out = geoclock(&["scenario", "run", "tests/scenarios/arrival_basic.yaml"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON value");
    let kinds: Vec<&str> = v["commands"].as_array().unwrap().iter().map(|c| c["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["create_geofence", "send_service_link", "clock", "clock"]);
    assert_eq!(v["report"][0]["fence_result"], "arrived");

    let compact = geoclock(&["scenario", "run", "--compact", "tests/scenarios/arrival_basic.yaml"]);
    assert_eq!(String::from_utf8_lossy(&compact.stdout).trim().lines().count(), 1);
    let w: serde_json::Value = serde_json::from_slice(&compact.stdout).unwrap();
    assert_eq!(v, w);
}

#[test]
fn malformed_or_missing_files_exit_non_zero_with_a_message() {
    let dir = std::env::temp_dir().join(format!("geoclock-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "events:\n  - ping: {vehicle: v1, lat: \"north\"}\n").unwrap();
    let out = geoclock(&["scenario", "run", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing on stdout on failure");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("malformed scenario") && err.contains("line"), "{err}");

    let out = geoclock(&["scenario", "run", "no/such/file.yaml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read scenario"));
    std::fs::remove_dir_all(&dir).ok();
}
