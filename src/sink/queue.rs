//! Where each assigned partition of the commands topic may be committed:
//! pure bookkeeping of consumed offsets that are not yet decided.
//!
//! Invariant: the commit point of a partition is the lowest consumed offset
//! not yet durably decided, or one past the highest consumed when all are
//! decided. Committing there never skips a command: a crash or a partition
//! moving re-delivers every command not decided, and nothing else but the
//! decided ones after the lowest open offset (duplicates, dropped by id).

use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default, Clone, PartialEq)]
struct Part {
    /// Consumed, not decided.
    open: BTreeSet<i64>,
    /// One past the highest offset consumed (`None`: nothing yet).
    next: Option<i64>,
    /// What was last committed (or handed out to commit).
    committed: Option<i64>,
    /// Set once this process has claimed the partition (before it acts
    /// for it): the partition's end then, and whether this process was its
    /// last claimant (so a command its ledger has not seen is new, not one
    /// another instance may have worked on).
    claim: Option<Claim>,
}

/// What a claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub end: i64,
    pub was_ours: bool,
}

/// Consumed-but-undecided offsets per assigned partition.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Offsets {
    parts: HashMap<i32, Part>,
}

impl Offsets {
    pub fn assign(&mut self, partition: i32) {
        self.parts.entry(partition).or_default();
    }

    /// Forgets a partition; the offset to commit for it, if it moved.
    pub fn revoke(&mut self, partition: i32) -> Option<i64> {
        let mut p = self.parts.remove(&partition)?;
        Self::moved(&mut p)
    }

    pub fn owns(&self, partition: i32) -> bool {
        self.parts.contains_key(&partition)
    }

    pub fn partitions(&self) -> Vec<i32> {
        let mut v: Vec<i32> = self.parts.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Assigned partitions not claimed yet.
    pub fn unclaimed(&self) -> Vec<i32> {
        let mut v: Vec<i32> = self.parts.iter().filter(|(_, p)| p.claim.is_none()).map(|(k, _)| *k).collect();
        v.sort_unstable();
        v
    }

    /// This process's claim on `partition`, once made.
    pub fn claim(&self, partition: i32) -> Option<Claim> {
        self.parts.get(&partition).and_then(|p| p.claim)
    }

    pub fn set_claim(&mut self, partition: i32, claim: Claim) {
        self.parts.entry(partition).or_default().claim = Some(claim);
    }

    /// Whether a command at `offset` that this process's ledger has never
    /// seen may have been worked on by another instance: it lies before
    /// the partition's end at the claim, and the partition's previous
    /// claimant was another instance.
    pub fn maybe_elsewhere(&self, partition: i32, offset: i64) -> bool {
        self.claim(partition).is_none_or(|c| !c.was_ours && offset < c.end)
    }

    /// `offset` of `partition` was consumed; `open` when it still has to be
    /// decided (otherwise it is decided already: a duplicate, not ours).
    pub fn consumed(&mut self, partition: i32, offset: i64, open: bool) {
        let p = self.parts.entry(partition).or_default();
        p.next = Some(p.next.map_or(offset + 1, |n| n.max(offset + 1)));
        if open {
            p.open.insert(offset);
        }
    }

    /// `offset` of `partition` is durably decided.
    pub fn decided(&mut self, partition: i32, offset: i64) {
        if let Some(p) = self.parts.get_mut(&partition) {
            p.open.remove(&offset);
        }
    }

    /// Consumed offsets not yet decided, over every partition.
    pub fn open(&self) -> usize {
        self.parts.values().map(|p| p.open.len()).sum()
    }

    fn point(p: &Part) -> Option<i64> {
        p.open.first().copied().or(p.next)
    }

    fn moved(p: &mut Part) -> Option<i64> {
        let point = Self::point(p)?;
        if p.committed == Some(point) {
            return None;
        }
        p.committed = Some(point);
        Some(point)
    }

    /// The commit points that moved since the last call, by partition.
    pub fn to_commit(&mut self) -> Vec<(i32, i64)> {
        let mut out: Vec<(i32, i64)> =
            self.parts.iter_mut().filter_map(|(k, p)| Self::moved(p).map(|o| (*k, o))).collect();
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_commit_point_waits_for_the_lowest_undecided_offset() {
        let mut o = Offsets::default();
        o.assign(0);
        o.consumed(0, 10, true);
        o.consumed(0, 11, true);
        o.consumed(0, 12, false);
        assert_eq!(o.to_commit(), vec![(0, 10)]);
        o.decided(0, 11);
        assert_eq!(o.to_commit(), vec![], "10 is still open");
        o.decided(0, 10);
        assert_eq!(o.to_commit(), vec![(0, 13)]);
        o.consumed(0, 13, true);
        assert_eq!(o.revoke(0), None, "13 is open: the point did not move");
        assert!(!o.owns(0));
    }

    proptest! {
        /// Whatever the order decisions come in, the commit point never
        /// passes an undecided offset and reaches the end once all are.
        #[test]
        fn never_past_an_undecided_offset(order in Just((0..40i64).collect::<Vec<_>>()).prop_shuffle(), cut in 0usize..40) {
            let mut o = Offsets::default();
            o.assign(3);
            for off in 0..40 {
                o.consumed(3, off, true);
            }
            let decided: std::collections::HashSet<i64> = order[..cut].iter().copied().collect();
            for off in &order[..cut] {
                o.decided(3, *off);
                for (_, point) in o.to_commit() {
                    for undecided in (0..40).filter(|x| !decided.contains(x)) {
                        prop_assert!(point <= undecided);
                    }
                }
            }
            for off in &order[cut..] {
                o.decided(3, *off);
            }
            o.to_commit();
            prop_assert_eq!(o.revoke(3), None);
            prop_assert_eq!(o.open(), 0);
        }
    }
}
