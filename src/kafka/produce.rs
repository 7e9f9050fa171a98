//! Producing: one producer configuration for every writer, the record a
//! component publishes ([`Outgoing`]), and a blocking producer for threads
//! that are not on the async runtime ([`SyncProducer`]: the sinks), and
//! the acknowledgements such a thread waits for ([`Pending`]: the sinks,
//! the processor's tasks and committers).
//!
//! Every producer is idempotent (`enable.idempotence`), so librdkafka's own
//! retries never duplicate a record. [`SyncProducer::send_all`] enqueues a
//! batch and waits until the broker acknowledged every record (or one
//! failed): callers record what was published only after it returns `Ok`.

use std::sync::mpsc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use super::topics::{Catalogue, Topic};

/// A producer's base configuration ([`super::client::base`]), its client
/// id, idempotence.
pub fn producer_config(brokers: &str, client_id: &str) -> ClientConfig {
    let mut c = super::client::base(brokers);
    c.set("enable.idempotence", "true")
        .set("client.id", client_id)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000");
    c
}

/// One record to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub topic: Topic,
    pub key: Vec<u8>,
    /// `None`: a tombstone.
    pub value: Option<Vec<u8>>,
    /// Record headers (`name`, value).
    pub headers: Vec<(&'static str, Vec<u8>)>,
}

impl Outgoing {
    pub fn new(topic: Topic, key: Vec<u8>, value: Option<Vec<u8>>) -> Outgoing {
        Outgoing { topic, key, value, headers: Vec::new() }
    }
}

/// Routes each delivery report (the record's offset, or the error) to the
/// batch waiting for it ([`Pending`]); librdkafka's log lines go to
/// `tracing`, as the role named here.
pub struct Acks(pub &'static str);

impl ClientContext for Acks {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        super::client::log_line(self.0, level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        super::client::error_line(self.0, &error, reason);
    }
}

impl ProducerContext for Acks {
    type DeliveryOpaque = Box<mpsc::Sender<Result<i64, KafkaError>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, tx: Self::DeliveryOpaque) {
        let _ = tx.send(result.as_ref().map(|m| rdkafka::Message::offset(m)).map_err(|(e, _)| e.clone()));
    }
}

/// The acknowledgements of records sent with [`Pending::send`], awaited by
/// a sync thread ([`Pending::wait`]): no async runtime, no `block_on`.
pub struct Pending {
    tx: mpsc::Sender<Result<i64, KafkaError>>,
    rx: mpsc::Receiver<Result<i64, KafkaError>>,
    sent: usize,
}

impl Default for Pending {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel();
        Pending { tx, rx, sent: 0 }
    }
}

/// A record whose delivery report goes to a [`Pending`].
pub type AckedRecord<'a> = BaseRecord<'a, [u8], [u8], Box<mpsc::Sender<Result<i64, KafkaError>>>>;

impl Pending {
    /// A record to `topic` whose delivery report comes here.
    pub fn record<'a>(&self, topic: &'a str) -> AckedRecord<'a> {
        BaseRecord::with_opaque_to(topic, Box::new(self.tx.clone()))
    }

    /// Enqueues a record made by [`Pending::record`]. A full local queue
    /// is waited out (never dropped) until `deadline`.
    pub fn send(
        &mut self,
        producer: &ThreadedProducer<Acks>,
        record: AckedRecord<'_>,
        deadline: std::time::Instant,
    ) -> Result<(), KafkaError> {
        let mut rec = record;
        loop {
            match producer.send(rec) {
                Ok(()) => {
                    self.sent += 1;
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if std::time::Instant::now() < deadline =>
                {
                    rec = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Records sent and not yet waited for.
    pub fn len(&self) -> usize {
        self.sent
    }

    pub fn is_empty(&self) -> bool {
        self.sent == 0
    }

    /// Waits until the broker acknowledged every record sent (or one
    /// failed); returns the highest offset acknowledged plus one (`None`
    /// when nothing was sent): for records of one partition, the offset
    /// after the last.
    pub fn wait(self, timeout: Duration) -> Result<Option<i64>, ProduceError> {
        let deadline = std::time::Instant::now() + timeout;
        let mut next = None;
        for _ in 0..self.sent {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Ok(offset)) => next = next.max(Some(offset + 1)),
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Err(ProduceError::Timeout(timeout)),
            }
        }
        Ok(next)
    }
}

/// A producer for sync threads: no async runtime, no `block_on`.
pub struct SyncProducer {
    producer: ThreadedProducer<Acks>,
    catalogue: Catalogue,
}

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("no acknowledgement within {0:?}")]
    Timeout(Duration),
}

impl SyncProducer {
    pub fn new(config: &ClientConfig, catalogue: Catalogue, role: &'static str) -> Result<SyncProducer, KafkaError> {
        Ok(SyncProducer { producer: config.create_with_context(Acks(role))?, catalogue })
    }

    /// Sends every record and waits until the broker acknowledged all of
    /// them (or one failed). `partition` pins a record's partition when set.
    pub fn send_all(&self, records: &[(Outgoing, Option<i32>)], timeout: Duration) -> Result<(), ProduceError> {
        let mut pending = Pending::default();
        let deadline = std::time::Instant::now() + timeout;
        for (r, partition) in records {
            let topic = self.catalogue.name(r.topic);
            let mut headers = OwnedHeaders::new();
            for (k, v) in &r.headers {
                headers = headers.insert(Header { key: k, value: Some(v) });
            }
            let mut rec = pending.record(&topic).key(&r.key[..]).headers(headers);
            if let Some(v) = &r.value {
                rec = rec.payload(&v[..]);
            }
            if let Some(p) = partition {
                rec = rec.partition(*p);
            }
            pending.send(&self.producer, rec, deadline + Duration::from_secs(3600))?;
        }
        pending.wait(timeout).map(|_| ())
    }
}
