//! Creating the catalogue's topics on a real broker.
//!
//! Order: read what exists, refuse a co-partitioning mismatch before
//! touching anything, create what is missing (a missing member of a
//! co-partitioned group takes the partition count its existing members
//! have), then read back and check again: another instance creating the
//! same topics concurrently is fine (`TopicAlreadyExists` is success), a
//! mismatch it caused is not. Metadata fetches are blocking librdkafka calls
//! and run on tokio's blocking pool, never on a worker thread.
//!
//! Topics are created with the configs of their [`TopicSpec`] under a
//! [`Retention`]. Asked to (`geoclock topics create`), existing topics are
//! brought to the retention configs too: their configs are read
//! (DescribeConfigs), and the retention configs that differ are set
//! ([`super::alter`]: IncrementalAlterConfigs, which leaves every other
//! config as it is). A broker that cannot do either is reported per
//! topic, with the configs to set by hand; nothing else fails.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;

use super::client::Logged;
use super::topics::{check, Catalogue, Retention, TopicError, TopicSpec};

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
    /// Existing topics brought to the retention configs.
    pub updated: Vec<ConfigChange>,
    /// Existing topics whose configs could not be read or written, with
    /// what to set by hand.
    pub not_updated: Vec<String>,
}

/// One existing topic's configs changed: `(name, old value, new value)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigChange {
    pub topic: String,
    pub changes: Vec<(String, Option<String>, String)>,
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

/// Creates the catalogue's missing topics with the default [`Retention`];
/// existing topics are left as they are.
pub async fn ensure_topics(
    brokers: &str,
    catalogue: &Catalogue,
    timeout: Duration,
) -> Result<EnsureReport, AdminError> {
    ensure_topics_with(brokers, catalogue, &Retention::default(), false, timeout).await
}

/// Creates the missing topics with `retention`'s configs and, when
/// `update_existing`, brings existing ones to them (module docs).
pub async fn ensure_topics_with(
    brokers: &str,
    catalogue: &Catalogue,
    retention: &Retention,
    update_existing: bool,
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
        let configs: Vec<Vec<(&'static str, String)>> =
            to_create.iter().map(|(spec, _)| spec.configs(retention)).collect();
        let new_topics: Vec<NewTopic> = to_create
            .iter()
            .zip(&configs)
            .map(|((spec, partitions), configs)| {
                configs.iter().fold(
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
    if update_existing {
        for spec in specs.iter().filter(|s| existing.contains_key(&s.name)) {
            match update_retention(&admin, brokers, spec, retention, timeout).await {
                Ok(Some(change)) => report.updated.push(change),
                Ok(None) => {}
                Err(e) => {
                    let wanted: Vec<String> =
                        spec.retention_configs(retention).iter().map(|(k, v)| format!("{k}={v}")).collect();
                    report.not_updated.push(format!("{} ({e}): set {} by hand", spec.name, wanted.join(", ")));
                }
            }
        }
    }
    Ok(report)
}

/// Brings one existing topic to `retention`'s configs; `None` when it has
/// them already.
async fn update_retention(
    admin: &AdminClient<Logged>,
    brokers: &str,
    spec: &TopicSpec,
    retention: &Retention,
    timeout: Duration,
) -> Result<Option<ConfigChange>, String> {
    let wanted = spec.retention_configs(retention);
    if wanted.is_empty() {
        return Ok(None);
    }
    let opts = AdminOptions::new().request_timeout(Some(timeout));
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(&spec.name)], &opts)
        .await
        .map_err(|e| format!("cannot read its configs: {e}"))?;
    let resource = match described.into_iter().next() {
        Some(Ok(r)) => r,
        Some(Err(code)) => return Err(format!("cannot read its configs: {code}")),
        None => return Err("cannot read its configs: no answer".into()),
    };
    let current = |k: &str| resource.entries.iter().find(|e| e.name == k).and_then(|e| e.value.clone());
    let changes: Vec<(String, Option<String>, String)> = wanted
        .iter()
        .filter(|(k, v)| current(k).as_deref() != Some(v.as_str()))
        .map(|(k, v)| (k.to_string(), current(k), v.clone()))
        .collect();
    if changes.is_empty() {
        return Ok(None);
    }
    let set: Vec<(String, String)> = changes.iter().map(|(k, _, v)| (k.clone(), v.clone())).collect();
    let (brokers, topic) = (brokers.to_string(), spec.name.clone());
    tokio::task::spawn_blocking(move || {
        let pairs: Vec<(&str, &str)> = set.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        super::alter::set_topic_configs(&brokers, &topic, &pairs, timeout)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("cannot change its configs: {e}"))?;
    Ok(Some(ConfigChange { topic: spec.name.clone(), changes }))
}
