//! The engine's state survives being written out as rows and read back: for
//! every scenario file and every point in it, an engine rebuilt from the rows
//! drained so far, fed the rest of the events, gives exactly the commands and
//! report of the uninterrupted run. This is what makes restoring a processor
//! partition from RocksDB or its changelog decide as if nothing happened.

mod support;

use std::collections::BTreeMap;

use geoclock::engine::{Command, Engine};
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
