//! The clock sink: posts a technician's clock events to ServiceTrade as the
//! tenant's integration admin user (`POST /api/clock`), at the command's
//! time, for the technician the command names.
//!
//! Exactly once per command id (see [`super::ledger`]): a command with an
//! intent but no done step is first looked up with `GET /api/clock`
//! (`userId`, `appointmentId`, `activity`) for an event of the same type at
//! the same second; found → done without posting again. A 401 (session
//! expired or dropped by the session cap) logs in again, once per call.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{json, Value};

use super::call::{CallError, Cx, Request};
use super::ledger::{LedgerError, Step};
use super::{now, Decided, Executor, Pending, SinkKind};
use crate::connect::tenants::{ServiceTradeTenant, Tenant};
use crate::engine::{Action, ClockChange};
use crate::kafka::records::Outcome;

#[derive(Default)]
pub struct ClockSink {
    sessions: Mutex<HashMap<String, String>>,
}

impl ClockSink {
    fn login(&self, cx: &Cx, tenant: &str, st: &ServiceTradeTenant, attempts: &mut u32) -> Result<String, CallError> {
        let body = json!({"username": st.username, "password": st.password.expose()}).to_string();
        let req = request(st, "POST /api/auth", "/auth", Some(body));
        let a = cx.call(tenant, &req, attempts)?;
        let v: Value = serde_json::from_str(&a.body).unwrap_or(Value::Null);
        let token = v["data"]["authToken"].as_str().map(str::to_string).ok_or(CallError::Permanent {
            api: req.api,
            status: a.status,
            message: "no data.authToken in the answer".into(),
        })?;
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).insert(tenant.to_string(), token.clone());
        Ok(token)
    }

    /// A call with the tenant's session, logging in first or again on 401.
    fn with_session(
        &self,
        cx: &Cx,
        tenant: &str,
        st: &ServiceTradeTenant,
        mut req: Request,
        attempts: &mut u32,
    ) -> Result<Value, CallError> {
        for round in 0..2 {
            let cached = self.sessions.lock().unwrap_or_else(|e| e.into_inner()).get(tenant).cloned();
            let token = match cached {
                Some(t) if round == 0 => t,
                _ => self.login(cx, tenant, st, attempts)?,
            };
            req.headers = vec![("Cookie", format!("PHPSESSID={token}"))];
            match cx.call(tenant, &req, attempts) {
                Ok(a) => return Ok(serde_json::from_str(&a.body).unwrap_or(Value::Null)),
                Err(CallError::Permanent { status: 401, .. }) if round == 0 => {
                    self.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(tenant);
                }
                Err(e) => return Err(e),
            }
        }
        Err(CallError::Permanent { api: req.api, status: 401, message: "session refused after a fresh login".into() })
    }

    /// The id of an existing ServiceTrade clock event matching `c`.
    fn find(
        &self,
        cx: &Cx,
        tenant: &str,
        st: &ServiceTradeTenant,
        appt: &str,
        c: &ClockChange,
        attempts: &mut u32,
    ) -> Result<Option<String>, CallError> {
        let query = format!(
            "/clock?userId={}&appointmentId={}&activity={}&limit=500",
            urlencode(c.user.as_str()),
            urlencode(appt),
            c.activity.as_str()
        );
        let req = request(st, "GET /api/clock", &query, None);
        let v = self.with_session(cx, tenant, st, req, attempts)?;
        let secs = c.time.millis().div_euclid(1000);
        let found = v["data"]["clockEvents"].as_array().and_then(|events| {
            events
                .iter()
                .find(|e| e["eventType"].as_str() == Some(c.action.as_str()) && e["eventTime"].as_i64() == Some(secs))
        });
        Ok(found.map(|e| id_text(&e["id"])))
    }

    fn post(
        &self,
        cx: &Cx,
        tenant: &str,
        st: &ServiceTradeTenant,
        appt: &str,
        c: &ClockChange,
        attempts: &mut u32,
    ) -> Result<String, CallError> {
        let body = json!({
            "userId": c.user, "appointmentId": appt,
            "activity": c.activity.as_str(), "eventType": c.action.as_str(),
            "eventTime": c.time.millis().div_euclid(1000), "lat": c.lat, "lon": c.lon,
        });
        let req = request(st, "POST /api/clock", "/clock", Some(body.to_string()));
        let v = self.with_session(cx, tenant, st, req, attempts)?;
        Ok(id_text(&v["data"]["id"]))
    }

    fn one(&self, cx: &Cx, tenant: &Tenant, st: &ServiceTradeTenant, p: &Pending) -> Result<Decided, LedgerError> {
        let Action::Clock(c) = &p.command.action else {
            let r = p.result(SinkKind::Clock, Outcome::Failed, "not a clock command".into(), None, 0, now());
            return Ok(Decided { result: r, dead: true });
        };
        let (t, id, appt) = (tenant.name.as_str(), p.command.id.as_str(), p.command.appointment.as_str());
        let (recovering, mut attempts) = match cx.ledger.step(t, id)? {
            Some(Step::Intent { calls }) => (true, calls),
            _ => (false, 0),
        };
        let found = if recovering { self.find(cx, t, st, appt, c, &mut attempts) } else { Ok(None) };
        let outcome = match found {
            Ok(Some(remote)) => {
                tracing::info!(tenant = t, command = id, "clock event found on recovery; not posting again");
                Ok(remote)
            }
            Ok(None) => {
                cx.ledger.record(&[(t, id, Step::Intent { calls: attempts + 1 })], &[])?;
                self.post(cx, t, st, appt, c, &mut attempts)
            }
            Err(e) => Err(e),
        };
        let decided = match outcome {
            Ok(remote) => Decided {
                result: p.result(
                    SinkKind::Clock,
                    Outcome::Done,
                    String::new(),
                    Some(remote).filter(|s| !s.is_empty()),
                    attempts,
                    now(),
                ),
                dead: false,
            },
            Err(e) => Decided {
                result: p.result(
                    SinkKind::Clock,
                    Outcome::Failed,
                    format!("ServiceTrade clock event not created: {e}"),
                    None,
                    attempts,
                    now(),
                ),
                dead: true,
            },
        };
        cx.ledger.record(&[(t, id, Step::Done { result: decided.result.clone(), reported: false })], &[])?;
        Ok(decided)
    }
}

/// A ServiceTrade call: `api` is `METHOD /api/...` (the budget key), `path`
/// what follows `/api` in the URL (query included).
fn request(st: &ServiceTradeTenant, api: &'static str, path: &str, body: Option<String>) -> Request {
    let method = if api.starts_with("GET") { "GET" } else { "POST" };
    Request {
        api,
        method,
        url: format!("{}/api{path}", st.base_url),
        headers: Vec::new(),
        body,
        interval_ms: st.api_interval_ms as i64,
    }
}

/// A JSON id as text (ServiceTrade ids come as numbers or strings).
fn id_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub(crate) fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Executor for ClockSink {
    fn execute(&self, cx: &Cx, tenant: &Tenant, batch: Vec<Pending>) -> Result<Vec<Decided>, LedgerError> {
        let Some(st) = &tenant.servicetrade else {
            return Ok(super::unconfigured(SinkKind::Clock, batch, "no [tenants.servicetrade] in the tenants file"));
        };
        batch.iter().map(|p| self.one(cx, tenant, st, p)).collect()
    }
}
