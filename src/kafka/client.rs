//! How every geoclock Kafka client is configured, in one place: the
//! deployment's extra librdkafka properties (a secured cluster:
//! `security.protocol`, `sasl.*`, `ssl.*`), the consumer settings every
//! reader shares, librdkafka's own log lines sent to `tracing`, and which
//! consumer errors a reader waits out. Producers start from
//! [`super::produce::producer_config`], which starts from [`base`].
//!
//! Extra properties come from `GEOCLOCK_KAFKA_<PROPERTY>` environment
//! variables (`GEOCLOCK_KAFKA_SECURITY_PROTOCOL=SASL_SSL` sets
//! `security.protocol`: lower case, `_` for `.`) and from a properties file
//! (`GEOCLOCK_KAFKA_CONFIG=FILE`, or `--kafka-config`: `key=value` lines,
//! `#` comments), read once at start ([`init_properties`]); the environment
//! wins. Values are never logged (a password or key is one); their names
//! are, once.
//!
//! librdkafka pauses a partition's fetching for `fetch.queue.backoff.ms`
//! (default 1 s) whenever its local queue is over `queued.min.messages`. A
//! reader that drains more slowly than the broker serves (every reader
//! catching up: a task, a restore, a sink) then idles for most of each
//! second with its queue empty. A short backoff keeps the queue fed; it
//! costs a few wake-ups a second per partition while the queue is full.

use std::path::Path;
use std::sync::OnceLock;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// The deployment's extra librdkafka properties, as read at start.
static PROPERTIES: OnceLock<Vec<(String, String)>> = OnceLock::new();

/// Why the extra properties could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PropertiesError {
    #[error("kafka properties file {path}: {message}")]
    File { path: String, message: String },
    #[error("kafka properties file {path}, line {line}: expected key=value")]
    Line { path: String, line: usize },
}

/// The extra properties from `env` (name, value pairs) and the file's text.
/// Pure: no file or environment is read here.
pub fn parse_properties(
    file: Option<(&str, &str)>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<(String, String)>, PropertiesError> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut put = |k: String, v: String| match out.iter_mut().find(|(key, _)| *key == k) {
        Some(e) => e.1 = v,
        None => out.push((k, v)),
    };
    if let Some((path, text)) = file {
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line.split_once('=').ok_or(PropertiesError::Line { path: path.to_string(), line: i + 1 })?;
            put(k.trim().to_string(), v.trim().to_string());
        }
    }
    for (k, v) in env {
        if let Some(name) = k.strip_prefix("GEOCLOCK_KAFKA_").filter(|n| *n != "CONFIG" && !n.is_empty()) {
            put(name.to_ascii_lowercase().replace('_', "."), v);
        }
    }
    Ok(out)
}

/// Reads the extra properties once (the file, if any, then the
/// environment). Later calls keep the first result.
pub fn init_properties(file: Option<&Path>) -> Result<(), PropertiesError> {
    let file = file.map(Path::to_path_buf).or_else(|| std::env::var_os("GEOCLOCK_KAFKA_CONFIG").map(Into::into));
    let text = match &file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| PropertiesError::File { path: p.display().to_string(), message: e.to_string() })?,
        ),
        None => None,
    };
    let path = file.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    let props = parse_properties(text.as_deref().map(|t| (path.as_str(), t)), std::env::vars())?;
    if !props.is_empty() {
        let names: Vec<&str> = props.iter().map(|(k, _)| k.as_str()).collect();
        tracing::info!(properties = ?names, "extra Kafka client properties (values not shown)");
    }
    let _ = PROPERTIES.set(props);
    Ok(())
}

/// Every client's base configuration: the brokers, the deployment's extra
/// properties, and librdkafka's log level.
pub fn base(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in PROPERTIES.get().map(Vec::as_slice).unwrap_or(&[]) {
        c.set(k, v);
    }
    c.set_log_level(RDKafkaLogLevel::Info);
    c
}

/// A client context that sends librdkafka's log lines and errors to
/// `tracing`, with the client's role (`processor`, `sink-clock`, …).
#[derive(Debug, Clone)]
pub struct Logged {
    pub role: &'static str,
}

impl Logged {
    pub fn new(role: &'static str) -> Logged {
        Logged { role }
    }
}

/// One librdkafka log line as a `tracing` event.
pub fn log_line(role: &str, level: RDKafkaLogLevel, facility: &str, message: &str) {
    use RDKafkaLogLevel as L;
    match level {
        L::Emerg | L::Alert | L::Critical | L::Error => {
            tracing::error!(client = role, facility, "librdkafka: {message}")
        }
        L::Warning => tracing::warn!(client = role, facility, "librdkafka: {message}"),
        L::Notice | L::Info => tracing::info!(client = role, facility, "librdkafka: {message}"),
        L::Debug => tracing::debug!(client = role, facility, "librdkafka: {message}"),
    }
}

/// A client error reported by librdkafka (authentication, transport…).
pub fn error_line(role: &str, error: &KafkaError, reason: &str) {
    tracing::error!(client = role, error = %error, "librdkafka: {reason}");
}

impl ClientContext for Logged {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_line(self.role, level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        error_line(self.role, &error, reason);
    }
}

impl ConsumerContext for Logged {}

/// How long a full local queue pauses its partition's fetching.
pub const FETCH_QUEUE_BACKOFF_MS: u32 = 10;

/// A consumer's base configuration: the brokers, its group (offsets are
/// never auto-committed: every reader keeps its own), the fetch tuning.
pub fn consumer_config(brokers: &str, group: &str) -> ClientConfig {
    let mut c = base(brokers);
    c.set("group.id", group)
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
    fn properties_come_from_the_file_and_the_environment_which_wins() {
        let file = "# a secured cluster\nsecurity.protocol = SASL_SSL\nsasl.mechanisms=PLAIN\n\nsasl.username=geo\n";
        let env = vec![
            ("GEOCLOCK_KAFKA_SASL_PASSWORD".to_string(), "s3cret".to_string()),
            ("GEOCLOCK_KAFKA_SASL_MECHANISMS".to_string(), "SCRAM-SHA-512".to_string()),
            ("GEOCLOCK_KAFKA_CONFIG".to_string(), "/etc/kafka.properties".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let p = parse_properties(Some(("k.properties", file)), env).unwrap();
        assert_eq!(
            p,
            vec![
                ("security.protocol".to_string(), "SASL_SSL".to_string()),
                ("sasl.mechanisms".to_string(), "SCRAM-SHA-512".to_string()),
                ("sasl.username".to_string(), "geo".to_string()),
                ("sasl.password".to_string(), "s3cret".to_string()),
            ]
        );
        let e = parse_properties(Some(("k.properties", "a=1\nno equals sign\n")), Vec::new()).unwrap_err();
        assert_eq!(e.to_string(), "kafka properties file k.properties, line 2: expected key=value");
    }

    #[test]
    fn connection_loss_is_transient_and_a_fatal_or_missing_topic_is_not() {
        assert!(is_transient(&KafkaError::MessageConsumption(RDKafkaErrorCode::AllBrokersDown)));
        assert!(is_transient(&KafkaError::MessageConsumption(RDKafkaErrorCode::BrokerTransportFailure)));
        assert!(!is_transient(&KafkaError::MessageConsumption(RDKafkaErrorCode::Fatal)));
        assert!(!is_transient(&KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition)));
        assert!(!is_transient(&KafkaError::MessageConsumption(RDKafkaErrorCode::OffsetOutOfRange)));
    }
}
