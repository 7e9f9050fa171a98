//! The ServiceTrade simulator over real HTTP: auth and session cap, the
//! envelope, paging, `updatedAfter`, admin clock events, webhooks with faults.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use geoclock::engine::Event;
use geoclock::model::{Id, User};
use geoclock::sim::fleet::{generate, FleetConfig};
use geoclock::sim::servicetrade::{Config, ServiceTradeSim};
use geoclock::sim::webhook::Faults;
use serde_json::{json, Value};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

fn call(a: &ureq::Agent, method: &str, url: &str, cookie: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let cookie = cookie.map(|c| format!("PHPSESSID={c}"));
    let resp = match (method, body) {
        ("GET", _) => {
            let mut r = a.get(url);
            if let Some(c) = &cookie {
                r = r.header("Cookie", c);
            }
            r.call()
        }
        ("DELETE", _) => {
            let mut r = a.delete(url);
            if let Some(c) = &cookie {
                r = r.header("Cookie", c);
            }
            r.call()
        }
        (_, body) => {
            let mut r = a.post(url);
            if let Some(c) = &cookie {
                r = r.header("Cookie", c);
            }
            r.header("Content-Type", "application/json").send(body.unwrap_or(Value::Null).to_string())
        }
    };
    let mut resp = resp.expect("answered");
    let status = resp.status().as_u16();
    let v = serde_json::from_str(&resp.body_mut().read_to_string().unwrap_or_default()).unwrap_or(Value::Null);
    (status, v)
}

fn login(a: &ureq::Agent, base: &str) -> String {
    let (s, v) = call(
        a,
        "POST",
        &format!("{base}/api/auth"),
        None,
        Some(json!({"username": "geoclock-admin", "password": "secret"})),
    );
    assert_eq!(s, 200, "{v}");
    v["data"]["authToken"].as_str().expect("token").to_string()
}

#[test]
fn auth_paging_updated_after_and_clock_creation() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let world = generate(&FleetConfig { technicians: 10, ..FleetConfig::default() });
    let config = Config { session_cap: 2, default_limit: 7, ..Config::default() };
    let (sim, running) = rt.block_on(ServiceTradeSim::start(config, &world, "127.0.0.1:0")).unwrap();
    let base = running.url();
    let a = agent();

    let (s, v) = call(&a, "GET", &format!("{base}/api/job"), None, None);
    assert_eq!(s, 401);
    assert!(v["messages"]["error"][0].as_str().is_some(), "{v}");
    let (s, _) = call(
        &a,
        "POST",
        &format!("{base}/api/auth"),
        None,
        Some(json!({"username": "geoclock-admin", "password": "no"})),
    );
    assert_eq!(s, 403);

    // Session cap 2: the third login drops the first session.
    let t1 = login(&a, &base);
    let t2 = login(&a, &base);
    let t3 = login(&a, &base);
    assert_eq!(call(&a, "GET", &format!("{base}/api/user"), Some(&t1), None).0, 401);
    assert_eq!(call(&a, "GET", &format!("{base}/api/user"), Some(&t2), None).0, 200);
    assert_eq!(call(&a, "DELETE", &format!("{base}/api/auth"), Some(&t2), None).0, 200);
    assert_eq!(call(&a, "GET", &format!("{base}/api/user"), Some(&t2), None).0, 401);

    // Paging.
    let mut ids = Vec::new();
    let mut page = 1;
    loop {
        let (s, v) = call(&a, "GET", &format!("{base}/api/appointment?page={page}"), Some(&t3), None);
        assert_eq!(s, 200);
        assert_eq!(v["messages"]["success"], json!([]));
        for item in v["data"]["appointments"].as_array().unwrap() {
            ids.push(item["id"].clone());
        }
        if page >= v["data"]["totalPages"].as_u64().unwrap() as usize {
            break;
        }
        page += 1;
    }
    assert_eq!(ids.len(), world.appointments.len());
    assert!(page > 1);

    // updatedAfter: nothing newer than now; a changed user appears.
    let now = chrono::Utc::now().timestamp();
    let (_, v) = call(&a, "GET", &format!("{base}/api/user?updatedAfter={now}"), Some(&t3), None);
    assert_eq!(v["data"]["users"], json!([]));
    std::thread::sleep(Duration::from_millis(1100));
    sim.apply(Event::User(User { id: Id::number(1003), name: "Renamed".into(), email: None, tech: true }), None)
        .unwrap();
    let (_, v) = call(&a, "GET", &format!("{base}/api/user?updatedAfter={now}"), Some(&t3), None);
    assert_eq!(v["data"]["users"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["data"]["users"][0]["name"], "Renamed");
    assert_eq!(call(&a, "GET", &format!("{base}/api/user?updatedAfter=x"), Some(&t3), None).0, 400);

    // The admin clocks a technician in On Site.
    let appt = &world.appointments[0];
    let body = json!({"userId": appt.techs[0], "appointmentId": appt.id, "activity": "onsite", "eventType": "in", "eventTime": now, "lat": 35.1, "lon": -80.9});
    let (s, v) = call(&a, "POST", &format!("{base}/api/clock"), Some(&t3), Some(body));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["activity"], "onsite");
    let (_, v) =
        call(&a, "GET", &format!("{base}/api/clock?appointmentId={}&activity=onsite", appt.id), Some(&t3), None);
    assert_eq!(v["data"]["clockEvents"].as_array().unwrap().len(), 1);
    assert_eq!(sim.calls().count("POST", "/api/clock"), 1);
    assert_eq!(call(&a, "GET", &format!("{base}/api/job/424242"), Some(&t3), None).0, 404);
    rt.block_on(running.stop());
}

#[test]
fn webhooks_are_batched_duplicated_and_retried_then_dropped() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let receiver = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let hook_url = format!("http://{}/hook", receiver.server_addr().to_ip().unwrap());
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let fail_all = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (got, fail_all) = (got.clone(), fail_all.clone());
        std::thread::spawn(move || {
            for mut req in receiver.incoming_requests() {
                let mut body = String::new();
                let _ = req.as_reader().read_to_string(&mut body);
                let status = if fail_all.load(std::sync::atomic::Ordering::SeqCst) { 500 } else { 200 };
                if status == 200 {
                    got.lock().unwrap().push(serde_json::from_str(&body).unwrap());
                }
                let _ = req.respond(tiny_http::Response::empty(status));
            }
        });
    }
    let faults = Faults { seed: 3, duplicate_rate: 0.3, max_batch: 4, retry_backoff_ms: 10, ..Faults::default() };
    let world = generate(&FleetConfig { technicians: 2, ..FleetConfig::default() });
    let (sim, running) =
        rt.block_on(ServiceTradeSim::start(Config { faults, ..Config::default() }, &world, "127.0.0.1:0")).unwrap();
    let a = agent();
    let t = login(&a, &running.url());
    let (s, _) = call(
        &a,
        "POST",
        &format!("{}/api/webhook", running.url()),
        Some(&t),
        Some(json!({"hookUrl": hook_url, "entityEvents": ["user"], "includeChangesets": true})),
    );
    assert_eq!(s, 200);
    for i in 0..40 {
        sim.apply(Event::User(User { id: Id::number(1000), name: format!("N{i}"), email: None, tech: true }), None)
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sim.outbox().idle() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = got.lock().unwrap().clone();
    let items: usize = got.iter().map(|m| m["data"].as_array().unwrap().len()).sum();
    assert!(items > 40, "duplicates were delivered: {items}");
    let ids: std::collections::HashSet<&str> = got.iter().map(|m| m["messageId"].as_str().unwrap()).collect();
    assert!(ids.len() < got.len(), "a message id was seen twice");
    let first = &got[0]["data"][0];
    assert_eq!(first["action"], "updated");
    assert_eq!(first["entity"]["type"], "user");
    let fields: Vec<&str> =
        first["changeset"].as_array().unwrap().iter().map(|c| c["field"].as_str().unwrap()).collect();
    assert!(fields.contains(&"name") && fields.contains(&"firstName"), "{fields:?}");

    // A receiver that always fails: 3 attempts, then the message is dropped.
    fail_all.store(true, std::sync::atomic::Ordering::SeqCst);
    sim.apply(Event::User(User { id: Id::number(1000), name: "Last".into(), email: None, tech: true }), None).unwrap();
    while !sim.outbox().idle() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let last = sim.outbox().deliveries().pop().unwrap();
    assert_eq!(last.attempts, 3);
    assert_eq!(serde_json::to_value(last.outcome).unwrap(), "failed");
    rt.block_on(running.stop());
}
