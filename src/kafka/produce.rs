//! Producing: one producer configuration for every writer, the record a
//! component publishes ([`Outgoing`]), and a blocking producer for threads
//! that are not on the async runtime ([`SyncProducer`]: the sinks).
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

/// Routes each delivery report to the batch waiting for it; librdkafka's
/// log lines go to `tracing`.
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
    type DeliveryOpaque = Box<mpsc::Sender<Result<(), KafkaError>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, tx: Self::DeliveryOpaque) {
        let _ = tx.send(result.as_ref().map(|_| ()).map_err(|(e, _)| e.clone()));
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
        let (tx, rx) = mpsc::channel();
        for (r, partition) in records {
            let topic = self.catalogue.name(r.topic);
            let mut headers = OwnedHeaders::new();
            for (k, v) in &r.headers {
                headers = headers.insert(Header { key: k, value: Some(v) });
            }
            let mut rec =
                BaseRecord::<[u8], [u8], _>::with_opaque_to(&topic, Box::new(tx.clone())).key(&r.key).headers(headers);
            if let Some(v) = &r.value {
                rec = rec.payload(v);
            }
            if let Some(p) = partition {
                rec = rec.partition(*p);
            }
            let mut rec = rec;
            loop {
                match self.producer.send(rec) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        rec = back;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
        }
        drop(tx);
        let deadline = std::time::Instant::now() + timeout;
        for _ in records {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Err(ProduceError::Timeout(timeout)),
            }
        }
        Ok(())
    }
}
