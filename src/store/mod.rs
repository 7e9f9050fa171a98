//! State stores: RocksDB on local disk, one column family per store, each
//! backed by a compacted changelog topic.
//!
//! Commit protocol (what the processor relies on; the task side is in
//! `processor::task` and `processor::commit`):
//! 1. For an input batch, the processor first produces the batch's begin
//!    marker to the changelog, carrying its replay plan (the order its input
//!    records were processed in, and where every input ends), and waits for
//!    the acknowledgement.
//! 2. It produces the batch's commands and dead letters and waits for the
//!    acknowledgements.
//! 3. It produces the batch's changelog writes, then an offsets marker per
//!    input carrying the input offsets, and waits for the acknowledgements.
//! 4. Then it commits one [`Batch`] — the same writes plus the input offsets
//!    and the changelog position — as ONE RocksDB write batch, so state and
//!    offsets are never seen apart.
//! 0. On start it claims the changelog partition ([`changelog::claim`]):
//!    the claim's offset is its owner epoch, stamped on every record it
//!    produces in 1 and 3.
//! 5. On start, after the claim, it first restores from the changelog
//!    whatever the local state lacks ([`changelog::restore`]: writes are
//!    applied only once an offsets marker follows them), then resumes input
//!    from the offsets stored with the state, never from the consumer
//!    group's committed offsets.
//!
//! Why no crash point loses or doubles an effect:
//! - before 1 is acknowledged: nothing of the batch reached the broker; it is
//!   processed again from the same offsets;
//! - after 1, before 3 completes: the changelog ends with a begin marker and
//!   no offsets marker; restore applies nothing of the batch and hands back
//!   its plan, and the batch is re-processed in exactly the recorded order
//!   (the engine is deterministic), so every command it had produced is
//!   produced again with the same id and the same content — the sinks drop
//!   the second copy by id — and none is missing;
//! - after 3, before 4: the changelog holds the whole batch; restore applies
//!   it and input resumes after it (local RocksDB, whose WAL is off, may lag
//!   the changelog, never lead it);
//! - after 4: done.
//! - a zombie (a previous owner still running after losing the partition)
//!   writing at any of these points: its commands are the ones the new
//!   owner produces too (same input from the same restored state, same
//!   ids), and its changelog records after the new owner's claim carry an
//!   older epoch, so no restore applies them; it may have committed such a
//!   batch to its own RocksDB (4), which is why local state not left by a
//!   clean stop is forgotten and restored from the changelog.
//!
//! Under compaction the latest begin and offsets markers and each key's
//! latest write survive in order, so the restored state is the state at the
//! latest offsets marker: writes of a cut batch that precede later markers
//! were re-written with the same values by the exact re-processing.
//!
//! Claims survive compaction. Fencing needs, for every record of an older
//! epoch written after a claim, a record of the claim's epoch (or a newer
//! one) before it in the restored log; the claim itself is that record.
//! Were claims one compacted key, a later claim would erase an earlier one,
//! and with it the only thing that fenced a zombie's records written
//! between the two (the owner's own records in that stretch may be
//! overwritten by later ones of the same keys): a full restore from then on
//! (a new instance, the report replica) would apply them. So each claim has
//! a key of its own ([`changelog::claim_key`]), which no later record
//! overwrites. They stay bounded: a claim is tombstoned
//! ([`changelog::retire_claims`]) only by a task whose restores saw the
//! whole stretch from it to the next claim and found no record of an older
//! epoch there. Records are only ever appended after the latest claim, and
//! compaction only removes records, so that stretch never gains one later;
//! with the claim gone, nothing in the stretch needs fencing, and records
//! after the next claim are fenced by that one (kept, or itself retired by
//! the same rule). A restore that meets a newer epoch in a record's header
//! before (or without) its claim treats it as the claim: writes an older
//! owner left unfinished are dropped there. So only the latest claim and
//! claims that still guard a zombie's surviving records are kept.
//!
//! The [`StateStore`] trait is the boundary; [`rocks::RocksStore`] is the
//! implementation, [`memory::MemoryStore`] the in-memory one tests (and the
//! task core's) use. [`layout`] says which rows and positions belong to
//! which task.

pub mod changelog;
pub mod layout;
pub mod memory;
pub mod rocks;

/// A column family / changelog pair, by name.
pub type StoreName = &'static str;

/// Key/value pairs in key order.
pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// Where one input partition is: the next offset to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InputOffset<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub next: i64,
}

/// Writes to apply atomically, with the input offsets they account for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// `(store, key, Some(value) | None = delete)`, applied in order.
    pub writes: Vec<(StoreName, Vec<u8>, Option<Vec<u8>>)>,
    /// `(topic, partition, next offset)`.
    pub offsets: Vec<(String, i32, i64)>,
}

impl Batch {
    pub fn put(&mut self, store: StoreName, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.writes.push((store, key.into(), Some(value.into())));
    }
    pub fn delete(&mut self, store: StoreName, key: impl Into<Vec<u8>>) {
        self.writes.push((store, key.into(), None));
    }
    pub fn offset(&mut self, topic: &str, partition: i32, next: i64) {
        self.offsets.push((topic.to_string(), partition, next));
    }
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.offsets.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("unknown store {0:?} (not opened)")]
    UnknownStore(String),
    #[error("corrupt offset record for {key}: {reason}")]
    CorruptOffset { key: String, reason: String },
    #[error("changelog: {0}")]
    Changelog(String),
}

/// The processor's view of its local state.
pub trait StateStore: Send + Sync {
    fn get(&self, store: StoreName, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every `(key, value)` of a store whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, store: StoreName, prefix: &[u8]) -> Result<Rows, StoreError>;
    /// Applies a batch atomically (all writes and offsets, or none).
    fn commit(&self, batch: &Batch) -> Result<(), StoreError>;
    /// The next input offset stored for a topic partition.
    fn offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, StoreError>;
    /// Atomically deletes every row of `store` whose key starts with the
    /// text `prefix` and every stored offset whose topic name starts with
    /// `offsets_prefix`.
    fn forget(&self, store: StoreName, prefix: &str, offsets_prefix: &str) -> Result<(), StoreError>;
}
