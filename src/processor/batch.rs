//! What one batch of a task is made of, as the core ([`super::core`])
//! assembles it and the committer ([`super::commit`]) writes it: the
//! output records and their headers, the replay plan the changelog begin
//! marker carries, the state rows, and what the metrics learn of it.
//!
//! Invariant: a [`BatchOut`]'s parts are written in the order of its
//! fields (begin marker, `out`, `progress`, `records`, then `batch` to the
//! local store), each acknowledged before the next (the argument is in
//! [`crate::store`]).

use crate::store::Batch;

/// Command record header: the task's emission sequence (8 bytes, big-endian).
pub const SEQ_HEADER: &str = "geoclock-seq";

/// Route record header: the stage-one task (partition) that wrote it
/// (4 bytes, big-endian), stage two's merge lane for it.
pub const SOURCE_HEADER: &str = "geoclock-source";

/// A batch's replay plan, carried by its changelog begin marker: every
/// merge lane's end after the batch ([`Merger::handed_out`]), and the lane
/// of each record in order (run-length encoded; lanes numbered as
/// [`Merger::lanes`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    pub ends: Vec<i64>,
    pub order: Vec<(u32, u32)>,
}

impl Plan {
    /// The lane of the next record to replay.
    pub(super) fn front(&self) -> Option<usize> {
        self.order.first().map(|o| o.0 as usize)
    }

    /// That record was replayed.
    pub(super) fn advance(&mut self) {
        if let Some(first) = self.order.first_mut() {
            first.1 -= 1;
            if first.1 == 0 {
                self.order.remove(0);
            }
        }
    }
}

/// An output record.
#[derive(Debug, Clone, PartialEq)]
pub struct OutRecord {
    pub topic: String,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Record time; with it, the emission sequence goes in [`SEQ_HEADER`].
    pub time: Option<i64>,
    pub seq: u64,
    /// `None`: by key.
    pub partition: Option<i32>,
    /// Goes in [`SOURCE_HEADER`].
    pub source: Option<i32>,
}

impl OutRecord {
    pub fn new(topic: String, key: Vec<u8>, value: Vec<u8>) -> OutRecord {
        OutRecord { topic, key, value, time: None, seq: 0, partition: None, source: None }
    }
}

/// A command of a batch, for the metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    pub tenant: String,
    pub kind: &'static str,
    /// Record time of the input that decided it (ms).
    pub record_ms: i64,
    /// A clock change: the event time of the ping that decided it (ms).
    pub clock_ms: Option<i64>,
    /// An arrival (On Site in by GPS).
    pub arrival: bool,
}

/// One batch, assembled: what the commit protocol writes, in its order.
#[derive(Debug, Default)]
pub struct BatchOut {
    /// The changelog begin marker carrying the [`Plan`].
    pub begin: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Commands, routes and dead letters.
    pub out: Vec<OutRecord>,
    /// Stage one's progress records, sent once `out` is acknowledged.
    pub progress: Vec<OutRecord>,
    /// The state rows and offsets markers for the changelog.
    pub records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// The same rows and the input positions, for the local store.
    pub batch: Batch,
    pub commands: usize,
    /// Each command's tenant, kind and times.
    pub decided: Vec<Decided>,
    pub dead_letters: usize,
    /// Records processed per input topic (catalogue suffix).
    pub counted: Vec<(&'static str, u64)>,
    /// The batch held more than stage one's progress records.
    pub data: bool,
    /// Appointments held in state after the batch (every tenant).
    pub appointments: usize,
    /// The state's entries by kind after the batch (every tenant): each is
    /// bounded by retention ([`crate::engine::retention`]).
    pub sizes: [(&'static str, usize); 4],
}
