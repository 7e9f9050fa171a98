//! `geoclock process`: the engine as a scalable, restartable Kafka
//! application.
//!
//! Shape: one consumer group. Its members are assigned partitions of the
//! pings topic (cooperative-sticky); each assigned partition `p` becomes two
//! tasks ([`task`]: a thin rdkafka driver around a pure core, [`core`],
//! that assembles each [`batch`], and a long-lived committer, [`commit`]),
//! each on its own OS thread with its own consumer: the
//! appointment-stage task `a{p}` (stage one, keyed by appointment: entities
//! and clock events in; fences, Service Links and fence routes out) and the
//! vehicle-stage task `{p}` (stage two, keyed by vehicle: pings and fence
//! routes in; clock changes out); see [`crate::engine::route`]. The two
//! stages' topics are co-partitioned with the pings (same partition count,
//! checked at start-up), so one membership decides both. Each task reads at
//! the offsets stored with its state. The group consumer itself reads
//! nothing (its partitions are paused): membership only decides which tasks
//! run here.
//!
//! Invariants:
//! - Exactly-once effect without Kafka transactions: the commit protocol of
//!   [`task`] and [`crate::store`]; commands carry deterministic ids, so a
//!   batch re-processed after a crash re-produces the same records, which
//!   sinks drop by id.
//! - Rebalances: a revoked partition's task finishes and commits its batch
//!   before the revocation returns; a lost partition's task writes nothing
//!   more; a restoring task stops at its next chunk, so a revocation never
//!   waits for a whole restore. The group's poll interval covers the
//!   longest commit. Callbacks only signal tasks and wait for them;
//!   librdkafka's blocking calls run on task threads and the group thread,
//!   never on an async worker, and no thread here `block_on`s.
//! - A task that fails is restarted after a backoff that doubles with each
//!   failure in a row (0.5 s up to 60 s); it keeps the state it restored
//!   when it was still its changelog's only writer.
//! - Memory is bounded under any backlog: each task's merge holds at most
//!   about [`Limits::max_buffered_bytes`] (its inputs pause above it, in
//!   offset order: [`core`]), and librdkafka's prefetch queue of a task's
//!   consumer (all its partitions together) [`Limits::fetch_queue_kbytes`].
//! - Only the tenants of the tenants file are served ([`tenants`]).
//! - Malformed input goes to the dead-letter topic with the reason, topic,
//!   partition and offset; the task goes on.

pub mod batch;
pub mod bench;
pub mod commit;
pub mod core;
pub mod fault;
pub mod gate;
pub mod merge;
pub mod metrics;
pub mod task;
pub mod tenants;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::TopicPartitionList;

use crate::kafka::codec::Codec;
use crate::kafka::registry::SchemaRegistry;
use crate::kafka::topics::{Catalogue, Topic};
pub use crate::store::layout::{Stage, STATE_STORES};
use crate::store::rocks::{RocksConfig, RocksStore};
use crate::store::StoreError;
use task::TaskEnv;
pub use task::{Limits, TaskControl, TaskError};
pub use tenants::{Tenants, TenantsError};

#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("codec: {0}")]
    Codec(String),
    #[error(transparent)]
    Tenants(#[from] TenantsError),
    #[error("metrics endpoint: {0}")]
    Metrics(std::io::Error),
}

/// What a task's merge may hold before it pauses inputs (`--max-buffer-mb`).
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 32 << 20;

/// librdkafka's prefetch queue of a task's consumer, in KiB (its own
/// default, 64 MiB, a backlog fills for every task).
pub const DEFAULT_FETCH_QUEUE_KBYTES: usize = 8 << 10;

/// Waits between restarts of a failed task: doubling from the first to the
/// last; back to the first once the task ran [`RESTART_HEALTHY`].
const RESTART_BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(60));
const RESTART_HEALTHY: Duration = Duration::from_secs(120);

/// How to run.
#[derive(Clone)]
pub struct Config {
    pub brokers: String,
    pub catalogue: Catalogue,
    pub group_id: String,
    pub state_dir: PathBuf,
    pub tenants: Tenants,
    pub limits: Limits,
    pub rocks: RocksConfig,
    pub registry: Arc<dyn SchemaRegistry>,
    pub metrics_addr: Option<SocketAddr>,
    /// How long the group waits for a silent member before moving its partitions.
    pub session_timeout: Duration,
    /// How long a writer schema id the registry does not know is waited
    /// for before its records are dead-lettered.
    pub unknown_schema_grace: Duration,
}

impl Config {
    pub fn new(brokers: &str, catalogue: Catalogue, state_dir: PathBuf, registry: Arc<dyn SchemaRegistry>) -> Config {
        Config {
            brokers: brokers.to_string(),
            catalogue,
            group_id: "geoclock-processor".into(),
            state_dir,
            tenants: Tenants::any(),
            limits: Limits {
                // Large batches while catching up (fewer rewrites of each
                // vehicle's rows); live input commits as soon as it is idle.
                batch_records: 100_000,
                commit_interval: Duration::from_millis(1000),
                timeout: Duration::from_secs(30),
                max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
                fetch_queue_kbytes: DEFAULT_FETCH_QUEUE_KBYTES,
            },
            rocks: RocksConfig::default(),
            registry,
            metrics_addr: None,
            session_timeout: Duration::from_secs(10),
            unknown_schema_grace: crate::kafka::codec::UNKNOWN_SCHEMA_GRACE,
        }
    }
}

struct Running {
    control: Arc<TaskControl>,
    thread: JoinHandle<Result<(), TaskError>>,
    started: Instant,
    /// Failures in a row before this start.
    failures: u32,
}

/// A failed task's next start.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    failures: u32,
    next: Instant,
}

/// The group member's view: which tasks run here.
struct Group {
    env: TaskEnv,
    pings: String,
    tasks: Mutex<BTreeMap<(i32, Stage), Running>>,
    /// Failed tasks waiting for their restart.
    failed: Mutex<BTreeMap<(i32, Stage), Backoff>>,
}

impl Group {
    /// Starts partition `p`'s tasks of both stages.
    fn start(&self, p: i32) {
        for stage in Stage::ALL {
            self.failed.lock().unwrap_or_else(|e| e.into_inner()).remove(&(p, stage));
            self.start_task(p, stage, 0);
        }
    }

    fn start_task(&self, p: i32, stage: Stage, failures: u32) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if tasks.contains_key(&(p, stage)) {
            return;
        }
        let control = Arc::new(TaskControl::default());
        let (env, c) = (self.env.clone(), control.clone());
        let name = stage.task(p);
        let spawned = std::thread::Builder::new().name(format!("task-{name}")).spawn(move || {
            let r = task::run(stage, p, env, c);
            if let Err(e) = &r {
                tracing::error!(task = %stage.task(p), partition = p, error = %e, "task failed");
            }
            r
        });
        match spawned {
            Ok(thread) => {
                tasks.insert((p, stage), Running { control, thread, started: Instant::now(), failures });
            }
            Err(e) => tracing::error!(task = %name, error = %e, "cannot start task thread"),
        }
    }

    /// Stops partition `p`'s tasks and waits for them: each after a commit
    /// when `lost` is false, without writing anything when it is true. A
    /// restoring task stops at its next chunk.
    fn stop(&self, p: i32, lost: bool) {
        let running: Vec<Running> = {
            let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
            Stage::ALL.iter().filter_map(|s| tasks.remove(&(p, *s))).collect()
        };
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        for s in Stage::ALL {
            failed.remove(&(p, s));
        }
        drop(failed);
        for r in &running {
            if lost {
                r.control.lost.store(true, Ordering::SeqCst);
            }
            r.control.stop.store(true, Ordering::SeqCst);
        }
        for r in running {
            let _ = r.thread.join();
        }
        for s in Stage::ALL {
            self.env.metrics.forget_task(&s.task(p));
        }
    }

    fn partitions(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements().iter().filter(|e| e.topic() == self.pings).map(|e| e.partition()).collect()
    }

    /// Restarts tasks whose thread ended on an error (they resume from
    /// their stored state), each after a backoff that doubles with every
    /// failure in a row.
    fn restart_failed(&self) {
        let ended: Vec<((i32, Stage), Running)> = {
            let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
            let keys: Vec<(i32, Stage)> =
                tasks.iter().filter(|(_, r)| r.thread.is_finished()).map(|(k, _)| *k).collect();
            keys.into_iter().filter_map(|k| tasks.remove(&k).map(|r| (k, r))).collect()
        };
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        for (key, r) in ended {
            let ran = r.started.elapsed();
            let _ = r.thread.join();
            let failures = if ran >= RESTART_HEALTHY { 1 } else { r.failures + 1 };
            let wait = RESTART_BACKOFF.0.saturating_mul(1 << (failures - 1).min(16)).min(RESTART_BACKOFF.1);
            tracing::warn!(task = %key.1.task(key.0), failures, retry_in_ms = wait.as_millis() as u64, "task ended; restarting after a backoff");
            failed.insert(key, Backoff { failures, next: Instant::now() + wait });
        }
        let due: Vec<((i32, Stage), u32)> =
            failed.iter().filter(|(_, b)| b.next <= Instant::now()).map(|(k, b)| (*k, b.failures)).collect();
        for (key, _) in &due {
            failed.remove(key);
        }
        drop(failed);
        for ((p, stage), failures) in due {
            self.env.metrics.task_restarts.inc();
            self.start_task(p, stage, failures);
        }
    }
}

struct GroupContext(Arc<Group>);

impl ClientContext for GroupContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::kafka::client::log_line("processor", level, fac, log_message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        crate::kafka::client::error_line("processor", &error, reason);
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let lost = consumer.assignment_lost();
            let event = if lost { "lost" } else { "revoked" };
            for p in self.0.partitions(tpl) {
                tracing::info!(partition = p, event, "partition leaving");
                self.0.env.metrics.rebalances.add(event, 1);
                self.0.stop(p, lost);
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            if let Err(e) = consumer.pause(tpl) {
                tracing::warn!(error = %e, "cannot pause the group consumer's partitions");
            }
            for p in self.0.partitions(tpl) {
                tracing::info!(partition = p, "partition assigned");
                self.0.env.metrics.rebalances.add("assigned", 1);
                self.0.start(p);
            }
        }
    }
}

/// A running processor.
pub struct Processor {
    group: Arc<Group>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<Result<(), ProcessorError>>>,
    pub metrics_addr: Option<SocketAddr>,
}

/// One task's progress, for tests and the scenario runner.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskStatus {
    pub partition: i32,
    pub stage: Stage,
    pub idle: bool,
    /// Restored and consuming.
    pub ready: bool,
    /// Stage one has said it is caught up, since the task started
    /// ([`task::TaskControl::gate_open`]).
    pub gate_open: bool,
    pub processed: u64,
    pub lag: i64,
    /// What the task's merge holds, in bytes.
    pub buffered_bytes: u64,
    /// Inputs paused for backpressure.
    pub paused_inputs: u64,
    /// Changelog records restored at start, and how long that took.
    pub restored: u64,
    pub restore_ms: u64,
}

impl Processor {
    /// Joins the group and runs until [`Processor::stop`]. Every thread it
    /// starts is a plain OS thread; it needs no async runtime.
    pub fn start(config: Config) -> Result<Processor, ProcessorError> {
        config.tenants.validate()?;
        let codec = Codec::connect(config.registry.clone(), &config.catalogue, Duration::from_secs(120))
            .map_err(|e| ProcessorError::Codec(e.to_string()))?
            .with_unknown_grace(config.unknown_schema_grace);
        std::fs::create_dir_all(&config.state_dir).map_err(|e| StoreError::Changelog(e.to_string()))?;
        let store = RocksStore::open(&config.state_dir, &STATE_STORES, &config.rocks)?;
        let metrics = Arc::new(metrics::Metrics::new(config.tenants.tenants.keys().map(String::as_str)));
        let metrics_addr = match config.metrics_addr {
            Some(a) => Some(metrics::serve(a, metrics.clone()).map_err(ProcessorError::Metrics)?),
            None => None,
        };
        let env = TaskEnv {
            brokers: config.brokers.clone(),
            catalogue: config.catalogue.clone(),
            codec: Arc::new(codec),
            store: Arc::new(store),
            tenants: Arc::new(config.tenants.clone()),
            limits: config.limits.clone(),
            metrics,
        };
        let pings = config.catalogue.name(Topic::Pings);
        if !config.tenants.any_tenant {
            let names: Vec<&str> = config.tenants.tenants.keys().map(String::as_str).collect();
            tracing::info!(tenants = ?names, "serving the tenants of the tenants file only");
        }
        let group = Arc::new(Group {
            env,
            pings: pings.clone(),
            tasks: Mutex::new(BTreeMap::new()),
            failed: Mutex::new(BTreeMap::new()),
        });
        // The revoke callback waits for the partition's tasks to commit
        // their batch (each produce step waits up to the timeout; a
        // restoring task stops at its next chunk): the poll interval must
        // cover that, or the member is evicted mid-commit.
        let poll_interval = (config.limits.timeout * 3 + Duration::from_secs(60)).max(Duration::from_secs(300));
        let consumer: BaseConsumer<GroupContext> = crate::kafka::client::base(&config.brokers)
            .set("group.id", &config.group_id)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", config.session_timeout.as_millis().to_string())
            .set("heartbeat.interval.ms", "1000")
            .set("max.poll.interval.ms", poll_interval.as_millis().to_string())
            .create_with_context(GroupContext(group.clone()))?;
        consumer.subscribe(&[&pings])?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (g, s) = (group.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("group".into())
            .spawn(move || {
                let mut last_check = Instant::now();
                while !s.load(Ordering::SeqCst) {
                    // Partitions are paused: poll serves callbacks and heartbeats only.
                    let _ = consumer.poll(Duration::from_millis(100));
                    if last_check.elapsed() > Duration::from_secs(1) {
                        g.restart_failed();
                        last_check = Instant::now();
                    }
                }
                let running: std::collections::BTreeSet<i32> =
                    g.tasks.lock().unwrap_or_else(|e| e.into_inner()).keys().map(|k| k.0).collect();
                for p in running {
                    g.stop(p, false);
                }
                consumer.unsubscribe();
                Ok(())
            })
            .map_err(ProcessorError::Metrics)?;
        Ok(Processor { group, stop, thread: Some(thread), metrics_addr })
    }

    /// Whether the group thread has ended (only a stop or an error ends it).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    pub fn metrics(&self) -> Arc<metrics::Metrics> {
        self.group.env.metrics.clone()
    }

    pub fn status(&self) -> Vec<TaskStatus> {
        let tasks = self.group.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks
            .iter()
            .map(|((p, stage), r)| TaskStatus {
                partition: *p,
                stage: *stage,
                idle: r.control.idle.load(Ordering::SeqCst),
                ready: r.control.ready.load(Ordering::SeqCst),
                gate_open: r.control.gate_open.load(Ordering::Relaxed),
                processed: r.control.processed.load(Ordering::SeqCst),
                lag: r.control.lag.load(Ordering::SeqCst),
                buffered_bytes: r.control.buffered_bytes.load(Ordering::Relaxed),
                paused_inputs: r.control.paused_inputs.load(Ordering::Relaxed),
                restored: r.control.restored.load(Ordering::Relaxed),
                restore_ms: r.control.restore_ms.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Fault injection: holds (or releases) every stage-one task of this
    /// process ([`fault::set_stage_one_held`]).
    pub fn hold_stage_one(&self, held: bool) {
        fault::set_stage_one_held(held);
    }

    /// Stops every task (each commits its batch) and leaves the group.
    pub fn stop(mut self) -> Result<(), ProcessorError> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            _ => Ok(()),
        }
    }
}

impl Drop for Processor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
