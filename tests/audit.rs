//! `geoclock audit` on a real broker (nisshi): a day for two tenants through
//! the real processor and the real sinks (against the simulators), audited
//! clean, then with a forged, a failed and an altered command; a
//! reschedule after an arrival that compaction must not erase; what-if
//! with the fence radius halved against pure scenario runs.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command as Proc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use geoclock::audit::kafka::{audit, AuditOptions};
use geoclock::audit::whatif::Overrides;
use geoclock::engine::command::command_id;
use geoclock::engine::{Action, Command, Event};
use geoclock::kafka::admin::ensure_topics;
use geoclock::kafka::codec::Codec;
use geoclock::kafka::records::{Outcome, SinkResult};
use geoclock::kafka::registry::FileRegistry;
use geoclock::kafka::topics::{self, Catalogue, Retention, Topic};
use geoclock::model::{
    Activity, Appointment, AppointmentStatus, ClockAction, ClockEvent, Driver, Id, Job, Location, Pairing, Ping,
    Settings, Ts, User,
};
use geoclock::processor::{Config, Processor, Tenants};
use geoclock::scenario::generate::Day;
use geoclock::scenario::kafka::ViaKafka;
use geoclock::scenario::Scenario;
use geoclock::sim::azuga::{self, AzugaSim};
use geoclock::sim::server::Running;
use geoclock::sim::servicetrade::{self as st, ServiceTradeSim};
use geoclock::sim::smtp::SmtpSim;
use geoclock::sim::world::World;
use geoclock::sink::runner::{Sink, SinkConfig};
use geoclock::sink::SinkKind;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use support::broker::{Broker, Storage};
use support::compaction::{compact, copy_compacted, Rec};
use support::kafka::{produce, read_to_end};

const T: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("geoclock-audit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Produces `(tenant, event)` in order, each stamped 1 ms after the last.
fn produce_events(
    rt: &tokio::runtime::Runtime,
    brokers: &str,
    cat: &Catalogue,
    codec: &Codec,
    events: &[(String, Event)],
) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("max.in.flight.requests.per.connection", "1")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let records: Vec<_> = events
        .iter()
        .enumerate()
        .map(|(i, (tenant, e))| {
            let r = codec.encode_event(tenant, e).expect("encode");
            (cat.name(r.topic), r.key, r.value, 1_790_000_000_000 + i as i64)
        })
        .collect();
    rt.block_on(async {
        let sends = records.iter().map(|(topic, key, value, ts)| {
            let mut r = FutureRecord::<Vec<u8>, Vec<u8>>::to(topic).key(key).timestamp(*ts);
            if let Some(v) = value {
                r = r.payload(v);
            }
            producer.send(r, T)
        });
        for d in futures::future::join_all(sends).await {
            d.expect("produced");
        }
    });
}

/// Waits until every task of the processor has been idle for a moment.
fn wait_idle(p: &Processor, partitions: i32) {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut since: Option<Instant> = None;
    while since.is_none_or(|s| s.elapsed() < Duration::from_millis(800)) {
        let st = p.status();
        let idle = st.len() == 2 * partitions as usize && st.iter().all(|s| s.idle);
        since = if idle { since.or(Some(Instant::now())) } else { None };
        assert!(Instant::now() < deadline, "processor not idle: {st:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every command on the topic, by (tenant, id).
fn commands(brokers: &str, cat: &Catalogue, codec: &Codec) -> BTreeMap<(String, String), Command> {
    read_to_end(brokers, &cat.name(Topic::Commands), cat.partitions, T)
        .into_iter()
        .map(|(_, v)| codec.decode_command(&v).expect("command decodes"))
        .map(|c| ((c.tenant, c.command.id.clone()), c.command))
        .collect()
}

fn results(brokers: &str, cat: &Catalogue, codec: &Codec) -> BTreeMap<(String, String), SinkResult> {
    read_to_end(brokers, &cat.name(Topic::Results), cat.partitions, T)
        .into_iter()
        .map(|(_, v)| codec.decode_result(&v).expect("result decodes"))
        .map(|(t, r)| ((t, r.command_id.clone()), r))
        .collect()
}

/// `geoclock audit` as a process: its exit status and JSON.
fn audit_cli(brokers: &str, prefix: &str, tenants: &Path, extra: &[&str]) -> (i32, Value) {
    let out = Proc::new(env!("CARGO_BIN_EXE_geoclock"))
        .args(["audit", "--brokers", brokers, "--prefix", prefix, "--format", "json", "--quiet"])
        .arg("--tenants")
        .arg(tenants)
        .args(extra)
        .output()
        .expect("geoclock audit runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("audit JSON ({e}):\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), json)
}

fn ids(v: &Value, list: &str) -> Vec<(String, String)> {
    v[list]
        .as_array()
        .unwrap_or_else(|| panic!("{list} is a list: {v}"))
        .iter()
        .map(|e| {
            assert!(e["appointment"].is_string() || e["appointment"].is_number(), "{e}");
            (e["tenant"].as_str().unwrap().to_string(), e["id"].as_str().unwrap().to_string())
        })
        .collect()
}

const TENANTS: [&str; 2] = ["acme", "zeta"];

/// Both tenants' simulators and the tenants file the processor and the
/// sinks read.
struct Vendors {
    _servers: Vec<Running>,
    _smtp: SmtpSim,
    tenants_file: PathBuf,
}

fn vendors(rt: &tokio::runtime::Runtime, dir: &Path, worlds: &[World]) -> Vendors {
    let smtp = rt.block_on(SmtpSim::start("127.0.0.1:0", "127.0.0.1:0")).expect("smtp receiver");
    let mut servers = Vec::new();
    let mut toml = String::new();
    for w in worlds {
        let (_, st_run) =
            rt.block_on(ServiceTradeSim::start(st::Config::default(), w, "127.0.0.1:0")).expect("servicetrade sim");
        let az = azuga::Config { rate_limit_ms: 100, ..azuga::Config::default() };
        let (_, az_run) = rt.block_on(AzugaSim::start(az, w, "127.0.0.1:0")).expect("azuga sim");
        toml.push_str(&support::sinks::tenant_toml(
            w.tenant.as_str(),
            &st_run.url(),
            &az_run.url(),
            &smtp.smtp_addr.to_string(),
            100,
            &format!("from = \"Field Service <service@{}.example>\"", w.tenant),
        ));
        servers.push(st_run);
        servers.push(az_run);
    }
    let tenants_file = dir.join("tenants.toml");
    std::fs::write(&tenants_file, toml).expect("tenants file");
    Vendors { _servers: servers, _smtp: smtp, tenants_file }
}

#[test]
fn a_two_tenant_day_audits_clean_and_exactly_the_forged_failed_and_altered_commands_are_reported() {
    let broker = Broker::start(Storage::Memory);
    let brokers = broker.brokers().to_string();
    let rt = runtime();
    let dir = scratch("day");
    let cat = Catalogue { prefix: "aud".into(), partitions: 3, replication: 1 };
    rt.block_on(ensure_topics(&brokers, &cat, T)).expect("topics");
    let codec = Codec::new(Arc::new(FileRegistry::in_memory()), &cat).expect("codec");

    // Two tenants' days, each with its own vendors' simulators.
    let mut events: Vec<(String, Event)> = Vec::new();
    let mut worlds = Vec::new();
    for (i, tenant) in TENANTS.iter().enumerate() {
        let day = Day { seed: 10 + i as u64, techs: 12, appointments_per_tech: 3, ping_every_s: 120 }.events();
        let mut w = World { tenant: tenant.to_string(), ..World::default() };
        for e in &day {
            w.apply(e.clone());
            events.push((tenant.to_string(), e.clone()));
        }
        worlds.push(w);
    }
    let v = vendors(&rt, &dir, &worlds);
    produce_events(&rt, &brokers, &cat, &codec, &events);

    // The processor, then the three sinks, until every command has a result.
    let mut config = Config::new(&brokers, cat.clone(), dir.join("state"), Arc::new(FileRegistry::in_memory()));
    config.group_id = "aud-processor".into();
    config.tenants = Tenants::load(&v.tenants_file).expect("tenants");
    let processor = Processor::start(config).expect("processor");
    wait_idle(&processor, cat.partitions);
    processor.stop().expect("processor stops");
    let emitted = commands(&brokers, &cat, &codec);
    assert!(emitted.len() > 2 * 36 * 3, "{} commands", emitted.len());
    let sink_tenants = geoclock::config::tenants::load(&v.tenants_file).expect("tenants");
    let sinks: Vec<Sink> = [SinkKind::Clock, SinkKind::Geofence, SinkKind::Email]
        .into_iter()
        .map(|kind| {
            let mut c = SinkConfig::new(
                kind,
                &brokers,
                cat.clone(),
                dir.join("sinks"),
                sink_tenants.clone(),
                Arc::new(FileRegistry::in_memory()),
            );
            c.backoff.base = Duration::from_millis(50);
            c.backoff.cap = Duration::from_millis(800);
            Sink::start(c).expect("sink starts")
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let done = results(&brokers, &cat, &codec);
        let left: Vec<_> = emitted.keys().filter(|k| !done.contains_key(*k)).collect();
        if left.is_empty() {
            let failed: Vec<_> = done.values().filter(|r| r.outcome == Outcome::Failed).collect();
            assert!(failed.is_empty(), "sinks failed: {failed:?}");
            break;
        }
        assert!(Instant::now() < deadline, "{} commands without a result, e.g. {:?}", left.len(), left.first());
        std::thread::sleep(Duration::from_millis(500));
    }
    for s in sinks {
        s.stop().expect("sink stops");
    }

    // Clean: every command re-derived, emitted once with its content, done.
    let (code, clean) = audit_cli(&brokers, &cat.prefix, &v.tenants_file, &[]);
    assert_eq!(code, 0, "{clean:#}");
    assert_eq!(clean["matched"].as_u64(), Some(emitted.len() as u64), "{clean:#}");
    for list in ["missing", "extra", "differs", "not_done"] {
        assert!(ids(&clean, list).is_empty(), "{list}: {clean:#}");
    }
    let days: BTreeSet<&str> = clean["days"].as_array().unwrap().iter().filter_map(|d| d["tenant"].as_str()).collect();
    assert_eq!(days, TENANTS.into_iter().collect(), "per tenant and day");
    assert_eq!(clean["input"]["pings"].as_u64(), Some(2 * 12 * 360), "{}", clean["input"]);

    // A forged command, a failed effect, an altered command.
    let pick = |tenant: &str, kind: &str| {
        emitted
            .iter()
            .find(|((t, _), c)| t == tenant && c.action.kind() == kind)
            .map(|(k, c)| (k.clone(), c.clone()))
            .expect("a command of that kind")
    };
    let ((_, clock_id), clock) = pick("acme", "clock");
    let mut forged = clock.clone();
    forged.id = command_id(&["acme", "clock", "forged"]);
    if let Action::Clock(k) = &mut forged.action {
        k.activity = Activity::Onsite;
        k.action = ClockAction::Out;
    }
    let mut altered = clock.clone();
    if let Action::Clock(k) = &mut altered.action {
        k.time = Ts(k.time.millis() + 60_000);
    }
    let record = |tenant: &str, c: &Command| {
        (topics::key(tenant, c.appointment.as_str()).unwrap(), codec.encode_command(tenant, c).unwrap())
    };
    produce(&brokers, &cat.name(Topic::Commands), &[record("acme", &forged), record("acme", &altered)]);
    let ((_, link_id), link) = pick("zeta", "send_service_link");
    let failed = SinkResult {
        command_id: link_id.clone(),
        appointment: link.appointment.to_string(),
        kind: "send_service_link".into(),
        sink: "email".into(),
        outcome: Outcome::Failed,
        reason: "SMTP 554: rejected".into(),
        remote_ref: None,
        attempts: 1,
        executed_at: Ts(chrono::Utc::now().timestamp_millis() + 60_000),
        command_time: Ts(0),
    };
    let result = (topics::key("zeta", &link_id).unwrap(), codec.encode_result("zeta", &failed).unwrap());
    produce(&brokers, &cat.name(Topic::Results), &[result]);

    let (code, dirty) = audit_cli(&brokers, &cat.prefix, &v.tenants_file, &[]);
    assert_eq!(code, 1, "{dirty:#}");
    assert_eq!(ids(&dirty, "extra"), vec![("acme".to_string(), forged.id.clone())]);
    assert_eq!(ids(&dirty, "differs"), vec![("acme".to_string(), clock_id.clone())]);
    assert_eq!(ids(&dirty, "not_done"), vec![("zeta".to_string(), link_id.clone())]);
    assert!(ids(&dirty, "missing").is_empty(), "{dirty:#}");
    assert_eq!(dirty["matched"].as_u64(), Some(emitted.len() as u64 - 1), "all but the altered one");
    assert_eq!(dirty["differs"][0]["emitted"].as_array().map(Vec::len), Some(2), "both records shown");
    assert!(dirty["not_done"][0]["reason"].as_str().unwrap().contains("SMTP 554"));

    // Only one tenant: the other's discrepancies are not judged.
    let (code, zeta) = audit_cli(&brokers, &cat.prefix, &v.tenants_file, &["--tenant", "zeta"]);
    assert_eq!(code, 1);
    assert!(ids(&zeta, "extra").is_empty() && ids(&zeta, "differs").is_empty());

    // Usage and connection errors exit 2.
    let (code, _) = audit_code(&["--brokers", &brokers, "--prefix", "no-such-prefix"]);
    assert_eq!(code, 2);
    let _ = std::fs::remove_dir_all(&dir);
}

fn audit_code(args: &[&str]) -> (i32, String) {
    let out = Proc::new(env!("CARGO_BIN_EXE_geoclock"))
        .arg("audit")
        .args(args)
        .args(["--timeout-s", "5"])
        .output()
        .expect("geoclock audit runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn usage_and_connection_errors_exit_2() {
    let (code, err) = audit_code(&["--brokers", "127.0.0.1:1"]);
    assert_eq!(code, 2, "{err}");
    let (code, err) = audit_code(&["--from", "yesterday"]);
    assert_eq!(code, 2, "{err}");
    let (code, _) = audit_code(&["--no-such-flag"]);
    assert_eq!(code, 2);
}

fn ts(s: &str) -> Ts {
    Ts::parse(s).unwrap()
}

fn options(brokers: &str, prefix: &str, scenario: &Scenario, what_if: Option<Overrides>) -> AuditOptions {
    let tenants =
        Tenants { tenants: [(scenario.tenant.clone(), scenario.settings.clone())].into(), ..Tenants::default() };
    AuditOptions { what_if, ..AuditOptions::everything(brokers, prefix, tenants, T) }
}

/// Ann arrives at 13:40; at 15:00 the appointment is moved two days on.
fn rescheduled() -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/arrival_basic.yaml");
    let mut s = Scenario::load(&path).expect("scenario");
    let later = Appointment {
        id: Id::number(7001),
        job: Some(Id::number(900)),
        status: AppointmentStatus::Scheduled,
        window_start: Some(ts("2026-11-30T14:00:00Z")),
        window_end: Some(ts("2026-11-30T16:00:00Z")),
        techs: vec![Id::number(11)],
    };
    s.events.push(Event::Appointment(later));
    s
}

#[test]
fn a_decision_taken_before_a_reschedule_is_re_derived_after_compaction() {
    let broker = Broker::start(Storage::Memory);
    let brokers = broker.brokers().to_string();
    let s = rescheduled();
    let pure = s.run().expect("pure run");
    let arrivals: Vec<&Command> = pure.commands.iter().filter(|c| matches!(c.action, Action::Clock(_))).collect();
    assert_eq!(arrivals.len(), 2, "En Route out and On Site in at 13:40, before the reschedule");
    let opts = ViaKafka { brokers: brokers.clone(), partitions: 1, timeout: Duration::from_secs(120), state_dir: None };
    let cat = Catalogue { prefix: "resched".into(), partitions: 1, replication: 1 };
    let via = s.run_via_kafka_on(&opts, &cat, Arc::new(FileRegistry::in_memory())).expect("run via kafka");
    assert_eq!(via.commands, pure.commands);

    // The topics as the log cleaner leaves them a day after the run, with
    // the retention `topics create` sets, and with plain compaction.
    let now = support::compaction::read_partition(&brokers, &cat.name(Topic::Appointments), 0)
        .iter()
        .map(|r| r.timestamp)
        .max()
        .unwrap()
        + 86_400_000;
    let rt = runtime();
    let check = |prefix: &str, lag_ms: i64| {
        let to = Catalogue { prefix: prefix.into(), partitions: 1, replication: 1 };
        rt.block_on(ensure_topics(&brokers, &to, T)).expect("topics");
        copy_compacted(&brokers, &cat, &to, now, lag_ms);
        let appts = support::compaction::read_partition(&brokers, &to.name(Topic::Appointments), 0);
        // One registry knows both prefixes' subjects, as a deployment's
        // registry would (the copies keep their writers' schema ids).
        let registry = Arc::new(FileRegistry::in_memory());
        Codec::new(registry.clone(), &cat).expect("codec");
        let mut opts = options(&brokers, prefix, &s, None);
        opts.registry = registry;
        let report = audit(&opts).expect("audit");
        assert_eq!(report.input.undecodable, 0);
        (appts.len(), report.findings)
    };
    let (versions, kept) = check("resched-kept", Retention::default().ms());
    assert_eq!(versions, 2, "both versions of 7001 survive the cleaner for audit_days");
    assert!(kept.missing.is_empty() && kept.extra.is_empty() && kept.differs.is_empty(), "{kept:#?}");
    assert_eq!(kept.matched, pure.commands.len() as u64, "{kept:#?}");
    let (versions, lost) = check("resched-plain", 0);
    assert_eq!(versions, 1, "plain compaction leaves the latest version only");
    let lost_ids: BTreeSet<&str> = lost.extra.iter().map(|e| e.id.as_str()).collect();
    for c in &arrivals {
        assert!(lost_ids.contains(c.id.as_str()), "without the old version the arrival is not re-derived: {lost:#?}");
    }
}

#[test]
fn the_cleaner_emulation_keeps_young_records_and_the_latest_of_each_key() {
    let rec = |key: &str, value: Option<&str>, timestamp: i64| Rec {
        key: Some(key.into()),
        value: value.map(|v| v.as_bytes().to_vec()),
        timestamp,
    };
    let log = vec![rec("a", Some("1"), 0), rec("b", Some("1"), 10), rec("a", Some("2"), 50), rec("b", None, 60)];
    assert_eq!(compact(&log, 100, 0, 0), vec![rec("a", Some("2"), 50)], "plain compaction, deletes purged");
    assert_eq!(compact(&log, 100, 100, 100), log, "nothing older than the lag");
    assert_eq!(compact(&log, 100, 60, 60), vec![rec("a", Some("2"), 50), rec("b", None, 60)]);
}

/// Technicians whose vehicles stop 30 to 180 m from their sites' centres.
fn parking_day() -> Scenario {
    let mut s = Scenario::from_yaml("tenant: acme\n", "parking").expect("scenario");
    let start = ts("2026-11-28T14:00:00Z");
    for i in 0..10i64 {
        let (lat, lon) = (35.20 + i as f64 * 0.01, -80.80);
        let email = format!("t{i}@acme.example");
        s.servicetrade.users.push(User {
            id: Id::number(100 + i),
            name: format!("T{i}"),
            email: Some(email.clone()),
            tech: true,
        });
        s.servicetrade.locations.push(Location {
            id: Id::number(200 + i),
            name: format!("Site {i}"),
            lat: Some(lat),
            lon: Some(lon),
            email: Some(format!("site{i}@customer.example")),
            polygon: None,
            timezone: None,
            primary_contact: None,
            offices: Vec::new(),
        });
        s.servicetrade.jobs.push(Job { id: Id::number(300 + i), number: None, location: Some(Id::number(200 + i)) });
        s.servicetrade.appointments.push(Appointment {
            id: Id::number(400 + i),
            job: Some(Id::number(300 + i)),
            status: AppointmentStatus::Scheduled,
            window_start: Some(start),
            window_end: Some(start.plus_millis(7_200_000)),
            techs: vec![Id::number(100 + i)],
        });
        s.azuga.drivers.push(Driver { id: Id::text(format!("d{i}")), name: format!("T{i}"), email: Some(email) });
        s.azuga.pairings.push(Pairing {
            driver: Id::text(format!("d{i}")),
            vehicle: Id::text(format!("v{i}")),
            from: ts("2026-11-28T00:00:00Z"),
            to: None,
        });
        s.events.push(Event::Clock(ClockEvent {
            user: Id::number(100 + i),
            appointment: Id::number(400 + i),
            activity: Activity::Enroute,
            action: ClockAction::In,
            time: start.minus_millis(3_600_000),
        }));
        let metres = 30.0 + 17.0 * i as f64;
        for (k, north) in [(0, 3_000.0), (1, metres), (2, metres - 5.0)] {
            s.events.push(Event::Ping(Ping {
                vehicle: Id::text(format!("v{i}")),
                time: start.minus_millis(1_800_000 - k * 120_000),
                lat: lat + north / 111_195.0,
                lon,
                speed_mph: None,
                accuracy_m: None,
            }));
        }
    }
    s
}

fn arrivals(commands: &[Command]) -> BTreeMap<String, Ts> {
    commands
        .iter()
        .filter_map(|c| match &c.action {
            Action::Clock(k) if k.activity == Activity::Onsite && k.action == ClockAction::In => {
                Some((c.id.clone(), k.time))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn what_if_with_the_radius_halved_loses_the_arrivals_a_pure_run_with_it_loses() {
    let broker = Broker::start(Storage::Memory);
    let brokers = broker.brokers().to_string();
    let s = parking_day();
    let cat = Catalogue { prefix: "whatif".into(), partitions: 3, replication: 1 };
    let opts = ViaKafka { brokers: brokers.clone(), partitions: 3, timeout: Duration::from_secs(120), state_dir: None };
    s.run_via_kafka_on(&opts, &cat, Arc::new(FileRegistry::in_memory())).expect("run via kafka");

    let halved = Settings { fence_radius_m: s.settings.fence_radius_m / 2.0, ..s.settings.clone() };
    let base = arrivals(&s.run().expect("pure run").commands);
    let alt = arrivals(&Scenario { settings: halved, ..s.clone() }.run().expect("pure run, halved").commands);
    let lost: BTreeSet<&String> = base.keys().filter(|id| !alt.contains_key(*id)).collect();
    assert!(
        !lost.is_empty() && lost.len() < base.len(),
        "some arrivals lost, not all: {} of {}",
        lost.len(),
        base.len()
    );

    let overrides = Overrides::parse(&format!("fence_radius_m: {}\n", s.settings.fence_radius_m / 2.0)).unwrap();
    let report = audit(&options(&brokers, &cat.prefix, &s, Some(overrides))).expect("audit");
    let f = &report.findings;
    assert!(f.missing.is_empty() && f.extra.is_empty() && f.differs.is_empty(), "{f:#?}");
    let w = report.what_if.expect("what-if");
    let reported: BTreeSet<&String> = w
        .changes
        .iter()
        .filter(|c| c.change == "lost" && c.clock.as_deref() == Some("onsite in"))
        .map(|c| &c.id)
        .collect();
    assert_eq!(reported, lost);
    assert_eq!(w.arrivals_lost, lost.len() as u64);
    assert_eq!(w.arrivals_gained, 0);
    // What stays arrives at the same time.
    assert!(w.changes.iter().all(|c| c.change != "changed" || c.kind != "clock"), "{:#?}", w.changes);
}
