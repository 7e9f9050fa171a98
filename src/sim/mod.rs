//! Vendor simulators and the fleet simulator.
//!
//! The vendors' clouds cannot be reached from a test machine, so these speak
//! the documented shapes of ServiceTrade ([`servicetrade`]) and Azuga
//! ([`azuga`]) over real HTTP on loopback, seeded from a scenario file or a
//! generated day ([`fleet`]), with admin endpoints to change data while
//! running and a call log ([`calls`]) to count effects. Webhooks go out
//! through [`webhook::Outbox`], which misbehaves as the vendors do,
//! deterministically from a seed.
//!
//! Layout: `rng` (deterministic randomness), `world` (what a simulator
//! holds), `fleet` (pure generation of a working day), `webhook` (delivery
//! with faults), `server` (shared HTTP plumbing), `servicetrade`, `azuga`.

pub mod azuga;
pub mod calls;
pub mod fleet;
pub mod registry;
pub mod rng;
pub mod server;
pub mod servicetrade;
pub mod smtp;
pub mod webhook;
pub mod world;

/// Why a simulator could not start.
pub use crate::http::server::ServeError as SimError;
