//! Time-indexed facts: a technician's clock line for one activity, and the
//! driver ↔ vehicle pairing history.

use std::collections::BTreeSet;

use rustc_hash::FxHashMap;

use crate::model::{ClockAction, Id, Pairing, Ts};

/// The in/out events of one activity for one technician on one appointment,
/// as a set: inserting an event twice changes nothing. At equal times `In`
/// sorts before `Out`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClockLine {
    events: BTreeSet<(Ts, ClockAction)>,
}

impl ClockLine {
    /// Records an event; false when it was already known.
    pub fn insert(&mut self, t: Ts, action: ClockAction) -> bool {
        self.events.insert((t, action))
    }

    /// Clocked in at `t`: the latest event at or before `t` is an `In`.
    pub fn open_at(&self, t: Ts) -> bool {
        matches!(self.events.range(..=(t, ClockAction::Out)).next_back(), Some((_, ClockAction::In)))
    }

    /// Open at `t` and nothing has closed it since.
    pub fn open_from(&self, t: Ts) -> bool {
        self.open_at(t) && !self.events.range((t, ClockAction::Out)..).any(|(_, a)| *a == ClockAction::Out)
    }

    pub fn first(&self, action: ClockAction) -> Option<Ts> {
        self.events.iter().find(|(_, a)| *a == action).map(|(t, _)| *t)
    }

    /// The first `action` at or after `t`.
    pub fn first_from(&self, action: ClockAction, t: Ts) -> Option<Ts> {
        self.events.range((t, ClockAction::In)..).find(|(_, a)| *a == action).map(|(t, _)| *t)
    }

    pub fn last(&self, action: ClockAction) -> Option<Ts> {
        self.events.iter().rev().find(|(_, a)| *a == action).map(|(t, _)| *t)
    }

    pub fn has(&self, action: ClockAction) -> bool {
        self.events.iter().any(|(_, a)| *a == action)
    }

    /// Every event, in time order.
    pub fn events(&self) -> impl Iterator<Item = &(Ts, ClockAction)> {
        self.events.iter()
    }

    /// The last event is an `In`.
    pub fn is_open(&self) -> bool {
        matches!(self.events.iter().next_back(), Some((_, ClockAction::In)))
    }
}

/// Half-open `[from, to)`.
pub type Interval = (Ts, Ts);

/// Pairing history by driver. A driver drives one vehicle at a time: an
/// open-ended pairing (and any pairing overlapping the next) ends when that
/// driver's next pairing begins. A vehicle may have several drivers at once
/// (a shared vehicle); each is clocked for their own appointments only.
#[derive(Debug, Clone, Default)]
pub struct PairingBook {
    by_driver: FxHashMap<Id, Vec<Pairing>>,
}

impl PairingBook {
    /// Upserts by `(driver, vehicle, from)`; false when nothing changed.
    pub fn upsert(&mut self, p: &Pairing) -> bool {
        let list = self.by_driver.entry(p.driver.clone()).or_default();
        match list.iter_mut().find(|q| q.vehicle == p.vehicle && q.from == p.from) {
            Some(q) if q == p => false,
            Some(q) => {
                *q = p.clone();
                true
            }
            None => {
                list.push(p.clone());
                list.sort_by(|a, b| (a.from, &a.vehicle).cmp(&(b.from, &b.vehicle)));
                true
            }
        }
    }

    pub fn remove(&mut self, driver: &Id, vehicle: &Id, from: Ts) -> bool {
        let Some(list) = self.by_driver.get_mut(driver) else { return false };
        let before = list.len();
        list.retain(|q| !(q.vehicle == *vehicle && q.from == from));
        let changed = list.len() != before;
        if list.is_empty() {
            self.by_driver.remove(driver);
        }
        changed
    }

    /// Drops every pairing whose effective end is before `cutoff`; the
    /// others keep their effective intervals (a pairing's end depends only
    /// on later pairings, whose ends are later). Returns the drivers whose
    /// history changed, sorted.
    pub fn prune_ended_before(&mut self, cutoff: Ts) -> Vec<Id> {
        let mut changed = Vec::new();
        for (driver, list) in self.by_driver.iter_mut() {
            let ends: Vec<Ts> = list.iter().map(|p| effective_end(list, p)).collect();
            let before = list.len();
            let mut ends = ends.into_iter();
            list.retain(|_| ends.next().is_some_and(|end| end >= cutoff));
            if list.len() != before {
                changed.push(driver.clone());
            }
        }
        self.by_driver.retain(|_, list| !list.is_empty());
        changed.sort();
        changed
    }

    /// The driver's pairings with their effective intervals, in order.
    pub fn effective(&self, driver: &Id) -> Vec<(&Id, Interval)> {
        let Some(list) = self.by_driver.get(driver) else { return Vec::new() };
        list.iter().map(|p| (&p.vehicle, (p.from, effective_end(list, p)))).filter(|(_, (f, t))| f < t).collect()
    }

    /// The driver's pairings as stored (sorted by start, then vehicle).
    pub fn of_driver(&self, driver: &Id) -> &[Pairing] {
        self.by_driver.get(driver).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The vehicle the driver drives at `t` (latest-starting pairing wins).
    pub fn vehicle_at(&self, driver: &Id, t: Ts) -> Option<Id> {
        self.effective(driver).into_iter().rev().find(|(_, (f, to))| *f <= t && t < *to).map(|(v, _)| v.clone())
    }

    /// Vehicles the driver drives at some time in `[from, to]`, each with its
    /// intervals, vehicles in first-use order.
    pub fn vehicles_during(&self, driver: &Id, from: Ts, to: Ts) -> Vec<(Id, Vec<Interval>)> {
        let mut out: Vec<(Id, Vec<Interval>)> = Vec::new();
        for (v, (f, t)) in self.effective(driver) {
            if f <= to && t > from {
                match out.iter_mut().find(|(w, _)| w == v) {
                    Some((_, iv)) => iv.push((f, t)),
                    None => out.push((v.clone(), vec![(f, t)])),
                }
            }
        }
        out
    }
}

/// A driver with no vehicle during a span: the pairings on either side of
/// it (evidence for "technician not paired").
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PairingGap {
    pub driver: Id,
    /// The span no pairing of the driver covers.
    pub from: Ts,
    pub to: Ts,
    /// The driver's last pairing that ended before the span.
    pub before: Option<PairedSpan>,
    /// The driver's first pairing that began after it.
    pub after: Option<PairedSpan>,
}

/// A pairing with its effective interval (`to`: `None` when open-ended).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PairedSpan {
    pub vehicle: Id,
    pub from: Ts,
    pub to: Option<Ts>,
}

impl PairingBook {
    /// The gap around `[from, to]` when no pairing of `driver` overlaps it
    /// (as [`PairingBook::vehicles_during`] sees it); `None` when one does.
    pub fn gap(&self, driver: &Id, from: Ts, to: Ts) -> Option<PairingGap> {
        let spans = self.effective(driver);
        if spans.iter().any(|(_, (f, t))| *f <= to && *t > from) {
            return None;
        }
        let span = |(v, (f, t)): &(&Id, Interval)| PairedSpan {
            vehicle: (*v).clone(),
            from: *f,
            to: (*t != Ts::MAX).then_some(*t),
        };
        let before = spans.iter().filter(|(_, (_, t))| *t <= from).max_by_key(|(_, (_, t))| *t).map(span);
        let after = spans.iter().filter(|(_, (f, _))| *f > to).min_by_key(|(_, (f, _))| *f).map(span);
        Some(PairingGap { driver: driver.clone(), from, to, before, after })
    }
}

/// When pairing `p` of a driver's sorted `list` ends: its own `to`, or the
/// start of the driver's next pairing, whichever is first.
fn effective_end(list: &[Pairing], p: &Pairing) -> Ts {
    let next = list.iter().map(|q| q.from).find(|f| *f > p.from).unwrap_or(Ts::MAX);
    p.to.unwrap_or(Ts::MAX).min(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> Ts {
        Ts(ms)
    }

    #[test]
    fn clock_line_open_and_idempotent() {
        let mut c = ClockLine::default();
        assert!(c.insert(t(10), ClockAction::In));
        assert!(!c.insert(t(10), ClockAction::In));
        assert!(!c.open_at(t(9)));
        assert!(c.open_at(t(10)));
        c.insert(t(20), ClockAction::Out);
        assert!(c.open_at(t(19)) && !c.open_at(t(20)));
        assert!(!c.open_from(t(15)));
        assert!(!c.is_open());
    }

    #[test]
    fn driver_switching_closes_the_open_pairing() {
        let mut b = PairingBook::default();
        let d = Id::text("d1");
        b.upsert(&Pairing { driver: d.clone(), vehicle: Id::text("v1"), from: t(0), to: None });
        b.upsert(&Pairing { driver: d.clone(), vehicle: Id::text("v2"), from: t(100), to: None });
        assert_eq!(b.vehicle_at(&d, t(50)), Some(Id::text("v1")));
        assert_eq!(b.vehicle_at(&d, t(100)), Some(Id::text("v2")));
        assert_eq!(b.vehicle_at(&d, t(-1)), None);
        let during = b.vehicles_during(&d, t(50), t(150));
        assert_eq!(during.len(), 2);
        assert_eq!(during[0].1, vec![(t(0), t(100))]);
    }

    #[test]
    fn a_gap_names_the_pairings_on_either_side() {
        let mut b = PairingBook::default();
        let d = Id::text("d1");
        b.upsert(&Pairing { driver: d.clone(), vehicle: Id::text("v1"), from: t(0), to: Some(t(10)) });
        b.upsert(&Pairing { driver: d.clone(), vehicle: Id::text("v2"), from: t(100), to: None });
        assert_eq!(b.gap(&d, t(5), t(50)), None, "v1 covers the start");
        let g = b.gap(&d, t(20), t(50)).unwrap();
        assert_eq!(g.before, Some(PairedSpan { vehicle: Id::text("v1"), from: t(0), to: Some(t(10)) }));
        assert_eq!(g.after, Some(PairedSpan { vehicle: Id::text("v2"), from: t(100), to: None }));
        let none = b.gap(&Id::text("d9"), t(20), t(50)).unwrap();
        assert!(none.before.is_none() && none.after.is_none());
    }
}
