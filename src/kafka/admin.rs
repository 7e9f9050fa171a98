//! Creating the catalogue's topics on a real broker.
//!
//! Order: read what exists, refuse a co-partitioning mismatch before
//! touching anything, create what is missing (a missing member of a
//! co-partitioned group takes the partition count its existing members
//! have), then read back and check again: another instance creating the
//! same topics concurrently is fine (`TopicAlreadyExists` is success), a
//! mismatch it caused is not. Metadata fetches are blocking librdkafka calls
//! and run on tokio's blocking pool, never on a worker thread.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::FutureProducer;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;

use super::client::Logged;
use super::topics::{check, Catalogue, TopicError};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("kafka client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("creating topic {topic}: {code}")]
    Create { topic: String, code: RDKafkaErrorCode },
    #[error(transparent)]
    Topics(#[from] TopicError),
    #[error("metadata task failed: {0}")]
    Join(String),
}

/// What `ensure_topics` found and did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnsureReport {
    pub created: Vec<String>,
    pub existing: Vec<String>,
    /// Partition count per catalogue topic after the call.
    pub partitions: BTreeMap<String, i32>,
}

pub fn admin_client(brokers: &str) -> Result<AdminClient<Logged>, AdminError> {
    Ok(super::client::base(brokers).set("client.id", "geoclock-admin").create_with_context(Logged::new("admin"))?)
}

/// Partition counts of every topic on the cluster.
///
/// The metadata request goes through a producer, not the admin client:
/// a producer's polling thread delivers librdkafka's own log lines (an
/// unreachable broker, a failed TLS handshake or SASL login) to `tracing`,
/// while an admin client's are never polled and would be lost.
pub async fn partition_counts(brokers: &str, timeout: Duration) -> Result<BTreeMap<String, i32>, AdminError> {
    let probe: FutureProducer<Logged> =
        super::client::base(brokers).set("client.id", "geoclock-admin").create_with_context(Logged::new("admin"))?;
    tokio::task::spawn_blocking(move || {
        let md = rdkafka::producer::Producer::client(&probe).fetch_metadata(None, timeout)?;
        Ok(md.topics().iter().map(|t| (t.name().to_string(), t.partitions().len() as i32)).collect())
    })
    .await
    .map_err(|e| AdminError::Join(e.to_string()))?
}

pub async fn ensure_topics(
    brokers: &str,
    catalogue: &Catalogue,
    timeout: Duration,
) -> Result<EnsureReport, AdminError> {
    let admin = Arc::new(admin_client(brokers)?);
    let existing = partition_counts(brokers, timeout).await?;
    check(catalogue, &existing)?;

    let specs = catalogue.specs();
    let mut report = EnsureReport::default();
    let mut to_create = Vec::new();
    for spec in &specs {
        if existing.contains_key(&spec.name) {
            report.existing.push(spec.name.clone());
            continue;
        }
        // Match the group's existing members, if any.
        let partitions = spec
            .topic
            .co_partition()
            .and_then(|g| {
                specs.iter().filter(|s| s.topic.co_partition() == Some(g)).find_map(|s| existing.get(&s.name).copied())
            })
            .unwrap_or(spec.partitions);
        to_create.push((spec.clone(), partitions));
    }
    if !to_create.is_empty() {
        let new_topics: Vec<NewTopic> = to_create
            .iter()
            .map(|(spec, partitions)| {
                spec.configs().into_iter().fold(
                    NewTopic::new(&spec.name, *partitions, TopicReplication::Fixed(spec.replication)),
                    |t, (k, v)| t.set(k, v),
                )
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(timeout));
        for result in admin.create_topics(new_topics.iter(), &opts).await? {
            match result {
                Ok(name) => report.created.push(name),
                Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => report.existing.push(name),
                Err((topic, code)) => return Err(AdminError::Create { topic, code }),
            }
        }
    }
    let after = partition_counts(brokers, timeout).await?;
    check(catalogue, &after)?;
    report.partitions = specs.iter().filter_map(|s| after.get(&s.name).map(|n| (s.name.clone(), *n))).collect();
    Ok(report)
}
