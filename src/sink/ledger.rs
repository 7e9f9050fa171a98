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
//!
//! Retention (the ledger stays bounded; nothing the protocol needs is
//! dropped): a background sweep ([`Retention`], a slice of keys at a time)
//! deletes
//! - a [`Step::Done`] that was reported and decided (`executed_at`) more
//!   than [`Retention::keep`] ago (14 days by default: twice Kafka's default
//!   topic retention, so the commands topic no longer holds the command and
//!   it cannot be delivered again; the processor re-uses a command id only
//!   for an appointment revived after its retirement was forgotten, at
//!   least twice its `retention_days` later). Intents and unreported
//!   outcomes are kept;
//! - an extra not written for longer than that, and, when it was written
//!   together with outcomes of an appointment's commands (the geofence
//!   mapping `fence/{appointment}`), not before [`Retention::extra_margin`]
//!   (a day) after the last of that appointment's outcomes is gone: it outlives its appointment's
//!   last command.
//!
//! What the sweep needs beside the entries: `m/{tenant}/{name}`, when an
//! extra was last written and for which appointment; `a/{tenant}/{id}`,
//! when an appointment's last outcome was decided. Entries of older
//! versions without them are dated when the sweep first meets them.
//! Sizes go to the `geoclock_store_entries` gauges ([`crate::telemetry::metrics::store_entries`]).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

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

/// How long decided commands and extras are kept, and the clock the sweep
/// reads (wall time, in ms; tests pass their own).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub keep: Duration,
    /// How much longer an appointment's extras outlive its last outcome.
    pub extra_margin: Duration,
    /// How often a slice of keys is swept.
    pub sweep_every: Duration,
    /// Keys looked at per slice.
    pub slice: usize,
    pub now: fn() -> i64,
}

fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep: Duration::from_secs(14 * 86_400),
            extra_margin: Duration::from_secs(86_400),
            sweep_every: Duration::from_secs(1),
            slice: 20_000,
            now: wall_ms,
        }
    }
}

/// An extra's dates (`m/`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ExtraMeta {
    /// Last written (ms).
    at: i64,
    /// Written with outcomes of this appointment's commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    appointment: Option<String>,
}

struct Shared {
    db: DB,
    write: WriteOptions,
    retention: Retention,
    /// Held by writes and by the sweep's deletes, so that a delete decided
    /// on an old value never removes a newer one.
    lock: Mutex<()>,
    /// The label of this ledger's size gauges.
    label: String,
}

pub struct Ledger {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    sweeper: Option<JoinHandle<()>>,
}

fn command_key(tenant: &str, id: &str) -> Vec<u8> {
    format!("c/{tenant}/{id}").into_bytes()
}

fn extra_key(tenant: &str, name: &str) -> Vec<u8> {
    format!("x/{tenant}/{name}").into_bytes()
}

fn meta_key(tenant: &str, name: &str) -> Vec<u8> {
    format!("m/{tenant}/{name}").into_bytes()
}

fn appointment_key(tenant: &str, appointment: &str) -> Vec<u8> {
    format!("a/{tenant}/{appointment}").into_bytes()
}

impl Ledger {
    pub fn open(path: &Path, sync: bool) -> Result<Ledger, LedgerError> {
        Ledger::open_with(path, sync, Retention::default())
    }

    /// [`Ledger::open`] with its retention spelled out.
    pub fn open_with(path: &Path, sync: bool, retention: Retention) -> Result<Ledger, LedgerError> {
        let mut o = Options::default();
        o.create_if_missing(true);
        o.set_keep_log_file_num(4);
        let db = DB::open(&o, path)
            .map_err(|e| LedgerError::Open { path: path.display().to_string(), message: e.to_string() })?;
        let mut write = WriteOptions::default();
        write.set_sync(sync);
        let label = format!("sink_ledger:{}", path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default());
        let shared = Arc::new(Shared { db, write, retention, lock: Mutex::new(()), label });
        let stop = Arc::new(AtomicBool::new(false));
        let (sh, st) = (shared.clone(), stop.clone());
        let sweeper = std::thread::Builder::new()
            .name("ledger-sweep".into())
            .spawn(move || sweep_forever(&sh, &st))
            .map_err(|e| LedgerError::Io(e.to_string()))?;
        Ok(Ledger { shared, stop, sweeper: Some(sweeper) })
    }

    fn db(&self) -> &DB {
        &self.shared.db
    }

    fn get_json<T: for<'de> Deserialize<'de>>(&self, key: &[u8]) -> Result<Option<T>, LedgerError> {
        let Some(bytes) = self.db().get(key).map_err(|e| LedgerError::Io(e.to_string()))? else { return Ok(None) };
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
        let now = (self.shared.retention.now)();
        let json = |v: &dyn erased::Json| v.bytes().map_err(|e| LedgerError::Io(e.to_string()));
        let mut b = WriteBatch::default();
        // The appointment whose outcomes this write records, if one.
        let mut decided: Option<(&str, String)> = None;
        for (tenant, id, step) in steps {
            b.put(command_key(tenant, id), json(step)?);
            if let Step::Done { result, .. } = step {
                b.put(appointment_key(tenant, &result.appointment), result.executed_at.0.max(now).to_be_bytes());
                decided = Some((tenant, result.appointment.clone()));
            }
        }
        for (tenant, name, value) in extras {
            match value {
                Some(v) => {
                    b.put(extra_key(tenant, name), json(v)?);
                    let appointment = decided.as_ref().filter(|(t, _)| t == tenant).map(|(_, a)| a.clone());
                    b.put(meta_key(tenant, name), json(&ExtraMeta { at: now, appointment })?);
                }
                None => {
                    b.delete(extra_key(tenant, name));
                    b.delete(meta_key(tenant, name));
                }
            }
        }
        let _guard = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.db().write_opt(b, &self.shared.write).map_err(|e| LedgerError::Io(e.to_string()))
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
        for item in self.db().prefix_iterator(&start) {
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
    /// Sweeps every key once now (tests; the background sweep does this a
    /// slice at a time); returns the sizes after it.
    pub fn sweep(&self) -> Result<Sizes, LedgerError> {
        let mut from = Vec::new();
        let mut sizes = Sizes::default();
        loop {
            let (next, s) = sweep_slice(&self.shared, &from)?;
            sizes.add(&s);
            match next {
                Some(k) => from = k,
                None => return Ok(sizes),
            }
        }
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.sweeper.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Entries held, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sizes {
    pub commands: u64,
    pub extras: u64,
    /// Appointments' last outcomes (`a/`; an extra's own dates, `m/`, go
    /// with it and are not counted).
    pub dates: u64,
}

impl Sizes {
    fn add(&mut self, o: &Sizes) {
        self.commands += o.commands;
        self.extras += o.extras;
        self.dates += o.dates;
    }
}

/// Serializing for the ledger: plain data, a step or a JSON value.
mod erased {
    pub trait Json {
        fn bytes(&self) -> serde_json::Result<Vec<u8>>;
    }
    impl<T: serde::Serialize> Json for T {
        fn bytes(&self) -> serde_json::Result<Vec<u8>> {
            serde_json::to_vec(self)
        }
    }
}

/// The background sweep: a slice every `sweep_every`, from where the last
/// one stopped, round and round; the sizes of each full round go to the
/// gauges.
fn sweep_forever(sh: &Shared, stop: &AtomicBool) {
    let mut from = Vec::new();
    let mut round = Sizes::default();
    loop {
        // The first slice waits too: nothing is due at open, and a sweep
        // asked for right after open ([`Ledger::sweep`]) does not race it.
        std::thread::park_timeout(sh.retention.sweep_every);
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match sweep_slice(sh, &from) {
            Ok((next, s)) => {
                round.add(&s);
                match next {
                    Some(k) => from = k,
                    None => {
                        crate::telemetry::metrics::store_entries(&sh.label, "commands", round.commands);
                        crate::telemetry::metrics::store_entries(&sh.label, "extras", round.extras);
                        from.clear();
                        round = Sizes::default();
                    }
                }
            }
            Err(e) => tracing::warn!(ledger = %sh.label, error = %e, "ledger sweep failed; trying again"),
        }
    }
}

/// Looks at up to `slice` keys from `from`, deletes what retention lets go;
/// returns where the next slice starts (`None`: the round is over) and the
/// entries kept.
fn sweep_slice(sh: &Shared, from: &[u8]) -> Result<(Option<Vec<u8>>, Sizes), LedgerError> {
    let io = |e: rocksdb::Error| LedgerError::Io(e.to_string());
    let now = (sh.retention.now)();
    let cutoff = now - sh.retention.keep.as_millis() as i64;
    let mut sizes = Sizes::default();
    let mut doomed: Vec<Vec<u8>> = Vec::new();
    let mut dated: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut next = None;
    let mode = rocksdb::IteratorMode::From(from, rocksdb::Direction::Forward);
    for (n, item) in sh.db.iterator(mode).enumerate() {
        let (k, v) = item.map_err(io)?;
        if n == sh.retention.slice {
            next = Some(k.to_vec());
            break;
        }
        match verdict(sh, &k, &v, now, cutoff)? {
            Verdict::Keep => sizes_of(&k, &mut sizes),
            Verdict::Delete => doomed.push(k.to_vec()),
            Verdict::Date(meta) => {
                sizes_of(&k, &mut sizes);
                dated.push((k.to_vec(), meta));
            }
        }
    }
    if doomed.is_empty() && dated.is_empty() {
        return Ok((next, sizes));
    }
    let _guard = sh.lock.lock().unwrap_or_else(|e| e.into_inner());
    let mut b = WriteBatch::default();
    for k in doomed {
        // Looked at again under the lock: a write since keeps it.
        let still = match sh.db.get(&k).map_err(io)? {
            Some(v) => matches!(verdict(sh, &k, &v, now, cutoff)?, Verdict::Delete),
            None => false,
        };
        if still {
            b.delete(&k);
            if let Some(rest) = k.strip_prefix(b"x/") {
                b.delete([b"m/", rest].concat());
            }
        } else {
            sizes_of(&k, &mut sizes);
        }
    }
    for (k, meta) in dated {
        if let Some(rest) = k.strip_prefix(b"x/") {
            b.put([b"m/", rest].concat(), meta);
        }
    }
    sh.db.write_opt(b, &sh.write).map_err(io)?;
    Ok((next, sizes))
}

fn sizes_of(key: &[u8], s: &mut Sizes) {
    match key.first() {
        Some(b'c') => s.commands += 1,
        Some(b'x') => s.extras += 1,
        Some(b'a') => s.dates += 1,
        _ => {}
    }
}

enum Verdict {
    Keep,
    Delete,
    /// Keep, and write these dates for it (an extra met without them).
    Date(Vec<u8>),
}

fn ms(v: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(v.try_into().ok()?))
}

/// What retention does with one key (see the module doc).
fn verdict(sh: &Shared, key: &[u8], value: &[u8], now: i64, cutoff: i64) -> Result<Verdict, LedgerError> {
    let io = |e: rocksdb::Error| LedgerError::Io(e.to_string());
    let margin = sh.retention.extra_margin.as_millis() as i64;
    Ok(match key.first() {
        Some(b'c') => match serde_json::from_slice::<Step>(value) {
            Ok(Step::Done { result, reported: true }) if result.executed_at.0 < cutoff => Verdict::Delete,
            _ => Verdict::Keep,
        },
        Some(b'a') => match ms(value) {
            Some(at) if at < cutoff - margin => Verdict::Delete,
            _ => Verdict::Keep,
        },
        Some(b'x') => {
            let rest = &key[2..];
            let meta = match sh.db.get([b"m/", rest].concat()).map_err(io)? {
                Some(m) => serde_json::from_slice::<ExtraMeta>(&m).unwrap_or_default(),
                None => {
                    let meta = ExtraMeta { at: now, appointment: None };
                    return Ok(Verdict::Date(serde_json::to_vec(&meta).unwrap_or_default()));
                }
            };
            let tenant = rest.split(|b| *b == b'/').next().unwrap_or_default();
            let last_outcome = match &meta.appointment {
                Some(a) => {
                    let k = [b"a/", tenant, b"/", a.as_bytes()].concat();
                    sh.db.get(k).map_err(io)?.and_then(|v| ms(&v)).unwrap_or(i64::MIN)
                }
                None => i64::MIN,
            };
            if meta.at < cutoff && last_outcome < cutoff - margin {
                Verdict::Delete
            } else {
                Verdict::Keep
            }
        }
        // `m/` keys go with their extras.
        _ => Verdict::Keep,
    })
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

    static NOW: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

    fn now() -> i64 {
        NOW.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn done(id: &str, appointment: &str, at: i64, reported: bool) -> Step {
        let result =
            SinkResult { command_id: id.into(), appointment: appointment.into(), executed_at: Ts(at), ..result() };
        Step::Done { result, reported }
    }

    #[test]
    fn reported_outcomes_go_after_retention_and_an_appointments_extra_outlives_them() {
        const DAY: i64 = 86_400_000;
        let dir = std::env::temp_dir().join(format!("geoclock-ledger-retention-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let retention = Retention {
            keep: Duration::from_secs(2 * 86_400),
            sweep_every: Duration::from_secs(3600),
            slice: 3,
            now,
            ..Retention::default()
        };
        let l = Ledger::open_with(&dir, false, retention).unwrap();
        NOW.store(10 * DAY, std::sync::atomic::Ordering::SeqCst);
        let mapping = Some(serde_json::json!({"id": 5, "revision": 1}));
        // Day 10: the fence of 7001 is created (outcome and mapping in one write).
        l.record(&[("acme", "f1", done("f1", "7001", 10 * DAY, true))], &[("acme", "fence/7001", mapping.clone())])
            .unwrap();
        l.record(&[("acme", "i1", Step::Intent { calls: 1 })], &[]).unwrap();
        l.record(&[("acme", "u1", done("u1", "7002", 10 * DAY, false))], &[]).unwrap();
        l.record(&[], &[("acme", "trackme/l1", Some(serde_json::json!({"url": "u"})))]).unwrap();
        // Day 11: 7001's fence is deleted: its last command.
        NOW.store(11 * DAY, std::sync::atomic::Ordering::SeqCst);
        l.record(&[("acme", "f2", done("f2", "7001", 11 * DAY, true))], &[]).unwrap();
        assert_eq!(l.sweep().unwrap(), Sizes { commands: 4, extras: 2, dates: 2 });
        // Day 12.5: f1 is past retention, f2 not yet; the mapping stays.
        NOW.store(12 * DAY + DAY / 2, std::sync::atomic::Ordering::SeqCst);
        let s = l.sweep().unwrap();
        assert_eq!(l.step("acme", "f1").unwrap(), None);
        assert!(l.step("acme", "f2").unwrap().is_some());
        assert_eq!(l.extra("acme", "fence/7001").unwrap(), mapping);
        assert_eq!((s.commands, s.extras), (3, 1), "the TrackMe link, written on day 10, is gone: {s:?}");
        // Day 13.5: f2 gone too; the mapping outlives it by a day.
        NOW.store(13 * DAY + DAY / 2, std::sync::atomic::Ordering::SeqCst);
        l.sweep().unwrap();
        assert_eq!(l.step("acme", "f2").unwrap(), None);
        assert_eq!(l.extra("acme", "fence/7001").unwrap(), mapping);
        NOW.store(14 * DAY + DAY / 2, std::sync::atomic::Ordering::SeqCst);
        let s = l.sweep().unwrap();
        assert_eq!(l.extra("acme", "fence/7001").unwrap(), None);
        // What stays whatever its age: an intent and an unreported outcome.
        assert_eq!(l.step("acme", "i1").unwrap(), Some(Step::Intent { calls: 1 }));
        assert!(l.step("acme", "u1").unwrap().is_some());
        assert_eq!(s, Sizes { commands: 2, extras: 0, dates: 0 });
        drop(l);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
