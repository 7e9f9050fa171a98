//! Changelog topics: the durable copy of each store.
//!
//! Record format, on a compacted topic, partition = the input partition
//! the state belongs to (changelogs are co-partitioned with their input).
//! One batch is: a begin marker (produced and acknowledged before anything
//! else of the batch, commands included), its writes, then its offsets
//! markers.
//! - a begin marker: key = `0x00` + `begin`, value = the batch's replay plan
//!   (opaque here: the processor records which input records the batch
//!   holds, in order, so that a batch cut short by a crash is re-processed
//!   in exactly the same order, giving the same commands and writes);
//! - a state write: key = the store key (never starts with 0x00), value =
//!   the stored bytes, or null for a delete (a tombstone);
//! - an offsets marker, produced after a batch's writes: key = `0x00` +
//!   `offset/{topic}/{partition}`, value = the next input offset as 8 bytes
//!   big-endian. Compaction keeps the latest marker per input partition.
//!
//! Owners (fencing without transactions): a task that takes a partition
//! first produces a claim marker (key = `0x00` + `claim`) and waits for its
//! offset; that offset is its owner epoch, and every record it produces
//! afterwards carries it in the [`OWNER_HEADER`] (8 bytes big-endian).
//! Restore keeps the highest epoch seen so far (claims and headers; records
//! without the header are epoch 0) and skips every record of a lower epoch:
//! a zombie (an instance that lost the partition but has not noticed yet)
//! may still append a batch after the new owner's claim, and that batch is
//! never applied. Writes held when a newer claim appears are dropped with
//! it (the cut batch's begin marker, written before the claim, still hands
//! its plan to the new owner, which re-processes it). The epoch is stored
//! with the restored position, so incremental restores keep skipping.
//!
//! Restoring replays a changelog partition in order from the position
//! stored locally (the changelog's own offset, kept beside the state) to the
//! high watermark seen at the start. Writes are applied when an offsets
//! marker follows them, about `chunk` records at a time, as one [`Batch`]
//! that also advances the stored position to just after the last marker
//! applied, so an interrupted restore resumes where it stopped and never
//! applies a record twice. Writes after the last marker (a batch cut short)
//! are not applied; the plan of that batch is returned
//! ([`RestoreStats::incomplete`]) so that the processor re-processes it
//! exactly. This stays right under compaction, which keeps the latest record
//! per key (so the latest begin and offsets markers, and each row's latest
//! value) and never reorders: writes of a batch cut short earlier in the log
//! were re-produced, with the same values, by its exact re-processing.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::{Batch, StateStore, StoreError, StoreName};
use crate::kafka::client::{consumer_config, is_transient};

const MARKER: u8 = 0x00;

/// Changelog record header: the producing owner's epoch.
pub const OWNER_HEADER: &str = "geoclock-owner";

/// The changelog key of an owner's claim.
pub fn claim_key() -> Vec<u8> {
    let mut k = vec![MARKER];
    k.extend_from_slice(b"claim");
    k
}

/// The name the highest owner epoch restored is stored under (as an offset).
pub fn owner_name(topic: &str) -> String {
    format!("{topic}#owner")
}

/// The changelog key of an offsets marker.
pub fn marker_key(topic: &str, partition: i32) -> Vec<u8> {
    let mut k = vec![MARKER];
    k.extend_from_slice(format!("offset/{topic}/{partition}").as_bytes());
    k
}

/// The changelog key that starts a batch.
pub fn begin_key() -> Vec<u8> {
    let mut k = vec![MARKER];
    k.extend_from_slice(b"begin");
    k
}

/// The begin marker of a batch, carrying its replay plan.
pub fn begin_record(plan: Vec<u8>) -> (Vec<u8>, Option<Vec<u8>>) {
    (begin_key(), Some(plan))
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
    produce_as(producer, topic, partition, records, None, timeout).await
}

/// Claims a changelog partition: produces the claim marker and returns its
/// offset, the owner epoch to produce with ([`produce_as`]).
pub async fn claim(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> Result<i64, StoreError> {
    let next = produce(producer, topic, partition, &[(claim_key(), Some(b"claim".to_vec()))], timeout).await?;
    next.map(|n| n - 1).ok_or_else(|| StoreError::Changelog(format!("claim of {topic}/{partition}: no offset")))
}

/// [`produce`], every record carrying `owner` in the [`OWNER_HEADER`].
pub async fn produce_as(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    records: &[(Vec<u8>, Option<Vec<u8>>)],
    owner: Option<i64>,
    timeout: Duration,
) -> Result<Option<i64>, StoreError> {
    let owner_bytes = owner.map(i64::to_be_bytes);
    let failed = |e: &dyn std::fmt::Display| StoreError::Changelog(format!("produce to {topic}/{partition}: {e}"));
    // Enqueue everything first (so the producer batches it), then await the
    // acknowledgements; a full local queue is waited out, never dropped.
    let mut pending = Vec::with_capacity(records.len());
    let deadline = Instant::now() + timeout;
    for (key, value) in records {
        let mut r = FutureRecord::<Vec<u8>, Vec<u8>>::to(topic).partition(partition).key(key);
        if let Some(v) = value {
            r = r.payload(v);
        }
        if let Some(o) = &owner_bytes {
            r = r.headers(OwnedHeaders::new().insert(Header { key: OWNER_HEADER, value: Some(&o[..]) }));
        }
        loop {
            match producer.send_result(r) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    r = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => return Err(failed(&e)),
            }
        }
    }
    let mut last = None;
    for p in pending {
        let delivery = p.await.map_err(|e| failed(&e))?.map_err(|(e, _)| failed(&e))?;
        last = Some(delivery.offset + 1);
    }
    Ok(last)
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RestoreStats {
    pub records: u64,
    /// Records of a superseded owner (a zombie's), not applied.
    pub fenced: u64,
    pub from: i64,
    pub to: i64,
    /// The plan of a batch begun but not finished at the end of the log.
    pub incomplete: Option<Vec<u8>>,
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
    let consumer: BaseConsumer =
        consumer_config(brokers, "geoclock-restore").set("enable.partition.eof", "false").create().map_err(kafka)?;
    let (low, high) = consumer.fetch_watermarks(topic, partition, timeout).map_err(kafka)?;
    let from = state.offset(topic, partition)?.unwrap_or(low).max(low);
    let mut stats = RestoreStats { records: 0, fenced: 0, from, to: from, incomplete: None };
    let owners = owner_name(topic);
    let mut owner = state.offset(&owners, partition)?.unwrap_or(0);
    if from >= high {
        return Ok(stats);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from)).map_err(kafka)?;
    consumer.assign(&tpl).map_err(kafka)?;
    let total = (high - from) as u64;
    let (begin, claim) = (begin_key(), claim_key());
    // `batch`: writes followed by a marker, not yet committed; `held`:
    // writes not (yet) followed by one; `plan`: the latest begin marker's
    // plan when no marker followed it.
    let mut batch = Batch::default();
    let mut held: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    let mut next = from;
    let mut applied = from;
    let mut last_progress = Instant::now();
    let mut waiting_since = Instant::now();
    while next < high {
        let left = timeout.saturating_sub(waiting_since.elapsed());
        let msg = match consumer.poll(left) {
            Some(Ok(msg)) => msg,
            Some(Err(e)) if is_transient(&e) && !left.is_zero() => {
                tracing::warn!(topic, partition, error = %e, "changelog restore: consumer error; waiting it out");
                continue;
            }
            Some(Err(e)) => return Err(kafka(e)),
            None => {
                return Err(StoreError::Changelog(format!(
                    "{topic}/{partition}: no record at offset {next} within {timeout:?}"
                )))
            }
        };
        waiting_since = Instant::now();
        let key = msg.key().unwrap_or_default();
        next = msg.offset() + 1;
        stats.records += 1;
        if key == claim.as_slice() {
            if msg.offset() > owner {
                owner = msg.offset();
                held.clear();
            }
            continue;
        }
        let epoch = record_owner(&msg);
        if epoch < owner {
            stats.fenced += 1;
            continue;
        }
        owner = epoch;
        if key == begin.as_slice() {
            stats.incomplete = Some(msg.payload().unwrap_or_default().to_vec());
            continue;
        }
        if key.first() != Some(&MARKER) {
            held.push((key.to_vec(), msg.payload().map(<[u8]>::to_vec)));
            continue;
        }
        let (t, p, n) = parse_marker(key, msg.payload())?;
        stats.incomplete = None;
        for (k, v) in held.drain(..) {
            batch.writes.push((store, k, v));
        }
        batch.offset(&t, p, n);
        batch.offset(&owners, partition, owner);
        applied = next;
        if batch.writes.len() + batch.offsets.len() >= chunk {
            commit_restored(state, &mut batch, topic, partition, applied)?;
            progress((next - from) as u64, total);
            if last_progress.elapsed() > Duration::from_secs(5) {
                tracing::info!(topic, partition, done = next - from, total, "restoring changelog");
                last_progress = Instant::now();
            }
        }
    }
    if !batch.is_empty() {
        commit_restored(state, &mut batch, topic, partition, applied)?;
    }
    progress(total, total);
    if !held.is_empty() {
        tracing::warn!(topic, partition, writes = held.len(), "changelog ends inside a batch: not applied");
    }
    if stats.fenced > 0 {
        tracing::warn!(topic, partition, records = stats.fenced, "skipped records of a superseded owner");
    }
    stats.to = applied;
    tracing::info!(topic, partition, records = stats.records, from, to = applied, "changelog restored");
    Ok(stats)
}

/// The owner epoch a changelog record was produced with (0: none).
fn record_owner(msg: &impl Message) -> i64 {
    let Some(headers) = msg.headers() else { return 0 };
    headers
        .iter()
        .find(|h| h.key == OWNER_HEADER)
        .and_then(|h| <[u8; 8]>::try_from(h.value?).ok())
        .map_or(0, i64::from_be_bytes)
}

fn commit_restored(
    state: &dyn StateStore,
    batch: &mut Batch,
    topic: &str,
    partition: i32,
    applied: i64,
) -> Result<(), StoreError> {
    batch.offset(topic, partition, applied);
    state.commit(batch)?;
    *batch = Batch::default();
    Ok(())
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
        assert_eq!(begin_record(b"plan".to_vec()).0[0], MARKER);
    }
}
