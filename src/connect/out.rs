//! What a tenant task publishes, decided with its ledger: changed entities,
//! new valid pings, dead letters, and ticks. The order is always decide →
//! publish and wait for acks → record in the ledger (see [`super::ledger`]).
//!
//! Ticks carry event-time progress to the processor (fences and watches
//! expire on them): after a batch of pings, a tick at the newest ping time
//! seen minus [`TICK_LATENESS_MS`], only when that moves forward. Points
//! buffered longer than that may arrive after their appointment expired.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use serde_json::Value;

use super::ledger::{fingerprint, Entry, Ledger, PingVerdict};
use super::metrics::Metrics;
use super::publish::{Outgoing, Publisher};
use super::validate::{check_ping, PingLimits, PingRejection};
use super::ConnectError;
use crate::engine::Event;
use crate::model::Ping;

/// One entity record to publish: its ledger key, the event, and the
/// vendor's payload it came from (kept for a dead letter).
#[derive(Debug, Clone)]
pub struct Item {
    pub key: String,
    pub event: Event,
    pub raw: Option<Value>,
}

impl Item {
    pub fn new(key: String, event: Event, raw: Option<Value>) -> Item {
        Item { key, event, raw }
    }
}

/// Counts a connector's vendor calls into its metrics.
pub struct CallMetrics {
    metrics: Metrics,
    connector: &'static str,
    tenant: String,
}

impl crate::vendor::call::Observer for CallMetrics {
    fn call(&self, api: &str, status: Option<u16>) {
        self.metrics.api_call(self.connector, &self.tenant, api, status);
    }
}

#[derive(Clone)]
pub struct Out {
    pub publisher: Arc<Publisher>,
    pub metrics: Metrics,
    pub connector: &'static str,
    pub tenant: String,
    /// The last tick published (ms), shared by the tenant's clones.
    pub watermark: Arc<AtomicI64>,
}

/// How far event time trails the newest ping in the ticks.
pub const TICK_LATENESS_MS: i64 = 30 * 60_000;

/// The date by which the mirror forgets an entity ([`Ledger::forget_before`]):
/// an appointment's window end (or start), a clock event's time; others
/// are mirrored as long as the vendor has them.
pub fn horizon_date(event: &Event) -> Option<i64> {
    match event {
        Event::Appointment(a) => a.window_end.or(a.window_start).map(|t| t.millis()),
        Event::Clock(c) => Some(c.time.millis()),
        _ => None,
    }
}

impl Out {
    /// The observer for this tenant's vendor client.
    pub fn call_metrics(&self, connector: &'static str) -> CallMetrics {
        CallMetrics { metrics: self.metrics.clone(), connector, tenant: self.tenant.clone() }
    }

    fn count(&self, records: &[Outgoing]) {
        let mut by_topic: HashMap<String, u64> = HashMap::new();
        for r in records {
            *by_topic.entry(self.publisher.topic_name(r.topic)).or_default() += 1;
        }
        for (topic, n) in by_topic {
            self.metrics.published(self.connector, &self.tenant, &topic, n);
        }
    }

    /// Publishes the events whose content differs from what the ledger says
    /// was last published under their ledger key (the last one per key wins
    /// within the batch); returns how many were published. One that cannot
    /// be encoded (a value the schema refuses) is a dead letter with its
    /// vendor payload; the others are published.
    pub async fn entities(&self, ledger: &mut Ledger, items: Vec<Item>) -> Result<usize, ConnectError> {
        let mut last: HashMap<String, usize> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            last.insert(item.key.clone(), i);
        }
        let mut records = Vec::new();
        let mut entries = Vec::new();
        let mut unchanged = 0;
        for (i, Item { key, event, raw }) in items.iter().enumerate() {
            if last.get(key) != Some(&i) {
                continue;
            }
            let rec = match self.publisher.event(&self.tenant, event) {
                Ok(r) => r,
                Err(e) => {
                    let body = raw.clone().unwrap_or_else(|| serde_json::to_value(event).unwrap_or(Value::Null));
                    let source = format!("api.{}.{}", self.connector, key.split('|').next().unwrap_or("entity"));
                    self.dead_letter(&source, "invalid", &e.to_string(), body.to_string().as_bytes()).await;
                    continue;
                }
            };
            let hash = rec.value.as_deref().map(fingerprint);
            if ledger.state().changed(key, hash) {
                records.push(rec);
                let at = horizon_date(event);
                entries.push(Entry::Published { key: key.clone(), hash, at });
            } else {
                unchanged += 1;
            }
        }
        if unchanged > 0 {
            self.metrics.duplicate(self.connector, &self.tenant, "entity", unchanged);
        }
        self.publisher.send_all(&records).await?;
        ledger.record(entries)?;
        self.count(&records);
        Ok(records.len())
    }

    /// Validates and publishes pings: invalid or conflicting ones become
    /// dead letters, duplicates are dropped. Returns how many were published.
    pub async fn pings(
        &self,
        ledger: &mut Ledger,
        pings: Vec<(Ping, Value)>,
        limits: &PingLimits,
        source: &str,
    ) -> Result<usize, ConnectError> {
        let mut records = Vec::new();
        let mut entries = Vec::new();
        let mut batch: HashMap<(String, i64), u64> = HashMap::new();
        let mut dups = 0;
        for (ping, raw) in pings {
            if let Err(why) = check_ping(&ping, limits) {
                self.dead_letter(source, why.class(), &why.to_string(), raw.to_string().as_bytes()).await;
                continue;
            }
            let rec = self.publisher.event(&self.tenant, &Event::Ping(ping.clone()))?;
            let hash = rec.value.as_deref().map(fingerprint).unwrap_or(0);
            let slot = (ping.vehicle.to_string(), ping.time.millis());
            let verdict = match batch.get(&slot) {
                Some(h) if *h == hash => PingVerdict::Duplicate,
                Some(_) => PingVerdict::Conflict,
                None => ledger.state().ping(&slot.0, slot.1, hash),
            };
            match verdict {
                PingVerdict::New => {
                    batch.insert(slot.clone(), hash);
                    records.push(rec);
                    entries.push(Entry::Ping { vehicle: slot.0, time: slot.1, hash });
                }
                PingVerdict::Duplicate => dups += 1,
                PingVerdict::Conflict => {
                    let why = PingRejection::Conflict;
                    self.dead_letter(source, why.class(), &why.to_string(), raw.to_string().as_bytes()).await;
                }
            }
        }
        if dups > 0 {
            self.metrics.duplicate(self.connector, &self.tenant, "ping", dups);
        }
        let published = records.len();
        let newest = batch.keys().map(|(_, t)| *t).max();
        let tick = newest.map(|t| t - TICK_LATENESS_MS).filter(|t| *t > self.watermark.load(Ordering::Relaxed));
        if let Some(t) = tick {
            records.push(self.publisher.event(&self.tenant, &Event::Tick(crate::model::Ts(t)))?);
        }
        self.publisher.send_all(&records).await?;
        if let Some(t) = tick {
            self.watermark.fetch_max(t, Ordering::Relaxed);
        }
        ledger.record(entries)?;
        self.count(&records);
        Ok(published)
    }

    /// Publishes a dead letter; failures are logged (the caller has already
    /// decided to refuse the input).
    pub async fn dead_letter(&self, source: &str, class: &str, reason: &str, body: &[u8]) {
        self.metrics.dead_letter(self.connector, &self.tenant, class);
        tracing::warn!(connector = self.connector, tenant = %self.tenant, source, class, reason, "dead letter");
        let rec = match self.publisher.dead_letter(&self.tenant, source, class, reason, body) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode dead letter");
                return;
            }
        };
        if let Err(e) = self.publisher.send_all(std::slice::from_ref(&rec)).await {
            tracing::error!(error = %e, "cannot publish dead letter");
        } else {
            self.count(std::slice::from_ref(&rec));
        }
    }
}
