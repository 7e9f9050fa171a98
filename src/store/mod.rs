//! State stores: RocksDB on local disk, one column family per store, each
//! backed by a compacted changelog topic.
//!
//! Commit protocol (what the processor relies on):
//! 1. For an input batch, the processor first produces its commands and the
//!    batch's changelog records (every write, then an offsets marker carrying
//!    the input offsets), and waits until the broker acknowledged them.
//! 2. Then it commits one [`Batch`] — the same writes plus the input offsets
//!    and changelog positions — as ONE RocksDB write batch, so state and
//!    offsets are never seen apart.
//! 3. On start it resumes input from the offsets stored with the state (not
//!    from the consumer group's committed offsets). A partition whose local
//!    state is missing or behind its changelog is first restored from the
//!    changelog ([`changelog::restore`]), which replays writes and offsets
//!    markers in order.
//!
//! A crash before 2 leaves the changelog ahead of local state: restarting
//! from the local offsets re-processes the batch, which (the engine being
//! deterministic) re-produces identical records and commands with identical
//! ids; restoring from the changelog instead resumes after it. Either way no
//! effect is lost, and none is doubled past the sinks' id check.
//!
//! The [`StateStore`] trait is the boundary; [`rocks::RocksStore`] is the
//! implementation (tests may use others).

pub mod changelog;
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
}
