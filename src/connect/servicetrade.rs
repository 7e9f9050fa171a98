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
//! - Reconciliation asks each resource for `updatedAfter = cursor −
//!   reconcile_overlap_s`, where the cursor is the start of the last pass
//!   that completed, by ServiceTrade's clock (its `Date` header): an entity
//!   changed while a pass was listing is caught by the next. It publishes
//!   only what differs from the ledger; the cursor moves only after the
//!   records are acknowledged, so a restart resumes where the last
//!   acknowledged reconciliation ended: no full re-publish, no gap. Every
//!   `full_sweep_every`-th reconciliation (and the first ever) lists
//!   everything and publishes tombstones for entities that disappeared
//!   (deletes whose webhook was lost), guarded by [`super::sweep`].
//! - One item that cannot be mapped or encoded is a dead letter with the
//!   vendor's payload and the reason; the rest of the page is published and
//!   the cursor advances.
//! - Calls go through [`crate::vendor::servicetrade::Client`] (session,
//!   budget, retries of reads) on tokio's blocking pool; a shutdown
//!   interrupts its waits.
//! - Appointments (and clock events) are mirrored up to the tenant's
//!   horizon ([`crate::model::Settings::mirror_horizon_ms`]) after their
//!   window ends (their time), by ServiceTrade's clock: past it the ledger
//!   forgets them (each pass) and one changed or listed again is not
//!   published, so the ledger does not grow with the account's history and
//!   an old visit is never revived. Webhook message ids are remembered a
//!   day by the same clock.
//! - Clock events are published on the clock-event topic keyed by
//!   appointment; they are facts and are never tombstoned.
//! - Offices are the locations ServiceTrade marks `isVendor`: listed with
//!   the locations, published on the offices topic (ledger key `office|id`);
//!   a location that disappears is tombstoned as whichever it was.
//!   Contacts are a resource of their own (`GET /contact`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use super::inbox::QueueRx;
use super::ledger::{Entry, Ledger};
use super::out::{horizon_date, Item, Out};
use super::sweep::{self, Sweep};
use super::{ConnectError, Work};
use crate::config::tenants::ServiceTradeTenant;
use crate::config::webhook::Registration;
use crate::engine::{EntityRef, Event};
use crate::kafka::records::key_id;
use crate::model::Id;
use crate::vendor::call::{Stop, VendorError};
use crate::vendor::retry::Policy;
use crate::vendor::servicetrade::{map, webhook, Client, Listing, TYPES};

/// Maps one API item of `kind` to its record (ledger key, event, payload).
/// A vendor location is an office (ledger key `office|id`, offices topic).
fn to_event(kind: &str, v: &Value) -> Result<Item, String> {
    let (kind, e) = match kind {
        "user" => (kind, Event::User(map::user(v)?)),
        "location" if map::is_office(v) => ("office", Event::Office(map::office(v)?)),
        "location" => (kind, Event::Location(map::location(v)?)),
        "contact" => (kind, Event::Contact(map::contact(v)?)),
        "job" => (kind, Event::Job(map::job(v)?)),
        "appointment" => (kind, Event::Appointment(map::appointment(v)?)),
        _ => {
            let (id, c) = map::clock(v)?;
            return Ok(Item::new(format!("clock|{id}"), Event::Clock(c), Some(v.clone())));
        }
    };
    let id = key_id(&e).unwrap_or_default();
    Ok(Item::new(format!("{kind}|{id}"), e, Some(v.clone())))
}

/// The tombstones for an entity of `kind` that is gone. A location gone
/// may have been an office: both are offered, and only what was published
/// is tombstoned ([`super::out::Out::entities`] skips the other).
fn tombstone(kind: &str, id: &str) -> Vec<Item> {
    let id = Id::text(id);
    let refs = match kind {
        "user" => vec![("user", EntityRef::User(id.clone()))],
        "location" => vec![("location", EntityRef::Location(id.clone())), ("office", EntityRef::Office(id.clone()))],
        "office" => vec![("office", EntityRef::Office(id.clone()))],
        "contact" => vec![("contact", EntityRef::Contact(id.clone()))],
        "job" => vec![("job", EntityRef::Job(id.clone()))],
        "appointment" => vec![("appointment", EntityRef::Appointment(id.clone()))],
        _ => Vec::new(),
    };
    refs.into_iter().map(|(k, r)| Item::new(format!("{k}|{id}"), Event::Delete(r), None)).collect()
}

/// The ledger kinds a resource's items are published under.
fn ledger_kinds(kind: &'static str) -> &'static [&'static str] {
    match kind {
        "location" => &["location", "office"],
        "user" => &["user"],
        "contact" => &["contact"],
        "job" => &["job"],
        "appointment" => &["appointment"],
        _ => &[],
    }
}

pub struct Task {
    pub client: Arc<Client>,
    pub ledger: Ledger,
    pub out: Out,
    pub cfg: ServiceTradeTenant,
    pub hook: Option<Registration>,
    stop: Stop,
    reconciles: u64,
    /// Wall-clock start (s) of the last pass that completed, or of the task.
    reconciled_at: i64,
    /// How long after its window an appointment is mirrored (ms).
    horizon_ms: i64,
}

impl Task {
    pub fn new(
        cfg: ServiceTradeTenant,
        ledger: Ledger,
        out: Out,
        hook: Option<Registration>,
        policy: Policy,
        horizon_ms: i64,
    ) -> Task {
        let stop = Stop::new();
        let observer = Arc::new(out.call_metrics("servicetrade"));
        let client = Client::new(cfg.clone(), Duration::from_secs(30), policy, stop.clone(), observer);
        Task {
            client: Arc::new(client),
            ledger,
            out,
            cfg,
            hook,
            stop,
            reconciles: 0,
            reconciled_at: chrono::Utc::now().timestamp(),
            horizon_ms,
        }
    }

    /// An appointment whose window ended before the horizon (or a clock
    /// event from before it), which the ledger no longer (or never) knew:
    /// not mirrored.
    fn past_horizon(&self, item: &Item) -> bool {
        let cutoff = self.client.caller().vendor_now_ms() - self.horizon_ms;
        let past = horizon_date(&item.event).is_some_and(|t| t < cutoff) && !self.ledger.state().knows(&item.key);
        if past {
            self.out.metrics.past_horizon("servicetrade", &self.out.tenant, "skipped", 1);
        }
        past
    }

    /// Runs `f` with the client on tokio's blocking pool (vendor calls
    /// block and may wait out a rate budget).
    async fn vendor<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Client) -> Result<T, VendorError> + Send + 'static,
    ) -> Result<T, ConnectError> {
        super::off_runtime(&self.client, f).await
    }

    async fn start(&mut self) -> Result<(), ConnectError> {
        self.vendor(|c| c.login_retrying()).await?;
        if let Some(hook) = self.hook.clone() {
            self.vendor(move |c| c.ensure_webhook(&hook)).await?;
        }
        let first = TYPES.iter().any(|k| self.ledger.state().cursor(k).is_none());
        self.reconcile(first).await
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(mut self, mut rx: QueueRx, mut shutdown: watch::Receiver<bool>) {
        let tenant = self.out.tenant.clone();
        super::stop_on(shutdown.clone(), self.stop.clone());
        // Declared before the first sync: a tenant whose vendor never
        // answers alerts after three intervals.
        let job = ["servicetrade", tenant.as_str(), "reconcile"];
        self.out.metrics.jobs.declare(&job, self.cfg.reconcile_interval_ms as f64 / 1000.0);
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
        self.out.metrics.jobs.succeeded(&job);
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
                    match self.reconcile(full).await {
                        Ok(()) => self.out.metrics.jobs.succeeded(&job),
                        Err(e) => {
                            tracing::warn!(tenant = %tenant, error = %e, "reconciliation failed");
                            self.report_lag();
                        }
                    }
                }
            }
        }
        let client = self.client.clone();
        let _ = tokio::task::spawn_blocking(move || client.logout()).await;
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
            let (kind, id) = (n.kind, n.id.clone());
            match self.vendor(move |c| c.get(kind, &id)).await? {
                Some(v) => match to_event(n.kind, &v) {
                    Ok(item) if self.past_horizon(&item) => {}
                    Ok(item) => items.push(item),
                    Err(why) => self.malformed(n.kind, &why, &v).await,
                },
                None => items.extend(tombstone(n.kind, &n.id)),
            }
        }
        self.out.entities(&mut self.ledger, items).await?;
        let at = Some(self.client.caller().vendor_now_ms());
        self.ledger.record(vec![Entry::Message { id: m.message_id, at }])?;
        Ok(())
    }

    async fn malformed(&self, kind: &str, why: &str, v: &Value) {
        self.out.dead_letter(&format!("api.servicetrade.{kind}"), "malformed", why, v.to_string().as_bytes()).await
    }

    /// One pass over every resource. Each resource is asked for what
    /// changed since its cursor less the overlap; the cursor then becomes
    /// the pass's start by the vendor's clock (not the newest `updated`
    /// stamp seen: an entity changed while the pass was listing would be
    /// missed until the next full sweep). A full pass lists everything and
    /// tombstones what disappeared ([`sweep`]).
    pub async fn reconcile(&mut self, full: bool) -> Result<(), ConnectError> {
        let now_s = chrono::Utc::now().timestamp();
        let pass_start_s = self.client.caller().vendor_now_ms().div_euclid(1000);
        for kind in TYPES {
            let cursor = self.ledger.state().cursor(kind);
            let after = if full { None } else { cursor.map(|c| c - self.cfg.reconcile_overlap_s) };
            let Listing { items: listed, complete } = self.vendor(move |c| c.list(kind, after)).await?;
            let mut items = Vec::with_capacity(listed.len());
            let mut ids = HashSet::new();
            for v in &listed {
                match to_event(kind, v) {
                    Ok(item) => {
                        ids.insert(item.key.clone());
                        if !self.past_horizon(&item) {
                            items.push(item);
                        }
                    }
                    Err(why) => self.malformed(kind, &why, v).await,
                }
            }
            let swept: &[&str] = if full { ledger_kinds(kind) } else { &[] };
            for ledger_kind in swept {
                let prefix = format!("{ledger_kind}|");
                let live = self.ledger.state().live_keys(&prefix);
                let listed: HashSet<String> = ids.iter().filter(|k| k.starts_with(&prefix)).cloned().collect();
                match sweep::plan(&live, &listed, complete, self.cfg.max_delete_share) {
                    Sweep::Keep if !complete => {
                        tracing::warn!(tenant = %self.out.tenant, kind, "listing without a trustworthy page count; no deletes from this sweep");
                    }
                    Sweep::Keep => {}
                    Sweep::Delete(keys) => items.extend(keys.iter().flat_map(|k| tombstone_key(k))),
                    Sweep::Confirm(keys) => items.extend(self.confirm(kind, keys).await?),
                }
            }
            self.out.entities(&mut self.ledger, items).await?;
            self.ledger.record(vec![Entry::Cursor { name: kind.to_string(), at: pass_start_s }])?;
        }
        let forgotten = self.ledger.forget_before(pass_start_s * 1000 - self.horizon_ms)?;
        if forgotten > 0 {
            tracing::debug!(tenant = %self.out.tenant, forgotten, "appointments past the mirror horizon forgotten");
            self.out.metrics.past_horizon("servicetrade", &self.out.tenant, "forgotten", forgotten as u64);
        }
        // Everything changed before this pass started is now published: the
        // lag is how old that guarantee is (it grows while passes fail, and
        // not on a quiet tenant whose newest change is old).
        self.reconciled_at = now_s;
        self.report_lag();
        Ok(())
    }

    /// A sweep would delete more than its share: asks for each absentee by
    /// id; only a 404 tombstones it (one still there is re-published).
    async fn confirm(&self, kind: &'static str, keys: Vec<String>) -> Result<Vec<Item>, ConnectError> {
        tracing::warn!(tenant = %self.out.tenant, kind, absent = keys.len(), "a full sweep would delete more than its share; confirming each by id");
        self.out.metrics.sweep_confirmations("servicetrade", &self.out.tenant, kind, keys.len() as u64);
        let mut out = Vec::new();
        for key in keys {
            let id = key.split_once('|').map(|(_, id)| id.to_string()).unwrap_or_default();
            let lookup = id.clone();
            match self.vendor(move |c| c.get(kind, &lookup)).await? {
                None => out.extend(tombstone(kind, &id)),
                Some(v) => match to_event(kind, &v) {
                    Ok(item) => out.push(item),
                    Err(why) => self.malformed(kind, &why, &v).await,
                },
            }
        }
        Ok(out)
    }

    /// Seconds since the start of the last completed pass, as the gauge.
    fn report_lag(&self) {
        let behind = chrono::Utc::now().timestamp() - self.reconciled_at;
        self.out.metrics.cursor_lag("servicetrade", &self.out.tenant, behind.max(0) as f64);
    }
}

/// The tombstone of a ledger key (`kind|id`).
fn tombstone_key(key: &str) -> Vec<Item> {
    let (kind, id) = key.split_once('|').unwrap_or_default();
    tombstone(kind, id)
}
