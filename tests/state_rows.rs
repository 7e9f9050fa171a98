//! The engine's state survives being written out as rows and read back: for
//! every scenario file and every point in it, an engine rebuilt from the rows
//! drained so far, fed the rest of the events, gives exactly the commands and
//! report of the uninterrupted run. This is what makes restoring a processor
//! partition from RocksDB or its changelog decide as if nothing happened.

mod support;

use std::collections::BTreeMap;

use geoclock::engine::route::run_split;
use geoclock::engine::{Command, Engine, Event, Role};
use geoclock::report::rows;
use geoclock::scenario::Scenario;
use support::scenario_files;

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap()
}

#[test]
fn every_scenario_restores_at_every_point() {
    let files = scenario_files();
    assert!(files.len() >= 20, "scenario files missing");
    let mut checked = 0;
    for file in files {
        let sc = Scenario::load(&file).unwrap();
        let events = sc.all_events();
        let pure = sc.run().unwrap();
        // One tracked run, draining after every event into a key-value map.
        let mut tracked = Engine::new(sc.tenant.clone(), sc.settings.clone()).unwrap();
        tracked.track_changes();
        let mut store: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut before: Vec<Command> = Vec::new();
        for k in 0..=events.len() {
            // Restore from the rows so far and finish the run.
            let stored = store.iter().map(|(k, v)| (k.as_slice(), v.as_slice()));
            let mut restored = Engine::from_rows(sc.tenant.clone(), sc.settings.clone(), stored)
                .unwrap_or_else(|e| panic!("{}: restore at {k}: {e}", file.display()));
            let mut after = before.clone();
            for e in &events[k..] {
                restored.handle(e, &mut after).unwrap();
            }
            assert_eq!(
                json(&after),
                json(&pure.commands),
                "{}: commands differ after restoring at event {k}",
                file.display()
            );
            assert_eq!(
                json(&rows(&restored)),
                json(&pure.report),
                "{}: report differs after restoring at event {k}",
                file.display()
            );
            checked += 1;
            if k < events.len() {
                tracked.handle(&events[k], &mut before).unwrap();
                for (key, value) in tracked.drain_rows() {
                    match value {
                        Some(v) => store.insert(key, v),
                        None => store.remove(&key),
                    };
                }
            }
        }
        // The tracked run itself is unchanged by tracking.
        assert_eq!(json(&before), json(&pure.commands), "{}", file.display());
    }
    assert!(checked > 200);
}

/// Rows drained from a tracked engine, as a store holds them.
#[derive(Default)]
struct Store(BTreeMap<Vec<u8>, Vec<u8>>);

impl Store {
    fn absorb(&mut self, engine: &mut Engine) {
        for (key, value) in engine.drain_rows() {
            match value {
                Some(v) => self.0.insert(key, v),
                None => self.0.remove(&key),
            };
        }
    }

    fn restore(&self, sc: &Scenario, role: Role) -> Engine {
        let stored = self.0.iter().map(|(k, v)| (k.as_slice(), v.as_slice()));
        let mut e = Engine::from_rows(sc.tenant.clone(), sc.settings.clone(), stored).expect("restore");
        e.set_role(role);
        e.track_changes();
        e
    }
}

/// One event through the two stages, as the processor runs them.
fn split_step(one: &mut Engine, two: &mut Engine, event: &Event, out: &mut Vec<Command>) {
    if let Event::Ping(_) = event {
        let _ = two.handle(event, out);
        return;
    }
    if one.handle(event, out).is_err() {
        return;
    }
    for r in one.drain_routes() {
        let _ = two.handle(&Event::Route(r), out);
    }
}

/// The same for the two-stage topology: both stages' engines, rebuilt from
/// the rows each drained so far at any point (a task restored from its
/// changelog), decide the rest of the run exactly as the uninterrupted
/// split run does.
#[test]
fn both_stages_restore_at_every_point() {
    let mut checked = 0;
    for file in scenario_files() {
        let sc = Scenario::load(&file).unwrap();
        let events = sc.all_events();
        let (_, _, pure) = run_split(&sc.tenant, &sc.settings, &events, 1, |_| 0).unwrap();
        let fresh = |role: Role| {
            let mut e = Engine::new(sc.tenant.clone(), sc.settings.clone()).unwrap();
            e.set_role(role);
            e.track_changes();
            e
        };
        let (mut one, mut two) = (fresh(Role::Appointments), fresh(Role::Vehicles));
        let (mut rows_one, mut rows_two) = (Store::default(), Store::default());
        let mut before: Vec<Command> = Vec::new();
        // Stage one's rows as they were at every earlier point.
        let mut history: Vec<Store> = Vec::new();
        for k in 0..=events.len() {
            // Stage one restored further back than stage two (its task
            // crashed earlier in its own changelog): re-processing events
            // j..k re-sends routes stage two has applied already, which
            // must change nothing there.
            for j in [0, k.saturating_sub(3)] {
                let (Some(rows), true) = (history.get(j), j < k) else { continue };
                let mut r1 = rows.restore(&sc, Role::Appointments);
                let mut r2 = rows_two.restore(&sc, Role::Vehicles);
                let (mut again, mut reaction) = (Vec::new(), Vec::new());
                for e in events[j..k].iter().filter(|e| !matches!(e, Event::Ping(_))) {
                    if r1.handle(e, &mut again).is_ok() {
                        for r in r1.drain_routes() {
                            let _ = r2.handle(&Event::Route(r), &mut reaction);
                        }
                    }
                }
                assert_eq!(
                    reaction,
                    Vec::new(),
                    "{}: routes re-sent from {j} to {k} decided something",
                    file.display()
                );
                let mut after = before.clone();
                for e in &events[k..] {
                    split_step(&mut r1, &mut r2, e, &mut after);
                }
                assert_eq!(
                    after,
                    pure,
                    "{}: commands differ with stage one restored at {j}, two at {k}",
                    file.display()
                );
            }
            history.push(Store(rows_one.0.clone()));
            let mut r1 = rows_one.restore(&sc, Role::Appointments);
            let mut r2 = rows_two.restore(&sc, Role::Vehicles);
            let mut after = before.clone();
            for e in &events[k..] {
                split_step(&mut r1, &mut r2, e, &mut after);
            }
            // Compared as values: a restored id is text where the input's
            // was a number (the same id; Avro carries both as text).
            assert_eq!(after, pure, "{}: commands differ after restoring at event {k}", file.display());
            checked += 1;
            if k < events.len() {
                split_step(&mut one, &mut two, &events[k], &mut before);
                rows_one.absorb(&mut one);
                rows_two.absorb(&mut two);
            }
        }
        assert_eq!(before, pure, "{}", file.display());
    }
    assert!(checked > 200);
}
