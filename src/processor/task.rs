//! One task: partition `p` of one stage ([`Stage`]), on its own OS thread.
//!
//! Inputs, merged by record time ([`super::merge`]):
//! - appointment stage (stage one): `appointments[p]`, `clock-events[p]`,
//!   and every partition of the entity tables and ticks (global tables, as
//!   Kafka Streams' GlobalKTable: they are keyed by their own ids). Its
//!   engines ([`Role::Appointments`]) decide fences and Service Links and
//!   route fences to vehicles; the routes go to `fence-routes`, keyed like
//!   the vehicle's pings, followed after every batch by a progress record
//!   on every routes partition (the record time it has processed up to;
//!   `i64::MAX` once caught up, repeated while idle).
//! - vehicle stage (stage two): `pings[p]` and `fence-routes[p]` (event
//!   time and retention come to it through the routes). Its engines ([`Role::Vehicles`]) decide arrival
//!   and exit. A ping leaves the merge only when every stage-one
//!   task's progress has reached its record time ([`Gate`]), so routes and
//!   pings meet in record-time order, as in the one-stage engine. A
//!   "caught up" claim written before the task started is not trusted
//!   (stage one may have input it has not read yet); an idle stage-one
//!   task repeats it every second.
//!
//! Each command comes from exactly one task (fences and links from the
//! appointment's stage-one task, clock changes from the vehicle's stage-two
//! task). Malformed records are dead-lettered by the task that owns their
//! partition; those of global inputs by stage-one task 0.
//!
//! Each batch commits by the protocol of [`super::commit`] (begin marker
//! with its replay [`Plan`], then outputs, then state and offsets markers,
//! each acknowledged, then one RocksDB write batch).
//!
//! A crash after step 1 leaves a begin marker with no offsets marker after it at
//! the end of the changelog; the restarted task restores up to the last
//! complete batch and re-processes the cut batch in its recorded order
//! (not the merge's, which could differ for input that arrived since), so
//! its commands and rows are re-produced with the same ids and contents. A
//! crash before step 1 was acknowledged produced nothing of the batch. A crash
//! after step 3 is restored from the changelog. Local RocksDB may lag the
//! changelog (its WAL is off) but never leads it.
//!
//! On start the task first claims its changelog partition
//! ([`changelog::claim`]): the claim's offset is its owner epoch, carried by
//! every changelog record it writes, and restores skip records of an older
//! epoch written after it. So a zombie (an instance that lost the partition
//! and has not noticed yet) can still append a batch, with the same
//! commands (same input, same state, deterministic engine), but its state
//! writes are never restored by anyone. Local RocksDB is trusted only if the
//! task's last run here ended in a clean stop as the changelog partition's
//! only writer since its claim ([`super::commit::SoleWriter`]); otherwise
//! (crash, lost partition, another writer seen: a zombie may have committed
//! locally what the changelog fences off) the partition's local rows and
//! offsets are forgotten first. Then it
//! restores whole batches from its changelog partition into RocksDB,
//! rebuilds the engines from the rows, and resumes every input from the
//! offsets stored with them. A task told it lost its partition
//! writes nothing more; one whose partition is revoked finishes and commits
//! its batch first.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;
use rdkafka::message::{Message, Timestamp};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};

use super::commit::{send, source_of, CommitJob, OutRecord, Plan, SoleWriter};
use super::gate::Gate;
use super::merge::{Body, Merger, Record};
use super::metrics::Metrics;
use super::Tenants;
use crate::engine::{Command, Engine, Event, Role, Route};
use crate::kafka::client::consumer_config;
use crate::kafka::codec::Codec;
use crate::kafka::records::{command_key_id, DeadLetter, RouteProgress, ROUTE_PROGRESS_KEY};
use crate::kafka::topics::{self, Catalogue, Topic};
use crate::store::changelog::{self, Restore};
use crate::store::rocks::RocksStore;
use crate::store::{Batch, StateStore, StoreError, StoreName};

/// The entity topics every appointment-stage task reads in full (global
/// tables: they are keyed by their own ids, not by appointment).
pub const GLOBAL_INPUTS: [Topic; 6] =
    [Topic::Users, Topic::Locations, Topic::Jobs, Topic::Drivers, Topic::Vehicles, Topic::Pairings];

/// The two sub-topologies ([`crate::engine::route`]). Task `(stage, p)`
/// reads partition `p` of its stage's co-partitioned topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// Stage one, keyed by appointment: `appointments[p]` and
    /// `clock-events[p]`, the global entity tables and the ticks; writes
    /// fence and Service Link commands and fence routes.
    Appointments,
    /// Stage two, keyed by vehicle: `pings[p]` and `fence-routes[p]`;
    /// writes clock commands.
    Vehicles,
}

impl Stage {
    pub const ALL: [Stage; 2] = [Stage::Appointments, Stage::Vehicles];

    pub fn changelog(self) -> Topic {
        match self {
            Stage::Appointments => Topic::AppointmentStateChangelog,
            Stage::Vehicles => Topic::VehicleStateChangelog,
        }
    }

    /// The RocksDB column family of the stage's state.
    pub const fn store(self) -> StoreName {
        match self {
            Stage::Appointments => "appointment_state",
            Stage::Vehicles => "vehicle_state",
        }
    }

    pub fn role(self) -> Role {
        match self {
            Stage::Appointments => Role::Appointments,
            Stage::Vehicles => Role::Vehicles,
        }
    }

    /// The task's name in logs and metric labels: `a3` (appointments) or `3`
    /// (vehicles) for partition 3.
    pub fn task(self, p: i32) -> String {
        match self {
            Stage::Appointments => format!("a{p}"),
            Stage::Vehicles => p.to_string(),
        }
    }

    /// Bit 62 of the emission sequence header: at equal record time, stage
    /// one's commands come first (stage two's react to its routes).
    fn seq_base(self) -> u64 {
        match self {
            Stage::Appointments => 0,
            Stage::Vehicles => 1 << 62,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("produce to {topic}: {error}")]
    Produce { topic: String, error: String },
    #[error("encode: {0}")]
    Encode(String),
    #[error("state of partition {partition}: {error}")]
    State { partition: i32, error: String },
    #[error("stopped while waiting for the schema registry: {0}")]
    Interrupted(String),
}

/// Shared between a task's thread and whoever runs it.
#[derive(Debug, Default)]
pub struct TaskControl {
    /// Finish the current batch, commit it and return.
    pub stop: AtomicBool,
    /// The partition is gone: return without writing anything more.
    pub lost: AtomicBool,
    /// Restored, nothing buffered, every input caught up, nothing
    /// uncommitted but stage one's progress records.
    pub idle: AtomicBool,
    /// Restored and consuming.
    pub ready: AtomicBool,
    /// Vehicle stage: every stage-one task has said it is caught up since
    /// this task started ([`Gate`]); appointment stage: always.
    pub gate_open: AtomicBool,
    pub processed: AtomicU64,
    pub lag: AtomicI64,
}

/// How big a batch gets before it is committed.
#[derive(Debug, Clone)]
pub struct Limits {
    pub batch_records: usize,
    pub commit_interval: Duration,
    pub timeout: Duration,
}

/// Everything a task needs.
#[derive(Clone)]
pub struct TaskEnv {
    pub brokers: String,
    pub catalogue: Catalogue,
    pub codec: Arc<Codec>,
    pub store: Arc<RocksStore>,
    pub runtime: tokio::runtime::Handle,
    pub tenants: Arc<Tenants>,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
}

struct Input {
    topic: Topic,
    name: String,
    partition: i32,
    /// This task dead-letters the input's malformed records.
    owned: bool,
    /// Merge lanes: one, or (stage two's routes) one per stage-one task,
    /// chosen by the [`SOURCE_HEADER`] of a route and the task of a
    /// progress record.
    lanes: usize,
}

struct Task {
    stage: Stage,
    p: i32,
    /// `stage.task(p)`.
    name: String,
    env: TaskEnv,
    control: Arc<TaskControl>,
    inputs: Vec<Input>,
    engines: BTreeMap<String, Engine>,
    merger: Merger,
    /// `(tenant, command, input record time, emission sequence)`.
    commands: Vec<(String, Command, i64, u64)>,
    /// Stage one: `(tenant, route, input record time)`.
    routes: Vec<(String, Route, i64)>,
    /// Stage one: the latest record time processed.
    through: i64,
    /// Stage one: the last progress written, and when.
    progress_sent: Option<(i64, Instant)>,
    /// Stage two: how far each stage-one task has routed.
    gate: Gate,
    seq: u64,
    dead: Vec<DeadLetter>,
    pending: usize,
    /// Of `pending`, stage one's progress records: their only effect (the
    /// gate) is in memory and rebuilt from the routes partition, so they
    /// are committed lazily and do not make the task busy.
    pending_progress: usize,
    changelog: String,
    /// Its own idempotent producer: a fatal producer error ends this task
    /// only, and its restart gets a fresh one.
    producer: FutureProducer,
    /// This task's owner epoch: the offset of its changelog claim.
    owner: i64,
    /// Still the changelog partition's only writer since the claim.
    sole: Arc<SoleWriter>,
    last_highs: Instant,
    /// The input of the previous record fetched (records come in runs).
    last_input: std::cell::Cell<usize>,
    /// Records processed per input since the last commit (for metrics).
    counted: Vec<u64>,
    /// The previous batch's commit, still producing.
    in_flight: Option<std::thread::JoinHandle<Result<(), TaskError>>>,
    /// Whether that batch held more than progress records.
    in_flight_data: bool,
    /// The order of this batch's records: `(lane number, run length)`.
    order: Vec<(u32, u32)>,
    /// A batch cut short by a crash, being re-processed in its recorded order.
    replay: Option<Plan>,
}

/// Records taken from the consumer between two rounds of the merge: the
/// merge's buffers stay small and keep their memory (taking a whole batch
/// at once grew them by tens of MB each time, in fresh pages).
const FETCH_CHUNK: usize = 8192;

/// How long a batch of nothing but stage one's progress records may wait
/// for its commit (an idle stage one repeats its claim every second).
const PROGRESS_COMMIT_EVERY: Duration = Duration::from_secs(30);

/// How often caught-up inputs' high watermarks are refreshed.
const HIGHS_EVERY: Duration = Duration::from_millis(200);

/// The store key prefix of task `(stage, p)`'s rows.
pub fn row_prefix(stage: Stage, p: i32) -> String {
    match stage {
        Stage::Appointments => format!("a{p:05}/"),
        Stage::Vehicles => format!("{p:05}/"),
    }
}

/// The name a lane's position is stored under (per task, as global inputs
/// are read by several tasks; per lane where an input has several).
fn offset_name(stage: Stage, p: i32, input: &Input, lane: usize) -> String {
    match input.lanes {
        1 => format!("{}{}", row_prefix(stage, p), input.name),
        _ => format!("{}{}@{lane}", row_prefix(stage, p), input.name),
    }
}

/// How often an idle stage-one task repeats its progress (a restarted
/// stage-two task learns it within this).
const PROGRESS_EVERY: Duration = Duration::from_millis(1000);

/// Runs task `(stage, p)` until stopped. Blocking.
pub fn run(stage: Stage, p: i32, env: TaskEnv, control: Arc<TaskControl>) -> Result<(), TaskError> {
    let started = Instant::now();
    let changelog = env.catalogue.name(stage.changelog());
    let restore = Restore {
        brokers: &env.brokers,
        topic: &changelog,
        partition: p,
        store: stage.store(),
        chunk: 5_000,
        timeout: env.limits.timeout,
    };
    let producer: FutureProducer = crate::kafka::client::base(&env.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // nisshi answers OutOfOrderSequenceNumber to pipelined idempotent
        // batches; one request in flight keeps the sequence strict.
        .set("max.in.flight.requests.per.connection", "1")
        .set("linger.ms", "2")
        .set("message.timeout.ms", (env.limits.timeout.as_millis() as u64).to_string())
        .create()?;
    // Fence any previous owner first: restore then reads up to and past the
    // claim, and skips whatever a zombie appends after it.
    let owner = env.runtime.block_on(changelog::claim(&producer, &changelog, p, env.limits.timeout))?;
    trust_or_forget_local(stage, p, &env, &changelog)?;
    let metrics = env.metrics.clone();
    let name = stage.task(p);
    let stats = changelog::restore(&restore, env.store.as_ref(), |done, total| {
        metrics.restore_remaining.set(&name, (total - done) as i64);
    })?;
    let engines = load_engines(stage, p, &env)?;
    tracing::info!(
        task = %name,
        partition = p,
        restored_records = stats.records,
        fenced_records = stats.fenced,
        owner,
        tenants = engines.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "task ready"
    );
    let consumer: BaseConsumer = consumer_config(&env.brokers, "geoclock-task")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "50")
        .create()?;
    let inputs = inputs(stage, p, &env, &consumer)?;
    let mut starts = Vec::with_capacity(inputs.len());
    let mut tpl = TopicPartitionList::new();
    for i in &inputs {
        let mut lanes = Vec::with_capacity(i.lanes);
        for lane in 0..i.lanes {
            lanes.push(env.store.offset(&offset_name(stage, p, i, lane), i.partition)?.unwrap_or(0));
        }
        let start = lanes.iter().copied().min().unwrap_or(0);
        starts.push(lanes);
        tpl.add_partition_offset(&i.name, i.partition, Offset::Offset(start))?;
    }
    consumer.assign(&tpl)?;
    let partitions = env.catalogue.partitions.max(1) as usize;
    // Stage one's caught-up claims from before now may be stale ([`Gate`]).
    let fresh_from = match stage {
        Stage::Vehicles => consumer.fetch_watermarks(&env.catalogue.name(Topic::FenceRoutes), p, env.limits.timeout)?.1,
        Stage::Appointments => 0,
    };
    let mut task = Task {
        stage,
        p,
        name,
        env,
        control,
        inputs,
        engines,
        merger: Merger::with_lanes(&starts),
        commands: Vec::new(),
        routes: Vec::new(),
        through: i64::MIN,
        progress_sent: None,
        gate: Gate::new(partitions, fresh_from),
        seq: stage.seq_base(),
        dead: Vec::new(),
        pending: 0,
        pending_progress: 0,
        changelog,
        producer,
        owner,
        sole: Arc::new(SoleWriter::new(owner)),
        last_highs: Instant::now(),
        last_input: std::cell::Cell::new(0),
        counted: Vec::new(),
        in_flight: None,
        in_flight_data: false,
        order: Vec::new(),
        replay: None,
    };
    task.counted = vec![0; task.inputs.len()];
    if let Some(bytes) = stats.incomplete {
        match serde_json::from_slice::<Plan>(&bytes) {
            Ok(plan) if plan.ends.len() == task.merger.lanes().count() => {
                tracing::warn!(
                    partition = p,
                    records = plan.order.iter().map(|o| o.1 as u64).sum::<u64>(),
                    "re-processing a batch cut short, in its recorded order"
                );
                task.replay = Some(plan);
            }
            Ok(_) => tracing::error!(
                partition = p,
                "batch plan does not match the inputs (topics repartitioned?): processing afresh"
            ),
            Err(e) => tracing::error!(partition = p, error = %e, "unreadable batch plan: processing afresh"),
        }
    }
    task.control.gate_open.store(stage == Stage::Appointments, Ordering::Relaxed);
    task.control.ready.store(true, Ordering::SeqCst);
    task.run(&consumer)
}

/// The name of the local flag saying task `(stage, p)`'s rows were left by
/// a clean stop (1) or not (0: running, crashed or lost).
fn clean_name(stage: Stage, p: i32) -> String {
    let prefix = row_prefix(stage, p);
    format!("{}#clean", &prefix[..prefix.len() - 1])
}

/// Sets task `(stage, p)`'s clean-stop flag.
fn mark_clean(store: &dyn StateStore, stage: Stage, p: i32, clean: bool) -> Result<(), StoreError> {
    let mut flag = Batch::default();
    flag.offset(&clean_name(stage, p), 0, i64::from(clean));
    store.commit(&flag)
}

/// Local RocksDB is trusted only after a clean stop. A task that crashed or
/// lost its partition may have committed locally a batch the changelog
/// fences off (written after a newer owner's claim), so its rows, input
/// offsets and changelog position are forgotten and restored from the
/// changelog instead (as Kafka Streams wipes local state without a clean
/// checkpoint). Then the flag is cleared until the next clean stop.
fn trust_or_forget_local(stage: Stage, p: i32, env: &TaskEnv, changelog: &str) -> Result<(), TaskError> {
    let store = env.store.as_ref();
    if store.offset(&clean_name(stage, p), 0)? != Some(1) {
        let had = store.offset(changelog, p)?.is_some_and(|o| o > 0);
        let prefix = row_prefix(stage, p);
        store.forget(stage.store(), &prefix, &prefix)?;
        let mut reset = Batch::default();
        reset.offset(changelog, p, 0);
        reset.offset(&changelog::owner_name(changelog), p, 0);
        store.commit(&reset)?;
        if had {
            tracing::warn!(task = %stage.task(p), "local state not left by a clean stop: restoring from the changelog");
        }
    }
    Ok(mark_clean(store, stage, p, false)?)
}

/// The task's inputs: its own partitions first, then the global ones (read
/// in full; their malformed records are dead-lettered by one task only).
/// At equal record time the merge takes the earlier input first.
fn inputs(stage: Stage, p: i32, env: &TaskEnv, consumer: &BaseConsumer) -> Result<Vec<Input>, TaskError> {
    let name = |t: Topic| env.catalogue.name(t);
    let lanes = |t: Topic| if t == Topic::FenceRoutes { env.catalogue.partitions.max(1) as usize } else { 1 };
    let own = |t: Topic| Input { topic: t, name: name(t), partition: p, owned: true, lanes: lanes(t) };
    let (mut out, global, owns_global): (Vec<Input>, Vec<Topic>, bool) = match stage {
        Stage::Appointments => (
            vec![own(Topic::Appointments), own(Topic::ClockEvents)],
            GLOBAL_INPUTS.into_iter().chain([Topic::Ticks]).collect(),
            p == 0,
        ),
        Stage::Vehicles => (vec![own(Topic::Pings), own(Topic::FenceRoutes)], Vec::new(), false),
    };
    for t in global {
        let n = name(t);
        let md = consumer.fetch_metadata(Some(&n), env.limits.timeout)?;
        let count = md.topics().first().map_or(0, |t| t.partitions().len()) as i32;
        if count == 0 {
            return Err(TaskError::State {
                partition: p,
                error: format!("topic {n} missing: run `geoclock topics create`"),
            });
        }
        for q in 0..count {
            out.push(Input { topic: t, name: n.clone(), partition: q, owned: owns_global, lanes: 1 });
        }
    }
    Ok(out)
}

fn load_engines(stage: Stage, p: i32, env: &TaskEnv) -> Result<BTreeMap<String, Engine>, TaskError> {
    let prefix = row_prefix(stage, p);
    let rows = env.store.scan_prefix(stage.store(), prefix.as_bytes())?;
    let mut by_tenant: TenantRows = BTreeMap::new();
    for (k, v) in rows {
        let rest = &k[prefix.len()..];
        let Some(slash) = rest.iter().position(|b| *b == b'/') else {
            return Err(TaskError::State {
                partition: p,
                error: format!("row key {:?} has no tenant", String::from_utf8_lossy(&k)),
            });
        };
        let tenant = String::from_utf8_lossy(&rest[..slash]).into_owned();
        by_tenant.entry(tenant).or_default().push((rest[slash + 1..].to_vec(), v));
    }
    let mut engines = BTreeMap::new();
    for (tenant, rows) in by_tenant {
        let settings = env.tenants.settings(&tenant);
        let mut engine =
            Engine::from_rows(tenant.clone(), settings, rows.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
                .map_err(|e| TaskError::State { partition: p, error: e.to_string() })?;
        engine.set_role(stage.role());
        engine.track_changes();
        engines.insert(tenant, engine);
    }
    Ok(engines)
}

impl Task {
    fn run(&mut self, consumer: &BaseConsumer) -> Result<(), TaskError> {
        let mut last_commit = Instant::now();
        let mut last_wait_log = Instant::now();
        let label = self.name.clone();
        let gated: Vec<bool> = self.inputs.iter().map(|i| i.topic != Topic::FenceRoutes).collect();
        loop {
            if self.control.lost.load(Ordering::SeqCst) {
                tracing::warn!(partition = self.p, "partition lost: stopping without writing");
                return Ok(());
            }
            if self.control.stop.load(Ordering::SeqCst) {
                self.commit()?;
                self.wait_in_flight()?;
                let lost = self.control.lost.load(Ordering::SeqCst);
                if !lost && self.sole.sole() {
                    mark_clean(self.env.store.as_ref(), self.stage, self.p, true)?;
                } else if !lost {
                    tracing::warn!(
                        task = %self.name,
                        "another writer appended to the changelog since this task's claim: local state will be restored afresh"
                    );
                }
                tracing::info!(partition = self.p, "task stopped");
                return Ok(());
            }
            self.fetch(consumer)?;
            if self.replay.is_some() {
                self.replay_step()?;
                last_commit = Instant::now();
                continue;
            }
            loop {
                let r = match self.stage {
                    Stage::Appointments => self.merger.pop(),
                    Stage::Vehicles => self.merger.pop_before(self.gate.limit(), &gated),
                };
                let Some(r) = r else { break };
                self.process(r)?;
                if self.pending >= self.env.limits.batch_records {
                    self.commit()?;
                    last_commit = Instant::now();
                }
            }
            if last_commit.elapsed() > Duration::from_secs(5) && last_wait_log.elapsed() > Duration::from_secs(5) {
                if let Some((idx, next, high)) = self.merger.blocked_on() {
                    let i = &self.inputs[idx];
                    tracing::info!(partition = self.p, input = %i.name, input_partition = i.partition, next, ?high, buffered = self.merger.buffered(), "waiting for input");
                    last_wait_log = Instant::now();
                }
            }
            let idle = self.merger.idle();
            let due = if self.pending_data() {
                idle || last_commit.elapsed() >= self.env.limits.commit_interval
            } else {
                last_commit.elapsed() >= PROGRESS_COMMIT_EVERY
            };
            if self.pending > 0 && due {
                self.commit()?;
                last_commit = Instant::now();
            }
            if self.stage == Stage::Appointments && idle && self.pending == 0 && self.in_flight.is_none() {
                self.caught_up_progress()?;
            }
            let lag = self.merger.lag() + self.merger.buffered() as i64;
            self.control.lag.store(lag, Ordering::SeqCst);
            self.env.metrics.lag.set(&label, lag);
            if self.in_flight.as_ref().is_some_and(|h| h.is_finished()) {
                self.wait_in_flight()?;
            }
            let committing = self.in_flight.is_some() && self.in_flight_data;
            self.control.idle.store(idle && !self.pending_data() && !committing, Ordering::SeqCst);
        }
    }

    /// Re-processes what is fetched of a batch cut short, in its recorded
    /// order; commits it when complete, at exactly its recorded end.
    fn replay_step(&mut self) -> Result<(), TaskError> {
        let Some(mut plan) = self.replay.take() else { return Ok(()) };
        while let Some(lane) = plan.next_lane() {
            let popped = self.merger.lane_at(lane).and_then(|(i, l)| self.merger.pop_lane(i, l));
            match popped {
                Some(r) => self.process(r)?,
                None => {
                    plan.unnext(lane);
                    self.replay = Some(plan);
                    return Ok(());
                }
            }
        }
        let ends: Vec<i64> = self.merger.handed_out().collect();
        if plan.ends != ends {
            tracing::error!(partition = self.p, "replayed batch ended elsewhere than recorded");
        }
        self.commit()
    }

    /// Polls what the consumer has (waiting briefly when it has nothing)
    /// and refreshes every input's high watermark.
    fn fetch(&mut self, consumer: &BaseConsumer) -> Result<(), TaskError> {
        let mut wait = Duration::from_millis(20);
        for _ in 0..FETCH_CHUNK {
            let Some(msg) = consumer.poll(wait) else { break };
            wait = Duration::ZERO;
            self.take(msg);
        }
        if self.merger.unknown_high() || self.last_highs.elapsed() >= HIGHS_EVERY {
            self.refresh_highs(consumer)?;
        }
        Ok(())
    }

    /// Puts a fetched record into the merge (a progress record also moves
    /// the gate; a ping in the current schema is decoded here).
    fn take(&mut self, msg: KafkaResult<BorrowedMessage<'_>>) {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(partition = self.p, error = %e, "consumer error");
                return;
            }
        };
        let Some(input) = self.input_of(msg.topic(), msg.partition()) else { return };
        let mut timestamp = match msg.timestamp() {
            Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => t,
            Timestamp::NotAvailable => 0,
        };
        let mut source = None;
        if self.is_progress(input, msg.key()) {
            // Its task's routes before it in this partition are fetched
            // already (offset order); it holds nothing back in the merge.
            match msg.payload().map(|v| self.env.codec.decode_route_progress(v)) {
                Some(Ok(pr)) => {
                    tracing::debug!(task = %self.name, from = pr.task, through = pr.through, offset = msg.offset(), "route progress");
                    self.gate.update(pr.task, pr.through, msg.offset());
                    self.control.gate_open.store(self.gate.open(), Ordering::Relaxed);
                    source = Some(pr.task);
                }
                _ => tracing::warn!(task = %self.name, offset = msg.offset(), "unreadable route progress record"),
            }
            timestamp = i64::MIN;
        } else if self.inputs[input].lanes > 1 {
            source = msg.headers().and_then(source_of);
        }
        // A record without a readable source (dead-lettered when
        // processed) keeps to lane 0.
        let lane = source.and_then(|q| usize::try_from(q).ok()).filter(|q| *q < self.inputs[input].lanes).unwrap_or(0);
        let ping = match (self.inputs[input].topic, msg.key(), msg.payload()) {
            (Topic::Pings, Some(key), Some(value)) => self.env.codec.decode_current_ping(key, value),
            _ => None,
        };
        let body = match ping {
            Some((tenant, ping)) => Body::Ping { tenant: tenant.into(), ping },
            None => Body::Raw { key: msg.key().map(<[u8]>::to_vec), value: msg.payload().map(<[u8]>::to_vec) },
        };
        self.merger.push(Record { input, lane, offset: msg.offset(), timestamp, body });
    }

    /// Asks the broker for every input's high watermark (one ListOffsets
    /// round for all of them).
    fn refresh_highs(&mut self, consumer: &BaseConsumer) -> Result<(), TaskError> {
        let mut tpl = TopicPartitionList::new();
        for i in &self.inputs {
            tpl.add_partition_offset(&i.name, i.partition, Offset::End)?;
        }
        let highs = consumer.offsets_for_times(tpl, self.env.limits.timeout)?;
        for e in highs.elements() {
            if let (Offset::Offset(h), Some(idx)) = (e.offset(), self.input_of(e.topic(), e.partition())) {
                self.merger.set_high(idx, h);
            }
        }
        self.last_highs = Instant::now();
        Ok(())
    }

    /// A stage-one progress record on the routes input.
    fn is_progress(&self, input: usize, key: Option<&[u8]>) -> bool {
        key == Some(ROUTE_PROGRESS_KEY) && self.inputs[input].topic == Topic::FenceRoutes
    }

    /// Stage one, idle: every route its input causes so far is produced.
    /// Says so on every routes partition (again every [`PROGRESS_EVERY`],
    /// for stage-two tasks that restart).
    fn caught_up_progress(&mut self) -> Result<(), TaskError> {
        if self.progress_sent.is_some_and(|(v, at)| v == i64::MAX && at.elapsed() < PROGRESS_EVERY) {
            return Ok(());
        }
        tracing::debug!(task = %self.name, "caught up: sending progress");
        let records = self.progress_records(i64::MAX)?;
        let (producer, timeout) = (self.producer.clone(), self.env.limits.timeout);
        let name = self.name.clone();
        self.env.runtime.spawn(async move {
            for r in records {
                if let Err(e) = send(&producer, &r, timeout).await {
                    tracing::warn!(task = %name, error = %e, "route progress not written");
                }
            }
        });
        self.progress_sent = Some((i64::MAX, Instant::now()));
        Ok(())
    }

    /// One progress record per routes partition.
    fn progress_records(&self, through: i64) -> Result<Vec<OutRecord>, TaskError> {
        let topic = self.env.catalogue.name(Topic::FenceRoutes);
        let value = self
            .env
            .codec
            .encode_route_progress(&RouteProgress { task: self.p, through })
            .map_err(|e| TaskError::Encode(e.to_string()))?;
        Ok((0..self.env.catalogue.partitions)
            .map(|q| OutRecord {
                partition: Some(q),
                ..OutRecord::new(topic.clone(), ROUTE_PROGRESS_KEY.to_vec(), value.clone())
            })
            .collect())
    }

    fn input_of(&self, topic: &str, partition: i32) -> Option<usize> {
        // Inputs are grouped by topic; the pings input comes first.
        let last = self.last_input.get();
        if self.inputs.get(last).is_some_and(|i| i.partition == partition && i.name == topic) {
            return Some(last);
        }
        let found = self.inputs.iter().position(|i| i.partition == partition && i.name == topic)?;
        self.last_input.set(found);
        Some(found)
    }

    /// Decodes a raw record, waiting out registry trouble (an unreachable
    /// registry, an id it cannot serve yet): records of a partition are
    /// processed in order, so the task holds here, with backoff, until the
    /// schema comes or the codec calls the record poison. A stop or a lost
    /// partition ends the wait (the batch is not committed; it is processed
    /// again by whoever owns the partition next).
    fn decode_waiting(
        &self,
        topic: crate::kafka::topics::Topic,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<Result<crate::kafka::records::TenantEvent, crate::kafka::codec::CodecError>, TaskError> {
        let mut wait = Duration::from_millis(200);
        loop {
            match self.env.codec.decode_event(topic, key, value) {
                Err(e) if !e.is_poison() => {
                    if self.control.stop.load(Ordering::SeqCst) || self.control.lost.load(Ordering::SeqCst) {
                        return Err(TaskError::Interrupted(e.to_string()));
                    }
                    tracing::warn!(partition = self.p, error = %e, retry_in_ms = wait.as_millis() as u64, "writer schema not available; waiting");
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                other => return Ok(other),
            }
        }
    }

    fn process(&mut self, r: Record) -> Result<(), TaskError> {
        self.pending += 1;
        let lane = self.merger.lane_number(r.input, r.lane) as u32;
        match self.order.last_mut() {
            Some(last) if last.0 == lane => last.1 += 1,
            _ => self.order.push((lane, 1)),
        }
        self.control.processed.fetch_add(1, Ordering::Relaxed);
        self.counted[r.input] += 1;
        if self.is_progress(r.input, r.key()) {
            self.pending_progress += 1;
            return Ok(());
        }
        let input = &self.inputs[r.input];
        self.through = self.through.max(r.timestamp);
        // `raw`: the record's bytes, for a dead letter.
        let (tenant, event, raw) = match r.body {
            Body::Ping { tenant, ping } => (tenant, Event::Ping(ping), None),
            Body::Raw { key, value } => {
                match self.decode_waiting(input.topic, key.as_deref().unwrap_or_default(), value.as_deref())? {
                    Ok(te) => (te.tenant.into(), te.event, Some((key, value))),
                    Err(e) => {
                        if input.owned {
                            let dl = DeadLetter::for_error(
                                &e,
                                &input.name,
                                input.partition,
                                r.offset,
                                key.as_deref(),
                                value.as_deref(),
                                "processor",
                            );
                            self.dead.push(dl);
                        }
                        return Ok(());
                    }
                }
            }
        };
        if !self.engines.contains_key(tenant.as_str()) {
            // Settings were validated at start-up, so this cannot fail.
            if let Ok(mut e) = Engine::new(tenant.to_string(), self.env.tenants.settings(&tenant)) {
                e.set_role(self.stage.role());
                e.track_changes();
                self.engines.insert(tenant.to_string(), e);
            }
        }
        let mut out = Vec::new();
        let handled = match self.engines.get_mut(tenant.as_str()) {
            Some(engine) => {
                let handled = engine.handle(&event, &mut out).map_err(|e| e.to_string());
                for route in engine.drain_routes() {
                    self.routes.push((tenant.to_string(), route, r.timestamp));
                }
                handled
            }
            None => Err(format!("tenant {tenant} has invalid settings")),
        };
        if let Err(e) = handled {
            if input.owned {
                // The record as it was on the input; a ping decoded when
                // fetched is re-encoded, which gives its bytes back (it was
                // in the current schema, whose encoding is canonical).
                let (key, value) = raw.unwrap_or_else(|| match self.env.codec.encode_event(&tenant, &event) {
                    Ok(enc) => (Some(enc.key), enc.value),
                    Err(_) => (None, None),
                });
                self.dead.push(DeadLetter {
                    reason: e,
                    kind: "rejected".into(),
                    topic: input.name.clone(),
                    partition: input.partition,
                    offset: r.offset,
                    key,
                    value,
                    component: "processor".into(),
                });
            }
            return Ok(());
        }
        // Stage one decides only fences and Service Links, stage two only
        // clock changes: each command comes from one task.
        for c in out {
            self.seq += 1;
            self.commands.push((tenant.to_string(), c, r.timestamp, self.seq));
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<(), TaskError> {
        if self.pending == 0 {
            return Ok(());
        }
        let started = Instant::now();
        let prefix = row_prefix(self.stage, self.p);
        let mut batch = Batch::default();
        for (tenant, engine) in &mut self.engines {
            for (k, v) in engine.drain_rows() {
                let mut key = Vec::with_capacity(prefix.len() + tenant.len() + 1 + k.len());
                key.extend_from_slice(prefix.as_bytes());
                key.extend_from_slice(tenant.as_bytes());
                key.push(b'/');
                key.extend_from_slice(&k);
                batch.writes.push((self.stage.store(), key, v));
            }
        }
        for ((i, lane), next) in self.merger.lanes().zip(self.merger.positions()) {
            let input = &self.inputs[i];
            batch.offset(&offset_name(self.stage, self.p, input, lane), input.partition, next);
        }
        let mut out: Vec<OutRecord> = Vec::with_capacity(self.commands.len() + self.dead.len());
        let commands_topic = self.env.catalogue.name(Topic::Commands);
        for (tenant, c, ts, seq) in &self.commands {
            let key = topics::key(tenant, command_key_id(c)).map_err(|e| TaskError::Encode(e.to_string()))?;
            let value = self.env.codec.encode_command(tenant, c).map_err(|e| TaskError::Encode(e.to_string()))?;
            out.push(OutRecord { time: Some(*ts), seq: *seq, ..OutRecord::new(commands_topic.clone(), key, value) });
        }
        let routes_topic = self.env.catalogue.name(Topic::FenceRoutes);
        for (tenant, route, ts) in &self.routes {
            // Keyed like the vehicle's pings, with the same (default)
            // partitioner: the route lands on the vehicle's partition.
            let key = topics::key(tenant, route.vehicle.as_str()).map_err(|e| TaskError::Encode(e.to_string()))?;
            let value = self.env.codec.encode_route(tenant, route).map_err(|e| TaskError::Encode(e.to_string()))?;
            out.push(OutRecord {
                time: Some(*ts),
                source: Some(self.p),
                ..OutRecord::new(routes_topic.clone(), key, value)
            });
        }
        // Sent once this batch's routes are acknowledged (a keyed record
        // may wait for the partitioner while one with an explicit
        // partition goes straight out, so send order is not enough).
        let progress = if self.stage == Stage::Appointments && self.through > i64::MIN {
            self.progress_records(self.through)?
        } else {
            Vec::new()
        };
        let dead_topic = self.env.catalogue.name(Topic::DeadLetters);
        for d in &self.dead {
            let key = format!("{}/{}/{}", d.topic, d.partition, d.offset).into_bytes();
            let value = self.env.codec.encode_dead_letter(d).map_err(|e| TaskError::Encode(e.to_string()))?;
            out.push(OutRecord::new(dead_topic.clone(), key, value));
        }
        let plan = Plan { ends: self.merger.handed_out().collect(), order: std::mem::take(&mut self.order) };
        let begin = vec![changelog::begin_record(serde_json::to_vec(&plan).unwrap_or_default())];
        let records = changelog::records(self.stage.store(), &batch);
        if self.control.lost.load(Ordering::SeqCst) {
            return Ok(());
        }
        let m = &self.env.metrics;
        for (i, n) in self.inputs.iter().zip(self.counted.iter_mut()) {
            if *n > 0 {
                m.records.add(i.topic.suffix(), std::mem::take(n) as u64);
            }
        }
        m.commands.inc_by(self.commands.len() as u64);
        let now_ms = chrono::Utc::now().timestamp_millis();
        for (tenant, c, record_ms, _) in &self.commands {
            let age = match &c.action {
                crate::engine::Action::Clock(k) => {
                    if k.cause == crate::engine::ClockCause::Arrival && k.activity == crate::model::Activity::Onsite {
                        m.arrival(tenant);
                    }
                    Some((now_ms - k.time.millis()) as f64 / 1000.0)
                }
                _ => None,
            };
            m.command(tenant, c.action.kind(), (now_ms - record_ms) as f64 / 1000.0, age);
        }
        let held: usize = self.engines.values().map(|e| e.state().appointments.len() + e.state().routed.len()).sum();
        m.state_appointments.set(&self.name, held as i64);
        m.dead_letters.inc_by(self.dead.len() as u64);
        let job = CommitJob {
            commands: self.commands.len(),
            env_name: self.name.clone(),
            progress,
            begin,
            out,
            records,
            batch,
            producer: self.producer.clone(),
            changelog: self.changelog.clone(),
            owner: self.owner,
            sole: self.sole.clone(),
            p: self.p,
            env: self.env.clone(),
            started,
        };
        // One batch in flight while the next is processed: wait for the
        // previous one (batches commit strictly in order), then hand off.
        self.wait_in_flight()?;
        self.in_flight = Some(
            std::thread::Builder::new()
                .name(format!("commit-{}", self.p))
                .spawn(move || job.run())
                .map_err(|e| TaskError::State { partition: self.p, error: format!("commit thread: {e}") })?,
        );
        self.commands.clear();
        self.routes.clear();
        if self.stage == Stage::Appointments && self.through > i64::MIN {
            self.progress_sent = Some((self.through, Instant::now()));
        }
        self.dead.clear();
        self.in_flight_data = self.pending_data();
        self.pending = 0;
        self.pending_progress = 0;
        Ok(())
    }

    /// The uncommitted records include more than stage one's progress.
    fn pending_data(&self) -> bool {
        self.pending > self.pending_progress
    }

    /// Waits for the batch being committed, if any; its error is this task's.
    fn wait_in_flight(&mut self) -> Result<(), TaskError> {
        match self.in_flight.take().map(|h| h.join()) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(TaskError::State { partition: self.p, error: "commit thread panicked".into() }),
        }
    }
}

/// State rows by tenant: `(row key, value)`.
type TenantRows = BTreeMap<String, Vec<(Vec<u8>, Vec<u8>)>>;
