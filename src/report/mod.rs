//! The Activity Report: one row per appointment and technician, derived
//! purely from engine state (rendering to HTML/CSV/email lives beside it).

mod rows;

pub use rows::{rows, FenceResult, ReportRow};
