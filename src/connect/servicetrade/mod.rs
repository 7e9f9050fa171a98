//! The ServiceTrade connector for one tenant: log in, register the webhook,
//! sync everything once, then keep up through the webhook inbox and a
//! periodic `updatedAfter` reconciliation.
//!
//! Invariants:
//! - A webhook notice is only a hint: the task fetches the entity's current
//!   state (`GET /api/{type}/{id}`; 404 means deleted), so batches that come
//!   duplicated or out of order publish the current truth once. A message id
//!   already handled is skipped; it is recorded only after its records are
//!   acknowledged.
//! - Reconciliation asks each resource for `updatedAfter = cursor - 1`
//!   (one second of overlap: stamps are whole seconds) and publishes only
//!   what differs from the ledger; the cursor moves only after the records
//!   are acknowledged, so a restart resumes where the last acknowledged
//!   reconciliation ended: no full re-publish, no gap. Every
//!   `full_sweep_every`-th reconciliation (and the first ever) lists
//!   everything and publishes tombstones for entities that disappeared
//!   (deletes whose webhook was lost).
//! - Clock events are published on the clock-event topic keyed by
//!   appointment; they are facts and are never tombstoned.

pub mod map;
pub mod webhook;

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use super::http::{Answer, Http};
use super::ledger::{Entry, Ledger};
use super::out::Out;
use super::tenants::ServiceTradeTenant;
use super::{ConnectError, Work};
use crate::engine::{EntityRef, Event};
use crate::kafka::records::key_id;
use crate::model::Id;
use crate::sim::servicetrade::TYPES;

/// The ServiceTrade API for one tenant, with its session.
pub struct Client {
    http: Http,
    cfg: ServiceTradeTenant,
    out: Out,
    session: Option<String>,
}

fn plural(kind: &str) -> &'static str {
    match kind {
        "user" => "users",
        "location" => "locations",
        "job" => "jobs",
        "appointment" => "appointments",
        _ => "clockEvents",
    }
}

impl Client {
    pub fn new(cfg: ServiceTradeTenant, out: Out) -> Client {
        Client { http: Http::new(Duration::from_secs(30)), cfg, out, session: None }
    }

    async fn raw(
        &self,
        method: &'static str,
        call: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Answer, ConnectError> {
        let mut headers = Vec::new();
        if let Some(s) = &self.session {
            headers.push(("Cookie", format!("PHPSESSID={s}")));
        }
        let url = format!("{}/api{}", self.cfg.base_url, path);
        let r = self.http.call(method, url, headers, body.map(|b| b.to_string())).await;
        self.out.metrics.api_call("servicetrade", &self.out.tenant, call, r.as_ref().ok().map(|a| a.status));
        r.map_err(|message| ConnectError::Unreachable { call: call.to_string(), message })
    }

    pub async fn login(&mut self) -> Result<(), ConnectError> {
        self.session = None;
        let body = json!({"username": self.cfg.username, "password": self.cfg.password.expose()});
        let a = self.raw("POST", "auth", "/auth", Some(body)).await?;
        if a.status != 200 {
            return Err(ConnectError::Http { call: "auth".into(), status: a.status, message: first_error(&a.body) });
        }
        let v: Value = serde_json::from_str(&a.body).map_err(|e| protocol("auth", e))?;
        let token = v["data"]["authToken"].as_str().ok_or_else(|| protocol("auth", "no data.authToken"))?;
        self.session = Some(token.to_string());
        Ok(())
    }

    pub async fn logout(&mut self) {
        if self.session.is_some() {
            let _ = self.raw("DELETE", "auth", "/auth", None).await;
            self.session = None;
        }
    }

    /// A call with the session; logs in again once on 401. `Ok(None)` on 404.
    async fn call(
        &mut self,
        method: &'static str,
        call: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Option<Value>, ConnectError> {
        let mut a = self.raw(method, call, path, body.clone()).await?;
        if a.status == 401 {
            self.login().await?;
            a = self.raw(method, call, path, body).await?;
        }
        match a.status {
            200..=299 => {
                let v: Value = serde_json::from_str(&a.body).map_err(|e| protocol(call, e))?;
                Ok(Some(v.get("data").cloned().unwrap_or(Value::Null)))
            }
            404 => Ok(None),
            s => Err(ConnectError::Http { call: call.to_string(), status: s, message: first_error(&a.body) }),
        }
    }

    /// Every item of `kind`, all pages.
    pub async fn list(&mut self, kind: &str, updated_after: Option<i64>) -> Result<Vec<Value>, ConnectError> {
        let mut out = Vec::new();
        let mut page = 1;
        loop {
            let mut path = format!("/{kind}?page={page}&limit={}", self.cfg.page_limit);
            if let Some(t) = updated_after {
                path.push_str(&format!("&updatedAfter={t}"));
            }
            let data = self.call("GET", &format!("list_{kind}"), &path, None).await?.unwrap_or(Value::Null);
            match data.get(plural(kind)) {
                Some(Value::Array(items)) => out.extend(items.iter().cloned()),
                _ => return Err(protocol(&format!("list_{kind}"), format!("no data.{}", plural(kind)))),
            }
            let total = data.get("totalPages").and_then(Value::as_u64).unwrap_or(1);
            if page as u64 >= total {
                return Ok(out);
            }
            page += 1;
        }
    }

    pub async fn get(&mut self, kind: &str, id: &str) -> Result<Option<Value>, ConnectError> {
        self.call("GET", &format!("get_{kind}"), &format!("/{kind}/{id}"), None).await
    }

    /// Registers `hook_url` unless a hook with that URL exists. The URL holds
    /// the tenant's secret: it is never logged.
    pub async fn ensure_webhook(&mut self, hook_url: &str) -> Result<(), ConnectError> {
        let existing = self.call("GET", "list_webhook", "/webhook", None).await?.unwrap_or(Value::Null);
        let known = existing["webhooks"].as_array().is_some_and(|hs| hs.iter().any(|h| h["hookUrl"] == hook_url));
        if !known {
            let body = json!({"hookUrl": hook_url, "entityEvents": TYPES, "includeChangesets": true});
            self.call("POST", "add_webhook", "/webhook", Some(body)).await?;
        }
        Ok(())
    }
}

fn first_error(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["messages"]["error"][0].as_str().map(str::to_string))
        .unwrap_or_else(|| body.chars().take(120).collect())
}

fn protocol(call: &str, e: impl std::fmt::Display) -> ConnectError {
    ConnectError::Protocol { call: call.to_string(), message: e.to_string() }
}

/// Maps one API item of `kind` to (ledger key, event).
fn to_event(kind: &str, v: &Value) -> Result<(String, Event), String> {
    let e = match kind {
        "user" => Event::User(map::user(v)?),
        "location" => Event::Location(map::location(v)?),
        "job" => Event::Job(map::job(v)?),
        "appointment" => Event::Appointment(map::appointment(v)?),
        _ => {
            let (id, c) = map::clock(v)?;
            return Ok((format!("clock|{id}"), Event::Clock(c)));
        }
    };
    let id = key_id(&e).unwrap_or_default();
    Ok((format!("{kind}|{id}"), e))
}

fn tombstone(kind: &str, id: &str) -> Option<(String, Event)> {
    let id = Id::text(id);
    let r = match kind {
        "user" => EntityRef::User(id.clone()),
        "location" => EntityRef::Location(id.clone()),
        "job" => EntityRef::Job(id.clone()),
        "appointment" => EntityRef::Appointment(id.clone()),
        _ => return None,
    };
    Some((format!("{kind}|{id}"), Event::Delete(r)))
}

pub struct Task {
    pub client: Client,
    pub ledger: Ledger,
    pub out: Out,
    pub cfg: ServiceTradeTenant,
    pub hook_url: Option<String>,
    reconciles: u64,
    /// Wall-clock start (s) of the last pass that completed, or of the task.
    reconciled_at: i64,
}

impl Task {
    pub fn new(cfg: ServiceTradeTenant, ledger: Ledger, out: Out, hook_url: Option<String>) -> Task {
        Task {
            client: Client::new(cfg.clone(), out.clone()),
            ledger,
            out,
            cfg,
            hook_url,
            reconciles: 0,
            reconciled_at: chrono::Utc::now().timestamp(),
        }
    }

    async fn start(&mut self) -> Result<(), ConnectError> {
        self.client.login().await?;
        if let Some(url) = self.hook_url.clone() {
            self.client.ensure_webhook(&url).await?;
        }
        let first = TYPES.iter().any(|k| self.ledger.state().cursor(k).is_none());
        self.reconcile(first).await
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Work>, mut shutdown: watch::Receiver<bool>) {
        let tenant = self.out.tenant.clone();
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.start().await {
                Ok(()) => break,
                Err(e) => tracing::warn!(tenant = %tenant, error = %e, "servicetrade start failed; retrying"),
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
        tracing::info!(tenant = %tenant, "servicetrade initial sync done");
        let mut tick = tokio::time::interval(Duration::from_millis(self.cfg.reconcile_interval_ms));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(work) = rx.recv() => {
                    if let Work::ServiceTrade(m) = work {
                        if let Err(e) = self.on_webhook(m).await {
                            tracing::warn!(tenant = %tenant, error = %e, "webhook handling failed; reconciliation will catch up");
                        }
                    }
                }
                _ = tick.tick() => {
                    self.reconciles += 1;
                    let full = self.reconciles.is_multiple_of(u64::from(self.cfg.full_sweep_every));
                    if let Err(e) = self.reconcile(full).await {
                        tracing::warn!(tenant = %tenant, error = %e, "reconciliation failed");
                        self.report_lag();
                    }
                }
            }
        }
        self.client.logout().await;
    }

    pub async fn on_webhook(&mut self, m: webhook::Message) -> Result<(), ConnectError> {
        if self.ledger.state().seen_message(&m.message_id) {
            self.out.metrics.webhook("servicetrade", &self.out.tenant, "duplicate");
            return Ok(());
        }
        let mut seen = HashSet::new();
        let mut items = Vec::new();
        for n in &m.notices {
            if !seen.insert((n.kind, n.id.clone())) {
                continue;
            }
            match self.client.get(n.kind, &n.id).await? {
                Some(v) => match to_event(n.kind, &v) {
                    Ok(item) => items.push(item),
                    Err(why) => {
                        self.out
                            .dead_letter(
                                &format!("api.servicetrade.{}", n.kind),
                                "malformed",
                                &why,
                                v.to_string().as_bytes(),
                            )
                            .await
                    }
                },
                None => items.extend(tombstone(n.kind, &n.id)),
            }
        }
        self.out.entities(&mut self.ledger, items).await?;
        self.ledger.record(vec![Entry::Message { id: m.message_id }])?;
        Ok(())
    }

    /// One pass over every resource (see the module doc).
    pub async fn reconcile(&mut self, full: bool) -> Result<(), ConnectError> {
        let now_s = chrono::Utc::now().timestamp();
        for kind in TYPES {
            let cursor = self.ledger.state().cursor(kind);
            let after = if full { None } else { cursor.map(|c| c - 1) };
            let listed = self.client.list(kind, after).await?;
            let mut max_updated = cursor.unwrap_or(0);
            let mut items = Vec::with_capacity(listed.len());
            let mut ids = HashSet::new();
            for v in &listed {
                max_updated = max_updated.max(map::updated(v));
                match to_event(kind, v) {
                    Ok((key, e)) => {
                        ids.insert(key.clone());
                        items.push((key, e));
                    }
                    Err(why) => {
                        self.out
                            .dead_letter(
                                &format!("api.servicetrade.{kind}"),
                                "malformed",
                                &why,
                                v.to_string().as_bytes(),
                            )
                            .await
                    }
                }
            }
            if full && kind != "clock" {
                for key in self.ledger.state().live_keys(&format!("{kind}|")) {
                    if !ids.contains(&key) {
                        let id = key.split_once('|').map(|(_, id)| id).unwrap_or_default();
                        items.extend(tombstone(kind, id));
                    }
                }
            }
            self.out.entities(&mut self.ledger, items).await?;
            self.ledger.record(vec![Entry::Cursor { name: kind.to_string(), at: max_updated }])?;
        }
        // Everything changed before this pass started is now published: the
        // lag is how old that guarantee is (it grows while passes fail, and
        // not on a quiet tenant whose newest change is old).
        self.reconciled_at = now_s;
        self.report_lag();
        Ok(())
    }

    /// Seconds since the start of the last completed pass, as the gauge.
    fn report_lag(&self) {
        let behind = chrono::Utc::now().timestamp() - self.reconciled_at;
        self.out.metrics.cursor_lag("servicetrade", &self.out.tenant, behind.max(0) as f64);
    }
}
