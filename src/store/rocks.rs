//! RocksDB implementation of [`StateStore`].
//!
//! Memory stays bounded as state grows: every column family shares one LRU
//! block cache, and memtables are charged to one write-buffer manager whose
//! budget is taken from that cache. Offsets live in the `__meta` column
//! family and are written in the same write batch as the state they
//! account for. With `wal: false` (the default) durability comes from the
//! changelog: column families flush atomically together, so after a crash
//! the database is at some earlier consistent point (state and offsets
//! agree) and the processor re-processes from there.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, Options, WriteBatch, WriteBufferManager, WriteOptions, DB,
};

use super::{Batch, Rows, StateStore, StoreError, StoreName};

pub const META: &str = "__meta";

/// Sizing for the whole database (all stores together).
#[derive(Debug, Clone)]
pub struct RocksConfig {
    pub block_cache_bytes: usize,
    pub write_buffer_bytes: usize,
    pub wal: bool,
}

impl Default for RocksConfig {
    fn default() -> Self {
        RocksConfig { block_cache_bytes: 256 << 20, write_buffer_bytes: 64 << 20, wal: false }
    }
}

/// Memtables a column family may hold (one active, the rest flushing).
const MEMTABLES_PER_FAMILY: i32 = 6;

pub struct RocksStore {
    db: DB,
    stores: Vec<StoreName>,
    write_opts: WriteOptions,
    _cache: Arc<Cache>,
}

/// The first key after every key starting with a UTF-8 `prefix` (UTF-8
/// never holds the byte 0xff, so the last byte can always be bumped).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    match end.last_mut() {
        Some(last) => *last += 1,
        None => end.push(0xff),
    }
    end
}

fn offset_key(topic: &str, partition: i32) -> Vec<u8> {
    format!("offset/{topic}/{partition}").into_bytes()
}

impl RocksStore {
    /// Opens (creating if needed) a database with one column family per store.
    pub fn open(path: &Path, stores: &[StoreName], config: &RocksConfig) -> Result<RocksStore, StoreError> {
        let cache = Arc::new(Cache::new_lru_cache(config.block_cache_bytes));
        let wbm =
            WriteBufferManager::new_write_buffer_manager_with_cache(config.write_buffer_bytes, false, (*cache).clone());
        let cf_opts = || {
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&cache);
            table.set_bloom_filter(10.0, false);
            table.set_cache_index_and_filter_blocks(true);
            let mut o = Options::default();
            o.set_block_based_table_factory(&table);
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            // The write-buffer manager bounds memtable memory; the count
            // only decides when writes stop for a flush. Two (the default)
            // stopped restores every few hundred ms while an atomic flush of
            // every family ran (RocksDB's LOG: "Stopping writes because we
            // have 2 immutable memtables").
            o.set_max_write_buffer_number(MEMTABLES_PER_FAMILY);
            o
        };
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_atomic_flush(true);
        db_opts.set_write_buffer_manager(&wbm);
        // A flush and a compaction at once (the default, 2, shares them).
        db_opts.set_max_background_jobs(4);
        let cfs = stores.iter().chain([&META]).map(|name| ColumnFamilyDescriptor::new(*name, cf_opts()));
        let db = DB::open_cf_descriptors(&db_opts, path, cfs)?;
        let mut write_opts = WriteOptions::default();
        write_opts.disable_wal(!config.wal);
        Ok(RocksStore { db, stores: stores.to_vec(), write_opts, _cache: cache })
    }

    fn cf(&self, store: &str) -> Result<&rocksdb::ColumnFamily, StoreError> {
        if store != META && !self.stores.contains(&store) {
            return Err(StoreError::UnknownStore(store.to_string()));
        }
        self.db.cf_handle(store).ok_or_else(|| StoreError::UnknownStore(store.to_string()))
    }

    /// Writes memtables to disk (all column families together).
    pub fn flush(&self) -> Result<(), StoreError> {
        let cfs: Vec<&rocksdb::ColumnFamily> =
            self.stores.iter().chain([&META]).filter_map(|s| self.db.cf_handle(s)).collect();
        self.db.flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())?;
        Ok(())
    }

    /// Approximate memory held by memtables and the block cache, in bytes.
    pub fn memory_bytes(&self) -> u64 {
        let prop = |name: &str| self.db.property_int_value(name).ok().flatten().unwrap_or(0);
        prop("rocksdb.cur-size-all-mem-tables") + prop("rocksdb.block-cache-usage")
    }
}

impl StateStore for RocksStore {
    fn get(&self, store: StoreName, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(store)?, key)?)
    }

    fn scan_prefix(&self, store: StoreName, prefix: &[u8]) -> Result<Rows, StoreError> {
        let cf = self.cf(store)?;
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, rocksdb::IteratorMode::From(prefix, rocksdb::Direction::Forward)) {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut wb = WriteBatch::default();
        for (store, key, value) in &batch.writes {
            let cf = self.cf(store)?;
            match value {
                Some(v) => wb.put_cf(cf, key, v),
                None => wb.delete_cf(cf, key),
            }
        }
        let meta = self.cf(META)?;
        for (topic, partition, next) in &batch.offsets {
            wb.put_cf(meta, offset_key(topic, *partition), next.to_be_bytes());
        }
        self.db.write_opt(wb, &self.write_opts)?;
        Ok(())
    }

    fn forget(&self, store: StoreName, prefix: &str, offsets_prefix: &str) -> Result<(), StoreError> {
        let mut wb = WriteBatch::default();
        let offsets = format!("offset/{offsets_prefix}").into_bytes();
        for (cf, prefix) in [(self.cf(store)?, prefix.as_bytes()), (self.cf(META)?, offsets.as_slice())] {
            wb.delete_range_cf(cf, prefix, prefix_end(prefix).as_slice());
        }
        self.db.write_opt(wb, &self.write_opts)?;
        Ok(())
    }

    fn offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, StoreError> {
        let key = offset_key(topic, partition);
        match self.db.get_cf(self.cf(META)?, &key)? {
            None => Ok(None),
            Some(v) => {
                let bytes: [u8; 8] = v.as_slice().try_into().map_err(|_| StoreError::CorruptOffset {
                    key: String::from_utf8_lossy(&key).into(),
                    reason: format!("{} bytes, expected 8", v.len()),
                })?;
                Ok(Some(i64::from_be_bytes(bytes)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("geoclock-rocks-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn batches_are_atomic_and_offsets_survive_reopen() {
        let dir = temp("reopen");
        let cfg = RocksConfig { wal: true, ..RocksConfig::default() };
        {
            let s = RocksStore::open(&dir, &["a", "b"], &cfg).unwrap();
            let mut b = Batch::default();
            b.put("a", b"k1".to_vec(), b"v1".to_vec());
            b.put("b", b"k1".to_vec(), b"w1".to_vec());
            b.offset("pings", 3, 42);
            s.commit(&b).unwrap();
            let mut b = Batch::default();
            b.delete("a", b"k1".to_vec());
            b.put("nope", b"x".to_vec(), b"y".to_vec()); // unknown store: whole batch refused
            b.offset("pings", 3, 50);
            assert!(matches!(s.commit(&b), Err(StoreError::UnknownStore(_))));
            assert_eq!(s.get("a", b"k1").unwrap(), Some(b"v1".to_vec()));
            assert_eq!(s.offset("pings", 3).unwrap(), Some(42));
        }
        let s = RocksStore::open(&dir, &["a", "b"], &cfg).unwrap();
        assert_eq!(s.get("b", b"k1").unwrap(), Some(b"w1".to_vec()));
        assert_eq!(s.offset("pings", 3).unwrap(), Some(42));
        assert_eq!(s.offset("pings", 4).unwrap(), None);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn forget_drops_one_prefix_of_rows_and_offsets() {
        let dir = temp("forget");
        let s = RocksStore::open(&dir, &["a"], &RocksConfig::default()).unwrap();
        let mut b = Batch::default();
        for k in ["00001/x", "00001/y", "00002/x", "00001", "000010/x"] {
            b.put("a", k.as_bytes().to_vec(), b"v".to_vec());
        }
        b.offset("00001/pings", 1, 7);
        b.offset("00002/pings", 1, 8);
        s.commit(&b).unwrap();
        s.forget("a", "00001/", "00001/").unwrap();
        let keys: Vec<Vec<u8>> = s.scan_prefix("a", b"").unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, [&b"00001"[..], b"000010/x", b"00002/x"].map(<[u8]>::to_vec).to_vec());
        assert_eq!(s.offset("00001/pings", 1).unwrap(), None);
        assert_eq!(s.offset("00002/pings", 1).unwrap(), Some(8));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn without_wal_a_flushed_state_survives_reopen() {
        let dir = temp("nowal");
        {
            let s = RocksStore::open(&dir, &["a"], &RocksConfig::default()).unwrap();
            let mut b = Batch::default();
            for i in 0..1000u32 {
                b.put("a", format!("acme/{i:05}").into_bytes(), i.to_be_bytes().to_vec());
            }
            b.offset("t", 0, 1000);
            s.commit(&b).unwrap();
            s.flush().unwrap();
        }
        let s = RocksStore::open(&dir, &["a"], &RocksConfig::default()).unwrap();
        assert_eq!(s.offset("t", 0).unwrap(), Some(1000));
        let rows = s.scan_prefix("a", b"acme/001").unwrap();
        assert_eq!(rows.len(), 100);
        assert_eq!(rows[0].0, b"acme/00100".to_vec());
        std::fs::remove_dir_all(&dir).ok();
    }
}
