//! One task: partition `p` of one stage ([`Stage`]), on its own OS thread.
//! This is the thin rdkafka driver around the task's pure core
//! ([`super::core`]) and its committer ([`super::commit`]).
//!
//! Inputs, merged by record time ([`super::merge`]):
//! - appointment stage (stage one): `appointments[p]`, `clock-events[p]`,
//!   and every partition of the entity tables and ticks (global tables, as
//!   Kafka Streams' GlobalKTable: they are keyed by their own ids). Its
//!   engines ([`crate::engine::Role::Appointments`]) decide fences and
//!   Service Links and route fences to vehicles; the routes go to
//!   `fence-routes`, keyed like the vehicle's pings, followed after every
//!   batch by a progress record on every routes partition (the record time
//!   it has processed up to; `i64::MAX` once caught up, repeated while
//!   idle).
//! - vehicle stage (stage two): `pings[p]` and `fence-routes[p]` (event
//!   time and retention come to it through the routes). Its engines decide
//!   arrival and exit. A ping leaves the merge only when every stage-one
//!   task's progress has reached its record time ([`super::gate`]), so
//!   routes and pings meet in record-time order, as in the one-stage
//!   engine. A "caught up" claim written before the task started is not
//!   trusted (stage one may have input it has not read yet); an idle
//!   stage-one task repeats it every second.
//!
//! Each batch commits by the protocol of [`super::commit`]. A crash after
//! its begin marker is acknowledged leaves that marker with no offsets
//! marker after it at the end of the changelog; the restarted task restores
//! up to the last complete batch and re-processes the cut batch in its
//! recorded order (not the merge's, which could differ for input that
//! arrived since), so its commands and rows are re-produced with the same
//! ids and contents. A crash before it produced nothing of the batch; after
//! the state is acknowledged, the batch is restored from the changelog.
//! Local RocksDB may lag the changelog (its WAL is off) but never leads it.
//!
//! Backpressure keeps offset order: an input is paused with librdkafka's
//! pause (fetching stops, records fetched but not delivered are dropped by
//! the client) and resumed from the record after the last one delivered,
//! so each partition still reaches the merge in offset order with no gap;
//! a re-delivered record is dropped by the merge. The inputs the merge
//! waits for are never paused, and neither is stage two's routes input.
//!
//! On start the task first claims its changelog partition
//! ([`changelog::claim`]): the claim's offset is its owner epoch, carried by
//! every changelog record it writes, and restores skip records of an older
//! epoch written after it. So a zombie (an instance that lost the partition
//! and has not noticed yet) can still append a batch, with the same
//! commands (same input, same state, deterministic engine), but its state
//! writes are never restored by anyone. Local RocksDB is trusted only if the
//! task's last run here ended as the changelog partition's only writer
//! since its claim ([`SoleWriter`]), stopped or failed but not lost;
//! otherwise (a crash, a lost partition, another writer seen: a zombie may
//! have committed locally what the changelog fences off) the partition's
//! local rows and offsets are forgotten first. Then it restores what the
//! local state lacks from its changelog partition (checking for a stop
//! between chunks, so a rebalance never waits for a whole restore),
//! rebuilds the engines from the rows, and resumes every input from the
//! offsets stored with them. A task told it lost its partition writes
//! nothing more; one whose partition is revoked finishes and commits its
//! batch first.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message, Timestamp};
use rdkafka::{Offset, TopicPartitionList};

use super::batch::SOURCE_HEADER;
use super::commit::{enqueue, CommitEnv, CommitError, Committer, SoleWriter};
use super::core::{CoreError, Fetched, Input, Setup, Step, TaskCore};
use super::fault;
use super::metrics::Metrics;
use super::tenants::Tenants;
use crate::kafka::client::consumer_config;
use crate::kafka::codec::Codec;
use crate::kafka::produce::{producer_config, Acks};
use crate::kafka::topics::{Catalogue, Topic};
use crate::store::changelog::{self, Producer, Restore};
use crate::store::layout::clean_name;
pub use crate::store::layout::row_prefix;
use crate::store::{Batch, StateStore, StoreError};

pub use crate::store::layout::Stage;

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error("state of partition {partition}: {error}")]
    State { partition: i32, error: String },
}

/// Shared between a task's thread and whoever runs it.
#[derive(Debug)]
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
    /// this task started; appointment stage: always.
    pub gate_open: AtomicBool,
    /// Vehicle stage, gate shut: the stage-one task it waits on (-1: none).
    pub gate_waits_on: AtomicI64,
    pub processed: AtomicU64,
    pub lag: AtomicI64,
    /// What the merge holds, in bytes.
    pub buffered_bytes: AtomicU64,
    /// Inputs paused for backpressure.
    pub paused_inputs: AtomicU64,
    /// Changelog records restored at start, and how long it took (ms).
    pub restored: AtomicU64,
    pub restore_ms: AtomicU64,
}

impl Default for TaskControl {
    fn default() -> Self {
        TaskControl {
            stop: AtomicBool::new(false),
            lost: AtomicBool::new(false),
            idle: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            gate_open: AtomicBool::new(false),
            gate_waits_on: AtomicI64::new(-1),
            processed: AtomicU64::new(0),
            lag: AtomicI64::new(0),
            buffered_bytes: AtomicU64::new(0),
            paused_inputs: AtomicU64::new(0),
            restored: AtomicU64::new(0),
            restore_ms: AtomicU64::new(0),
        }
    }
}

impl TaskControl {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.lost.load(Ordering::SeqCst)
    }
}

/// How big a batch gets before it is committed, and what a task may hold.
#[derive(Debug, Clone)]
pub struct Limits {
    pub batch_records: usize,
    pub commit_interval: Duration,
    pub timeout: Duration,
    /// What a task's merge may hold before it pauses inputs, in bytes.
    pub max_buffered_bytes: usize,
    /// librdkafka's prefetch queue of the task's consumer (all its
    /// partitions), in KiB
    /// (`queued.max.messages.kbytes`).
    pub fetch_queue_kbytes: usize,
}

/// Everything a task needs.
#[derive(Clone)]
pub struct TaskEnv {
    pub brokers: String,
    pub catalogue: Catalogue,
    pub codec: Arc<Codec>,
    pub store: Arc<dyn StateStore>,
    pub tenants: Arc<Tenants>,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
}

/// Records taken from the consumer between two rounds of the merge: the
/// merge's buffers stay small and keep their memory.
const FETCH_CHUNK: usize = 8192;

/// How long a batch of nothing but stage one's progress records may wait
/// for its commit (an idle stage one repeats its claim every second).
const PROGRESS_COMMIT_EVERY: Duration = Duration::from_secs(30);

/// How often caught-up inputs' high watermarks are refreshed.
const HIGHS_EVERY: Duration = Duration::from_millis(200);

/// How often an idle stage-one task repeats its progress (a restarted
/// stage-two task learns it within this).
const PROGRESS_EVERY: Duration = Duration::from_millis(1000);

/// Restored changelog records per local commit.
const RESTORE_CHUNK: usize = 20_000;

/// Task `(stage, p)`'s producer: idempotent, one request in flight (nisshi
/// answers OutOfOrderSequenceNumber to pipelined idempotent batches; one
/// in flight keeps the sequence strict). Its own, so that a fatal producer
/// error ends this task only and its restart gets a fresh one.
fn producer(env: &TaskEnv, name: &str) -> Result<Producer, TaskError> {
    let mut c = producer_config(&env.brokers, &format!("geoclock-task-{name}"));
    c.set("acks", "all")
        .set("max.in.flight.requests.per.connection", "1")
        .set("linger.ms", "2")
        .set("message.timeout.ms", (env.limits.timeout.as_millis() as u64).to_string());
    Ok(c.create_with_context(Acks("processor"))?)
}

/// Runs task `(stage, p)` until stopped. Blocking.
pub fn run(stage: Stage, p: i32, env: TaskEnv, control: Arc<TaskControl>) -> Result<(), TaskError> {
    let name = stage.task(p);
    let changelog = env.catalogue.name(stage.changelog());
    let producer = Arc::new(producer(&env, &name)?);
    // Fence any previous owner first: restore then reads up to and past the
    // claim, and skips whatever a zombie appends after it.
    let owner = changelog::claim(&producer, &changelog, p, env.limits.timeout)?;
    let sole = Arc::new(SoleWriter::new(owner));
    trust_or_forget_local(stage, p, &env, &changelog)?;
    let result = run_claimed(stage, p, &env, &control, producer, owner, sole.clone());
    // Whatever ended the run (a stop, a failure), a task that was its
    // changelog partition's only writer left local state that is exactly a
    // prefix of the changelog: its next run here keeps it and restores only
    // what follows. A lost partition's may hold what a newer owner fenced.
    let lost = control.lost.load(Ordering::SeqCst);
    if !lost && sole.sole() {
        mark_clean(env.store.as_ref(), stage, p, true)?;
    } else if !lost {
        tracing::warn!(task = %name, "another writer appended to the changelog since this task's claim: local state will be restored afresh");
    }
    result
}

fn run_claimed(
    stage: Stage,
    p: i32,
    env: &TaskEnv,
    control: &Arc<TaskControl>,
    producer: Arc<Producer>,
    owner: i64,
    sole: Arc<SoleWriter>,
) -> Result<(), TaskError> {
    let started = Instant::now();
    let name = stage.task(p);
    let changelog = env.catalogue.name(stage.changelog());
    let restore = Restore {
        brokers: &env.brokers,
        topic: &changelog,
        partition: p,
        store: stage.store(),
        chunk: RESTORE_CHUNK,
        timeout: env.limits.timeout,
    };
    let metrics = env.metrics.clone();
    let stats = changelog::restore_until(
        &restore,
        env.store.as_ref(),
        |done, total| metrics.restore_remaining.set(&name, (total - done) as i64),
        || control.stopping(),
    )?;
    if stats.interrupted {
        tracing::info!(task = %name, restored_records = stats.records, "stopped while restoring");
        return Ok(());
    }
    let restore_elapsed = started.elapsed();
    control.restored.store(stats.records, Ordering::Relaxed);
    control.restore_ms.store(restore_elapsed.as_millis() as u64, Ordering::Relaxed);
    if !stats.stale_claims.is_empty() {
        let next = changelog::retire_claims(&producer, &changelog, p, &stats.stale_claims, owner, env.limits.timeout)?;
        sole.wrote(stats.stale_claims.len(), next);
    }
    let consumer: BaseConsumer = consumer_config(&env.brokers, "geoclock-task")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "50")
        .set("queued.max.messages.kbytes", env.limits.fetch_queue_kbytes.to_string())
        .create()?;
    let inputs = inputs(stage, p, env, &consumer)?;
    // Stage one's caught-up claims from before now may be stale (the gate).
    let fresh_from = match stage {
        Stage::Vehicles => consumer.fetch_watermarks(&env.catalogue.name(Topic::FenceRoutes), p, env.limits.timeout)?.1,
        Stage::Appointments => 0,
    };
    let setup = Setup {
        stage,
        p,
        inputs,
        catalogue: &env.catalogue,
        codec: env.codec.clone(),
        tenants: env.tenants.clone(),
        batch_records: env.limits.batch_records,
        max_buffered_bytes: env.limits.max_buffered_bytes,
        fresh_from,
        incomplete: stats.incomplete,
    };
    let core = TaskCore::new(setup, env.store.as_ref())?;
    let mut tpl = TopicPartitionList::new();
    for (i, start) in core.inputs().iter().zip(core.fetch_starts()) {
        tpl.add_partition_offset(&i.name, i.partition, Offset::Offset(start))?;
    }
    consumer.assign(&tpl)?;
    let committer = Committer::spawn(CommitEnv {
        name: name.clone(),
        producer: producer.clone(),
        changelog,
        partition: p,
        owner,
        sole,
        store: env.store.clone(),
        metrics: env.metrics.clone(),
        timeout: env.limits.timeout,
    })
    .map_err(|e| TaskError::State { partition: p, error: format!("commit thread: {e}") })?;
    let rate = stats.records as f64 / restore_elapsed.as_secs_f64().max(1e-3);
    tracing::info!(
        task = %name,
        partition = p,
        restored_records = stats.records,
        fenced_records = stats.fenced,
        retired_claims = stats.stale_claims.len(),
        restore_rows_per_s = rate as u64,
        owner,
        tenants = core.tenants_held(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "task ready"
    );
    control.gate_open.store(core.gate_open(), Ordering::Relaxed);
    control.ready.store(true, Ordering::SeqCst);
    let mut driver = Driver {
        stage,
        name,
        env: env.clone(),
        control: control.clone(),
        core,
        committer,
        producer,
        last_highs: Instant::now(),
        progress_sent: None,
        gate_shut_since: None,
    };
    driver.run(&consumer)
}

/// Sets task `(stage, p)`'s clean-stop flag.
fn mark_clean(store: &dyn StateStore, stage: Stage, p: i32, clean: bool) -> Result<(), StoreError> {
    let mut flag = Batch::default();
    flag.offset(&clean_name(stage, p), 0, i64::from(clean));
    store.commit(&flag)
}

/// Local state is trusted only when its last run left it clean. A task
/// that crashed or lost its partition may have committed locally a batch
/// the changelog fences off (written after a newer owner's claim), so its
/// rows, input offsets and changelog position are forgotten and restored
/// from the changelog instead (as Kafka Streams wipes local state without a
/// clean checkpoint). Then the flag is cleared until the run ends.
fn trust_or_forget_local(stage: Stage, p: i32, env: &TaskEnv, changelog: &str) -> Result<(), TaskError> {
    let store = env.store.as_ref();
    if store.offset(&clean_name(stage, p), 0)? != Some(1) {
        let had = store.offset(changelog, p)?.is_some_and(|o| o > 0);
        let prefix = row_prefix(stage, p);
        store.forget(stage.store(), &prefix, &prefix)?;
        let mut reset = Batch::default();
        changelog::reset_position(&mut reset, changelog, p);
        store.commit(&reset)?;
        if had {
            tracing::warn!(task = %stage.task(p), "local state not left by a clean stop: restoring from the changelog");
        }
    }
    Ok(mark_clean(store, stage, p, false)?)
}

/// The task's inputs ([`Input::for_stage`]), with the global topics'
/// partitions from the broker's metadata.
fn inputs(stage: Stage, p: i32, env: &TaskEnv, consumer: &BaseConsumer) -> Result<Vec<Input>, TaskError> {
    Input::for_stage(stage, p, &env.catalogue, |_, n| -> Result<i32, TaskError> {
        let md = consumer.fetch_metadata(Some(n), env.limits.timeout)?;
        match md.topics().first().map_or(0, |t| t.partitions().len()) as i32 {
            0 => Err(TaskError::State {
                partition: p,
                error: format!("topic {n} missing: run `geoclock topics create`"),
            }),
            count => Ok(count),
        }
    })
}

/// The route record's source task, from its [`SOURCE_HEADER`].
fn source_of(headers: &rdkafka::message::BorrowedHeaders) -> Option<i32> {
    use rdkafka::message::Headers;
    let h = headers.iter().find(|h| h.key == SOURCE_HEADER)?;
    Some(i32::from_be_bytes(h.value?.try_into().ok()?))
}

/// The loop around a running task's core.
struct Driver {
    stage: Stage,
    name: String,
    env: TaskEnv,
    control: Arc<TaskControl>,
    core: TaskCore,
    committer: Committer,
    producer: Arc<Producer>,
    last_highs: Instant,
    /// Stage one: the last progress written, and when.
    progress_sent: Option<(i64, Instant)>,
    /// Stage two: since when the gate has been shut.
    gate_shut_since: Option<Instant>,
}

impl Driver {
    fn run(&mut self, consumer: &BaseConsumer) -> Result<(), TaskError> {
        let mut last_commit = Instant::now();
        let mut last_wait_log = Instant::now();
        let mut blocked_wait = Duration::from_millis(200);
        loop {
            if self.control.lost.load(Ordering::SeqCst) {
                tracing::warn!(task = %self.name, "partition lost: stopping without writing");
                return Ok(());
            }
            if self.control.stop.load(Ordering::SeqCst) {
                // A batch cut short by a crash is committed only whole, at
                // its recorded end: stopped halfway through its replay, it
                // stays cut (the changelog still ends with its plan) for
                // whoever runs the task next.
                if !self.core.replaying() {
                    self.commit()?;
                }
                self.committer.wait()?;
                tracing::info!(task = %self.name, "task stopped");
                return Ok(());
            }
            if self.stage == Stage::Appointments && fault::stage_one_held() {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            self.fetch(consumer)?;
            match self.core.step()? {
                Step::Commit => {
                    self.commit()?;
                    last_commit = Instant::now();
                }
                Step::Blocked(e) => {
                    // Records of a partition are processed in order: hold
                    // here, with backoff, until the schema comes or the
                    // codec calls the record poison.
                    tracing::warn!(task = %self.name, error = %e, retry_in_ms = blocked_wait.as_millis() as u64, "writer schema not available; waiting");
                    std::thread::sleep(blocked_wait);
                    blocked_wait = (blocked_wait * 2).min(Duration::from_secs(5));
                }
                Step::Waiting => blocked_wait = Duration::from_millis(200),
            }
            if last_commit.elapsed() > Duration::from_secs(5) && last_wait_log.elapsed() > Duration::from_secs(5) {
                if let Some((idx, next, high)) = self.core.blocked_on() {
                    let i = &self.core.inputs()[idx];
                    tracing::info!(task = %self.name, input = %i.name, input_partition = i.partition, next, ?high, buffered_bytes = self.core.buffered_bytes(), "waiting for input");
                    last_wait_log = Instant::now();
                }
            }
            let idle = self.core.idle();
            let due = match self.core.pending_data() {
                true => idle || last_commit.elapsed() >= self.env.limits.commit_interval,
                false => last_commit.elapsed() >= PROGRESS_COMMIT_EVERY,
            };
            if self.core.pending() > 0 && due && !self.core.replaying() {
                self.commit()?;
                last_commit = Instant::now();
            }
            if self.stage == Stage::Appointments && idle && self.core.pending() == 0 && !self.committer.in_flight() {
                self.caught_up_progress()?;
            }
            self.flow(consumer)?;
            self.committer.poll()?;
            self.report(idle);
        }
    }

    /// Hands the uncommitted records to the committer as one batch.
    fn commit(&mut self) -> Result<(), TaskError> {
        let Some(b) = self.core.take_batch()? else { return Ok(()) };
        if self.control.lost.load(Ordering::SeqCst) {
            return Ok(());
        }
        let m = &self.env.metrics;
        for (topic, n) in &b.counted {
            m.records.add(topic, *n);
        }
        m.commands.inc_by(b.commands as u64);
        let now_ms = chrono::Utc::now().timestamp_millis();
        for d in &b.decided {
            if d.arrival {
                m.arrival(&d.tenant);
            }
            let event_age = d.clock_ms.map(|t| (now_ms - t) as f64 / 1000.0);
            m.command(&d.tenant, d.kind, (now_ms - d.record_ms) as f64 / 1000.0, event_age);
        }
        m.dead_letters.inc_by(b.dead_letters as u64);
        m.state_appointments.set(&self.name, b.appointments as i64);
        for (kind, n) in b.sizes {
            crate::telemetry::metrics::store_entries(&format!("processor_state:{}", self.name), kind, n as u64);
        }
        if self.stage == Stage::Appointments && self.core.through() > i64::MIN {
            self.progress_sent = Some((self.core.through(), Instant::now()));
        }
        self.committer.submit(b)?;
        Ok(())
    }

    /// Stage one, idle: every route its input causes so far is produced.
    /// Says so on every routes partition (again every [`PROGRESS_EVERY`],
    /// for stage-two tasks that restart); not waited for.
    fn caught_up_progress(&mut self) -> Result<(), TaskError> {
        if self.progress_sent.is_some_and(|(v, at)| v == i64::MAX && at.elapsed() < PROGRESS_EVERY) {
            return Ok(());
        }
        tracing::debug!(task = %self.name, "caught up: sending progress");
        let records = self.core.progress_records(i64::MAX)?;
        drop(enqueue(&self.producer, &records, self.env.limits.timeout)?);
        self.progress_sent = Some((i64::MAX, Instant::now()));
        Ok(())
    }

    /// Polls what the consumer has (waiting briefly when it has nothing)
    /// and refreshes every input's high watermark when due.
    fn fetch(&mut self, consumer: &BaseConsumer) -> Result<(), TaskError> {
        let mut wait = Duration::from_millis(20);
        for _ in 0..FETCH_CHUNK {
            let Some(msg) = consumer.poll(wait) else { break };
            wait = Duration::ZERO;
            self.take(msg);
        }
        if self.core.unknown_high() || self.last_highs.elapsed() >= HIGHS_EVERY {
            self.refresh_highs(consumer)?;
        }
        Ok(())
    }

    fn take(&mut self, msg: KafkaResult<BorrowedMessage<'_>>) {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(task = %self.name, error = %e, "consumer error");
                return;
            }
        };
        let Some(input) = self.core.input_of(msg.topic(), msg.partition()) else { return };
        let timestamp = match msg.timestamp() {
            Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => t,
            Timestamp::NotAvailable => 0,
        };
        let source = match self.core.wants_source(input) {
            true => msg.headers().and_then(source_of),
            false => None,
        };
        let (key, value) = (msg.key(), msg.payload());
        self.core.push(Fetched { input, offset: msg.offset(), timestamp, key, value, source });
    }

    /// Asks the broker for every input's high watermark (one ListOffsets
    /// round for all of them).
    fn refresh_highs(&mut self, consumer: &BaseConsumer) -> Result<(), TaskError> {
        let mut tpl = TopicPartitionList::new();
        for i in self.core.inputs() {
            tpl.add_partition_offset(&i.name, i.partition, Offset::End)?;
        }
        let highs = consumer.offsets_for_times(tpl, self.env.limits.timeout)?;
        for e in highs.elements() {
            if let (Offset::Offset(h), Some(idx)) = (e.offset(), self.core.input_of(e.topic(), e.partition())) {
                self.core.set_high(idx, h);
            }
        }
        self.last_highs = Instant::now();
        Ok(())
    }

    /// Pauses and resumes inputs as the core asks (its memory bound).
    fn flow(&mut self, consumer: &BaseConsumer) -> Result<(), TaskError> {
        for (idx, pause) in self.core.flow() {
            let i = &self.core.inputs()[idx];
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&i.name, i.partition);
            tracing::debug!(task = %self.name, input = %i.name, input_partition = i.partition, pause, buffered_bytes = self.core.buffered_bytes(), "backpressure");
            match pause {
                true => consumer.pause(&tpl)?,
                false => consumer.resume(&tpl)?,
            }
        }
        Ok(())
    }

    /// Publishes the task's state to whoever runs it and to the metrics.
    fn report(&mut self, idle: bool) {
        let (c, m, core) = (&self.control, &self.env.metrics, &self.core);
        let lag = core.lag();
        c.lag.store(lag, Ordering::SeqCst);
        c.processed.store(core.processed(), Ordering::Relaxed);
        c.buffered_bytes.store(core.buffered_bytes() as u64, Ordering::Relaxed);
        c.paused_inputs.store(core.paused_inputs() as u64, Ordering::Relaxed);
        m.lag.set(&self.name, lag);
        m.buffered_bytes.set(&self.name, core.buffered_bytes() as i64);
        m.paused_inputs.set(&self.name, core.paused_inputs() as i64);
        if self.stage == Stage::Vehicles {
            let open = core.gate_open();
            c.gate_open.store(open, Ordering::Relaxed);
            let waits_on = core.gate_waiting_on();
            c.gate_waits_on.store(waits_on.map_or(-1, i64::from), Ordering::Relaxed);
            let since = match open {
                true => None,
                false => Some(*self.gate_shut_since.get_or_insert_with(Instant::now)),
            };
            self.gate_shut_since = since;
            let waits = waits_on.map(|q| Stage::Appointments.task(q)).unwrap_or_default();
            m.gate_shut(&self.name, &waits, since.map_or(0.0, |s| s.elapsed().as_secs_f64()));
        }
        c.idle.store(idle && !core.pending_data() && !self.committer.busy_with_data(), Ordering::SeqCst);
    }
}
