//! The sink loop: consume commands → decide each (executors) → publish the
//! results and dead letters → commit the consumer offsets.
//!
//! Commit protocol, per batch: outcomes are in the ledger before their
//! results are published; results are acknowledged before the ledger marks
//! them reported and before the batch's offsets are committed. A crash
//! anywhere re-delivers the batch: decided commands are duplicates (their
//! result is re-published if it was not acknowledged, with the same
//! content), undecided ones resume from their ledger step. Rebalances happen
//! only inside `poll`, between batches, so a batch is never split across
//! owners. All Kafka calls run on the sink's own thread, never on the async
//! runtime; tenants of one batch run on scoped threads, so one tenant's
//! rate-limit wait does not hold up another's calls.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::TopicPartitionList;

use super::call::Cx;
use super::clock::ClockSink;
use super::email::EmailSink;
use super::geofence::GeofenceSink;
use super::ledger::{Ledger, LedgerError, Step};
use super::metrics::Metrics;
use super::policy::{Backoff, Budget};
use super::{Decided, Executor, Pending, SinkKind};
use crate::connect::http::Http;
use crate::connect::publish::{Outgoing, Publisher};
use crate::connect::tenants::Tenant;
use crate::kafka::client::consumer_config;
use crate::kafka::codec::Codec;
use crate::kafka::records::{DeadLetter, Outcome};
use crate::kafka::registry::SchemaRegistry;
use crate::kafka::topics::{self, Catalogue, Topic};
use crate::model::Ts;

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
    pub batch: usize,
    pub linger: Duration,
    /// fsync every ledger step (survives a machine crash, not only a process crash).
    pub sync: bool,
    pub backoff: Backoff,
    pub http_timeout: Duration,
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
            batch: 500,
            linger: Duration::from_millis(200),
            sync: true,
            backoff: Backoff::default(),
            http_timeout: Duration::from_secs(30),
        }
    }
}

/// A running sink.
pub struct Sink {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<(), SinkError>>>,
    pub metrics_addr: Option<SocketAddr>,
    pub metrics: Metrics,
}

impl Sink {
    pub fn start(config: SinkConfig, runtime: tokio::runtime::Handle) -> Result<Sink, SinkError> {
        let metrics = Metrics::new();
        let metrics_addr = match config.metrics_addr {
            Some(a) => {
                let m = metrics.clone();
                Some(crate::telemetry::serve_metrics(a, move || m.render()).map_err(SinkError::Metrics)?)
            }
            None => None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (s, m) = (stop.clone(), metrics.clone());
        let name = format!("sink-{}", config.kind.name());
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(move || run(config, m, s, runtime))
            .map_err(|e| SinkError::Kafka(e.to_string()))?;
        Ok(Sink { stop, handle: Some(handle), metrics_addr, metrics })
    }

    /// Finishes the batch in hand, commits, and returns.
    pub fn stop(mut self) -> Result<(), SinkError> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .take()
            .map_or(Ok(()), |h| h.join().unwrap_or_else(|_| Err(SinkError::Kafka("sink thread panicked".into()))))
    }

    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }
}

/// Where decided outcomes go: metrics and logs, then the results (and
/// dead-letter) topics, then the ledger's `reported` mark.
struct Outcomes<'a> {
    kind: SinkKind,
    codec: &'a Codec,
    publisher: &'a Publisher,
    runtime: &'a tokio::runtime::Handle,
    commands: &'a str,
    component: &'a str,
    metrics: &'a Metrics,
}

impl Outcomes<'_> {
    /// Counts and logs one outcome.
    fn note(&self, tenant: &str, d: &Decided) {
        let (sink, r) = (self.kind.name(), &d.result);
        self.metrics.command(sink, &r.kind, r.outcome.as_str());
        if r.outcome == Outcome::Done {
            self.metrics.latency(sink, (r.executed_at.millis() - r.command_time.millis()) as f64 / 1000.0);
        }
        tracing::info!(sink, tenant, command = %r.command_id, kind = %r.kind, outcome = r.outcome.as_str(), reason = %r.reason, "decided");
    }

    /// Publishes `extra` and the results of `reported` (failures also as
    /// dead letters), waits for the acks, then marks them reported.
    fn publish(&self, cx: &Cx, mut extra: Vec<Outgoing>, reported: &[(String, Decided)]) -> Result<(), SinkError> {
        let codec_err = |e: crate::kafka::codec::CodecError| SinkError::Codec(e.to_string());
        for (tenant, d) in reported {
            let key = topics::key(tenant, &d.result.command_id).map_err(|e| SinkError::Codec(e.to_string()))?;
            let value = self.codec.encode_result(tenant, &d.result).map_err(codec_err)?;
            extra.push(Outgoing { topic: Topic::Results, key: key.clone(), value: Some(value) });
            if d.dead {
                let dl = DeadLetter {
                    reason: d.result.reason.clone(),
                    kind: "rejected".into(),
                    topic: self.commands.to_string(),
                    partition: -1,
                    offset: -1,
                    key: Some(key.clone()),
                    value: None,
                    component: self.component.to_string(),
                };
                extra.push(Outgoing {
                    topic: Topic::DeadLetters,
                    key,
                    value: Some(self.codec.encode_dead_letter(&dl).map_err(codec_err)?),
                });
            }
        }
        if extra.is_empty() {
            return Ok(());
        }
        self.runtime.block_on(self.publisher.send_all(&extra)).map_err(|e| SinkError::Kafka(e.to_string()))?;
        let steps: Vec<(&str, &str, Step)> = reported
            .iter()
            .map(|(t, d)| {
                (t.as_str(), d.result.command_id.as_str(), Step::Done { result: d.result.clone(), reported: true })
            })
            .collect();
        cx.ledger.record(&steps, &[])?;
        Ok(())
    }
}

/// Records behind on the assigned partitions (high watermark − position).
fn lag(consumer: &BaseConsumer, topic: &str) -> i64 {
    let Ok(position) = consumer.position() else { return 0 };
    position
        .elements_for_topic(topic)
        .iter()
        .filter_map(|e| {
            let (_, high) = consumer.fetch_watermarks(topic, e.partition(), Duration::from_secs(2)).ok()?;
            Some(match e.offset() {
                rdkafka::Offset::Offset(o) => high - o,
                _ => 0,
            })
        })
        .sum()
}

struct Received {
    pending: Option<Pending>,
    dead: Option<DeadLetter>,
}

fn run(
    config: SinkConfig,
    metrics: Metrics,
    stop: Arc<AtomicBool>,
    runtime: tokio::runtime::Handle,
) -> Result<(), SinkError> {
    let kind = config.kind;
    let component = format!("sink-{}", kind.name());
    let kafka = |e: rdkafka::error::KafkaError| SinkError::Kafka(e.to_string());
    let codec =
        Arc::new(Codec::new(config.registry.clone(), &config.catalogue).map_err(|e| SinkError::Codec(e.to_string()))?);
    let publisher = Publisher::new(&config.brokers, codec.clone(), config.catalogue.clone(), &component)
        .map_err(|e| SinkError::Kafka(e.to_string()))?;
    let group = config.group.clone().unwrap_or_else(|| format!("{}-sink-{}", config.catalogue.prefix, kind.name()));
    let consumer: BaseConsumer = consumer_config(&config.brokers, &group)
        .set("auto.offset.reset", "earliest")
        .set("max.poll.interval.ms", "900000")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .create()
        .map_err(kafka)?;
    let commands = config.catalogue.name(Topic::Commands);
    consumer.subscribe(&[&commands]).map_err(kafka)?;
    std::fs::create_dir_all(&config.state_dir).map_err(|e| LedgerError::Io(e.to_string()))?;
    let cx = Cx {
        sink: kind,
        ledger: Ledger::open(&config.state_dir.join(format!("sink-{}", kind.name())), config.sync)?,
        http: Http::new(config.http_timeout),
        budget: Mutex::new(Budget::default()),
        backoff: config.backoff,
        metrics: metrics.clone(),
    };
    let executor: Box<dyn Executor> = match kind {
        SinkKind::Clock => Box::new(ClockSink::default()),
        SinkKind::Geofence => Box::new(GeofenceSink),
        SinkKind::Email => Box::new(EmailSink::new(config.smtp.clone(), config.report_url.clone())),
    };
    let tenants: HashMap<&str, &Tenant> = config.tenants.iter().map(|t| (t.name.as_str(), t)).collect();
    let out = Outcomes {
        kind,
        codec: &codec,
        publisher: &publisher,
        runtime: &runtime,
        commands: &commands,
        component: &component,
        metrics: &metrics,
    };
    tracing::info!(sink = kind.name(), group = %group, topic = %commands, "sink started");
    let mut lag_at = Instant::now();
    let mut housekeeping_at: Option<Instant> = None;
    while !stop.load(Ordering::SeqCst) {
        if lag_at.elapsed() >= Duration::from_secs(5) {
            lag_at = Instant::now();
            metrics.lag(kind.name(), lag(&consumer, &commands));
        }
        if housekeeping_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            housekeeping_at = Some(Instant::now());
            let done = executor.housekeeping(&cx, &config.tenants)?;
            for (tenant, d) in &done {
                out.note(tenant, d);
            }
            out.publish(&cx, Vec::new(), &done)?;
        }
        // Collect a batch.
        let mut received: Vec<Received> = Vec::new();
        let mut offsets: HashMap<i32, i64> = HashMap::new();
        // The batch lingers from its first record, so records arriving
        // together (several partitions) are decided together.
        let mut deadline: Option<Instant> = None;
        while received.len() < config.batch {
            let wait = deadline.map_or(Duration::from_millis(200), |d| d.saturating_duration_since(Instant::now()));
            let Some(msg) = consumer.poll(wait) else {
                if deadline.is_some() || offsets.is_empty() {
                    break;
                }
                continue;
            };
            let deadline_at = *deadline.get_or_insert_with(|| Instant::now() + config.linger);
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(sink = kind.name(), error = %e, "consume error");
                    continue;
                }
            };
            offsets.insert(msg.partition(), msg.offset() + 1);
            let time = Ts(msg.timestamp().to_millis().unwrap_or(0));
            let Some(value) = msg.payload() else { continue };
            match codec.decode_command(value) {
                Ok(tc) if kind.handles(&tc.command.action) => received.push(Received {
                    pending: Some(Pending { tenant: tc.tenant, command: tc.command, time }),
                    dead: None,
                }),
                Ok(_) => {}
                Err(e) => received.push(Received {
                    pending: None,
                    dead: Some(DeadLetter::for_error(
                        &e,
                        &commands,
                        msg.partition(),
                        msg.offset(),
                        msg.key(),
                        Some(value),
                        &component,
                    )),
                }),
            }
            if Instant::now() >= deadline_at {
                break;
            }
        }
        if offsets.is_empty() {
            continue;
        }
        // Decide.
        let mut by_tenant: Vec<(String, Vec<Pending>)> = Vec::new();
        let mut extra: Vec<Outgoing> = Vec::new();
        let mut reported: Vec<(String, Decided)> = Vec::new();
        for r in received {
            if let Some(d) = r.dead {
                extra.push(Outgoing {
                    topic: Topic::DeadLetters,
                    key: d.key.clone().unwrap_or_default(),
                    value: Some(codec.encode_dead_letter(&d).map_err(|e| SinkError::Codec(e.to_string()))?),
                });
                metrics.command(kind.name(), "undecodable", "failed");
            }
            let Some(p) = r.pending else { continue };
            if let Some(Step::Done { result, reported: was }) = cx.ledger.step(&p.tenant, &p.command.id)? {
                metrics.command(kind.name(), p.command.action.kind(), "duplicate");
                if !was {
                    reported.push((p.tenant.clone(), Decided { dead: result.outcome == Outcome::Failed, result }));
                }
                continue;
            }
            match by_tenant.iter_mut().find(|(t, _)| *t == p.tenant) {
                Some((_, v)) => v.push(p),
                None => by_tenant.push((p.tenant.clone(), vec![p])),
            }
        }
        // Commands repeated inside one batch are decided once.
        for (_, cmds) in &mut by_tenant {
            let mut seen = std::collections::HashSet::new();
            cmds.retain(|p| seen.insert(p.command.id.clone()));
        }
        let decided: Vec<Result<(String, Vec<Decided>), SinkError>> = std::thread::scope(|s| {
            let handles: Vec<_> = by_tenant
                .into_iter()
                .map(|(tenant, cmds)| {
                    let (cx, executor, tenants) = (&cx, &executor, &tenants);
                    s.spawn(move || {
                        let ds = match tenants.get(tenant.as_str()) {
                            Some(t) => executor.execute(cx, t, cmds)?,
                            None => {
                                let ds = super::unconfigured(
                                    kind,
                                    cmds,
                                    &format!("tenant {tenant:?} is not in the tenants file"),
                                );
                                let steps: Vec<_> = ds
                                    .iter()
                                    .map(|d| {
                                        (
                                            tenant.as_str(),
                                            d.result.command_id.as_str(),
                                            Step::Done { result: d.result.clone(), reported: false },
                                        )
                                    })
                                    .collect();
                                cx.ledger.record(&steps, &[])?;
                                ds
                            }
                        };
                        Ok((tenant, ds))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(SinkError::Kafka("executor panicked".into()))))
                .collect()
        });
        for r in decided {
            let (tenant, ds) = r?;
            for d in ds {
                out.note(&tenant, &d);
                reported.push((tenant.clone(), d));
            }
        }
        out.publish(&cx, extra, &reported)?;
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &offsets {
            tpl.add_partition_offset(&commands, *p, rdkafka::Offset::Offset(*o)).map_err(kafka)?;
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
            // Not fatal: the batch is decided; a re-delivery is a duplicate.
            tracing::warn!(sink = kind.name(), error = %e, "offset commit failed");
        }
    }
    tracing::info!(sink = kind.name(), "sink stopped");
    Ok(())
}
