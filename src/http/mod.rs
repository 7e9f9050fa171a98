//! HTTP plumbing every component shares: the blocking client the vendor
//! clients call through ([`client`]); serving an axum router on an address
//! ([`server`], hardened against slow and hostile clients) for the
//! connectors' inboxes, the report server and the simulators; and
//! failed-attempt throttling per client address ([`throttle`]).

pub mod client;
pub mod server;
pub mod throttle;
