//! geoclock: fleet GPS in, field-service events out.
//!
//! `engine` is the pure decision core; `geo` its geometry; `model` the
//! shared vocabulary; `scenario` runs scenario files through the engine;
//! `report` derives the Activity Report from engine state; `kafka` holds the
//! topic catalogue, record codec and broker administration; `audit`
//! re-derives every decision from the topics and explains any one of them.

pub mod audit;
pub mod config;
pub mod connect;
pub mod demo;
pub mod engine;
pub mod geo;
pub mod http;
pub mod kafka;
pub mod model;
pub mod processor;
pub mod report;
pub mod scenario;
pub mod sim;
pub mod sink;
pub mod soak;
pub mod store;
pub mod telemetry;
pub mod vendor;
