//! Reading a whole topic once, as it stands (for tools: `geoclock dlq`):
//! every partition from its low to its high watermark at the start, with
//! no consumer group offsets committed — the reader never disturbs the
//! groups of the running pipeline. Transient consumer errors are waited
//! out ([`super::client::unless_transient`]).

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::client::{consumer_config, unless_transient, Logged};

/// One record as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub timestamp_ms: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("topic {0} has no partitions (does it exist?)")]
    NoTopic(String),
    #[error("{topic} not read to its end within {within:?}")]
    Timeout { topic: String, within: Duration },
}

/// Every record of `topic` up to its end when called, in partition and
/// offset order.
pub fn read_topic(brokers: &str, topic: &str, within: Duration) -> Result<Vec<Read>, ReadError> {
    let group = format!("geoclock-reader-{}", std::process::id());
    let consumer: BaseConsumer<Logged> = consumer_config(brokers, &group).create_with_context(Logged::new("reader"))?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> =
        md.topics().first().map(|t| t.partitions().iter().map(|p| p.id()).collect()).unwrap_or_default();
    if partitions.is_empty() {
        return Err(ReadError::NoTopic(topic.to_string()));
    }
    let mut tpl = TopicPartitionList::new();
    let mut ends = Vec::new();
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Offset(low))?;
            ends.push((p, high));
        }
    }
    let mut out: Vec<Read> = Vec::new();
    if ends.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + within;
    let mut next: std::collections::HashMap<i32, i64> = ends.iter().map(|(p, _)| (*p, 0)).collect();
    while ends.iter().any(|(p, high)| next[p] < *high) {
        if Instant::now() > deadline {
            return Err(ReadError::Timeout { topic: topic.to_string(), within });
        }
        let Some(r) = consumer.poll(Duration::from_millis(200)) else { continue };
        let Some(m) = unless_transient(r, "topic reader")? else { continue };
        next.insert(m.partition(), m.offset() + 1);
        let headers = m
            .headers()
            .map(|h| h.iter().map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec())).collect())
            .unwrap_or_default();
        out.push(Read {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
            timestamp_ms: m.timestamp().to_millis(),
        });
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    Ok(out)
}
