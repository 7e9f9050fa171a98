//! The connector's memory of what it has published: content fingerprints
//! per record key, webhook message ids seen, pings seen, and the
//! reconciliation cursors. Kept on disk as an append-only journal of JSON
//! lines, one file per (connector, tenant).
//!
//! The protocol that makes a restart neither re-publish nor leave a gap:
//! 1. decide with the ledger ([`LedgerState::changed`], [`LedgerState::ping`]):
//!    publish only what differs from the last published content;
//! 2. publish and wait for the broker's acknowledgement;
//! 3. then append the new fingerprints (and only after that, the cursor).
//!
//! A crash between 2 and 3 re-publishes that batch once on restart (the
//! at-least-once window, a few records); a crash before 2 loses nothing
//! because the cursor did not move.
//!
//! Bounded, continuously: pings older than the retention span (the newest
//! ping's time minus what [`Ledger::open`] was told to keep) are pruned as
//! pings come in; webhook message ids are remembered [`MESSAGE_SPAN_MS`]
//! by the vendor's clock (and at most [`MESSAGE_MEMORY`] of them); a key
//! published with a date (an appointment's window end) is forgotten by
//! [`Ledger::forget_before`] once the connector's mirror horizon has passed
//! it; and the journal is rewritten compacted (one line per live entry)
//! whenever it has grown to twice that plus [`COMPACT_SLACK`], so neither
//! the memory nor the file grows with time. Sizes go to the
//! `geoclock_store_entries` gauges ([`crate::telemetry::metrics::store_entries`]).
//!
//! The journal survives torn writes: a last line cut short (a crash in the
//! middle of an append) is dropped with a warning and the file repaired; a
//! damaged line in the middle is skipped with a warning (an entry glued
//! after it is recovered) and every later entry still loads; a failed
//! append is cut back off the file before anything else is written.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How many webhook message ids are remembered, at most.
pub const MESSAGE_MEMORY: usize = 100_000;

/// How long a webhook message id is remembered (vendors retry a delivery
/// for seconds to hours; ServiceTrade gives up after three attempts).
pub const MESSAGE_SPAN_MS: i64 = 86_400_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Entry {
    /// `key` was published with content `hash` (`None`: a tombstone);
    /// `at`: the entity's own date (an appointment's window end, ms), by
    /// which [`Ledger::forget_before`] lets it go.
    Published {
        key: String,
        hash: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<i64>,
    },
    /// A webhook message handled, `at` the vendor's clock then (ms).
    Message {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<i64>,
    },
    Ping {
        vehicle: String,
        time: i64,
        hash: u64,
    },
    Cursor {
        name: String,
        at: i64,
    },
}

/// The in-memory state, a pure function of the entries applied (and of the
/// ping retention span).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LedgerState {
    published: HashMap<String, Option<u64>>,
    /// Published keys with a date (kept for a tombstone of the same key).
    dated: HashMap<String, i64>,
    messages: HashSet<String>,
    /// In the order handled, with the vendor's clock then.
    message_order: VecDeque<(String, Option<i64>)>,
    /// Per vehicle: ping time → content fingerprint.
    pings: HashMap<String, BTreeMap<i64, u64>>,
    ping_count: usize,
    /// The newest ping time applied.
    newest_ping: i64,
    /// Pings older than `newest_ping − ping_span` are dropped (`None`: kept).
    ping_span: Option<i64>,
    /// Where pruning last ran (pruning is amortised: once a minute of pings).
    pruned_at: i64,
    cursors: HashMap<String, i64>,
}

/// How far the newest ping moves between two prunes.
const PRUNE_EVERY_MS: i64 = 60_000;

/// Sizes of the state, by kind of entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sizes {
    pub published: usize,
    pub messages: usize,
    pub pings: usize,
    pub cursors: usize,
}

impl Sizes {
    pub fn total(&self) -> usize {
        self.published + self.messages + self.pings + self.cursors
    }
}

/// What to do with a ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingVerdict {
    New,
    /// Same vehicle, time and content: already published.
    Duplicate,
    /// Same vehicle and time, different content.
    Conflict,
}

/// A stable 64-bit fingerprint of bytes.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    let d = Sha256::digest(bytes);
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

impl LedgerState {
    pub fn apply(&mut self, e: Entry) {
        match e {
            Entry::Published { key, hash, at } => {
                if let Some(at) = at {
                    self.dated.insert(key.clone(), at);
                } else if hash.is_some() {
                    self.dated.remove(&key);
                }
                self.published.insert(key, hash);
            }
            Entry::Message { id, at } => {
                if self.messages.insert(id.clone()) {
                    self.message_order.push_back((id, at));
                }
                let cutoff = at.map(|t| t - MESSAGE_SPAN_MS);
                while let Some((old, old_at)) = self.message_order.front() {
                    let expired = matches!((old_at, cutoff), (Some(a), Some(c)) if *a < c);
                    if self.message_order.len() <= MESSAGE_MEMORY && !expired {
                        break;
                    }
                    self.messages.remove(old);
                    self.message_order.pop_front();
                }
            }
            Entry::Ping { vehicle, time, hash } => {
                if self.ping_span.is_some_and(|span| time < self.newest_ping.saturating_sub(span)) {
                    return;
                }
                if self.pings.entry(vehicle).or_default().insert(time, hash).is_none() {
                    self.ping_count += 1;
                }
                if time > self.newest_ping {
                    self.newest_ping = time;
                    if time - self.pruned_at >= PRUNE_EVERY_MS {
                        self.prune_pings();
                    }
                }
            }
            Entry::Cursor { name, at } => {
                let c = self.cursors.entry(name).or_insert(at);
                *c = (*c).max(at);
            }
        }
    }

    /// Whether publishing `hash` under `key` changes anything (a tombstone
    /// for a key never published changes nothing).
    pub fn changed(&self, key: &str, hash: Option<u64>) -> bool {
        match self.published.get(key) {
            Some(h) => *h != hash,
            None => hash.is_some(),
        }
    }

    /// Whether `key` was published (live or tombstoned) and not forgotten.
    pub fn knows(&self, key: &str) -> bool {
        self.published.contains_key(key)
    }

    /// Forgets the published keys dated before `cutoff` (ms); how many.
    pub fn forget_before(&mut self, cutoff: i64) -> usize {
        let old: Vec<String> = self.dated.iter().filter(|(_, at)| **at < cutoff).map(|(k, _)| k.clone()).collect();
        for k in &old {
            self.dated.remove(k);
            self.published.remove(k);
        }
        old.len()
    }

    /// Keys published with a live value whose key starts with `prefix`.
    pub fn live_keys(&self, prefix: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .published
            .iter()
            .filter(|(k, h)| h.is_some() && k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect();
        v.sort();
        v
    }

    pub fn seen_message(&self, id: &str) -> bool {
        self.messages.contains(id)
    }

    pub fn ping(&self, vehicle: &str, time: i64, hash: u64) -> PingVerdict {
        match self.pings.get(vehicle).and_then(|m| m.get(&time)) {
            None => PingVerdict::New,
            Some(h) if *h == hash => PingVerdict::Duplicate,
            Some(_) => PingVerdict::Conflict,
        }
    }

    /// Keeps pings no older than `span` before the newest one, from now on.
    pub fn set_ping_span(&mut self, span: i64) {
        self.ping_span = Some(span.max(0));
        self.prune_pings();
    }

    /// Drops the pings the span has left behind.
    fn prune_pings(&mut self) {
        self.pruned_at = self.newest_ping;
        let Some(span) = self.ping_span else { return };
        let from = self.newest_ping.saturating_sub(span);
        let mut dropped = 0;
        self.pings.retain(|_, times| {
            let before = times.len();
            *times = times.split_off(&from);
            dropped += before - times.len();
            !times.is_empty()
        });
        self.ping_count -= dropped;
    }

    pub fn sizes(&self) -> Sizes {
        Sizes {
            published: self.published.len(),
            messages: self.message_order.len(),
            pings: self.ping_count,
            cursors: self.cursors.len(),
        }
    }

    pub fn cursor(&self, name: &str) -> Option<i64> {
        self.cursors.get(name).copied()
    }

    /// One entry per live fact, in a stable order.
    fn compacted(&self) -> Vec<Entry> {
        let mut out: Vec<Entry> = Vec::with_capacity(self.sizes().total());
        let mut published: Vec<_> = self.published.iter().collect();
        published.sort();
        out.extend(published.into_iter().map(|(k, h)| Entry::Published {
            key: k.clone(),
            hash: *h,
            at: self.dated.get(k).copied(),
        }));
        out.extend(self.message_order.iter().map(|(id, at)| Entry::Message { id: id.clone(), at: *at }));
        let mut vehicles: Vec<_> = self.pings.iter().collect();
        vehicles.sort_by(|a, b| a.0.cmp(b.0));
        for (v, times) in vehicles {
            out.extend(times.iter().map(|(t, h)| Entry::Ping { vehicle: v.clone(), time: *t, hash: *h }));
        }
        let mut cursors: Vec<_> = self.cursors.iter().collect();
        cursors.sort();
        out.extend(cursors.into_iter().map(|(n, at)| Entry::Cursor { name: n.clone(), at: *at }));
        out
    }
}

/// What loading a journal found.
#[derive(Debug, Default, PartialEq)]
struct Loaded {
    entries: Vec<Entry>,
    /// A last line cut short.
    torn_tail: bool,
    /// Damaged lines before the last.
    damaged: usize,
}

/// Reads a journal's bytes (see the module doc for torn and damaged lines).
fn load(bytes: &[u8]) -> Loaded {
    let mut out = Loaded::default();
    let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    // The last line with anything on it.
    let last_line = lines.iter().rposition(|l| !l.is_empty());
    for (n, line) in lines.iter().enumerate() {
        let last = Some(n) == last_line;
        if line.is_empty() {
            continue;
        }
        if let Ok(e) = serde_json::from_slice::<Entry>(line) {
            out.entries.push(e);
            continue;
        }
        // An append glued to a line cut short: the entry after the cut.
        let glued = (1..line.len())
            .filter(|i| line[*i..].starts_with(b"{\"k\":"))
            .find_map(|i| serde_json::from_slice::<Entry>(&line[i..]).ok());
        match (last, glued) {
            (_, Some(e)) => {
                out.damaged += 1;
                out.entries.push(e);
            }
            (true, None) => out.torn_tail = true,
            (false, None) => out.damaged += 1,
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
#[error("ledger {path}: {message}")]
pub struct LedgerError {
    pub path: String,
    pub message: String,
}

/// The journal on disk and its state.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    state: LedgerState,
    out: File,
    /// The journal's length up to its last complete line.
    len: u64,
    /// Lines in the journal (entries written since it was last compacted
    /// included).
    lines: usize,
    /// The label of its size gauges.
    label: String,
}

/// Lines a journal may hold beyond twice its live entries before it is
/// compacted again.
pub const COMPACT_SLACK: usize = 10_000;

impl Ledger {
    /// Opens (or creates) the journal at `path`, repairing a torn tail and
    /// compacting it; pings from before `keep_pings_from` (ms) are dropped,
    /// and from then on pings older than that span before the newest.
    pub fn open(path: &Path, keep_pings_from: i64) -> Result<Ledger, LedgerError> {
        let span = chrono::Utc::now().timestamp_millis() - keep_pings_from;
        Ledger::open_with_span(path, span)
    }

    /// [`Ledger::open`] with the span of pings to keep given directly (ms).
    pub fn open_with_span(path: &Path, ping_span: i64) -> Result<Ledger, LedgerError> {
        let err = |e: std::io::Error| LedgerError { path: path.display().to_string(), message: e.to_string() };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(err(e)),
        };
        let loaded = load(&bytes);
        if loaded.torn_tail {
            tracing::warn!(path = %path.display(), "ledger journal ends in a line cut short (a crash mid-write): dropped, journal repaired");
        }
        if loaded.damaged > 0 {
            tracing::warn!(path = %path.display(), lines = loaded.damaged, "ledger journal has damaged lines: skipped, later entries kept, journal repaired");
        }
        let mut state = LedgerState::default();
        for e in loaded.entries {
            state.apply(e);
        }
        state.set_ping_span(ping_span);
        let label = format!("connector_ledger:{}", path.file_stem().map(|n| n.to_string_lossy()).unwrap_or_default());
        let out = OpenOptions::new().create(true).append(true).open(path).map_err(err)?;
        let mut ledger = Ledger { path: path.to_path_buf(), state, out, len: 0, lines: 0, label };
        ledger.compact()?;
        Ok(ledger)
    }

    pub fn state(&self) -> &LedgerState {
        &self.state
    }

    /// Forgets the keys dated before `cutoff` (ms) ([`LedgerState::forget_before`]);
    /// the journal drops them at its next compaction. How many.
    pub fn forget_before(&mut self, cutoff: i64) -> Result<usize, LedgerError> {
        let n = self.state.forget_before(cutoff);
        if n > 0 {
            if self.lines > 2 * self.state.sizes().total() + COMPACT_SLACK {
                self.compact()?;
            } else {
                self.report_sizes();
            }
        }
        Ok(n)
    }

    /// Appends entries and makes them durable. A failed append is cut back
    /// off the journal (no partial line stays to glue the next one to).
    pub fn record(&mut self, entries: Vec<Entry>) -> Result<(), LedgerError> {
        if entries.is_empty() {
            return Ok(());
        }
        let path = self.path.display().to_string();
        let err = |e: std::io::Error| LedgerError { path: path.clone(), message: e.to_string() };
        let mut buf = Vec::with_capacity(entries.len() * 64);
        for e in &entries {
            write_entry(&mut buf, e).map_err(err)?;
        }
        let written = self.out.write_all(&buf).and_then(|()| self.out.sync_data());
        if let Err(e) = written {
            let _ = self.out.set_len(self.len);
            return Err(err(e));
        }
        self.len += buf.len() as u64;
        self.lines += entries.len();
        for e in entries {
            self.state.apply(e);
        }
        if self.lines > 2 * self.state.sizes().total() + COMPACT_SLACK {
            self.compact()?;
        } else {
            self.report_sizes();
        }
        Ok(())
    }

    /// Rewrites the journal as one line per live entry (atomically: a new
    /// file renamed over the old one), and reports the sizes.
    fn compact(&mut self) -> Result<(), LedgerError> {
        let err = |e: std::io::Error| LedgerError { path: self.path.display().to_string(), message: e.to_string() };
        let tmp = self.path.with_extension("compact");
        let entries = self.state.compacted();
        let len = {
            let mut w = BufWriter::new(File::create(&tmp).map_err(err)?);
            for e in &entries {
                write_entry(&mut w, e).map_err(err)?;
            }
            w.flush().map_err(err)?;
            w.get_ref().sync_data().map_err(err)?;
            w.get_ref().metadata().map_err(err)?.len()
        };
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        self.out = OpenOptions::new().append(true).open(&self.path).map_err(err)?;
        self.len = len;
        self.lines = entries.len();
        self.report_sizes();
        Ok(())
    }

    /// The sizes, to the `geoclock_store_entries` gauges.
    fn report_sizes(&self) {
        let s = self.state.sizes();
        for (kind, n) in
            [("published", s.published), ("messages", s.messages), ("pings", s.pings), ("cursors", s.cursors)]
        {
            crate::telemetry::metrics::store_entries(&self.label, kind, n as u64);
        }
        crate::telemetry::metrics::store_entries(&self.label, "journal_lines", self.lines as u64);
    }

    /// Lines in the journal file now.
    pub fn journal_lines(&self) -> usize {
        self.lines
    }
}

fn write_entry(w: &mut impl Write, e: &Entry) -> std::io::Result<()> {
    let line = serde_json::to_string(e).map_err(std::io::Error::other)?;
    w.write_all(line.as_bytes())?;
    w.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_follow_what_was_recorded() {
        let mut s = LedgerState::default();
        assert!(s.changed("users|1", Some(7)));
        assert!(!s.changed("users|1", None), "tombstone for something never published");
        s.apply(Entry::Published { key: "users|1".into(), hash: Some(7), at: None });
        assert!(!s.changed("users|1", Some(7)));
        assert!(s.changed("users|1", Some(8)));
        assert!(s.changed("users|1", None));
        assert_eq!(s.ping("v", 5, 1), PingVerdict::New);
        s.apply(Entry::Ping { vehicle: "v".into(), time: 5, hash: 1 });
        assert_eq!(s.ping("v", 5, 1), PingVerdict::Duplicate);
        assert_eq!(s.ping("v", 5, 2), PingVerdict::Conflict);
        s.apply(Entry::Cursor { name: "job".into(), at: 10 });
        s.apply(Entry::Cursor { name: "job".into(), at: 9 });
        assert_eq!(s.cursor("job"), Some(10), "cursors never move back");
        assert_eq!(s.live_keys("users|"), vec!["users|1".to_string()]);
    }

    #[test]
    fn survives_reopen_and_a_torn_line() {
        let dir = std::env::temp_dir().join(format!("geoclock-ledger-{}", std::process::id()));
        let path = dir.join("t.jsonl");
        let _ = std::fs::remove_file(&path);
        {
            let mut l = Ledger::open_with_span(&path, 1_000).unwrap();
            l.record(vec![
                Entry::Published { key: "a".into(), hash: Some(1), at: None },
                Entry::Message { id: "m1".into(), at: None },
                Entry::Ping { vehicle: "v".into(), time: 1_100, hash: 3 },
                Entry::Ping { vehicle: "v".into(), time: 5, hash: 3 },
                Entry::Cursor { name: "user".into(), at: 42 },
            ])
            .unwrap();
        }
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"k\":\"published\",\"key\":\"b\"").unwrap();
        drop(f);
        let l = Ledger::open_with_span(&path, 1_000).unwrap();
        assert!(!l.state().changed("a", Some(1)));
        assert!(l.state().seen_message("m1"));
        assert_eq!(l.state().ping("v", 1_100, 3), PingVerdict::Duplicate);
        assert_eq!(l.state().ping("v", 5, 3), PingVerdict::New, "pruned by retention");
        assert_eq!(l.state().cursor("user"), Some(42));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("\n") && !text.contains("\"b\""), "the torn tail is repaired:\n{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_middle_line_keeps_every_later_entry() {
        let good = |key: &str| format!("{{\"k\":\"published\",\"key\":\"{key}\",\"hash\":1}}");
        // A write cut short, then an append glued to it, then more.
        let text = format!("{}\n{{\"k\":\"pub{}\n{}\n{{\"k\":\"cur", good("a"), good("b"), good("c"));
        let loaded = load(text.as_bytes());
        let keys: Vec<String> = loaded
            .entries
            .iter()
            .map(|e| match e {
                Entry::Published { key, .. } => key.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert!(loaded.torn_tail);
        assert_eq!(loaded.damaged, 1);
        assert_eq!(load(b"garbage\n").damaged + usize::from(load(b"garbage\n").torn_tail), 1);
    }

    #[test]
    fn pings_are_pruned_as_time_goes_on_and_the_journal_is_compacted() {
        let dir = std::env::temp_dir().join(format!("geoclock-ledger-prune-{}", std::process::id()));
        let path = dir.join("p.jsonl");
        let _ = std::fs::remove_file(&path);
        const HOUR: i64 = 3_600_000;
        let mut l = Ledger::open_with_span(&path, 2 * HOUR).unwrap();
        let mut max_lines = 0;
        // Ten hours of pings from 50 vehicles, one every 30 s each.
        for step in 0..1200i64 {
            let batch = (0..50)
                .map(|v| Entry::Ping { vehicle: format!("v{v}"), time: step * 30_000, hash: v as u64 })
                .collect();
            l.record(batch).unwrap();
            max_lines = max_lines.max(l.journal_lines());
        }
        let pings = l.state().sizes().pings;
        // Two hours (plus up to a minute between prunes) at 100 pings a minute.
        assert!((12_000..=12_200).contains(&pings), "{pings}");
        assert!(max_lines <= 2 * 12_200 + COMPACT_SLACK + 50, "{max_lines}");
        let file_lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert_eq!(file_lines, l.journal_lines());
        let reopened = Ledger::open_with_span(&path, 2 * HOUR).unwrap();
        let (a, b) = (reopened.state().sizes(), l.state().sizes());
        assert!(a.pings <= b.pings && a.pings >= 12_000, "{a:?} {b:?}");
        assert_eq!(reopened.state().ping("v3", 1199 * 30_000, 3), PingVerdict::Duplicate);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dated_keys_are_forgotten_past_the_horizon_and_message_ids_after_their_span() {
        let mut s = LedgerState::default();
        let day = 86_400_000;
        for (key, at) in [("appointment|1", Some(day)), ("appointment|2", Some(5 * day)), ("job|9", None)] {
            s.apply(Entry::Published { key: key.into(), hash: Some(1), at });
        }
        // A tombstone keeps its key's date.
        s.apply(Entry::Published { key: "appointment|1".into(), hash: None, at: None });
        assert_eq!(s.forget_before(2 * day), 1);
        assert!(!s.changed("appointment|1", None), "forgotten: a tombstone for it changes nothing");
        assert!(s.changed("appointment|1", Some(1)), "forgotten: listed again, it would be new");
        assert!(!s.changed("appointment|2", Some(1)) && !s.changed("job|9", Some(1)));
        assert_eq!(s.forget_before(i64::MAX), 1, "an undated key is never forgotten");
        assert_eq!(s.sizes().published, 1);
        let c = s.compacted();
        assert!(c.iter().all(|e| !matches!(e, Entry::Published { at: Some(_), .. })));

        for (i, at) in [0, day / 2, day, day + 1, 3 * day].into_iter().enumerate() {
            s.apply(Entry::Message { id: format!("m{i}"), at: Some(at) });
        }
        assert!(!s.seen_message("m0") && !s.seen_message("m3"), "older than a day before the newest");
        assert!(s.seen_message("m4") && s.sizes().messages == 1);
        s.apply(Entry::Message { id: "old-style".into(), at: None });
        assert!(s.seen_message("old-style") && s.seen_message("m4"));
    }
}
