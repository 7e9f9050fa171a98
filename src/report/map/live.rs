//! The live map: each tenant's current view, kept fresh from the report
//! replica and the positions replica, and streamed to open pages.
//!
//! - [`Hub`]: per tenant, the latest published view and a broadcast of
//!   server-sent events (`fix`: vehicles that moved; `view`: fences and
//!   vehicles whose state, ETA or technician changed, with the view's
//!   `seq`). Events are serialised once for every subscriber. Closing the
//!   hub ends every stream (a server stop waits for open requests).
//! - [`MapData`]: what the HTTP handlers read; [`LiveMap`] is the
//!   pipeline's, a benchmark may bring its own.
//! - [`LiveMap`]: a refresher thread rebuilds every tenant's view of its
//!   live day (the local day of its newest fix) when the replica stored a
//!   processor batch or a sink result, and at most once a second when only
//!   positions moved; it publishes the difference and sets
//!   `geoclock_report_late_appointments{tenant}`.
//!
//! Latency budget for a decision: the replica checks the changelog every
//! 500 ms, the refresher looks every 250 ms. Fixes skip the refresher:
//! the positions follower hands them to the hub as soon as it stored them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use prometheus::IntGaugeVec;
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};

use super::geojson::{fence_feature, vehicle_feature, Trail};
use super::positions::{tracks_of, Moved, Positions};
use super::view::{build, diff, fences_of, Input, TenantView};
use crate::config::tenants::Tenant;
use crate::engine::Engine;
use crate::model::Ts;
use crate::report::render::{for_day, local_day, zone};
use crate::report::replica::{Replica, ReplicaError};
use crate::report::state::rows_of_engines;

/// How many events a slow page may fall behind before it resynchronises.
const BACKLOG: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error("map: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("map: catching up with the pipeline")]
    NotReady,
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveEvent {
    pub name: &'static str,
    pub data: String,
}

struct Channel {
    tx: broadcast::Sender<Arc<LiveEvent>>,
    view: RwLock<Option<Arc<TenantView>>>,
}

/// Per-tenant views and event streams (see the module docs).
pub struct Hub {
    channels: HashMap<String, Channel>,
    seq: AtomicU64,
    closing: watch::Sender<bool>,
}

/// `[id, lon, lat, time ms, mph, heading]` per moved vehicle.
pub fn fixes_json(moved: &[Moved]) -> Value {
    let fixes: Vec<Value> = moved
        .iter()
        .map(|m| json!([m.vehicle, m.fix.lon, m.fix.lat, m.fix.time.millis(), m.fix.speed_mph, m.heading_deg]))
        .collect();
    json!({"fixes": fixes})
}

impl Hub {
    pub fn new(tenants: impl IntoIterator<Item = String>) -> Hub {
        let channels = tenants
            .into_iter()
            .map(|t| (t, Channel { tx: broadcast::channel(BACKLOG).0, view: RwLock::new(None) }))
            .collect();
        Hub { channels, seq: AtomicU64::new(0), closing: watch::channel(false).0 }
    }

    /// The tenant's events from now on, and the hub's closing flag.
    pub fn subscribe(&self, tenant: &str) -> Option<(broadcast::Receiver<Arc<LiveEvent>>, watch::Receiver<bool>)> {
        let c = self.channels.get(tenant)?;
        Some((c.tx.subscribe(), self.closing.subscribe()))
    }

    /// Streams the vehicles that moved.
    pub fn fixes(&self, tenant: &str, moved: &[Moved]) {
        if let Some(c) = self.channels.get(tenant) {
            if c.tx.receiver_count() > 0 && !moved.is_empty() {
                let _ = c.tx.send(Arc::new(LiveEvent { name: "fix", data: fixes_json(moved).to_string() }));
            }
        }
    }

    /// Publishes a new view of the tenant: numbers it, streams what changed
    /// and keeps it as the tenant's current view.
    pub fn publish(&self, mut view: TenantView) -> Arc<TenantView> {
        view.seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        let view = Arc::new(view);
        let Some(c) = self.channels.get(&view.tenant) else { return view };
        let mut current = c.view.write().unwrap_or_else(|e| e.into_inner());
        let d = diff(current.as_deref(), &view);
        if !d.is_empty() || current.as_ref().is_none_or(|o| o.late != view.late || o.now != view.now) {
            let data = json!({
                "seq": view.seq,
                "day": view.day.to_string(),
                "now": view.now,
                "late": view.late,
                "fences": d.fences.iter().map(|f| fence_feature(f)).collect::<Vec<_>>(),
                "removed": d.removed.iter().map(|a| format!("fence:{a}")).collect::<Vec<_>>(),
                "vehicles": d.vehicles.iter().map(|v| vehicle_feature(v)).collect::<Vec<_>>(),
            });
            let _ = c.tx.send(Arc::new(LiveEvent { name: "view", data: data.to_string() }));
        }
        *current = Some(view.clone());
        view
    }

    /// The tenant's current view.
    pub fn view(&self, tenant: &str) -> Option<Arc<TenantView>> {
        self.channels.get(tenant)?.view.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Ends every stream.
    pub fn close(&self) {
        let _ = self.closing.send(true);
    }
}

/// What the map's HTTP handlers read. Blocking methods run on the
/// blocking pool.
pub trait MapData: Send + Sync {
    fn hub(&self) -> &Hub;
    /// Views can be built (the replicas caught up once).
    fn ready(&self) -> bool;
    /// The view of `day` (`None`: the live day). Blocking.
    fn view(&self, tenant: &Tenant, day: Option<NaiveDate>) -> Result<Arc<TenantView>, MapError>;
    /// The breadcrumbs of `day`, of every vehicle or one. Blocking.
    fn trails(&self, tenant: &Tenant, day: NaiveDate, vehicle: Option<&str>) -> Result<Vec<Trail>, MapError>;
}

/// The UTC instants a tenant's local day spans.
pub fn day_span(day: NaiveDate, tenant: &Tenant) -> (Ts, Ts) {
    let tz = zone(tenant.timezone.as_deref());
    let at = |d: NaiveDate| {
        let midnight = d.and_hms_opt(0, 0, 0).unwrap_or_default();
        let local = midnight.and_local_timezone(tz).earliest();
        Ts::from_millis(local.map_or(midnight.and_utc().timestamp_millis(), |l| l.timestamp_millis()))
    };
    (at(day), at(day.succ_opt().unwrap_or(day)))
}

/// The pipeline's map: views from the report replica and the positions
/// replica (see the module docs).
pub struct LiveMap {
    hub: Arc<Hub>,
    replica: Arc<Replica>,
    positions: Arc<Positions>,
    tenants: Arc<HashMap<String, Tenant>>,
    stop: Arc<AtomicBool>,
    refresher: Mutex<Option<JoinHandle<()>>>,
}

impl LiveMap {
    /// Starts the refresher over `replica` and `positions` (whose fixes
    /// the caller already routes to `hub`).
    pub fn start(
        hub: Arc<Hub>,
        replica: Arc<Replica>,
        positions: Arc<Positions>,
        tenants: Arc<HashMap<String, Tenant>>,
        late: IntGaugeVec,
    ) -> Result<Arc<LiveMap>, std::io::Error> {
        let map = Arc::new(LiveMap {
            hub,
            replica,
            positions,
            tenants,
            stop: Arc::new(AtomicBool::new(false)),
            refresher: Mutex::new(None),
        });
        let weak = Arc::downgrade(&map);
        let stop = map.stop.clone();
        let thread = std::thread::Builder::new().name("report-map".into()).spawn(move || {
            let mut seen = (u64::MAX, u64::MAX);
            let mut last = Instant::now();
            let mut failing: HashMap<String, String> = HashMap::new();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let Some(map) = weak.upgrade() else { return };
                if !map.ready() {
                    continue;
                }
                let now = (map.replica.version(), map.positions.version());
                let due = now.0 != seen.0 || (now.1 != seen.1 && last.elapsed() >= Duration::from_secs(1));
                if !due {
                    continue;
                }
                (seen, last) = (now, Instant::now());
                let mut names: Vec<&String> = map.tenants.keys().collect();
                names.sort();
                for name in names {
                    let tenant = &map.tenants[name];
                    if tenant.email.as_ref().and_then(|e| e.report_token.as_ref()).is_none() {
                        continue;
                    }
                    match map.build(tenant, None) {
                        Ok(view) => {
                            late.with_label_values(&[name]).set(view.late as i64);
                            map.hub.publish(view);
                            if failing.remove(name).is_some() {
                                tracing::info!(tenant = %name, "map: view built again");
                            }
                        }
                        Err(e) => {
                            let message = e.to_string();
                            if failing.get(name) != Some(&message) {
                                tracing::warn!(tenant = %name, error = %message, "map: view not built");
                            }
                            failing.insert(name.clone(), message);
                        }
                    }
                }
            }
        })?;
        *map.refresher.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        Ok(map)
    }

    /// The tenant's live day: the local day of its newest fix (the wall
    /// clock's only before the first fix).
    fn live_day(&self, tenant: &Tenant, newest: Option<Ts>) -> NaiveDate {
        let now = newest.unwrap_or_else(|| Ts::from_millis(chrono::Utc::now().timestamp_millis()));
        local_day(now, zone(tenant.timezone.as_deref()))
    }

    /// Builds a view from the replicas. Blocking.
    fn build(&self, tenant: &Tenant, day: Option<NaiveDate>) -> Result<TenantView, MapError> {
        let fleet = self.positions.fleet(&tenant.name);
        let tz = zone(tenant.timezone.as_deref());
        let live = self.live_day(tenant, fleet.newest);
        let day = day.unwrap_or(live);
        let window_ms = tenant.map.speed_window_s as i64 * 1000;
        let tracks = if day == live {
            fleet.tracks
        } else {
            let (from, to) = day_span(day, tenant);
            tracks_of(&self.positions.trails(&tenant.name, from, to, None)?, window_ms)
        };
        let mut engines = self.replica.engines(&tenant.name, &tenant.settings)?;
        if engines.is_empty() {
            engines.push(Engine::new(tenant.name.clone(), tenant.settings.clone()).map_err(|e| {
                MapError::Replica(ReplicaError::Rows(crate::report::state::StateRowsError::Rows {
                    tenant: tenant.name.clone(),
                    message: e.to_string(),
                }))
            })?);
        }
        let rows = for_day(rows_of_engines(&engines), day, tz);
        let web = Some(tenant.servicetrade_web_url());
        let lines = self.replica.lines(&tenant.name, rows, web)?;
        let states: Vec<_> = engines.iter().map(|e| e.state()).collect();
        let fences = fences_of(&states);
        Ok(build(&Input {
            tenant: &tenant.name,
            day,
            tz,
            now: fleet.newest,
            settings: &tenant.settings,
            map: &tenant.map,
            state: states[0],
            fences: &fences,
            lines: &lines,
            tracks: &tracks,
        }))
    }

    /// Stops the refresher and ends every stream. Blocking.
    pub fn stop(&self) {
        self.hub.close();
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.refresher.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl MapData for LiveMap {
    fn hub(&self) -> &Hub {
        &self.hub
    }

    fn ready(&self) -> bool {
        self.replica.ready() && self.positions.ready()
    }

    fn view(&self, tenant: &Tenant, day: Option<NaiveDate>) -> Result<Arc<TenantView>, MapError> {
        if !self.ready() {
            return Err(MapError::NotReady);
        }
        if let Some(v) = self.hub.view(&tenant.name).filter(|v| day.is_none_or(|d| d == v.day)) {
            return Ok(v);
        }
        Ok(Arc::new(self.build(tenant, day)?))
    }

    fn trails(&self, tenant: &Tenant, day: NaiveDate, vehicle: Option<&str>) -> Result<Vec<Trail>, MapError> {
        let (from, to) = day_span(day, tenant);
        Ok(self.positions.trails(&tenant.name, from, to, vehicle)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Id;
    use crate::report::map::test_tenant;
    use crate::report::map::track::Fix;

    #[test]
    fn a_local_day_spans_its_own_midnights() {
        let d: NaiveDate = "2026-11-28".parse().unwrap();
        let (from, to) = day_span(d, &test_tenant(""));
        assert_eq!(from, Ts::parse("2026-11-28T05:00:00Z").unwrap());
        assert_eq!(to, Ts::parse("2026-11-29T05:00:00Z").unwrap());
        // The day DST ends is 25 hours long.
        let (from, to) = day_span("2026-11-01".parse().unwrap(), &test_tenant(""));
        assert_eq!(to.millis() - from.millis(), 25 * 3_600_000);
    }

    #[test]
    fn the_hub_streams_fixes_and_view_changes_to_subscribers_and_closes() {
        let hub = Hub::new(["acme".to_string()]);
        assert!(hub.subscribe("nobody").is_none());
        let (mut rx, closing) = hub.subscribe("acme").unwrap();
        let fix = Fix { time: Ts(1_000), lat: 35.0, lon: -80.0, speed_mph: Some(30.0) };
        hub.fixes("acme", &[Moved { vehicle: Id::text("v1"), fix, heading_deg: Some(90.0) }]);
        let e = rx.try_recv().unwrap();
        assert_eq!(e.name, "fix");
        assert_eq!(e.data, r#"{"fixes":[["v1",-80.0,35.0,1000,30.0,90.0]]}"#);
        let view = TenantView {
            seq: 0,
            tenant: "acme".into(),
            day: "2026-11-28".parse().unwrap(),
            now: None,
            fences: vec![],
            vehicles: vec![],
            late: 0,
        };
        let first = hub.publish(view.clone());
        assert_eq!(first.seq, 1);
        let e = rx.try_recv().unwrap();
        assert_eq!(e.name, "view");
        assert_eq!(serde_json::from_str::<Value>(&e.data).unwrap()["seq"], 1);
        assert_eq!(hub.publish(view.clone()).seq, 2);
        assert!(rx.try_recv().is_err(), "nothing changed, nothing sent");
        assert_eq!(hub.view("acme").unwrap().seq, 2);
        hub.publish(TenantView { late: 3, ..view });
        assert_eq!(serde_json::from_str::<Value>(&rx.try_recv().unwrap().data).unwrap()["late"], 3);
        assert!(!*closing.borrow());
        hub.close();
        assert!(*closing.borrow());
    }
}
