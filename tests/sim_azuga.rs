//! The Azuga simulator over real HTTP: auth, the per-call rate limit,
//! geomarks, TrackMe, live locations and GPS_MESSAGE webhooks.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use geoclock::model::Ts;
use geoclock::sim::azuga::{AzugaSim, Config};
use geoclock::sim::fleet::{generate, FleetConfig};
use serde_json::{json, Value};

fn basic() -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("azuga-key:"))
}

fn call(method: &str, url: &str, auth: Option<&str>, body: Option<Value>) -> (u16, Option<String>, Value) {
    let a: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let resp = match method {
        "GET" => {
            let mut r = a.get(url);
            if let Some(x) = auth {
                r = r.header("Authorization", x);
            }
            r.call()
        }
        m => {
            let mut r = match m {
                "PUT" => a.put(url),
                "DELETE" => a.delete(url).force_send_body(),
                _ => a.post(url),
            };
            if let Some(x) = auth {
                r = r.header("Authorization", x);
            }
            r.header("Content-Type", "application/json").send(body.unwrap_or(Value::Null).to_string())
        }
    };
    let mut resp = resp.expect("answered");
    let retry = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    let status = resp.status().as_u16();
    let v = serde_json::from_str(&resp.body_mut().read_to_string().unwrap_or_default()).unwrap_or(Value::Null);
    (status, retry, v)
}

#[test]
fn auth_rate_limit_geomarks_trackme() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let world = generate(&FleetConfig { technicians: 3, ..FleetConfig::default() });
    let config = Config { rate_limit_ms: 1500, ..Config::default() };
    let (sim, running) = rt.block_on(AzugaSim::start(config, &world, "127.0.0.1:0")).unwrap();
    let base = running.url();
    let key = basic();

    assert_eq!(call("GET", &format!("{base}/v3/users?userType=driver"), None, None).0, 401);
    assert_eq!(call("GET", &format!("{base}/v3/users?userType=driver"), Some("Basic eDp5"), None).0, 401);
    let (s, _, v) = call("GET", &format!("{base}/v3/users?userType=driver"), Some(&key), None);
    assert_eq!(s, 200);
    assert_eq!(v["data"].as_array().unwrap().len(), 3);
    assert!(v["data"][1]["email"].as_str().unwrap().contains('@'));
    // Repeated within the budget: 429 with Retry-After; another call is fine.
    let (s, retry, _) = call("GET", &format!("{base}/v3/users?userType=driver"), Some(&key), None);
    assert_eq!(s, 429);
    assert_eq!(retry.as_deref(), Some("2"));
    assert_eq!(call("GET", &format!("{base}/v1/pairings"), Some(&key), None).0, 200);
    // Bearer login is its own principal.
    let (_, _, v) = call(
        "POST",
        &format!("{base}/v3/auth/login"),
        None,
        Some(json!({"username": "fleet-admin", "password": "secret"})),
    );
    let bearer = format!("Bearer {}", v["data"]["access_token"].as_str().unwrap());
    assert_eq!(call("GET", &format!("{base}/v3/users?userType=driver"), Some(&bearer), None).0, 200);
    std::thread::sleep(Duration::from_millis(1600));
    assert_eq!(call("GET", &format!("{base}/v3/users?userType=driver"), Some(&key), None).0, 200);

    // Geomarks: bulk create, radius over 10 miles refused, delete.
    let g = |name: &str, r: f64| json!({"name": name, "latitude": 35.2, "longitude": -80.8, "fenceType": "Circular", "geofenceRadius": r, "radiusUnit": "meters", "alertType": "both", "trackeeIds": ["veh-000"]});
    let (s, _, v) =
        call("POST", &format!("{base}/v1/geomarks"), Some(&key), Some(json!([g("a", 200.0), g("b", 300.0)])));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    std::thread::sleep(Duration::from_millis(1600));
    let (s, _, _) = call("POST", &format!("{base}/v1/geomarks"), Some(&key), Some(json!([g("c", 20000.0)])));
    assert_eq!(s, 400);
    let (s, _, v) = call("DELETE", &format!("{base}/v1/geomarks"), Some(&key), Some(json!({"ids": [1]})));
    assert_eq!(s, 200, "{v}");
    assert_eq!(sim.snapshot().geomarks.len(), 1);

    let t = json!({"latitude": 35.2, "longitude": -80.8, "destLatitude": 35.3, "destLongitude": -80.9, "vehicleId": "veh-001", "userId": "drv-001", "ttl": 3600, "message": "on the way"});
    let (s, _, v) = call("POST", &format!("{base}/v1/trackme"), Some(&key), Some(t));
    assert_eq!(s, 200, "{v}");
    assert!(v["data"]["url"].as_str().unwrap().ends_with(v["data"]["token"].as_str().unwrap()));
    assert_eq!(sim.calls().count("POST", "/v1/trackme"), 1);
    rt.block_on(running.stop());
}

#[test]
fn gps_messages_follow_the_released_fixes() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let receiver = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let hook_url = format!("http://{}/hook", receiver.server_addr().to_ip().unwrap());
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    {
        let got = got.clone();
        std::thread::spawn(move || {
            for mut req in receiver.incoming_requests() {
                let mut body = String::new();
                let _ = req.as_reader().read_to_string(&mut body);
                if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(&body) {
                    got.lock().unwrap().extend(items);
                }
                let _ = req.respond(tiny_http::Response::empty(200));
            }
        });
    }
    let world =
        generate(&FleetConfig { technicians: 2, duplicate_rate: 0.0, late_rate: 0.0, ..FleetConfig::default() });
    let (sim, running) =
        rt.block_on(AzugaSim::start(Config { rate_limit_ms: 0, ..Config::default() }, &world, "127.0.0.1:0")).unwrap();
    let (s, _, _) = call(
        "POST",
        &format!("{}/v1/webhooks", running.url()),
        Some(&basic()),
        Some(json!({"url": hook_url, "eventTypes": ["GPS_MESSAGE"]})),
    );
    assert_eq!(s, 200);
    let mid = world.pings[world.pings.len() / 2].release_at;
    let n = sim.advance(mid);
    assert!(n > 10);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sim.outbox().idle() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), n);
    assert_eq!(got[0]["eventType"], "GPS_MESSAGE");
    assert!(got.iter().all(|m| m["locationTime"].as_i64().unwrap() <= mid.millis()));
    let (_, _, v) = call("GET", &format!("{}/v1/live-locations", running.url()), Some(&basic()), None);
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert!(v["data"][0]["user"]["userId"].is_string());
    assert_eq!(sim.snapshot().served_live.len(), 2);
    assert!(sim.snapshot().now == Some(mid) && mid > Ts(0));
    rt.block_on(running.stop());
}
