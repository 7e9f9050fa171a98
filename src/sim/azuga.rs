//! The Azuga simulator: drivers, vehicles, pairings, live locations,
//! geomarks, TrackMe links and `GPS_MESSAGE` webhooks, as design §3 says.
//!
//! - Auth: v1 `Authorization: Basic base64(apiKey:)`; v3 bearer tokens from
//!   `POST /v3/auth/login {username, password}` (`data.access_token`).
//!   Anything else: 401.
//! - Rate limit: one request per API call (method + path) per principal per
//!   `rate_limit_ms` (Azuga documents 1/min); a repeat within the budget is
//!   answered 429 with `Retry-After` (whole seconds, at least 1) and does not
//!   reset the budget. Login is not limited.
//! - `GET /v3/users?userType=driver` → `{data:[{id, firstName, lastName,
//!   email, timeZone}]}`; `GET /v1/vehicles`; `GET /v1/drivers` (v1 view with
//!   `trackeeId`, the paired vehicle); `GET /v1/pairings` → `{vehicleId,
//!   driverId, fromDate, toDate}` (ms); `GET /v1/live-locations` → the latest
//!   released fix per vehicle `{vehicleId, vehicleName, date, speed,
//!   latitude, longitude, user{userId, fullName}}`;
//!   `GET /v1/location-history?fromDate=&toDate=` (ms, `fromDate <=
//!   date < toDate`; inferred, like Azuga's breadcrumb report) → every
//!   released fix of the account in that range, once each, in time order,
//!   same item shape.
//! - Geomarks: `GET /v1/geomarks` (all, with `id`), `POST /v1/geomarks`
//!   (bulk create), `PUT /v1/geomarks` (bulk update, items carry `id`),
//!   `DELETE /v1/geomarks {ids}`; radius at most
//!   10 miles; `fenceType` `Circular`.
//! - TrackMe: `POST /v1/trackme {latitude, longitude, destLatitude,
//!   destLongitude, vehicleId, userId, ttl, message}` → `{token, url}`
//!   (coordinates optional: without them the link shows the vehicle only);
//!   `GET /v1/trackme[?vehicleId=]` lists live links (with `createdAt`,
//!   `expiresAt`); `PUT /v1/trackme/{token}` keeps it alive.
//! - Webhooks: `POST /v1/webhooks {url, eventTypes, authorization, headers}`; GPS
//!   messages go out as a JSON array of `GPS_MESSAGE` objects through an
//!   [`Outbox`] with the configured faults.
//! - Time: pings are held with a release time and released by
//!   `POST /admin/advance {to}` (RFC 3339 or ms): released fixes update live
//!   locations and are queued for the webhooks, in release order.
//! - Admin (no auth, no rate limit, not in the call log): `POST /admin/events`
//!   (driver/vehicle/pairing upserts and deletes; a ping is released now),
//!   `POST /admin/advance`, `GET /admin/state`, `GET /admin/calls`,
//!   `GET /admin/deliveries`, `GET /admin/outbox`.

// Handlers return a ready HTTP answer as their early-exit error; boxing it
// would only add noise to every handler.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::calls::CallLog;
use super::rng::Rng;
use super::server::{admin_error, log_calls, one_or_many, serve, shared_admin, Running};
use super::webhook::{Faults, HookAuth, Item, Outbox};
use super::world::{ScheduledPing, World};
use super::SimError;
use crate::engine::{EntityRef, Event};
use crate::model::{Driver, Id, Pairing, Ping, Ts, Vehicle};
use crate::vendor::azuga::rules::check_geomark;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub api_keys: Vec<String>,
    /// `(username, password)` pairs for the v3 bearer login.
    pub logins: Vec<(String, String)>,
    /// Budget per API call per principal (Azuga: 60 000).
    pub rate_limit_ms: u64,
    pub faults: Faults,
    /// Azuga's clock minus the real one, as its `Date` header shows it (a
    /// client whose own clock is slow sees Azuga ahead).
    pub clock_offset_ms: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            api_keys: vec!["azuga-key".into()],
            logins: vec![("fleet-admin".into(), "secret".into())],
            rate_limit_ms: 60_000,
            faults: Faults::default(),
            clock_offset_ms: 0,
        }
    }
}

/// What the simulator holds (for tests and `/admin/state`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub drivers: Vec<Driver>,
    pub vehicles: Vec<Vehicle>,
    pub pairings: Vec<Pairing>,
    /// Every released fix, in release order (duplicates included).
    pub released: Vec<Ping>,
    /// Fixes held for later release.
    pub held: usize,
    /// Fixes returned by `GET /v1/live-locations` at least once.
    pub served_live: Vec<Ping>,
    pub geomarks: Vec<Value>,
    pub trackme: Vec<Value>,
    pub now: Option<Ts>,
}

#[derive(Default)]
struct Data {
    drivers: BTreeMap<Id, Driver>,
    vehicles: BTreeMap<Id, Vehicle>,
    pairings: Vec<Pairing>,
    schedule: Vec<ScheduledPing>,
    next: usize,
    now: Option<Ts>,
    live: BTreeMap<Id, Ping>,
    released: Vec<Ping>,
    served_live: Vec<Ping>,
    served_keys: HashSet<(Id, Ts)>,
    geomarks: BTreeMap<u64, Value>,
    trackme: BTreeMap<String, Value>,
    bearer: HashMap<String, String>,
    last_call: HashMap<(String, String), Instant>,
}

pub struct AzugaSim {
    config: Config,
    data: Mutex<Data>,
    rng: Mutex<Rng>,
    outbox: Outbox,
    calls: Arc<CallLog>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn fail(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"status": status.as_u16(), "error": message.into()}))).into_response()
}

fn data(v: Value) -> Response {
    Json(json!({"status": 200, "data": v})).into_response()
}

fn split_name(name: &str) -> (&str, &str) {
    name.trim().split_once(' ').unwrap_or((name.trim(), ""))
}

impl Data {
    fn paired_driver(&self, vehicle: &Id, at: Ts) -> Option<&Driver> {
        self.pairings
            .iter()
            .filter(|p| &p.vehicle == vehicle && p.from <= at && p.to.is_none_or(|t| at < t))
            .max_by_key(|p| p.from)
            .and_then(|p| self.drivers.get(&p.driver))
    }

    /// A live-location (or location-history) item.
    fn location_item(&self, p: &Ping) -> Value {
        let driver = self.paired_driver(&p.vehicle, p.time).map(|x| json!({"userId": x.id, "fullName": x.name}));
        let name = self.vehicles.get(&p.vehicle).map(|v| v.name.clone());
        json!({
            "vehicleId": p.vehicle, "vehicleName": name, "date": p.time.millis(), "speed": p.speed_mph,
            "latitude": p.lat, "longitude": p.lon, "user": driver,
        })
    }

    fn gps_message(&self, p: &Ping) -> Value {
        let driver = self.paired_driver(&p.vehicle, p.time);
        let speed = p.speed_mph.unwrap_or(0.0);
        json!({
            "eventType": "GPS_MESSAGE", "vehicleId": p.vehicle, "userId": driver.map(|d| d.id.clone()),
            "deviceSerial": format!("SN-{}", p.vehicle), "latitude": p.lat, "longitude": p.lon,
            "speed": p.speed_mph, "locationTime": p.time.millis(),
            "tripState": if speed > 0.0 { "IN_TRIP" } else { "STOPPED" },
        })
    }

    /// Releases one fix: live location, and the message to send.
    fn release(&mut self, p: Ping) -> Value {
        if self.live.get(&p.vehicle).is_none_or(|l| l.time <= p.time) {
            self.live.insert(p.vehicle.clone(), p.clone());
        }
        let msg = self.gps_message(&p);
        self.released.push(p);
        msg
    }
}

impl AzugaSim {
    /// A simulator holding `world`'s Azuga side. Needs a tokio runtime.
    pub fn new(config: Config, world: &World) -> Arc<AzugaSim> {
        let outbox =
            Outbox::start(config.faults.clone(), "az", Arc::new(|_id: &str, items: Vec<Value>| Value::Array(items)));
        let mut d = Data::default();
        for x in &world.drivers {
            d.drivers.insert(x.id.clone(), x.clone());
        }
        for x in &world.vehicles {
            d.vehicles.insert(x.id.clone(), x.clone());
        }
        d.pairings = world.pairings.clone();
        d.schedule = world.pings.clone();
        d.schedule.sort_by_key(|p| p.release_at);
        Arc::new(AzugaSim {
            rng: Mutex::new(Rng::new(config.faults.seed ^ 0xa2)),
            config,
            data: Mutex::new(d),
            outbox,
            calls: Arc::new(CallLog::default()),
        })
    }

    pub async fn start(config: Config, world: &World, listen: &str) -> Result<(Arc<AzugaSim>, Running), SimError> {
        let sim = AzugaSim::new(config, world);
        let running = serve(sim.router(), listen).await?;
        tracing::info!(addr = %running.addr, "azuga simulator listening");
        Ok((sim, running))
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v3/auth/login", post(login))
            .route("/v3/users", get(users))
            .route("/v1/vehicles", get(vehicles))
            .route("/v1/drivers", get(drivers_v1))
            .route("/v1/pairings", get(pairings))
            .route("/v1/live-locations", get(live_locations))
            .route("/v1/location-history", get(location_history))
            .route(
                "/v1/geomarks",
                get(geomarks_list).post(geomarks_create).put(geomarks_update).delete(geomarks_delete),
            )
            .route("/v1/trackme", post(trackme_create).get(trackme_list))
            .route("/v1/trackme/{token}", put(trackme_keepalive))
            .route("/v1/webhooks", post(add_webhook))
            .route("/admin/events", post(admin_events))
            .route("/admin/advance", post(admin_advance))
            .route("/admin/state", get(|s: State<Arc<Self>>| async move { Json(s.snapshot()) }))
            .layer(axum::middleware::from_fn_with_state(self.calls.clone(), log_calls))
            .layer(axum::middleware::from_fn_with_state(self.config.clock_offset_ms, date_header))
            .with_state(self.clone())
            .merge(shared_admin(self.calls.clone(), self.outbox.clone()))
    }

    pub fn snapshot(&self) -> Snapshot {
        let d = lock(&self.data);
        Snapshot {
            drivers: d.drivers.values().cloned().collect(),
            vehicles: d.vehicles.values().cloned().collect(),
            pairings: d.pairings.clone(),
            released: d.released.clone(),
            held: d.schedule.len() - d.next,
            served_live: d.served_live.clone(),
            geomarks: d.geomarks.values().cloned().collect(),
            trackme: d.trackme.values().cloned().collect(),
            now: d.now,
        }
    }

    pub fn calls(&self) -> &CallLog {
        &self.calls
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Releases every held fix with `release_at <= to`; returns how many.
    pub fn advance(&self, to: Ts) -> usize {
        let messages = {
            let mut d = lock(&self.data);
            d.now = Some(d.now.map_or(to, |n| n.max(to)));
            let mut out = Vec::new();
            while d.next < d.schedule.len() && d.schedule[d.next].release_at <= to {
                let p = d.schedule[d.next].ping.clone();
                d.next += 1;
                let key = format!("{}@{}", p.vehicle, p.time.millis());
                out.push((key, d.release(p)));
            }
            out
        };
        let n = messages.len();
        self.send(messages);
        n
    }

    fn send(&self, messages: Vec<(String, Value)>) {
        if !self.outbox.has_hooks() {
            return;
        }
        for (key, value) in messages {
            self.outbox.enqueue(Item { key, value });
        }
    }

    /// Admin change: driver/vehicle/pairing upserts and deletes; a ping is
    /// released at once.
    pub fn apply(&self, event: Event) -> Result<(), String> {
        let mut d = lock(&self.data);
        match event {
            Event::Driver(x) => {
                d.drivers.insert(x.id.clone(), x);
            }
            Event::Vehicle(x) => {
                d.vehicles.insert(x.id.clone(), x);
            }
            Event::Pairing(p) => {
                match d.pairings.iter_mut().find(|q| q.driver == p.driver && q.vehicle == p.vehicle && q.from == p.from)
                {
                    Some(q) => *q = p,
                    None => d.pairings.push(p),
                }
            }
            Event::Delete(EntityRef::Driver(id)) => {
                d.drivers.remove(&id);
            }
            Event::Delete(EntityRef::Vehicle(id)) => {
                d.vehicles.remove(&id);
            }
            Event::Delete(EntityRef::Pairing { driver, vehicle, from }) => {
                d.pairings.retain(|p| !(p.driver == driver && p.vehicle == vehicle && p.from == from))
            }
            Event::Ping(p) => {
                let key = format!("{}@{}", p.vehicle, p.time.millis());
                let msg = d.release(p);
                drop(d);
                self.send(vec![(key, msg)]);
            }
            other => return Err(format!("{} is not an Azuga entity", other.kind())),
        }
        Ok(())
    }

    /// Authenticates and applies the rate limit for `call`.
    fn guard(&self, headers: &HeaderMap, call: &str) -> Result<(), Response> {
        let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        let principal = if let Some(b) = auth.strip_prefix("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD.decode(b.trim()).ok();
            let text = decoded.and_then(|d| String::from_utf8(d).ok()).unwrap_or_default();
            let key = text.split(':').next().unwrap_or("").to_string();
            self.config.api_keys.contains(&key).then(|| format!("key:{key}"))
        } else if let Some(t) = auth.strip_prefix("Bearer ") {
            lock(&self.data).bearer.get(t.trim()).map(|u| format!("user:{u}"))
        } else {
            None
        };
        let Some(principal) = principal else {
            return Err(fail(StatusCode::UNAUTHORIZED, "invalid or missing credentials"));
        };
        let budget = Duration::from_millis(self.config.rate_limit_ms);
        let mut d = lock(&self.data);
        let now = Instant::now();
        let slot = (principal, call.to_string());
        if let Some(last) = d.last_call.get(&slot) {
            let since = now.duration_since(*last);
            if since < budget {
                self.calls.note_rate_limited();
                let wait_s = (budget - since).as_secs_f64().ceil().max(1.0) as u64;
                let mut r = fail(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("rate limit: one {call} per {} ms", budget.as_millis()),
                );
                if let Ok(v) = wait_s.to_string().parse() {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return Err(r);
            }
        }
        d.last_call.insert(slot, now);
        Ok(())
    }
}

#[derive(Deserialize)]
struct Login {
    username: String,
    password: String,
}

/// Sets the `Date` header from Azuga's clock (the real one plus the offset).
async fn date_header(
    State(offset_ms): State<i64>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut resp = next.run(req).await;
    super::server::set_date(&mut resp, super::server::now_ms() + offset_ms);
    resp
}

async fn login(State(sim): State<Arc<AzugaSim>>, body: Bytes) -> Response {
    let Ok(l) = serde_json::from_slice::<Login>(&body) else {
        return fail(StatusCode::BAD_REQUEST, "expected {username, password}");
    };
    if !sim.config.logins.iter().any(|(u, p)| u == &l.username && p == &l.password) {
        return fail(StatusCode::UNAUTHORIZED, "invalid username or password");
    }
    let token = {
        let mut r = lock(&sim.rng);
        format!("jwt.{:016x}{:016x}", r.next_u64(), r.next_u64())
    };
    lock(&sim.data).bearer.insert(token.clone(), l.username);
    data(json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600}))
}

async fn users(
    State(sim): State<Arc<AzugaSim>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = sim.guard(&headers, "GET /v3/users") {
        return r;
    }
    if q.get("userType").is_some_and(|t| t != "driver") {
        return data(json!([]));
    }
    let d = lock(&sim.data);
    let list: Vec<Value> = d
        .drivers
        .values()
        .map(|x| {
            let (first, last) = split_name(&x.name);
            json!({"id": x.id, "firstName": first, "lastName": last, "fullName": x.name, "email": x.email, "timeZone": "UTC", "userType": "driver"})
        })
        .collect();
    data(Value::Array(list))
}

async fn vehicles(State(sim): State<Arc<AzugaSim>>, headers: HeaderMap) -> Response {
    if let Err(r) = sim.guard(&headers, "GET /v1/vehicles") {
        return r;
    }
    let d = lock(&sim.data);
    let list: Vec<Value> = d.vehicles.values().map(|v| json!({"id": v.id, "name": v.name})).collect();
    data(Value::Array(list))
}

async fn drivers_v1(State(sim): State<Arc<AzugaSim>>, headers: HeaderMap) -> Response {
    if let Err(r) = sim.guard(&headers, "GET /v1/drivers") {
        return r;
    }
    let d = lock(&sim.data);
    let now = d.now.unwrap_or(Ts(i64::MAX));
    let list: Vec<Value> = d
        .drivers
        .values()
        .map(|x| {
            let trackee = d
                .pairings
                .iter()
                .filter(|p| p.driver == x.id && p.from <= now && p.to.is_none_or(|t| now < t))
                .max_by_key(|p| p.from)
                .map(|p| p.vehicle.clone());
            json!({"id": x.id, "name": x.name, "email": x.email, "trackeeId": trackee})
        })
        .collect();
    data(Value::Array(list))
}

async fn pairings(State(sim): State<Arc<AzugaSim>>, headers: HeaderMap) -> Response {
    if let Err(r) = sim.guard(&headers, "GET /v1/pairings") {
        return r;
    }
    let d = lock(&sim.data);
    let list: Vec<Value> = d
        .pairings
        .iter()
        .map(|p| json!({"driverId": p.driver, "vehicleId": p.vehicle, "fromDate": p.from.millis(), "toDate": p.to.map(Ts::millis)}))
        .collect();
    data(Value::Array(list))
}

async fn live_locations(State(sim): State<Arc<AzugaSim>>, headers: HeaderMap) -> Response {
    if let Err(r) = sim.guard(&headers, "GET /v1/live-locations") {
        return r;
    }
    let mut d = lock(&sim.data);
    let live: Vec<Ping> = d.live.values().cloned().collect();
    let mut list = Vec::with_capacity(live.len());
    for p in live {
        list.push(d.location_item(&p));
        if d.served_keys.insert((p.vehicle.clone(), p.time)) {
            d.served_live.push(p);
        }
    }
    data(Value::Array(list))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryQuery {
    from_date: i64,
    to_date: i64,
}

async fn location_history(
    State(sim): State<Arc<AzugaSim>>,
    headers: HeaderMap,
    q: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(r) = sim.guard(&headers, "GET /v1/location-history") {
        return r;
    }
    let Ok(Query(q)) = q else {
        return fail(StatusCode::BAD_REQUEST, "fromDate and toDate (ms) are required");
    };
    let d = lock(&sim.data);
    let mut fixes: BTreeMap<(Ts, Id), &Ping> = BTreeMap::new();
    for p in d.released.iter().filter(|p| q.from_date <= p.time.millis() && p.time.millis() < q.to_date) {
        fixes.entry((p.time, p.vehicle.clone())).or_insert(p);
    }
    let list: Vec<Value> = fixes.into_values().map(|p| d.location_item(p)).collect();
    data(Value::Array(list))
}

fn items(body: &[u8]) -> Result<Vec<Value>, Response> {
    one_or_many::<Value>(body).map_err(|e| fail(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")))
}

async fn geomarks_list(State(sim): State<Arc<AzugaSim>>, headers: HeaderMap) -> Response {
    if let Err(r) = sim.guard(&headers, "GET /v1/geomarks") {
        return r;
    }
    let d = lock(&sim.data);
    data(Value::Array(d.geomarks.values().cloned().collect()))
}

async fn geomarks_create(State(sim): State<Arc<AzugaSim>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = sim.guard(&headers, "POST /v1/geomarks") {
        return r;
    }
    let list = match items(&body) {
        Ok(l) => l,
        Err(r) => return r,
    };
    if let Some((i, e)) = list.iter().enumerate().find_map(|(i, g)| check_geomark(g).err().map(|e| (i, e))) {
        return fail(StatusCode::BAD_REQUEST, format!("item {i}: {e}"));
    }
    let mut d = lock(&sim.data);
    let mut out = Vec::new();
    for mut g in list {
        let id = d.geomarks.keys().next_back().copied().unwrap_or(0) + 1;
        g["id"] = json!(id);
        out.push(json!({"id": id, "name": g["name"]}));
        d.geomarks.insert(id, g);
    }
    data(Value::Array(out))
}

async fn geomarks_update(State(sim): State<Arc<AzugaSim>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = sim.guard(&headers, "PUT /v1/geomarks") {
        return r;
    }
    let list = match items(&body) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let mut d = lock(&sim.data);
    for (i, g) in list.iter().enumerate() {
        let Some(id) = g.get("id").and_then(Value::as_u64) else {
            return fail(StatusCode::BAD_REQUEST, format!("item {i}: id is required"));
        };
        if !d.geomarks.contains_key(&id) {
            return fail(StatusCode::NOT_FOUND, format!("item {i}: geomark {id} not found"));
        }
        if let Err(e) = check_geomark(g) {
            return fail(StatusCode::BAD_REQUEST, format!("item {i}: {e}"));
        }
    }
    let n = list.len();
    for g in list {
        if let Some(id) = g.get("id").and_then(Value::as_u64) {
            d.geomarks.insert(id, g);
        }
    }
    data(json!({"updated": n}))
}

async fn geomarks_delete(State(sim): State<Arc<AzugaSim>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = sim.guard(&headers, "DELETE /v1/geomarks") {
        return r;
    }
    #[derive(Deserialize)]
    struct Ids {
        ids: Vec<u64>,
    }
    let Ok(ids) = serde_json::from_slice::<Ids>(&body) else {
        return fail(StatusCode::BAD_REQUEST, "expected {ids: [..]}");
    };
    let mut d = lock(&sim.data);
    let deleted: Vec<u64> = ids.ids.into_iter().filter(|id| d.geomarks.remove(id).is_some()).collect();
    data(json!({"deleted": deleted}))
}

async fn trackme_create(State(sim): State<Arc<AzugaSim>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = sim.guard(&headers, "POST /v1/trackme") {
        return r;
    }
    let Ok(mut t) = serde_json::from_slice::<Value>(&body) else {
        return fail(StatusCode::BAD_REQUEST, "invalid JSON");
    };
    let vehicle = t.get("vehicleId").map(|v| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    let ttl_ok = t.get("ttl").and_then(Value::as_f64).is_some_and(|x| x > 0.0);
    // Coordinates are optional (a link without a destination shows the
    // vehicle only), but each given one is a number and the destination
    // comes as a pair.
    let given = |k: &str| t.get(k).is_some_and(|v| !v.is_null());
    let coords = ["latitude", "longitude", "destLatitude", "destLongitude"]
        .iter()
        .all(|k| !given(k) || t.get(*k).and_then(Value::as_f64).is_some())
        && given("destLatitude") == given("destLongitude");
    let mut d = lock(&sim.data);
    let Some(vehicle) = vehicle.filter(|v| d.vehicles.contains_key(v.as_str())) else {
        return fail(StatusCode::BAD_REQUEST, "vehicleId missing or unknown");
    };
    if !ttl_ok || !coords {
        return fail(StatusCode::BAD_REQUEST, "ttl is required; coordinates must be numbers, the destination a pair");
    }
    let token = {
        let mut r = lock(&sim.rng);
        format!("tm{:016x}", r.next_u64())
    };
    let url = format!("https://trackme.azuga.example/{token}");
    let now = super::server::now_ms();
    let ttl_ms = t.get("ttl").and_then(Value::as_f64).unwrap_or(0.0) * 1000.0;
    t["token"] = json!(token);
    t["url"] = json!(url);
    t["vehicleId"] = json!(vehicle);
    t["keepAlives"] = json!(0);
    t["createdAt"] = json!(now);
    t["expiresAt"] = json!(now + ttl_ms as i64);
    d.trackme.insert(token.clone(), t);
    data(json!({"token": token, "url": url}))
}

async fn trackme_list(
    State(sim): State<Arc<AzugaSim>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = sim.guard(&headers, "GET /v1/trackme") {
        return r;
    }
    let d = lock(&sim.data);
    let now = super::server::now_ms();
    let list: Vec<Value> = d
        .trackme
        .values()
        .filter(|t| t["expiresAt"].as_i64().is_none_or(|e| e > now))
        .filter(|t| q.get("vehicleId").is_none_or(|v| t["vehicleId"].as_str() == Some(v.as_str())))
        .cloned()
        .collect();
    data(Value::Array(list))
}

async fn trackme_keepalive(
    State(sim): State<Arc<AzugaSim>>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    if let Err(r) = sim.guard(&headers, "PUT /v1/trackme") {
        return r;
    }
    let mut d = lock(&sim.data);
    match d.trackme.get_mut(&token) {
        Some(t) => {
            let n = t["keepAlives"].as_u64().unwrap_or(0) + 1;
            t["keepAlives"] = json!(n);
            data(json!({"token": token}))
        }
        None => fail(StatusCode::NOT_FOUND, "unknown TrackMe token"),
    }
}

async fn add_webhook(State(sim): State<Arc<AzugaSim>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = sim.guard(&headers, "POST /v1/webhooks") {
        return r;
    }
    #[derive(Deserialize)]
    struct Hook {
        url: String,
        #[serde(default, rename = "eventTypes")]
        event_types: Vec<String>,
        #[serde(flatten)]
        auth: HookAuth,
    }
    let Ok(h) = serde_json::from_slice::<Hook>(&body) else {
        return fail(StatusCode::BAD_REQUEST, "expected {url, eventTypes}");
    };
    if !h.event_types.is_empty() && !h.event_types.iter().any(|t| t == "GPS_MESSAGE") {
        return fail(StatusCode::BAD_REQUEST, "only GPS_MESSAGE webhooks are simulated");
    }
    let hook = sim.outbox.add_hook(h.url, &h.auth);
    data(json!({"id": hook.id, "url": hook.url}))
}

async fn admin_events(State(sim): State<Arc<AzugaSim>>, body: Bytes) -> Response {
    let events: Vec<Event> = match one_or_many(&body) {
        Ok(e) => e,
        Err(e) => return admin_error(StatusCode::BAD_REQUEST, e),
    };
    let n = events.len();
    for e in events {
        if let Err(err) = sim.apply(e) {
            return admin_error(StatusCode::BAD_REQUEST, err);
        }
    }
    Json(json!({"applied": n})).into_response()
}

async fn admin_advance(State(sim): State<Arc<AzugaSim>>, body: Bytes) -> Response {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum To {
        Ms(i64),
        Text(String),
    }
    #[derive(Deserialize)]
    struct Advance {
        to: To,
    }
    let to = match serde_json::from_slice::<Advance>(&body) {
        Ok(Advance { to: To::Ms(ms) }) => Ts(ms),
        Ok(Advance { to: To::Text(s) }) => match Ts::parse(&s) {
            Ok(t) => t,
            Err(e) => return admin_error(StatusCode::BAD_REQUEST, e.to_string()),
        },
        Err(e) => return admin_error(StatusCode::BAD_REQUEST, format!("expected {{to}}: {e}")),
    };
    let released = sim.advance(to);
    Json(json!({"released": released, "now": to})).into_response()
}
