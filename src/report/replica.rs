//! The report server's view of the pipeline: a read replica of the
//! processor's state, restored continuously from its changelog topic, and
//! the sinks' results (with the commands they answer), tailed from Kafka.
//!
//! Invariants: the replica only ever applies whole processor batches (the
//! changelog restore's rule), so rows are always a state some processor
//! task committed; it resumes from the changelog position stored with it,
//! so a restart re-reads nothing it already has. Kafka calls run on the
//! replica's own threads, never on the async runtime.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::join::CommandInfo;
use crate::engine::Action;
use crate::kafka::codec::Codec;
use crate::kafka::records::SinkResult;
use crate::kafka::topics::{Catalogue, Topic};
use crate::processor::STATE_STORE;
use crate::store::changelog::{self, Restore};
use crate::store::rocks::{RocksConfig, RocksStore};

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("report replica: {0}")]
    Start(String),
}

/// Results and commands per tenant, keyed by command id.
#[derive(Default)]
pub struct Feed {
    pub results: HashMap<String, HashMap<String, SinkResult>>,
    pub commands: HashMap<String, HashMap<String, CommandInfo>>,
}

pub struct Replica {
    pub store: Arc<RocksStore>,
    pub feed: Arc<Mutex<Feed>>,
    pub partitions: i32,
    stop: Arc<AtomicBool>,
}

impl Replica {
    pub fn start(brokers: &str, catalogue: &Catalogue, codec: Arc<Codec>, dir: &Path) -> Result<Replica, ReplicaError> {
        std::fs::create_dir_all(dir).map_err(|e| ReplicaError::Start(e.to_string()))?;
        let store = Arc::new(
            RocksStore::open(dir, &[STATE_STORE], &RocksConfig::default())
                .map_err(|e| ReplicaError::Start(e.to_string()))?,
        );
        let stop = Arc::new(AtomicBool::new(false));
        let feed = Arc::new(Mutex::new(Feed::default()));
        {
            let (store, stop, brokers) = (store.clone(), stop.clone(), brokers.to_string());
            let (topic, partitions) = (catalogue.name(Topic::VehicleStateChangelog), catalogue.partitions);
            std::thread::Builder::new()
                .name("report-replica".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        for p in 0..partitions {
                            let r = Restore {
                                brokers: &brokers,
                                topic: &topic,
                                partition: p,
                                store: STATE_STORE,
                                chunk: 5_000,
                                timeout: Duration::from_secs(5),
                            };
                            if let Err(e) = changelog::restore(&r, store.as_ref(), |_, _| {}) {
                                tracing::debug!(partition = p, error = %e, "replica restore");
                            }
                        }
                        std::thread::sleep(Duration::from_millis(500));
                    }
                })
                .map_err(|e| ReplicaError::Start(e.to_string()))?;
        }
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "geoclock-report")
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| ReplicaError::Start(e.to_string()))?;
        let mut tpl = TopicPartitionList::new();
        let (results_topic, commands_topic) = (catalogue.name(Topic::Results), catalogue.name(Topic::Commands));
        for t in [&results_topic, &commands_topic] {
            for p in 0..catalogue.partitions {
                tpl.add_partition_offset(t, p, Offset::Beginning).map_err(|e| ReplicaError::Start(e.to_string()))?;
            }
        }
        consumer.assign(&tpl).map_err(|e| ReplicaError::Start(e.to_string()))?;
        {
            let (feed, stop) = (feed.clone(), stop.clone());
            std::thread::Builder::new()
                .name("report-feed".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else { continue };
                        let Some(v) = m.payload() else { continue };
                        let mut f = feed.lock().unwrap_or_else(|e| e.into_inner());
                        if m.topic() == results_topic {
                            if let Ok((tenant, r)) = codec.decode_result(v) {
                                f.results.entry(tenant).or_default().insert(r.command_id.clone(), r);
                            }
                        } else if let Ok(tc) = codec.decode_command(v) {
                            let user = match &tc.command.action {
                                Action::Clock(k) => Some(k.user.to_string()),
                                Action::SendServiceLink(l) => Some(l.user.to_string()),
                                _ => None,
                            };
                            let info = CommandInfo { appointment: tc.command.appointment.to_string(), user };
                            f.commands.entry(tc.tenant).or_default().insert(tc.command.id, info);
                        }
                    }
                })
                .map_err(|e| ReplicaError::Start(e.to_string()))?;
        }
        Ok(Replica { store, feed, partitions: catalogue.partitions, stop })
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
