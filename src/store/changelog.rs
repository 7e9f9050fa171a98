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
//! first produces a claim marker (key = `0x00` + `claim/` + a random
//! nonce: a key of its own, which no later record overwrites) and waits
//! for its offset; that offset is its owner epoch, and every record it
//! produces afterwards carries it in the [`OWNER_HEADER`] (8 bytes
//! big-endian). Restore keeps the highest epoch seen so far (claims and
//! headers; records without the header are epoch 0) and skips every record
//! of a lower epoch: a zombie (an instance that lost the partition but has
//! not noticed yet) may still append a batch after the new owner's claim,
//! and that batch is never applied. Writes held when a newer epoch appears
//! (a claim, or a record of a newer owner) are dropped with it (the cut
//! batch's begin marker, written before the claim, still hands its plan to
//! the new owner, which re-processes it). The epoch is stored with the
//! restored position, so incremental restores keep skipping.
//!
//! Claims stay bounded without losing what they fence: a restore that has
//! seen the whole stretch of log between a claim and the next one, with no
//! record of an older epoch in it, reports that claim stale
//! ([`RestoreStats::stale_claims`]) and the task tombstones it
//! ([`retire_claims`]). Why that is safe is argued in [`crate::store`].
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
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::ThreadedProducer;
use rdkafka::{Offset, TopicPartitionList};

use super::{Batch, StateStore, StoreError, StoreName};
use crate::kafka::client::{consumer_config, is_transient};
use crate::kafka::produce::{Acks, Pending};

/// The producer changelog writes go through (idempotent, with one request
/// in flight: see the processor's task).
pub type Producer = ThreadedProducer<Acks>;

const MARKER: u8 = 0x00;

/// Changelog record header: the producing owner's epoch.
pub const OWNER_HEADER: &str = "geoclock-owner";

/// The changelog key of an owner's claim: one key per claim, so that
/// compaction never removes a claim on account of a later one.
pub fn claim_key(nonce: u64) -> Vec<u8> {
    let mut k = vec![MARKER];
    k.extend_from_slice(format!("claim/{nonce:016x}").as_bytes());
    k
}

/// Whether a changelog key is a claim's (this layout's, or the single
/// `claim` key of older versions).
pub fn is_claim(key: &[u8]) -> bool {
    key.first() == Some(&MARKER) && key[1..].starts_with(b"claim")
}

/// A nonce no other claim has (in practice): the std hasher's random keys
/// over the time and the process.
fn nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    // Never 0 (no claim) nor `CLAIM_LEGACY` once stored as an i64.
    (h.finish() >> 1) | 1
}

/// The name the highest owner epoch restored is stored under (as an offset).
pub fn owner_name(topic: &str) -> String {
    format!("{topic}#owner")
}

/// Adds to `batch` what makes the next restore of `topic`/`partition` start
/// from the beginning of the log (local state that is forgotten).
pub fn reset_position(batch: &mut Batch, topic: &str, partition: i32) {
    let (claim_at, fenced_at) = claim_names(topic);
    for name in [topic.to_string(), claim_at, fenced_at] {
        batch.offset(&name, partition, 0);
    }
    batch.offset(&owner_name(topic), partition, -1);
}

/// The names the latest claim restored (its key) and whether a record of an
/// older epoch followed it are stored under, beside the restored position.
fn claim_names(topic: &str) -> (String, String) {
    (format!("{topic}#claim"), format!("{topic}#claim-fenced"))
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
/// never reorder or duplicate within the partition. Blocking: for sync
/// threads.
pub fn produce(
    producer: &Producer,
    topic: &str,
    partition: i32,
    records: &[(Vec<u8>, Option<Vec<u8>>)],
    timeout: Duration,
) -> Result<Option<i64>, StoreError> {
    produce_as(producer, topic, partition, records, None, timeout)
}

/// Claims a changelog partition: produces a claim marker of its own key and
/// returns its offset, the owner epoch to produce with ([`produce_as`]).
pub fn claim(producer: &Producer, topic: &str, partition: i32, timeout: Duration) -> Result<i64, StoreError> {
    let next = produce(producer, topic, partition, &[(claim_key(nonce()), Some(b"claim".to_vec()))], timeout)?;
    next.map(|n| n - 1).ok_or_else(|| StoreError::Changelog(format!("claim of {topic}/{partition}: no offset")))
}

/// Tombstones claims a restore found stale ([`RestoreStats::stale_claims`]),
/// as owner `owner`; returns the offset after the last tombstone.
pub fn retire_claims(
    producer: &Producer,
    topic: &str,
    partition: i32,
    keys: &[Vec<u8>],
    owner: i64,
    timeout: Duration,
) -> Result<Option<i64>, StoreError> {
    let tombstones: Vec<(Vec<u8>, Option<Vec<u8>>)> = keys.iter().map(|k| (k.clone(), None)).collect();
    produce_as(producer, topic, partition, &tombstones, Some(owner), timeout)
}

/// [`produce`], every record carrying `owner` in the [`OWNER_HEADER`].
pub fn produce_as(
    producer: &Producer,
    topic: &str,
    partition: i32,
    records: &[(Vec<u8>, Option<Vec<u8>>)],
    owner: Option<i64>,
    timeout: Duration,
) -> Result<Option<i64>, StoreError> {
    let owner_bytes = owner.map(i64::to_be_bytes);
    let failed = |e: &dyn std::fmt::Display| StoreError::Changelog(format!("produce to {topic}/{partition}: {e}"));
    // Enqueue everything first (so the producer batches it), then wait for
    // the acknowledgements.
    let mut pending = Pending::default();
    let deadline = Instant::now() + timeout;
    for (key, value) in records {
        let mut r = pending.record(topic).partition(partition).key(&key[..]);
        if let Some(v) = value {
            r = r.payload(&v[..]);
        }
        if let Some(o) = &owner_bytes {
            r = r.headers(OwnedHeaders::new().insert(Header { key: OWNER_HEADER, value: Some(&o[..]) }));
        }
        pending.send(producer, r, deadline).map_err(|e| failed(&e))?;
    }
    pending.wait(timeout).map_err(|e| failed(&e))
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
    /// Keys of claims this restore saw the whole stretch after (up to the
    /// next claim) with no record of an older epoch in it: nothing needs
    /// them any more ([`retire_claims`]).
    pub stale_claims: Vec<Vec<u8>>,
    /// Stopped between chunks (what was restored so far is committed).
    pub interrupted: bool,
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
    progress: impl FnMut(u64, u64),
) -> Result<RestoreStats, StoreError> {
    restore_until(r, state, progress, || false)
}

/// [`restore`], returning early (with [`RestoreStats::interrupted`]) once
/// `stop()` is true, checked between chunks: a restore never holds up a
/// rebalance for longer than a chunk.
pub fn restore_until(
    r: &Restore,
    state: &dyn StateStore,
    mut progress: impl FnMut(u64, u64),
    stop: impl Fn() -> bool,
) -> Result<RestoreStats, StoreError> {
    let Restore { brokers, topic, partition, store, chunk, timeout } = *r;
    let kafka = |e: rdkafka::error::KafkaError| StoreError::Changelog(format!("{topic}/{partition}: {e}"));
    let consumer: BaseConsumer =
        consumer_config(brokers, "geoclock-restore").set("enable.partition.eof", "false").create().map_err(kafka)?;
    let (low, high) = consumer.fetch_watermarks(topic, partition, timeout).map_err(kafka)?;
    let from = state.offset(topic, partition)?.unwrap_or(low).max(low);
    let mut stats = RestoreStats { from, to: from, ..RestoreStats::default() };
    let owners = owner_name(topic);
    // -1: no owner yet (a claim at offset 0 is epoch 0, records without a
    // header are epoch 0 too).
    let mut owner = state.offset(&owners, partition)?.unwrap_or(-1);
    // The latest claim seen (its nonce; `CLAIM_LEGACY` for the old single
    // key) and whether a record of an older epoch came after it.
    let (claim_at, fenced_at) = claim_names(topic);
    let mut latest_claim = state.offset(&claim_at, partition)?.filter(|n| *n != 0);
    let mut fenced_since = state.offset(&fenced_at, partition)? == Some(1);
    if from >= high {
        return Ok(stats);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from)).map_err(kafka)?;
    consumer.assign(&tpl).map_err(kafka)?;
    let total = (high - from) as u64;
    let begin = begin_key();
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
        if is_claim(key) {
            // A null value is the tombstone of a retired claim.
            if msg.payload().is_some() && msg.offset() > owner {
                if let (Some(prev), false) = (latest_claim, fenced_since) {
                    stats.stale_claims.push(claim_key_of(prev));
                }
                latest_claim = Some(claim_nonce(key));
                fenced_since = false;
                owner = msg.offset();
                held.clear();
            }
            continue;
        }
        let epoch = record_owner(&msg);
        if epoch < owner {
            stats.fenced += 1;
            fenced_since = true;
            continue;
        }
        if epoch > owner {
            // A newer owner's first record (its claim may be retired):
            // writes an older owner left unfinished are dropped with it.
            held.clear();
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
        batch.offset(&claim_at, partition, latest_claim.unwrap_or(0));
        batch.offset(&fenced_at, partition, i64::from(fenced_since));
        applied = next;
        if batch.writes.len() + batch.offsets.len() >= chunk {
            commit_restored(state, &mut batch, topic, partition, applied)?;
            progress((next - from) as u64, total);
            if stop() {
                stats.interrupted = true;
                stats.to = applied;
                tracing::info!(topic, partition, done = next - from, total, "changelog restore stopped");
                return Ok(stats);
            }
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

/// Claim keys as stored beside the restored position: the nonce, or
/// [`CLAIM_LEGACY`] for the single key of older versions.
const CLAIM_LEGACY: i64 = i64::MIN;

fn claim_nonce(key: &[u8]) -> i64 {
    std::str::from_utf8(&key[1..])
        .ok()
        .and_then(|k| k.strip_prefix("claim/"))
        .and_then(|n| u64::from_str_radix(n, 16).ok())
        .map_or(CLAIM_LEGACY, |n| n as i64)
}

fn claim_key_of(nonce: i64) -> Vec<u8> {
    match nonce {
        CLAIM_LEGACY => [&[MARKER][..], b"claim"].concat(),
        n => claim_key(n as u64),
    }
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

    #[test]
    fn claim_keys_are_their_own_and_round_trip_through_the_stored_nonce() {
        let k = claim_key(0xdead_beef_0000_0001);
        assert!(is_claim(&k) && is_claim(&[MARKER, b'c', b'l', b'a', b'i', b'm']));
        assert!(!is_claim(&begin_key()) && !is_claim(b"claim/x"));
        assert_eq!(claim_key_of(claim_nonce(&k)), k);
        let legacy = [&[MARKER][..], b"claim"].concat();
        assert_eq!(claim_key_of(claim_nonce(&legacy)), legacy);
        assert_ne!(claim_key(nonce()), claim_key(nonce()), "two claims, two keys");
    }
}
