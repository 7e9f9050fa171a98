//! Deployment configuration every component shares: the tenants file
//! ([`tenants`]: each tenant's vendor endpoints, credentials, engine
//! settings) and the secrets it holds ([`secret`]: values that never show in
//! a log line, error, metric or URL), and the one YAML reader ([`yaml`]).
//!
//! Connectors, sinks, the processor and the report server read the same
//! tenants file; nothing here talks to a vendor or a broker.

pub mod link;
pub mod secret;
pub mod tenants;
pub mod webhook;
pub mod yaml;
