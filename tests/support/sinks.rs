//! The sinks' test rig: a real broker, vendor simulators per tenant, a
//! mail receiver, a tenants file; commands produced, results tailed.

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
use geoclock::kafka::records::SinkResult;
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

use super::broker::{Broker, Storage};
use super::kafka::{produce, tail, Record};

pub const PARTITIONS: i32 = 3;
pub const AZUGA_BUDGET_MS: u64 = 250;

/// One tenant's vendors.
pub struct Vendors {
    pub name: String,
    pub st: Arc<ServiceTradeSim>,
    pub az: Arc<AzugaSim>,
    pub st_url: String,
    pub az_url: String,
}

/// A broker with the catalogue's topics, vendor simulators per tenant, a
/// mail receiver and a tenants file; results and dead letters tailed.
pub struct Rig {
    pub rt: tokio::runtime::Runtime,
    pub broker: Broker,
    pub catalogue: Catalogue,
    pub codec: Arc<Codec>,
    pub world: World,
    /// The first tenant's (`acme`) simulators.
    pub st: Arc<ServiceTradeSim>,
    pub az: Arc<AzugaSim>,
    pub vendors: Vec<Vendors>,
    pub smtp: SmtpSim,
    _servers: Vec<Running>,
    pub dir: PathBuf,
    pub tenants: PathBuf,
    pub seen: Arc<Mutex<Vec<Record>>>,
}

impl Rig {
    pub fn new(name: &str, azuga_budget_ms: u64) -> Rig {
        Rig::with_tenants(name, azuga_budget_ms, &["acme"])
    }

    /// A rig for `tenants`, each with its own ServiceTrade and Azuga.
    pub fn with_tenants(name: &str, azuga_budget_ms: u64, tenants: &[&str]) -> Rig {
        Rig::with_world(
            name,
            azuga_budget_ms,
            tenants,
            generate(&FleetConfig { technicians: 30, ..FleetConfig::default() }),
        )
    }

    /// A rig for `tenants` whose simulators all hold `world`.
    pub fn with_world(name: &str, azuga_budget_ms: u64, tenants: &[&str], world: World) -> Rig {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let broker = Broker::start(Storage::Memory);
        let catalogue = Catalogue { prefix: format!("sink-{name}"), partitions: PARTITIONS, replication: 1 };
        rt.block_on(ensure_topics(broker.brokers(), &catalogue, Duration::from_secs(30))).expect("topics");
        let codec = Arc::new(Codec::new(Arc::new(FileRegistry::in_memory()), &catalogue).expect("codec"));
        let smtp = rt.block_on(SmtpSim::start("127.0.0.1:0", "127.0.0.1:0")).expect("smtp receiver");
        let dir = std::env::temp_dir().join(format!("geoclock-sinks-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let mut servers = Vec::new();
        let mut vendors = Vec::new();
        let mut text = String::new();
        for t in tenants {
            let (st, st_run) = rt
                .block_on(ServiceTradeSim::start(st::Config::default(), &world, "127.0.0.1:0"))
                .expect("servicetrade sim");
            let az_config = azuga::Config { rate_limit_ms: azuga_budget_ms, ..azuga::Config::default() };
            let (az, az_run) = rt.block_on(AzugaSim::start(az_config, &world, "127.0.0.1:0")).expect("azuga sim");
            text.push_str(&tenant_toml(
                t,
                &st_run.url(),
                &az_run.url(),
                &smtp.smtp_addr.to_string(),
                azuga_budget_ms,
                &format!(
                    "from = \"Acme Field Service <service@{t}.example>\"\nadmin_name = \"Dana Whitfield\"\nservice_link_url = \"https://app.servicetrade.com/servicelink/{{appointment}}\"\nreport_recipients = [\"ops@{t}.example\", \"owner@{t}.example\"]\nreport_token = {{ value = \"report-token-1\" }}"
                ),
            ));
            vendors.push(Vendors { name: t.to_string(), st, az, st_url: st_run.url(), az_url: az_run.url() });
            servers.push(st_run);
            servers.push(az_run);
        }
        let tenants = dir.join("tenants.toml");
        std::fs::write(&tenants, text).expect("tenants file");
        let seen =
            tail(broker.brokers(), &[catalogue.name(Topic::Results), catalogue.name(Topic::DeadLetters)], PARTITIONS);
        Rig {
            rt,
            broker,
            catalogue,
            codec,
            world,
            st: vendors[0].st.clone(),
            az: vendors[0].az.clone(),
            vendors,
            smtp,
            _servers: servers,
            dir,
            tenants,
            seen,
        }
    }

    pub fn st_url(&self) -> &str {
        &self.vendors[0].st_url
    }

    pub fn az_url(&self) -> &str {
        &self.vendors[0].az_url
    }

    /// Produces `commands` for `acme`.
    pub fn send(&self, commands: &[Command]) {
        self.send_as("acme", commands)
    }

    pub fn send_as(&self, tenant: &str, commands: &[Command]) {
        let records: Vec<(Vec<u8>, Vec<u8>)> = commands
            .iter()
            .map(|c| {
                (
                    topics::key(tenant, c.appointment.as_str()).expect("key"),
                    self.codec.encode_command(tenant, c).expect("encode"),
                )
            })
            .collect();
        produce(self.broker.brokers(), &self.catalogue.name(Topic::Commands), &records);
    }

    pub fn config(&self, kind: SinkKind) -> SinkConfig {
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

    pub fn start(&self, kind: SinkKind) -> Sink {
        Sink::start(self.config(kind)).expect("sink starts")
    }

    /// A `geoclock sink KIND` process.
    pub fn spawn(&self, kind: SinkKind) -> Child {
        self.spawn_with(kind, kind.name(), &[], &[])
    }

    /// A `geoclock sink KIND` process with its own state directory and log
    /// (`name`), extra arguments and environment.
    pub fn spawn_with(&self, kind: SinkKind, name: &str, args: &[&str], env: &[(&str, &str)]) -> Child {
        let log = std::fs::File::create(self.dir.join(format!("sink-{name}.log"))).expect("log");
        let state = if name == kind.name() { self.dir.join("state") } else { self.dir.join(format!("state-{name}")) };
        let mut cmd = Proc::new(env!("CARGO_BIN_EXE_geoclock"));
        cmd.args(["sink", kind.name(), "--brokers", self.broker.brokers(), "--prefix", &self.catalogue.prefix])
            .arg("--tenants")
            .arg(&self.tenants)
            .arg("--state-dir")
            .arg(state)
            .args(["--batch", "200"])
            .args(args)
            .env("GEOCLOCK_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.spawn().expect("geoclock sink starts")
    }

    /// The log of the process spawned as `name`.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("sink-{name}.log"))).unwrap_or_default()
    }

    /// Distinct results by command id (later records replace earlier ones;
    /// every record of an id must carry the same outcome).
    pub fn results(&self) -> BTreeMap<String, SinkResult> {
        self.results_by(&self.codec, true)
    }

    /// Distinct results by command id, decoded with `codec`; `same`: every
    /// record of an id must carry the same outcome (false where a command
    /// is re-driven after a failure).
    pub fn results_by(&self, codec: &Codec, same: bool) -> BTreeMap<String, SinkResult> {
        let results_topic = self.catalogue.name(Topic::Results);
        let mut out: BTreeMap<String, SinkResult> = BTreeMap::new();
        for (topic, _, value) in self.seen.lock().unwrap().iter() {
            if *topic != results_topic {
                continue;
            }
            let (_, r) = codec.decode_result(value.as_deref().expect("a value")).expect("result decodes");
            if let (Some(prev), true) = (out.get(&r.command_id), same) {
                assert_eq!(prev.outcome, r.outcome, "a result re-published with another outcome: {r:?}");
            }
            out.insert(r.command_id.clone(), r);
        }
        out
    }

    pub fn dead_letters(&self) -> Vec<String> {
        let dead_topic = self.catalogue.name(Topic::DeadLetters);
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|(t, _, _)| *t == dead_topic)
            .map(|(_, _, v)| self.codec.decode_dead_letter(v.as_deref().expect("value")).expect("decodes").reason)
            .collect()
    }

    pub fn wait_results(&self, ids: &HashSet<String>, timeout: Duration) -> BTreeMap<String, SinkResult> {
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

pub fn clock_commands(w: &World, n: usize) -> Vec<Command> {
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

pub fn ids(commands: &[Command]) -> HashSet<String> {
    commands.iter().map(|c| c.id.clone()).collect()
}

/// A JSON id or symbol as text (`70001` and `"70001"` are the same id).
pub fn text(v: &serde_json::Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

/// ServiceTrade's clock events, counted by what they are.
pub fn clock_effects(sim: &ServiceTradeSim) -> HashMap<(String, String, String, String, i64), usize> {
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

pub fn expected_clock_effects(commands: &[Command]) -> HashMap<(String, String, String, String, i64), usize> {
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

pub type Effects = HashMap<(String, String, String, String, i64), usize>;

/// One ServiceTrade clock event per command: names what is missing or extra.
pub fn assert_same_effects(got: Effects, want: Effects) {
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.iter().filter(|(k, n)| **n != 1 || !want.contains_key(*k)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}; extra or repeated {extra:?}");
}

pub fn fence(appt: &Id, revision: u32, radius_m: f64) -> FenceChange {
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

pub fn fence_commands(w: &World) -> (Vec<Command>, Vec<Command>) {
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
pub fn budget_violations(calls: &[geoclock::sim::calls::Call], budget_ms: u64) -> Vec<String> {
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

/// Makes the simulator at `url` answer the next `count` API calls with `status`.
pub fn chaos(url: &str, status: u16, count: u64) {
    chaos_rule(url, serde_json::json!({"status": status, "count": count}));
}

/// Sets a chaos rule (`POST /admin/chaos`) on the simulator at `url`.
pub fn chaos_rule(url: &str, rule: serde_json::Value) {
    ureq::post(&format!("{url}/admin/chaos"))
        .header("Content-Type", "application/json")
        .send(rule.to_string())
        .expect("chaos");
}

/// One tenant of a tenants file against the simulators at `st` and `az`
/// and the mail receiver at `smtp`; `email` holds the `[tenants.email]`
/// lines beside its relay (`from = …` at least).
pub fn tenant_toml(name: &str, st: &str, az: &str, smtp: &str, rate_limit_ms: u64, email: &str) -> String {
    format!(
        r#"
[[tenants]]
name = "{name}"
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
rate_limit_ms = {rate_limit_ms}
[tenants.email]
smtp_url = {{ value = "smtp://{smtp}" }}
{email}
"#
    )
}

pub fn link_commands(w: &World, n: usize) -> Vec<Command> {
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
                    // Every third location has no coordinates: TrackMe
                    // without a destination.
                    destination: (i % 3 != 2).then(|| LatLon::new(35.2271, -80.8431)),
                    // Odd links' locations have no zone: the tenant's (also
                    // America/New_York in the rig's tenants file) applies.
                    timezone: (i % 2 == 0).then(|| "America/New_York".into()),
                    enroute_at: Ts::parse("2026-11-28T13:10:00Z").unwrap(),
                }),
            }
        })
        .collect()
}

pub fn kill(child: &mut Child) {
    let _ = Proc::new("kill").args(["-9", &child.id().to_string()]).status();
    let _ = child.wait();
}
