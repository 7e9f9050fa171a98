//! The sinks against vendors that misbehave the way real ones do: calls
//! applied and then answered 502 or never answered, outages with
//! Retry-After, one tenant down while another works, refusals that are
//! fixed later and re-driven from the dead letters, sink instances sharing a
//! group and killed, a schema registry that goes down, a worker that dies.
//! Each test fails on the sinks before the effect protocol (blind resends,
//! outages failing commands, one tenant holding up all, no re-drive).

mod support;

use std::collections::HashSet;
use std::process::Command as Proc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use geoclock::engine::Command;
use geoclock::kafka::codec::{Codec, RecordType};
use geoclock::kafka::records::Outcome;
use geoclock::kafka::registry::{ConfluentRegistry, SchemaRegistry};
use geoclock::sim::registry::RegistrySim;
use geoclock::sink::runner::{Sink, SinkConfig};
use geoclock::sink::SinkKind;
use serde_json::json;
use support::kafka::produce;
use support::sinks::*;

fn fast(mut c: SinkConfig) -> SinkConfig {
    c.http_timeout = Duration::from_secs(1);
    c.backoff.base = Duration::from_millis(100);
    c.backoff.cap = Duration::from_secs(2);
    c
}

fn trackme_per_vehicle_window(rig: &Rig) -> usize {
    rig.az.snapshot().trackme.len()
}

#[test]
fn ambiguous_answers_are_looked_up_never_resent_blind() {
    let rig = Rig::new("ambiguous", 100);
    // Clock: a quarter of the POSTs take effect and are answered 502; then
    // three take effect and are never answered within the client's timeout.
    let clocks = clock_commands(&rig.world, 200);
    chaos_rule(rig.st_url(), json!({"rate": 0.25, "apply": true, "status": 502, "seed": 3, "methods": ["POST"]}));
    rig.send(&clocks);
    let sink = Sink::start(fast(rig.config(SinkKind::Clock))).expect("clock sink");
    let deadline = Instant::now() + Duration::from_secs(60);
    while rig.st.calls().count("POST", "/api/clock") < 60 {
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    chaos_rule(rig.st_url(), json!({"count": 3, "apply": true, "stall_ms": 2500, "methods": ["POST"]}));
    let results = rig.wait_results(&ids(&clocks), Duration::from_secs(180));
    sink.stop().expect("clean stop");
    assert!(clocks.iter().all(|c| results[&c.id].outcome == Outcome::Done), "{results:#?}");
    assert_same_effects(clock_effects(&rig.st), expected_clock_effects(&clocks));
    let injected = rig.st.calls().snapshot("/api/clock").iter().filter(|c| c.injected.is_some()).count();
    assert!(injected >= 30, "the chaos was met: {injected} injected answers");

    // Geofence: the first two bulk creates land and are answered 502, and
    // half the listings that would tell whether they landed fail too (the
    // commands must wait, not be skipped).
    let (creates, _) = fence_commands(&rig.world);
    chaos_rule(rig.az_url(), json!({"count": 2, "apply": true, "status": 502, "methods": ["POST"]}));
    chaos_rule(rig.az_url(), json!({"rate": 0.5, "status": 503, "seed": 4, "methods": ["GET"]}));
    rig.send(&creates);
    let sink = Sink::start(fast(rig.config(SinkKind::Geofence))).expect("geofence sink");
    let results = rig.wait_results(&ids(&creates), Duration::from_secs(120));
    sink.stop().expect("clean stop");
    chaos_rule(rig.az_url(), json!({}));
    assert!(creates.iter().all(|c| results[&c.id].outcome == Outcome::Done), "{results:#?}");
    let marks = rig.az.snapshot().geomarks;
    let names: HashSet<&str> = marks.iter().filter_map(|g| g["name"].as_str()).collect();
    assert_eq!(marks.len(), creates.len(), "one geomark per fence, none twice: {}", marks.len());
    assert_eq!(names.len(), creates.len());

    // Email: TrackMe creates land and are answered 504.
    let links = link_commands(&rig.world, 20);
    chaos_rule(rig.az_url(), json!({"count": 4, "apply": true, "status": 504, "methods": ["POST"]}));
    rig.send(&links);
    let sink = Sink::start(fast(rig.config(SinkKind::Email))).expect("email sink");
    let results = rig.wait_results(&ids(&links), Duration::from_secs(120));
    sink.stop().expect("clean stop");
    assert!(links.iter().all(|c| results[&c.id].outcome == Outcome::Done), "{results:#?}");
    assert_eq!(trackme_per_vehicle_window(&rig), links.len(), "one TrackMe link per Service Link");
    let mails = rig.smtp.mailbox.mails();
    let ids_seen: HashSet<&str> = mails.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids_seen.len(), links.len(), "one delivered email per Service Link (by Message-ID)");
}

#[test]
fn an_outage_delays_clock_changes_and_loses_none_and_retry_after_is_capped() {
    let rig = Rig::new("outage", 100);
    let clocks = clock_commands(&rig.world, 60);
    // ServiceTrade is down (503, Retry-After 2 s) for 20 s: far longer than
    // the old ten attempts lasted.
    chaos_rule(rig.st_url(), json!({"outage_s": 20, "status": 503, "retry_after_s": 2}));
    let began = Instant::now();
    rig.send(&clocks);
    let sink = Sink::start(fast(rig.config(SinkKind::Clock))).expect("clock sink");
    let results = rig.wait_results(&ids(&clocks), Duration::from_secs(120));
    let took = began.elapsed();
    assert!(clocks.iter().all(|c| results[&c.id].outcome == Outcome::Done), "{results:#?}");
    assert!(took >= Duration::from_secs(19), "decided only after the outage: {took:?}");
    assert_same_effects(clock_effects(&rig.st), expected_clock_effects(&clocks));
    sink.stop().expect("clean stop");

    // Azuga answers 429 with Retry-After: 3600; the sink waits its cap (3 s).
    let (creates, _) = fence_commands(&rig.world);
    chaos_rule(rig.az_url(), json!({"count": 2, "status": 429, "retry_after_s": 3600}));
    let mut c = fast(rig.config(SinkKind::Geofence));
    c.retry_after_cap = Duration::from_secs(3);
    let began = Instant::now();
    rig.send(&creates);
    let sink = Sink::start(c).expect("geofence sink");
    let results = rig.wait_results(&ids(&creates), Duration::from_secs(60));
    sink.stop().expect("clean stop");
    assert!(creates.iter().all(|c| results[&c.id].outcome == Outcome::Done));
    assert!(began.elapsed() < Duration::from_secs(30), "an hour's Retry-After waited only the cap");
}

#[test]
fn one_tenant_down_never_holds_back_another() {
    let rig = Rig::with_tenants("isolation", 0, &["acme", "globex"]);
    let globex = &rig.vendors[1];
    chaos_rule(&globex.st_url, json!({"outage_s": 25, "status": 503}));
    let a = clock_commands(&rig.world, 80);
    let g = clock_commands(&rig.world, 80);
    // Interleaved on the same partitions.
    for (ca, cg) in a.chunks(10).zip(g.chunks(10)) {
        rig.send_as("globex", cg);
        rig.send_as("acme", ca);
    }
    let sink = Sink::start(fast(rig.config(SinkKind::Clock))).expect("clock sink");
    let began = Instant::now();
    let results = rig.wait_results(&ids(&a), Duration::from_secs(20));
    let acme_took = began.elapsed();
    assert!(acme_took < Duration::from_secs(15), "acme waited for globex's outage: {acme_took:?}");
    assert!(a.iter().all(|c| results[&c.id].outcome == Outcome::Done));
    let latencies: Vec<i64> =
        a.iter().map(|c| results[&c.id].executed_at.millis() - results[&c.id].command_time.millis()).collect();
    eprintln!("acme p100 command-to-effect latency during globex's outage: {} ms", latencies.iter().max().unwrap());
    assert_same_effects(clock_effects(&rig.st), expected_clock_effects(&a));
    assert!(clock_effects(&globex.st).is_empty(), "globex is down");
    // Globex's commands wait out its outage, then happen.
    let deadline = Instant::now() + Duration::from_secs(90);
    while clock_effects(&globex.st).len() < g.len() {
        assert!(Instant::now() < deadline, "globex's clock changes never happened");
        std::thread::sleep(Duration::from_millis(200));
    }
    sink.stop().expect("clean stop");
    assert_same_effects(clock_effects(&globex.st), expected_clock_effects(&g));
}

#[test]
fn refused_commands_are_dead_lettered_and_replayed_once_after_a_fix() {
    let rig = Rig::new("redrive", 0);
    let clocks = clock_commands(&rig.world, 30);
    // Five POSTs refused (403): failed, dead-lettered.
    chaos_rule(rig.st_url(), json!({"count": 5, "status": 403, "methods": ["POST"]}));
    rig.send(&clocks);
    let sink = Sink::start(rig.config(SinkKind::Clock)).expect("clock sink");
    let results = rig.wait_results(&ids(&clocks), Duration::from_secs(60));
    let failed: Vec<&Command> = clocks.iter().filter(|c| results[&c.id].outcome == Outcome::Failed).collect();
    let latest = || rig.results_by(&rig.codec, false);
    assert_eq!(failed.len(), 5, "{results:#?}");
    assert_eq!(rig.dead_letters().len(), 5);
    let replay = |dry: bool| {
        let mut cmd = Proc::new(env!("CARGO_BIN_EXE_geoclock"));
        cmd.args([
            "dlq",
            "replay",
            "--brokers",
            rig.broker.brokers(),
            "--prefix",
            &rig.catalogue.prefix,
            "--format",
            "json",
        ]);
        if dry {
            cmd.arg("--dry-run");
        }
        let out = cmd.output().expect("geoclock dlq replay");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json report")
    };
    let plan = replay(true);
    assert_eq!(plan["commands"].as_array().map(Vec::len), Some(5), "{plan}");
    assert_eq!(plan["replayed"], false);
    // The fix (the refusals are over); re-drive.
    assert_eq!(replay(false)["replayed"], true);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = latest();
        if failed.iter().all(|c| r[&c.id].outcome == Outcome::Done) {
            break;
        }
        assert!(Instant::now() < deadline, "re-driven commands were not done");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Replaying again doubles nothing: they are done now.
    replay(false);
    std::thread::sleep(Duration::from_secs(3));
    sink.stop().expect("clean stop");
    assert_same_effects(clock_effects(&rig.st), expected_clock_effects(&clocks));
}

#[test]
fn a_dead_worker_ends_the_process_and_a_stalled_one_fails_healthz() {
    let rig = Rig::new("supervision", 0);
    rig.send(&clock_commands(&rig.world, 20));
    let mut dying =
        rig.spawn_with(SinkKind::Clock, "dying", &["--group", "dying"], &[("GEOCLOCK_FAULT", "sink_worker_error:1")]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = dying.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "the process outlived its dead worker");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "exits non-zero: {status:?}");
    assert!(rig.log("dying").contains("injected fault"), "{}", rig.log("dying"));

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics = format!("127.0.0.1:{port}");
    let mut stalled = rig.spawn_with(
        SinkKind::Clock,
        "stalled",
        &["--group", "stalled", "--metrics", &metrics, "--http-timeout-s", "1"],
        &[("GEOCLOCK_FAULT", "sink_worker_stall:1")],
    );
    let health = || {
        ureq::get(&format!("http://{metrics}/healthz"))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .ok()
            .map(|r| r.status().as_u16())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen_ok = false;
    loop {
        match health() {
            Some(200) => seen_ok = true,
            Some(503) => break,
            _ => {}
        }
        assert!(Instant::now() < deadline, "/healthz never reported the stalled worker");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(seen_ok || rig.log("stalled").contains("stalling the worker"));
    let _ = stalled.kill();
    let _ = stalled.wait();
}

#[test]
fn two_instances_in_one_group_killed_in_turn_neither_double_nor_lose_an_effect() {
    let rig = Rig::new("group", 0);
    let clocks = clock_commands(&rig.world, 1200);
    chaos_rule(rig.st_url(), json!({"rate": 0.1, "apply": true, "status": 502, "seed": 9, "methods": ["POST"]}));
    rig.send(&clocks);
    let args = ["--group", "shared", "--http-timeout-s", "2"];
    let mut a = rig.spawn_with(SinkKind::Clock, "a", &args, &[]);
    let mut b = rig.spawn_with(SinkKind::Clock, "b", &args, &[]);
    let wait_posts = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while rig.st.calls().count("POST", "/api/clock") < n {
            assert!(Instant::now() < deadline, "no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_posts(300);
    support::sinks::kill(&mut a);
    a = rig.spawn_with(SinkKind::Clock, "a", &args, &[]);
    wait_posts(700);
    support::sinks::kill(&mut b);
    let results = rig.wait_results(&ids(&clocks), Duration::from_secs(300));
    support::sinks::kill(&mut a);
    assert!(clocks.iter().all(|c| results[&c.id].outcome == Outcome::Done), "{results:#?}");
    assert_same_effects(clock_effects(&rig.st), expected_clock_effects(&clocks));
    let logs = rig.log("a") + &rig.log("b");
    assert!(logs.contains("partition claimed"), "claims are logged");
}

/// A command written with a schema the sink has never seen, while the
/// registry is down: the sink waits for the registry instead of
/// dead-lettering the command.
#[test]
fn a_registry_outage_is_waited_out_not_treated_as_poison() {
    let rig = Rig::new("registry", 0);
    let (reg_sim, reg_run) = rig.rt.block_on(RegistrySim::start("127.0.0.1:0")).expect("registry");
    let url = reg_run.url();
    let registry: Arc<dyn SchemaRegistry> = Arc::new(ConfluentRegistry::new(&url).expect("registry client"));
    let codec = Codec::new(registry.clone(), &rig.catalogue).expect("codec");
    // A newer writer schema of the command record: one more optional field.
    let mut v2: serde_json::Value = serde_json::from_str(RecordType::Command.schema_json()).unwrap();
    v2["fields"].as_array_mut().unwrap().push(json!({"name": "note", "type": ["null", "string"], "default": null}));
    let v2 = apache_avro::Schema::parse_str(&v2.to_string()).expect("v2 parses");
    let v2_id = registry.register(&RecordType::Command.subject(&rig.catalogue), &v2).expect("v2 registered");
    assert_ne!(v2_id, codec.schema_id(RecordType::Command));
    let mut c = rig.config(SinkKind::Clock);
    c.registry = Arc::new(ConfluentRegistry::new(&url).expect("registry client"));
    let sink = Sink::start(c).expect("clock sink");
    // The registry goes down; then a command in v2 arrives.
    chaos_rule(&url, json!({"outage_s": 8, "status": 503}));
    let command: Command = clock_commands(&rig.world, 1).remove(0);
    let v1 = codec.encode_command("acme", &command).expect("encode");
    let mut bytes = vec![0u8];
    bytes.extend_from_slice(&v2_id.to_be_bytes());
    bytes.extend_from_slice(&v1[5..]);
    bytes.push(0); // note: null
    let key = geoclock::kafka::topics::key("acme", command.appointment.as_str()).unwrap();
    produce(rig.broker.brokers(), &rig.catalogue.name(geoclock::kafka::topics::Topic::Commands), &[(key, bytes)]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        if let Some(r) = rig.results_by(&codec, true).remove(&command.id) {
            break r;
        }
        assert!(Instant::now() < deadline, "no result");
        std::thread::sleep(Duration::from_millis(200));
    };
    sink.stop().expect("clean stop");
    assert_eq!(done.outcome, Outcome::Done, "{done:?}");
    assert!(rig.dead_letters().is_empty(), "nothing dead-lettered: {:?}", rig.dead_letters());
    let refused = reg_sim.calls().snapshot("/schemas").iter().filter(|c| c.status == 503).count();
    assert!(refused > 0, "the sink asked while the registry was down");
}
