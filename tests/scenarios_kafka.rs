//! Every scenario file through real topics on a real broker (nisshi) and
//! the real processor, compared with the pure engine run: with one
//! partition the printed JSON is byte-identical; with three, every task
//! reads the entities and only its own vehicles' pings, and the distinct
//! commands and the merged report must still be the same.

mod support;

use std::time::Duration;

use geoclock::scenario::kafka::ViaKafka;
use geoclock::scenario::Scenario;
use support::broker::{Broker, Storage};
use support::scenario_files;

fn canonical_commands(json: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let mut cmds: Vec<String> = v["commands"].as_array().unwrap().iter().map(|c| c.to_string()).collect();
    cmds.sort();
    cmds
}

fn report(json: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["report"].clone()
}

#[test]
fn every_scenario_gives_the_same_output_through_kafka() {
    let broker = Broker::start(Storage::Memory);
    let files = scenario_files();
    let failures = std::sync::Mutex::new(Vec::new());
    // A few scenarios at a time: each run has its own topics and group.
    std::thread::scope(|s| {
        for chunk in files.chunks(files.len().div_ceil(4)) {
            let (broker, failures) = (&broker, &failures);
            s.spawn(move || {
                for file in chunk {
                    let sc = Scenario::load(file).unwrap();
                    let pure = sc.run().unwrap().to_json();
                    for partitions in [1, 3] {
                        let opts = ViaKafka {
                            brokers: broker.brokers().to_string(),
                            partitions,
                            timeout: Duration::from_secs(60),
                            state_dir: None,
                        };
                        let name = format!("{} ({partitions} partitions)", file.file_name().unwrap().to_string_lossy());
                        let kafka = match sc.run_via_kafka(&opts) {
                            Ok(o) => o.to_json(),
                            Err(e) => {
                                failures.lock().unwrap().push(format!("{name}: {e}"));
                                continue;
                            }
                        };
                        let same = if partitions == 1 {
                            kafka == pure
                        } else {
                            canonical_commands(&kafka) == canonical_commands(&pure) && report(&kafka) == report(&pure)
                        };
                        if !same {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("{name}: output differs\n--- pure\n{pure}\n--- kafka\n{kafka}"));
                        }
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{} runs differ:\n{}", failures.len(), failures.join("\n\n"));
}
