//! Deciding what a full listing deletes. Pure.
//!
//! A full sweep compares what the vendor lists with what the connector has
//! published, and tombstones what disappeared (deletes whose webhook was
//! lost). A vendor that answers a list short (a page lost, a missing page
//! count, an outage answering `[]`) would look like a mass delete, so:
//! - a listing not known to be complete deletes nothing;
//! - when more than `max_share` of a kind's live entities (at least two)
//!   would go, nothing is deleted on that listing's word alone: each
//!   absentee must be confirmed by a second look (a fresh listing or a
//!   lookup by id) before its tombstone is published.

use std::collections::HashSet;

/// What one full listing of a kind means for its live keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sweep {
    /// Nothing to delete, or the listing cannot be trusted to say.
    Keep,
    /// Tombstone these keys.
    Delete(Vec<String>),
    /// These keys are absent but too many at once: confirm each first.
    Confirm(Vec<String>),
}

/// The default share of a kind's entities one sweep may delete unconfirmed.
pub const MAX_SHARE: f64 = 0.2;

/// `live`: keys published and not tombstoned; `listed`: keys the full
/// listing returned; `complete`: whether the listing is known whole.
pub fn plan(live: &[String], listed: &HashSet<String>, complete: bool, max_share: f64) -> Sweep {
    if !complete {
        return Sweep::Keep;
    }
    let mut absent: Vec<String> = live.iter().filter(|k| !listed.contains(*k)).cloned().collect();
    absent.sort();
    if absent.is_empty() {
        return Sweep::Keep;
    }
    let limit = (live.len() as f64 * max_share).floor().max(1.0) as usize;
    if absent.len() > limit {
        Sweep::Confirm(absent)
    } else {
        Sweep::Delete(absent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("location|{i}")).collect()
    }

    #[test]
    fn an_incomplete_listing_deletes_nothing() {
        let live = keys(10);
        assert_eq!(plan(&live, &HashSet::new(), false, MAX_SHARE), Sweep::Keep);
    }

    #[test]
    fn a_few_deletes_go_through_and_a_mass_delete_needs_confirmation() {
        let live = keys(10);
        let mut listed: HashSet<String> = live.iter().cloned().collect();
        listed.remove("location|3");
        listed.remove("location|7");
        assert_eq!(
            plan(&live, &listed, true, MAX_SHARE),
            Sweep::Delete(vec!["location|3".into(), "location|7".into()])
        );
        listed.remove("location|1");
        assert!(matches!(plan(&live, &listed, true, MAX_SHARE), Sweep::Confirm(k) if k.len() == 3));
        // A vendor answering an empty page for a whole kind.
        assert!(matches!(plan(&live, &HashSet::new(), true, MAX_SHARE), Sweep::Confirm(k) if k.len() == 10));
        // One entity of a small kind may always go.
        assert_eq!(
            plan(&keys(2), &HashSet::from(["location|0".to_string()]), true, MAX_SHARE),
            Sweep::Delete(vec!["location|1".into()])
        );
        assert_eq!(plan(&live, &live.iter().cloned().collect(), true, MAX_SHARE), Sweep::Keep);
    }
}
