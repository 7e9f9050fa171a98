//! The Activity Report (design §1.6): one row per scheduled appointment and
//! technician.
//!
//! - `rows`: the rows, derived purely from an engine's state, each with its
//!   office (`of_office` keeps one office's);
//! - `state`: the rows of a processor state store (all tasks merged);
//! - `actions`: the status of each automated action on a line (pure);
//! - `join`: rows joined with the sinks' results (pure): fence at Azuga,
//!   Service Link delivered, clock events posted, sink failures in words;
//! - `render`: HTML, CSV and JSON for one tenant and local day (pure);
//! - `replica`: a read replica of the processor's state (restored
//!   continuously from its changelog) and of the sinks' results;
//! - `access`: the tenant and token check every route shares;
//! - `serve`: `geoclock report serve`, the report over HTTP per tenant and
//!   day, behind the tenant's report token, and the live map;
//! - `map`: the live dispatch map (its own pure core and replica).
//!
//! Only `replica`, `serve` and parts of `map` do I/O; everything they show is computed by
//! the pure modules, so a scenario's report and the served report agree.

pub mod access;
pub mod actions;
pub mod join;
pub mod map;
pub mod render;
pub mod replica;
mod rows;
pub mod serve;
pub mod state;

pub use rows::{of_office, rows, FenceResult, ReportRow};
