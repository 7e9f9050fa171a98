//! Two tenants in two time zones through the whole pipeline — both
//! connectors, the processor, the sinks and the report server, each a
//! `geoclock` process — on a calm day:
//! - each customer's Service Link shows the appointment window in the
//!   tenant's local time with the zone named (the locations carry none),
//!   goes to the contact the engine chose from that tenant's own data,
//!   carries the TrackMe link Azuga made and the tenant's ServiceTrade
//!   Service Link URL, in both parts, from the tenant's admin;
//! - neither tenant's data, emails, report rows or metrics appear in the
//!   other's: every email of a tenant is for its own customers and carries
//!   its own links; each report holds only its own technicians and refuses
//!   the other's token; the processor's per-tenant command counters match
//!   each tenant's own commands.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use geoclock::engine::{Action, ServiceLink};
use geoclock::kafka::admin::ensure_topics;
use geoclock::kafka::codec::Codec;
use geoclock::kafka::records::{Outcome, SinkResult};
use geoclock::kafka::registry::ConfluentRegistry;
use geoclock::kafka::topics::{Catalogue, Topic};
use geoclock::model::Ts;
use geoclock::sim::azuga::{self, AzugaSim};
use geoclock::sim::fleet::{generate, FleetConfig};
use geoclock::sim::registry::RegistrySim;
use geoclock::sim::servicetrade::{self as st, ServiceTradeSim};
use geoclock::sim::smtp::SmtpSim;
use support::broker::{Broker, Storage};
use support::kafka::tail;
use support::pipeline::{
    check_effects, decided, drive, free_addr, specs, tenants_file, Procs, Tenant, AZ_KEY, ST_PASSWORD,
};

const PARTITIONS: i32 = 3;
/// Name, zone, service-area centre, first departure (hours after 00:00 UTC).
const TENANTS: [(&str, &str, (f64, f64), i64); 2] = [
    ("acme", "America/New_York", (35.2271, -80.8431), 12),
    ("globex", "America/Los_Angeles", (34.0522, -118.2437), 15),
];
const SPEED: f64 = 600.0;

fn token(tenant: &str) -> String {
    format!("{tenant}-report-token-2f9d")
}

fn admin(tenant: &str) -> String {
    format!("Admin of {tenant}")
}

fn st_link(tenant: &str, appointment: &str) -> String {
    format!("https://{tenant}.servicetrade.example/servicelink/{appointment}")
}

fn get(url: &str, bearer: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut r = agent
        .get(url)
        .header("Authorization", &format!("Bearer {bearer}"))
        .call()
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default())
}

/// `9:30 AM`-style local time of `t` in `tz`, and the zone's abbreviation.
fn local(t: Ts, tz: Tz) -> (String, String) {
    let d = DateTime::<Utc>::from_timestamp_millis(t.millis()).unwrap().with_timezone(&tz);
    (d.format("%-I:%M %p").to_string(), d.format("%Z").to_string())
}

#[test]
fn two_tenants_in_two_time_zones_each_see_only_their_own() {
    let broker = Broker::start(Storage::Memory);
    let brokers = broker.bootstrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let catalogue = Catalogue { prefix: "two".into(), partitions: PARTITIONS, replication: 1 };
    rt.block_on(ensure_topics(&brokers, &catalogue, Duration::from_secs(30))).expect("topics");
    let (_registry, reg_run) = rt.block_on(RegistrySim::start("127.0.0.1:0")).expect("registry");
    let reg_url = reg_run.url();
    let codec = Codec::new(Arc::new(ConfluentRegistry::new(&reg_url).unwrap()), &catalogue).expect("codec");
    let smtp = rt.block_on(SmtpSim::start("127.0.0.1:0", "127.0.0.1:0")).expect("smtp");

    let today = chrono::Utc::now().timestamp().div_euclid(86_400) * 86_400;
    let day = DateTime::<Utc>::from_timestamp(today, 0).unwrap().format("%Y-%m-%d").to_string();
    let (mut tenants, mut clocks, mut fixes, mut servers, mut worlds) = (vec![], vec![], vec![], vec![], vec![]);
    for (i, (name, zone, center, start_h)) in TENANTS.into_iter().enumerate() {
        let mut w = generate(&FleetConfig {
            seed: 70 + i as u64,
            tenant: name.to_string(),
            technicians: 4,
            day_start: Ts::from_secs(today + start_h * 3600),
            center,
            ..FleetConfig::default()
        });
        clocks.push(std::mem::take(&mut w.clocks));
        fixes.extend(w.pings.iter().map(|p| p.release_at));
        let mut st_config = st::Config::default();
        st_config.accounts[0].password = ST_PASSWORD.into();
        let (st, st_run) = rt.block_on(ServiceTradeSim::start(st_config, &w, "127.0.0.1:0")).unwrap();
        let az_config = azuga::Config { rate_limit_ms: 300, api_keys: vec![AZ_KEY.into()], ..azuga::Config::default() };
        let (az, az_run) = rt.block_on(AzugaSim::start(az_config, &w, "127.0.0.1:0")).unwrap();
        tenants.push(Tenant { name, zone, st, az, st_url: st_run.url(), az_url: az_run.url() });
        servers.push(st_run);
        servers.push(az_run);
        worlds.push(w);
    }
    let dir = std::env::temp_dir().join(format!("geoclock-two-tenants-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let tenants_path = dir.join("tenants.toml");
    tenants_file(&tenants_path, &tenants, &smtp.smtp_addr.to_string(), &|t| {
        format!(
            "admin_name = \"{}\"\nservice_link_url = \"{}\"\nreport_token = {{ value = \"{}\" }}",
            admin(t.name),
            st_link(t.name, "{appointment}"),
            token(t.name)
        )
    });
    let mut specs = specs(&tenants_path, &brokers, "two", &reg_url, &dir);
    let metrics = free_addr();
    specs.get_mut("processor").unwrap().extend(["--metrics".to_string(), metrics.clone()]);
    let report = free_addr();
    let tf = tenants_path.display().to_string();
    let state = dir.join("report").display().to_string();
    specs.insert(
        "report",
        ["report", "serve", "--tenants", &tf, "--brokers", &brokers, "--prefix", "two", "--schema-registry", &reg_url]
            .into_iter()
            .chain(["--partitions", "3", "--listen", &report, "--state-dir", &state, "--metrics", &free_addr()])
            .map(String::from)
            .collect(),
    );
    let names: Vec<&'static str> = specs.keys().copied().collect();
    let procs = Procs { dir: dir.clone(), specs, running: Mutex::new(Default::default()) };
    for n in names {
        procs.start(n);
    }
    let seen = tail(
        &brokers,
        &[catalogue.name(Topic::Commands), catalogue.name(Topic::Results), catalogue.name(Topic::DeadLetters)],
        PARTITIONS,
    );

    // The day, at 600× from half an hour before the first fix.
    let start = fixes.iter().min().unwrap().minus_millis(30 * 60_000);
    let end = fixes.iter().max().unwrap().plus_millis(30 * 60_000);
    let sims = tenants.iter().map(|t| (t.st.clone(), t.az.clone())).collect();
    let (driver, day_over) = drive(sims, clocks, start, end, SPEED);
    driver.join().expect("driver");
    assert!(day_over.load(Ordering::SeqCst));

    // Everything decided has taken effect, once.
    let commands_topic = catalogue.name(Topic::Commands);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let records = seen.lock().unwrap().clone();
        let commands = decided(&codec, &records, &commands_topic);
        let mails = smtp.mailbox.mails();
        let checks: Vec<_> = tenants.iter().map(|t| check_effects(t, &commands, &mails)).collect();
        if checks.iter().all(Result::is_ok) {
            break;
        }
        if Instant::now() > deadline {
            for n in procs.specs.keys() {
                eprintln!("---- {n} (tail)\n{}", procs.log(n).lines().rev().take(30).collect::<Vec<_>>().join("\n"));
            }
            panic!("effects never matched the decisions: {checks:?}");
        }
        let exited = procs.exited();
        assert!(exited.is_empty(), "processes ended on their own: {exited:?}");
        std::thread::sleep(Duration::from_secs(2));
    }
    let records = seen.lock().unwrap().clone();
    let commands = decided(&codec, &records, &commands_topic);
    let results_topic = catalogue.name(Topic::Results);
    let mut results: BTreeMap<(String, String), SinkResult> = BTreeMap::new();
    for (_, _, v) in records.iter().filter(|(t, _, _)| *t == results_topic) {
        let (tenant, r) = codec.decode_result(v.as_deref().unwrap()).expect("results decode");
        results.insert((tenant, r.command_id.clone()), r);
    }
    let mails = smtp.mailbox.mails();

    for (i, t) in tenants.iter().enumerate() {
        let tz: Tz = t.zone.parse().unwrap();
        let other = &tenants[1 - i];
        let world = &worlds[i];
        let links: Vec<(String, String, &ServiceLink)> = commands
            .iter()
            .filter(|((tn, _), _)| tn == t.name)
            .filter_map(|((_, id), c)| match &c.action {
                Action::SendServiceLink(l) => Some((id.clone(), c.appointment.to_string(), l)),
                _ => None,
            })
            .collect();
        assert!(links.len() >= 4, "{}: {} Service Links", t.name, links.len());
        let mut to_contacts = 0;
        for (id, appointment, l) in &links {
            let m = mails
                .iter()
                .find(|m| m.message_id == format!("<{id}.{}@geoclock>", t.name))
                .unwrap_or_else(|| panic!("{}: no email for Service Link {id}", t.name));
            // The contact: the job's location's primary contact (a mirrored
            // ServiceTrade contact), else the location's own email, from
            // this tenant's data.
            let job = world.appointments.iter().find(|a| a.id.to_string() == *appointment).and_then(|a| a.job.clone());
            let loc = world.jobs.iter().find(|j| Some(&j.id) == job.as_ref()).and_then(|j| j.location.clone());
            let location = world.locations.iter().find(|x| Some(&x.id) == loc.as_ref());
            let primary = location
                .and_then(|x| x.primary_contact.as_ref())
                .and_then(|c| world.contacts.iter().find(|k| &k.id == c))
                .and_then(|k| k.email.clone());
            to_contacts += usize::from(primary.is_some());
            let contact = primary.or_else(|| location.and_then(|x| x.email.clone()));
            assert_eq!(m.to, vec![contact.clone().unwrap()], "{}: the appointment's contact", t.name);
            assert!(m.to[0].ends_with(&format!("@{}-customer.example", t.name)), "{:?}", m.to);
            // The window in the tenant's zone, named.
            let (ws, zone) = local(l.window_start.unwrap(), tz);
            let (we, _) = local(l.window_end.unwrap(), tz);
            for part in [&m.text, &m.html] {
                assert!(part.contains(&format!("{ws} – {we} {zone}")), "{}: window {ws}–{we} {zone} in {part}", t.name);
            }
            assert!(["EST", "EDT", "PST", "PDT"].contains(&zone.as_str()), "{zone}");
            // The TrackMe link Azuga made, and ServiceTrade's own link.
            let r = &results[&(t.name.to_string(), id.clone())];
            assert_eq!(r.outcome, Outcome::Done);
            let trackme = r.remote_ref.clone().expect("TrackMe url");
            let own = st_link(t.name, appointment);
            for part in [&m.text, &m.html] {
                assert!(part.contains(&trackme) && part.contains(&own), "{}: links in {part}", t.name);
                assert!(!part.contains(&st_link(other.name, "")), "{}: the other tenant's link in {part}", t.name);
            }
            let from = m.raw.lines().find(|x| x.starts_with("From: ")).unwrap_or_default();
            assert!(from.contains(&admin(t.name)) && from.contains(&format!("service@{}.example", t.name)), "{from}");
        }
        assert!(0 < to_contacts && to_contacts < links.len(), "{}: contacts and locations' emails both", t.name);
        // Every email of this tenant is for its own customers.
        let suffix = format!(".{}@geoclock>", t.name);
        let own_mails: Vec<_> = mails.iter().filter(|m| m.message_id.ends_with(&suffix)).collect();
        assert_eq!(own_mails.len(), links.len());
        assert!(own_mails.iter().all(|m| m.to.iter().all(|a| a.ends_with(&format!("@{}-customer.example", t.name)))));

        // The report: this tenant's technicians only; the other's token refused.
        let url = format!("http://{report}/report/{}?format=json&day={day}", t.name);
        let deadline = Instant::now() + Duration::from_secs(120);
        let rows = loop {
            let (status, body) = get(&url, &token(t.name));
            let rows: Vec<serde_json::Value> =
                if status == 200 { serde_json::from_str(&body).unwrap_or_default() } else { vec![] };
            let arrived = rows.iter().filter(|r| r["fence_result"] == "arrived").count();
            if arrived > 0 && rows.iter().all(|r| !r["actions"]["onsite_clock_in"]["status"].eq("pending")) {
                break rows;
            }
            assert!(Instant::now() < deadline, "{}: report {status}: {body}", t.name);
            std::thread::sleep(Duration::from_secs(1));
        };
        let scheduled = world.appointments.iter().filter(|a| a.window().is_some()).count();
        assert_eq!(rows.len(), scheduled, "{}: one row per scheduled appointment", t.name);
        for r in &rows {
            let email = r["tech_email"].as_str().unwrap_or_default();
            assert!(email.ends_with(&format!("@{}.example", t.name)), "{}: row of {email}", t.name);
        }
        assert_eq!(get(&url, &token(other.name)).0, 401, "{}'s report with {}'s token", t.name, other.name);

        // The processor's per-tenant counters: this tenant's commands only.
        let (_, text) = get(&format!("http://{metrics}/metrics"), "");
        let counted: f64 = text
            .lines()
            .filter(|x| {
                x.starts_with("geoclock_processor_commands_total{") && x.contains(&format!("tenant=\"{}\"", t.name))
            })
            .filter_map(|x| x.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        let own = commands.keys().filter(|(tn, _)| tn == t.name).count();
        assert_eq!(counted as usize, own, "{}: commands counted {counted}, decided {own}", t.name);
    }
    drop(procs);
    drop(servers);
    let _ = std::fs::remove_dir_all(&dir);
}
