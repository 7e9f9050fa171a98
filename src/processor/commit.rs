//! One batch's writes, in the order of the commit protocol (the argument
//! for each crash point is in [`crate::store`]):
//! 1. the changelog begin marker carrying the batch's replay plan,
//!    acknowledged;
//! 2. its commands, routes and dead letters, acknowledged, then stage one's
//!    progress records (after the routes they vouch for), acknowledged;
//! 3. its state rows and input-offsets markers to the changelog,
//!    acknowledged;
//! 4. the same rows, the input offsets and the changelog position in one
//!    local write batch.
//!
//! Each task has one committer: a long-lived thread ([`Committer`]) that
//! takes one batch at a time from the task's thread. A batch is handed over
//! only once the previous one is committed, so batches commit in order, at
//! most one while the task processes the next. Every wait here is a plain
//! blocking wait on librdkafka's delivery reports ([`Pending`]): no async
//! runtime, no `block_on`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::message::{Header, OwnedHeaders};

use super::batch::{BatchOut, OutRecord, SEQ_HEADER, SOURCE_HEADER};
use super::fault;
use super::metrics::Metrics;
use crate::kafka::produce::Pending;
use crate::store::changelog::{self, Producer};
use crate::store::{StateStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("produce to {topic}: {error}")]
    Produce { topic: String, error: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the committer of task {0} is gone")]
    Gone(String),
}

/// Whether a task has been its changelog partition's only writer since its
/// claim: each of its produces must land right after the previous one. A
/// record of anyone else in between (a newer owner's claim, a zombie's late
/// batch) ends that; then a task that thought itself the owner may have had
/// writes fenced off, so its local state is not trusted after it stops,
/// even cleanly (a broker may revoke an evicted member's partitions
/// without reporting them lost).
#[derive(Debug)]
pub struct SoleWriter {
    /// The offset the next record should get; `i64::MIN` once broken.
    next: AtomicI64,
}

impl SoleWriter {
    /// After a claim at offset `claim`.
    pub fn new(claim: i64) -> SoleWriter {
        SoleWriter { next: AtomicI64::new(claim + 1) }
    }

    /// `count` records were acknowledged, the last one just before `end`.
    pub fn wrote(&self, count: usize, end: Option<i64>) {
        let Some(end) = end else { return };
        let expected = self.next.load(Ordering::SeqCst);
        let next = match expected {
            i64::MIN => i64::MIN,
            e if e + count as i64 == end => end,
            _ => i64::MIN,
        };
        self.next.store(next, Ordering::SeqCst);
    }

    pub fn sole(&self) -> bool {
        self.next.load(Ordering::SeqCst) != i64::MIN
    }
}

/// What a task's committer writes with.
pub struct CommitEnv {
    /// The task's name (logs, fault injection).
    pub name: String,
    pub producer: Arc<Producer>,
    pub changelog: String,
    pub partition: i32,
    /// The task's owner epoch.
    pub owner: i64,
    pub sole: Arc<SoleWriter>,
    pub store: Arc<dyn StateStore>,
    pub metrics: Arc<Metrics>,
    pub timeout: Duration,
}

/// A task's committer thread.
pub struct Committer {
    jobs: Option<SyncSender<BatchOut>>,
    done: Receiver<Result<(), CommitError>>,
    /// A batch handed over whose outcome was not taken yet.
    in_flight: bool,
    /// That batch held more than stage one's progress records.
    in_flight_data: bool,
    thread: Option<JoinHandle<()>>,
    name: String,
}

impl Committer {
    pub fn spawn(env: CommitEnv) -> std::io::Result<Committer> {
        // A rendezvous: `submit` hands a batch over only when the thread
        // is back waiting for one.
        let (jobs, rx) = mpsc::sync_channel::<BatchOut>(0);
        let (tx, done) = mpsc::channel();
        let name = env.name.clone();
        let thread = std::thread::Builder::new().name(format!("commit-{name}")).spawn(move || {
            for b in rx {
                if tx.send(commit(&env, b)).is_err() {
                    return;
                }
            }
        })?;
        Ok(Committer { jobs: Some(jobs), done, in_flight: false, in_flight_data: false, thread: Some(thread), name })
    }

    /// Hands a batch over, after the previous one is committed (whose
    /// error, if any, is returned instead).
    pub fn submit(&mut self, b: BatchOut) -> Result<(), CommitError> {
        self.wait()?;
        let data = b.data;
        let jobs = self.jobs.as_ref().ok_or_else(|| CommitError::Gone(self.name.clone()))?;
        jobs.send(b).map_err(|_| CommitError::Gone(self.name.clone()))?;
        self.in_flight = true;
        self.in_flight_data = data;
        Ok(())
    }

    /// Waits for the batch in flight, if any; its error is the task's.
    pub fn wait(&mut self) -> Result<(), CommitError> {
        if !self.in_flight {
            return Ok(());
        }
        self.in_flight = false;
        self.done.recv().map_err(|_| CommitError::Gone(self.name.clone()))?
    }

    /// Takes the outcome of the batch in flight if it is done (not waiting).
    pub fn poll(&mut self) -> Result<(), CommitError> {
        if !self.in_flight {
            return Ok(());
        }
        match self.done.try_recv() {
            Ok(r) => {
                self.in_flight = false;
                r
            }
            Err(mpsc::TryRecvError::Empty) => Ok(()),
            Err(mpsc::TryRecvError::Disconnected) => Err(CommitError::Gone(self.name.clone())),
        }
    }

    /// A batch with more than progress records is being committed.
    pub fn busy_with_data(&self) -> bool {
        self.in_flight && self.in_flight_data
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs the protocol for one batch.
fn commit(env: &CommitEnv, b: BatchOut) -> Result<(), CommitError> {
    let started = Instant::now();
    let (producer, changelog, p, owner, timeout) =
        (&*env.producer, &env.changelog, env.partition, env.owner, env.timeout);
    // 1. The plan: from here on a crash re-processes this batch in exactly
    //    this order, so whatever part of it reached the broker is
    //    re-produced identically.
    let next = changelog::produce_as(producer, changelog, p, &b.begin, Some(owner), timeout)?;
    env.sole.wrote(b.begin.len(), next);
    // 2. Commands: a changelog batch that restore would apply must never
    //    exist without its commands on the broker.
    send_all(producer, &b.out, timeout)?;
    send_all(producer, &b.progress, timeout)?;
    fault::commands_acknowledged(&env.name, b.commands);
    // 3. The state writes and the offsets markers that complete it.
    let next = changelog::produce_as(producer, changelog, p, &b.records, Some(owner), timeout)?;
    env.sole.wrote(b.records.len(), next);
    let produced = started.elapsed();
    let mut batch = b.batch;
    if let Some(next) = next {
        batch.offset(changelog, p, next);
    }
    // 4. State, input offsets and changelog position, atomically.
    env.store.commit(&batch)?;
    tracing::debug!(
        task = %env.name,
        records = b.out.len(),
        rows = b.records.len(),
        produce_ms = produced.as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        "batch committed"
    );
    env.metrics.batches.inc();
    env.metrics.committed();
    env.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
    Ok(())
}

/// Sends output records and waits until every one is acknowledged.
pub fn send_all(producer: &Producer, records: &[OutRecord], timeout: Duration) -> Result<(), CommitError> {
    if records.is_empty() {
        return Ok(());
    }
    let pending = enqueue(producer, records, timeout)?;
    let topic = &records[0].topic;
    pending.wait(timeout).map_err(|e| CommitError::Produce { topic: topic.clone(), error: e.to_string() })?;
    Ok(())
}

/// Enqueues output records (each with its record time and emission
/// sequence, when it has them, as Kafka Streams stamps outputs with their
/// input's time); the acknowledgements come to the returned [`Pending`]
/// (dropping it leaves them unheard).
pub fn enqueue(producer: &Producer, records: &[OutRecord], timeout: Duration) -> Result<Pending, CommitError> {
    let mut pending = Pending::default();
    let deadline = Instant::now() + timeout;
    for r in records {
        let mut rec = pending.record(&r.topic).key(&r.key[..]).payload(&r.value[..]);
        if let Some(q) = r.partition {
            rec = rec.partition(q);
        }
        let mut headers = OwnedHeaders::new();
        let seq_bytes = r.seq.to_be_bytes();
        if let Some(ts) = r.time {
            headers = headers.insert(Header { key: SEQ_HEADER, value: Some(&seq_bytes[..]) });
            rec = rec.timestamp(ts);
        }
        let source_bytes = r.source.map(i32::to_be_bytes);
        if let Some(b) = &source_bytes {
            headers = headers.insert(Header { key: SOURCE_HEADER, value: Some(&b[..]) });
        }
        if r.time.is_some() || r.source.is_some() {
            rec = rec.headers(headers);
        }
        pending
            .send(producer, rec, deadline)
            .map_err(|e| CommitError::Produce { topic: r.topic.clone(), error: e.to_string() })?;
    }
    Ok(pending)
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
