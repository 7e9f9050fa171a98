//! The Azuga connector for one tenant: `GPS_MESSAGE` webhooks, live-location
//! polling as the fallback, and periodic sync of drivers, vehicles and
//! pairings.
//!
//! Invariants:
//! - Azuga allows one request per API call per budget (a minute in v1): the
//!   client waits out each call's budget before calling ([`Budget`]), and
//!   on a 429 sleeps `Retry-After` and tries once more.
//! - Every ping, from a webhook or a poll, passes [`super::validate`] and the
//!   ledger's duplicate check; invalid or conflicting ones become dead
//!   letters with the reason, exact duplicates are dropped and counted.
//! - Driver, vehicle and pairing lists are complete each time, so an entity
//!   missing from a list is tombstoned.
//! - The webhook is registered once per tenant and URL (remembered in the
//!   ledger).
//! - Webhooks are lossy and live locations show only each vehicle's newest
//!   fix, so a location-history backfill runs at start and every
//!   `history_interval_ms`: it reads every fix from `history_overlap_ms`
//!   before the newest one it has seen (the `location_history` cursor in the
//!   ledger, advanced only after the pings are published) up to the
//!   furthest future a ping may have. Fixes already published are dropped by the duplicate
//!   check, so a fix that reaches Azuga is on the topic once however many
//!   webhooks were lost and however long the connector was down; a first
//!   start reads back `max_ping_age_s`.

pub mod map;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use super::http::{Answer, Http};
use super::ledger::{Entry, Ledger};
use super::out::Out;
use super::tenants::AzugaTenant;
use super::validate::PingLimits;
use super::{ConnectError, Work};
use crate::engine::{EntityRef, Event};
use crate::kafka::records::{key_id, parse_pairing_key_id};
use crate::model::Id;

/// Per-call pacing: at most one call per name per `per_call`. Pure (the
/// caller passes `now`).
#[derive(Debug, Clone)]
pub struct Budget {
    per_call: Duration,
    last: HashMap<String, Instant>,
}

impl Budget {
    pub fn new(per_call: Duration) -> Budget {
        Budget { per_call, last: HashMap::new() }
    }

    /// How long to wait before `call` may go out at `now`.
    pub fn wait(&self, call: &str, now: Instant) -> Duration {
        match self.last.get(call) {
            Some(t) => (*t + self.per_call).saturating_duration_since(now),
            None => Duration::ZERO,
        }
    }

    pub fn spent(&mut self, call: &str, now: Instant) {
        self.last.insert(call.to_string(), now);
    }
}

pub struct Client {
    http: Http,
    cfg: AzugaTenant,
    out: Out,
    budget: Budget,
}

impl Client {
    pub fn new(cfg: AzugaTenant, out: Out) -> Client {
        let budget = Budget::new(Duration::from_millis(cfg.rate_limit_ms));
        Client { http: Http::new(Duration::from_secs(30)), cfg, out, budget }
    }

    async fn once(
        &mut self,
        method: &'static str,
        call: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, ConnectError> {
        let wait = self.budget.wait(call, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        self.budget.spent(call, Instant::now());
        let auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{}:", self.cfg.api_key.expose()))
        );
        let url = format!("{}{}", self.cfg.base_url, path);
        let r = self.http.call(method, url, vec![("Authorization", auth)], body.map(Value::to_string)).await;
        self.out.metrics.api_call("azuga", &self.out.tenant, call, r.as_ref().ok().map(|a| a.status));
        r.map_err(|message| ConnectError::Unreachable { call: call.to_string(), message })
    }

    /// A call within the budget; on 429 waits `Retry-After` and retries once.
    pub async fn call(
        &mut self,
        method: &'static str,
        call: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ConnectError> {
        let mut a = self.once(method, call, path, body.as_ref()).await?;
        if a.status == 429 {
            let wait = Duration::from_secs(a.retry_after_s.unwrap_or(60).min(600));
            tracing::info!(tenant = %self.out.tenant, call, wait_s = wait.as_secs(), "azuga rate limit; waiting");
            tokio::time::sleep(wait).await;
            self.budget.spent(call, Instant::now() - self.budget.per_call);
            a = self.once(method, call, path, body.as_ref()).await?;
        }
        if !(200..300).contains(&a.status) {
            let message = serde_json::from_str::<Value>(&a.body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| a.body.chars().take(120).collect());
            return Err(ConnectError::Http { call: call.to_string(), status: a.status, message });
        }
        let v: Value = serde_json::from_str(&a.body)
            .map_err(|e| ConnectError::Protocol { call: call.to_string(), message: e.to_string() })?;
        Ok(v.get("data").cloned().unwrap_or(Value::Null))
    }

    async fn list(&mut self, call: &str, path: &str) -> Result<Vec<Value>, ConnectError> {
        match self.call("GET", call, path, None).await? {
            Value::Array(items) => Ok(items),
            _ => Err(ConnectError::Protocol { call: call.to_string(), message: "data is not an array".into() }),
        }
    }
}

pub struct Task {
    client: Client,
    ledger: Ledger,
    out: Out,
    cfg: AzugaTenant,
    hook_url: Option<String>,
}

const HOOK_CURSOR: &str = "webhook_registered";
const HISTORY_CURSOR: &str = "location_history";

impl Task {
    pub fn new(cfg: AzugaTenant, ledger: Ledger, out: Out, hook_url: Option<String>) -> Task {
        Task { client: Client::new(cfg.clone(), out.clone()), ledger, out, cfg, hook_url }
    }

    fn limits(&self) -> PingLimits {
        PingLimits {
            now_ms: chrono::Utc::now().timestamp_millis(),
            max_age_s: self.cfg.max_ping_age_s,
            max_future_s: self.cfg.max_ping_future_s,
        }
    }

    async fn start(&mut self) -> Result<(), ConnectError> {
        if let Some(url) = self.hook_url.clone() {
            // Remembered per URL: a new public URL registers again.
            let name = format!("{HOOK_CURSOR}_{:016x}", super::ledger::fingerprint(url.as_bytes()));
            if self.ledger.state().cursor(&name).is_none() {
                self.client
                    .call(
                        "POST",
                        "add_webhook",
                        "/v1/webhooks",
                        Some(json!({"url": url, "eventTypes": ["GPS_MESSAGE"]})),
                    )
                    .await?;
                self.ledger.record(vec![Entry::Cursor { name, at: 1 }])?;
            }
        }
        self.sync_entities().await
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<Work>, mut shutdown: watch::Receiver<bool>) {
        let tenant = self.out.tenant.clone();
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.start().await {
                Ok(()) => break,
                Err(e) => tracing::warn!(tenant = %tenant, error = %e, "azuga start failed; retrying"),
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
        let mut poll = tokio::time::interval(Duration::from_millis(self.cfg.poll_interval_ms));
        let mut sync = tokio::time::interval(Duration::from_millis(self.cfg.entity_sync_interval_ms));
        sync.tick().await;
        let mut history = tokio::time::interval(Duration::from_millis(self.cfg.history_interval_ms));
        history.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                Some(work) = rx.recv() => {
                    if let Work::Azuga(pings) = work {
                        let limits = self.limits();
                        if let Err(e) = self.out.pings(&mut self.ledger, pings, &limits, "webhook.azuga").await {
                            tracing::warn!(tenant = %tenant, error = %e, "publishing webhook pings failed");
                        }
                    }
                }
                _ = poll.tick() => {
                    if let Err(e) = self.poll_live().await {
                        tracing::warn!(tenant = %tenant, error = %e, "live-location poll failed");
                    }
                }
                _ = history.tick() => {
                    if let Err(e) = self.backfill_history().await {
                        tracing::warn!(tenant = %tenant, error = %e, "location-history backfill failed");
                    }
                }
                _ = sync.tick() => {
                    if let Err(e) = self.sync_entities().await {
                        tracing::warn!(tenant = %tenant, error = %e, "entity sync failed");
                    }
                }
            }
        }
    }

    pub async fn poll_live(&mut self) -> Result<(), ConnectError> {
        let items = self.client.list("live_locations", "/v1/live-locations").await?;
        let pings = self.locations(items, "api.azuga.live_locations").await;
        let limits = self.limits();
        self.out.pings(&mut self.ledger, pings, &limits, "api.azuga.live_locations").await?;
        Ok(())
    }

    /// Live-location or location-history items as pings; malformed ones
    /// become dead letters.
    async fn locations(&self, items: Vec<Value>, source: &str) -> Vec<(crate::model::Ping, Value)> {
        let mut pings = Vec::with_capacity(items.len());
        for v in items {
            match map::live_location(&v) {
                Ok(p) => pings.push((p, v)),
                Err(why) => self.out.dead_letter(source, "malformed", &why, v.to_string().as_bytes()).await,
            }
        }
        pings
    }

    /// Reads the account's location history since the cursor (less the
    /// overlap) and publishes what was never published.
    pub async fn backfill_history(&mut self) -> Result<(), ConnectError> {
        let limits = self.limits();
        let from = match self.ledger.state().cursor(HISTORY_CURSOR) {
            Some(newest) => newest - self.cfg.history_overlap_ms,
            None => limits.now_ms - self.cfg.max_ping_age_s * 1000,
        };
        // Fixes further ahead would be refused as from the future anyway.
        let to = limits.now_ms + self.cfg.max_ping_future_s * 1000 + 1;
        let path = format!("/v1/location-history?fromDate={from}&toDate={to}");
        let items = self.client.list("location_history", &path).await?;
        let pings = self.locations(items, "api.azuga.location_history").await;
        let newest = pings.iter().map(|(p, _)| p.time.millis()).filter(|t| *t <= limits.now_ms).max();
        let published = self.out.pings(&mut self.ledger, pings, &limits, "api.azuga.location_history").await?;
        if published > 0 {
            tracing::info!(tenant = %self.out.tenant, published, "location history: recovered fixes");
        }
        if let Some(newest) = newest.filter(|n| self.ledger.state().cursor(HISTORY_CURSOR).is_none_or(|c| *n > c)) {
            self.ledger.record(vec![Entry::Cursor { name: HISTORY_CURSOR.into(), at: newest }])?;
        }
        Ok(())
    }

    pub async fn sync_entities(&mut self) -> Result<(), ConnectError> {
        let drivers = self.client.list("users", "/v3/users?userType=driver").await?;
        let vehicles = self.client.list("vehicles", "/v1/vehicles").await?;
        let pairings = self.client.list("pairings", "/v1/pairings").await?;
        let mut items = Vec::new();
        for (kind, list) in [("driver", &drivers), ("vehicle", &vehicles), ("pairing", &pairings)] {
            let mut keys = HashSet::new();
            for v in list {
                let mapped = match kind {
                    "driver" => map::driver(v).map(Event::Driver),
                    "vehicle" => map::vehicle(v).map(Event::Vehicle),
                    _ => map::pairing(v).map(Event::Pairing),
                };
                match mapped {
                    Ok(e) => {
                        let key = format!("{kind}|{}", key_id(&e).unwrap_or_default());
                        keys.insert(key.clone());
                        items.push((key, e));
                    }
                    Err(why) => {
                        self.out
                            .dead_letter(&format!("api.azuga.{kind}"), "malformed", &why, v.to_string().as_bytes())
                            .await
                    }
                }
            }
            for key in self.ledger.state().live_keys(&format!("{kind}|")) {
                if keys.contains(&key) {
                    continue;
                }
                let id = key.split_once('|').map(|(_, id)| id).unwrap_or_default();
                let r = match kind {
                    "driver" => Some(EntityRef::Driver(Id::text(id))),
                    "vehicle" => Some(EntityRef::Vehicle(Id::text(id))),
                    _ => parse_pairing_key_id(id).ok().map(|(driver, vehicle, from)| EntityRef::Pairing {
                        driver,
                        vehicle,
                        from,
                    }),
                };
                if let Some(r) = r {
                    items.push((key, Event::Delete(r)));
                }
            }
        }
        self.out.entities(&mut self.ledger, items).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_paces_each_call_separately() {
        let mut b = Budget::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(b.wait("users", t0), Duration::ZERO);
        b.spent("users", t0);
        assert_eq!(b.wait("users", t0 + Duration::from_secs(10)), Duration::from_secs(50));
        assert_eq!(b.wait("vehicles", t0), Duration::ZERO);
        assert_eq!(b.wait("users", t0 + Duration::from_secs(61)), Duration::ZERO);
    }
}
