//! Where the processor's state lives: which column family and changelog
//! each stage's tasks write, and the key prefixes of a task's rows and
//! stored positions. The processor writes this layout and the report
//! replica reads it; both take it from here.
//!
//! Invariants:
//! - Task `(stage, p)` owns every row of [`Stage::store`] whose key starts
//!   with [`row_prefix`]`(stage, p)`, and every stored offset whose name
//!   starts with it; nothing else writes them. After the prefix a row key
//!   is `{tenant}/{engine row key}` ([`crate::engine::persist`]).
//! - Changelog partition `p` of [`Stage::changelog`] holds exactly task
//!   `(stage, p)`'s rows (changelogs are co-partitioned with their inputs).

use super::StoreName;
use crate::engine::Role;
use crate::kafka::topics::Topic;

/// The two sub-topologies ([`crate::engine::route`]). Task `(stage, p)`
/// reads partition `p` of its stage's co-partitioned topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// Stage one, keyed by appointment: `appointments[p]` and
    /// `clock-events[p]`, the global entity tables and the ticks; writes
    /// fence and Service Link commands and fence routes.
    Appointments,
    /// Stage two, keyed by vehicle: `pings[p]` and `fence-routes[p]`;
    /// writes clock commands.
    Vehicles,
}

impl Stage {
    pub const ALL: [Stage; 2] = [Stage::Appointments, Stage::Vehicles];

    pub fn changelog(self) -> Topic {
        match self {
            Stage::Appointments => Topic::AppointmentStateChangelog,
            Stage::Vehicles => Topic::VehicleStateChangelog,
        }
    }

    /// The RocksDB column family of the stage's state.
    pub const fn store(self) -> StoreName {
        match self {
            Stage::Appointments => "appointment_state",
            Stage::Vehicles => "vehicle_state",
        }
    }

    pub fn role(self) -> Role {
        match self {
            Stage::Appointments => Role::Appointments,
            Stage::Vehicles => Role::Vehicles,
        }
    }

    /// The task's name in logs and metric labels: `a3` (appointments) or `3`
    /// (vehicles) for partition 3.
    pub fn task(self, p: i32) -> String {
        match self {
            Stage::Appointments => format!("a{p}"),
            Stage::Vehicles => p.to_string(),
        }
    }

    /// Bit 62 of the emission sequence header: at equal record time, stage
    /// one's commands come first (stage two's react to its routes).
    pub fn seq_base(self) -> u64 {
        match self {
            Stage::Appointments => 0,
            Stage::Vehicles => 1 << 62,
        }
    }
}

/// The column families of task state, one per stage (each backed by its
/// stage's changelog).
pub const STATE_STORES: [StoreName; 2] = [Stage::Appointments.store(), Stage::Vehicles.store()];

/// The store key prefix of task `(stage, p)`'s rows (and of the names its
/// input positions are stored under).
pub fn row_prefix(stage: Stage, p: i32) -> String {
    match stage {
        Stage::Appointments => format!("a{p:05}/"),
        Stage::Vehicles => format!("{p:05}/"),
    }
}

/// The name of the local flag saying task `(stage, p)`'s rows were left by
/// a clean stop (1) or not (0: running, crashed or lost). Outside the row
/// prefix, so forgetting the rows keeps it.
pub fn clean_name(stage: Stage, p: i32) -> String {
    let prefix = row_prefix(stage, p);
    format!("{}#clean", &prefix[..prefix.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_of_the_two_stages_and_of_partitions_never_overlap() {
        let all: Vec<String> = Stage::ALL.iter().flat_map(|s| (0..12).map(move |p| row_prefix(*s, p))).collect();
        for (i, a) in all.iter().enumerate() {
            for (j, b) in all.iter().enumerate() {
                assert!(i == j || !a.starts_with(b.as_str()), "{a} under {b}");
            }
        }
        assert!(!clean_name(Stage::Vehicles, 3).starts_with(&row_prefix(Stage::Vehicles, 3)));
        assert_eq!(Stage::Appointments.task(3), "a3");
    }
}
