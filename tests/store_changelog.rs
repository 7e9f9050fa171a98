//! RocksDB stores restored from their changelog on a real broker.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use geoclock::kafka::admin::ensure_topics;
use geoclock::kafka::topics::{Catalogue, Topic};
use geoclock::store::changelog::{begin_record, produce, records, restore, Restore};
use geoclock::store::rocks::{RocksConfig, RocksStore};
use geoclock::store::{Batch, StateStore};
use rdkafka::config::ClientConfig;
use rdkafka::producer::FutureProducer;
use support::broker::{Broker, Storage};

const STORE: &str = "vehicle-state";
const T: Duration = Duration::from_secs(20);

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("geoclock-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("max.in.flight.requests.per.connection", "1")
        .create()
        .expect("producer")
}

/// Batch `n`: puts for a sliding range of keys, deletes of older ones.
fn batch(n: i64) -> Batch {
    let mut b = Batch::default();
    for k in n * 10..n * 10 + 15 {
        b.put(STORE, format!("acme/v{k:04}").into_bytes(), format!("state {k} at batch {n}").into_bytes());
    }
    if n > 0 {
        b.delete(STORE, format!("acme/v{:04}", n * 10 - 10).into_bytes());
    }
    b.offset("geoclock.azuga.pings", 1, (n + 1) * 100);
    b
}

/// The protocol: changelog first (acknowledged), then the local commit.
fn apply(rt: &tokio::runtime::Runtime, p: &FutureProducer, changelog: &str, local: &RocksStore, b: &Batch) {
    rt.block_on(produce(p, changelog, 1, &records(STORE, b), T)).expect("changelog acknowledged");
    local.commit(b).expect("local commit");
}

fn opts<'a>(broker: &'a Broker, topic: &'a str, partition: i32, chunk: usize) -> Restore<'a> {
    Restore { brokers: broker.brokers(), topic, partition, store: STORE, chunk, timeout: T }
}

fn all(s: &RocksStore) -> Vec<(Vec<u8>, Vec<u8>)> {
    s.scan_prefix(STORE, b"").unwrap()
}

#[test]
fn fresh_instance_restores_state_and_offsets_and_resumes_incrementally() {
    let broker = Broker::start(Storage::Memory);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let catalogue = Catalogue { prefix: "st".into(), partitions: 2, replication: 1 };
    rt.block_on(ensure_topics(&broker.bootstrap(), &catalogue, T)).expect("topics");
    let changelog = catalogue.name(Topic::VehicleStateChangelog);
    let p = producer(&broker.bootstrap());

    let a = RocksStore::open(&dir("a"), &[STORE], &RocksConfig::default()).unwrap();
    for n in 0..20 {
        apply(&rt, &p, &changelog, &a, &batch(n));
    }

    let bdir = dir("b");
    let b = RocksStore::open(&bdir, &[STORE], &RocksConfig::default()).unwrap();
    let mut calls = 0;
    let stats = restore(&opts(&broker, &changelog, 1, 64), &b, |done, total| {
        calls += 1;
        assert!(done <= total);
    })
    .expect("restore");
    assert_eq!(stats.from, 0);
    assert!(stats.records > 300 && calls > 3, "{stats:?}, {calls} progress calls");
    assert_eq!(all(&a), all(&b), "restored state equals the original");
    assert_eq!(b.offset("geoclock.azuga.pings", 1).unwrap(), Some(2000), "input offset restored with it");

    // More batches; a second restore starts where the first stopped.
    for n in 20..25 {
        apply(&rt, &p, &changelog, &a, &batch(n));
    }
    let again = restore(&opts(&broker, &changelog, 1, 64), &b, |_, _| {}).expect("resume");
    assert_eq!(again.from, stats.to);
    assert_eq!(again.records, (again.to - again.from) as u64);
    assert_eq!(all(&a), all(&b));
    assert_eq!(b.offset("geoclock.azuga.pings", 1).unwrap(), Some(2500));

    // Nothing new: a no-op.
    let none = restore(&opts(&broker, &changelog, 1, 64), &b, |_, _| {}).unwrap();
    assert_eq!(none.records, 0);
    // The other partition is empty and restores to nothing.
    let empty = restore(&opts(&broker, &changelog, 0, 64), &b, |_, _| {}).unwrap();
    assert_eq!(empty.records, 0);
}

#[test]
fn changelog_survives_a_broker_restart() {
    let broker = Broker::start(Storage::Sqlite);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let catalogue = Catalogue { prefix: "st2".into(), partitions: 2, replication: 1 };
    rt.block_on(ensure_topics(&broker.bootstrap(), &catalogue, T)).expect("topics");
    let changelog = catalogue.name(Topic::VehicleStateChangelog);
    let a = RocksStore::open(&dir("c"), &[STORE], &RocksConfig::default()).unwrap();
    {
        let p = producer(&broker.bootstrap());
        for n in 0..5 {
            apply(&rt, &p, &changelog, &a, &batch(n));
        }
    }
    let broker = broker.restart();
    let b = RocksStore::open(&dir("d"), &[STORE], &RocksConfig::default()).unwrap();
    restore(&opts(&broker, &changelog, 1, 1000), &b, |_, _| {}).expect("restore after restart");
    assert_eq!(all(&a), all(&b));
    assert_eq!(b.offset("geoclock.azuga.pings", 1).unwrap(), Some(500));
}

#[test]
fn a_batch_cut_short_is_not_applied_and_its_plan_is_returned() {
    let broker = Broker::start(Storage::Memory);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let catalogue = Catalogue { prefix: "st3".into(), partitions: 2, replication: 1 };
    rt.block_on(ensure_topics(&broker.bootstrap(), &catalogue, T)).expect("topics");
    let changelog = catalogue.name(Topic::VehicleStateChangelog);
    let a = RocksStore::open(&dir("e"), &[STORE], &RocksConfig::default()).unwrap();
    let p = producer(&broker.bootstrap());
    // Batch 0 complete; batch 1 begun, some writes, then the "crash".
    rt.block_on(produce(&p, &changelog, 1, &[begin_record(b"plan 0".to_vec())], T)).unwrap();
    apply(&rt, &p, &changelog, &a, &batch(0));
    rt.block_on(produce(&p, &changelog, 1, &[begin_record(b"plan 1".to_vec())], T)).unwrap();
    let cut: Vec<_> = records(STORE, &batch(1)).into_iter().take(5).collect();
    rt.block_on(produce(&p, &changelog, 1, &cut, T)).unwrap();
    let b = RocksStore::open(&dir("f"), &[STORE], &RocksConfig::default()).unwrap();
    let stats = restore(&opts(&broker, &changelog, 1, 1000), &b, |_, _| {}).unwrap();
    assert_eq!(all(&a), all(&b), "only the complete batch is applied");
    assert_eq!(stats.incomplete.as_deref(), Some(&b"plan 1"[..]));
    assert_eq!(b.offset("geoclock.azuga.pings", 1).unwrap(), Some(100));
    // The cut batch re-done completely: the next restore applies it and
    // reports nothing incomplete.
    rt.block_on(produce(&p, &changelog, 1, &[begin_record(b"plan 1".to_vec())], T)).unwrap();
    apply(&rt, &p, &changelog, &a, &batch(1));
    let stats = restore(&opts(&broker, &changelog, 1, 1000), &b, |_, _| {}).unwrap();
    assert_eq!(stats.incomplete, None);
    assert_eq!(all(&a), all(&b));
    assert_eq!(b.offset("geoclock.azuga.pings", 1).unwrap(), Some(200));
}
