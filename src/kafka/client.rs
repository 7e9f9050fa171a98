//! Consumer settings every geoclock reader shares.
//!
//! librdkafka pauses a partition's fetching for `fetch.queue.backoff.ms`
//! (default 1 s) whenever its local queue is over `queued.min.messages`. A
//! reader that drains more slowly than the broker serves (every reader
//! catching up: a task, a restore, a sink) then idles for most of each
//! second with its queue empty. A short backoff keeps the queue fed; it
//! costs a few wake-ups a second per partition while the queue is full.

use rdkafka::config::ClientConfig;

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
