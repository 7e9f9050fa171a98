//! A sink process: the consumer thread (commands in, offsets out), one
//! worker per tenant ([`super::worker`]), and the rebalance hand-off.
//!
//! The consumer thread polls, decodes and sorts each command: not this
//! sink's kind, or decided already (the ledger says done; its result is
//! re-published if it was never acknowledged) → its offset is free at once;
//! a tenant not in the tenants file → failed and dead-lettered; otherwise
//! it goes to its tenant's queue, and its offset stays open until the
//! worker has decided it ([`super::queue::Offsets`]). Offsets are committed
//! about every second, never past an open one.
//!
//! Which commands may already have taken effect: a command with an intent
//! in the ledger and no outcome (a crash mid-call), and — on a partition
//! whose previous claimant was another instance ([`claim`]: claims are
//! records on a compacted topic, since not every broker keeps commit
//! metadata) — every command below the partition's end at the claim that
//! this ledger has not decided: the other instance may have been working on
//! it before the partition moved here (a crash, a rebalance, a scale-out).
//! Those are looked up at the vendor before acting ([`super::effect`]). So
//! sink instances scale as a consumer group without doubling effects, and
//! without moving the ledger.
//!
//! Rebalances (cooperative-sticky): a revocation stops the workers from
//! starting calls for the revoked partitions, drops their queued commands,
//! waits for the batch in flight (bounded by the call timeout), and commits
//! the revoked partitions' points before it returns; an assignment only
//! records the partitions. All Kafka calls run on the consumer thread.
//!
//! Registry trouble is not poison: a command whose writer schema cannot be
//! fetched (registry unreachable, or an id it cannot serve yet) pauses its
//! partition and is retried with backoff; only after `unknown_schema_grace`
//! of an id being unknown is the record dead-lettered.
//!
//! Supervision: if a worker or the consumer thread dies, [`Sink::wait`]
//! returns its error (the CLI exits non-zero); `/healthz` answers 503 while
//! any of them has not looped for `stall_after`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::clock::ClockSink;
use super::effect::{Cx, Fence};
use super::email::EmailSink;
use super::geofence::GeofenceSink;
use super::ledger::{Ledger, LedgerError, Step};
use super::metrics::Metrics;
use super::queue::{Claim, Offsets};
use super::worker::{self, TenantQueue, WorkerEnv};
use super::{Decided, Executor, SinkKind, TenantCx, Work};
use crate::config::tenants::Tenant;
use crate::kafka::client::consumer_config;
use crate::kafka::codec::{Codec, CodecError};
use crate::kafka::produce::{producer_config, Outgoing, SyncProducer};
use crate::kafka::records::{DeadLetter, Outcome};
use crate::kafka::registry::SchemaRegistry;
use crate::kafka::topics::{self, Catalogue, Topic};
use crate::model::Ts;
use crate::vendor::call::Stop;
use crate::vendor::retry::{Backoff, Policy};
use crate::vendor::{azuga, servicetrade};

/// The header `geoclock dlq replay` puts on a re-driven command: a command
/// that failed is tried again (looked up first) instead of being a duplicate.
pub const REDRIVE_HEADER: &str = "geoclock-redrive";

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("kafka: {0}")]
    Kafka(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("codec: {0}")]
    Codec(String),
    #[error("metrics endpoint: {0}")]
    Metrics(std::io::Error),
    #[error("{0} died")]
    Died(String),
}

pub struct SinkConfig {
    pub kind: SinkKind,
    pub brokers: String,
    pub catalogue: Catalogue,
    pub group: Option<String>,
    pub state_dir: PathBuf,
    pub tenants: Vec<Tenant>,
    pub registry: Arc<dyn SchemaRegistry>,
    /// Default SMTP relay URL for the email sink.
    pub smtp: Option<String>,
    /// The report server, for the email sink's daily report.
    pub report_url: Option<String>,
    pub metrics_addr: Option<SocketAddr>,
    /// Metrics shared with other sinks of the process (the demo); a new
    /// registry when `None`.
    pub metrics: Option<Metrics>,
    /// Commands a worker attempts at once (the geofence sink's bulk size).
    pub batch: usize,
    /// fsync every ledger step (survives a machine crash, not only a process crash).
    pub sync: bool,
    /// How long the ledger keeps decided commands, and its clock.
    pub retention: crate::sink::ledger::Retention,
    pub backoff: Backoff,
    /// Vendor call timeout.
    pub http_timeout: Duration,
    /// The longest `Retry-After` honoured.
    pub retry_after_cap: Duration,
    /// How long past its time a clock change (or a geofence delete) is
    /// still worth retrying ([`super::policy::give_up_at`]).
    pub max_effect_age: Duration,
    /// The consumer group's session timeout; workers act only within half
    /// of it after the last poll.
    pub session_timeout: Duration,
    /// How long a writer schema id may be unknown before its record is poison.
    pub unknown_schema_grace: Duration,
    /// A worker or the consumer thread that has not looped this long makes
    /// `/healthz` answer 503.
    pub stall_after: Duration,
}

impl SinkConfig {
    pub fn new(
        kind: SinkKind,
        brokers: &str,
        catalogue: Catalogue,
        state_dir: PathBuf,
        tenants: Vec<Tenant>,
        registry: Arc<dyn SchemaRegistry>,
    ) -> SinkConfig {
        SinkConfig {
            kind,
            brokers: brokers.to_string(),
            catalogue,
            group: None,
            state_dir,
            tenants,
            registry,
            smtp: None,
            report_url: None,
            metrics_addr: None,
            metrics: None,
            batch: 500,
            sync: true,
            retention: Default::default(),
            backoff: Backoff::default(),
            http_timeout: Duration::from_secs(30),
            retry_after_cap: Duration::from_secs(600),
            max_effect_age: Duration::from_secs(86_400),
            session_timeout: Duration::from_secs(10),
            unknown_schema_grace: Duration::from_secs(60),
            stall_after: Duration::from_secs(120),
        }
    }
}

/// Publishes outcomes: metrics and logs, the results (and dead-letter)
/// records, acknowledged, then the ledger's `reported` mark.
pub struct Results {
    kind: SinkKind,
    codec: Arc<Codec>,
    pub(crate) producer: SyncProducer,
    commands: String,
    component: String,
}

impl Results {
    /// Counts and logs one outcome.
    fn note(&self, cx: &Cx, tenant: &str, d: &Decided) {
        let (sink, r) = (self.kind.name(), &d.result);
        cx.metrics.command(sink, tenant, &r.kind, r.outcome.as_str());
        if r.outcome == Outcome::Done {
            cx.metrics.latency(sink, tenant, (r.executed_at.millis() - r.command_time.millis()) as f64 / 1000.0);
        }
        tracing::info!(sink, tenant, command = %r.command_id, kind = %r.kind, outcome = r.outcome.as_str(), reason = %r.reason, "decided");
    }

    /// Publishes the results of `decided` (failures also as dead letters,
    /// carrying the command so it can be re-driven), waits for the acks,
    /// then marks them reported.
    pub fn publish(&self, cx: &Cx, decided: &[(String, &Decided, Option<&Work>)]) -> Result<(), SinkError> {
        if decided.is_empty() {
            return Ok(());
        }
        let codec_err = |e: CodecError| SinkError::Codec(e.to_string());
        let mut out = Vec::new();
        for (tenant, d, work) in decided {
            self.note(cx, tenant, d);
            let key = topics::key(tenant, &d.result.command_id).map_err(|e| SinkError::Codec(e.to_string()))?;
            let value = self.codec.encode_result(tenant, &d.result).map_err(codec_err)?;
            out.push((Outgoing::new(Topic::Results, key.clone(), Some(value)), None));
            if d.dead {
                let dl = DeadLetter {
                    reason: d.result.reason.clone(),
                    kind: "failed".into(),
                    topic: self.commands.clone(),
                    partition: work.map_or(-1, |w| w.partition),
                    offset: work.map_or(-1, |w| w.offset),
                    key: Some(key.clone()),
                    value: work.map(|w| w.raw.clone()),
                    component: self.component.clone(),
                };
                let v = self.codec.encode_dead_letter(&dl).map_err(codec_err)?;
                out.push((Outgoing::new(Topic::DeadLetters, key, Some(v)), None));
            }
        }
        self.producer.send_all(&out, Duration::from_secs(60)).map_err(|e| SinkError::Kafka(e.to_string()))?;
        let steps: Vec<(&str, &str, Step)> = decided
            .iter()
            .map(|(t, d, _)| {
                (t.as_str(), d.result.command_id.as_str(), Step::Done { result: d.result.clone(), reported: true })
            })
            .collect();
        cx.ledger.record(&steps, &[])?;
        Ok(())
    }

    /// Publishes a dead letter for a record that is not a command.
    fn poison(&self, dl: &DeadLetter) -> Result<(), SinkError> {
        let v = self.codec.encode_dead_letter(dl).map_err(|e| SinkError::Codec(e.to_string()))?;
        let rec = Outgoing::new(Topic::DeadLetters, dl.key.clone().unwrap_or_default(), Some(v));
        self.producer.send_all(&[(rec, None)], Duration::from_secs(60)).map_err(|e| SinkError::Kafka(e.to_string()))
    }
}

/// What the consumer thread, the workers and the rebalance callbacks share.
struct Shared {
    kind: SinkKind,
    fence: Arc<Fence>,
    offsets: Mutex<Offsets>,
    queues: HashMap<String, Arc<TenantQueue>>,
    beats: Mutex<HashMap<String, Instant>>,
    partitions: AtomicI32,
    revoke_wait: Duration,
    commands: String,
    metrics: Metrics,
    /// This instance's name (kept in its state directory), recorded by its
    /// claims ([`claim`]).
    instance: String,
}

impl Shared {
    fn beat(&self, name: &str) {
        self.beats.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), Instant::now());
    }

    /// Names of the threads that have not looped for `after`.
    fn stalled(&self, after: Duration) -> Vec<String> {
        let b = self.beats.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<String> = b.iter().filter(|(_, t)| t.elapsed() > after).map(|(k, _)| k.clone()).collect();
        v.sort();
        v
    }

    fn decided(&self, released: &[(i32, i64)]) {
        let mut o = self.offsets.lock().unwrap_or_else(|e| e.into_inner());
        for (p, off) in released {
            o.decided(*p, *off);
        }
    }

    /// This process does `tenant`'s housekeeping while it owns the
    /// partition a stable hash of the name picks.
    fn housekeeper(&self, tenant: &str) -> Option<i32> {
        let n = self.partitions.load(Ordering::Relaxed).max(1) as u32;
        let h = tenant.bytes().fold(2_166_136_261u32, |h, b| (h ^ u32::from(b)).wrapping_mul(16_777_619));
        let p = (h % n) as i32;
        self.fence.owns(p).then_some(p)
    }
}

struct Ctx(Arc<Shared>);

impl ClientContext for Ctx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::kafka::client::log_line(self.0.kind.component(), level, fac, log_message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        crate::kafka::client::error_line(self.0.kind.component(), &error, reason);
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else { return };
        let s = &self.0;
        let ps: Vec<i32> = tpl.elements_for_topic(&s.commands).iter().map(|e| e.partition()).collect();
        let lost = consumer.assignment_lost();
        s.fence.revoke(&ps);
        for q in s.queues.values() {
            if !q.revoke(&ps, s.revoke_wait) {
                tracing::warn!(sink = s.kind.name(), "a batch in flight outlasted the revocation wait");
            }
        }
        let points: Vec<(i32, i64)> = {
            let mut o = s.offsets.lock().unwrap_or_else(|e| e.into_inner());
            ps.iter().filter_map(|p| o.revoke(*p).map(|off| (*p, off))).collect()
        };
        let commit = points_list(s, &points);
        s.metrics.rebalance(s.kind.name(), if lost { "lost" } else { "revoked" });
        tracing::info!(sink = s.kind.name(), partitions = ?ps, lost, "partitions leaving");
        if !lost && commit.count() > 0 {
            if let Err(e) = consumer.commit(&commit, CommitMode::Sync) {
                tracing::warn!(sink = s.kind.name(), error = %e, "commit on revocation failed");
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else { return };
        let s = &self.0;
        let ps: Vec<i32> = tpl.elements_for_topic(&s.commands).iter().map(|e| e.partition()).collect();
        {
            let mut o = s.offsets.lock().unwrap_or_else(|e| e.into_inner());
            for p in &ps {
                o.assign(*p);
            }
        }
        // The fence opens per partition once the consumer thread has
        // claimed it ([`claim`]).
        s.metrics.rebalance(s.kind.name(), "assigned");
        tracing::info!(sink = s.kind.name(), partitions = ?ps, "partitions assigned");
    }
}

/// The instance name kept at `path` (made on first start).
fn instance_id(path: &std::path::Path) -> Result<String, SinkError> {
    if let Ok(id) = std::fs::read_to_string(path) {
        if !id.trim().is_empty() {
            return Ok(id.trim().to_string());
        }
    }
    let seed = format!("{:?}{}{:?}", std::time::SystemTime::now(), std::process::id(), path);
    let id = crate::engine::command::command_id(&["sink-instance", &seed]);
    std::fs::write(path, &id).map_err(|e| LedgerError::Io(format!("{}: {e}", path.display())))?;
    Ok(id)
}

/// A running sink.
pub struct Sink {
    stop: Stop,
    threads: Vec<(String, JoinHandle<Result<(), SinkError>>)>,
    shared: Arc<Shared>,
    stall_after: Duration,
    pub metrics_addr: Option<SocketAddr>,
    pub metrics: Metrics,
}

impl Sink {
    pub fn start(config: SinkConfig) -> Result<Sink, SinkError> {
        let kind = config.kind;
        let metrics = config
            .metrics
            .clone()
            .unwrap_or_else(|| Metrics::new(&[kind.name()], config.tenants.iter().map(|t| t.name.as_str())));
        let component = format!("sink-{}", kind.name());
        let codec = Arc::new(
            Codec::connect(config.registry.clone(), &config.catalogue, Duration::from_secs(120))
                .map_err(|e| SinkError::Codec(e.to_string()))?
                .with_unknown_grace(config.unknown_schema_grace),
        );
        let producer = SyncProducer::new(
            &producer_config(&config.brokers, &component),
            config.catalogue.clone(),
            kind.component(),
        )
        .map_err(|e| SinkError::Kafka(e.to_string()))?;
        let commands = config.catalogue.name(Topic::Commands);
        let results = Arc::new(Results {
            kind,
            codec: codec.clone(),
            producer,
            commands: commands.clone(),
            component: component.clone(),
        });
        std::fs::create_dir_all(&config.state_dir).map_err(|e| LedgerError::Io(e.to_string()))?;
        let stop = Stop::new();
        let fence = Arc::new(Fence::new(config.session_timeout / 2));
        let policy = Policy {
            backoff: config.backoff,
            retry_after_cap: config.retry_after_cap,
            max_inline_wait: Duration::from_secs(1),
            ..Policy::default()
        };
        let cx = Arc::new(Cx {
            sink: kind,
            ledger: Ledger::open_with(
                &config.state_dir.join(format!("sink-{}", kind.name())),
                config.sync,
                config.retention,
            )?,
            metrics: metrics.clone(),
            stop: stop.clone(),
            policy,
            timeout: config.http_timeout,
            fence: fence.clone(),
        });
        let queues: HashMap<String, Arc<TenantQueue>> =
            config.tenants.iter().map(|t| (t.name.clone(), Arc::new(TenantQueue::default()))).collect();
        let shared = Arc::new(Shared {
            kind,
            fence: fence.clone(),
            offsets: Mutex::new(Offsets::default()),
            queues,
            beats: Mutex::new(HashMap::new()),
            partitions: AtomicI32::new(config.catalogue.partitions),
            revoke_wait: config.http_timeout * 2,
            commands: commands.clone(),
            metrics: metrics.clone(),
            instance: instance_id(&config.state_dir.join(format!("sink-{}.instance", kind.name())))?,
        });
        let metrics_addr = match config.metrics_addr {
            Some(a) => {
                let (m, s, stall) = (metrics.clone(), shared.clone(), config.stall_after);
                let health = move || {
                    let stalled = s.stalled(stall);
                    if stalled.is_empty() {
                        Ok(())
                    } else {
                        Err(format!("stalled: {}", stalled.join(", ")))
                    }
                };
                Some(crate::telemetry::serve_metrics(a, move || m.render(), health).map_err(SinkError::Metrics)?)
            }
            None => None,
        };
        let executor: Arc<dyn Executor> = match kind {
            SinkKind::Clock => Arc::new(ClockSink),
            SinkKind::Geofence => Arc::new(GeofenceSink),
            SinkKind::Email => Arc::new(EmailSink::new(config.smtp.clone(), config.report_url.clone())),
        };
        let env = Arc::new(WorkerEnv {
            cx: cx.clone(),
            executor,
            results: results.clone(),
            backoff: config.backoff,
            max_age: config.max_effect_age,
            batch: config.batch.max(1),
            decided: {
                let s = shared.clone();
                Arc::new(move |r: &[(i32, i64)]| s.decided(r))
            },
            housekeeper: {
                let s = shared.clone();
                Arc::new(move |t: &str| s.housekeeper(t))
            },
            heartbeat: {
                let s = shared.clone();
                Arc::new(move |n: &str| s.beat(n))
            },
        });
        let mut threads = Vec::new();
        for t in &config.tenants {
            let tcx = TenantCx {
                tenant: t.clone(),
                servicetrade: t.servicetrade.as_ref().map(|st| {
                    Arc::new(servicetrade::Client::new(st.clone(), cx.timeout, cx.policy, stop.clone(), cx.observer()))
                }),
                azuga: t.azuga.as_ref().map(|az| {
                    Arc::new(azuga::Client::new(az.clone(), cx.timeout, cx.policy, stop.clone(), cx.observer()))
                }),
            };
            let (env, queue) = (env.clone(), shared.queues[&t.name].clone());
            let name = format!("worker-{}", t.name);
            shared.beat(&name);
            let h = std::thread::Builder::new()
                .name(format!("sink-{}-{}", kind.name(), t.name))
                .spawn(move || worker::run(&env, &tcx, &queue))
                .map_err(|e| SinkError::Kafka(e.to_string()))?;
            threads.push((name, h));
        }
        let linger = env.executor.linger();
        let consumer_env =
            ConsumerEnv { config, shared: shared.clone(), cx, results, codec, stop: stop.clone(), linger };
        shared.beat("consumer");
        let h = std::thread::Builder::new()
            .name(format!("sink-{}", kind.name()))
            .spawn(move || consume(consumer_env))
            .map_err(|e| SinkError::Kafka(e.to_string()))?;
        threads.push(("consumer".into(), h));
        Ok(Sink { stop, threads, shared, stall_after: Duration::from_secs(120), metrics_addr, metrics })
    }

    /// Finishes the batches in hand, commits, and returns.
    pub fn stop(mut self) -> Result<(), SinkError> {
        self.stop.stop();
        for q in self.shared.queues.values() {
            q.wake();
        }
        let mut first = Ok(());
        for (name, h) in self.threads.drain(..) {
            let r = h.join().unwrap_or_else(|_| Err(SinkError::Died(name)));
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    /// The first thread that ended, and why (a thread ends only on stop or
    /// on an error).
    pub fn finished(&self) -> Option<String> {
        self.threads.iter().find(|(_, h)| h.is_finished()).map(|(n, _)| n.clone())
    }

    pub fn is_finished(&self) -> bool {
        self.finished().is_some()
    }

    /// Threads that have not looped for the stall threshold.
    pub fn stalled(&self) -> Vec<String> {
        self.shared.stalled(self.stall_after)
    }
}

struct ConsumerEnv {
    config: SinkConfig,
    shared: Arc<Shared>,
    cx: Arc<Cx>,
    results: Arc<Results>,
    codec: Arc<Codec>,
    stop: Stop,
    /// How long a new command waits for others to join its batch.
    linger: Duration,
}

/// Records behind on the assigned partitions (high watermark − position).
fn lag(consumer: &BaseConsumer<Ctx>, topic: &str) -> i64 {
    let Ok(position) = consumer.position() else { return 0 };
    position
        .elements_for_topic(topic)
        .iter()
        .filter_map(|e| {
            let (_, high) = consumer.fetch_watermarks(topic, e.partition(), Duration::from_secs(2)).ok()?;
            Some(match e.offset() {
                Offset::Offset(o) => high - o,
                _ => 0,
            })
        })
        .sum()
}

/// The consumer thread (see the module doc).
fn consume(env: ConsumerEnv) -> Result<(), SinkError> {
    let ConsumerEnv { config, shared, cx, results, codec, stop, linger } = env;
    let kind = config.kind;
    let kafka = |e: rdkafka::error::KafkaError| SinkError::Kafka(e.to_string());
    let group = config.group.clone().unwrap_or_else(|| format!("{}-sink-{}", config.catalogue.prefix, kind.name()));
    let consumer: BaseConsumer<Ctx> = consumer_config(&config.brokers, &group)
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", config.session_timeout.as_millis().to_string())
        .set("max.poll.interval.ms", "300000")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .create_with_context(Ctx(shared.clone()))
        .map_err(kafka)?;
    let commands = shared.commands.clone();
    consumer.subscribe(&[&commands]).map_err(kafka)?;
    if let Ok(md) = consumer.fetch_metadata(Some(&commands), Duration::from_secs(10)) {
        if let Some(t) = md.topics().first().filter(|t| !t.partitions().is_empty()) {
            shared.partitions.store(t.partitions().len() as i32, Ordering::Relaxed);
        }
    }
    let tenants: HashMap<&str, &Tenant> = config.tenants.iter().map(|t| (t.name.as_str(), t)).collect();
    tracing::info!(sink = kind.name(), group = %group, topic = %commands, "sink started");
    let mut lag_at = Instant::now();
    let mut commit_at = Instant::now();
    // Partitions paused for registry trouble: when to resume.
    let mut held: HashMap<i32, Instant> = HashMap::new();
    let mut hold_backoff: HashMap<i32, Duration> = HashMap::new();
    while !stop.is_stopped() {
        shared.beat("consumer");
        let now = Instant::now();
        let resume: Vec<i32> = held.iter().filter(|(_, t)| **t <= now).map(|(p, _)| *p).collect();
        for p in resume {
            held.remove(&p);
            let mut tpl = TopicPartitionList::new();
            let _ = tpl.add_partition(&commands, p);
            let _ = consumer.resume(&tpl);
        }
        if lag_at.elapsed() >= Duration::from_secs(5) {
            lag_at = Instant::now();
            shared.metrics.lag(kind.name(), lag(&consumer, &commands));
            for (t, q) in &shared.queues {
                let (waiting, unknown) = q.sizes();
                shared.metrics.pending(kind.name(), t, waiting as i64, unknown as i64);
            }
        }
        if commit_at.elapsed() >= Duration::from_secs(1) {
            commit_at = Instant::now();
            commit(&consumer, &shared, CommitMode::Async);
        }
        // Partitions assigned since the last loop are claimed before any
        // worker may act for them.
        let unclaimed = shared.offsets.lock().unwrap_or_else(|e| e.into_inner()).unclaimed();
        if !unclaimed.is_empty() {
            for (p, c) in claim(&consumer, &shared, &results, &config.brokers, &config.catalogue, &group, &unclaimed)? {
                shared.offsets.lock().unwrap_or_else(|e| e.into_inner()).set_claim(p, c);
                shared.fence.assign(&[p]);
            }
        }
        let msg = match consumer.poll(Duration::from_millis(100)) {
            None => {
                shared.fence.polled();
                continue;
            }
            Some(Err(e)) => {
                shared.fence.polled();
                tracing::warn!(sink = kind.name(), error = %e, "consume error");
                continue;
            }
            Some(Ok(m)) => m,
        };
        shared.fence.polled();
        let (p, off) = (msg.partition(), msg.offset());
        if shared.offsets.lock().unwrap_or_else(|e| e.into_inner()).claim(p).is_none() {
            for (p, c) in claim(&consumer, &shared, &results, &config.brokers, &config.catalogue, &group, &[p])? {
                shared.offsets.lock().unwrap_or_else(|e| e.into_inner()).set_claim(p, c);
                shared.fence.assign(&[p]);
            }
        }
        let free = |shared: &Shared| shared.offsets.lock().unwrap_or_else(|e| e.into_inner()).consumed(p, off, false);
        let time = Ts(msg.timestamp().to_millis().unwrap_or(0));
        let Some(value) = msg.payload() else {
            free(&shared);
            continue;
        };
        let tc = match codec.decode_command(value) {
            Ok(tc) => {
                hold_backoff.remove(&p);
                tc
            }
            Err(e) if !e.is_poison() => {
                // Registry trouble: read this record again later.
                let wait =
                    hold_backoff.get(&p).map_or(Duration::from_millis(500), |w| (*w * 2).min(Duration::from_secs(30)));
                hold_backoff.insert(p, wait);
                tracing::warn!(sink = kind.name(), partition = p, offset = off, retry_in_ms = wait.as_millis() as u64, error = %e, "writer schema not available; retrying");
                let mut tpl = TopicPartitionList::new();
                let _ = tpl.add_partition(&commands, p);
                let _ = consumer.pause(&tpl);
                if let Err(err) = consumer.seek(&commands, p, Offset::Offset(off), Duration::from_secs(5)) {
                    tracing::warn!(sink = kind.name(), error = %err, "seek failed");
                }
                held.insert(p, Instant::now() + wait);
                continue;
            }
            Err(e) => {
                let dl = DeadLetter::for_error(
                    &e,
                    &commands,
                    p,
                    off,
                    msg.key(),
                    Some(value),
                    &format!("sink-{}", kind.name()),
                );
                shared.metrics.command(kind.name(), "", "undecodable", "failed");
                results.poison(&dl)?;
                free(&shared);
                continue;
            }
        };
        if !kind.handles(&tc.command.action) {
            free(&shared);
            continue;
        }
        let redrive = msg.headers().is_some_and(|h| h.iter().any(|h| h.key == REDRIVE_HEADER));
        let step = cx.ledger.step(&tc.tenant, &tc.command.id)?;
        let mut work = Work::new(tc.tenant.clone(), tc.command, time, p, off, value.to_vec());
        match step {
            Some(Step::Done { result, .. }) if redrive && result.outcome == Outcome::Failed => {
                tracing::info!(sink = kind.name(), tenant = %work.tenant, command = %work.command.id, "re-driven: trying a failed command again");
                work.unknown = true;
                work.attempts = result.attempts;
            }
            Some(Step::Done { result, reported }) => {
                shared.metrics.command(kind.name(), &work.tenant, work.command.action.kind(), "duplicate");
                if !reported {
                    let d = Decided::new(result);
                    results.publish(&cx, &[(work.tenant.clone(), &d, Some(&work))])?;
                }
                free(&shared);
                continue;
            }
            Some(Step::Intent { calls }) => {
                work.unknown = true;
                work.attempts = calls;
            }
            None => {
                work.unknown = shared.offsets.lock().unwrap_or_else(|e| e.into_inner()).maybe_elsewhere(p, off);
            }
        }
        let Some(queue) = shared.queues.get(&work.tenant).filter(|_| tenants.contains_key(work.tenant.as_str())) else {
            let why = format!("tenant {:?} is not in the tenants file", work.tenant);
            let d = Decided::new(work.result(kind, Outcome::Failed, why, None));
            cx.ledger.record(
                &[(&work.tenant, &work.command.id, Step::Done { result: d.result.clone(), reported: false })],
                &[],
            )?;
            results.publish(&cx, &[(work.tenant.clone(), &d, Some(&work))])?;
            free(&shared);
            continue;
        };
        work.next_at = chrono::Utc::now().timestamp_millis() + linger.as_millis() as i64;
        let open = queue.push(work);
        shared.offsets.lock().unwrap_or_else(|e| e.into_inner()).consumed(p, off, open);
    }
    commit(&consumer, &shared, CommitMode::Sync);
    tracing::info!(sink = kind.name(), "sink stopped");
    Ok(())
}

/// Commit points as a list.
fn points_list(shared: &Shared, points: &[(i32, i64)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (p, o) in points {
        let _ = tpl.add_partition_offset(&shared.commands, *p, Offset::Offset(*o));
    }
    tpl
}

/// Claims `partitions` before acting for them: reads which instance
/// claimed each last (the compacted claims topic, key `{group}/{p}`), then
/// records this instance as the claimant and waits for the ack. Any
/// instance that acts for a partition has claimed it first, so a partition
/// whose last claimant was this instance holds no command another instance
/// may have worked on since.
fn claim(
    consumer: &BaseConsumer<Ctx>,
    shared: &Shared,
    results: &Results,
    brokers: &str,
    catalogue: &Catalogue,
    group: &str,
    partitions: &[i32],
) -> Result<Vec<(i32, Claim)>, SinkError> {
    let kafka = |e: rdkafka::error::KafkaError| SinkError::Kafka(e.to_string());
    let topic = catalogue.name(Topic::SinkClaims);
    let held = crate::kafka::read::read_topic(brokers, &topic, Duration::from_secs(60))
        .map_err(|e| SinkError::Kafka(e.to_string()))?;
    let key = |p: i32| format!("{group}/{p}").into_bytes();
    let mut out = Vec::with_capacity(partitions.len());
    let mut records = Vec::with_capacity(partitions.len());
    for p in partitions {
        let k = key(*p);
        let last = held
            .iter()
            .rev()
            .find(|r| r.key.as_deref() == Some(k.as_slice()))
            .and_then(|r| r.value.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        let was_ours = last.is_empty() || last == shared.instance;
        let (_, end) = consumer.fetch_watermarks(&shared.commands, *p, Duration::from_secs(10)).map_err(kafka)?;
        tracing::info!(sink = shared.kind.name(), partition = p, previous = %if last.is_empty() { "none" } else { &last }, was_ours, end, "partition claimed");
        records.push((Outgoing::new(Topic::SinkClaims, k, Some(shared.instance.clone().into_bytes())), None));
        out.push((*p, Claim { end, was_ours }));
    }
    results.producer.send_all(&records, Duration::from_secs(60)).map_err(|e| SinkError::Kafka(e.to_string()))?;
    Ok(out)
}

fn commit(consumer: &BaseConsumer<Ctx>, shared: &Shared, mode: CommitMode) {
    let points = shared.offsets.lock().unwrap_or_else(|e| e.into_inner()).to_commit();
    if points.is_empty() {
        return;
    }
    let tpl = points_list(shared, &points);
    if let Err(e) = consumer.commit(&tpl, mode) {
        // Not fatal: the commands are decided; a re-delivery is a duplicate.
        tracing::warn!(sink = shared.kind.name(), error = %e, "offset commit failed");
    }
}
