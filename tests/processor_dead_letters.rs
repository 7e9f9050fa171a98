//! Malformed input never stops the processor: bad framing, an unknown schema
//! id, an undecodable datum, a value out of range, a record the engine
//! rejects and records of a tenant the tenants file does not list each go
//! to the dead-letter topic with the reason, topic, partition and offset,
//! and the good records around them are processed.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use geoclock::engine::Event;
use geoclock::kafka::registry::FileRegistry;
use geoclock::kafka::topics::Topic;
use geoclock::processor::{Config, Processor};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

const T: Duration = Duration::from_secs(30);

fn drain(brokers: &str, topic: &str) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    support::kafka::read_to_end(brokers, topic, 1, T)
}

#[test]
fn malformed_records_are_dead_lettered_and_processing_goes_on() {
    let support::ScenarioWorld { broker: _broker, brokers, catalogue, rt, codec, scenario, pure } =
        support::scenario_world("dlq", "arrival_basic.yaml");

    let pings = catalogue.name(Topic::Pings);
    let users = catalogue.name(Topic::Users);
    let pairings = catalogue.name(Topic::Pairings);
    let good = |e: &Event| {
        let r = codec.encode_event(&scenario.tenant, e).unwrap();
        (catalogue.name(r.topic), r.key, r.value)
    };
    // A valid ping datum with a schema id nobody registered.
    let mut unknown_schema = good(&scenario.events[1]).2.unwrap();
    unknown_schema[1..5].copy_from_slice(&0x7fff_fff0u32.to_be_bytes());
    // A ping datum cut short: framed correctly, undecodable.
    let mut bad_lat = good(&scenario.events[1]).2.unwrap();
    bad_lat.truncate(7);
    let mut records: Vec<(String, Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    let events = scenario.all_events();
    for (i, e) in events.iter().enumerate() {
        records.push(good(e));
        if i == 2 {
            records.push((pings.clone(), b"acme/v1".to_vec(), Some(b"not avro at all".to_vec())));
            records.push((pings.clone(), b"acme/v1".to_vec(), Some(unknown_schema.clone())));
            records.push((pings.clone(), b"acme/v1".to_vec(), Some(bad_lat.clone())));
            records.push((users.clone(), b"no-slash-key".to_vec(), Some(b"\0\0\0\0\x01".to_vec())));
            // A pairing whose `to` is before its `from`: decodes, but the engine rejects it.
            let mut bad = scenario.azuga.pairings[0].clone();
            bad.vehicle = geoclock::model::Id::text("v9");
            bad.to = Some(geoclock::model::Ts(bad.from.0 - 1));
            let (_, key, value) = good(&Event::Pairing(bad));
            records.push((pairings.clone(), key, value));
            // Well-formed records of a tenant nobody configured.
            for e in [&scenario.events[1], &Event::User(scenario.servicetrade.users[0].clone())] {
                let r = codec.encode_event("intruder", e).unwrap();
                records.push((catalogue.name(r.topic), r.key, r.value));
            }
        }
    }
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    rt.block_on(async {
        for (i, (topic, key, value)) in records.iter().enumerate() {
            let mut r = FutureRecord::<Vec<u8>, Vec<u8>>::to(topic).key(key).timestamp(1_600_000_000_000 + i as i64);
            if let Some(v) = value {
                r = r.payload(v);
            }
            producer.send(r, T).await.map_err(|(e, _)| e).unwrap_or_else(|e| panic!("{topic}: {e}"));
        }
    });

    let dir = std::env::temp_dir().join(format!("geoclock-dlq-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = Config::new(&brokers, catalogue.clone(), dir.clone(), Arc::new(FileRegistry::in_memory()));
    // An id nobody registers is poison after the grace; here at once.
    config.unknown_schema_grace = Duration::ZERO;
    config.group_id = "dlq-group".into();
    config.tenants.tenants.insert(scenario.tenant.clone(), scenario.settings.clone());
    // The tenants file lists the scenario's tenant only.
    config.tenants.any_tenant = false;
    let proc = Processor::start(config).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(proc.status().len() == 2 && proc.status().iter().all(|s| s.idle)) {
        assert!(Instant::now() < deadline, "processor never idle: {:?}", proc.status());
        std::thread::sleep(Duration::from_millis(50));
    }
    proc.stop().unwrap();

    let dead: Vec<_> = drain(&brokers, &catalogue.name(Topic::DeadLetters))
        .into_iter()
        .map(|(_, v)| codec.decode_dead_letter(&v).unwrap())
        .collect();
    // Each input's dead letters in its order; pings (vehicle stage) and
    // entities (appointment stage) come from two tasks.
    let of = |topic: &str| -> Vec<&str> { dead.iter().filter(|d| d.topic == topic).map(|d| d.kind.as_str()).collect() };
    assert_eq!(dead.len(), 7, "{dead:#?}");
    assert_eq!(of(&pings), vec!["framing", "unknown_schema", "decode", "unknown_tenant"], "{dead:#?}");
    assert_eq!([of(&users), of(&pairings)], [vec!["invalid_value", "unknown_tenant"], vec!["rejected"]], "{dead:#?}");
    assert!(dead
        .iter()
        .filter(|d| d.kind == "unknown_tenant")
        .all(|d| d.reason.contains("\"intruder\" is not in the tenants file")));
    for d in &dead {
        assert!(!d.reason.is_empty() && d.offset >= 0 && d.partition == 0 && d.component == "processor", "{d:?}");
        assert!(d.value.is_some());
    }
    // Everything good was processed: the same commands as the pure run.
    let commands: Vec<_> = drain(&brokers, &catalogue.name(Topic::Commands))
        .into_iter()
        .map(|(_, v)| codec.decode_command(&v).unwrap().command)
        .collect();
    assert_eq!(commands, pure.commands);
    let _ = std::fs::remove_dir_all(&dir);
}
