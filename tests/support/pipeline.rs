//! The whole pipeline as `geoclock` processes over a real broker, against
//! per-tenant vendor simulators, for end-to-end tests: the processes
//! (restartable by name), the tenants file, the driver that releases a
//! day's En Route presses and fixes as simulated time passes, and the check
//! that the simulators hold exactly what was decided.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Proc, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use geoclock::engine::{Action, Command, Event};
use geoclock::kafka::codec::Codec;
use geoclock::model::{ClockEvent, Ts};
use geoclock::sim::azuga::AzugaSim;
use geoclock::sim::servicetrade::ServiceTradeSim;
use geoclock::vendor::azuga::rules::{geomark, same_geomark};

/// Secrets of the run, distinct enough to grep every log for.
pub const ST_PASSWORD: &str = "st-pw-c41e2b";
pub const AZ_KEY: &str = "az-key-5e2d97";
pub const KAFKA_PASSWORD: &str = "kafka-pw-31ac08";

/// A tenant's webhook secret for `vendor`.
pub fn hook_secret(tenant: &str, vendor: &str) -> String {
    format!("{tenant}-{vendor}-hook-7f03aa")
}

/// The pipeline's processes, restartable by name.
pub struct Procs {
    pub dir: PathBuf,
    pub specs: BTreeMap<&'static str, Vec<String>>,
    pub running: Mutex<HashMap<&'static str, Child>>,
}

impl Procs {
    pub fn start(&self, name: &'static str) {
        let log = OpenOptions::new().create(true).append(true).open(self.dir.join(format!("{name}.log"))).expect("log");
        let child = Proc::new(env!("CARGO_BIN_EXE_geoclock"))
            .args(&self.specs[name])
            .env("GEOCLOCK_LOG", "info")
            // A Kafka client property holding a secret (ignored by a
            // plaintext broker): it must never be logged.
            .env("GEOCLOCK_KAFKA_SASL_PASSWORD", KAFKA_PASSWORD)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("geoclock starts");
        self.running.lock().unwrap().insert(name, child);
    }

    pub fn kill(&self, name: &'static str) {
        if let Some(mut c) = self.running.lock().unwrap().remove(name) {
            let _ = Proc::new("kill").args(["-9", &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }

    /// Processes that ended on their own (a restart loop would be a
    /// supervisor's job; here it is a failure unless it was expected).
    pub fn exited(&self) -> Vec<(&'static str, std::process::ExitStatus)> {
        let mut r = self.running.lock().unwrap();
        let mut out = Vec::new();
        for (n, c) in r.iter_mut() {
            if let Ok(Some(s)) = c.try_wait() {
                out.push((*n, s));
            }
        }
        out
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, mut c) in self.running.lock().unwrap().drain() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    l.local_addr().expect("addr").to_string()
}

/// One tenant's simulators and its time zone.
pub struct Tenant {
    pub name: &'static str,
    pub zone: &'static str,
    pub st: Arc<ServiceTradeSim>,
    pub az: Arc<AzugaSim>,
    pub st_url: String,
    pub az_url: String,
}

/// The tenants file for `tenants`, their email through `smtp`; `email`
/// adds lines to each tenant's `[tenants.email]`.
pub fn tenants_file(path: &Path, tenants: &[Tenant], smtp: &str, email: &dyn Fn(&Tenant) -> String) {
    let mut text = String::new();
    for t in tenants {
        text.push_str(&format!(
            r#"
[[tenants]]
name = "{name}"
timezone = "{zone}"
settings = {{ window_hours = 2 }}
[tenants.servicetrade]
base_url = "{st}"
username = "geoclock-admin"
password = {{ value = "{ST_PASSWORD}" }}
webhook_secret = {{ value = "{st_hook}" }}
reconcile_interval_ms = 3000
full_sweep_every = 10
api_interval_ms = 0
[tenants.azuga]
base_url = "{az}"
api_key = {{ value = "{AZ_KEY}" }}
webhook_secret = {{ value = "{az_hook}" }}
rate_limit_ms = 300
poll_interval_ms = 3000
entity_sync_interval_ms = 6000
history_interval_ms = 4000
max_ping_age_s = 31536000
max_ping_future_s = 31536000
[tenants.email]
from = "{name} Field Service <service@{name}.example>"
smtp_url = {{ value = "smtp://{smtp}" }}
{extra}
"#,
            name = t.name,
            zone = t.zone,
            extra = email(t),
            st = t.st_url,
            az = t.az_url,
            st_hook = hook_secret(t.name, "st"),
            az_hook = hook_secret(t.name, "az"),
        ));
    }
    std::fs::write(path, text).expect("tenants file");
}

/// The pipeline's processes for the tenants file at `tenants`: both
/// connectors, the processor, two clock-sink instances in one group, the
/// geofence and email sinks; state under `dir`.
pub fn specs(
    tenants: &Path,
    brokers: &str,
    prefix: &str,
    registry: &str,
    dir: &Path,
) -> BTreeMap<&'static str, Vec<String>> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    let tf = tenants.display().to_string();
    let state = |n: &str| dir.join(n).display().to_string();
    let common = s(&["--tenants", &tf, "--brokers", brokers, "--prefix", prefix, "--schema-registry", registry]);
    let mut specs: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for (name, vendor, addr) in [("connect-st", "servicetrade", free_addr()), ("connect-az", "azuga", free_addr())] {
        let mut a = s(&["connect", vendor]);
        a.extend(common.clone());
        a.extend(s(&["--listen", &addr, "--state-dir", &state("connect"), "--retry-after-cap-s", "5"]));
        specs.insert(name, a);
    }
    let group = format!("{prefix}-processor");
    let mut p = s(&["process", "--brokers", brokers, "--prefix", prefix, "--partitions", "3"]);
    p.extend(s(&["--group", &group, "--state-dir", &state("processor"), "--tenants", &tf]));
    p.extend(s(&["--schema-registry", registry, "--commit-ms", "200"]));
    specs.insert("processor", p);
    for (name, kind, st) in [
        ("sink-clock-a", "clock", "clock-a"),
        ("sink-clock-b", "clock", "clock-b"),
        ("sink-geofence", "geofence", "geofence"),
        ("sink-email", "email", "email"),
    ] {
        let mut a = s(&["sink", kind]);
        a.extend(common.clone());
        a.extend(s(&["--state-dir", &state(st), "--http-timeout-s", "2", "--retry-after-cap-s", "5", "--no-fsync"]));
        specs.insert(name, a);
    }
    specs
}

/// Releases each tenant's En Route presses (`clocks[i]`, in time order) to
/// its ServiceTrade and its fixes to its Azuga as simulated time runs from
/// `start` to `end` at `speed` simulated seconds per second; the flag is
/// set when the day is over.
pub fn drive(
    sims: Vec<(Arc<ServiceTradeSim>, Arc<AzugaSim>)>,
    clocks: Vec<Vec<ClockEvent>>,
    start: Ts,
    end: Ts,
    speed: f64,
) -> (std::thread::JoinHandle<()>, Arc<AtomicBool>) {
    let day_over = Arc::new(AtomicBool::new(false));
    let over = day_over.clone();
    let t0 = Instant::now();
    let mut clocks: Vec<std::collections::VecDeque<ClockEvent>> = clocks.into_iter().map(Into::into).collect();
    let handle = std::thread::spawn(move || loop {
        let now = start.plus_millis((t0.elapsed().as_secs_f64() * speed * 1000.0) as i64);
        for (i, (st, az)) in sims.iter().enumerate() {
            while clocks[i].front().is_some_and(|c| c.time <= now) {
                let c = clocks[i].pop_front().unwrap();
                let _ = st.apply(Event::Clock(c), None);
            }
            az.advance(now.min(end));
        }
        if now >= end {
            over.store(true, Ordering::SeqCst);
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    });
    (handle, day_over)
}

pub fn p99(mut v: Vec<i64>) -> i64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1]
}

/// What was decided, per tenant: the commands topic, one command per id.
pub fn decided(
    codec: &Codec,
    records: &[(String, Vec<u8>, Option<Vec<u8>>)],
    topic: &str,
) -> BTreeMap<(String, String), Command> {
    let mut out = BTreeMap::new();
    for (t, _, v) in records.iter().filter(|(t, _, _)| t == topic) {
        let _ = t;
        let Some(v) = v else { continue };
        let tc = codec.decode_command(v).expect("commands decode");
        if let Some(prev) = out.insert((tc.tenant.clone(), tc.command.id.clone()), tc.command.clone()) {
            assert_eq!(prev, tc.command, "a command id re-emitted with other content");
        }
    }
    out
}

/// Why the simulators do not (yet) hold exactly what `commands` decided for
/// `t`; `Ok` when they do.
pub fn check_effects(
    t: &Tenant,
    commands: &BTreeMap<(String, String), Command>,
    mails: &[geoclock::sim::smtp::Mail],
) -> Result<String, String> {
    let mine: Vec<&Command> = commands.iter().filter(|((tn, _), _)| tn == t.name).map(|(_, c)| c).collect();
    // Clock events created by the integration (they carry a position).
    let mut want_clocks: HashMap<String, usize> = HashMap::new();
    for c in &mine {
        if let Action::Clock(k) = &c.action {
            let key =
                format!("{}/{}/{:?}/{:?}/{}", k.user, c.appointment, k.activity, k.action, k.time.millis() / 1000);
            *want_clocks.entry(key).or_default() += 1;
        }
    }
    let mut got_clocks: HashMap<String, usize> = HashMap::new();
    for c in t.st.snapshot().clocks.into_iter().filter(|c| c.lat.is_some()) {
        let e = &c.event;
        let key = format!("{}/{}/{:?}/{:?}/{}", e.user, e.appointment, e.activity, e.action, e.time.millis() / 1000);
        *got_clocks.entry(key).or_default() += 1;
    }
    if got_clocks != want_clocks {
        let missing = want_clocks.keys().filter(|k| !got_clocks.contains_key(*k)).count();
        let extra: Vec<_> = got_clocks.iter().filter(|(k, n)| **n != 1 || !want_clocks.contains_key(*k)).collect();
        return Err(format!("{}: clock events: {missing} missing, extra or doubled {extra:?}", t.name));
    }
    // Geomarks: the last fence command of each appointment (by revision).
    let mut last: BTreeMap<String, &Command> = BTreeMap::new();
    for c in &mine {
        let rev = match &c.action {
            Action::CreateGeofence(f) | Action::UpdateGeofence(f) => f.revision,
            Action::DeleteGeofence { revision, .. } => *revision,
            _ => continue,
        };
        let a = c.appointment.to_string();
        let keep = last.get(&a).is_none_or(|p| match &p.action {
            Action::CreateGeofence(f) | Action::UpdateGeofence(f) => f.revision < rev,
            Action::DeleteGeofence { revision, .. } => *revision < rev,
            _ => true,
        });
        if keep {
            last.insert(a, c);
        }
    }
    let marks = t.az.snapshot().geomarks;
    let mut live = 0;
    for c in last.values() {
        let held: Vec<&serde_json::Value> = marks
            .iter()
            .filter(|m| m["name"].as_str().is_some_and(|n| n.ends_with(&format!(" | {}", c.appointment))))
            .collect();
        match &c.action {
            Action::CreateGeofence(f) | Action::UpdateGeofence(f) => {
                live += 1;
                if held.len() != 1 || !same_geomark(held[0], &geomark(f)) {
                    return Err(format!(
                        "{}: appointment {} holds {} geomarks, want its fence once",
                        t.name,
                        c.appointment,
                        held.len()
                    ));
                }
            }
            _ => {
                if !held.is_empty() {
                    return Err(format!("{}: appointment {}'s deleted fence is still at Azuga", t.name, c.appointment));
                }
            }
        }
    }
    if marks.len() != live {
        return Err(format!("{}: {} geomarks at Azuga, {live} live fences", t.name, marks.len()));
    }
    // Service Links: one delivered email each (by Message-ID), one TrackMe each.
    let links: HashSet<String> = mine
        .iter()
        .filter(|c| matches!(c.action, Action::SendServiceLink(_)))
        .map(|c| format!("<{}.{}@geoclock>", c.id, t.name))
        .collect();
    let suffix = format!(".{}@geoclock>", t.name);
    let got: HashSet<String> =
        mails.iter().filter(|m| m.message_id.ends_with(&suffix)).map(|m| m.message_id.clone()).collect();
    if got != links {
        return Err(format!("{}: {} Service Link emails by Message-ID, {} commanded", t.name, got.len(), links.len()));
    }
    let trackme = t.az.snapshot().trackme.len();
    if trackme != links.len() {
        return Err(format!("{}: {trackme} TrackMe links, {} Service Links", t.name, links.len()));
    }
    Ok(format!(
        "{}: {} clock events, {live} live geomarks ({} fences decided), {} emails, {trackme} TrackMe links",
        t.name,
        got_clocks.len(),
        last.len(),
        got.len()
    ))
}
