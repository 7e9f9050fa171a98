//! The ServiceTrade simulator: `/api` as design §3 describes it.
//!
//! - `POST /api/auth {username,password}` → `data.authToken`, also set as
//!   the `PHPSESSID` cookie; `DELETE /api/auth` ends the session. Each user
//!   has at most `session_cap` sessions: a new one silently drops the oldest.
//! - Every answer is the envelope `{"messages":{"success":[],"error":[]},"data":…}`.
//! - `GET /api/{user,location,contact,job,appointment,clock}` pages with
//!   `page` (1-based) and `limit` (default `default_limit`, at most
//!   `max_limit`); `data` carries `page`, `totalPages` and the items
//!   (`users`, `locations`, `contacts`, `jobs`, `appointments`,
//!   `clockEvents`); `updatedAfter` (unix s) and the resource's filters
//!   apply (`/location?isVendor=true`: the offices; `/contact?locationId=`).
//!   `GET /api/{kind}/{id}`. Locations carry `primaryContactId`,
//!   `officeIds` and `isVendor`; a job's `location.primaryContact` is the
//!   contact with its `email`.
//! - `POST /api/clock {userId, appointmentId, activity, eventType, eventTime,
//!   lat, lon}` creates a clock event: account admins for anyone, others for
//!   themselves only; on an appointment the world holds locked
//!   ([`World::clock_locked`]) it is refused with a 422, as ServiceTrade
//!   refuses changes to an invoiced job.
//! - `POST /api/webhook {hookUrl, entityEvents, includeChangesets}` registers
//!   a hook; every change is then delivered as
//!   `{messageId, timestamp, data:[{action, timestamp, userId, entity{type,id,uri}, changeset}]}`
//!   through a [`Outbox`] with the configured faults.
//! - Admin (no auth, not in the call log): `POST /admin/events` (engine
//!   events as JSON, one or an array: upserts, deletes, clock events),
//!   `GET /admin/state`, `GET /admin/calls?prefix=`, `GET /admin/deliveries`,
//!   `GET /admin/outbox`.

// Handlers return a ready HTTP answer as their early-exit error; boxing it
// would only add noise to every handler.
#![allow(clippy::result_large_err)]

pub mod store;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::calls::CallLog;
use super::rng::Rng;
use super::server::{admin_error, log_calls, now_ms, one_or_many, serve, shared_admin, Running};
use super::webhook::{Faults, HookAuth, Item, Outbox};
use super::world::World;
use super::{SimClock, SimError};
use crate::engine::Event;
use crate::model::{Activity, ClockAction, ClockEvent, Id, Ts};
use crate::vendor::servicetrade::plural;
pub use store::{Change, ClockRec, Snapshot, Store, TYPES};

/// A login the simulator accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub username: String,
    pub password: String,
    /// The ServiceTrade user this login is (for self-clocking).
    #[serde(default)]
    pub user: Option<Id>,
    /// Account admin: may create clock events for any technician.
    #[serde(default)]
    pub admin: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub accounts: Vec<Account>,
    pub session_cap: usize,
    pub default_limit: usize,
    pub max_limit: usize,
    pub faults: Faults,
    /// ServiceTrade's clock (its `updated` stamps, webhook timestamps and
    /// `Date` header); `None`: the wall clock.
    #[serde(skip)]
    pub clock: Option<SimClock>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            accounts: vec![Account {
                username: "geoclock-admin".into(),
                password: "secret".into(),
                user: None,
                admin: true,
            }],
            session_cap: 5,
            default_limit: 50,
            max_limit: 500,
            faults: Faults::default(),
            clock: None,
        }
    }
}

#[derive(Default)]
struct Sessions {
    by_token: HashMap<String, String>,
    by_user: HashMap<String, VecDeque<String>>,
}

/// A running simulator's state. Shared by its handlers and by tests.
pub struct ServiceTradeSim {
    config: Config,
    store: Mutex<Store>,
    sessions: Mutex<Sessions>,
    tokens: Mutex<Rng>,
    outbox: Outbox,
    calls: Arc<CallLog>,
    hook_types: Mutex<Vec<String>>,
    include_changesets: AtomicBool,
    /// Appointments whose clock POSTs are refused.
    locked: HashSet<Id>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn clock_ms(clock: &Option<SimClock>) -> i64 {
    clock.as_ref().map_or_else(now_ms, SimClock::now_ms)
}

/// Sets the `Date` header from ServiceTrade's clock when it is simulated.
async fn date_header(
    State(clock): State<Option<SimClock>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut resp = next.run(req).await;
    if let Some(c) = clock {
        super::server::set_date(&mut resp, c.now_ms());
    }
    resp
}

fn envelope(status: StatusCode, data: Value, errors: Vec<String>) -> Response {
    let success: Vec<String> = Vec::new();
    (status, Json(json!({"messages": {"success": success, "error": errors}, "data": data}))).into_response()
}

fn ok(data: Value) -> Response {
    envelope(StatusCode::OK, data, Vec::new())
}

fn fail(status: StatusCode, message: impl Into<String>) -> Response {
    envelope(status, Value::Null, vec![message.into()])
}

impl ServiceTradeSim {
    /// A simulator holding `world`'s ServiceTrade side. Needs a tokio runtime
    /// (the webhook worker starts on it).
    pub fn new(config: Config, world: &World) -> Arc<ServiceTradeSim> {
        let clock = config.clock.clone();
        let outbox = Outbox::start(
            config.faults.clone(),
            "st",
            Arc::new(
                move |id: &str, items: Vec<Value>| json!({"messageId": id, "timestamp": clock_ms(&clock).div_euclid(1000), "data": items}),
            ),
        );
        let mut store = Store::default();
        let now = clock_ms(&config.clock).div_euclid(1000);
        let entities =
            world.users.iter().cloned().map(Event::User).chain(world.locations.iter().cloned().map(Event::Location));
        let entities = entities
            .chain(world.offices.iter().cloned().map(Event::Office))
            .chain(world.contacts.iter().cloned().map(Event::Contact))
            .chain(world.jobs.iter().cloned().map(Event::Job))
            .chain(world.appointments.iter().cloned().map(Event::Appointment))
            .chain(world.clocks.iter().cloned().map(Event::Clock));
        for e in entities {
            let _ = store.apply(e, now, None);
        }
        Arc::new(ServiceTradeSim {
            tokens: Mutex::new(Rng::new(config.faults.seed ^ 0x5e55)),
            config,
            store: Mutex::new(store),
            sessions: Mutex::new(Sessions::default()),
            outbox,
            calls: Arc::new(CallLog::default()),
            hook_types: Mutex::new(Vec::new()),
            include_changesets: AtomicBool::new(true),
            locked: world.clock_locked.iter().cloned().collect(),
        })
    }

    /// Starts a simulator and serves it on `listen` (`127.0.0.1:0` for any port).
    pub async fn start(
        config: Config,
        world: &World,
        listen: &str,
    ) -> Result<(Arc<ServiceTradeSim>, Running), SimError> {
        let sim = ServiceTradeSim::new(config, world);
        let running = serve(sim.router(), listen).await?;
        tracing::info!(addr = %running.addr, "servicetrade simulator listening");
        Ok((sim, running))
    }

    /// ServiceTrade's clock, unix seconds.
    fn now_s(&self) -> i64 {
        clock_ms(&self.config.clock).div_euclid(1000)
    }

    pub fn router(self: &Arc<Self>) -> Router {
        let mut r = Router::new()
            .route("/api/auth", post(login).delete(logout))
            .route("/api/webhook", post(add_webhook).get(list_webhooks))
            .route("/api/webhook/{id}", axum::routing::delete(delete_webhook));
        for kind in TYPES {
            let mut list_route =
                get(move |s: State<Arc<Self>>, h: HeaderMap, q: Query<HashMap<String, String>>| list(s, h, q, kind));
            if kind == "clock" {
                list_route = list_route.post(create_clock);
            }
            r = r.route(&format!("/api/{kind}"), list_route).route(
                &format!("/api/{kind}/{{id}}"),
                get(move |s: State<Arc<Self>>, h: HeaderMap, p: Path<String>| one(s, h, p, kind)),
            );
        }
        r.route("/admin/events", post(admin_events))
            .route("/admin/state", get(|s: State<Arc<Self>>| async move { Json(s.snapshot()) }))
            .layer(axum::middleware::from_fn_with_state(self.calls.clone(), log_calls))
            .layer(axum::middleware::from_fn_with_state(self.config.clock.clone(), date_header))
            .with_state(self.clone())
            .merge(shared_admin(self.calls.clone(), self.outbox.clone()))
    }

    pub fn snapshot(&self) -> Snapshot {
        lock(&self.store).snapshot()
    }

    pub fn calls(&self) -> &CallLog {
        &self.calls
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Changes data as the office would (admin endpoint); webhooks follow.
    pub fn apply(&self, event: Event, actor: Option<&Id>) -> Result<(), String> {
        self.apply_stamped(event, actor, self.now_s())
    }

    /// [`ServiceTradeSim::apply`] with the entity's `updated` stamp set to
    /// `updated_s`: a change that becomes visible later than it was stamped
    /// (ServiceTrade's listings and its stamps need not agree in time).
    pub fn apply_stamped(&self, event: Event, actor: Option<&Id>, updated_s: i64) -> Result<(), String> {
        let change = lock(&self.store).apply(event, updated_s, actor)?;
        if let Some(c) = change {
            self.notify(c);
        }
        Ok(())
    }

    fn notify(&self, c: Change) {
        let wanted = {
            let types = lock(&self.hook_types);
            types.is_empty() || types.iter().any(|t| t == c.entity)
        };
        if !wanted || !self.outbox.has_hooks() {
            return;
        }
        let mut item = c.item;
        if !self.include_changesets.load(Ordering::Relaxed) {
            if let Some(o) = item.as_object_mut() {
                o.remove("changeset");
            }
        }
        self.outbox.enqueue(Item { key: format!("{}/{}", c.entity, c.id), value: item });
    }

    fn session(&self, headers: &HeaderMap) -> Result<Account, Response> {
        let token = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|kv| kv.trim().strip_prefix("PHPSESSID=").map(str::to_string));
        let Some(token) = token else {
            return Err(fail(StatusCode::UNAUTHORIZED, "authentication required"));
        };
        let username = lock(&self.sessions).by_token.get(&token).cloned();
        username
            .and_then(|u| self.config.accounts.iter().find(|a| a.username == u).cloned())
            .ok_or_else(|| fail(StatusCode::UNAUTHORIZED, "session expired or invalid"))
    }
}

#[derive(Deserialize)]
struct Login {
    username: String,
    password: String,
}

async fn login(State(sim): State<Arc<ServiceTradeSim>>, body: Bytes) -> Response {
    let Ok(l) = serde_json::from_slice::<Login>(&body) else {
        return fail(StatusCode::BAD_REQUEST, "expected {username, password}");
    };
    let Some(account) = sim.config.accounts.iter().find(|a| a.username == l.username && a.password == l.password)
    else {
        return fail(StatusCode::FORBIDDEN, "invalid username or password");
    };
    let token = {
        let mut rng = lock(&sim.tokens);
        format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64())
    };
    {
        let mut s = lock(&sim.sessions);
        s.by_token.insert(token.clone(), account.username.clone());
        let queue = s.by_user.entry(account.username.clone()).or_default();
        queue.push_back(token.clone());
        let mut dropped = Vec::new();
        while queue.len() > sim.config.session_cap.max(1) {
            if let Some(old) = queue.pop_front() {
                dropped.push(old);
            }
        }
        for old in dropped {
            s.by_token.remove(&old);
        }
    }
    let mut resp = ok(json!({"authToken": token, "user": {"username": account.username, "id": account.user}}));
    if let Ok(v) = format!("PHPSESSID={token}; Path=/; HttpOnly").parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

async fn logout(State(sim): State<Arc<ServiceTradeSim>>, headers: HeaderMap) -> Response {
    if let Err(r) = sim.session(&headers) {
        return r;
    }
    let token = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix("PHPSESSID=").map(str::to_string))
        .unwrap_or_default();
    let mut s = lock(&sim.sessions);
    if let Some(user) = s.by_token.remove(&token) {
        if let Some(q) = s.by_user.get_mut(&user) {
            q.retain(|t| t != &token);
        }
    }
    ok(Value::Null)
}

async fn list(
    State(sim): State<Arc<ServiceTradeSim>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    kind: &'static str,
) -> Response {
    if let Err(r) = sim.session(&headers) {
        return r;
    }
    let parse = |k: &str, d: usize| q.get(k).map(|v| v.trim().parse::<usize>()).unwrap_or(Ok(d));
    let (Ok(page), Ok(limit)) = (parse("page", 1), parse("limit", sim.config.default_limit)) else {
        return fail(StatusCode::BAD_REQUEST, "page and limit must be positive integers");
    };
    let (page, limit) = (page.max(1), limit.clamp(1, sim.config.max_limit.max(1)));
    let items = match lock(&sim.store).list(kind, &q) {
        Ok(items) => items,
        Err(e) => return fail(StatusCode::BAD_REQUEST, e),
    };
    let total_pages = items.len().div_ceil(limit).max(1);
    let page_items: Vec<Value> = items.into_iter().skip((page - 1) * limit).take(limit).collect();
    let mut data = json!({"page": page, "totalPages": total_pages});
    data[plural(kind)] = Value::Array(page_items);
    ok(data)
}

async fn one(
    State(sim): State<Arc<ServiceTradeSim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    kind: &'static str,
) -> Response {
    if let Err(r) = sim.session(&headers) {
        return r;
    }
    match lock(&sim.store).get(kind, &id) {
        Some(v) => ok(v),
        None => fail(StatusCode::NOT_FOUND, format!("{kind} {id} not found")),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewClock {
    user_id: Id,
    appointment_id: Id,
    activity: Activity,
    event_type: ClockAction,
    #[serde(default)]
    event_time: Option<i64>,
    #[serde(default)]
    lat: Option<f64>,
    #[serde(default)]
    lon: Option<f64>,
}

async fn create_clock(State(sim): State<Arc<ServiceTradeSim>>, headers: HeaderMap, body: Bytes) -> Response {
    let account = match sim.session(&headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let c: NewClock = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return fail(StatusCode::BAD_REQUEST, format!("invalid clock event: {e}")),
    };
    if !account.admin && account.user.as_ref() != Some(&c.user_id) {
        return fail(StatusCode::FORBIDDEN, "only account admins may clock other users");
    }
    let now = sim.now_s();
    let (id, change) = {
        let mut store = lock(&sim.store);
        if store.user(c.user_id.as_str()).is_none() {
            return fail(StatusCode::NOT_FOUND, format!("user {} not found", c.user_id));
        }
        if store.appointment(c.appointment_id.as_str()).is_none() {
            return fail(StatusCode::NOT_FOUND, format!("appointment {} not found", c.appointment_id));
        }
        if sim.locked.contains(&c.appointment_id) {
            return fail(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("appointment {} is locked: its job has been invoiced", c.appointment_id),
            );
        }
        let event = ClockEvent {
            user: c.user_id,
            appointment: c.appointment_id,
            activity: c.activity,
            action: c.event_type,
            time: Ts::from_secs(c.event_time.unwrap_or(now)),
        };
        store.add_clock(event, c.lat, c.lon, account.user.clone(), now)
    };
    let data = lock(&sim.store).get("clock", &id.to_string()).unwrap_or(Value::Null);
    sim.notify(change);
    ok(data)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewHook {
    hook_url: String,
    #[serde(default)]
    entity_events: Vec<Value>,
    #[serde(default)]
    include_changesets: Option<bool>,
    /// Delivery auth: `headers`, `signingSecret` (this simulator's
    /// extension: real ServiceTrade hooks are unsigned).
    #[serde(flatten)]
    auth: HookAuth,
}

async fn add_webhook(State(sim): State<Arc<ServiceTradeSim>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = sim.session(&headers) {
        return r;
    }
    let h: NewHook = match serde_json::from_slice(&body) {
        Ok(h) => h,
        Err(e) => return fail(StatusCode::BAD_REQUEST, format!("invalid webhook: {e}")),
    };
    if !(h.hook_url.starts_with("http://") || h.hook_url.starts_with("https://")) {
        return fail(StatusCode::BAD_REQUEST, "hookUrl must be an http(s) URL");
    }
    // entityEvents: entity type names, or objects naming `entityType`.
    let types: Vec<String> = h
        .entity_events
        .iter()
        .filter_map(|e| match e {
            Value::String(s) => Some(s.split('.').next().unwrap_or(s).to_string()),
            Value::Object(o) => o.get("entityType").and_then(Value::as_str).map(str::to_string),
            _ => None,
        })
        .collect();
    *lock(&sim.hook_types) = types.clone();
    sim.include_changesets.store(h.include_changesets.unwrap_or(true), Ordering::Relaxed);
    let hook = sim.outbox.add_hook(h.hook_url, &h.auth);
    ok(
        json!({"id": hook.id, "hookUrl": hook.url, "entityEvents": types, "includeChangesets": h.include_changesets.unwrap_or(true)}),
    )
}

async fn list_webhooks(State(sim): State<Arc<ServiceTradeSim>>, headers: HeaderMap) -> Response {
    if let Err(r) = sim.session(&headers) {
        return r;
    }
    let hooks: Vec<Value> = sim.outbox.hooks().into_iter().map(|h| json!({"id": h.id, "hookUrl": h.url})).collect();
    ok(json!({"webhooks": hooks}))
}

async fn delete_webhook(State(sim): State<Arc<ServiceTradeSim>>, headers: HeaderMap, Path(id): Path<u64>) -> Response {
    if let Err(r) = sim.session(&headers) {
        return r;
    }
    if sim.outbox.remove_hook(id) {
        ok(Value::Null)
    } else {
        fail(StatusCode::NOT_FOUND, format!("webhook {id} not found"))
    }
}

async fn admin_events(State(sim): State<Arc<ServiceTradeSim>>, body: Bytes) -> Response {
    let events: Vec<Event> = match one_or_many(&body) {
        Ok(e) => e,
        Err(e) => return admin_error(StatusCode::BAD_REQUEST, e),
    };
    let n = events.len();
    for e in events {
        if let Err(err) = sim.apply(e, None) {
            return admin_error(StatusCode::BAD_REQUEST, err);
        }
    }
    Json(json!({"applied": n})).into_response()
}
