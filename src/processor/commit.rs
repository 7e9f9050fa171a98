//! One batch's writes, in the order of the commit protocol (the argument
//! for each crash point is in [`crate::store`]):
//! 1. the changelog begin marker carrying the batch's [`Plan`], acknowledged;
//! 2. its commands, routes and dead letters, acknowledged, then stage one's
//!    progress records (after the routes they vouch for);
//! 3. its state rows and input-offsets markers to the changelog,
//!    acknowledged;
//! 4. the same rows, the input offsets and the changelog position in one
//!    RocksDB write batch.
//!
//! Runs on its own thread (librdkafka's blocking waits never reach an async
//! worker); a task has at most one batch in flight, so batches commit in
//! order.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::task::{TaskEnv, TaskError};
use crate::store::{changelog, Batch, StateStore};

/// Command record header: the task's emission sequence (8 bytes, big-endian).
pub const SEQ_HEADER: &str = "geoclock-seq";

/// Route record header: the stage-one task (partition) that wrote it
/// (4 bytes, big-endian), stage two's merge lane for it.
pub const SOURCE_HEADER: &str = "geoclock-source";

pub(super) fn source_of(headers: &rdkafka::message::BorrowedHeaders) -> Option<i32> {
    use rdkafka::message::Headers;
    let h = headers.iter().find(|h| h.key == SOURCE_HEADER)?;
    Some(i32::from_be_bytes(h.value?.try_into().ok()?))
}

/// A batch's replay plan, carried by its changelog begin marker: every
/// merge lane's end after the batch ([`super::merge::Merger::handed_out`]), and the lane
/// of each record in order (run-length encoded; lanes numbered as
/// [`super::merge::Merger::lanes`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    pub ends: Vec<i64>,
    pub order: Vec<(u32, u32)>,
}

impl Plan {
    /// The lane of the next record to replay, consuming it.
    pub(super) fn next_lane(&mut self) -> Option<usize> {
        let first = self.order.first_mut()?;
        let input = first.0 as usize;
        first.1 -= 1;
        if first.1 == 0 {
            self.order.remove(0);
        }
        Some(input)
    }

    pub(super) fn unnext(&mut self, lane: usize) {
        match self.order.first_mut() {
            Some(first) if first.0 as usize == lane => first.1 += 1,
            _ => self.order.insert(0, (lane as u32, 1)),
        }
    }
}

/// An output record.
pub(super) struct OutRecord {
    pub(super) topic: String,
    pub(super) key: Vec<u8>,
    pub(super) value: Vec<u8>,
    /// Record time; with it, the emission sequence goes in [`SEQ_HEADER`].
    pub(super) time: Option<i64>,
    pub(super) seq: u64,
    /// `None`: by key.
    pub(super) partition: Option<i32>,
    /// Goes in [`SOURCE_HEADER`].
    pub(super) source: Option<i32>,
}

impl OutRecord {
    pub(super) fn new(topic: String, key: Vec<u8>, value: Vec<u8>) -> OutRecord {
        OutRecord { topic, key, value, time: None, seq: 0, partition: None, source: None }
    }
}

/// Produces one output record (its record time and emission sequence, when
/// it has them, as Kafka Streams stamps outputs with their input's time).
pub(super) async fn send(producer: &FutureProducer, r: &OutRecord, timeout: Duration) -> Result<(), TaskError> {
    let mut record = FutureRecord::to(&r.topic).key(&r.key).payload(&r.value);
    if let Some(q) = r.partition {
        record = record.partition(q);
    }
    let mut headers = OwnedHeaders::new();
    let seq_bytes = r.seq.to_be_bytes();
    if let Some(ts) = r.time {
        headers = headers.insert(Header { key: SEQ_HEADER, value: Some(&seq_bytes[..]) });
        record = record.timestamp(ts);
    }
    let source_bytes = r.source.map(i32::to_be_bytes);
    if let Some(b) = &source_bytes {
        headers = headers.insert(Header { key: SOURCE_HEADER, value: Some(&b[..]) });
    }
    if r.time.is_some() || r.source.is_some() {
        record = record.headers(headers);
    }
    producer
        .send(record, timeout)
        .await
        .map_err(|(e, _)| TaskError::Produce { topic: r.topic.clone(), error: e.to_string() })?;
    Ok(())
}

/// Whether a task has been its changelog partition's only writer since its
/// claim: each of its produces must land right after the previous one. A
/// record of anyone else in between (a newer owner's claim, a zombie's late
/// batch) ends that; then a task that thought itself the owner may have had
/// writes fenced off, so its local state is not trusted after it stops,
/// even cleanly (a broker may revoke an evicted member's partitions
/// without reporting them lost).
#[derive(Debug)]
pub(super) struct SoleWriter {
    /// The offset the next record should get; `i64::MIN` once broken.
    next: AtomicI64,
}

impl SoleWriter {
    /// After a claim at offset `claim`.
    pub(super) fn new(claim: i64) -> SoleWriter {
        SoleWriter { next: AtomicI64::new(claim + 1) }
    }

    /// `count` records were acknowledged, the last one just before `end`.
    fn wrote(&self, count: usize, end: Option<i64>) {
        let Some(end) = end else { return };
        let expected = self.next.load(Ordering::SeqCst);
        let next = match expected {
            i64::MIN => i64::MIN,
            e if e + count as i64 == end => end,
            _ => i64::MIN,
        };
        self.next.store(next, Ordering::SeqCst);
    }

    pub(super) fn sole(&self) -> bool {
        self.next.load(Ordering::SeqCst) != i64::MIN
    }
}

/// One batch's writes, in the order of the commit protocol.
pub(super) struct CommitJob {
    /// How many of `out` are commands.
    pub(super) commands: usize,
    /// The task's name.
    pub(super) env_name: String,
    /// Stage one's progress records, sent after `out` is acknowledged.
    pub(super) progress: Vec<OutRecord>,
    pub(super) begin: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    pub(super) out: Vec<OutRecord>,
    pub(super) records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    pub(super) batch: Batch,
    pub(super) producer: FutureProducer,
    pub(super) changelog: String,
    pub(super) owner: i64,
    pub(super) sole: std::sync::Arc<SoleWriter>,
    pub(super) p: i32,
    pub(super) env: TaskEnv,
    pub(super) started: Instant,
}

impl CommitJob {
    pub(super) fn run(mut self) -> Result<(), TaskError> {
        let (producer, timeout, changelog, p) = (&self.producer, self.env.limits.timeout, &self.changelog, self.p);
        let commands = self.commands;
        let name = &self.env_name;
        let owner = Some(self.owner);
        let (begin, out, records, progress) = (&self.begin, &self.out, &self.records, &self.progress);
        let sole = &self.sole;
        let next = self.env.runtime.block_on(async move {
            // 1. The plan: from here on a crash re-processes this batch in
            //    exactly this order, so whatever part of it reached the
            //    broker is re-produced identically.
            sole.wrote(begin.len(), changelog::produce_as(producer, changelog, p, begin, owner, timeout).await?);
            // 2. Commands: a changelog batch that restore would apply must
            //    never exist without its commands on the broker.
            for d in futures::future::join_all(out.iter().map(|r| send(producer, r, timeout))).await {
                d?;
            }
            for d in futures::future::join_all(progress.iter().map(|r| send(producer, r, timeout))).await {
                d?;
            }
            super::fault::commands_acknowledged(name, commands);
            // 3. The state writes and the offsets markers that complete it.
            let next = changelog::produce_as(producer, changelog, p, records, owner, timeout).await?;
            sole.wrote(records.len(), next);
            Ok::<_, TaskError>(next)
        })?;
        let produced = self.started.elapsed();
        if let Some(next) = next {
            self.batch.offset(&self.changelog, self.p, next);
        }
        // 4. State, input offsets and changelog position, atomically.
        self.env.store.commit(&self.batch)?;
        tracing::debug!(
            partition = self.p,
            records = self.out.len(),
            rows = self.records.len(),
            produce_ms = produced.as_millis() as u64,
            total_ms = self.started.elapsed().as_millis() as u64,
            "batch committed"
        );
        self.env.metrics.batches.inc();
        self.env.metrics.committed();
        self.env.metrics.commit_seconds.observe(self.started.elapsed().as_secs_f64());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::SoleWriter;

    #[test]
    fn a_foreign_record_between_two_produces_ends_sole_writing() {
        let w = SoleWriter::new(10);
        w.wrote(1, Some(12));
        w.wrote(3, Some(15));
        assert!(w.sole());
        w.wrote(1, Some(17));
        assert!(!w.sole(), "offset 15 was someone else's");
        w.wrote(1, Some(18));
        assert!(!w.sole(), "once broken, for good");
    }
}
