//! HTTP plumbing every component shares: the blocking client the vendor
//! clients call through ([`client`]), and serving an axum router on an
//! address ([`server`]) for the connectors' inboxes, the report server and
//! the simulators.

pub mod client;
pub mod server;
