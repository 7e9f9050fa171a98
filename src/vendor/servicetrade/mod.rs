//! ServiceTrade: the one client geoclock calls it with (connectors and the
//! clock sink alike), its JSON shapes ([`map`], [`webhook`]) and resources.
//!
//! - Auth: `POST /api/auth {username, password}` → `data.authToken`, sent
//!   as cookie `PHPSESSID`; sessions per user are capped and the oldest is
//!   dropped silently, so a 401 logs in again (once per call) and repeats
//!   the call: a 401 means the call was not applied.
//! - Envelope `{"messages":{"success":[],"error":[]},"data":…}`; paging
//!   `page=N&limit=`, answers carry `totalPages`. A listing is **complete**
//!   only when every page said how many pages there are and all were read;
//!   a page without `totalPages` is read on until a short page, and the
//!   listing is marked incomplete (a full sweep must not tombstone from it).
//! - Clock events: `POST /api/clock {userId, appointmentId, activity,
//!   eventType, eventTime, lat, lon}`; found again with `GET /api/clock`
//!   (`userId`, `appointmentId`, `activity`) by type and second. The POST has
//!   no idempotency key, so after an unknown answer the caller looks it up
//!   before posting again ([`crate::sink::effect`]).
//!
//! Every method is one attempt ([`Fault`]) unless it says it retries; the
//! connectors use the retrying ones ([`Caller::retrying`]).

pub mod map;
pub mod webhook;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::call::{Caller, Observer, Request, Stop, VendorError};
use super::retry::{Fault, Policy};
use crate::config::tenants::ServiceTradeTenant;
use crate::engine::ClockChange;
use crate::http::client::{urlencode, Http};

/// The resources geoclock mirrors, as the API names them. Offices are
/// locations too (`isVendor`: [`map::is_office`]).
pub const TYPES: [&str; 6] = ["user", "location", "contact", "job", "appointment", "clock"];

/// The key of a resource's items in a list answer.
pub fn plural(kind: &str) -> &'static str {
    match kind {
        "user" => "users",
        "location" => "locations",
        "contact" => "contacts",
        "job" => "jobs",
        "appointment" => "appointments",
        _ => "clockEvents",
    }
}

/// Every item of a resource, and whether the listing is known complete.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listing {
    pub items: Vec<Value>,
    pub complete: bool,
}

/// One tenant's ServiceTrade API, with its session.
pub struct Client {
    caller: Caller,
    cfg: ServiceTradeTenant,
    session: Mutex<Option<String>>,
}

impl Client {
    pub fn new(
        cfg: ServiceTradeTenant,
        timeout: Duration,
        policy: Policy,
        stop: Stop,
        observer: Arc<dyn Observer>,
    ) -> Client {
        let caller = Caller::new(Http::new(timeout), policy, cfg.api_interval_ms as i64, stop, observer);
        Client { caller, cfg, session: Mutex::new(None) }
    }

    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    fn request(&self, api: &'static str, method: &'static str, path: &str, body: Option<Value>) -> Request {
        Request {
            api,
            method,
            url: format!("{}/api{path}", self.cfg.base_url),
            headers: Vec::new(),
            body: body.map(|b| b.to_string()),
        }
    }

    /// Logs in (one attempt); the session token is kept.
    pub fn login(&self) -> Result<String, Fault> {
        let body = json!({"username": self.cfg.username, "password": self.cfg.password.expose()});
        let req = self.request("POST /api/auth", "POST", "/auth", Some(body));
        let a = self.caller.once(&req)?;
        let v: Value = serde_json::from_str(&a.body).unwrap_or(Value::Null);
        let token = v["data"]["authToken"].as_str().map(str::to_string).ok_or(Fault::Refused {
            api: req.api,
            status: a.status,
            message: "no data.authToken in the answer".into(),
        })?;
        *self.session.lock().unwrap_or_else(|e| e.into_inner()) = Some(token.clone());
        Ok(token)
    }

    /// Ends the session (best effort).
    pub fn logout(&self) {
        let token = self.session.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = token {
            let mut req = self.request("DELETE /api/auth", "DELETE", "/auth", None);
            req.headers.push(("Cookie", format!("PHPSESSID={t}")));
            let _ = self.caller.once(&req);
        }
    }

    /// One call with the session: logs in first when there is none, and
    /// once more after a 401 (the call was not applied). Returns `data`.
    fn call(&self, mut req: Request) -> Result<Value, Fault> {
        for round in 0..2 {
            let cached = self.session.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let token = match cached {
                Some(t) if round == 0 => t,
                _ => self.login()?,
            };
            req.headers = vec![("Cookie", format!("PHPSESSID={token}"))];
            match self.caller.once(&req) {
                Ok(a) => {
                    let v: Value = serde_json::from_str(&a.body).unwrap_or(Value::Null);
                    return Ok(v.get("data").cloned().unwrap_or(Value::Null));
                }
                Err(Fault::Refused { status: 401, .. }) if round == 0 => {
                    *self.session.lock().unwrap_or_else(|e| e.into_inner()) = None;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Fault::Refused { api: req.api, status: 401, message: "session refused after a fresh login".into() })
    }

    /// Logs in, retrying transient failures.
    pub fn login_retrying(&self) -> Result<(), VendorError> {
        self.caller.retrying("POST /api/auth", || self.login()).map(|_| ())
    }

    /// Every item of `kind` (all pages), retrying transient failures.
    pub fn list(&self, kind: &str, updated_after: Option<i64>) -> Result<Listing, VendorError> {
        let api = list_api(kind);
        let mut out = Listing { items: Vec::new(), complete: true };
        let limit = self.cfg.page_limit as usize;
        for page in 1..=100_000u32 {
            let mut path = format!("/{kind}?page={page}&limit={limit}");
            if let Some(t) = updated_after {
                path.push_str(&format!("&updatedAfter={t}"));
            }
            let data = self.caller.retrying(api, || self.call(self.request(api, "GET", &path, None)))?;
            let Some(Value::Array(items)) = data.get(plural(kind)) else {
                return Err(VendorError::Protocol { api, message: format!("no data.{}", plural(kind)) });
            };
            let n = items.len();
            out.items.extend(items.iter().cloned());
            match data.get("totalPages").and_then(Value::as_u64) {
                Some(total) if u64::from(page) >= total => return Ok(out),
                Some(_) => {}
                None => {
                    // No page count: read on to a short page, and do not
                    // trust the listing to be whole.
                    out.complete = false;
                    if n < limit {
                        return Ok(out);
                    }
                }
            }
        }
        out.complete = false;
        Ok(out)
    }

    /// One entity (`None`: 404, deleted), retrying transient failures.
    pub fn get(&self, kind: &str, id: &str) -> Result<Option<Value>, VendorError> {
        let api = get_api(kind);
        let path = format!("/{kind}/{}", urlencode(id));
        match self.caller.retrying(api, || self.call(self.request(api, "GET", &path, None))) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Registers `hook` unless a hook with its URL exists. The URL holds no
    /// secret; the registration's headers or signing secret do (never
    /// logged).
    pub fn ensure_webhook(&self, hook: &crate::config::webhook::Registration) -> Result<(), VendorError> {
        let api = "GET /api/webhook";
        let existing = self.caller.retrying(api, || self.call(self.request(api, "GET", "/webhook", None)))?;
        let known = existing["webhooks"].as_array().is_some_and(|hs| hs.iter().any(|h| h["hookUrl"] == hook.url));
        if !known {
            let mut body = json!({"hookUrl": hook.url, "entityEvents": TYPES, "includeChangesets": true});
            if let Some(b) = body.as_object_mut() {
                b.extend(hook.json_fields());
            }
            let api = "POST /api/webhook";
            self.caller.retrying(api, || self.call(self.request(api, "POST", "/webhook", Some(body.clone()))))?;
        }
        Ok(())
    }

    /// Posts a clock event (one attempt); its ServiceTrade id.
    pub fn post_clock(&self, appointment: &str, c: &ClockChange) -> Result<String, Fault> {
        let body = json!({
            "userId": c.user, "appointmentId": appointment,
            "activity": c.activity.as_str(), "eventType": c.action.as_str(),
            "eventTime": c.time.millis().div_euclid(1000), "lat": c.lat, "lon": c.lon,
        });
        let v = self.call(self.request("POST /api/clock", "POST", "/clock", Some(body)))?;
        Ok(id_text(&v["id"]))
    }

    /// The id of an existing clock event matching `c` (one attempt).
    pub fn find_clock(&self, appointment: &str, c: &ClockChange) -> Result<Option<String>, Fault> {
        let path = format!(
            "/clock?userId={}&appointmentId={}&activity={}&limit=500",
            urlencode(c.user.as_str()),
            urlencode(appointment),
            c.activity.as_str()
        );
        let v = self.call(self.request("GET /api/clock", "GET", &path, None))?;
        let secs = c.time.millis().div_euclid(1000);
        let found = v["clockEvents"].as_array().and_then(|events| {
            events
                .iter()
                .find(|e| e["eventType"].as_str() == Some(c.action.as_str()) && e["eventTime"].as_i64() == Some(secs))
        });
        Ok(found.map(|e| id_text(&e["id"])))
    }
}

fn list_api(kind: &str) -> &'static str {
    match kind {
        "user" => "GET /api/user",
        "location" => "GET /api/location",
        "contact" => "GET /api/contact",
        "job" => "GET /api/job",
        "appointment" => "GET /api/appointment",
        _ => "GET /api/clock",
    }
}

fn get_api(kind: &str) -> &'static str {
    match kind {
        "user" => "GET /api/user/{id}",
        "location" => "GET /api/location/{id}",
        "contact" => "GET /api/contact/{id}",
        "job" => "GET /api/job/{id}",
        "appointment" => "GET /api/appointment/{id}",
        _ => "GET /api/clock/{id}",
    }
}

/// A JSON id as text (ServiceTrade ids come as numbers or strings).
pub fn id_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
