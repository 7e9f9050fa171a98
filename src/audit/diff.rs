//! Comparing what the replay derived with what was emitted (the commands
//! topic) and done (the sinks' results). Pure: the Kafka reader feeds it.
//!
//! Commands are compared by `(tenant, id)` (ids are deterministic, see
//! [`crate::engine::command`]) and by content: two commands are the same
//! when their JSON forms are (compared through a SHA-256 digest, so the
//! emitted commands need not stay in memory). Each derived or emitted
//! command is judged when the record time of the input that caused it
//! lies in the judged span (the commands topic carries that time as its
//! record timestamp):
//!
//! - `matched`: derived and emitted, every emitted record of the id with
//!   the derived content;
//! - `missing`: derived, never emitted;
//! - `extra`: emitted, not derived (forged, corrupted, or decided on input
//!   the topics no longer hold);
//! - `differs`: the same id emitted with other content than derived;
//! - `not_done`: matched, but the sinks' latest result for it is `failed`,
//!   or there is none (never happened). A command caused after
//!   `pending_after` without a result is `pending`, not a discrepancy (the
//!   sinks may not have reached it yet). When the results topic holds no
//!   result at all (no sink ever ran: a scenario's topics, say), effects
//!   are not judged, and the findings say so (`effects_checked`).
//!
//! `duplicate_records`: records of a judged id beyond its first (a batch
//! re-processed after a crash re-emits its commands; sinks drop them by
//! id). Not a discrepancy.
//!
//! `carried_in`: when the topics no longer hold the beginning of the
//! history ([`Boundary::truncated`]: retention deleted records of a
//! time-retained topic, or compaction removed superseded entity versions),
//! an appointment whose retained fence commands begin mid-sequence (its
//! lowest emitted revision is above 1 and that command was not derived)
//! had fence revisions the replay cannot count; its discrepancies are
//! listed under `carried_in` with that reason, not counted as
//! discrepancies.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::engine::{Action, Command};
use crate::kafka::records::{Outcome, SinkResult};
use crate::model::{Id, Ts};

/// A command's content, for equality.
pub type Digest = [u8; 16];

/// SHA-256 of the command's JSON form, first 16 bytes.
pub fn digest(c: &Command) -> Digest {
    let json = serde_json::to_vec(c).unwrap_or_default();
    let full = Sha256::digest(&json);
    let mut d = [0u8; 16];
    d.copy_from_slice(&full[..16]);
    d
}

/// `(tenant, command id)`.
pub type Key = (String, String);

fn fence_revision(c: &Command) -> Option<u32> {
    match &c.action {
        Action::CreateGeofence(f) | Action::UpdateGeofence(f) => Some(f.revision),
        Action::DeleteGeofence { revision, .. } => Some(*revision),
        _ => None,
    }
}

/// One command record on the commands topic.
#[derive(Debug, Clone, PartialEq)]
pub struct EmittedRecord {
    pub digest: Digest,
    /// Its record time: the time of the input that caused it.
    pub time: i64,
    pub partition: i32,
    pub offset: i64,
    pub appointment: Id,
    pub kind: &'static str,
    pub revision: Option<u32>,
}

/// The sinks' latest word on one command.
#[derive(Debug, Clone, PartialEq)]
struct Outcomes {
    executed_at: Ts,
    outcome: Outcome,
    reason: String,
}

/// What the commands and results topics hold.
#[derive(Debug, Default)]
pub struct Ledger {
    emitted: HashMap<Key, Vec<EmittedRecord>>,
    results: HashMap<Key, Outcomes>,
    /// Records of the commands or results topic that did not decode.
    pub undecodable: u64,
}

impl Ledger {
    /// A command record read at `(partition, offset)` with record time `time`.
    pub fn emitted(&mut self, tenant: &str, c: &Command, time: i64, partition: i32, offset: i64) {
        let record = EmittedRecord {
            digest: digest(c),
            time,
            partition,
            offset,
            appointment: c.appointment.clone(),
            kind: c.action.kind(),
            revision: fence_revision(c),
        };
        self.emitted.entry((tenant.to_string(), c.id.clone())).or_default().push(record);
    }

    /// A result record, in topic order; the latest by `executed_at` stands
    /// (the later of equals), as in the Activity Report.
    pub fn result(&mut self, tenant: &str, r: &SinkResult) {
        let new = Outcomes { executed_at: r.executed_at, outcome: r.outcome, reason: r.reason.clone() };
        match self.results.entry((tenant.to_string(), r.command_id.clone())) {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                if new.executed_at >= o.get().executed_at {
                    o.insert(new);
                }
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(new);
            }
        }
    }

    pub fn emitted_count(&self) -> usize {
        self.emitted.values().map(Vec::len).sum()
    }
}

/// The span whose decisions are judged: record times `from ..= to` (ms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Span {
    pub from: Option<Ts>,
    pub to: Option<Ts>,
}

impl Span {
    pub fn contains(&self, t: i64) -> bool {
        self.from.is_none_or(|f| t >= f.millis()) && self.to.is_none_or(|to| t <= to.millis())
    }
}

/// What the reader found about the history the topics still hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Boundary {
    /// Records were deleted by retention or compaction before this audit.
    pub truncated: bool,
    /// What was found, in words (for the report).
    pub notes: Vec<String>,
}

/// A derived command as remembered until the comparison ends.
#[derive(Debug, Clone)]
struct DerivedRecord {
    digest: Digest,
    time: i64,
    appointment: Id,
    kind: &'static str,
    /// Kept when it may be reported (not emitted, or emitted otherwise).
    command: Option<Command>,
}

/// Derived commands whose content is kept for the report, at most.
const KEEP_CONTENT: usize = 10_000;

/// One reported command.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub id: String,
    pub tenant: String,
    pub appointment: Id,
    pub kind: String,
    /// The record time of the input that caused it.
    pub time: Ts,
    /// Why it is listed, when the list does not say it all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the replay derived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub derived: Option<Command>,
    /// What the commands topic holds (filled in by the reader, which knows
    /// where the records are: [`Entry::records`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub emitted: Vec<Command>,
    /// `(partition, offset)` of its records on the commands topic.
    #[serde(skip)]
    pub records: Vec<(i32, i64)>,
}

/// Counts of one tenant's day (UTC, by the causing record's time).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DayCounts {
    pub tenant: String,
    pub day: String,
    pub matched: u64,
    pub missing: u64,
    pub extra: u64,
    pub differs: u64,
    pub not_done: u64,
}

/// The audit's findings.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Findings {
    pub matched: u64,
    pub missing: Vec<Entry>,
    pub extra: Vec<Entry>,
    pub differs: Vec<Entry>,
    pub not_done: Vec<Entry>,
    /// Matched, without a result yet, caused after the pending cut-off.
    pub pending: u64,
    /// Whether sink results were compared at all (module docs).
    pub effects_checked: bool,
    /// Emitted records beyond the first of each judged id.
    pub duplicate_records: u64,
    /// Discrepancies of appointments whose history began before the
    /// topics' retained history (see the module docs); not counted.
    pub carried_in: Vec<Entry>,
    pub days: Vec<DayCounts>,
    pub span: Span,
    pub boundary: Boundary,
}

impl Findings {
    /// No discrepancy.
    pub fn clean(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.differs.is_empty() && self.not_done.is_empty()
    }
}

/// The comparison, fed the derived commands as the replay decides them.
#[derive(Debug)]
pub struct Comparison {
    ledger: Ledger,
    derived: HashMap<Key, DerivedRecord>,
    kept: usize,
    pending_after: Option<Ts>,
}

fn day_of(t: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(t)
        .map(|d| d.date_naive().to_string())
        .unwrap_or_else(|| "?".into())
}

impl Comparison {
    pub fn new(ledger: Ledger, pending_after: Option<Ts>) -> Comparison {
        Comparison { ledger, derived: HashMap::new(), kept: 0, pending_after }
    }

    /// A command the replay derived for `tenant`, caused at record time `time`.
    pub fn derived(&mut self, tenant: &str, c: &Command, time: i64) {
        let key = (tenant.to_string(), c.id.clone());
        if self.derived.contains_key(&key) {
            // Decided again by another stage-two partition (a technician
            // with vehicles on two): the processor emitted both; the first
            // is what the sinks keep.
            return;
        }
        let d = digest(c);
        let emitted_same = self.ledger.emitted.get(&key).is_some_and(|rs| rs.iter().all(|r| r.digest == d));
        let keep = !emitted_same && self.kept < KEEP_CONTENT;
        self.kept += usize::from(keep);
        let record = DerivedRecord {
            digest: d,
            time,
            appointment: c.appointment.clone(),
            kind: c.action.kind(),
            command: keep.then(|| c.clone()),
        };
        self.derived.insert(key, record);
    }

    /// The findings over `span`, knowing what the topics lost (`boundary`).
    pub fn finish(self, span: Span, boundary: Boundary) -> Findings {
        let Comparison { ledger, derived, pending_after, .. } = self;
        let effects_checked = !ledger.results.is_empty();
        let mut f = Findings { span, boundary, effects_checked, ..Findings::default() };
        if !effects_checked {
            f.boundary.notes.push("the results topic holds no sink result (no sink ran?): effects not checked".into());
        }
        f.duplicate_records = ledger
            .emitted
            .values()
            .filter(|rs| rs.first().is_some_and(|r| span.contains(r.time)))
            .map(|rs| rs.len() as u64 - 1)
            .sum();
        let mut days: BTreeMap<(String, String), DayCounts> = BTreeMap::new();
        let mut count = |tenant: &str, time: i64, what: fn(&mut DayCounts)| {
            let day = day_of(time);
            let c = days.entry((tenant.to_string(), day.clone())).or_insert_with(|| DayCounts {
                tenant: tenant.to_string(),
                day,
                ..DayCounts::default()
            });
            what(c);
        };
        for (key, d) in &derived {
            if !span.contains(d.time) {
                continue;
            }
            let entry = |reason: Option<String>| Entry {
                id: key.1.clone(),
                tenant: key.0.clone(),
                appointment: d.appointment.clone(),
                kind: d.kind.to_string(),
                time: Ts(d.time),
                reason,
                derived: d.command.clone(),
                emitted: Vec::new(),
                records: Vec::new(),
            };
            match ledger.emitted.get(key) {
                None => {
                    f.missing.push(entry(None));
                    count(&key.0, d.time, |c| c.missing += 1);
                }
                Some(rs) if rs.iter().any(|r| r.digest != d.digest) => {
                    let mut e = entry(None);
                    e.records = rs.iter().map(|r| (r.partition, r.offset)).collect();
                    f.differs.push(e);
                    count(&key.0, d.time, |c| c.differs += 1);
                }
                Some(_) => {
                    f.matched += 1;
                    count(&key.0, d.time, |c| c.matched += 1);
                    if !effects_checked {
                        continue;
                    }
                    let reason = match ledger.results.get(key) {
                        Some(o) if o.outcome == Outcome::Failed => Some(format!("failed: {}", o.reason)),
                        Some(_) => None,
                        None if pending_after.is_some_and(|p| d.time > p.millis()) => {
                            f.pending += 1;
                            None
                        }
                        None => Some("no result from the sinks".to_string()),
                    };
                    if let Some(reason) = reason {
                        f.not_done.push(entry(Some(reason)));
                        count(&key.0, d.time, |c| c.not_done += 1);
                    }
                }
            }
        }
        for (key, rs) in &ledger.emitted {
            let Some(first) = rs.iter().min_by_key(|r| (r.time, r.partition, r.offset)) else { continue };
            if derived.contains_key(key) || !span.contains(first.time) {
                continue;
            }
            f.extra.push(Entry {
                id: key.1.clone(),
                tenant: key.0.clone(),
                appointment: first.appointment.clone(),
                kind: first.kind.to_string(),
                time: Ts(first.time),
                reason: None,
                derived: None,
                emitted: Vec::new(),
                records: rs.iter().map(|r| (r.partition, r.offset)).collect(),
            });
            count(&key.0, first.time, |c| c.extra += 1);
        }
        if f.boundary.truncated {
            carry_in(&mut f, &ledger, &derived, &mut days);
        }
        let order = |e: &Entry| (e.tenant.clone(), e.time, e.appointment.clone(), e.id.clone());
        for list in [&mut f.missing, &mut f.extra, &mut f.differs, &mut f.not_done, &mut f.carried_in] {
            list.sort_by_key(order);
        }
        f.days = days.into_values().collect();
        f
    }
}

/// Moves the discrepancies of carried-in appointments (module docs) from
/// their lists to `carried_in`, and out of the day counts.
fn carry_in(
    f: &mut Findings,
    ledger: &Ledger,
    derived: &HashMap<Key, DerivedRecord>,
    days: &mut BTreeMap<(String, String), DayCounts>,
) {
    // The lowest emitted fence revision per (tenant, appointment), with
    // whether that command was derived.
    let mut lowest: HashMap<(&str, &Id), (u32, bool)> = HashMap::new();
    for (key, rs) in &ledger.emitted {
        for r in rs {
            let Some(rev) = r.revision else { continue };
            let slot = lowest.entry((key.0.as_str(), &r.appointment)).or_insert((u32::MAX, false));
            if rev < slot.0 {
                *slot = (rev, derived.contains_key(key));
            }
        }
    }
    let carried = |e: &Entry| lowest.get(&(e.tenant.as_str(), &e.appointment)).is_some_and(|(r, d)| *r > 1 && !d);
    for (list, what) in [
        (&mut f.missing, "missing" as &str),
        (&mut f.extra, "extra"),
        (&mut f.differs, "differs"),
        (&mut f.not_done, "not_done"),
    ] {
        let (moved, kept): (Vec<Entry>, Vec<Entry>) = std::mem::take(list).into_iter().partition(|e| carried(e));
        *list = kept;
        for mut e in moved {
            if let Some(c) = days.get_mut(&(e.tenant.clone(), day_of(e.time.millis()))) {
                match what {
                    "missing" => c.missing -= 1,
                    "extra" => c.extra -= 1,
                    "differs" => c.differs -= 1,
                    _ => c.not_done -= 1,
                }
            }
            let rev = lowest.get(&(e.tenant.as_str(), &e.appointment)).map_or(0, |r| r.0);
            e.reason = Some(format!(
                "{what}: the appointment's retained fence commands begin at revision {rev}; its earlier history is no longer on the topics"
            ));
            f.carried_in.push(e);
        }
    }
}

impl Findings {
    /// The human-readable summary (`geoclock audit` without `--format json`).
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let span = |t: Option<Ts>| t.map_or("…".to_string(), |t| t.to_rfc3339());
        out.push_str(&format!("Judged span: {} to {}\n", span(self.span.from), span(self.span.to)));
        for n in &self.boundary.notes {
            out.push_str(&format!("Note: {n}\n"));
        }
        if self.duplicate_records > 0 {
            out.push_str(&format!(
                "{} duplicate command records (re-emitted after a crash; the sinks drop them by id)\n",
                self.duplicate_records
            ));
        }
        out.push_str(&format!(
            "{} matched, {} missing, {} extra, {} differ, {} not done{}\n",
            self.matched,
            self.missing.len(),
            self.extra.len(),
            self.differs.len(),
            self.not_done.len(),
            if self.pending > 0 { format!(" ({} pending: no result yet)", self.pending) } else { String::new() }
        ));
        if !self.days.is_empty() {
            out.push_str("\ntenant          day         matched  missing  extra  differs  not done\n");
            for d in &self.days {
                out.push_str(&format!(
                    "{:<15} {}  {:>7}  {:>7}  {:>5}  {:>7}  {:>8}\n",
                    d.tenant, d.day, d.matched, d.missing, d.extra, d.differs, d.not_done
                ));
            }
        }
        for (title, list) in [
            ("Missing (derived, never emitted)", &self.missing),
            ("Extra (emitted, not derived)", &self.extra),
            ("Differs (same id, other content)", &self.differs),
            ("Not done (emitted, effect failed or never happened)", &self.not_done),
            ("Carried in (history before the retained topics; not counted)", &self.carried_in),
        ] {
            if list.is_empty() {
                continue;
            }
            out.push_str(&format!("\n{title}:\n"));
            for e in list {
                out.push_str(&format!(
                    "  {} {} appointment {} {} at {}{}\n",
                    e.id,
                    e.tenant,
                    e.appointment,
                    e.kind,
                    e.time.to_rfc3339(),
                    e.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
                ));
            }
        }
        out.push_str(match (self.clean(), self.effects_checked) {
            (true, true) => "\nClean: every decision re-derived, emitted once and done.\n",
            (true, false) => "\nClean: every decision re-derived and emitted once (effects not checked).\n",
            (false, _) => "\nDISCREPANCIES found.\n",
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ClockCause, ClockChange};
    use crate::model::{Activity, ClockAction};

    fn clock(id: &str, appt: &str, t: i64) -> Command {
        Command {
            id: id.into(),
            appointment: Id::text(appt),
            action: Action::Clock(ClockChange {
                user: Id::text("u1"),
                activity: Activity::Onsite,
                action: ClockAction::In,
                time: Ts(t),
                lat: 1.0,
                lon: 2.0,
                vehicle: Id::text("v1"),
                cause: ClockCause::Arrival,
            }),
        }
    }

    fn fence_delete(id: &str, appt: &str, revision: u32) -> Command {
        Command {
            id: id.into(),
            appointment: Id::text(appt),
            action: Action::DeleteGeofence { revision, name: "x".into() },
        }
    }

    fn result(id: &str, outcome: Outcome, at: i64) -> SinkResult {
        SinkResult {
            command_id: id.into(),
            appointment: "a".into(),
            kind: "clock".into(),
            sink: "clock".into(),
            outcome,
            reason: "HTTP 500".into(),
            remote_ref: None,
            attempts: 1,
            executed_at: Ts(at),
            command_time: Ts(0),
        }
    }

    #[test]
    fn each_kind_of_discrepancy_is_found_and_only_it() {
        let mut ledger = Ledger::default();
        let (ok, failed, none, late, altered, forged) = (
            clock("ok", "a1", 10),
            clock("failed", "a1", 11),
            clock("none", "a2", 12),
            clock("late", "a2", 500),
            clock("altered", "a3", 13),
            clock("forged", "a3", 14),
        );
        for (i, c) in [&ok, &failed, &none, &late, &forged].iter().enumerate() {
            ledger.emitted("acme", c, c_time(c), 0, i as i64);
        }
        let mut other = altered.clone();
        if let Action::Clock(k) = &mut other.action {
            k.time = Ts(99);
        }
        ledger.emitted("acme", &altered, 13, 0, 10);
        ledger.emitted("acme", &other, 13, 0, 11);
        ledger.result("acme", &result("ok", Outcome::Done, 1));
        ledger.result("acme", &result("failed", Outcome::Done, 1));
        ledger.result("acme", &result("failed", Outcome::Failed, 2));
        ledger.result("acme", &result("altered", Outcome::Done, 2));
        let mut cmp = Comparison::new(ledger, Some(Ts(100)));
        for c in [&ok, &failed, &none, &late, &altered] {
            cmp.derived("acme", c, c_time(c));
        }
        cmp.derived("acme", &clock("lost", "a4", 15), 15);
        cmp.derived("other", &clock("ok", "a1", 10), 10);
        let f = cmp.finish(Span::default(), Boundary::default());
        let ids = |l: &[Entry]| l.iter().map(|e| format!("{}/{}", e.tenant, e.id)).collect::<Vec<_>>();
        assert_eq!(f.matched, 4, "ok, failed, none, late");
        assert_eq!(ids(&f.missing), vec!["acme/lost", "other/ok"]);
        assert_eq!(ids(&f.extra), vec!["acme/forged"]);
        assert_eq!(ids(&f.differs), vec!["acme/altered"]);
        assert_eq!(f.differs[0].records, vec![(0, 10), (0, 11)]);
        assert_eq!(ids(&f.not_done), vec!["acme/failed", "acme/none"]);
        assert_eq!(f.not_done[0].reason.as_deref(), Some("failed: HTTP 500"));
        assert_eq!(f.pending, 1, "caused after the cut-off, no result yet");
        assert!(f.effects_checked);
        assert_eq!(f.duplicate_records, 1, "the altered command's second record");
        assert!(!f.clean());
        let day = f.days.iter().find(|d| d.tenant == "acme").unwrap();
        assert_eq!((day.matched, day.missing, day.extra, day.differs, day.not_done), (4, 1, 1, 1, 2));
        assert!(f.summary().contains("acme/forged") || f.summary().contains("forged"));
    }

    fn c_time(c: &Command) -> i64 {
        match &c.action {
            Action::Clock(k) => k.time.millis(),
            _ => 0,
        }
    }

    #[test]
    fn the_span_limits_what_is_judged() {
        let mut ledger = Ledger::default();
        ledger.emitted("acme", &clock("before", "a1", 5), 5, 0, 0);
        let mut cmp = Comparison::new(ledger, None);
        cmp.derived("acme", &clock("after", "a1", 30), 30);
        cmp.derived("acme", &clock("inside", "a1", 15), 15);
        let f = cmp.finish(Span { from: Some(Ts(10)), to: Some(Ts(20)) }, Boundary::default());
        assert_eq!(f.missing.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), vec!["inside"]);
        assert!(f.extra.is_empty());
        assert!(!f.effects_checked && f.not_done.is_empty(), "no results at all: effects not judged");
    }

    #[test]
    fn appointments_whose_history_began_before_the_topics_are_carried_in() {
        // a1's fence was created (revision 1) before the retained history;
        // its delete (revision 3) is emitted, the replay counts revision 2.
        let mut ledger = Ledger::default();
        ledger.emitted("acme", &fence_delete("d3", "a1", 3), 50, 0, 0);
        // a2 began inside the history, and a forged revision 7 is extra.
        ledger.emitted("acme", &fence_delete("d1-a2", "a2", 1), 40, 0, 1);
        ledger.emitted("acme", &fence_delete("d7-a2", "a2", 7), 60, 0, 2);
        let truncated = Boundary { truncated: true, notes: vec![] };
        let mut cmp = Comparison::new(ledger, None);
        cmp.derived("acme", &fence_delete("d2", "a1", 2), 50);
        cmp.derived("acme", &fence_delete("d1-a2", "a2", 1), 40);
        let f = cmp.finish(Span::default(), truncated);
        assert_eq!(f.carried_in.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), vec!["d2", "d3"]);
        assert_eq!(f.extra.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), vec!["d7-a2"]);
        assert!(f.missing.is_empty());
        let day = &f.days[0];
        assert_eq!((day.missing, day.extra), (0, 1));
    }
}
