//! What the engine decides: commands for the sinks.
//!
//! Invariant: a command's `id` is a pure function of the tenant and the
//! decision it records, never of wall-clock time or processing order beyond
//! the input sequence. Clock changes and Service Links are keyed by
//! (appointment, technician, what), so a second decision for the same thing
//! would carry the same id and a sink would drop it; geofence commands are
//! keyed by the appointment's fence revision, which counts the changes sent
//! to Azuga for it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::geo::{LatLon, Shape};
use crate::model::{Activity, ClockAction, Id, Ts};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Deterministic idempotency key (32 hex chars).
    pub id: String,
    pub appointment: Id,
    #[serde(flatten)]
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    CreateGeofence(FenceChange),
    UpdateGeofence(FenceChange),
    DeleteGeofence { revision: u32, name: String },
    SendServiceLink(ServiceLink),
    Clock(ClockChange),
}

/// A geofence as Azuga should hold it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FenceChange {
    pub revision: u32,
    /// `{locationName} | {jobNumber} | {appointmentId}`
    pub name: String,
    pub shape: Shape,
    pub window_start: Ts,
    pub window_end: Ts,
    /// `window_start − window_hours`: Azuga `activationDate`.
    pub active_from: Ts,
    /// `window_end + window_hours`: Azuga `inActivationDate`.
    pub active_to: Ts,
    pub job: Id,
    pub location: Id,
}

/// Email the job's contact a Service Link with a TrackMe link for `vehicle`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceLink {
    pub user: Id,
    pub tech_name: String,
    pub vehicle: Id,
    pub vehicle_name: String,
    pub to: String,
    pub location_name: String,
    pub job_number: Option<Id>,
    pub window_start: Option<Ts>,
    pub window_end: Option<Ts>,
    /// TrackMe destination: the location's point; none when the location
    /// has no coordinates (the TrackMe link is made without one).
    pub destination: Option<LatLon>,
    pub timezone: Option<String>,
    /// When the technician clocked En Route in.
    pub enroute_at: Ts,
}

/// Clock a technician in or out of an activity at `time` (the ping's time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClockChange {
    pub user: Id,
    pub activity: Activity,
    pub action: ClockAction,
    pub time: Ts,
    pub lat: f64,
    pub lon: f64,
    pub vehicle: Id,
    pub cause: ClockCause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockCause {
    Arrival,
    Exit,
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::CreateGeofence(_) => "create_geofence",
            Action::UpdateGeofence(_) => "update_geofence",
            Action::DeleteGeofence { .. } => "delete_geofence",
            Action::SendServiceLink(_) => "send_service_link",
            Action::Clock(_) => "clock",
        }
    }
}

/// The id of a decision: SHA-256 over length-prefixed parts, first 16 bytes
/// in hex. Parts are never ambiguous (`["a:b","c"]` ≠ `["a","b:c"]`).
/// The id of a command about one (appointment, technician): `parts` for
/// the appointment's first life, with its generation appended once it was
/// revived after retirement ([`super::retention`]).
pub fn assignment_command_id(parts: &[&str], generation: u32) -> String {
    if generation == 0 {
        return command_id(parts);
    }
    let g = format!("g{generation}");
    let mut all = parts.to_vec();
    all.push(&g);
    command_id(&all)
}

pub fn command_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(b"geoclock.command.v1");
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = h.finalize();
    let mut id = String::with_capacity(32);
    for b in &digest[..16] {
        id.push(HEX[(b >> 4) as usize] as char);
        id.push(HEX[(b & 15) as usize] as char);
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_unambiguous() {
        assert_eq!(command_id(&["acme", "x"]), command_id(&["acme", "x"]));
        assert_ne!(command_id(&["a:b", "c"]), command_id(&["a", "b:c"]));
        assert_eq!(command_id(&["acme"]).len(), 32);
        // Pinned: ids are a contract with sinks that dedupe across versions.
        assert_eq!(command_id(&["acme", "clock", "7001", "11", "onsite", "in"]), "fd4e3d05d73e112a5393af45c8a64c93");
    }
}
