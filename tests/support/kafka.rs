//! Reading and writing topics in tests.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

/// A record as read: topic name, key, value.
pub type Record = (String, Vec<u8>, Option<Vec<u8>>);

/// A record as read from one partition: offset, key, value.
type AtOffset = (i64, Option<Vec<u8>>, Vec<u8>);

/// Reads `topics` (every partition of `partitions`) from the beginning into
/// memory, on a background thread, for as long as the test runs.
pub fn tail(brokers: &str, topics: &[String], partitions: i32) -> Arc<Mutex<Vec<Record>>> {
    let seen: Arc<Mutex<Vec<Record>>> = Arc::default();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "test-tail")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        for p in 0..partitions {
            tpl.add_partition_offset(t, p, Offset::Beginning).expect("offset");
        }
    }
    consumer.assign(&tpl).expect("assign");
    let out = seen.clone();
    std::thread::spawn(move || loop {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let rec = (m.topic().to_string(), m.key().unwrap_or_default().to_vec(), m.payload().map(<[u8]>::to_vec));
            out.lock().unwrap().push(rec);
        }
    });
    seen
}

/// Every record on `topic`'s partitions `0..partitions`, from the low to the
/// high watermark as they stand when called, as `(key, payload)` in partition
/// then offset order. librdkafka's transient errors (a dropped connection,
/// "all brokers down" while it reconnects) are reported and retried, not
/// treated as the end; panics if the topic is not read to its end within
/// `within`.
pub fn read_to_end(brokers: &str, topic: &str, partitions: i32, within: Duration) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "test-read-to-end")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let deadline = Instant::now() + within;
    let mut tpl = TopicPartitionList::new();
    let mut ends = Vec::new();
    for p in 0..partitions {
        let (low, high) = loop {
            match consumer.fetch_watermarks(topic, p, Duration::from_secs(5)) {
                Ok(w) => break w,
                Err(e) if Instant::now() < deadline => eprintln!("watermarks of {topic}/{p}: {e}; retrying"),
                Err(e) => panic!("watermarks of {topic}/{p}: {e}"),
            }
        };
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Offset(low)).expect("offset");
            ends.push((p, high));
        }
    }
    let mut by_partition: Vec<Vec<AtOffset>> = vec![Vec::new(); partitions.max(0) as usize];
    if ends.is_empty() {
        return Vec::new();
    }
    consumer.assign(&tpl).expect("assign");
    let done = |got: &Vec<Vec<AtOffset>>| {
        ends.iter().all(|&(p, high)| got[p as usize].last().is_some_and(|r| r.0 + 1 >= high))
    };
    while !done(&by_partition) {
        assert!(Instant::now() < deadline, "{topic} not read to its end within {within:?}");
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(e)) => eprintln!("reading {topic}: {e}; retrying"),
            Some(Ok(m)) => by_partition[m.partition() as usize].push((
                m.offset(),
                m.key().map(<[u8]>::to_vec),
                m.payload().unwrap_or_default().to_vec(),
            )),
        }
    }
    by_partition.into_iter().flatten().map(|(_, k, v)| (k, v)).collect()
}

/// Produces `(key, value)` records to `topic` and waits for every ack.
pub fn produce(brokers: &str, topic: &str, records: &[(Vec<u8>, Vec<u8>)]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for (k, v) in records {
        let mut rec = BaseRecord::to(topic).key(k).payload(v);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    producer.poll(Duration::from_millis(20));
                    rec = r;
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}
