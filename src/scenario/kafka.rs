//! Running a scenario through real topics and the real processor
//! (`geoclock scenario run FILE --via kafka --brokers HOST:PORT`).
//!
//! The scenario's events are produced, in file order, to fresh topics (a
//! unique prefix per run), each record stamped with a strictly increasing
//! time, so the processor's record-time merge replays exactly the file's
//! order. A processor then runs in this process until every task is idle;
//! commands are read back from the commands topic (distinct by id, ordered
//! by the input that caused them) and the report is computed from the
//! engines rebuilt from the processor's RocksDB state, so the state path is
//! exercised too. With one partition the output equals the pure run's byte
//! for byte; with more, command order across partitions may differ and
//! report rows are merged from the tasks (see [`merge_rows`]).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::{Output, Scenario, ScenarioError};
use crate::engine::Command;
use crate::kafka::admin::ensure_topics;
use crate::kafka::client::unless_transient;
use crate::kafka::codec::Codec;
use crate::kafka::registry::FileRegistry;
use crate::kafka::topics::{Catalogue, Topic};
use crate::processor::{self, Config, Processor, Tenants, STATE_STORES};
pub use crate::report::state::merge_rows;
use crate::report::state::rows_from_state;
use crate::report::ReportRow;
use crate::store::rocks::{RocksConfig, RocksStore};

/// Where and how to run.
#[derive(Debug, Clone)]
pub struct ViaKafka {
    pub brokers: String,
    pub partitions: i32,
    /// Longest wait for the whole run.
    pub timeout: Duration,
    /// Processor state directory (a fresh temporary one when `None`).
    pub state_dir: Option<PathBuf>,
}

/// Record time of the first event; later ones follow 1 ms apart.
const BASE_TIME_MS: i64 = 1_600_000_000_000;

fn err(what: &str, e: impl std::fmt::Display) -> ScenarioError {
    ScenarioError::Kafka(format!("{what}: {e}"))
}

/// A topic prefix no other run uses.
pub fn fresh_prefix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("scenario-{}-{nanos}", std::process::id())
}

impl Scenario {
    /// Runs the scenario through the broker and the processor.
    pub fn run_via_kafka(&self, opts: &ViaKafka) -> Result<Output, ScenarioError> {
        let catalogue = Catalogue { prefix: fresh_prefix(), partitions: opts.partitions, replication: 1 };
        self.run_via_kafka_on(opts, &catalogue, Arc::new(FileRegistry::in_memory()))
    }

    /// [`Scenario::run_via_kafka`] on the topics of `catalogue` (created
    /// when missing; `opts.partitions` is ignored) with `registry`. The
    /// topics stay on the broker, the processor's changelog included, so
    /// that other readers (the report server) can follow them.
    pub fn run_via_kafka_on(
        &self,
        opts: &ViaKafka,
        catalogue: &Catalogue,
        registry: Arc<FileRegistry>,
    ) -> Result<Output, ScenarioError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| err("runtime", e))?;
        let catalogue = catalogue.clone();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        runtime.block_on(ensure_topics(&opts.brokers, &catalogue, opts.timeout)).map_err(|e| err("topics", e))?;
        let codec = Codec::new(registry.clone(), &catalogue).map_err(|e| err("codec", e))?;
        self.produce(&runtime, &opts.brokers, &catalogue, &codec)?;

        let temp = opts.state_dir.is_none().then(|| std::env::temp_dir().join(format!("geoclock-scenario-{nanos}")));
        let state_dir = opts.state_dir.clone().or(temp.clone()).unwrap_or_default();
        let mut config = Config::new(&opts.brokers, catalogue.clone(), state_dir.clone(), registry);
        config.group_id = format!("{}-processor", catalogue.prefix);
        config.tenants =
            Tenants { tenants: BTreeMap::from([(self.tenant.clone(), self.settings.clone())]), ..Tenants::default() };
        let proc = Processor::start(config, runtime.handle().clone()).map_err(|e| err("processor", e))?;
        wait_idle(&proc, catalogue.partitions, opts.timeout)?;
        proc.stop().map_err(|e| err("processor stop", e))?;

        let commands = read_commands(&opts.brokers, &catalogue, &codec, opts.timeout)?;
        let report = self.report_from_state(&state_dir, catalogue.partitions)?;
        if let Some(t) = temp {
            let _ = std::fs::remove_dir_all(t);
        }
        Ok(Output { commands, report })
    }

    fn produce(
        &self,
        runtime: &tokio::runtime::Runtime,
        brokers: &str,
        catalogue: &Catalogue,
        codec: &Codec,
    ) -> Result<(), ScenarioError> {
        let producer: FutureProducer = crate::kafka::client::base(brokers)
            .set("enable.idempotence", "true")
            .set("max.in.flight.requests.per.connection", "1")
            .create()
            .map_err(|e| err("producer", e))?;
        let mut records = Vec::new();
        for (index, event) in self.all_events().iter().enumerate() {
            let r = codec.encode_event(&self.tenant, event).map_err(|e| err(&format!("event #{index}"), e))?;
            records.push((catalogue.name(r.topic), r.key, r.value, BASE_TIME_MS + index as i64));
        }
        runtime.block_on(async {
            let sends = records.iter().map(|(topic, key, value, ts)| {
                let mut r = FutureRecord::<Vec<u8>, Vec<u8>>::to(topic).key(key).timestamp(*ts);
                if let Some(v) = value {
                    r = r.payload(v);
                }
                producer.send(r, Duration::from_secs(30))
            });
            for d in futures::future::join_all(sends).await {
                d.map_err(|(e, _)| err("produce", e))?;
            }
            Ok(())
        })
    }

    /// Report rows from the engines the processor left in RocksDB.
    fn report_from_state(&self, dir: &std::path::Path, partitions: i32) -> Result<Vec<ReportRow>, ScenarioError> {
        let store = RocksStore::open(dir, &STATE_STORES, &RocksConfig::default()).map_err(|e| err("state", e))?;
        rows_from_state(&store, partitions, &self.tenant, &self.settings).map_err(|e| err("state", e))
    }
}

fn wait_idle(proc: &Processor, partitions: i32, timeout: Duration) -> Result<(), ScenarioError> {
    let deadline = Instant::now() + timeout;
    let mut idle_since: Option<Instant> = None;
    while Instant::now() < deadline {
        let status = proc.status();
        // Two tasks per partition: one per stage.
        let all_idle = status.len() == 2 * partitions as usize && status.iter().all(|s| s.idle);
        match (all_idle, idle_since) {
            (true, Some(t)) if t.elapsed() > Duration::from_millis(600) => return Ok(()),
            (true, None) => idle_since = Some(Instant::now()),
            (false, _) => idle_since = None,
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(ScenarioError::Kafka(format!("processor not idle within {timeout:?}: {:?}", proc.status())))
}

/// Every command on the topic, distinct by id, ordered by the record time
/// of the input that caused it, then by emission order.
fn read_commands(
    brokers: &str,
    catalogue: &Catalogue,
    codec: &Codec,
    timeout: Duration,
) -> Result<Vec<Command>, ScenarioError> {
    let topic = catalogue.name(Topic::Commands);
    let consumer: BaseConsumer = crate::kafka::client::consumer_config(brokers, "geoclock-scenario-reader")
        .create()
        .map_err(|e| err("consumer", e))?;
    let mut tpl = TopicPartitionList::new();
    let mut remaining = 0;
    for p in 0..catalogue.partitions {
        let (low, high) = consumer.fetch_watermarks(&topic, p, timeout).map_err(|e| err("watermarks", e))?;
        if high > low {
            tpl.add_partition_offset(&topic, p, Offset::Offset(low)).map_err(|e| err("assign", e))?;
            remaining += high - low;
        }
    }
    let mut found: Vec<((i64, i64), Command)> = Vec::new();
    if remaining > 0 {
        consumer.assign(&tpl).map_err(|e| err("assign", e))?;
    }
    let deadline = Instant::now() + timeout;
    while remaining > 0 && Instant::now() < deadline {
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else { continue };
        let Some(msg) = unless_transient(msg, "scenario reader").map_err(|e| err("consume", e))? else { continue };
        remaining -= 1;
        let Some(value) = msg.payload() else { continue };
        let c = codec.decode_command(value).map_err(|e| err("command", e))?;
        let seq = msg
            .headers()
            .and_then(|h| {
                h.iter().find(|h| h.key == processor::commit::SEQ_HEADER).and_then(|h| h.value.map(<[u8]>::to_vec))
            })
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map_or(0, i64::from_be_bytes);
        found.push(((msg.timestamp().to_millis().unwrap_or(0), seq), c.command));
    }
    if remaining > 0 {
        return Err(ScenarioError::Kafka(format!("{remaining} command records not read within {timeout:?}")));
    }
    found.sort_by_key(|(k, _)| *k);
    let mut seen = HashSet::new();
    Ok(found.into_iter().filter(|(_, c)| seen.insert(c.id.clone())).map(|(_, c)| c).collect())
}
