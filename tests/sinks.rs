//! The sinks against the simulators, a real SMTP receiver and a real broker:
//! each effect exactly once, through duplicates, SIGKILLs, 500s and 429s,
//! and never above Azuga's rate limit.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use geoclock::engine::command::command_id;
use geoclock::engine::{Action, Command, FenceChange};
use geoclock::geo::{LatLon, Shape};
use geoclock::kafka::records::Outcome;
use geoclock::kafka::topics::{self, Topic};
use geoclock::sink::runner::Sink;
use geoclock::sink::SinkKind;
use support::kafka::produce;
use support::sinks::*;

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
    let st_url = rig.st_url().to_string();
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
    let az_url = rig.az_url().to_string();
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
            "window in the location's zone, else the tenant's: {}",
            m.text
        );
        assert!(m.from.contains("service@acme.example"));
        let from_header = m.raw.lines().find(|l| l.starts_with("From: ")).unwrap_or_default();
        assert!(
            from_header.contains("Dana Whitfield") && from_header.contains("<service@acme.example>"),
            "sent in the activating admin's name: {from_header}"
        );
        let st_link = format!("https://app.servicetrade.com/servicelink/{}", c.appointment);
        assert!(m.text.contains(&st_link) && m.html.contains(&st_link), "ServiceTrade's Service Link: {}", m.text);
        let held = trackme.iter().find(|t| t["url"] == serde_json::json!(url)).expect("the TrackMe link");
        assert_eq!(held["destLatitude"].is_null(), l.destination.is_none(), "a destination only when known: {held}");
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
