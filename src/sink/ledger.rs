//! The sink's durable memory: what it has done per command id, and the
//! vendor-side references it must remember (geomark ids, TrackMe links).
//!
//! RocksDB with its write-ahead log on; every write that records a step
//! towards an effect is a synchronous write (fsync) when `sync` is set, so
//! a record survives a machine crash, not only a process crash.
//!
//! The protocol every executor follows, per command id:
//! 1. [`Step::Done`] recorded → never act again (a re-delivered command is a
//!    duplicate; its result is re-published if it was not yet).
//! 2. Before the call that causes the effect, record [`Step::Intent`].
//! 3. After the vendor confirms, record [`Step::Done`] with the result.
//!
//! A crash between 2 and 3 leaves an intent: on redelivery the executor
//! asks the vendor whether the effect exists (ServiceTrade clock events by
//! user/appointment/activity/time, Azuga geomarks by name) and records it
//! as done instead of acting again. Where the vendor cannot be asked (an
//! SMTP delivery) the executor re-sends with the same `Message-ID`, the
//! only handle SMTP gives a receiver to drop it.

use std::path::Path;

use rocksdb::{Options, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};

use crate::kafka::records::SinkResult;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("sink ledger at {path}: {message}")]
    Open { path: String, message: String },
    #[error("sink ledger: {0}")]
    Io(String),
    #[error("sink ledger: corrupt entry {key}: {message}")]
    Corrupt { key: String, message: String },
}

/// Where a command stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// About to act (or acting); `calls` made so far.
    Intent { calls: u32 },
    /// Decided. `reported` once the result event is acknowledged.
    Done { result: SinkResult, reported: bool },
}

pub struct Ledger {
    db: DB,
    write: WriteOptions,
}

fn command_key(tenant: &str, id: &str) -> Vec<u8> {
    format!("c/{tenant}/{id}").into_bytes()
}

fn extra_key(tenant: &str, name: &str) -> Vec<u8> {
    format!("x/{tenant}/{name}").into_bytes()
}

impl Ledger {
    pub fn open(path: &Path, sync: bool) -> Result<Ledger, LedgerError> {
        let mut o = Options::default();
        o.create_if_missing(true);
        o.set_keep_log_file_num(4);
        let db = DB::open(&o, path)
            .map_err(|e| LedgerError::Open { path: path.display().to_string(), message: e.to_string() })?;
        let mut write = WriteOptions::default();
        write.set_sync(sync);
        Ok(Ledger { db, write })
    }

    fn get_json<T: for<'de> Deserialize<'de>>(&self, key: &[u8]) -> Result<Option<T>, LedgerError> {
        let Some(bytes) = self.db.get(key).map_err(|e| LedgerError::Io(e.to_string()))? else { return Ok(None) };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| LedgerError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            message: e.to_string(),
        })
    }

    pub fn step(&self, tenant: &str, id: &str) -> Result<Option<Step>, LedgerError> {
        self.get_json(&command_key(tenant, id))
    }

    /// Records several steps (and extras) atomically, in one write.
    pub fn record(
        &self,
        steps: &[(&str, &str, Step)],
        extras: &[(&str, &str, Option<serde_json::Value>)],
    ) -> Result<(), LedgerError> {
        let mut b = WriteBatch::default();
        for (tenant, id, step) in steps {
            let v = serde_json::to_vec(step).map_err(|e| LedgerError::Io(e.to_string()))?;
            b.put(command_key(tenant, id), v);
        }
        for (tenant, name, value) in extras {
            match value {
                Some(v) => {
                    b.put(extra_key(tenant, name), serde_json::to_vec(v).map_err(|e| LedgerError::Io(e.to_string()))?)
                }
                None => b.delete(extra_key(tenant, name)),
            }
        }
        self.db.write_opt(b, &self.write).map_err(|e| LedgerError::Io(e.to_string()))
    }

    pub fn extra(&self, tenant: &str, name: &str) -> Result<Option<serde_json::Value>, LedgerError> {
        self.get_json(&extra_key(tenant, name))
    }

    /// How many of `tenant`'s extras under `prefix` satisfy `keep`.
    pub fn count_extras(
        &self,
        tenant: &str,
        prefix: &str,
        keep: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<usize, LedgerError> {
        let start = extra_key(tenant, prefix);
        let mut n = 0;
        for item in self.db.prefix_iterator(&start) {
            let (k, v) = item.map_err(|e| LedgerError::Io(e.to_string()))?;
            if !k.starts_with(&start) {
                break;
            }
            if serde_json::from_slice::<serde_json::Value>(&v).is_ok_and(|v| keep(&v)) {
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::records::Outcome;
    use crate::model::Ts;

    fn result() -> SinkResult {
        SinkResult {
            command_id: "c1".into(),
            appointment: "7001".into(),
            kind: "clock".into(),
            sink: "clock".into(),
            outcome: Outcome::Done,
            reason: String::new(),
            remote_ref: Some("42".into()),
            attempts: 1,
            executed_at: Ts(1),
            command_time: Ts(0),
        }
    }

    #[test]
    fn steps_and_extras_survive_reopen() {
        let dir = std::env::temp_dir().join(format!("geoclock-ledger-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let l = Ledger::open(&dir, true).unwrap();
            assert_eq!(l.step("acme", "c1").unwrap(), None);
            l.record(&[("acme", "c1", Step::Intent { calls: 0 })], &[]).unwrap();
            l.record(
                &[("acme", "c1", Step::Done { result: result(), reported: false })],
                &[("acme", "fence/7001", Some(serde_json::json!({"id": 5})))],
            )
            .unwrap();
        }
        let l = Ledger::open(&dir, true).unwrap();
        assert_eq!(l.step("acme", "c1").unwrap(), Some(Step::Done { result: result(), reported: false }));
        assert_eq!(l.step("other", "c1").unwrap(), None, "tenants are apart");
        assert_eq!(l.extra("acme", "fence/7001").unwrap(), Some(serde_json::json!({"id": 5})));
        l.record(&[], &[("acme", "fence/7001", None)]).unwrap();
        assert_eq!(l.extra("acme", "fence/7001").unwrap(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
