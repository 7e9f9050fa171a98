//! An in-memory [`StateStore`]: the same contract as
//! [`super::rocks::RocksStore`] (atomic batches, offsets beside the rows,
//! prefix scans in key order, `forget`), for tests and pure runs of the
//! processor's task core.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Batch, Rows, StateStore, StoreError, StoreName};

#[derive(Debug, Default)]
struct Inner {
    rows: BTreeMap<(String, Vec<u8>), Vec<u8>>,
    offsets: BTreeMap<(String, i32), i64>,
}

/// Rows and offsets in ordered maps behind one lock.
#[derive(Debug)]
pub struct MemoryStore {
    stores: Vec<StoreName>,
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// A store holding the column families `stores`.
    pub fn new(stores: &[StoreName]) -> MemoryStore {
        MemoryStore { stores: stores.to_vec(), inner: Mutex::default() }
    }

    fn check(&self, store: &str) -> Result<(), StoreError> {
        match self.stores.contains(&store) {
            true => Ok(()),
            false => Err(StoreError::UnknownStore(store.to_string())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rows held in `store`.
    pub fn len(&self, store: StoreName) -> usize {
        self.lock().rows.keys().filter(|(s, _)| s == store).count()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().rows.is_empty()
    }
}

impl StateStore for MemoryStore {
    fn get(&self, store: StoreName, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.check(store)?;
        Ok(self.lock().rows.get(&(store.to_string(), key.to_vec())).cloned())
    }

    fn scan_prefix(&self, store: StoreName, prefix: &[u8]) -> Result<Rows, StoreError> {
        self.check(store)?;
        let inner = self.lock();
        let from = (store.to_string(), prefix.to_vec());
        Ok(inner
            .rows
            .range(from..)
            .take_while(|((s, k), _)| s == store && k.starts_with(prefix))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        for (store, _, _) in &batch.writes {
            self.check(store)?;
        }
        let mut inner = self.lock();
        for (store, key, value) in &batch.writes {
            let k = (store.to_string(), key.clone());
            match value {
                Some(v) => inner.rows.insert(k, v.clone()),
                None => inner.rows.remove(&k),
            };
        }
        for (topic, partition, next) in &batch.offsets {
            inner.offsets.insert((topic.clone(), *partition), *next);
        }
        Ok(())
    }

    fn offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, StoreError> {
        Ok(self.lock().offsets.get(&(topic.to_string(), partition)).copied())
    }

    fn forget(&self, store: StoreName, prefix: &str, offsets_prefix: &str) -> Result<(), StoreError> {
        self.check(store)?;
        let mut inner = self.lock();
        inner.rows.retain(|(s, k), _| s != store || !k.starts_with(prefix.as_bytes()));
        inner.offsets.retain(|(t, _), _| !t.starts_with(offsets_prefix));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_the_rocks_store() {
        let s = MemoryStore::new(&["a", "b"]);
        let mut b = Batch::default();
        for k in ["00001/x", "00001/y", "00002/x", "00001", "000010/x"] {
            b.put("a", k.as_bytes().to_vec(), b"v".to_vec());
        }
        b.put("b", b"00001/x".to_vec(), b"w".to_vec());
        b.offset("00001/pings", 1, 7);
        b.offset("00002/pings", 1, 8);
        s.commit(&b).unwrap();
        let mut bad = Batch::default();
        bad.put("a", b"z".to_vec(), b"v".to_vec());
        bad.put("nope", b"z".to_vec(), b"v".to_vec());
        assert!(matches!(s.commit(&bad), Err(StoreError::UnknownStore(_))));
        assert_eq!(s.get("a", b"z").unwrap(), None, "a refused batch writes nothing");
        let keys = |p: &[u8]| s.scan_prefix("a", p).unwrap().into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(keys(b"00001/"), vec![b"00001/x".to_vec(), b"00001/y".to_vec()]);
        s.forget("a", "00001/", "00001/").unwrap();
        assert_eq!(keys(b""), [&b"00001"[..], b"000010/x", b"00002/x"].map(<[u8]>::to_vec).to_vec());
        assert_eq!(s.get("b", b"00001/x").unwrap(), Some(b"w".to_vec()), "other stores untouched");
        assert_eq!(s.offset("00001/pings", 1).unwrap(), None);
        assert_eq!(s.offset("00002/pings", 1).unwrap(), Some(8));
    }
}
