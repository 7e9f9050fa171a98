//! The Activity Report: one row per appointment and technician, derived
//! purely from engine state (`rows`, `state`), joined with the sinks'
//! results (`join`), rendered as HTML, CSV and JSON (`render`) and served
//! per tenant and day from a replica of the processor's state (`replica`,
//! `serve`).

pub mod join;
pub mod render;
pub mod replica;
mod rows;
pub mod serve;
pub mod state;

pub use rows::{rows, FenceResult, ReportRow};
