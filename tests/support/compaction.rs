//! Kafka's log compaction, emulated (nisshi does not compact): which
//! records of a compacted partition the log cleaner may remove by a given
//! time, and copies of a deployment's topics as they would read after it.

use std::time::Duration;

use geoclock::kafka::topics::{Catalogue, Topic};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

/// One record as read: key, value (`None`: a tombstone), timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct Rec {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp: i64,
}

/// What the log cleaner leaves of one partition at time `now`: a record
/// goes when a later record has its key and it is older than
/// `min_compaction_lag_ms` (Kafka's `min.compaction.lag.ms`: no record
/// younger than that is compacted); a tombstone with nothing after it goes
/// once older than `delete_retention_ms`. Order and the survivors' bytes
/// are kept.
pub fn compact(records: &[Rec], now: i64, min_compaction_lag_ms: i64, delete_retention_ms: i64) -> Vec<Rec> {
    let last_of = |i: usize| records.iter().rposition(|r| r.key == records[i].key) == Some(i);
    records
        .iter()
        .enumerate()
        .filter(|(i, r)| {
            let old = now - r.timestamp > min_compaction_lag_ms;
            if !last_of(*i) {
                return !old;
            }
            r.value.is_some() || now - r.timestamp <= delete_retention_ms
        })
        .map(|(_, r)| r.clone())
        .collect()
}

/// Every record of a topic partition, from its start to its end.
pub fn read_partition(brokers: &str, topic: &str, partition: i32) -> Vec<Rec> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "test-compaction")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let (low, high) = c.fetch_watermarks(topic, partition, Duration::from_secs(10)).expect("watermarks");
    let mut out = Vec::new();
    if high <= low {
        return out;
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(low)).expect("offset");
    c.assign(&tpl).expect("assign");
    let mut next = low;
    while next < high {
        match c.poll(Duration::from_secs(10)) {
            Some(Ok(m)) => {
                next = m.offset() + 1;
                out.push(Rec {
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    timestamp: m.timestamp().to_millis().unwrap_or(0),
                });
            }
            Some(Err(e)) => eprintln!("reading {topic}[{partition}]: {e}; retrying"),
            None => panic!("{topic}[{partition}] stalled at {next} of {high}"),
        }
    }
    out
}

/// Copies every topic of `from` to `to` (whose topics exist), partition by
/// partition with the records' timestamps, the entity topics as the
/// cleaner leaves them at `now` with `min_compaction_lag_ms` (and deletes
/// kept as long).
pub fn copy_compacted(brokers: &str, from: &Catalogue, to: &Catalogue, now: i64, min_compaction_lag_ms: i64) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for topic in Topic::ALL {
        if matches!(topic, Topic::AppointmentStateChangelog | Topic::VehicleStateChangelog | Topic::FenceRoutes) {
            continue;
        }
        for p in 0..from.partitions {
            let mut records = read_partition(brokers, &from.name(topic), p);
            if topic.entity() {
                records = compact(&records, now, min_compaction_lag_ms, min_compaction_lag_ms);
            }
            let name = to.name(topic);
            for r in &records {
                let mut rec = BaseRecord::<Vec<u8>, Vec<u8>>::to(&name).partition(p).timestamp(r.timestamp);
                if let Some(k) = &r.key {
                    rec = rec.key(k);
                }
                if let Some(v) = &r.value {
                    rec = rec.payload(v);
                }
                loop {
                    match producer.send(rec) {
                        Ok(()) => break,
                        Err((_, back)) => {
                            producer.poll(Duration::from_millis(20));
                            rec = back;
                        }
                    }
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}
