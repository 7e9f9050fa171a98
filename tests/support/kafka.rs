//! Reading and writing topics in tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

/// A record as read: topic name, key, value.
pub type Record = (String, Vec<u8>, Option<Vec<u8>>);

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
