//! RocksDB stores restored from their changelog on a real broker.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use geoclock::kafka::admin::ensure_topics;
use geoclock::kafka::produce::{producer_config, Acks};
use geoclock::kafka::topics::{Catalogue, Topic};
use geoclock::store::changelog::{
    begin_record, claim, claim_key, produce, produce_as, records, restore, retire_claims, Producer, Restore,
};
use geoclock::store::rocks::{RocksConfig, RocksStore};
use geoclock::store::{Batch, StateStore};
use support::broker::{Broker, Storage};

const STORE: &str = "vehicle-state";
const T: Duration = Duration::from_secs(20);

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("geoclock-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn producer(brokers: &str) -> Producer {
    producer_config(brokers, "changelog-test")
        .set("max.in.flight.requests.per.connection", "1")
        .create_with_context(Acks("test"))
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
fn apply(p: &Producer, changelog: &str, local: &RocksStore, b: &Batch) {
    produce(p, changelog, 1, &records(STORE, b), T).expect("changelog acknowledged");
    local.commit(b).expect("local commit");
}

/// A broker and a fresh changelog topic (2 partitions).
fn setup(storage: Storage, prefix: &str) -> (Broker, String) {
    let broker = Broker::start(storage);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let catalogue = Catalogue { prefix: prefix.into(), partitions: 2, replication: 1 };
    rt.block_on(ensure_topics(&broker.bootstrap(), &catalogue, T)).expect("topics");
    (broker, catalogue.name(Topic::VehicleStateChangelog))
}

fn opts<'a>(broker: &'a Broker, topic: &'a str, partition: i32, chunk: usize) -> Restore<'a> {
    Restore { brokers: broker.brokers(), topic, partition, store: STORE, chunk, timeout: T }
}

fn all(s: &RocksStore) -> Vec<(Vec<u8>, Vec<u8>)> {
    s.scan_prefix(STORE, b"").unwrap()
}

#[test]
fn fresh_instance_restores_state_and_offsets_and_resumes_incrementally() {
    let (broker, changelog) = setup(Storage::Memory, "st");
    let p = producer(&broker.bootstrap());

    let a = RocksStore::open(&dir("a"), &[STORE], &RocksConfig::default()).unwrap();
    for n in 0..20 {
        apply(&p, &changelog, &a, &batch(n));
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
        apply(&p, &changelog, &a, &batch(n));
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
    let (broker, changelog) = setup(Storage::Sqlite, "st2");
    let a = RocksStore::open(&dir("c"), &[STORE], &RocksConfig::default()).unwrap();
    {
        let p = producer(&broker.bootstrap());
        for n in 0..5 {
            apply(&p, &changelog, &a, &batch(n));
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
    let (broker, changelog) = setup(Storage::Memory, "st3");
    let a = RocksStore::open(&dir("e"), &[STORE], &RocksConfig::default()).unwrap();
    let p = producer(&broker.bootstrap());
    // Batch 0 complete; batch 1 begun, some writes, then the "crash".
    produce(&p, &changelog, 1, &[begin_record(b"plan 0".to_vec())], T).unwrap();
    apply(&p, &changelog, &a, &batch(0));
    produce(&p, &changelog, 1, &[begin_record(b"plan 1".to_vec())], T).unwrap();
    let cut: Vec<_> = records(STORE, &batch(1)).into_iter().take(5).collect();
    produce(&p, &changelog, 1, &cut, T).unwrap();
    let b = RocksStore::open(&dir("f"), &[STORE], &RocksConfig::default()).unwrap();
    let stats = restore(&opts(&broker, &changelog, 1, 1000), &b, |_, _| {}).unwrap();
    assert_eq!(all(&a), all(&b), "only the complete batch is applied");
    assert_eq!(stats.incomplete.as_deref(), Some(&b"plan 1"[..]));
    assert_eq!(b.offset("geoclock.azuga.pings", 1).unwrap(), Some(100));
    // The cut batch re-done completely: the next restore applies it and
    // reports nothing incomplete.
    produce(&p, &changelog, 1, &[begin_record(b"plan 1".to_vec())], T).unwrap();
    apply(&p, &changelog, &a, &batch(1));
    let stats = restore(&opts(&broker, &changelog, 1, 1000), &b, |_, _| {}).unwrap();
    assert_eq!(stats.incomplete, None);
    assert_eq!(all(&a), all(&b));
    assert_eq!(b.offset("geoclock.azuga.pings", 1).unwrap(), Some(200));
}

/// A zombie: owner A keeps appending after owner B claimed the partition.
/// Restores (fresh, and incremental ones that already passed the claim)
/// apply A's batches from before the claim and B's, never A's later ones;
/// A's batch cut by the claim hands its plan over and its writes are dropped.
#[test]
fn records_of_a_superseded_owner_are_never_applied() {
    let (broker, changelog) = setup(Storage::Memory, "st4");
    let p = producer(&broker.bootstrap());
    let send = |recs: &[(Vec<u8>, Option<Vec<u8>>)], owner: i64| {
        produce_as(&p, &changelog, 1, recs, Some(owner), T).expect("acknowledged");
    };
    let put = |k: &str, v: &str, next: i64| {
        let mut b = Batch::default();
        b.put(STORE, k.as_bytes().to_vec(), v.as_bytes().to_vec());
        b.offset("pings", 1, next);
        records(STORE, &b)
    };
    let a = claim(&p, &changelog, 1, T).unwrap();
    send(&[begin_record(b"a0".to_vec())], a);
    send(&put("acme/v1", "a0", 10), a);
    // A begins batch a1 and writes part of it; then B claims.
    send(&[begin_record(b"a1".to_vec())], a);
    send(&put("acme/v2", "a1 cut", 20)[..1], a);
    let b = claim(&p, &changelog, 1, T).unwrap();
    assert!(b > a);
    // The replica-style incremental restore right after the claim.
    let inc = RocksStore::open(&dir("g"), &[STORE], &RocksConfig::default()).unwrap();
    let stats = restore(&opts(&broker, &changelog, 1, 1000), &inc, |_, _| {}).unwrap();
    assert_eq!(stats.incomplete.as_deref(), Some(&b"a1"[..]), "the cut batch's plan is handed over");
    // A, not knowing, finishes a1 and commits another batch; B re-does a1.
    send(&put("acme/v2", "a1 rest", 20)[1..], a);
    send(&[begin_record(b"a2".to_vec())], a);
    send(&put("acme/v3", "zombie", 30), a);
    send(&[begin_record(b"a1".to_vec())], b);
    send(&put("acme/v2", "a1 by b", 20), b);
    send(&put("acme/v4", "a1 by b", 20), b);
    send(&[begin_record(b"b1".to_vec())], a);
    send(&put("acme/v5", "zombie again", 40), a);
    for store in [RocksStore::open(&dir("h"), &[STORE], &RocksConfig::default()).unwrap(), inc] {
        let stats = restore(&opts(&broker, &changelog, 1, 2), &store, |_, _| {}).unwrap();
        assert!(stats.fenced >= 6, "{stats:?}");
        assert_eq!(stats.incomplete, None, "A's later begin markers are fenced too");
        let rows: Vec<(String, String)> = all(&store)
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
            .collect();
        let want = [("acme/v1", "a0"), ("acme/v2", "a1 by b"), ("acme/v4", "a1 by b")];
        assert_eq!(rows, want.map(|(k, v)| (k.to_string(), v.to_string())).to_vec());
        assert_eq!(store.offset("pings", 1).unwrap(), Some(20));
    }
}

/// Claims have keys of their own, so compaction cannot erase one on account
/// of a later one; a restore that saw the whole stretch after a claim, up to
/// the next one, with no record of an older epoch in it, reports the claim
/// stale, and tombstoning it changes no restore. A claim whose stretch
/// holds a zombie's records is kept.
#[test]
fn claims_are_their_own_keys_and_only_those_guarding_nothing_are_retired() {
    let (broker, changelog) = setup(Storage::Memory, "st5");
    let p = producer(&broker.bootstrap());
    let send = |recs: &[(Vec<u8>, Option<Vec<u8>>)], owner: i64| {
        produce_as(&p, &changelog, 1, recs, Some(owner), T).expect("acknowledged");
    };
    let put = |k: &str, v: &str, next: i64| {
        let mut b = Batch::default();
        b.put(STORE, k.as_bytes().to_vec(), v.as_bytes().to_vec());
        b.offset("pings", 1, next);
        records(STORE, &b)
    };
    let a = claim(&p, &changelog, 1, T).unwrap();
    send(&put("acme/v1", "a", 10), a);
    let b = claim(&p, &changelog, 1, T).unwrap();
    send(&put("acme/v1", "b", 20), b);
    // A zombie of A writes after B's claim; then C claims.
    send(&put("acme/v9", "zombie", 15), a);
    let c = claim(&p, &changelog, 1, T).unwrap();
    send(&put("acme/v2", "c", 30), c);
    let want = |store: &RocksStore| {
        let rows: Vec<(String, String)> = all(store)
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
            .collect();
        assert_eq!(rows, [("acme/v1", "b"), ("acme/v2", "c")].map(|(k, v)| (k.to_string(), v.to_string())).to_vec());
        assert_eq!(store.offset("pings", 1).unwrap(), Some(30));
    };
    let fresh = RocksStore::open(&dir("claims-1"), &[STORE], &RocksConfig::default()).unwrap();
    let stats = restore(&opts(&broker, &changelog, 1, 1000), &fresh, |_, _| {}).unwrap();
    want(&fresh);
    assert_eq!(stats.fenced, 2, "the zombie's write and marker: {stats:?}");
    // A's stretch (to B's claim) is clean; B's holds the zombie's records.
    assert_eq!(stats.stale_claims.len(), 1, "{stats:?}");
    assert!(stats.stale_claims[0].starts_with(&claim_key(0)[..7]));
    retire_claims(&p, &changelog, 1, &stats.stale_claims, c, T).unwrap();
    // What compaction may then leave: every record but A's claim (and its
    // tombstone). B's claim, a key of its own, is still there.
    let again = RocksStore::open(&dir("claims-2"), &[STORE], &RocksConfig::default()).unwrap();
    let stats = restore(&opts(&broker, &changelog, 1, 1000), &again, |_, _| {}).unwrap();
    want(&again);
    assert_eq!(stats.fenced, 2);
    // Incremental: nothing new is stale (B's claim still guards the zombie's records).
    let stats = restore(&opts(&broker, &changelog, 1, 1000), &again, |_, _| {}).unwrap();
    assert!(stats.stale_claims.is_empty(), "{stats:?}");
}

/// A newer owner's records seen without its claim (retired, then removed
/// by compaction) still end an older owner's unfinished batch: its held
/// writes are never applied by the newer owner's markers.
#[test]
fn writes_an_older_owner_left_unfinished_are_dropped_at_a_newer_epoch() {
    let (broker, changelog) = setup(Storage::Memory, "st6");
    let p = producer(&broker.bootstrap());
    let send = |recs: &[(Vec<u8>, Option<Vec<u8>>)], owner: i64| {
        produce_as(&p, &changelog, 1, recs, Some(owner), T).expect("acknowledged");
    };
    let mut b0 = Batch::default();
    b0.put(STORE, b"acme/v1".to_vec(), b"a".to_vec());
    b0.offset("pings", 1, 10);
    send(&records(STORE, &b0), 5);
    // Owner 5 begins a batch, writes, crashes; owner 50's records follow.
    send(&[begin_record(b"cut".to_vec())], 5);
    send(&[(b"acme/v8".to_vec(), Some(b"unfinished".to_vec()))], 5);
    let mut b1 = Batch::default();
    b1.put(STORE, b"acme/v2".to_vec(), b"b".to_vec());
    b1.offset("pings", 1, 20);
    send(&[begin_record(b"b1".to_vec())], 50);
    send(&records(STORE, &b1), 50);
    let s = RocksStore::open(&dir("epoch"), &[STORE], &RocksConfig::default()).unwrap();
    restore(&opts(&broker, &changelog, 1, 1000), &s, |_, _| {}).unwrap();
    let keys: Vec<Vec<u8>> = all(&s).into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, vec![b"acme/v1".to_vec(), b"acme/v2".to_vec()]);
}
