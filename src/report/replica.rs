//! The report server's view of the pipeline, in its own RocksDB directory:
//! a read replica of the processor's state, restored continuously from the
//! processor's changelog topic, and the sinks' results (with, for clock
//! changes and Service Links, the technician each command was for), tailed
//! from the results and commands topics.
//!
//! Two threads feed it; requests only read it:
//! - the changelog follower checks every changelog partition's high
//!   watermark about once a [`Replica::REFRESH`] and, when the replica is
//!   behind, runs the incremental [`changelog::restore`] (which applies
//!   only whole processor batches, those followed by an offsets marker, and
//!   stores the changelog position with them, so a restart re-reads
//!   nothing it has);
//! - the feed follower consumes the results and commands topics from the
//!   positions stored with what it wrote (the first time from the start)
//!   and commits every ~200 ms: results under `tenant\0appointment\0id`
//!   (latest per command id), clock and Service Link command infos under
//!   `tenant\0id`, with the topics' next offsets in the same write batch.
//!
//! Invariants: the rows are always a state some processor task committed
//! (per task; tasks may be at different points, see [`super::state`]);
//! stored results and offsets never disagree; Kafka calls run on these
//! threads, never on the async runtime. [`Replica::ready`] is false until
//! the first pass over every changelog partition succeeded and the feed
//! reached the end the topics had at start: before that a report would be
//! incomplete.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::actions::ClockStep;
use super::join::{join, CommandInfo, ReportLine};
use super::state::{engine_holding, engines_from_state, rows_from_state, StateRowsError};
use super::ReportRow;
use crate::audit::Explanation;
use crate::engine::{Action, Command, Engine};
use crate::kafka::client::{consumer_config, Logged};
use crate::kafka::codec::Codec;
use crate::kafka::records::SinkResult;
use crate::kafka::topics::{Catalogue, Topic};
use crate::model::{Id, Settings};
use crate::processor::{Stage, STATE_STORES};
use crate::store::changelog::{self, Restore};
use crate::store::rocks::{RocksConfig, RocksStore};
use crate::store::{Batch, StateStore, StoreError, StoreName};

/// Sink results, by `tenant\0appointment\0command id`.
pub const RESULTS_STORE: StoreName = "report_results";
/// Clock and Service Link command infos, by `tenant\0command id`.
pub const COMMANDS_STORE: StoreName = "report_commands";

/// Longest wait for a watermark or a record from the broker.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(5);
/// The feed commits at least this often while records arrive.
const FEED_COMMIT: Duration = Duration::from_millis(200);
const FEED_COMMIT_RECORDS: usize = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("report replica: cannot create {path}: {message}")]
    Dir { path: String, message: String },
    #[error("report replica: {0}")]
    Store(#[from] StoreError),
    #[error("report replica: {0}")]
    Rows(#[from] StateRowsError),
    #[error("report replica: kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("report replica: cannot start a thread: {0}")]
    Thread(std::io::Error),
}

/// What the sinks reported for some appointments of one tenant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Feed {
    pub results: Vec<SinkResult>,
    /// By command id; only clock changes and Service Links.
    pub commands: HashMap<String, CommandInfo>,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    state_ready: AtomicBool,
    feed_ready: AtomicBool,
    /// Bumped whenever either follower stored something.
    version: AtomicU64,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleeps `d`, waking early when stopped.
    fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopped() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
        }
    }
}

pub struct Replica {
    store: Arc<RocksStore>,
    partitions: i32,
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Replica {
    /// How often the changelog is checked for new batches (the live map
    /// shows a decision within 2 s of its commit).
    pub const REFRESH: Duration = Duration::from_millis(500);

    /// Opens (or creates) the replica in `dir` and starts following the
    /// topics of `catalogue`.
    pub fn start(brokers: &str, catalogue: &Catalogue, codec: Arc<Codec>, dir: &Path) -> Result<Replica, ReplicaError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ReplicaError::Dir { path: dir.display().to_string(), message: e.to_string() })?;
        let config = RocksConfig { block_cache_bytes: 64 << 20, write_buffer_bytes: 32 << 20, wal: false };
        let store = Arc::new(RocksStore::open(
            dir,
            &[STATE_STORES[0], STATE_STORES[1], RESULTS_STORE, COMMANDS_STORE],
            &config,
        )?);
        let shared = Arc::new(Shared::default());
        let feed = FeedFollower::new(brokers, catalogue, codec, store.clone(), shared.clone())?;
        let changelog = ChangelogFollower {
            brokers: brokers.to_string(),
            topics: Stage::ALL.iter().map(|s| (catalogue.name(s.changelog()), s.store())).collect(),
            partitions: catalogue.partitions,
            store: store.clone(),
            shared: shared.clone(),
        };
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name.into()).spawn(f).map_err(ReplicaError::Thread)
        };
        let mut threads = vec![spawn("report-changelog", Box::new(move || changelog.run()))?];
        match spawn("report-feed", Box::new(move || feed.run())) {
            Ok(t) => threads.push(t),
            Err(e) => {
                shared.stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
        Ok(Replica { store, partitions: catalogue.partitions, shared, threads: Mutex::new(threads) })
    }

    /// Whether the replica has caught up once (see the module docs).
    pub fn ready(&self) -> bool {
        self.shared.state_ready.load(Ordering::Relaxed) && self.shared.feed_ready.load(Ordering::Relaxed)
    }

    /// Counts what the followers stored: a reader that saw the same
    /// version twice would read the same replica.
    pub fn version(&self) -> u64 {
        self.shared.version.load(Ordering::Acquire)
    }

    /// The tenant's appointment-stage engines, with the vehicle stage's
    /// assignments absorbed ([`engines_from_state`]). Blocking.
    pub fn engines(&self, tenant: &str, settings: &Settings) -> Result<Vec<Engine>, ReplicaError> {
        Ok(engines_from_state(self.store.as_ref(), self.partitions, tenant, settings)?)
    }

    /// The tenant's report rows as the replica holds them now. Blocking.
    pub fn rows(&self, tenant: &str, settings: &Settings) -> Result<Vec<ReportRow>, ReplicaError> {
        Ok(rows_from_state(self.store.as_ref(), self.partitions, tenant, settings)?)
    }

    /// Why each decision about `appointment` was taken, from the state the
    /// replica holds (no replay: no timeline). `None`: no task holds it.
    /// Blocking.
    pub fn explanation(
        &self,
        tenant: &str,
        settings: &Settings,
        appointment: &Id,
        tech: Option<&Id>,
    ) -> Result<Option<Explanation>, ReplicaError> {
        let engine = engine_holding(self.store.as_ref(), self.partitions, tenant, settings, appointment)?;
        Ok(engine.map(|e| Explanation::build(&e, appointment, tech, None)))
    }

    /// The sinks' results for `appointments` of `tenant`, with the infos of
    /// the clock and Service Link commands they answer. Blocking.
    pub fn feed<'a>(
        &self,
        tenant: &str,
        appointments: impl IntoIterator<Item = &'a str>,
    ) -> Result<Feed, ReplicaError> {
        let mut feed = Feed::default();
        let wanted: BTreeSet<&str> = appointments.into_iter().collect();
        for appt in wanted {
            for (key, value) in self.store.scan_prefix(RESULTS_STORE, &result_prefix(tenant, appt))? {
                let Some(r) = decode::<SinkResult>(&key, &value) else { continue };
                if matches!(r.kind.as_str(), "clock" | "send_service_link") {
                    let info = self.store.get(COMMANDS_STORE, &command_key(tenant, &r.command_id))?;
                    if let Some(info) = info.and_then(|v| decode::<CommandInfo>(&key, &v)) {
                        feed.commands.insert(r.command_id.clone(), info);
                    }
                }
                feed.results.push(r);
            }
        }
        Ok(feed)
    }

    /// The report's lines for `rows` of `tenant`: the rows joined with the
    /// sinks' results for their appointments. Blocking.
    pub fn lines(
        &self,
        tenant: &str,
        rows: Vec<ReportRow>,
        servicetrade_web_url: Option<&str>,
    ) -> Result<Vec<ReportLine>, ReplicaError> {
        let appointments: Vec<String> = rows.iter().map(|r| r.appointment.to_string()).collect();
        let feed = self.feed(tenant, appointments.iter().map(String::as_str))?;
        Ok(join(rows, &feed.results, &feed.commands, servicetrade_web_url))
    }

    /// Stops both followers, waits for them and flushes. Blocking (at most
    /// about one broker timeout).
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
        if let Err(e) = self.store.flush() {
            tracing::warn!(error = %e, "report replica flush");
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        // The threads hold the store; they end at their next check.
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], value: &[u8]) -> Option<T> {
    match serde_json::from_slice(value) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(key = %String::from_utf8_lossy(key), error = %e, "report replica: unreadable entry skipped");
            None
        }
    }
}

/// `tenant\0appointment\0` (ids never contain NUL; tenant names cannot).
pub fn result_prefix(tenant: &str, appointment: &str) -> Vec<u8> {
    [tenant.as_bytes(), b"\0", appointment.as_bytes(), b"\0"].concat()
}

pub fn result_key(tenant: &str, r: &SinkResult) -> Vec<u8> {
    [result_prefix(tenant, &r.appointment).as_slice(), r.command_id.as_bytes()].concat()
}

pub fn command_key(tenant: &str, id: &str) -> Vec<u8> {
    [tenant.as_bytes(), b"\0", id.as_bytes()].concat()
}

/// What the report keeps of a command: the technician of a clock change or
/// Service Link and which clock change; nothing of the others.
pub fn command_info(c: &Command) -> Option<CommandInfo> {
    let (user, clock) = match &c.action {
        Action::Clock(k) => (&k.user, Some(ClockStep { activity: k.activity, action: k.action })),
        Action::SendServiceLink(l) => (&l.user, None),
        _ => return None,
    };
    Some(CommandInfo { appointment: c.appointment.to_string(), user: Some(user.to_string()), clock })
}

/// Follows the processor's changelogs (one per stage) into the replica's
/// state store.
struct ChangelogFollower {
    brokers: String,
    /// Each stage's changelog and the store it restores into.
    topics: Vec<(String, StoreName)>,
    partitions: i32,
    store: Arc<RocksStore>,
    shared: Arc<Shared>,
}

impl ChangelogFollower {
    fn run(self) {
        let probe: Result<BaseConsumer<Logged>, _> =
            crate::kafka::client::base(&self.brokers).create_with_context(Logged::new("report-replica"));
        let probe = match probe {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "report replica: no Kafka client; the report stays unavailable");
                return;
            }
        };
        // The last error per partition, logged when it changes.
        let parts: Vec<(&str, StoreName, i32)> = self
            .topics
            .iter()
            .flat_map(|(t, store)| (0..self.partitions).map(move |p| (t.as_str(), *store, p)))
            .collect();
        let mut errors: Vec<Option<String>> = vec![None; parts.len()];
        while !self.shared.stopped() {
            let mut all_ok = true;
            for (&(topic, store, p), last) in parts.iter().zip(errors.iter_mut()) {
                if self.shared.stopped() {
                    return;
                }
                let caught = self.catch_up(&probe, topic, store, p);
                if caught.as_ref().is_ok_and(|n| *n > 0) {
                    self.shared.version.fetch_add(1, Ordering::AcqRel);
                }
                match caught {
                    Ok(_) if last.take().is_some() => {
                        tracing::info!(topic = %topic, partition = p, "report replica: changelog readable again")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        all_ok = false;
                        let message = e.to_string();
                        if last.as_deref() != Some(message.as_str()) {
                            tracing::warn!(topic = %topic, partition = p, error = %message, "report replica: changelog");
                        }
                        *last = Some(message);
                    }
                }
            }
            if all_ok && !self.shared.state_ready.swap(true, Ordering::Relaxed) {
                tracing::info!(topics = ?self.topics, partitions = self.partitions, "report replica: state restored");
            }
            self.shared.sleep(Replica::REFRESH);
        }
    }

    /// Restores partition `p` up to its current end, when behind.
    fn catch_up(
        &self,
        probe: &BaseConsumer<Logged>,
        topic: &str,
        store: StoreName,
        p: i32,
    ) -> Result<u64, ReplicaError> {
        let (low, high) = probe.fetch_watermarks(topic, p, KAFKA_TIMEOUT)?;
        let at = self.store.offset(topic, p)?.unwrap_or(low).max(low);
        if at >= high {
            return Ok(0);
        }
        let r = Restore { brokers: &self.brokers, topic, partition: p, store, chunk: 5_000, timeout: KAFKA_TIMEOUT };
        // The restore logs for a processor's start-up ("restored", "ends
        // inside a batch"); here it runs every second and a batch still
        // being written is normal, so its logs are muted: errors come back
        // as values and are logged by the caller.
        let stats = tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
            changelog::restore(&r, self.store.as_ref(), |_, _| {})
        })?;
        tracing::debug!(
            topic,
            partition = p,
            records = stats.records,
            from = stats.from,
            to = stats.to,
            "report replica"
        );
        Ok(stats.records)
    }
}

/// Follows the results and commands topics into the replica's feed stores.
struct FeedFollower {
    consumer: BaseConsumer<Logged>,
    codec: Arc<Codec>,
    results_topic: String,
    store: Arc<RocksStore>,
    shared: Arc<Shared>,
    /// Partitions not yet read up to the end they had at start (`None`:
    /// that end is not known yet, the broker did not say).
    behind: HashMap<(String, i32), Option<i64>>,
    /// Where each partition started, to judge ends learnt later.
    start: HashMap<(String, i32), Option<i64>>,
}

impl FeedFollower {
    fn new(
        brokers: &str,
        catalogue: &Catalogue,
        codec: Arc<Codec>,
        store: Arc<RocksStore>,
        shared: Arc<Shared>,
    ) -> Result<FeedFollower, ReplicaError> {
        let consumer: BaseConsumer<Logged> = consumer_config(brokers, &format!("{}-report", catalogue.prefix))
            .set("auto.offset.reset", "earliest")
            .create_with_context(Logged::new("report-replica"))?;
        let results_topic = catalogue.name(Topic::Results);
        let mut tpl = TopicPartitionList::new();
        let (mut behind, mut start) = (HashMap::new(), HashMap::new());
        for topic in [results_topic.clone(), catalogue.name(Topic::Commands)] {
            for p in 0..catalogue.partitions {
                let stored = store.offset(&topic, p)?;
                tpl.add_partition_offset(&topic, p, stored.map_or(Offset::Beginning, Offset::Offset))?;
                behind.insert((topic.clone(), p), None);
                start.insert((topic.clone(), p), stored);
            }
        }
        consumer.assign(&tpl)?;
        Ok(FeedFollower { consumer, codec, results_topic, store, shared, behind, start })
    }

    /// Asks the broker for the ends not known yet; drops partitions that
    /// were already read up to theirs. Stops at the first the broker does
    /// not answer for (a topic not created yet, a broker down): the rest
    /// are asked again later.
    fn learn_ends(&mut self) {
        let unknown: Vec<(String, i32)> =
            self.behind.iter().filter(|(_, end)| end.is_none()).map(|(k, _)| k.clone()).collect();
        for key in unknown {
            let Ok((low, high)) = self.consumer.fetch_watermarks(&key.0, key.1, KAFKA_TIMEOUT) else {
                return;
            };
            let from = self.start.get(&key).copied().flatten().unwrap_or(low).max(low);
            if from >= high {
                self.behind.remove(&key);
            } else {
                self.behind.insert(key, Some(high));
            }
        }
    }

    fn run(mut self) {
        let mut batch = Batch::default();
        let mut next: HashMap<(String, i32), i64> = HashMap::new();
        let mut first_pending: Option<Instant> = None;
        let mut pending = 0usize;
        let mut last_error: Option<String> = None;
        self.learn_ends();
        let mut learnt = Instant::now();
        self.mark_ready_if_caught_up();
        while !self.shared.stopped() {
            if learnt.elapsed() >= Replica::REFRESH && self.behind.values().any(Option::is_none) {
                self.learn_ends();
                learnt = Instant::now();
                if pending == 0 {
                    self.mark_ready_if_caught_up();
                }
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Err(e)) => {
                    // Once per outage: librdkafka retries on its own.
                    if last_error.is_none() {
                        tracing::warn!(error = %e, "report replica: results/commands feed");
                    } else {
                        tracing::debug!(error = %e, "report replica: results/commands feed");
                    }
                    last_error = Some(e.to_string());
                }
                Some(Ok(m)) => {
                    if last_error.take().is_some() {
                        tracing::info!("report replica: results/commands feed readable again");
                    }
                    let is_results = m.topic() == self.results_topic;
                    if let Some(v) = m.payload() {
                        self.apply(is_results, v, &mut batch);
                    }
                    let key = (m.topic().to_string(), m.partition());
                    if self.behind.get(&key).is_some_and(|end| end.is_some_and(|high| m.offset() + 1 >= high)) {
                        self.behind.remove(&key);
                    }
                    self.start.insert(key.clone(), Some(m.offset() + 1));
                    next.insert(key, m.offset() + 1);
                    pending += 1;
                    first_pending.get_or_insert_with(Instant::now);
                }
            }
            let due = first_pending.is_some_and(|t| t.elapsed() >= FEED_COMMIT) || pending >= FEED_COMMIT_RECORDS;
            let just_caught_up = self.behind.is_empty() && !self.shared.feed_ready.load(Ordering::Relaxed);
            if pending > 0 && (due || just_caught_up) {
                for ((topic, p), n) in next.drain() {
                    batch.offset(&topic, p, n);
                }
                if let Err(e) = self.store.commit(&batch) {
                    // Nothing is lost: the offsets were not stored either,
                    // so these records are read again after a restart.
                    tracing::error!(error = %e, "report replica: cannot store the feed");
                } else {
                    self.shared.version.fetch_add(1, Ordering::AcqRel);
                }
                batch = Batch::default();
                (pending, first_pending) = (0, None);
                self.mark_ready_if_caught_up();
            }
        }
    }

    fn mark_ready_if_caught_up(&self) {
        if self.behind.is_empty() && !self.shared.feed_ready.swap(true, Ordering::Relaxed) {
            tracing::info!("report replica: sink results read");
        }
    }

    /// Adds what one record means to `batch`; undecodable records are
    /// skipped (they are the sinks' and processor's to dead-letter).
    fn apply(&self, is_results: bool, value: &[u8], batch: &mut Batch) {
        if is_results {
            match self.codec.decode_result(value) {
                Ok((tenant, r)) if !r.appointment.is_empty() => {
                    if let Ok(json) = serde_json::to_vec(&r) {
                        batch.put(RESULTS_STORE, result_key(&tenant, &r), json);
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "report replica: result not decodable, skipped"),
            }
        } else {
            match self.codec.decode_command(value) {
                Ok(tc) => {
                    if let Some(info) = command_info(&tc.command) {
                        if let Ok(json) = serde_json::to_vec(&info) {
                            batch.put(COMMANDS_STORE, command_key(&tc.tenant, &tc.command.id), json);
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "report replica: command not decodable, skipped"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::records::Outcome;
    use crate::model::Ts;
    use crate::scenario::Scenario;

    #[test]
    fn keys_group_results_by_appointment_without_prefix_clashes() {
        let r = |appt: &str, id: &str| SinkResult {
            command_id: id.into(),
            appointment: appt.into(),
            kind: "clock".into(),
            sink: "clock".into(),
            outcome: Outcome::Done,
            reason: String::new(),
            remote_ref: None,
            attempts: 1,
            executed_at: Ts(0),
            command_time: Ts(0),
        };
        let k1 = result_key("acme", &r("7", "a"));
        let k2 = result_key("acme", &r("70", "b"));
        assert!(k1.starts_with(&result_prefix("acme", "7")));
        assert!(!k2.starts_with(&result_prefix("acme", "7")), "appointment 70 is not under 7");
        assert!(!result_key("acme2", &r("7", "a")).starts_with(&result_prefix("acme", "7")));
        assert_ne!(command_key("acme", "x"), command_key("acm", "ex"));
    }

    #[test]
    fn only_clock_and_service_link_commands_are_kept_with_their_technician() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/service_link.yaml");
        let commands = Scenario::load(&path).unwrap().run().unwrap().commands;
        let mut kinds = BTreeSet::new();
        for c in &commands {
            match command_info(c) {
                Some(info) => {
                    assert!(matches!(c.action.kind(), "clock" | "send_service_link"));
                    assert_eq!(info.appointment, c.appointment.to_string());
                    assert!(info.user.is_some());
                    kinds.insert(c.action.kind());
                }
                None => assert!(c.action.kind().ends_with("geofence")),
            }
        }
        assert!(kinds.contains("send_service_link"), "{kinds:?}");
    }
}
