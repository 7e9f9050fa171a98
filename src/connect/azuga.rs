//! The Azuga connector for one tenant: `GPS_MESSAGE` webhooks, live-location
//! polling as the fallback, and periodic sync of drivers, vehicles and
//! pairings.
//!
//! Invariants:
//! - Azuga allows one request per API call per budget (a minute in v1): the
//!   client ([`crate::vendor::azuga::Client`]) waits out each call's budget
//!   and a 429's `Retry-After` (capped), on tokio's blocking pool.
//! - Every ping, from a webhook or a poll, passes [`super::validate`] and the
//!   ledger's duplicate check; invalid or conflicting ones become dead
//!   letters with the reason, exact duplicates are dropped and counted.
//! - Driver, vehicle and pairing lists are complete each time, so an entity
//!   missing from a list is tombstoned — at most a share of a kind at once
//!   unless a second listing agrees ([`super::sweep`]).
//! - "Now", for refusing fixes from the future, is the later of our clock
//!   and Azuga's, so a slow local clock does not refuse live fixes.
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

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use super::inbox::QueueRx;
use super::ledger::{Entry, Ledger};
use super::out::{Item, Out};
use super::sweep::{self, Sweep};
use super::validate::PingLimits;
use super::{ConnectError, Work};
use crate::config::tenants::AzugaTenant;
use crate::config::webhook::Registration;
use crate::engine::{EntityRef, Event};
use crate::kafka::records::{key_id, parse_pairing_key_id};
use crate::model::Id;
use crate::vendor::azuga::{map, Client};
use crate::vendor::call::{Stop, VendorError};
use crate::vendor::retry::Policy;

pub struct Task {
    client: Arc<Client>,
    ledger: Ledger,
    out: Out,
    cfg: AzugaTenant,
    hook: Option<Registration>,
    stop: Stop,
}

const HOOK_CURSOR: &str = "webhook_registered";
const HISTORY_CURSOR: &str = "location_history";

impl Task {
    pub fn new(cfg: AzugaTenant, ledger: Ledger, out: Out, hook: Option<Registration>, policy: Policy) -> Task {
        let stop = Stop::new();
        let observer = Arc::new(out.call_metrics("azuga"));
        let client = Client::new(cfg.clone(), Duration::from_secs(30), policy, stop.clone(), observer);
        Task { client: Arc::new(client), ledger, out, cfg, hook, stop }
    }

    /// Runs `f` with the client on tokio's blocking pool (vendor calls
    /// block and wait out Azuga's per-call budget).
    async fn vendor<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Client) -> Result<T, VendorError> + Send + 'static,
    ) -> Result<T, ConnectError> {
        super::off_runtime(&self.client, f).await
    }

    /// The limits a ping is judged by. "Now" is the later of our clock and
    /// Azuga's (its last `Date` header): a connector whose clock is slow
    /// must not refuse live fixes as from the future.
    fn limits(&self) -> PingLimits {
        let local = chrono::Utc::now().timestamp_millis();
        PingLimits {
            now_ms: local.max(self.client.caller().vendor_now_ms()),
            max_age_s: self.cfg.max_ping_age_s,
            max_future_s: self.cfg.max_ping_future_s,
        }
    }

    async fn start(&mut self) -> Result<(), ConnectError> {
        if let Some(hook) = self.hook.clone() {
            // Remembered per URL and scheme: a new public URL or scheme registers again.
            let seen = format!("{} {}", hook.url, hook.scheme.as_str());
            let name = format!("{HOOK_CURSOR}_{:016x}", super::ledger::fingerprint(seen.as_bytes()));
            if self.ledger.state().cursor(&name).is_none() {
                self.vendor(move |c| c.add_webhook(&hook)).await?;
                self.ledger.record(vec![Entry::Cursor { name, at: 1 }])?;
            }
        }
        self.sync_entities().await
    }

    pub async fn run(mut self, mut rx: QueueRx, mut shutdown: watch::Receiver<bool>) {
        let tenant = self.out.tenant.clone();
        super::stop_on(shutdown.clone(), self.stop.clone());
        let jobs = self.out.metrics.jobs.clone();
        for (job, ms) in [
            ("live_poll", self.cfg.poll_interval_ms),
            ("history", self.cfg.history_interval_ms),
            ("entity_sync", self.cfg.entity_sync_interval_ms),
        ] {
            jobs.declare(&["azuga", &tenant, job], ms as f64 / 1000.0);
        }
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
                    match self.poll_live().await {
                        Ok(()) => jobs.succeeded(&["azuga", &tenant, "live_poll"]),
                        Err(e) => tracing::warn!(tenant = %tenant, error = %e, "live-location poll failed"),
                    }
                }
                _ = history.tick() => {
                    match self.backfill_history().await {
                        Ok(()) => jobs.succeeded(&["azuga", &tenant, "history"]),
                        Err(e) => tracing::warn!(tenant = %tenant, error = %e, "location-history backfill failed"),
                    }
                }
                _ = sync.tick() => {
                    match self.sync_entities().await {
                        Ok(()) => jobs.succeeded(&["azuga", &tenant, "entity_sync"]),
                        Err(e) => tracing::warn!(tenant = %tenant, error = %e, "entity sync failed"),
                    }
                }
            }
        }
    }

    pub async fn poll_live(&mut self) -> Result<(), ConnectError> {
        let items = self.vendor(|c| c.live_locations()).await?;
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
        let items = self.vendor(move |c| c.location_history(from, to)).await?;
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

    /// Lists drivers, vehicles and pairings and publishes what changed.
    /// The lists are complete each time, so an entity missing from one is
    /// tombstoned, within [`sweep`]'s share; more than that waits for a
    /// second listing that agrees.
    pub async fn sync_entities(&mut self) -> Result<(), ConnectError> {
        let lists = self.vendor(|c| Ok((c.drivers()?, c.vehicles()?, c.pairings()?))).await?;
        let (drivers, vehicles, pairings) = lists;
        let mut items = Vec::new();
        for (kind, list) in [("driver", &drivers), ("vehicle", &vehicles), ("pairing", &pairings)] {
            let (mapped, keys) = self.mapped(kind, list).await;
            items.extend(mapped);
            let live = self.ledger.state().live_keys(&format!("{kind}|"));
            let absent = match sweep::plan(&live, &keys, true, self.cfg.max_delete_share) {
                Sweep::Keep => Vec::new(),
                Sweep::Delete(keys) => keys,
                Sweep::Confirm(keys) => self.confirm(kind, keys).await?,
            };
            items.extend(absent.iter().filter_map(|k| tombstone(kind, k)));
        }
        self.out.entities(&mut self.ledger, items).await?;
        Ok(())
    }

    /// Maps one list's items (malformed ones become dead letters); the
    /// records and their keys.
    async fn mapped(&self, kind: &str, list: &[Value]) -> (Vec<Item>, HashSet<String>) {
        let mut items = Vec::new();
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
                    items.push(Item::new(key, e, Some(v.clone())));
                }
                Err(why) => {
                    self.out
                        .dead_letter(&format!("api.azuga.{kind}"), "malformed", &why, v.to_string().as_bytes())
                        .await
                }
            }
        }
        (items, keys)
    }

    /// More of a kind would go than a sweep may delete at once: lists the
    /// kind again and keeps only the absentees the second listing agrees on.
    async fn confirm(&self, kind: &'static str, absent: Vec<String>) -> Result<Vec<String>, ConnectError> {
        tracing::warn!(tenant = %self.out.tenant, kind, absent = absent.len(), "a sync would delete more than its share; confirming with a second listing");
        self.out.metrics.sweep_confirmations("azuga", &self.out.tenant, kind, absent.len() as u64);
        let again = self
            .vendor(move |c| match kind {
                "driver" => c.drivers(),
                "vehicle" => c.vehicles(),
                _ => c.pairings(),
            })
            .await?;
        let (_, keys) = self.mapped(kind, &again).await;
        Ok(absent.into_iter().filter(|k| !keys.contains(k)).collect())
    }
}

/// The tombstone for a ledger key of `kind`.
fn tombstone(kind: &str, key: &str) -> Option<Item> {
    let id = key.split_once('|').map(|(_, id)| id).unwrap_or_default();
    let r = match kind {
        "driver" => EntityRef::Driver(Id::text(id)),
        "vehicle" => EntityRef::Vehicle(Id::text(id)),
        _ => {
            let (driver, vehicle, from) = parse_pairing_key_id(id).ok()?;
            EntityRef::Pairing { driver, vehicle, from }
        }
    };
    Some(Item::new(key.to_string(), Event::Delete(r), None))
}
