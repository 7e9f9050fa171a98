//! The report server's replica of the pings topic: each vehicle's track
//! (newest fix and recent path) in memory, and every fix as a breadcrumb
//! in its own RocksDB directory, so the map needs no vendor call per page
//! view and a restart re-reads nothing it has.
//!
//! One thread follows every partition of the pings topic from the offsets
//! stored with what it wrote (the first time from the start) and, about
//! every [`FLUSH`], commits the breadcrumbs, the tracks that changed and
//! the next offsets in one write batch, then hands the fixes that moved a
//! vehicle to the live map (`on_fixes`). Kafka calls run on that thread,
//! never on the async runtime.
//!
//! Invariants: the stored tracks, breadcrumbs and offsets never disagree
//! (one batch); in memory, a track is what is stored or newer; a late fix
//! is a breadcrumb but moves no vehicle ([`super::track`]); undecodable
//! records are skipped (the processor dead-letters them). Breadcrumbs are
//! kept for [`TRAIL_DAYS`] UTC days behind each tenant's newest fix.
//! [`Positions::ready`] is false until the topic was read up to the end it
//! had at start.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::geojson::Trail;
use super::track::{Fix, Track};
use crate::kafka::client::consumer_config;
use crate::kafka::codec::Codec;
use crate::kafka::topics::{Catalogue, Topic};
use crate::model::{Id, Ts};
use crate::store::rocks::{RocksConfig, RocksStore};
use crate::store::{Batch, StateStore, StoreError, StoreName};

/// Tracks, by `tenant\0vehicle` (JSON).
pub const TRACKS_STORE: StoreName = "map_tracks";
/// Breadcrumbs, by `tenant\0YYYYMMDD\0vehicle\0time` (UTC day; 24 bytes).
pub const TRAILS_STORE: StoreName = "map_trails";
/// UTC days of breadcrumbs kept behind a tenant's newest fix.
pub const TRAIL_DAYS: i64 = 3;
/// Fixes reach the store and the live map at least this often.
pub const FLUSH: Duration = Duration::from_millis(100);
const KAFKA_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum PositionsError {
    #[error("map positions: cannot create {path}: {message}")]
    Dir { path: String, message: String },
    #[error("map positions: {0}")]
    Store(#[from] StoreError),
    #[error("map positions: kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("map positions: cannot start a thread: {0}")]
    Thread(std::io::Error),
}

/// One tenant's vehicles.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    pub tracks: HashMap<Id, Track>,
    /// The newest fix time of any vehicle: the tenant's event time.
    pub newest: Option<Ts>,
}

/// A fix that moved a vehicle, for the live map.
#[derive(Debug, Clone, PartialEq)]
pub struct Moved {
    pub vehicle: Id,
    pub fix: Fix,
    pub heading_deg: Option<f64>,
}

/// Called with each tenant's moved vehicles after they are stored.
pub type OnFixes = Box<dyn Fn(&str, Vec<Moved>) + Send>;

struct Shared {
    stop: AtomicBool,
    ready: AtomicBool,
    version: AtomicU64,
    fleets: RwLock<HashMap<String, Fleet>>,
}

pub struct Positions {
    store: Arc<RocksStore>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// `tenant\0vehicle`
fn track_key(tenant: &str, vehicle: &str) -> Vec<u8> {
    [tenant.as_bytes(), b"\0", vehicle.as_bytes()].concat()
}

fn utc_day(t: Ts) -> NaiveDate {
    DateTime::<Utc>::from_timestamp_millis(t.millis()).unwrap_or_default().date_naive()
}

/// `tenant\0YYYYMMDD\0`
pub fn trail_day_prefix(tenant: &str, day: NaiveDate) -> String {
    format!("{tenant}\0{}\0", day.format("%Y%m%d"))
}

/// `tenant\0YYYYMMDD\0vehicle\0` + the time, big-endian with the sign bit
/// flipped (keys sort by time).
pub fn trail_key(tenant: &str, vehicle: &str, t: Ts) -> Vec<u8> {
    let time = (t.millis() as u64 ^ (1 << 63)).to_be_bytes();
    [trail_day_prefix(tenant, utc_day(t)).as_bytes(), vehicle.as_bytes(), b"\0", &time].concat()
}

/// A breadcrumb's value: lat, lon, speed (NaN: none), little-endian f64s.
pub fn trail_value(f: &Fix) -> Vec<u8> {
    [f.lat, f.lon, f.speed_mph.unwrap_or(f64::NAN)].iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The vehicle and fix of a breadcrumb row (`None`: not one).
pub fn decode_trail(key: &[u8], value: &[u8]) -> Option<(Id, Fix)> {
    let (head, time) = key.split_at(key.len().checked_sub(8)?);
    let head = head.strip_suffix(b"\0")?;
    let vehicle = head.splitn(3, |b| *b == 0).nth(2)?;
    let t = (u64::from_be_bytes(time.try_into().ok()?) ^ (1 << 63)) as i64;
    let f = |i: usize| value.get(i * 8..i * 8 + 8).and_then(|b| b.try_into().ok()).map(f64::from_le_bytes);
    let speed = f(2)?;
    let fix = Fix { time: Ts(t), lat: f(0)?, lon: f(1)?, speed_mph: (!speed.is_nan()).then_some(speed) };
    Some((Id::text(std::str::from_utf8(vehicle).ok()?), fix))
}

/// Each vehicle's trail from breadcrumb rows, oldest fix first, by vehicle.
pub fn trails_of(rows: impl IntoIterator<Item = (Id, Fix)>, from: Ts, to: Ts) -> Vec<Trail> {
    let mut by: std::collections::BTreeMap<Id, Vec<Fix>> = std::collections::BTreeMap::new();
    for (v, f) in rows {
        if from <= f.time && f.time < to {
            by.entry(v).or_default().push(f);
        }
    }
    by.into_iter()
        .map(|(vehicle, mut fixes)| {
            fixes.sort_by_key(|f| f.time);
            Trail { vehicle, fixes }
        })
        .collect()
}

/// Tracks rebuilt from trails (a past day's vehicles).
pub fn tracks_of(trails: &[Trail], window_ms: i64) -> HashMap<Id, Track> {
    let mut out = HashMap::new();
    for t in trails {
        let mut fixes = t.fixes.iter();
        let Some(first) = fixes.next() else { continue };
        let mut track = Track::new(*first);
        for f in fixes {
            track.apply(*f, window_ms);
        }
        out.insert(t.vehicle.clone(), track);
    }
    out
}

impl Positions {
    /// Opens (or creates) the replica in `dir`, loads the stored tracks and
    /// starts following the pings topic. `window_ms(tenant)` bounds each
    /// tenant's recent paths.
    pub fn start(
        brokers: &str,
        catalogue: &Catalogue,
        codec: Arc<Codec>,
        dir: &Path,
        window_ms: Box<dyn Fn(&str) -> i64 + Send>,
        on_fixes: OnFixes,
    ) -> Result<Positions, PositionsError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| PositionsError::Dir { path: dir.display().to_string(), message: e.to_string() })?;
        let config = RocksConfig { block_cache_bytes: 32 << 20, write_buffer_bytes: 16 << 20, wal: false };
        let store = Arc::new(RocksStore::open(dir, &[TRACKS_STORE, TRAILS_STORE], &config)?);
        let mut fleets: HashMap<String, Fleet> = HashMap::new();
        for (k, v) in store.scan_prefix(TRACKS_STORE, b"")? {
            let Some(split) = k.iter().position(|b| *b == 0) else { continue };
            let (Ok(tenant), Ok(vehicle)) = (std::str::from_utf8(&k[..split]), std::str::from_utf8(&k[split + 1..]))
            else {
                continue;
            };
            let Ok(track) = serde_json::from_slice::<Track>(&v) else { continue };
            let fleet = fleets.entry(tenant.to_string()).or_default();
            fleet.newest = fleet.newest.max(Some(track.latest().time));
            fleet.tracks.insert(Id::text(vehicle), track);
        }
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            version: AtomicU64::new(0),
            fleets: RwLock::new(fleets),
        });
        let topic = catalogue.name(Topic::Pings);
        let consumer: BaseConsumer = consumer_config(brokers, &format!("{}-report-map", catalogue.prefix))
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "100")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        let mut start = HashMap::new();
        for p in 0..catalogue.partitions {
            let stored = store.offset(&topic, p)?;
            tpl.add_partition_offset(&topic, p, stored.map_or(Offset::Beginning, Offset::Offset))?;
            start.insert(p, stored);
        }
        consumer.assign(&tpl)?;
        let follower = Follower {
            consumer,
            codec,
            topic,
            store: store.clone(),
            shared: shared.clone(),
            window_ms,
            on_fixes,
            start,
            behind: HashMap::new(),
        };
        let thread = std::thread::Builder::new()
            .name("report-positions".into())
            .spawn(move || follower.run())
            .map_err(PositionsError::Thread)?;
        Ok(Positions { store, shared, thread: Mutex::new(Some(thread)) })
    }

    /// The topic was read up to the end it had at start.
    pub fn ready(&self) -> bool {
        self.shared.ready.load(Ordering::Relaxed)
    }

    /// Counts stored batches (see [`super::super::replica::Replica::version`]).
    pub fn version(&self) -> u64 {
        self.shared.version.load(Ordering::Acquire)
    }

    /// A copy of the tenant's vehicles now.
    pub fn fleet(&self, tenant: &str) -> Fleet {
        self.shared.fleets.read().unwrap_or_else(|e| e.into_inner()).get(tenant).cloned().unwrap_or_default()
    }

    /// The trails of `tenant`'s vehicles (or of one) between `from` and
    /// `to`. Blocking.
    pub fn trails(&self, tenant: &str, from: Ts, to: Ts, vehicle: Option<&str>) -> Result<Vec<Trail>, StoreError> {
        let mut rows = Vec::new();
        let mut day = utc_day(from);
        while day <= utc_day(to) {
            let mut prefix = trail_day_prefix(tenant, day).into_bytes();
            if let Some(v) = vehicle {
                prefix.extend_from_slice(v.as_bytes());
                prefix.push(0);
            }
            rows.extend(self.store.scan_prefix(TRAILS_STORE, &prefix)?.iter().filter_map(|(k, v)| decode_trail(k, v)));
            let Some(next) = day.succ_opt() else { break };
            day = next;
        }
        Ok(trails_of(rows, from, to))
    }

    /// Stops the follower, waits for it and flushes. Blocking.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
        if let Err(e) = self.store.flush() {
            tracing::warn!(error = %e, "map positions flush");
        }
    }
}

impl Drop for Positions {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

struct Follower {
    consumer: BaseConsumer,
    codec: Arc<Codec>,
    topic: String,
    store: Arc<RocksStore>,
    shared: Arc<Shared>,
    window_ms: Box<dyn Fn(&str) -> i64 + Send>,
    on_fixes: OnFixes,
    /// Where each partition started (`None`: the beginning).
    start: HashMap<i32, Option<i64>>,
    /// Partitions not yet read up to the end they had at start.
    behind: HashMap<i32, i64>,
}

impl Follower {
    /// Learns each partition's end at start; false while the broker does
    /// not answer.
    fn learn_ends(&mut self) -> bool {
        for (&p, from) in &self.start {
            let Ok((low, high)) = self.consumer.fetch_watermarks(&self.topic, p, KAFKA_TIMEOUT) else {
                return false;
            };
            if from.unwrap_or(low).max(low) < high {
                self.behind.insert(p, high);
            }
        }
        true
    }

    fn run(mut self) {
        let mut known = false;
        let mut batch = Batch::default();
        let mut moved: HashMap<String, Vec<Moved>> = HashMap::new();
        let mut dirty: HashMap<(String, Id), Track> = HashMap::new();
        let mut next: HashMap<i32, i64> = HashMap::new();
        let mut first_pending: Option<Instant> = None;
        let mut last_error: Option<String> = None;
        let mut trail_from: HashMap<String, NaiveDate> = HashMap::new();
        while !self.shared.stop.load(Ordering::Relaxed) {
            if !known {
                known = self.learn_ends();
                if !known {
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            }
            match self.consumer.poll(Duration::from_millis(50)) {
                None => {}
                Some(Err(e)) => {
                    if last_error.is_none() {
                        tracing::warn!(error = %e, "map positions: pings");
                    }
                    last_error = Some(e.to_string());
                }
                Some(Ok(m)) => {
                    if last_error.take().is_some() {
                        tracing::info!("map positions: pings readable again");
                    }
                    if let (Some(k), Some(v)) = (m.key(), m.payload()) {
                        self.apply(k, v, &mut batch, &mut moved, &mut dirty);
                    }
                    if self.behind.get(&m.partition()).is_some_and(|high| m.offset() + 1 >= *high) {
                        self.behind.remove(&m.partition());
                    }
                    next.insert(m.partition(), m.offset() + 1);
                    first_pending.get_or_insert_with(Instant::now);
                }
            }
            let due = first_pending.is_some_and(|t| t.elapsed() >= FLUSH) || batch.writes.len() >= 20_000;
            if due {
                self.flush(&mut batch, &mut moved, &mut dirty, &mut next, &mut trail_from);
                first_pending = None;
            }
            if self.behind.is_empty() && !self.shared.ready.swap(true, Ordering::Relaxed) {
                tracing::info!("map positions: pings read");
            }
        }
    }

    fn apply(
        &self,
        key: &[u8],
        value: &[u8],
        batch: &mut Batch,
        moved: &mut HashMap<String, Vec<Moved>>,
        dirty: &mut HashMap<(String, Id), Track>,
    ) {
        let (tenant, ping) = match self.codec.decode_current_ping(key, value) {
            Some((t, p)) => (t.to_string(), p),
            None => match self.codec.decode_event(Topic::Pings, key, Some(value)) {
                Ok(crate::kafka::records::TenantEvent { tenant, event: crate::engine::Event::Ping(p) }) => (tenant, p),
                Ok(_) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "map positions: ping not decodable, skipped");
                    return;
                }
            },
        };
        let fix = Fix::from(&ping);
        batch.put(TRAILS_STORE, trail_key(&tenant, ping.vehicle.as_str(), fix.time), trail_value(&fix));
        let window = (self.window_ms)(&tenant);
        let mut fleets = self.shared.fleets.write().unwrap_or_else(|e| e.into_inner());
        let fleet = fleets.entry(tenant.clone()).or_default();
        let moved_now = match fleet.tracks.get_mut(&ping.vehicle) {
            Some(t) => t.apply(fix, window),
            None => {
                fleet.tracks.insert(ping.vehicle.clone(), Track::new(fix));
                true
            }
        };
        let Some(track) = fleet.tracks.get(&ping.vehicle) else { return };
        fleet.newest = fleet.newest.max(Some(fix.time));
        dirty.insert((tenant.clone(), ping.vehicle.clone()), track.clone());
        if moved_now {
            let m = Moved { vehicle: ping.vehicle, fix, heading_deg: track.heading_deg() };
            moved.entry(tenant).or_default().push(m);
        }
    }

    fn flush(
        &self,
        batch: &mut Batch,
        moved: &mut HashMap<String, Vec<Moved>>,
        dirty: &mut HashMap<(String, Id), Track>,
        next: &mut HashMap<i32, i64>,
        trail_from: &mut HashMap<String, NaiveDate>,
    ) {
        for ((tenant, vehicle), track) in dirty.drain() {
            if let Ok(json) = serde_json::to_vec(&track) {
                batch.put(TRACKS_STORE, track_key(&tenant, vehicle.as_str()), json);
            }
        }
        for (p, n) in next.drain() {
            batch.offset(&self.topic, p, n);
        }
        let stored = self.store.commit(batch);
        *batch = Batch::default();
        if let Err(e) = stored {
            // The offsets were not stored either: a restart reads these again.
            tracing::error!(error = %e, "map positions: cannot store fixes");
        }
        self.shared.version.fetch_add(1, Ordering::AcqRel);
        for (tenant, fixes) in moved.drain() {
            (self.on_fixes)(&tenant, fixes);
        }
        self.prune(trail_from);
    }

    /// Forgets breadcrumbs more than [`TRAIL_DAYS`] behind each tenant's
    /// newest fix (a week of days at a time).
    fn prune(&self, trail_from: &mut HashMap<String, NaiveDate>) {
        let fleets = self.shared.fleets.read().unwrap_or_else(|e| e.into_inner());
        for (tenant, fleet) in fleets.iter() {
            let Some(newest) = fleet.newest else { continue };
            let keep_from = utc_day(newest) - chrono::Days::new(TRAIL_DAYS as u64);
            if trail_from.get(tenant).is_some_and(|d| *d >= keep_from) {
                continue;
            }
            for back in 1..=7 {
                let day = keep_from - chrono::Days::new(back);
                if let Err(e) = self.store.forget(TRAILS_STORE, &trail_day_prefix(tenant, day), "\u{1}") {
                    tracing::warn!(error = %e, "map positions: pruning breadcrumbs");
                }
            }
            trail_from.insert(tenant.clone(), keep_from);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breadcrumb_rows_round_trip_and_sort_by_time() {
        let f = Fix { time: Ts::parse("2026-11-28T13:40:00Z").unwrap(), lat: 35.2, lon: -80.8, speed_mph: Some(31.5) };
        let k = trail_key("acme", "v/1 x", f.time);
        assert!(k.starts_with(b"acme\x0020261128\x00"));
        assert_eq!(decode_trail(&k, &trail_value(&f)), Some((Id::text("v/1 x"), f)));
        let still = Fix { speed_mph: None, ..f };
        assert_eq!(decode_trail(&k, &trail_value(&still)).unwrap().1, still);
        let later = trail_key("acme", "v/1 x", f.time.plus_millis(1));
        assert!(later > k);
        assert!(trail_key("acme", "v", Ts(-5)) < trail_key("acme", "v", Ts(5)) || utc_day(Ts(-5)) != utc_day(Ts(5)));
        assert_eq!(decode_trail(b"short", &trail_value(&f)), None);
        assert_eq!(decode_trail(&k, b"short"), None);
    }

    #[test]
    fn trails_are_per_vehicle_in_time_order_within_the_span() {
        let fix = |s: i64| Fix { time: Ts::from_secs(s), lat: 1.0, lon: 2.0, speed_mph: None };
        let rows = vec![
            (Id::text("b"), fix(30)),
            (Id::text("a"), fix(20)),
            (Id::text("a"), fix(10)),
            (Id::text("a"), fix(99)),
        ];
        let t = trails_of(rows, Ts::from_secs(10), Ts::from_secs(99));
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].vehicle.as_str(), "a");
        assert_eq!(t[0].fixes.iter().map(|f| f.time.millis() / 1000).collect::<Vec<_>>(), vec![10, 20]);
        assert_eq!(t[1].fixes.len(), 1);
    }
}
