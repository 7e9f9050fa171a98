//! Report rows from a processor state store (the processor's own RocksDB or
//! a replica restored from its changelogs).
//!
//! The processor runs in two stages ([`crate::engine::route`]): the
//! appointment stage's tasks each hold their partition's appointments with
//! the technicians' clock lines and Service Links; the vehicle stage's tasks
//! hold what pings showed about the same (appointment, technician)
//! assignments. Each appointment task's engine absorbs the vehicle tasks'
//! assignments ([`Engine::absorb_assignments`]) and yields its rows; rows
//! are then put in appointment order, as the one-stage engine yields them.
//! [`merge_rows`] matches rows of tasks that hold the same appointment (a
//! replica mid-move, say) by (appointment, technician).

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use super::{rows, ReportRow};
use crate::engine::Engine;
use crate::model::{Id, Settings};
use crate::processor::{task::row_prefix, Stage};
use crate::store::{StateStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StateRowsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("state rows of {tenant}: {message}")]
    Rows { tenant: String, message: String },
}

/// One task's engine for `tenant`, from its rows.
fn engine_of(
    store: &dyn StateStore,
    stage: Stage,
    p: i32,
    tenant: &str,
    settings: &Settings,
) -> Result<Engine, StateRowsError> {
    // `{task}/{tenant}/{engine key}`: the engine reads its keys bare.
    let prefix = format!("{}{tenant}/", row_prefix(stage, p));
    let mine = store.scan_prefix(stage.store(), prefix.as_bytes())?;
    let mut engine = Engine::from_rows(
        tenant.to_string(),
        settings.clone(),
        mine.iter().filter_map(|(k, v)| Some((k.get(prefix.len()..)?, v.as_slice()))),
    )
    .map_err(|e| StateRowsError::Rows { tenant: tenant.to_string(), message: e.to_string() })?;
    engine.set_role(stage.role());
    Ok(engine)
}

/// The appointment tasks' engines for `tenant`, each with every vehicle
/// task's assignments absorbed: what the report and the map read.
pub fn engines_from_state(
    store: &dyn StateStore,
    partitions: i32,
    tenant: &str,
    settings: &Settings,
) -> Result<Vec<Engine>, StateRowsError> {
    let vehicles: Vec<Engine> =
        (0..partitions).map(|p| engine_of(store, Stage::Vehicles, p, tenant, settings)).collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for p in 0..partitions {
        let mut engine = engine_of(store, Stage::Appointments, p, tenant, settings)?;
        for v in &vehicles {
            engine.absorb_assignments(v);
        }
        out.push(engine);
    }
    Ok(out)
}

/// The rows of the engines [`engines_from_state`] gives, merged.
pub fn rows_of_engines(engines: &[Engine]) -> Vec<ReportRow> {
    let mut merged = merge_rows(engines.iter().map(rows).collect());
    // Each task's rows are in appointment order; so are the one-stage
    // engine's (stable: technicians keep their order).
    merged.sort_by(|a, b| a.appointment.cmp(&b.appointment));
    merged
}

/// The tenant's rows as the processor's tasks `0..partitions` hold them.
pub fn rows_from_state(
    store: &dyn StateStore,
    partitions: i32,
    tenant: &str,
    settings: &Settings,
) -> Result<Vec<ReportRow>, StateRowsError> {
    Ok(rows_of_engines(&engines_from_state(store, partitions, tenant, settings)?))
}

/// The appointment-stage engine holding `appointment` (the first task's
/// that does), having absorbed every vehicle task's evidence: the state an
/// explanation of it reads ([`crate::audit::explain`]). `None`: no task
/// holds it.
pub fn engine_holding(
    store: &dyn StateStore,
    partitions: i32,
    tenant: &str,
    settings: &Settings,
    appointment: &Id,
) -> Result<Option<Engine>, StateRowsError> {
    for p in 0..partitions {
        let mut engine = engine_of(store, Stage::Appointments, p, tenant, settings)?;
        if !engine.state().appointments.contains_key(appointment) {
            continue;
        }
        for q in 0..partitions {
            engine.absorb_assignments(&engine_of(store, Stage::Vehicles, q, tenant, settings)?);
        }
        return Ok(Some(engine));
    }
    Ok(None)
}

/// Merges the tasks' rows (see the module docs).
pub fn merge_rows(per_task: Vec<Vec<ReportRow>>) -> Vec<ReportRow> {
    let mut out: Vec<ReportRow> = Vec::new();
    let mut at: HashMap<(Id, Option<Id>), usize> = HashMap::new();
    for rows in per_task {
        for row in rows {
            match at.entry((row.appointment.clone(), row.tech.clone())) {
                Entry::Occupied(i) => {
                    let base = &mut out[*i.get()];
                    if row.ping_rank() > base.ping_rank() {
                        *base = row;
                    }
                }
                Entry::Vacant(v) => {
                    v.insert(out.len());
                    out.push(row);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::FenceResult;
    use crate::scenario::Scenario;

    #[test]
    fn rows_merge_by_appointment_and_technician_even_when_tasks_disagree() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/multi_tech.yaml");
        let rows = Scenario::load(&path).unwrap().run().unwrap().report;
        assert_eq!(rows.len(), 2);
        let mut weaker = rows.clone();
        for r in &mut weaker {
            r.fence_result = FenceResult::NotArrived;
            r.arrival = None;
        }
        // Task 1 is behind and knows only the second row; task 2 has all.
        let merged = merge_rows(vec![weaker.clone(), vec![rows[1].clone()], rows.clone()]);
        assert_eq!(merged, rows);
        let merged = merge_rows(vec![vec![weaker[1].clone()], weaker.clone()]);
        assert_eq!(merged, vec![weaker[1].clone(), weaker[0].clone()], "a row only a later task has is kept");
        assert!(merge_rows(Vec::new()).is_empty());
    }
}
