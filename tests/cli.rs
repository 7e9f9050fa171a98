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

#[test]
fn the_example_tenants_file_loads_and_the_configuration_reference_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/tenants.example.toml");
    for (k, v) in [
        ("ACME_ST_PASSWORD", "p"),
        ("ACME_ST_HOOK", "h"),
        ("ACME_AZ_KEY", "k"),
        ("ACME_AZ_HOOK", "h2"),
        ("ACME_REPORT_TOKEN", "t"),
    ] {
        std::env::set_var(k, v);
    }
    let t = geoclock::config::tenants::load(&path).expect("deploy/tenants.example.toml loads");
    assert_eq!(t[0].name, "acme");
    assert!(t[0].email.as_ref().is_some_and(|e| e.report_token.is_some()));
    // docs/configuration.md is generated from --help: it names every command's flags.
    let doc = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md"))
        .unwrap();
    for cmd in [
        vec!["demo"],
        vec!["soak"],
        vec!["process"],
        vec!["sink", "email"],
        vec!["report", "serve"],
        vec!["audit"],
        vec!["explain"],
    ] {
        let mut args = cmd.clone();
        args.push("--help");
        let help = String::from_utf8(geoclock(&args).stdout).unwrap();
        assert!(
            doc.contains(help.trim()),
            "docs/configuration.md is stale for `geoclock {}`: run scripts/config-doc",
            cmd.join(" ")
        );
    }
}
