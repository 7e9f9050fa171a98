//! Offices and contacts end to end on a real broker (nisshi): a day with
//! two offices runs through the real processor; its Service Links go to
//! the locations' primary contacts (else the location's email) and are
//! mailed there by the real email sink (TrackMe links from the Azuga
//! simulator, SMTP to the mail receiver); `report serve` keeps one
//! office's rows with `?office=` (JSON, CSV, and a signed link scoped to
//! the office opens nothing else); the daily report goes to the tenant's
//! recipients with every row and to each office's recipients with only
//! that office's rows.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use geoclock::config::link;
use geoclock::config::secret::Secret;
use geoclock::config::tenants;
use geoclock::engine::Action;
use geoclock::kafka::topics::Topic;
use geoclock::scenario::kafka::ViaKafka;
use geoclock::scenario::Scenario;
use geoclock::sim::azuga::{self, AzugaSim};
use geoclock::sim::smtp::SmtpSim;
use geoclock::sim::world::World;
use geoclock::sink::runner::{Sink, SinkConfig};
use geoclock::sink::SinkKind;
use serde_json::Value;
use support::sinks::{tenant_toml, text};

const TOKEN: &str = "report-token-1";

/// North Office (101) serves Plant 7, whose primary contact is Pat; South
/// Office (102) serves Mill 2 (no contact: its own email) and Yard 3 (no
/// valid email at all). Every technician presses En Route before the
/// window of `day` (New York: 09:00 to 11:00, or 10:00 to 12:00 in summer).
fn scenario(day: NaiveDate) -> String {
    format!(
        r#"
tenant: acme
servicetrade:
  users:
    - {{id: 11, name: "Ann Lee", email: "ann@acme.example"}}
    - {{id: 12, name: "Bob Ray", email: "bob@acme.example"}}
    - {{id: 13, name: "Cy Dunn", email: "cy@acme.example"}}
  offices: [{{id: 101, name: "North Office"}}, {{id: 102, name: "South Office"}}]
  contacts: [{{id: 31, name: "Pat Green", email: "pat.green@plant.example", locations: [5]}}]
  locations:
    - {{id: 5, name: "Plant 7", lat: 35.2271, lon: -80.8431, email: "fm@plant.example", primary_contact: 31, offices: [101]}}
    - {{id: 6, name: "Mill 2", lat: 35.3000, lon: -80.7000, email: "ops@mill.example", offices: [102]}}
    - {{id: 7, name: "Yard 3", lat: 35.1000, lon: -80.9000, email: "yard", offices: [102]}}
  jobs: [{{id: 900, number: "J-1001", location: 5}}, {{id: 901, number: "J-1002", location: 6}}, {{id: 902, number: "J-1003", location: 7}}]
  appointments:
    - {{id: 7001, job: 900, status: scheduled, window_start: "{day}T14:00:00Z", window_end: "{day}T16:00:00Z", techs: [11]}}
    - {{id: 7002, job: 901, status: scheduled, window_start: "{day}T14:00:00Z", window_end: "{day}T16:00:00Z", techs: [12]}}
    - {{id: 7003, job: 902, status: scheduled, window_start: "{day}T14:00:00Z", window_end: "{day}T16:00:00Z", techs: [13]}}
azuga:
  drivers:
    - {{id: d1, name: "Ann Lee", email: "ann@acme.example"}}
    - {{id: d2, name: "Bob Ray", email: "bob@acme.example"}}
    - {{id: d3, name: "Cy Dunn", email: "cy@acme.example"}}
  vehicles: [{{id: v1, name: "Truck 1"}}, {{id: v2, name: "Van 2"}}, {{id: v3, name: "Van 3"}}]
  pairings:
    - {{driver: d1, vehicle: v1, from: "{day}T00:00:00Z"}}
    - {{driver: d2, vehicle: v2, from: "{day}T00:00:00Z"}}
    - {{driver: d3, vehicle: v3, from: "{day}T00:00:00Z"}}
events:
  - clock: {{user: 11, appointment: 7001, activity: enroute, action: in, time: "{day}T13:10:00Z"}}
  - clock: {{user: 12, appointment: 7002, activity: enroute, action: in, time: "{day}T13:10:00Z"}}
  - clock: {{user: 13, appointment: 7003, activity: enroute, action: in, time: "{day}T13:10:00Z"}}
"#
    )
}

fn get(url: &str, bearer: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut req = agent.get(url);
    if let Some(t) = bearer {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut r = req.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let body = r.body_mut().read_to_string().unwrap_or_default();
    (r.status().as_u16(), body)
}

fn rows(url: &str) -> Value {
    let (status, body) = get(url, Some(TOKEN));
    assert_eq!(status, 200, "{url}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

/// `(appointment, office, office name)` of each row.
fn offices(rows: &Value) -> BTreeSet<(String, String, String)> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| (text(&r["appointment"]), text(&r["office"]), text(&r["office_name"])))
        .collect()
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn service_links_go_to_primary_contacts_and_each_office_gets_only_its_rows() {
    let _ = tracing_subscriber::fmt().with_env_filter("info,librdkafka=warn").with_test_writer().try_init();
    let world = support::world("offices", 2);
    let scratch = world.scratch.clone();
    // The day the email sink's daily report is due for now.
    let day = geoclock::sink::daily::due_day(geoclock::sink::now(), Some("America/New_York"));
    let sc = Scenario::from_yaml(&scenario(day), "offices.yaml").unwrap();

    // The processor: the Service Links' recipients come from the mirrored
    // contacts (topics servicetrade.offices and servicetrade.contacts).
    let opts = ViaKafka {
        brokers: world.broker.bootstrap(),
        partitions: world.catalogue.partitions,
        timeout: Duration::from_secs(90),
        state_dir: Some(scratch.join("processor")),
    };
    let out = sc.run_via_kafka_on(&opts, &world.catalogue, world.registry.clone()).expect("through the processor");
    let links: BTreeMap<String, String> = out
        .commands
        .iter()
        .filter_map(|c| match &c.action {
            Action::SendServiceLink(l) => Some((c.appointment.to_string(), l.to.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        links,
        BTreeMap::from([
            ("7001".to_string(), "pat.green@plant.example".to_string()),
            ("7002".to_string(), "ops@mill.example".to_string()),
        ]),
        "Plant 7 to its primary contact, Mill 2 to its own email, Yard 3 to nobody"
    );
    let yard = out.report.iter().find(|r| r.appointment.to_string() == "7003").expect("Yard 3's row");
    assert!(yard.failures.iter().any(|f| f.code() == "no_contact_email"), "{:?}", yard.failures);

    // The tenant: every row to ops, each office's rows to its own people.
    let smtp = world.rt.block_on(SmtpSim::start("127.0.0.1:0", "127.0.0.1:0")).expect("mail receiver");
    let (_az, az_run) = world
        .rt
        .block_on(AzugaSim::start(
            azuga::Config { rate_limit_ms: 0, ..azuga::Config::default() },
            &World::from_scenario(&sc),
            "127.0.0.1:0",
        ))
        .expect("azuga sim");
    let email = format!(
        "from = \"Acme Field Service <service@acme.example>\"\nreport_recipients = [\"ops@acme.example\"]\nreport_token = {{ value = \"{TOKEN}\" }}\n[tenants.email.office_report_recipients]\n\"101\" = [\"north@acme.example\"]\n\"102\" = [\"south@acme.example\", \"south.lead@acme.example\"]\n"
    );
    let toml = tenant_toml("acme", "http://127.0.0.1:9", &az_run.url(), &smtp.smtp_addr.to_string(), 0, &email);
    let tenants = tenants::parse(&toml, "offices.toml").expect("tenants");

    // The report: every row names its office; ?office= keeps one office's.
    let server = world.report_server(tenants.clone(), &scratch.join("report"), "127.0.0.1:0");
    let base = format!("{}/report/acme", server.url());
    let all_url = format!("{base}?format=json&day={day}");
    wait_until("the report to show the day's three rows", Duration::from_secs(60), || {
        server.ready() && get(&all_url, Some(TOKEN)).1.matches("\"appointment\"").count() == 3
    });
    let north = (String::from("101"), String::from("North Office"));
    let south = (String::from("102"), String::from("South Office"));
    let row = |appt: &str, (o, n): &(String, String)| (appt.to_string(), o.clone(), n.clone());
    assert_eq!(
        offices(&rows(&all_url)),
        BTreeSet::from([row("7001", &north), row("7002", &south), row("7003", &south)])
    );
    assert_eq!(offices(&rows(&format!("{all_url}&office=101"))), BTreeSet::from([row("7001", &north)]));
    assert_eq!(
        offices(&rows(&format!("{all_url}&office=102"))),
        BTreeSet::from([row("7002", &south), row("7003", &south)])
    );
    assert_eq!(rows(&format!("{all_url}&office=999")), Value::Array(vec![]));
    let (status, csv) = get(&format!("{base}.csv?day={day}&office=101"), Some(TOKEN));
    assert_eq!(status, 200);
    let records: Vec<&str> = csv.split_terminator("\r\n").collect();
    assert_eq!(records.len(), 2, "header and North's one row: {csv}");
    assert!(records[1].starts_with("7001,") && records[1].contains(",101,North Office,"), "{csv}");

    // A link signed for North's rows opens them, and nothing else.
    let expires = chrono::Utc::now().timestamp() + 3600;
    let scope = link::office_report_scope(&day.to_string(), "101");
    let signed = link::query(&Secret::new(TOKEN), "acme", &scope, expires);
    let (status, page) = get(&format!("{base}?day={day}&office=101&{signed}"), None);
    assert_eq!(status, 200);
    assert_eq!(page.matches("<tr").count(), 1 + 1, "North's one row");
    assert_eq!(get(&format!("{base}?day={day}&{signed}"), None).0, 401, "not the whole day");
    assert_eq!(get(&format!("{base}?day={day}&office=102&{signed}"), None).0, 401, "not South's");
    let why = |appt: &str| format!("{base}/explain/{appt}?day={day}&office=101&format=json&{signed}");
    assert_eq!(get(&why("7001"), None).0, 200, "North's explanation");
    assert_eq!(get(&why("7002"), None).0, 404, "South's appointment is not North's to see");

    // The email sink: Service Links to the contacts, and the daily reports.
    let mut config = SinkConfig::new(
        SinkKind::Email,
        world.broker.brokers(),
        world.catalogue.clone(),
        scratch.join("sink"),
        tenants,
        world.registry.clone(),
    );
    config.report_url = Some(server.url());
    let results_topic = world.catalogue.name(Topic::Results);
    let results = support::kafka::tail(world.broker.brokers(), &[results_topic], world.catalogue.partitions);
    let sink = Sink::start(config).expect("email sink");
    let deadline = Instant::now() + Duration::from_secs(90);
    while smtp.mailbox.mails().len() < 5 {
        if Instant::now() > deadline {
            let outcomes: Vec<String> = results
                .lock()
                .unwrap()
                .iter()
                .filter_map(|(_, _, v)| world.codec.decode_result(v.as_deref()?).ok())
                .map(|(_, r)| format!("{} {} {:?} {}", r.kind, r.appointment, r.outcome, r.reason))
                .collect();
            panic!(
                "2 Service Links and 3 daily reports not mailed: {:#?}\nresults: {outcomes:#?}",
                smtp.mailbox.mails()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    sink.stop().expect("clean stop");
    let mails = smtp.mailbox.mails();
    assert_eq!(mails.len(), 5, "{mails:#?}");
    let to = |m: &geoclock::sim::smtp::Mail| m.to.join(",");
    let link_to: BTreeSet<String> =
        mails.iter().filter(|m| !m.subject.starts_with("Activity Report")).map(to).collect();
    assert_eq!(link_to, BTreeSet::from(["ops@mill.example".to_string(), "pat.green@plant.example".to_string()]));
    let reports: BTreeMap<String, &geoclock::sim::smtp::Mail> =
        mails.iter().filter(|m| m.subject.starts_with("Activity Report")).map(|m| (to(m), m)).collect();
    assert_eq!(
        reports.keys().cloned().collect::<Vec<_>>(),
        vec!["north@acme.example", "ops@acme.example", "south@acme.example,south.lead@acme.example"],
        "one report per audience, each to its own recipients only"
    );
    let subject = |who: &str| reports[who].subject.clone();
    assert!(subject("ops@acme.example").starts_with(&format!("Activity Report acme {day}: 3 appointments")));
    assert!(subject("north@acme.example")
        .starts_with(&format!("Activity Report acme - North Office {day}: 1 appointments")));
    let south_subject = subject("south@acme.example,south.lead@acme.example");
    assert!(
        south_subject.starts_with(&format!("Activity Report acme - South Office {day}: 2 appointments")),
        "{south_subject}"
    );
    let north_mail = reports["north@acme.example"];
    assert!(
        north_mail.text.contains("&office=101&format=html&expires="),
        "North's link is North's: {}",
        north_mail.text
    );
    assert!(north_mail.raw.contains(&format!("activity-report-acme-{day}-office-101.csv")), "its own CSV");
    assert!(!reports["ops@acme.example"].text.contains("office="), "the whole day's link");
    let _ = std::fs::remove_dir_all(&scratch);
}
