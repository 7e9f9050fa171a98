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
//! because the cursor did not move. A torn last line is ignored on load.
//! Opening compacts the journal: one line per live entry, pings older than
//! the retention dropped.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How many webhook message ids are remembered.
pub const MESSAGE_MEMORY: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Entry {
    /// `key` was published with content `hash` (`None`: a tombstone).
    Published {
        key: String,
        hash: Option<u64>,
    },
    Message {
        id: String,
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

/// The in-memory state, a pure function of the entries applied.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LedgerState {
    published: HashMap<String, Option<u64>>,
    messages: HashSet<String>,
    message_order: VecDeque<String>,
    pings: HashMap<(String, i64), u64>,
    cursors: HashMap<String, i64>,
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
            Entry::Published { key, hash } => {
                self.published.insert(key, hash);
            }
            Entry::Message { id } => {
                if self.messages.insert(id.clone()) {
                    self.message_order.push_back(id);
                    while self.message_order.len() > MESSAGE_MEMORY {
                        if let Some(old) = self.message_order.pop_front() {
                            self.messages.remove(&old);
                        }
                    }
                }
            }
            Entry::Ping { vehicle, time, hash } => {
                self.pings.insert((vehicle, time), hash);
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
        match self.pings.get(&(vehicle.to_string(), time)) {
            None => PingVerdict::New,
            Some(h) if *h == hash => PingVerdict::Duplicate,
            Some(_) => PingVerdict::Conflict,
        }
    }

    pub fn cursor(&self, name: &str) -> Option<i64> {
        self.cursors.get(name).copied()
    }

    /// One entry per live fact; pings before `keep_pings_from` dropped.
    fn compacted(&self, keep_pings_from: i64) -> Vec<Entry> {
        let mut out: Vec<Entry> = Vec::new();
        let mut published: Vec<_> = self.published.iter().collect();
        published.sort();
        out.extend(published.into_iter().map(|(k, h)| Entry::Published { key: k.clone(), hash: *h }));
        out.extend(self.message_order.iter().map(|id| Entry::Message { id: id.clone() }));
        let mut pings: Vec<_> = self.pings.iter().filter(|((_, t), _)| *t >= keep_pings_from).collect();
        pings.sort();
        out.extend(pings.into_iter().map(|((v, t), h)| Entry::Ping { vehicle: v.clone(), time: *t, hash: *h }));
        let mut cursors: Vec<_> = self.cursors.iter().collect();
        cursors.sort();
        out.extend(cursors.into_iter().map(|(n, at)| Entry::Cursor { name: n.clone(), at: *at }));
        out
    }
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
    out: BufWriter<File>,
}

impl Ledger {
    /// Opens (or creates) the journal at `path`, compacting it.
    pub fn open(path: &Path, keep_pings_from: i64) -> Result<Ledger, LedgerError> {
        let err = |e: std::io::Error| LedgerError { path: path.display().to_string(), message: e.to_string() };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let mut state = LedgerState::default();
        if let Ok(f) = File::open(path) {
            for line in BufReader::new(f).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Entry>(&line) {
                    Ok(e) => state.apply(e),
                    Err(_) => break, // a torn last line
                }
            }
        }
        let tmp = path.with_extension("compact");
        {
            let mut w = BufWriter::new(File::create(&tmp).map_err(err)?);
            for e in state.compacted(keep_pings_from) {
                write_entry(&mut w, &e).map_err(err)?;
            }
            w.flush().map_err(err)?;
            w.get_ref().sync_data().map_err(err)?;
        }
        std::fs::rename(&tmp, path).map_err(err)?;
        let mut fresh = LedgerState::default();
        for e in state.compacted(keep_pings_from) {
            fresh.apply(e);
        }
        let out = BufWriter::new(OpenOptions::new().append(true).open(path).map_err(err)?);
        Ok(Ledger { path: path.to_path_buf(), state: fresh, out })
    }

    pub fn state(&self) -> &LedgerState {
        &self.state
    }

    /// Appends entries and makes them durable.
    pub fn record(&mut self, entries: Vec<Entry>) -> Result<(), LedgerError> {
        if entries.is_empty() {
            return Ok(());
        }
        let path = self.path.display().to_string();
        let err = |e: std::io::Error| LedgerError { path: path.clone(), message: e.to_string() };
        for e in entries {
            write_entry(&mut self.out, &e).map_err(err)?;
            self.state.apply(e);
        }
        self.out.flush().map_err(err)?;
        self.out.get_ref().sync_data().map_err(err)
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
        s.apply(Entry::Published { key: "users|1".into(), hash: Some(7) });
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
            let mut l = Ledger::open(&path, 0).unwrap();
            l.record(vec![
                Entry::Published { key: "a".into(), hash: Some(1) },
                Entry::Message { id: "m1".into() },
                Entry::Ping { vehicle: "v".into(), time: 100, hash: 3 },
                Entry::Ping { vehicle: "v".into(), time: 5, hash: 3 },
                Entry::Cursor { name: "user".into(), at: 42 },
            ])
            .unwrap();
        }
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"k\":\"published\",\"key\":\"b\"").unwrap();
        drop(f);
        let l = Ledger::open(&path, 50).unwrap();
        assert!(!l.state().changed("a", Some(1)));
        assert!(l.state().seen_message("m1"));
        assert_eq!(l.state().ping("v", 100, 3), PingVerdict::Duplicate);
        assert_eq!(l.state().ping("v", 5, 3), PingVerdict::New, "pruned by retention");
        assert_eq!(l.state().cursor("user"), Some(42));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
