//! Publishing to Kafka: engine events as Avro records (Confluent framing)
//! keyed `tenant/id` on the catalogue's topics, and dead letters.
//!
//! The producer is idempotent (`enable.idempotence`), so librdkafka's own
//! retries never duplicate a record. [`Publisher::send_all`] enqueues a whole
//! batch and then waits for every acknowledgement: callers record what was
//! published (the ledger) only after it returns `Ok`. Flushing blocks, so it
//! runs on tokio's blocking pool.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::engine::Event;
use crate::kafka::client::Logged;
use crate::kafka::codec::{Codec, CodecError};
use crate::kafka::produce::producer_config;
pub use crate::kafka::produce::Outgoing;
use crate::kafka::records::DeadLetter;
use crate::kafka::topics::{self, Catalogue, Topic};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("delivery was cancelled (producer shut down)")]
    Cancelled,
}

pub struct Publisher {
    producer: FutureProducer<Logged>,
    codec: Arc<Codec>,
    catalogue: Catalogue,
    component: String,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("component", &self.component).finish_non_exhaustive()
    }
}

impl Publisher {
    pub fn new(
        brokers: &str,
        codec: Arc<Codec>,
        catalogue: Catalogue,
        component: &str,
    ) -> Result<Publisher, PublishError> {
        let role = if component.contains("servicetrade") { "connect-servicetrade" } else { "connect-azuga" };
        let producer: FutureProducer<Logged> =
            producer_config(brokers, component).create_with_context(Logged::new(role))?;
        Ok(Publisher { producer, codec, catalogue, component: component.to_string() })
    }

    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    pub fn topic_name(&self, topic: Topic) -> String {
        self.catalogue.name(topic)
    }

    /// The record for an engine event.
    pub fn event(&self, tenant: &str, event: &Event) -> Result<Outgoing, CodecError> {
        let r = self.codec.encode_event(tenant, event)?;
        Ok(Outgoing::new(r.topic, r.key, r.value))
    }

    /// The dead letter for something received that could not be published.
    /// `source` names where it came from (`webhook:azuga`); the body is kept
    /// up to 64 KiB.
    pub fn dead_letter(
        &self,
        tenant: &str,
        source: &str,
        kind: &str,
        reason: &str,
        body: &[u8],
    ) -> Result<Outgoing, CodecError> {
        const KEEP: usize = 64 * 1024;
        let dead = DeadLetter {
            reason: reason.to_string(),
            kind: kind.to_string(),
            topic: source.to_string(),
            partition: -1,
            offset: -1,
            key: None,
            value: Some(body[..body.len().min(KEEP)].to_vec()),
            component: self.component.clone(),
        };
        let key = topics::key(tenant, source).map_err(|e| CodecError::InvalidValue(e.to_string()))?;
        Ok(Outgoing::new(Topic::DeadLetters, key, Some(self.codec.encode_dead_letter(&dead)?)))
    }

    /// Sends every record and waits until the broker acknowledged all of
    /// them (or one failed).
    pub async fn send_all(&self, records: &[Outgoing]) -> Result<(), PublishError> {
        let mut pending = Vec::with_capacity(records.len());
        for r in records {
            let topic = self.catalogue.name(r.topic);
            loop {
                let mut rec = FutureRecord::<[u8], [u8]>::to(&topic).key(&r.key);
                if let Some(v) = &r.value {
                    rec = rec.payload(v);
                }
                match self.producer.send_result(rec) {
                    Ok(f) => {
                        pending.push(f);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
        }
        for f in pending {
            match f.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(e.into()),
                Err(_) => return Err(PublishError::Cancelled),
            }
        }
        Ok(())
    }

    /// Waits for everything queued (blocking pool).
    pub async fn flush(self: &Arc<Self>, timeout: Duration) -> Result<(), PublishError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.producer.flush(timeout))
            .await
            .map_err(|_| PublishError::Cancelled)??;
        Ok(())
    }
}
