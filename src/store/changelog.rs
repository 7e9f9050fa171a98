//! Changelog topics: the durable copy of each store.
//!
//! Record format, on a compacted topic, partition = the input partition
//! the state belongs to (changelogs are co-partitioned with their input):
//! - a state write: key = the store key (never starts with 0x00), value =
//!   the stored bytes, or null for a delete (a tombstone);
//! - an offsets marker, produced after a batch's writes: key = `0x00` +
//!   `offset/{topic}/{partition}`, value = the next input offset as 8 bytes
//!   big-endian. Compaction keeps the latest marker per input partition.
//!
//! Restoring replays a changelog partition in order from the position
//! stored locally (the changelog's own offset, kept beside the state) to the
//! high watermark seen at the start, committing every `chunk` records as one
//! [`Batch`] that also advances that position, so an interrupted restore
//! resumes where it stopped and never applies a record twice.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::{Batch, StateStore, StoreError, StoreName};

const MARKER: u8 = 0x00;

/// The changelog key of an offsets marker.
pub fn marker_key(topic: &str, partition: i32) -> Vec<u8> {
    let mut k = vec![MARKER];
    k.extend_from_slice(format!("offset/{topic}/{partition}").as_bytes());
    k
}

fn parse_marker(key: &[u8], value: Option<&[u8]>) -> Result<(String, i32, i64), StoreError> {
    let bad =
        |reason: &str| StoreError::CorruptOffset { key: String::from_utf8_lossy(key).into(), reason: reason.into() };
    let text = std::str::from_utf8(&key[1..]).map_err(|_| bad("not UTF-8"))?;
    let rest = text.strip_prefix("offset/").ok_or_else(|| bad("no offset/ prefix"))?;
    let (topic, partition) = rest.rsplit_once('/').ok_or_else(|| bad("no partition"))?;
    let partition: i32 = partition.parse().map_err(|_| bad("partition not a number"))?;
    let bytes: [u8; 8] = value.ok_or_else(|| bad("null value"))?.try_into().map_err(|_| bad("value not 8 bytes"))?;
    Ok((topic.to_string(), partition, i64::from_be_bytes(bytes)))
}

/// The changelog records for one store's share of a batch, in order: its
/// writes, then one marker per input offset.
pub fn records(store: StoreName, batch: &Batch) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let mut out: Vec<(Vec<u8>, Option<Vec<u8>>)> =
        batch.writes.iter().filter(|(s, _, _)| *s == store).map(|(_, k, v)| (k.clone(), v.clone())).collect();
    for (topic, partition, next) in &batch.offsets {
        out.push((marker_key(topic, *partition), Some(next.to_be_bytes().to_vec())));
    }
    out
}

/// Produces records to one changelog partition and waits until the broker
/// acknowledged all of them; returns the offset after the last one. The
/// producer should be idempotent (`enable.idempotence=true`) so retries
/// never reorder or duplicate within the partition.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    records: &[(Vec<u8>, Option<Vec<u8>>)],
    timeout: Duration,
) -> Result<Option<i64>, StoreError> {
    let mut pending = Vec::with_capacity(records.len());
    for (key, value) in records {
        let mut r = FutureRecord::<Vec<u8>, Vec<u8>>::to(topic).partition(partition).key(key);
        if let Some(v) = value {
            r = r.payload(v);
        }
        pending.push(producer.send(r, timeout));
    }
    let mut last = None;
    for p in pending {
        let delivery =
            p.await.map_err(|(e, _)| StoreError::Changelog(format!("produce to {topic}/{partition}: {e}")))?;
        last = Some(delivery.offset + 1);
    }
    Ok(last)
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RestoreStats {
    pub records: u64,
    pub from: i64,
    pub to: i64,
}

/// Which changelog partition to restore into which store.
#[derive(Debug, Clone)]
pub struct Restore<'a> {
    pub brokers: &'a str,
    pub topic: &'a str,
    pub partition: i32,
    pub store: StoreName,
    /// Records per committed batch.
    pub chunk: usize,
    /// Longest wait for the broker or for the next record.
    pub timeout: Duration,
}

/// Replays the changelog partition into `state` up to the high watermark
/// taken at the start. Blocking (librdkafka polls): run it on a blocking
/// thread, never on an async worker. `progress(done, total)` is called after
/// every committed chunk.
pub fn restore(
    r: &Restore,
    state: &dyn StateStore,
    mut progress: impl FnMut(u64, u64),
) -> Result<RestoreStats, StoreError> {
    let Restore { brokers, topic, partition, store, chunk, timeout } = *r;
    let kafka = |e: rdkafka::error::KafkaError| StoreError::Changelog(format!("{topic}/{partition}: {e}"));
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "geoclock-restore")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(kafka)?;
    let (low, high) = consumer.fetch_watermarks(topic, partition, timeout).map_err(kafka)?;
    let from = state.offset(topic, partition)?.unwrap_or(low).max(low);
    let mut stats = RestoreStats { records: 0, from, to: from };
    if from >= high {
        return Ok(stats);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from)).map_err(kafka)?;
    consumer.assign(&tpl).map_err(kafka)?;
    let total = (high - from) as u64;
    let mut batch = Batch::default();
    let mut next = from;
    let mut last_progress = Instant::now();
    while next < high {
        let Some(msg) = consumer.poll(timeout) else {
            return Err(StoreError::Changelog(format!(
                "{topic}/{partition}: no record at offset {next} within {timeout:?}"
            )));
        };
        let msg = msg.map_err(kafka)?;
        let key = msg.key().unwrap_or_default();
        if key.first() == Some(&MARKER) {
            let (t, p, n) = parse_marker(key, msg.payload())?;
            batch.offset(&t, p, n);
        } else {
            match msg.payload() {
                Some(v) => batch.put(store, key.to_vec(), v.to_vec()),
                None => batch.delete(store, key.to_vec()),
            }
        }
        next = msg.offset() + 1;
        stats.records += 1;
        if batch.writes.len() + batch.offsets.len() >= chunk || next >= high {
            batch.offset(topic, partition, next);
            state.commit(&batch)?;
            batch = Batch::default();
            progress((next - from) as u64, total);
            if last_progress.elapsed() > Duration::from_secs(5) {
                tracing::info!(topic, partition, done = next - from, total, "restoring changelog");
                last_progress = Instant::now();
            }
        }
    }
    stats.to = next;
    tracing::info!(topic, partition, records = stats.records, from, to = next, "changelog restored");
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_sort_apart_from_state_keys() {
        let k = marker_key("geoclock.azuga.pings", 7);
        assert_eq!(parse_marker(&k, Some(&99i64.to_be_bytes())).unwrap(), ("geoclock.azuga.pings".into(), 7, 99));
        assert!(parse_marker(&k, None).is_err());
        assert!(parse_marker(&k, Some(b"short")).is_err());
        let mut b = Batch::default();
        b.put("s", b"acme/1".to_vec(), b"x".to_vec());
        b.delete("other", b"acme/2".to_vec());
        b.offset("in", 0, 5);
        let r = records("s", &b);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].0, b"acme/1");
        assert_eq!(r[1].0[0], MARKER);
    }
}
