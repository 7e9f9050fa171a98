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

/// A simulated clock a driver moves (unix ms), for simulators that should
/// tell time by it instead of the wall clock (`geoclock soak`).
#[derive(Clone, Debug, Default)]
pub struct SimClock(std::sync::Arc<std::sync::atomic::AtomicI64>);

impl SimClock {
    pub fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn set(&self, ms: i64) {
        self.0.store(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The same clock (not the same time).
impl PartialEq for SimClock {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Why a simulator could not start.
pub use crate::http::server::ServeError as SimError;
