//! No configured secret appears anywhere an end-to-end run leaves output.
//!
//! The multi-process pipeline, every geoclock component its own process
//! (`topics create`, both connectors, the processor, the three sinks, the
//! report server) on a real broker (nisshi), against the vendor simulators
//! and a mail receiver in this test process, with every secret of the
//! tenants file set to a distinctive value: the ServiceTrade password, both
//! webhook secrets (HMAC and Basic), the Azuga API key and the report
//! token. The webhooks, the vendor calls, the clock changes, the Service
//! Link emails and the daily report email (with its signed link) all
//! happen. Then every log line of every process (at debug level), every
//! `/metrics` page, the report in HTML, CSV and JSON, every email, and
//! every record (key, value, headers) of every topic are searched for each
//! secret value: none may appear. The search itself is checked to find
//! what is there (the tenant name, the vendor-side call log).

mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use geoclock::engine::Event;
use geoclock::kafka::topics::{Catalogue, Topic};
use geoclock::model::Ts;
use geoclock::sim::azuga::{self, AzugaSim};
use geoclock::sim::fleet::{generate, FleetConfig};
use geoclock::sim::servicetrade::{self as st, Account, ServiceTradeSim};
use geoclock::sim::smtp::SmtpSim;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use support::broker::{Broker, Storage};

const PARTITIONS: i32 = 2;

/// The secrets, distinctive so that any copy of them is found.
const ST_PASSWORD: &str = "St-Pw-7f3a9c1e5b";
const ST_HOOK: &str = "St-Hook-2d8e4b6a0c";
const AZ_KEY: &str = "Az-Key-9b1d3f5e7a";
const AZ_HOOK: &str = "Az-Hook-4c6e8a0b2d";
const REPORT_TOKEN: &str = "Report-Tok-1a3c5e7b9d";
const SECRETS: [&str; 5] = [ST_PASSWORD, ST_HOOK, AZ_KEY, AZ_HOOK, REPORT_TOKEN];

/// `n` distinct free addresses: every listener is held until all are
/// bound (one bound and dropped at a time can come back the same).
fn free_addrs(n: usize) -> Vec<String> {
    let held: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    held.iter().map(|l| l.local_addr().unwrap().to_string()).collect()
}

struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

fn spawn(dir: &Path, name: &str, args: &[&str]) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_geoclock"))
        .args(args)
        .env("GEOCLOCK_LOG", "debug,rdkafka=info")
        .env_remove("GEOCLOCK_TENANTS")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("{name} starts: {e}"));
    Proc { name: name.into(), child, log }
}

fn get(url: &str, bearer: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut req = agent.get(url);
    if let Some(t) = bearer {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    match req.call() {
        Ok(mut r) => (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Every record of `topic` as bytes: key, value and each header's name and value.
fn topic_bytes(brokers: &str, topic: &str) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "secrets-e2e-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in 0..PARTITIONS {
        let Ok((low, high)) = consumer.fetch_watermarks(topic, p, Duration::from_secs(5)) else { continue };
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Offset(low)).unwrap();
            ends.insert(p, high);
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return out;
    }
    consumer.assign(&tpl).unwrap();
    let mut at: BTreeMap<i32, i64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ends.iter().any(|(p, high)| at.get(p).is_none_or(|o| o + 1 < *high)) {
        assert!(Instant::now() < deadline, "{topic} not read to its end");
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            at.insert(m.partition(), m.offset());
            let mut rec = m.key().unwrap_or_default().to_vec();
            rec.extend_from_slice(b"\n");
            rec.extend_from_slice(m.payload().unwrap_or_default());
            if let Some(h) = m.headers() {
                for i in 0..h.count() {
                    let header = h.get(i);
                    rec.extend_from_slice(header.key.as_bytes());
                    rec.extend_from_slice(header.value.unwrap_or_default());
                }
            }
            out.push(rec);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn no_secret_appears_in_logs_metrics_reports_emails_or_records() {
    let broker = Broker::start(Storage::Memory);
    let brokers = broker.bootstrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = std::env::temp_dir().join(format!("geoclock-secrets-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // The outside world: a day that started two hours ago, so its fixes are
    // due as soon as the connector asks.
    let now = chrono::Utc::now().timestamp();
    let mut world =
        generate(&FleetConfig { technicians: 3, day_start: Ts::from_secs(now - 3 * 3600), ..FleetConfig::default() });
    let clocks = std::mem::take(&mut world.clocks);
    let st_cfg = st::Config {
        accounts: vec![Account {
            username: "geoclock-admin".into(),
            password: ST_PASSWORD.into(),
            user: None,
            admin: true,
        }],
        ..st::Config::default()
    };
    let (st_sim, st_run) = rt.block_on(ServiceTradeSim::start(st_cfg, &world, "127.0.0.1:0")).unwrap();
    let az_cfg = azuga::Config { api_keys: vec![AZ_KEY.into()], rate_limit_ms: 100, ..azuga::Config::default() };
    let (az_sim, az_run) = rt.block_on(AzugaSim::start(az_cfg, &world, "127.0.0.1:0")).unwrap();
    let smtp = rt.block_on(SmtpSim::start("127.0.0.1:0", "127.0.0.1:0")).unwrap();

    let tenants = dir.join("tenants.toml");
    std::fs::write(
        &tenants,
        format!(
            r#"
[[tenants]]
name = "{tenant}"
timezone = "America/New_York"
settings = {{ window_hours = 8 }}
[tenants.servicetrade]
base_url = "{st}"
username = "geoclock-admin"
password = {{ env = "E2E_ST_PASSWORD" }}
webhook_secret = {{ env = "E2E_ST_HOOK" }}
webhook_auth = "hmac"
reconcile_interval_ms = 3000
api_interval_ms = 0
[tenants.azuga]
base_url = "{az}"
api_key = {{ env = "E2E_AZ_KEY" }}
webhook_secret = {{ env = "E2E_AZ_HOOK" }}
webhook_auth = "basic"
rate_limit_ms = 100
poll_interval_ms = 2000
entity_sync_interval_ms = 3000
history_interval_ms = 3000
max_ping_age_s = 31536000
max_ping_future_s = 31536000
[tenants.email]
from = "Acme Field Service <service@acme.example>"
smtp_url = {{ value = "smtp://{smtp}" }}
report_recipients = ["ops@acme.example"]
report_token = {{ env = "E2E_REPORT_TOKEN" }}
"#,
            tenant = world.tenant,
            st = st_run.url(),
            az = az_run.url(),
            smtp = smtp.smtp_addr,
        ),
    )
    .unwrap();
    for (k, v) in [
        ("E2E_ST_PASSWORD", ST_PASSWORD),
        ("E2E_ST_HOOK", ST_HOOK),
        ("E2E_AZ_KEY", AZ_KEY),
        ("E2E_AZ_HOOK", AZ_HOOK),
        ("E2E_REPORT_TOKEN", REPORT_TOKEN),
    ] {
        std::env::set_var(k, v);
    }
    let t = tenants.to_str().unwrap();
    let prefix = "e2e";
    let common = ["--tenants", t, "--brokers", &brokers, "--prefix", prefix];
    let state = |n: &str| dir.join(n).to_string_lossy().into_owned();
    let created = Command::new(env!("CARGO_BIN_EXE_geoclock"))
        .args(["topics", "create", "--brokers", &brokers, "--prefix", prefix, "--partitions", "2"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));

    let mut addrs = free_addrs(10);
    let metrics: Vec<String> = addrs.split_off(3);
    let (st_in, az_in, report) = (addrs[0].clone(), addrs[1].clone(), addrs[2].clone());
    let report_url = format!("http://{report}");
    let smtp_url = format!("smtp://{}", smtp.smtp_addr);
    let mut procs = vec![
        spawn(
            &dir,
            "connect-servicetrade",
            &[
                &["connect", "servicetrade"][..],
                &common,
                &["--listen", &st_in, "--metrics", &metrics[0], "--state-dir", &state("cst")],
            ]
            .concat(),
        ),
        spawn(
            &dir,
            "connect-azuga",
            &[
                &["connect", "azuga"][..],
                &common,
                &["--listen", &az_in, "--metrics", &metrics[1], "--state-dir", &state("caz")],
            ]
            .concat(),
        ),
        spawn(
            &dir,
            "process",
            &[
                &["process"][..],
                &common,
                &["--partitions", "2", "--metrics", &metrics[2], "--state-dir", &state("proc")],
            ]
            .concat(),
        ),
        spawn(
            &dir,
            "sink-clock",
            &[&["sink", "clock"][..], &common, &["--metrics", &metrics[3], "--state-dir", &state("sc")]].concat(),
        ),
        spawn(
            &dir,
            "sink-geofence",
            &[&["sink", "geofence"][..], &common, &["--metrics", &metrics[4], "--state-dir", &state("sg")]].concat(),
        ),
        spawn(
            &dir,
            "sink-email",
            &[
                &["sink", "email"][..],
                &common,
                &[
                    "--metrics",
                    &metrics[5],
                    "--state-dir",
                    &state("se"),
                    "--smtp",
                    &smtp_url,
                    "--report-url",
                    &report_url,
                ],
            ]
            .concat(),
        ),
        spawn(
            &dir,
            "report",
            &[
                &["report", "serve"][..],
                &common,
                &["--partitions", "2", "--listen", &report, "--metrics", &metrics[6], "--state-dir", &state("rep")],
            ]
            .concat(),
        ),
    ];

    // Webhooks registered with header auth (no secret in their URLs).
    wait_for("webhooks registered", Duration::from_secs(90), || {
        st_sim.outbox().has_hooks() && az_sim.outbox().has_hooks()
    });
    assert!(st_sim
        .outbox()
        .hooks()
        .iter()
        .chain(az_sim.outbox().hooks().iter())
        .all(|h| !SECRETS.iter().any(|s| h.url.contains(s))));
    // The day happens: technicians press En Route, fixes are released.
    for c in clocks {
        let _ = st_sim.apply(Event::Clock(c), None);
    }
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        az_sim.advance(Ts::from_secs(chrono::Utc::now().timestamp()));
        let clocked = st_sim.calls().count("POST", "/api/clock");
        let mails = get(&format!("{}/messages", smtp.http.url()), None).1;
        let links = mails.matches("is on the way to").count();
        let daily = mails.contains("Activity Report");
        if clocked > 0 && links > 0 && daily {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the day did not happen: {clocked} clock posts, {links} links, daily report {daily}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Webhooks were delivered and accepted (signed and Basic).
    assert!(st_sim.outbox().deliveries().iter().any(|d| serde_json::to_value(d.outcome).unwrap() == "delivered"));
    std::thread::sleep(Duration::from_secs(3));

    // Collect everything the run left where people and machines read it.
    let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, m) in metrics.iter().enumerate() {
        let (code, body) = get(&format!("http://{m}/metrics"), None);
        assert_eq!(code, 200, "metrics #{i}");
        outputs.push((format!("metrics of {}", procs[i].name), body.into_bytes()));
    }
    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    for format in ["html", "csv", "json"] {
        let (code, body) =
            get(&format!("{report_url}/report/{}?day={day}&format={format}", world.tenant), Some(REPORT_TOKEN));
        assert_eq!(code, 200, "report {format}: {body}");
        outputs.push((format!("report {format}"), body.into_bytes()));
    }
    let (code, refused) = get(&format!("{report_url}/report/{}?format=json&token={REPORT_TOKEN}", world.tenant), None);
    assert_eq!(code, 401);
    outputs.push(("a refused report request".into(), refused.into_bytes()));
    let mails = get(&format!("{}/messages", smtp.http.url()), None).1;
    assert!(mails.contains("sig="), "the daily report email carries a signed link");
    outputs.push(("emails".into(), mails.into_bytes()));
    let catalogue = Catalogue { prefix: prefix.into(), partitions: PARTITIONS, replication: 1 };
    let mut records = 0;
    for topic in Topic::ALL {
        for (i, r) in topic_bytes(&brokers, &catalogue.name(topic)).into_iter().enumerate() {
            records += 1;
            outputs.push((format!("{} record #{i}", catalogue.name(topic)), r));
        }
    }
    assert!(records > 100, "{records} records");
    // Stop every process cleanly (its shutdown logs count too), then read the logs.
    for p in &mut procs {
        let _ = Command::new("kill").args(["-INT", &p.child.id().to_string()]).status();
    }
    for p in &mut procs {
        let deadline = Instant::now() + Duration::from_secs(30);
        while p.child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = p.child.kill();
        let _ = p.child.wait();
        let mut log = Vec::new();
        std::fs::File::open(&p.log).unwrap().read_to_end(&mut log).unwrap();
        // A quiet connector logs a few lines only (nothing went wrong).
        assert!(log.len() > 100, "{} logged: {}", p.name, String::from_utf8_lossy(&log));
        outputs.push((format!("log of {}", p.name), log));
    }
    let debug_lines: usize = outputs
        .iter()
        .filter(|(what, _)| what.starts_with("log of"))
        .map(|(_, o)| String::from_utf8_lossy(o).matches(" DEBUG ").count())
        .sum();
    assert!(debug_lines > 20, "the processes logged at debug level: {debug_lines} debug lines");

    // The search finds what is there...
    assert!(outputs.iter().any(|(_, o)| contains(o, &world.tenant)));
    let vendor_side = format!("{:?}", st_sim.calls().snapshot("/api/webhook"));
    assert!(!vendor_side.is_empty());
    // ...and no secret anywhere.
    let mut leaks = Vec::new();
    for (what, bytes) in &outputs {
        for s in SECRETS {
            if contains(bytes, s) {
                leaks.push(format!("{s} in {what}"));
            }
        }
    }
    let total: usize = outputs.iter().map(|(_, o)| o.len()).sum();
    eprintln!(
        "searched {} outputs ({total} bytes, {records} Kafka records) for {} secrets",
        outputs.len(),
        SECRETS.len()
    );
    assert!(leaks.is_empty(), "secrets leaked: {leaks:#?}");
    rt.block_on(async { tokio::join!(st_run.stop(), az_run.stop(), smtp.stop()) });
    let _ = std::fs::remove_dir_all(&dir);
}
