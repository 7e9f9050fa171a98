//! The sinks against the simulators, a real SMTP receiver and a real broker:
//! each effect exactly once, through duplicates, SIGKILLs, 500s and 429s,
//! and never above Azuga's rate limit.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command as Proc, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use geoclock::engine::command::command_id;
use geoclock::engine::{Action, ClockCause, ClockChange, Command, FenceChange, ServiceLink};
use geoclock::geo::{LatLon, Shape};
use geoclock::kafka::admin::ensure_topics;
use geoclock::kafka::codec::Codec;
use geoclock::kafka::records::{Outcome, SinkResult};
use geoclock::kafka::registry::FileRegistry;
use geoclock::kafka::topics::{self, Catalogue, Topic};
use geoclock::model::{Activity, ClockAction, Id, Ts};
use geoclock::sim::azuga::{self, AzugaSim};
use geoclock::sim::fleet::{generate, FleetConfig};
use geoclock::sim::server::Running;
use geoclock::sim::servicetrade::{self as st, ServiceTradeSim};
use geoclock::sim::smtp::SmtpSim;
use geoclock::sim::world::World;
use geoclock::sink::runner::{Sink, SinkConfig};
use geoclock::sink::SinkKind;
use support::broker::{Broker, Storage};
use support::kafka::{produce, tail, Record};

const PARTITIONS: i32 = 3;
const AZUGA_BUDGET_MS: u64 = 250;

struct Rig {
    _rt: tokio::runtime::Runtime,
    broker: Broker,
    catalogue: Catalogue,
    codec: Arc<Codec>,
    world: World,
    st: Arc<ServiceTradeSim>,
    az: Arc<AzugaSim>,
    smtp: SmtpSim,
    _servers: Vec<Running>,
    dir: PathBuf,
    tenants: PathBuf,
    seen: Arc<Mutex<Vec<Record>>>,
}

impl Rig {
    fn new(name: &str, azuga_budget_ms: u64) -> Rig {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let broker = Broker::start(Storage::Memory);
        let catalogue = Catalogue { prefix: format!("sink-{name}"), partitions: PARTITIONS, replication: 1 };
        rt.block_on(ensure_topics(broker.brokers(), &catalogue, Duration::from_secs(30))).expect("topics");
        let codec = Arc::new(Codec::new(Arc::new(FileRegistry::in_memory()), &catalogue).expect("codec"));
        let world = generate(&FleetConfig { technicians: 30, ..FleetConfig::default() });
        let (st, st_run) = rt
            .block_on(ServiceTradeSim::start(st::Config::default(), &world, "127.0.0.1:0"))
            .expect("servicetrade sim");
        let az_config = azuga::Config { rate_limit_ms: azuga_budget_ms, ..azuga::Config::default() };
        let (az, az_run) = rt.block_on(AzugaSim::start(az_config, &world, "127.0.0.1:0")).expect("azuga sim");
        let smtp = rt.block_on(SmtpSim::start("127.0.0.1:0", "127.0.0.1:0")).expect("smtp receiver");
        let dir = std::env::temp_dir().join(format!("geoclock-sinks-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let tenants = dir.join("tenants.toml");
        std::fs::write(
            &tenants,
            format!(
                r#"
[[tenants]]
name = "acme"
timezone = "America/New_York"
[tenants.servicetrade]
base_url = "{st}"
username = "geoclock-admin"
password = {{ value = "secret" }}
webhook_secret = {{ value = "unused" }}
api_interval_ms = 0
[tenants.azuga]
base_url = "{az}"
api_key = {{ value = "azuga-key" }}
webhook_secret = {{ value = "unused" }}
rate_limit_ms = {azuga_budget_ms}
[tenants.email]
from = "Acme Field Service <service@acme.example>"
smtp_url = {{ value = "smtp://{smtp}" }}
report_recipients = ["ops@acme.example", "owner@acme.example"]
report_token = {{ value = "report-token-1" }}
"#,
                st = st_run.url(),
                az = az_run.url(),
                smtp = smtp.smtp_addr,
            ),
        )
        .expect("tenants file");
        let seen =
            tail(broker.brokers(), &[catalogue.name(Topic::Results), catalogue.name(Topic::DeadLetters)], PARTITIONS);
        Rig {
            _rt: rt,
            broker,
            catalogue,
            codec,
            world,
            st,
            az,
            smtp,
            _servers: vec![st_run, az_run],
            dir,
            tenants,
            seen,
        }
    }

    fn send(&self, commands: &[Command]) {
        let records: Vec<(Vec<u8>, Vec<u8>)> = commands
            .iter()
            .map(|c| {
                (
                    topics::key("acme", c.appointment.as_str()).expect("key"),
                    self.codec.encode_command("acme", c).expect("encode"),
                )
            })
            .collect();
        produce(self.broker.brokers(), &self.catalogue.name(Topic::Commands), &records);
    }

    fn config(&self, kind: SinkKind) -> SinkConfig {
        let tenants = geoclock::config::tenants::load(&self.tenants).expect("tenants");
        let mut c = SinkConfig::new(
            kind,
            self.broker.brokers(),
            self.catalogue.clone(),
            self.dir.join("state"),
            tenants,
            Arc::new(FileRegistry::in_memory()),
        );
        c.backoff.base = Duration::from_millis(50);
        c.backoff.cap = Duration::from_millis(800);
        c
    }

    fn start(&self, kind: SinkKind) -> Sink {
        Sink::start(self.config(kind)).expect("sink starts")
    }

    /// A `geoclock sink KIND` process.
    fn spawn(&self, kind: SinkKind) -> Child {
        let log = std::fs::File::create(self.dir.join(format!("sink-{}.log", kind.name()))).expect("log");
        Proc::new(env!("CARGO_BIN_EXE_geoclock"))
            .args(["sink", kind.name(), "--brokers", self.broker.brokers(), "--prefix", &self.catalogue.prefix])
            .arg("--tenants")
            .arg(&self.tenants)
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .args(["--batch", "200"])
            .env("GEOCLOCK_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("geoclock sink starts")
    }

    /// Distinct results by command id (later records replace earlier ones;
    /// every record of an id must carry the same outcome).
    fn results(&self) -> BTreeMap<String, SinkResult> {
        let results_topic = self.catalogue.name(Topic::Results);
        let mut out: BTreeMap<String, SinkResult> = BTreeMap::new();
        for (topic, _, value) in self.seen.lock().unwrap().iter() {
            if *topic != results_topic {
                continue;
            }
            let (_, r) = self.codec.decode_result(value.as_deref().expect("a value")).expect("result decodes");
            if let Some(prev) = out.get(&r.command_id) {
                assert_eq!(prev.outcome, r.outcome, "a result re-published with another outcome: {r:?}");
            }
            out.insert(r.command_id.clone(), r);
        }
        out
    }

    fn dead_letters(&self) -> Vec<String> {
        let dead_topic = self.catalogue.name(Topic::DeadLetters);
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|(t, _, _)| *t == dead_topic)
            .map(|(_, _, v)| self.codec.decode_dead_letter(v.as_deref().expect("value")).expect("decodes").reason)
            .collect()
    }

    fn wait_results(&self, ids: &HashSet<String>, timeout: Duration) -> BTreeMap<String, SinkResult> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.results();
            let missing = ids.iter().filter(|id| !r.contains_key(*id)).count();
            if missing == 0 {
                return r;
            }
            assert!(Instant::now() < deadline, "{missing} of {} commands have no result after {timeout:?}", ids.len());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn clock_commands(w: &World, n: usize) -> Vec<Command> {
    let users: Vec<&Id> = w.users.iter().map(|u| &u.id).collect();
    let appts: Vec<&Id> = w.appointments.iter().map(|a| &a.id).collect();
    let combos = [
        (Activity::Enroute, ClockAction::Out),
        (Activity::Onsite, ClockAction::In),
        (Activity::Onsite, ClockAction::Out),
        (Activity::Enroute, ClockAction::In),
    ];
    (0..n)
        .map(|i| {
            let user = users[i % users.len()];
            let appt = appts[(i / users.len()) % appts.len()];
            let (activity, action) = combos[(i / (users.len() * appts.len())) % combos.len()];
            let k = ClockChange {
                user: user.clone(),
                activity,
                action,
                time: Ts::from_secs(1_795_860_000 + i as i64),
                lat: 35.2271,
                lon: -80.8431,
                vehicle: "v1".into(),
                cause: ClockCause::Arrival,
            };
            let id = command_id(&[
                "acme",
                "clock",
                appt.as_str(),
                user.as_str(),
                &format!("{activity:?}"),
                &format!("{action:?}"),
            ]);
            Command { id, appointment: appt.clone(), action: Action::Clock(k) }
        })
        .collect()
}

fn ids(commands: &[Command]) -> HashSet<String> {
    commands.iter().map(|c| c.id.clone()).collect()
}

/// A JSON id or symbol as text (`70001` and `"70001"` are the same id).
fn text(v: &serde_json::Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

/// ServiceTrade's clock events, counted by what they are.
fn clock_effects(sim: &ServiceTradeSim) -> HashMap<(String, String, String, String, i64), usize> {
    let mut out = HashMap::new();
    for c in sim.snapshot().clocks.into_iter().filter(|c| c.lat.is_some()) {
        let v = serde_json::to_value(&c).expect("clock json");
        let e = &v["event"];
        let key = (
            text(&e["user"]),
            text(&e["appointment"]),
            text(&e["activity"]),
            text(&e["action"]),
            e["time"].as_str().and_then(|t| Ts::parse(t).ok()).map_or(0, |t| t.millis() / 1000),
        );
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

fn expected_clock_effects(commands: &[Command]) -> HashMap<(String, String, String, String, i64), usize> {
    commands
        .iter()
        .filter_map(|c| match &c.action {
            Action::Clock(k) => Some((
                text(&serde_json::to_value(&k.user).unwrap()),
                text(&serde_json::to_value(&c.appointment).unwrap()),
                text(&serde_json::to_value(k.activity).unwrap()),
                text(&serde_json::to_value(k.action).unwrap()),
                k.time.millis() / 1000,
            )),
            _ => None,
        })
        .map(|k| (k, 1))
        .collect()
}

type Effects = HashMap<(String, String, String, String, i64), usize>;

/// One ServiceTrade clock event per command: names what is missing or extra.
fn assert_same_effects(got: Effects, want: Effects) {
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.iter().filter(|(k, n)| **n != 1 || !want.contains_key(*k)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}; extra or repeated {extra:?}");
}

#[test]
fn clock_sink_posts_each_change_once_and_dead_letters_refusals() {
    let rig = Rig::new("clock", AZUGA_BUDGET_MS);
    let mut commands = clock_commands(&rig.world, 120);
    // A technician ServiceTrade does not know: refused (404), dead-lettered.
    let mut bad = commands[0].clone();
    if let Action::Clock(k) = &mut bad.action {
        k.user = "999999".into();
    }
    bad.id = command_id(&["acme", "clock", "bad"]);
    commands.push(bad.clone());
    // Every command twice: the second is a duplicate.
    rig.send(&commands);
    rig.send(&commands[..60]);
    // A command for a tenant the tenants file does not list (a producer with
    // topic access making one up): failed and dead-lettered, no effect.
    let mut stranger = commands[1].clone();
    stranger.id = command_id(&["intruder", "clock", "made-up"]);
    let record = (
        topics::key("intruder", stranger.appointment.as_str()).expect("key"),
        rig.codec.encode_command("intruder", &stranger).expect("encode"),
    );
    produce(rig.broker.brokers(), &rig.catalogue.name(Topic::Commands), &[record]);
    // ServiceTrade fails for a while: eight 500s, then three 429s.
    let st_url = format!("http://{}", rig._servers[0].addr);
    chaos(&st_url, 500, 8);
    let sink = rig.start(SinkKind::Clock);
    let deadline = Instant::now() + Duration::from_secs(60);
    while rig.st.calls().injected_left() > 0 {
        assert!(Instant::now() < deadline, "the injected 500s were never met");
        std::thread::sleep(Duration::from_millis(20));
    }
    chaos(&st_url, 429, 3);
    let mut all = ids(&commands);
    all.insert(stranger.id.clone());
    let results = rig.wait_results(&all, Duration::from_secs(120));
    sink.stop().expect("clean stop");
    let r = &results[&stranger.id];
    assert_eq!(r.outcome, Outcome::Failed, "{r:?}");
    assert!(r.reason.contains("intruder") && r.reason.contains("not in the tenants file"), "{}", r.reason);
    assert!(rig.dead_letters().iter().any(|d| d.contains("not in the tenants file")), "dead-lettered");
    let good = &commands[..120];
    for c in good {
        assert_eq!(results[&c.id].outcome, Outcome::Done, "{:?}", results[&c.id]);
    }
    assert_same_effects(clock_effects(&rig.st), expected_clock_effects(good));
    assert!(good.iter().all(|c| results[&c.id].outcome == Outcome::Done && results[&c.id].remote_ref.is_some()));
    let r = &results[&bad.id];
    assert_eq!(r.outcome, Outcome::Failed);
    assert!(r.reason.contains("999999") && r.reason.contains("404"), "{}", r.reason);
    assert!(rig.dead_letters().iter().any(|d| d.contains("999999")), "the refusal is dead-lettered");
    assert!(!r.reason.contains("secret"), "no secret in a result");
    let calls = rig.st.calls().snapshot("/api/");
    assert_eq!(calls.iter().filter(|c| c.status == 500).count(), 8);
    assert_eq!(calls.iter().filter(|c| c.status == 429).count(), 3);
}

fn fence(appt: &Id, revision: u32, radius_m: f64) -> FenceChange {
    FenceChange {
        revision,
        name: format!("Site | J-{appt} | {appt}"),
        shape: Shape::Circle { center: LatLon::new(35.2271, -80.8431), radius_m },
        window_start: Ts::from_secs(1_795_860_000),
        window_end: Ts::from_secs(1_795_867_200),
        active_from: Ts::from_secs(1_795_831_200),
        active_to: Ts::from_secs(1_795_896_000),
        job: "900".into(),
        location: "5".into(),
    }
}

fn fence_commands(w: &World) -> (Vec<Command>, Vec<Command>) {
    let appts: Vec<&Id> = w.appointments.iter().take(40).map(|a| &a.id).collect();
    let id = |a: &Id, what: &str| command_id(&["acme", "fence", a.as_str(), what]);
    let creates: Vec<Command> = appts
        .iter()
        .map(|a| Command {
            id: id(a, "1"),
            appointment: (*a).clone(),
            action: Action::CreateGeofence(fence(a, 1, 200.0)),
        })
        .collect();
    let mut later = Vec::new();
    for (i, a) in appts.iter().enumerate() {
        match i % 4 {
            0 => later.push(Command {
                id: id(a, "2"),
                appointment: (*a).clone(),
                action: Action::UpdateGeofence(fence(a, 2, 300.0)),
            }),
            1 => later.push(Command {
                id: id(a, "2"),
                appointment: (*a).clone(),
                action: Action::DeleteGeofence { revision: 2, name: fence(a, 1, 0.0).name },
            }),
            _ => {}
        }
    }
    (creates, later)
}

/// Calls of one API closer together than the budget (server-side times).
fn budget_violations(calls: &[geoclock::sim::calls::Call], budget_ms: u64) -> Vec<String> {
    let mut last: HashMap<(String, String), i64> = HashMap::new();
    let mut bad = Vec::new();
    for c in calls {
        let key = (c.method.clone(), c.path.clone());
        if let Some(prev) = last.get(&key) {
            if c.at_ms - prev < budget_ms as i64 {
                bad.push(format!("{} {} {} ms after the previous one", c.method, c.path, c.at_ms - prev));
            }
        }
        last.insert(key, c.at_ms);
    }
    bad
}

#[test]
fn geofence_sink_batches_within_azugas_limit_through_500s_and_429s() {
    let rig = Rig::new("geofence", AZUGA_BUDGET_MS);
    let (creates, later) = fence_commands(&rig.world);
    // A fence Azuga cannot hold: failed without a call, dead-lettered.
    let huge_appt = rig.world.appointments[45].id.clone();
    let huge = Command {
        id: command_id(&["acme", "fence", "huge"]),
        appointment: huge_appt.clone(),
        action: Action::CreateGeofence(FenceChange {
            // A polygon 30 km across: Azuga's circle around it would exceed ten miles.
            shape: Shape::Polygon {
                ring: vec![
                    LatLon::new(35.0, -81.0),
                    LatLon::new(35.0, -80.7),
                    LatLon::new(35.27, -80.7),
                    LatLon::new(35.27, -81.0),
                ],
            },
            ..fence(&huge_appt, 1, 200.0)
        }),
    };
    // Azuga fails for a while: three 500s, then two 429s.
    let az_url = format!("http://{}", rig._servers[1].addr);
    chaos(&az_url, 500, 3);
    rig.send(&creates);
    rig.send(std::slice::from_ref(&huge));
    let sink = rig.start(SinkKind::Geofence);
    let mut all: Vec<Command> = creates.clone();
    all.push(huge.clone());
    rig.wait_results(&ids(&all), Duration::from_secs(120));
    chaos(&az_url, 429, 2);
    rig.send(&later);
    rig.send(&creates[..10]); // re-delivered: duplicates or superseded, never a second geomark
    all.extend(later.iter().cloned());
    let results = rig.wait_results(&ids(&all), Duration::from_secs(120));
    sink.stop().expect("clean stop");

    let geomarks = rig.az.snapshot().geomarks;
    let mut by_name: HashMap<String, Vec<&serde_json::Value>> = HashMap::new();
    for g in &geomarks {
        by_name.entry(g["name"].as_str().unwrap_or("").to_string()).or_default().push(g);
    }
    for (i, c) in creates.iter().enumerate() {
        let name = fence(&c.appointment, 1, 0.0).name;
        let held = by_name.get(&name).map_or(0, Vec::len);
        match i % 4 {
            1 => assert_eq!(held, 0, "{name} was deleted"),
            0 => {
                assert_eq!(held, 1, "{name} exists once");
                assert_eq!(by_name[&name][0]["geofenceRadius"], serde_json::json!(300.0), "{name} was updated");
            }
            _ => {
                assert_eq!(held, 1, "{name} exists once");
                assert_eq!(by_name[&name][0]["activationDate"], serde_json::json!(1_795_831_200_000i64));
            }
        }
    }
    assert_eq!(geomarks.len(), creates.len() - creates.len().div_ceil(4), "no geomark beyond the commanded ones");
    assert!(all.iter().filter(|c| c.id != huge.id).all(|c| results[&c.id].outcome == Outcome::Done), "{results:#?}");
    assert_eq!(results[&huge.id].outcome, Outcome::Failed);
    assert!(results[&huge.id].reason.contains("10 miles"), "{}", results[&huge.id].reason);

    let calls = rig.az.calls().snapshot("/v1/geomarks");
    assert!(
        calls.iter().filter(|c| c.method == "POST" && c.status == 200).count() <= 2,
        "creates are bulk: {calls:#?}"
    );
    let violations = budget_violations(&calls, AZUGA_BUDGET_MS);
    assert!(violations.is_empty(), "Azuga's budget was exceeded: {violations:?}");
    let text = ureq::get(&format!("{az_url}/admin/chaos"))
        .call()
        .expect("chaos state")
        .body_mut()
        .read_to_string()
        .expect("body");
    let chaos: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(chaos["rate_limited"], 0, "Azuga's own limiter never refused a call");
    assert_eq!(chaos["pending"], 0, "every injected failure was met");
    assert!(
        calls.iter().filter(|c| c.status >= 500).count() == 3 && calls.iter().filter(|c| c.status == 429).count() == 2
    );
}

/// Makes the simulator at `url` answer the next `count` API calls with `status`.
fn chaos(url: &str, status: u16, count: u64) {
    ureq::post(&format!("{url}/admin/chaos"))
        .header("Content-Type", "application/json")
        .send(serde_json::json!({"status": status, "count": count}).to_string())
        .expect("chaos");
}

fn link_commands(w: &World, n: usize) -> Vec<Command> {
    (0..n)
        .map(|i| {
            let appt = &w.appointments[i % w.appointments.len()].id;
            let vehicle = &w.vehicles[i % w.vehicles.len()].id;
            let user = &w.users[i % w.users.len()];
            Command {
                id: command_id(&["acme", "service_link", appt.as_str(), &i.to_string()]),
                appointment: appt.clone(),
                action: Action::SendServiceLink(ServiceLink {
                    user: user.id.clone(),
                    tech_name: user.name.clone(),
                    vehicle: vehicle.clone(),
                    vehicle_name: String::new(),
                    to: format!("contact{i}@site.example"),
                    location_name: format!("Site {i}"),
                    job_number: Some(format!("J-{i}").as_str().into()),
                    window_start: Some(Ts::parse("2026-11-28T14:00:00Z").unwrap()),
                    window_end: Some(Ts::parse("2026-11-28T16:00:00Z").unwrap()),
                    destination: LatLon::new(35.2271, -80.8431),
                    timezone: Some("America/New_York".into()),
                    enroute_at: Ts::parse("2026-11-28T13:10:00Z").unwrap(),
                }),
            }
        })
        .collect()
}

#[test]
fn email_sink_mails_service_links_with_trackme_and_the_local_window() {
    let rig = Rig::new("email", 0);
    let mut commands = link_commands(&rig.world, 8);
    let mut bad = commands[0].clone();
    bad.id = command_id(&["acme", "service_link", "bad-address"]);
    if let Action::SendServiceLink(l) = &mut bad.action {
        l.to = "not an address".into();
    }
    commands.push(bad.clone());
    rig.send(&commands);
    rig.send(&commands[..3]);
    let sink = rig.start(SinkKind::Email);
    let results = rig.wait_results(&ids(&commands), Duration::from_secs(60));
    sink.stop().expect("clean stop");
    let mails = rig.smtp.mailbox.mails();
    let trackme = rig.az.snapshot().trackme;
    assert_eq!(mails.len(), 8, "one email per Service Link");
    for c in &commands[..8] {
        let Action::SendServiceLink(l) = &c.action else { unreachable!() };
        let r = &results[&c.id];
        assert_eq!(r.outcome, Outcome::Done, "{r:?}");
        let url = r.remote_ref.clone().expect("the TrackMe url");
        let m = mails.iter().find(|m| m.to == vec![l.to.clone()]).expect("mail to the contact");
        assert_eq!(m.deliveries, 1);
        assert_eq!(m.subject, format!("{} is on the way to {}", l.tech_name, l.location_name));
        assert!(m.text.contains(&url) && m.html.contains(&url), "the TrackMe link is in both parts");
        assert!(
            m.text.contains("Sat 28 Nov 2026, 9:00 AM – 11:00 AM EST"),
            "window in the location's zone: {}",
            m.text
        );
        assert!(m.from.contains("service@acme.example"));
        assert_eq!(m.message_id, format!("<{}.acme@geoclock>", c.id));
        assert!(trackme
            .iter()
            .any(|t| t["url"] == serde_json::json!(url) && t["vehicleId"] == serde_json::json!(l.vehicle)));
    }
    assert_eq!(trackme.len(), 8, "one TrackMe link per Service Link; none for the bad address");
    assert_eq!(results[&bad.id].outcome, Outcome::Failed);
    assert!(results[&bad.id].reason.contains("invalid recipient"), "{}", results[&bad.id].reason);
    assert!(rig.dead_letters().iter().any(|d| d.contains("invalid recipient")));
}

fn kill(child: &mut Child) {
    let _ = Proc::new("kill").args(["-9", &child.id().to_string()]).status();
    let _ = child.wait();
}

#[test]
fn sigkilled_sinks_restart_and_every_effect_happens_exactly_once() {
    let rig = Rig::new("kill", 0);
    let clocks = clock_commands(&rig.world, 2400);
    let links = link_commands(&rig.world, 600);
    rig.send(&clocks);
    rig.send(&links);

    // Clock sink: killed twice mid-batch.
    let began = Instant::now();
    let mut all_ids = ids(&clocks);
    for fraction in [4, 2] {
        let mut child = rig.spawn(SinkKind::Clock);
        let target = clocks.len() / fraction;
        let deadline = Instant::now() + Duration::from_secs(120);
        while rig.st.calls().count("POST", "/api/clock") < target {
            assert!(Instant::now() < deadline, "the clock sink made no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        kill(&mut child);
    }
    let mut child = rig.spawn(SinkKind::Clock);
    let results = rig.wait_results(&all_ids, Duration::from_secs(300));
    eprintln!(
        "clock: {} commands through 3 sink processes (2 SIGKILLed) in {:.1} s",
        clocks.len(),
        began.elapsed().as_secs_f64()
    );
    kill(&mut child);
    assert_same_effects(clock_effects(&rig.st), expected_clock_effects(&clocks));
    assert!(clocks.iter().all(|c| results[&c.id].outcome == Outcome::Done));

    // Email sink: killed mid-batch.
    let began = Instant::now();
    let mut child = rig.spawn(SinkKind::Email);
    let deadline = Instant::now() + Duration::from_secs(120);
    while rig.smtp.mailbox.stats().0 < links.len() as u64 / 3 {
        assert!(Instant::now() < deadline, "the email sink made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    kill(&mut child);
    let mut child = rig.spawn(SinkKind::Email);
    all_ids = ids(&links);
    let results = rig.wait_results(&all_ids, Duration::from_secs(300));
    eprintln!(
        "email: {} Service Links through 2 sink processes (1 SIGKILLed) in {:.1} s",
        links.len(),
        began.elapsed().as_secs_f64()
    );
    kill(&mut child);
    let mails = rig.smtp.mailbox.mails();
    let (accepted, repeats) = rig.smtp.mailbox.stats();
    eprintln!(
        "email: {accepted} SMTP deliveries, {repeats} repeated Message-IDs, {} TrackMe links",
        rig.az.snapshot().trackme.len()
    );
    assert_eq!(mails.len(), links.len(), "every Service Link mailed");
    let expected: HashSet<String> = links.iter().map(|c| format!("<{}.acme@geoclock>", c.id)).collect();
    let got: HashSet<String> = mails.iter().map(|m| m.message_id.clone()).collect();
    assert_eq!(got, expected, "exactly the commanded emails");
    assert!(repeats <= 1, "at most the one message in flight at the kill is re-sent (same Message-ID): {repeats}");
    assert!(rig.az.snapshot().trackme.len() <= links.len() + 1, "TrackMe links are reused across the restart");
    assert!(links.iter().all(|c| results[&c.id].outcome == Outcome::Done));
}

/// A report server answering for one day: CSV and JSON, token required.
fn report_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let server = tiny_http::Server::http("127.0.0.1:0").expect("report server");
    let url = format!("http://{}", server.server_addr().to_ip().expect("ip"));
    let asked: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = asked.clone();
    std::thread::spawn(move || {
        for req in server.incoming_requests() {
            log.lock().unwrap().push(req.url().to_string());
            let authorized = req
                .headers()
                .iter()
                .any(|h| h.field.equiv("Authorization") && h.value.as_str() == "Bearer report-token-1");
            let body = if !authorized {
                let _ = req.respond(tiny_http::Response::from_string("no").with_status_code(401));
                continue;
            } else if req.url().contains("format=csv") {
                "appointment,tech,fence_result\n70001,1000,arrived\n70002,1001,not_arrived\n".to_string()
            } else {
                r#"[{"fence_result":"arrived","failures":[]},{"fence_result":"not_arrived","failures":["no_tech_assigned"]}]"#.to_string()
            };
            let _ = req.respond(tiny_http::Response::from_string(body));
        }
    });
    (url, asked)
}

#[test]
fn the_daily_report_is_mailed_once_per_tenant_and_day() {
    let rig = Rig::new("daily", 0);
    let (url, asked) = report_server();
    let day = geoclock::sink::daily::due_day(geoclock::sink::now(), Some("America/New_York"));
    let id = geoclock::sink::daily::report_id("acme", day);
    for _ in 0..2 {
        // Two sink runs (a restart): the report goes out once.
        let mut c = rig.config(SinkKind::Email);
        c.report_url = Some(url.clone());
        let sink = Sink::start(c).expect("sink");
        rig.wait_results(&HashSet::from([id.clone()]), Duration::from_secs(60));
        sink.stop().expect("clean stop");
    }
    let mails = rig.smtp.mailbox.mails();
    assert_eq!(mails.len(), 1, "one report email: {mails:#?}");
    let m = &mails[0];
    assert_eq!(m.to, vec!["ops@acme.example".to_string(), "owner@acme.example".to_string()]);
    assert_eq!(m.subject, format!("Activity Report acme {day}: 2 appointments, 1 arrived, 1 with failures"));
    assert!(m.raw.contains(&format!("activity-report-acme-{day}.csv")), "the CSV is attached");
    assert_eq!(rig.smtp.mailbox.stats(), (1, 0));
    assert_eq!(rig.results()[&id].kind, "daily_report");
    assert_eq!(asked.lock().unwrap().len(), 2, "fetched once (CSV and JSON), not again after the restart");
}
