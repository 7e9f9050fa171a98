//! End to end: both simulators, both connectors, a real broker. A working
//! day for 50 technicians must arrive on the topics exactly once by key and
//! content, across a connector restart mid-day and with the ServiceTrade
//! simulator dropping, duplicating and reordering webhooks (the Azuga one
//! duplicating and reordering). Malformed webhooks get 4xx and a dead letter.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use geoclock::config::webhook;
use geoclock::engine::{EntityRef, Event};
use geoclock::kafka::admin::ensure_topics;
use geoclock::kafka::codec::Codec;
use geoclock::kafka::registry::FileRegistry;
use geoclock::kafka::topics::{Catalogue, Topic};
use geoclock::model::{Activity, AppointmentStatus, ClockAction, ClockEvent, Id, Ts, User};
use geoclock::sim::azuga::{self, AzugaSim};
use geoclock::sim::fleet::{generate, FleetConfig};
use geoclock::sim::servicetrade::{self as st, ServiceTradeSim};
use geoclock::sim::webhook::Faults;
use support::broker::{Broker, Storage};
use support::connect::*;

/// The entity events the simulators hold now.
fn expected_entities(sts: &st::Snapshot, azs: &azuga::Snapshot) -> Vec<Event> {
    let mut v: Vec<Event> = Vec::new();
    v.extend(sts.users.iter().cloned().map(Event::User));
    v.extend(sts.locations.iter().cloned().map(Event::Location));
    v.extend(sts.offices.iter().cloned().map(Event::Office));
    v.extend(sts.contacts.iter().cloned().map(Event::Contact));
    v.extend(sts.jobs.iter().cloned().map(Event::Job));
    v.extend(sts.appointments.iter().cloned().map(Event::Appointment));
    v.extend(azs.drivers.iter().cloned().map(Event::Driver));
    v.extend(azs.vehicles.iter().cloned().map(Event::Vehicle));
    v.extend(azs.pairings.iter().cloned().map(Event::Pairing));
    v
}

/// Checks the topics against the simulators; `Err(why)` while they differ.
fn check(
    codec: &Codec,
    seen: &Seen,
    sts: &st::Snapshot,
    azs: &azuga::Snapshot,
    deleted: &[EntityRef],
) -> Result<(), String> {
    let topics = by_key(codec, seen);
    // Entities: the latest value per key is the simulator's; no key ever
    // carries the same content twice in a row.
    for e in expected_entities(sts, azs) {
        let rec = codec.encode_event("acme", &e).unwrap();
        let Some(values) = topics.get(&(rec.topic, rec.key.clone())) else {
            return Err(format!("missing {e:?}"));
        };
        if values.last() != Some(&Some(e.clone())) {
            return Err(format!("latest of {} is {:?}, want {e:?}", String::from_utf8_lossy(&rec.key), values.last()));
        }
    }
    for r in deleted {
        let rec = codec.encode_event("acme", &Event::Delete(r.clone())).unwrap();
        if topics.get(&(rec.topic, rec.key.clone())).and_then(|v| v.last()) != Some(&None) {
            return Err(format!("no tombstone for {r:?}"));
        }
    }
    for ((topic, key), values) in &topics {
        if matches!(topic, Topic::ClockEvents | Topic::Pings) {
            continue;
        }
        if values.windows(2).any(|w| w[0] == w[1]) {
            return Err(format!(
                "{topic:?} {} published the same content twice in a row",
                String::from_utf8_lossy(key)
            ));
        }
    }
    // Clock events: each exactly once.
    let mut want: Vec<String> = sts.clocks.iter().map(|c| format!("{:?}", c.event)).collect();
    let mut got: Vec<String> = topics
        .iter()
        .filter(|((t, _), _)| *t == Topic::ClockEvents)
        .flat_map(|(_, v)| {
            v.iter().map(|e| {
                format!("{:?}", e.as_ref().and_then(|e| if let Event::Clock(c) = e { Some(c) } else { None }).unwrap())
            })
        })
        .collect();
    want.sort();
    got.sort();
    if want != got {
        return Err(format!("clock events: {} on the topic, {} in the simulator", got.len(), want.len()));
    }
    // Pings: every distinct released fix exactly once, same content.
    let mut want: Vec<String> = azs.released.iter().map(|p| format!("{p:?}")).collect();
    want.sort();
    want.dedup();
    let mut got: Vec<String> = topics
        .iter()
        .filter(|((t, _), _)| *t == Topic::Pings)
        .flat_map(|(_, v)| {
            v.iter().map(|e| format!("{e:?}").replacen("Some(Ping(", "", 1).trim_end_matches("))").to_string())
        })
        .collect();
    got.sort();
    if want != got {
        let dups = got.windows(2).filter(|w| w[0] == w[1]).count();
        return Err(format!("pings: {} on the topic ({dups} duplicated), {} released", got.len(), want.len()));
    }
    Ok(())
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f() {
            Ok(()) => return,
            Err(why) if Instant::now() > deadline => panic!("{what}: {why}"),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

#[test]
fn a_day_for_50_technicians_arrives_exactly_once_across_restart_and_webhook_faults() {
    let started = Instant::now();
    let broker = Broker::start(Storage::Memory);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    let catalogue = Catalogue { prefix: "e2e".into(), partitions: PARTITIONS, replication: 1 };
    rt.block_on(ensure_topics(&broker.bootstrap(), &catalogue, Duration::from_secs(20))).expect("topics");
    let codec = Codec::new(Arc::new(FileRegistry::in_memory()), &catalogue).unwrap();
    let seen = tail(&broker.bootstrap(), &catalogue);

    let now_s = chrono::Utc::now().timestamp();
    let day_start = Ts::from_secs(now_s - 14 * 3600);
    let world = generate(&FleetConfig { technicians: 50, seed: 7, day_start, ..FleetConfig::default() });
    let end = world.pings.last().unwrap().release_at;
    let mid = world.pings[world.pings.len() / 2].release_at;
    let three_quarters = world.pings[world.pings.len() * 3 / 4].release_at;
    assert!(end.millis() < now_s * 1000, "the whole day is in the past");

    let st_faults = Faults {
        seed: 11,
        drop_rate: 0.15,
        duplicate_rate: 0.2,
        reorder_rate: 0.15,
        max_batch: 8,
        retry_backoff_ms: 50,
        ..Faults::default()
    };
    let az_faults = Faults {
        seed: 12,
        drop_rate: 0.15,
        duplicate_rate: 0.2,
        reorder_rate: 0.15,
        max_batch: 50,
        retry_backoff_ms: 50,
        ..Faults::default()
    };
    let (sts, st_run) = rt
        .block_on(ServiceTradeSim::start(
            st::Config { faults: st_faults, ..st::Config::default() },
            &world,
            "127.0.0.1:0",
        ))
        .unwrap();
    let (azs, az_run) = rt
        .block_on(AzugaSim::start(
            azuga::Config { rate_limit_ms: 100, faults: az_faults, ..azuga::Config::default() },
            &world,
            "127.0.0.1:0",
        ))
        .unwrap();
    let t = tenants(&st_run.url(), &az_run.url());
    let dir = std::env::temp_dir().join(format!("geoclock-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (c_st, c_az) = rt.block_on(both(&broker.bootstrap(), &catalogue, &dir, &t, ("127.0.0.1:0", "127.0.0.1:0")));
    let ports = (c_st.addr.to_string(), c_az.addr.to_string());

    // Morning: fixes released up to mid-day; the office changes things.
    wait_for("webhooks registered", 20, || {
        if sts.outbox().has_hooks() && azs.outbox().has_hooks() {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
    wait_for("initial sync", 30, || check(&codec, &seen, &sts.snapshot(), &azs.snapshot(), &[]));
    azs.advance(mid);
    let mut deleted = Vec::new();
    let appt = world.appointments[3].clone();
    let moved = geoclock::model::Appointment {
        window_start: appt.window_start.map(|w| w.plus_millis(3_600_000)),
        window_end: appt.window_end.map(|w| w.plus_millis(3_600_000)),
        ..appt
    };
    sts.apply(Event::Appointment(moved), None).unwrap();
    sts.apply(
        Event::User(User {
            id: Id::number(4242),
            name: "New Hire".into(),
            email: Some("new@acme.example".into()),
            tech: true,
        }),
        None,
    )
    .unwrap();
    let gone = world.jobs[5].id.clone();
    sts.apply(Event::Delete(EntityRef::Job(gone.clone())), None).unwrap();
    deleted.push(EntityRef::Job(gone));
    for a in world.appointments.iter().skip(10).take(20) {
        let c = ClockEvent {
            user: a.techs[0].clone(),
            appointment: a.id.clone(),
            activity: Activity::Onsite,
            action: ClockAction::In,
            time: mid,
        };
        sts.apply(Event::Clock(c), Some(&Id::number(1))).unwrap();
    }
    wait_for("morning on the topics", 40, || check(&codec, &seen, &sts.snapshot(), &azs.snapshot(), &deleted));
    let records_before_restart = seen.lock().unwrap().len();

    // Restart mid-day; while both connectors are down the office keeps
    // working (those webhooks fail three times and are dropped).
    rt.block_on(async { tokio::join!(c_st.stop(), c_az.stop()) });
    let cancel = world.appointments[7].clone();
    sts.apply(
        Event::Appointment(geoclock::model::Appointment { status: AppointmentStatus::CanceledByCustomer, ..cancel }),
        None,
    )
    .unwrap();
    let gone = world.users[20].id.clone();
    sts.apply(Event::Delete(EntityRef::User(gone.clone())), None).unwrap();
    deleted.push(EntityRef::User(gone));
    azs.apply(Event::Vehicle(geoclock::model::Vehicle {
        id: Id::text("veh-000"),
        name: "Truck 1 (new plates)".into(),
    }))
    .unwrap();
    // Fixes keep coming while the connector is down: their webhooks fail
    // and are dropped; only the location-history backfill can recover them.
    azs.advance(three_quarters);
    wait_for("down-time webhooks given up", 30, || {
        if sts.outbox().idle() && azs.outbox().idle() {
            Ok(())
        } else {
            Err("busy".into())
        }
    });
    let (c_st, c_az) = rt.block_on(both(&broker.bootstrap(), &catalogue, &dir, &t, (&ports.0, &ports.1)));

    // Afternoon: the rest of the day (late fixes included).
    azs.advance(end.plus_millis(3_600_000));
    for a in world.appointments.iter().skip(30).take(20) {
        let c = ClockEvent {
            user: a.techs[0].clone(),
            appointment: a.id.clone(),
            activity: Activity::Onsite,
            action: ClockAction::Out,
            time: end,
        };
        sts.apply(Event::Clock(c), Some(&Id::number(1))).unwrap();
    }
    wait_for("the whole day on the topics", 60, || check(&codec, &seen, &sts.snapshot(), &azs.snapshot(), &deleted));

    // The restart re-published nothing wholesale: far fewer new records than before.
    let entity_records_after = seen
        .lock()
        .unwrap()
        .iter()
        .skip(records_before_restart)
        .filter(|(t, _, _)| !matches!(t, Topic::Pings | Topic::ClockEvents))
        .count();
    assert!(entity_records_after < 20, "{entity_records_after} entity records after the restart");
    let faults_seen = sts.outbox().deliveries();
    assert!(faults_seen.iter().any(|d| serde_json::to_value(d.outcome).unwrap() == "lost"), "some webhooks were lost");
    assert!(faults_seen.iter().any(|d| d.copies == 2), "some webhooks were duplicated");
    assert!(azs.outbox().deliveries().iter().any(|d| d.copies == 2));
    let az_lost = azs
        .outbox()
        .deliveries()
        .iter()
        .filter(|d| matches!(serde_json::to_value(d.outcome).unwrap().as_str(), Some("lost" | "failed")))
        .count();
    assert!(az_lost > 10, "GPS webhooks were lost or failed while down ({az_lost})");
    assert!(azs.calls().count("GET", "/v1/location-history") > 0);
    let dead = seen.lock().unwrap().iter().filter(|(t, _, _)| *t == Topic::DeadLetters).count();
    assert_eq!(dead, 0, "a clean day has no dead letters");
    let metrics = c_az.metrics.render();
    assert!(
        metrics.contains(
            "geoclock_connector_records_published_total{connector=\"azuga\",tenant=\"acme\",topic=\"e2e.azuga.pings\"}"
        ),
        "{metrics}"
    );
    assert!(!metrics.contains("az-hook-secret") && !metrics.contains("azuga-key"));
    // Reconciliation keeps passing: its lag is seconds, though the newest
    // change the simulator holds is hours old.
    let metrics = c_st.metrics.render();
    let lag: f64 = metrics
        .lines()
        .find(|l| l.starts_with("geoclock_connector_reconcile_cursor_lag_seconds{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no reconcile lag gauge in {metrics}"));
    assert!(lag < 30.0, "reconcile lag {lag} s");

    rt.block_on(async { tokio::join!(c_st.stop(), c_az.stop(), st_run.stop(), az_run.stop()) });
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("{} pings, {} appointments in {:?}", world.pings.len(), world.appointments.len(), started.elapsed());
}

fn post(url: &str, body: Vec<u8>, header: Option<(&str, &str)>) -> u16 {
    let a: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut r = a.post(url).header("Content-Type", "application/json");
    if let Some((k, v)) = header {
        r = r.header(k, v);
    }
    match r.send(body) {
        Ok(resp) => resp.status().as_u16(),
        // A server may close the connection on a body it refuses to read.
        Err(_) => 413,
    }
}

#[test]
fn malformed_and_unauthenticated_webhooks_are_refused_and_dead_lettered() {
    let broker = Broker::start(Storage::Memory);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let catalogue = Catalogue { prefix: "bad".into(), partitions: PARTITIONS, replication: 1 };
    rt.block_on(ensure_topics(&broker.bootstrap(), &catalogue, Duration::from_secs(20))).expect("topics");
    let codec = Codec::new(Arc::new(FileRegistry::in_memory()), &catalogue).unwrap();
    let seen = tail(&broker.bootstrap(), &catalogue);
    let world = generate(&FleetConfig {
        technicians: 2,
        day_start: Ts::from_secs(chrono::Utc::now().timestamp() - 14 * 3600),
        ..FleetConfig::default()
    });
    let (_sts, st_run) = rt.block_on(ServiceTradeSim::start(st::Config::default(), &world, "127.0.0.1:0")).unwrap();
    let (_azs, az_run) = rt
        .block_on(AzugaSim::start(
            azuga::Config { rate_limit_ms: 50, ..azuga::Config::default() },
            &world,
            "127.0.0.1:0",
        ))
        .unwrap();
    let t = tenants(&st_run.url(), &az_run.url());
    let dir = std::env::temp_dir().join(format!("geoclock-e2e-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (c_st, c_az) = rt.block_on(both(&broker.bootstrap(), &catalogue, &dir, &t, ("127.0.0.1:0", "127.0.0.1:0")));
    let st_hook = format!("{}/webhook/acme", c_st.url());
    let az_hook = format!("{}/webhook/acme", c_az.url());
    let az_auth = webhook::basic("acme", "az-hook-secret");
    let az_auth = Some(("Authorization", az_auth.as_str()));
    let st_post = |body: Vec<u8>| {
        let sig = webhook::sign("st-hook-secret", &body);
        post(&st_hook, body, Some(("X-Geoclock-Signature", &sig)))
    };

    // Unauthenticated: 401, nothing published.
    let wrong_sig = webhook::sign("wrong", b"{}");
    assert_eq!(post(&st_hook, b"{}".to_vec(), Some(("X-Geoclock-Signature", &wrong_sig))), 401);
    assert_eq!(post(&st_hook, b"{}".to_vec(), Some(("X-Geoclock-Key", "st-hook-secret"))), 401, "key not configured");
    let sig = webhook::sign("st-hook-secret", b"{}");
    assert_eq!(
        post(&format!("{}/webhook/nobody", c_st.url()), b"{}".to_vec(), Some(("X-Geoclock-Signature", &sig))),
        401
    );
    assert_eq!(post(&az_hook, b"[]".to_vec(), None), 401);
    assert_eq!(post(&az_hook, b"[]".to_vec(), Some(("X-Geoclock-Key", "nope"))), 401);
    // The secret in the path is refused once header auth is configured.
    assert_eq!(post(&format!("{}/webhook/acme/st-hook-secret", c_st.url()), b"{}".to_vec(), None), 401);
    assert_eq!(post(&format!("{}/webhook/acme/az-hook-secret", c_az.url()), b"[]".to_vec(), None), 401);
    // Metrics are not on the public inbox.
    let status = |u: String| {
        let a: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        a.get(&u).call().map(|r| r.status().as_u16()).unwrap_or(0)
    };
    assert_eq!(status(format!("{}/metrics", c_az.url())), 404);

    let huge = format!("{{\"messageId\":\"m\",\"data\":[],\"pad\":\"{}\"}}", "x".repeat(2 * 1024 * 1024)).into_bytes();
    let st_bad: Vec<(&str, Vec<u8>)> = vec![
        ("invalid JSON", b"{not json".to_vec()),
        ("wrong types", br#"{"messageId":"m1","data":{"action":"created"}}"#.to_vec()),
        ("missing fields", br#"{"data":[{"action":"created","entity":{"type":"job","id":1}}]}"#.to_vec()),
        (
            "unknown entity",
            br#"{"messageId":"m2","data":[{"action":"created","entity":{"type":"invoice","id":1}}]}"#.to_vec(),
        ),
    ];
    for (what, body) in &st_bad {
        let s = st_post(body.clone());
        assert_eq!(s, 400, "servicetrade {what}");
    }
    // Too large to be authenticated by its signature: 413, no dead letter.
    let s = st_post(huge.clone());
    assert!(s == 413, "huge body: {s}");
    let s = post(&az_hook, huge.clone(), az_auth);
    assert!(s == 413, "huge body: {s}");
    let az_bad: Vec<(&str, Vec<u8>)> = vec![
        ("invalid JSON", b"[{".to_vec()),
        ("wrong types", br#"{"eventType":"GPS_MESSAGE","vehicleId":"veh-000","latitude":"35.1","longitude":-80.1,"locationTime":1}"#.to_vec()),
        ("missing fields", br#"[{"eventType":"GPS_MESSAGE","latitude":35.1,"longitude":-80.1}]"#.to_vec()),
        ("not objects", b"[1, true]".to_vec()),
    ];
    for (what, body) in &az_bad {
        assert_eq!(post(&az_hook, body.clone(), az_auth), 400, "azuga {what}");
    }
    // Well-formed but impossible fixes: accepted (the body is fine), each dead-lettered with its reason.
    let now = chrono::Utc::now().timestamp_millis();
    let fixes = serde_json::json!([
        {"eventType":"GPS_MESSAGE","vehicleId":"veh-000","latitude":95.0,"longitude":-80.1,"speed":3,"locationTime":now},
        {"eventType":"GPS_MESSAGE","vehicleId":"veh-000","latitude":35.0,"longitude":-80.1,"speed":3,"locationTime":now + 86_400_000},
        {"eventType":"GPS_MESSAGE","vehicleId":"veh-000","latitude":35.0,"longitude":-80.1,"speed":3,"locationTime":1000},
        {"eventType":"GPS_MESSAGE","vehicleId":"veh-000","latitude":35.0,"longitude":-80.1,"speed":3,"locationTime":now - 5000},
    ]);
    assert_eq!(post(&az_hook, fixes.to_string().into_bytes(), az_auth), 200);

    let want_dead = st_bad.len() + 1 + az_bad.len() + 3;
    wait_for("dead letters", 20, || {
        let n = seen.lock().unwrap().iter().filter(|(t, _, _)| *t == Topic::DeadLetters).count();
        if n >= want_dead {
            Ok(())
        } else {
            Err(format!("{n} of {want_dead}"))
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let dead: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _, _)| *t == Topic::DeadLetters)
        .map(|(_, _, v)| codec.decode_dead_letter(v.as_deref().unwrap()).unwrap())
        .collect();
    assert_eq!(dead.len(), want_dead, "exactly one dead letter per refused body or fix, none for 401s");
    assert!(dead.iter().any(|d| d.kind == "too_large"));
    assert!(dead.iter().any(|d| d.kind == "position" && d.reason.contains("95")));
    assert_eq!(dead.iter().filter(|d| d.kind == "time").count(), 2);
    assert!(dead.iter().filter(|d| d.kind == "malformed").all(|d| !d.reason.is_empty() && d.value.is_some()));
    assert!(dead.iter().all(|d| !format!("{d:?}").contains("hook-secret")));
    // Still alive, and the one good fix was published.
    wait_for("the good fix", 10, || {
        let n = seen.lock().unwrap().iter().filter(|(t, _, _)| *t == Topic::Pings).count();
        if n >= 1 {
            Ok(())
        } else {
            Err("no ping".into())
        }
    });
    let ok = |u: String| ureq::get(&u).call().map(|r| r.status().as_u16()).unwrap_or(0);
    assert_eq!(ok(format!("{}/healthz", c_st.url())), 200);
    assert_eq!(ok(format!("{}/healthz", c_az.url())), 200);
    let metrics = c_st.metrics.render();
    assert!(metrics.contains("outcome=\"unauthorized\""), "{metrics}");
    assert!(!metrics.contains("st-hook-secret"));
    rt.block_on(async { tokio::join!(c_st.stop(), c_az.stop(), st_run.stop(), az_run.stop()) });
    let _ = std::fs::remove_dir_all(&dir);
}
