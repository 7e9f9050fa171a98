//! Report rows from a processor state store (the processor's own RocksDB or
//! a replica restored from its changelog).
//!
//! Every processor task holds the same appointments and technicians (entity
//! topics are read by all), so rows line up across tasks; each task knows
//! the pings of its own vehicles. Task 0's row is the base; a row from
//! another task replaces it when it learned more from pings
//! ([`ReportRow::ping_rank`]). A technician whose vehicles sit on different
//! partitions is the one case this cannot merge exactly.

use super::{rows, ReportRow};
use crate::engine::Engine;
use crate::model::Settings;
use crate::processor::{task::row_prefix, STATE_STORE};
use crate::store::{StateStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StateRowsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("state rows of {tenant}: {message}")]
    Rows { tenant: String, message: String },
}

/// The tenant's rows as the processor's tasks `0..partitions` hold them.
pub fn rows_from_state(
    store: &dyn StateStore,
    partitions: i32,
    tenant: &str,
    settings: &Settings,
) -> Result<Vec<ReportRow>, StateRowsError> {
    let mut per_task = Vec::new();
    let tenant_prefix = format!("{tenant}/");
    for p in 0..partitions {
        let prefix = row_prefix(p);
        let mine: Vec<(Vec<u8>, Vec<u8>)> = store
            .scan_prefix(STATE_STORE, prefix.as_bytes())?
            .into_iter()
            .filter_map(|(k, v)| k[prefix.len()..].strip_prefix(tenant_prefix.as_bytes()).map(|k| (k.to_vec(), v)))
            .collect();
        let engine = Engine::from_rows(
            tenant.to_string(),
            settings.clone(),
            mine.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
        )
        .map_err(|e| StateRowsError::Rows { tenant: tenant.to_string(), message: e.to_string() })?;
        per_task.push(rows(&engine));
    }
    Ok(merge_rows(per_task))
}

/// Merges the tasks' rows (see the module docs).
pub fn merge_rows(per_task: Vec<Vec<ReportRow>>) -> Vec<ReportRow> {
    let mut tasks = per_task.into_iter();
    let Some(mut base) = tasks.next() else { return Vec::new() };
    for other in tasks {
        for (b, o) in base.iter_mut().zip(other) {
            if o.ping_rank() > b.ping_rank() {
                *b = o;
            }
        }
    }
    base
}
