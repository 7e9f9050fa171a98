//! Consumer settings every geoclock reader shares, and which consumer
//! errors a reader waits out.
//!
//! librdkafka pauses a partition's fetching for `fetch.queue.backoff.ms`
//! (default 1 s) whenever its local queue is over `queued.min.messages`. A
//! reader that drains more slowly than the broker serves (every reader
//! catching up: a task, a restore, a sink) then idles for most of each
//! second with its queue empty. A short backoff keeps the queue fed; it
//! costs a few wake-ups a second per partition while the queue is full.

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// How long a full local queue pauses its partition's fetching.
pub const FETCH_QUEUE_BACKOFF_MS: u32 = 10;

/// A consumer's base configuration: the brokers, its group (offsets are
/// never auto-committed: every reader keeps its own), the fetch tuning.
pub fn consumer_config(brokers: &str, group: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS.to_string());
    c
}

/// Whether a consumer error is one librdkafka recovers from by itself
/// (a dropped connection, "all brokers down" while it reconnects, a leader
/// moving, a timed-out request): a reader reports it and keeps polling.
/// Anything else (a fatal error, an unknown topic, an offset out of range)
/// is the reader's to handle.
pub fn is_transient(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::AllBrokersDown
                | C::BrokerTransportFailure
                | C::Resolve
                | C::OperationTimedOut
                | C::RequestTimedOut
                | C::NetworkException
                | C::LeaderNotAvailable
                | C::NotLeaderForPartition
                | C::CoordinatorNotAvailable
                | C::NotCoordinator
        )
    )
}

/// A polled result with transient errors taken out: `Ok(None)` for one
/// ([`is_transient`]; reported as `reader`'s, and the caller polls again),
/// the message, or any other error.
pub fn unless_transient<T>(r: Result<T, KafkaError>, reader: &str) -> Result<Option<T>, KafkaError> {
    match r {
        Ok(m) => Ok(Some(m)),
        Err(e) if is_transient(&e) => {
            tracing::warn!(reader, error = %e, "consumer error; waiting it out");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_loss_is_transient_and_a_fatal_or_missing_topic_is_not() {
        assert!(is_transient(&KafkaError::MessageConsumption(RDKafkaErrorCode::AllBrokersDown)));
        assert!(is_transient(&KafkaError::MessageConsumption(RDKafkaErrorCode::BrokerTransportFailure)));
        assert!(!is_transient(&KafkaError::MessageConsumption(RDKafkaErrorCode::Fatal)));
        assert!(!is_transient(&KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition)));
        assert!(!is_transient(&KafkaError::MessageConsumption(RDKafkaErrorCode::OffsetOutOfRange)));
    }
}
