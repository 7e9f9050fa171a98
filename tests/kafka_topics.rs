//! `geoclock topics create` and the catalogue against a real broker.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use geoclock::kafka::admin::{admin_client, ensure_topics, partition_counts, AdminError};
use geoclock::kafka::topics::{Catalogue, Topic, TopicError};
use rdkafka::admin::{AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::Message;
use support::broker::{Broker, Storage};

const T: Duration = Duration::from_secs(20);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime")
}

#[test]
fn creates_every_topic_once_and_is_idempotent() {
    let broker = Broker::start(Storage::Memory);
    let rt = runtime();
    let catalogue = Catalogue { prefix: "t1".into(), partitions: 3, replication: 1 };
    let first = rt.block_on(ensure_topics(&broker.bootstrap(), &catalogue, T)).expect("ensure");
    assert_eq!(first.created.len(), Topic::ALL.len(), "{first:?}");
    assert!(first.partitions.values().all(|p| *p == 3), "{first:?}");

    let again = rt.block_on(ensure_topics(&broker.bootstrap(), &catalogue, T)).expect("ensure again");
    assert!(again.created.is_empty());
    assert_eq!(again.existing.len(), Topic::ALL.len());
}

#[test]
fn missing_group_members_follow_existing_partitions_and_mismatch_is_refused() {
    let broker = Broker::start(Storage::Memory);
    let rt = runtime();
    let catalogue = Catalogue { prefix: "t2".into(), partitions: 6, replication: 1 };
    let admin = std::sync::Arc::new(admin_client(&broker.bootstrap()).unwrap());
    let create = |name: &str, n: i32| {
        let t = NewTopic::new(name, n, TopicReplication::Fixed(1));
        let r = rt.block_on(admin.create_topics([&t], &AdminOptions::new())).unwrap();
        assert!(r[0].is_ok(), "{r:?}");
    };
    // An operator made the pings topic with 4 partitions: the repartition
    // topic and the vehicle changelog must follow it, not the default 6.
    create(&catalogue.name(Topic::Pings), 4);
    let report = rt.block_on(ensure_topics(&broker.bootstrap(), &catalogue, T)).expect("ensure");
    assert_eq!(report.partitions[&catalogue.name(Topic::FenceRoutes)], 4);
    assert_eq!(report.partitions[&catalogue.name(Topic::VehicleStateChangelog)], 4);
    assert_eq!(report.partitions[&catalogue.name(Topic::Commands)], 6);

    // Another deployment prefix where the co-partitioned topics disagree.
    let bad = Catalogue { prefix: "t3".into(), ..catalogue };
    create(&bad.name(Topic::Pings), 4);
    create(&bad.name(Topic::FenceRoutes), 2);
    let err = rt.block_on(ensure_topics(&broker.bootstrap(), &bad, T)).expect_err("mismatch refused");
    assert!(matches!(err, AdminError::Topics(TopicError::PartitionMismatch { .. })), "{err}");
    assert!(err.to_string().contains("t3.azuga.pings=4"), "{err}");
    // Nothing else was created for the refused deployment.
    let counts: BTreeMap<String, i32> = rt.block_on(partition_counts(&broker.bootstrap(), T)).unwrap();
    assert!(!counts.contains_key(&bad.name(Topic::Commands)));
}

#[test]
fn cli_creates_topics_and_records_flow_through_them() {
    let broker = Broker::start(Storage::Memory);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_geoclock"))
        .args(["topics", "create", "--brokers", &broker.bootstrap(), "--prefix", "cli", "--partitions", "2"])
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("created  cli.azuga.pings (2 partitions)"), "{stdout}");

    // Produce keyed records with the idempotent producer and read them back.
    let topic = "cli.azuga.pings";
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("enable.idempotence", "true")
        .set("max.in.flight.requests.per.connection", "1")
        .create()
        .expect("producer");
    for i in 0..100 {
        let key = format!("acme/v{}", i % 7);
        let payload = format!("ping {i}");
        producer.send(BaseRecord::to(topic).key(&key).payload(&payload)).expect("queued");
    }
    producer.flush(T).expect("flushed");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "cli-test")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut seen = BTreeMap::<String, Vec<i32>>::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seen.values().map(Vec::len).sum::<usize>() < 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} records came back",
            seen.values().map(Vec::len).sum::<usize>()
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
            // The audit computes where the processor's producer puts a key.
            assert_eq!(m.partition(), geoclock::audit::input::partition_of(key.as_bytes(), 2), "{key}");
            let body = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
            let n: i32 = body.trim_start_matches("ping ").parse().unwrap();
            seen.entry(key).or_default().push(n);
        }
    }
    // Per key, order is kept (one key, one partition).
    for (key, ns) in &seen {
        assert!(ns.windows(2).all(|w| w[0] < w[1]), "{key}: {ns:?}");
    }
    assert_eq!(seen.len(), 7);
}

/// A topic's configs as the broker describes them.
fn configs(rt: &tokio::runtime::Runtime, brokers: &str, topic: &str) -> BTreeMap<String, Option<String>> {
    let admin = admin_client(brokers).unwrap();
    let spec = ResourceSpecifier::Topic(topic);
    let described = rt.block_on(admin.describe_configs([&spec], &AdminOptions::new())).expect("describe");
    let resource = described.into_iter().next().unwrap().expect("described");
    resource.entries.into_iter().map(|e| (e.name, e.value)).collect()
}

fn topics_create(brokers: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_geoclock"))
        .args(["topics", "create", "--brokers", brokers, "--partitions", "1"])
        .args(args)
        .output()
        .expect("runs")
}

#[test]
fn topics_keep_the_audit_horizon_and_an_existing_deployment_is_brought_to_it() {
    let broker = Broker::start(Storage::Memory);
    let rt = runtime();
    let brokers = broker.bootstrap();
    let days = |n: i64| Some((n * 86_400_000).to_string());

    // New topics are created with it.
    let out = topics_create(&brokers, &["--prefix", "fresh", "--audit-days", "36"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(configs(&rt, &brokers, "fresh.azuga.pings")["retention.ms"], days(36));
    let appts = configs(&rt, &brokers, "fresh.servicetrade.appointments");
    assert_eq!(appts["min.compaction.lag.ms"], days(36));
    assert_eq!(appts["delete.retention.ms"], days(36));
    assert_eq!(appts["cleanup.policy"].as_deref(), Some("compact"));

    // An existing deployment, made before audit_days, with an operator's own config.
    let admin = std::sync::Arc::new(admin_client(&brokers).unwrap());
    let old = Catalogue { prefix: "old".into(), partitions: 1, replication: 1 };
    for spec in old.specs() {
        let policy = if spec.compacted { "compact" } else { "delete" };
        let t = NewTopic::new(&spec.name, 1, TopicReplication::Fixed(1))
            .set("cleanup.policy", policy)
            .set("max.message.bytes", "2000000");
        let r = rt.block_on(admin.create_topics([&t], &AdminOptions::new())).unwrap();
        assert!(r[0].is_ok(), "{r:?}");
    }
    let out = topics_create(&brokers, &["--prefix", "old", "--audit-days", "40"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("audit_days 40: pings, clock events, ticks, commands and results are kept 40 days"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("updated  old.azuga.pings: retention.ms")
                && l.ends_with("-> 3456000000 (audit_days 40)")),
        "{stdout}"
    );
    for (topic, key) in [
        ("old.azuga.pings", "retention.ms"),
        ("old.servicetrade.clock-events", "retention.ms"),
        ("old.processor.ticks", "retention.ms"),
        ("old.commands", "retention.ms"),
        ("old.results", "retention.ms"),
        ("old.servicetrade.appointments", "min.compaction.lag.ms"),
        ("old.azuga.pairings", "delete.retention.ms"),
    ] {
        let c = configs(&rt, &brokers, topic);
        assert_eq!(c[key], days(40), "{topic} {key}");
        assert_eq!(c["max.message.bytes"].as_deref(), Some("2000000"), "{topic}: the operator's config kept");
    }
    assert_ne!(
        configs(&rt, &brokers, "old.processor.appointment-state-changelog")
            .get("min.compaction.lag.ms")
            .cloned()
            .flatten(),
        days(40)
    );

    // Again: nothing left to change.
    let again = topics_create(&brokers, &["--prefix", "old", "--audit-days", "40"]);
    assert!(again.status.success());
    assert!(!String::from_utf8_lossy(&again.stdout).contains("updated"), "{}", String::from_utf8_lossy(&again.stdout));

    // Shorter than the report's retention: refused, nothing touched.
    let short = topics_create(&brokers, &["--prefix", "old", "--audit-days", "20"]);
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("retention_days (30)"));
    assert_eq!(configs(&rt, &brokers, "old.azuga.pings")["retention.ms"], days(40));
}
