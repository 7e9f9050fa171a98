//! `geoclock process`: the engine as a scalable, restartable Kafka
//! application.
//!
//! Shape: one consumer group. Its members are assigned partitions of the
//! pings topic (cooperative-sticky); each assigned partition `p` becomes two
//! tasks ([`task`]), each on its own OS thread with its own consumer: the
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
//!   more. Callbacks only signal tasks and wait for them; librdkafka's
//!   blocking calls run on task threads and the group thread, never on an
//!   async worker.
//! - Malformed input goes to the dead-letter topic with the reason, topic,
//!   partition and offset; the task goes on.

pub mod bench;
pub mod commit;
pub mod fault;
pub mod gate;
pub mod merge;
pub mod metrics;
pub mod task;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::TopicPartitionList;
use serde::Deserialize;

use crate::kafka::codec::Codec;
use crate::kafka::registry::SchemaRegistry;
use crate::kafka::topics::{Catalogue, Topic};
use crate::model::{Settings, SettingsError};
use crate::store::rocks::{RocksConfig, RocksStore};
use crate::store::{StoreError, StoreName};
use task::TaskEnv;
pub use task::{Limits, Stage, TaskControl, TaskError};

/// The RocksDB column families of task state, one per stage (each backed
/// by its stage's changelog): [`Stage::store`].
pub const STATE_STORES: [StoreName; 2] = [Stage::Appointments.store(), Stage::Vehicles.store()];

#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("codec: {0}")]
    Codec(String),
    #[error("tenants file {path}: {error}")]
    Tenants { path: String, error: String },
    #[error("settings of tenant {tenant}: {error}")]
    Settings { tenant: String, error: SettingsError },
    #[error("metrics endpoint: {0}")]
    Metrics(std::io::Error),
}

/// Each tenant's engine settings (`default` for tenants not listed).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenants {
    #[serde(default)]
    pub default: Settings,
    #[serde(default)]
    pub tenants: BTreeMap<String, Settings>,
}

impl Tenants {
    /// Reads a tenants file and validates every tenant's settings: the
    /// deployment's TOML file (`*.toml`, see [`crate::config::tenants`];
    /// its `settings` per tenant are used, its secrets are resolved too) or
    /// a YAML/JSON file with `default:` and `tenants: {name: settings}`.
    pub fn load(path: &Path) -> Result<Tenants, ProcessorError> {
        let bad = |error: String| ProcessorError::Tenants { path: path.display().to_string(), error };
        if path.extension().is_some_and(|e| e == "toml") {
            let list = crate::config::tenants::load(path).map_err(|e| bad(e.to_string()))?;
            let tenants = list.into_iter().map(|t| (t.name, t.settings)).collect();
            return Ok(Tenants { default: Settings::default(), tenants });
        }
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let t: Tenants = crate::config::yaml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        t.validate()?;
        Ok(t)
    }

    pub fn validate(&self) -> Result<(), ProcessorError> {
        let default = std::iter::once(("(default)", &self.default));
        for (tenant, s) in default.chain(self.tenants.iter().map(|(t, s)| (t.as_str(), s))) {
            s.validate().map_err(|error| ProcessorError::Settings { tenant: tenant.to_string(), error })?;
        }
        Ok(())
    }

    pub fn settings(&self, tenant: &str) -> Settings {
        self.tenants.get(tenant).unwrap_or(&self.default).clone()
    }
}

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
            tenants: Tenants::default(),
            limits: Limits {
                // Large batches while catching up (fewer rewrites of each
                // vehicle's rows); live input commits as soon as it is idle.
                batch_records: 100_000,
                commit_interval: Duration::from_millis(1000),
                timeout: Duration::from_secs(30),
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
}

/// The group member's view: which tasks run here.
struct Group {
    env: TaskEnv,
    pings: String,
    tasks: Mutex<BTreeMap<(i32, Stage), Running>>,
}

impl Group {
    /// Starts partition `p`'s tasks of both stages.
    fn start(&self, p: i32) {
        for stage in Stage::ALL {
            self.start_task(p, stage);
        }
    }

    fn start_task(&self, p: i32, stage: Stage) {
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
                tasks.insert((p, stage), Running { control, thread });
            }
            Err(e) => tracing::error!(task = %name, error = %e, "cannot start task thread"),
        }
    }

    /// Stops partition `p`'s tasks and waits for them: each after a commit
    /// when `lost` is false, without writing anything when it is true.
    fn stop(&self, p: i32, lost: bool) {
        let running: Vec<Running> = {
            let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
            Stage::ALL.iter().filter_map(|s| tasks.remove(&(p, *s))).collect()
        };
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
    /// their stored state).
    fn restart_failed(&self) {
        let failed: Vec<(i32, Stage)> = {
            let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
            tasks.iter().filter(|(_, r)| r.thread.is_finished()).map(|(k, _)| *k).collect()
        };
        for (p, stage) in failed {
            let running = self.tasks.lock().unwrap_or_else(|e| e.into_inner()).remove(&(p, stage));
            if let Some(r) = running {
                let _ = r.thread.join();
            }
            std::thread::sleep(Duration::from_millis(500));
            self.start_task(p, stage);
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
}

impl Processor {
    /// Joins the group and runs until [`Processor::stop`]. `runtime` is used
    /// from task threads to await produce acknowledgements.
    pub fn start(config: Config, runtime: tokio::runtime::Handle) -> Result<Processor, ProcessorError> {
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
            runtime,
            tenants: Arc::new(config.tenants.clone()),
            limits: config.limits.clone(),
            metrics,
        };
        let pings = config.catalogue.name(Topic::Pings);
        let group = Arc::new(Group { env, pings: pings.clone(), tasks: Mutex::new(BTreeMap::new()) });
        let consumer: BaseConsumer<GroupContext> = crate::kafka::client::base(&config.brokers)
            .set("group.id", &config.group_id)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", config.session_timeout.as_millis().to_string())
            .set("heartbeat.interval.ms", "1000")
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
            })
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_come_from_the_deployments_toml_file_too() {
        let path = std::env::temp_dir().join(format!("geoclock-tenants-{}.toml", std::process::id()));
        std::fs::write(&path, "[[tenants]]\nname = \"acme\"\nsettings = { window_hours = 3 }\n").unwrap();
        let t = Tenants::load(&path).unwrap();
        assert_eq!(t.settings("acme").window_hours, 3.0);
        assert_eq!(t.settings("other"), Settings::default());
        std::fs::write(&path, "[[tenants]]\nname = \"acme\"\nsettings = { window_hours = -3 }\n").unwrap();
        assert!(Tenants::load(&path).is_err());
        let _ = std::fs::remove_file(&path);
    }
}
