//! The engine's state as rows, for a key-value store: what changed since the
//! last drain ([`Engine::drain_rows`]) and a state rebuilt from all rows
//! ([`Engine::from_rows`]). Pure: bytes in, bytes out; the processor puts
//! them in RocksDB and the changelog.
//!
//! Invariants:
//! - Rows hold only facts (entities, pairing history, per-appointment fence
//!   and assignment records, each watched vehicle's latest ping, the
//!   watermark). Everything derived (indexes, prepared fences, watches,
//!   expiry queues) is recomputed by [`Engine::from_rows`] with the same
//!   functions the engine uses, so a restored engine decides exactly as the
//!   one that wrote the rows: feeding both the same further events yields the
//!   same commands (checked over every scenario file and every split point).
//! - A drain after handling events returns every row whose value changed
//!   (possibly more, never fewer); a row whose fact is gone is a delete.
//! - Tracking is off unless [`Engine::track_changes`] was called, so pure
//!   runs and benchmarks pay nothing.
//!
//! Key layout (UTF-8, relative to the tenant): `u/`, `l/`, `j/`, `d/`, `v/`,
//! `o/` (office), `c/` (contact) followed by the entity id; `p/` and a driver id (pairing history); `a/`
//! and an appointment id; `g/` and a vehicle id (latest ping); `r/` and a
//! retired appointment id (its last fence revision); `w/` and an
//! appointment id (stage two: the routes applied for it); `m` (watermark). Values are JSON.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::command::FenceChange;
use super::route;
use super::state::{Assignment, FenceRecord, Generation, Reason, Retired, Routed, State};

pub use super::state::RowKey;
use super::{fences, watches, Ctx, Engine, EngineError};
use crate::geo::{LatLon, PreparedFence};
use crate::model::{Appointment, Contact, Driver, Id, Job, Location, Office, Pairing, Settings, Ts, User, Vehicle};

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("state row {key:?}: {reason}")]
    Row { key: String, reason: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// One appointment's facts: the appointment (absent when only clock events
/// named it so far), its fence record and its technicians' assignments.
#[derive(Debug, Serialize, Deserialize)]
struct AppointmentRow {
    id: Id,
    appointment: Option<Appointment>,
    fence: Option<FenceRow>,
    assignments: Vec<(Id, Assignment)>,
    /// Set when revived after retirement (see [`super::retention`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revived: Option<Generation>,
    /// Stage one: watches routes published in this generation.
    #[serde(default, skip_serializing_if = "is_zero")]
    route_seq: u64,
    /// Stage one: every vehicle routed to in this generation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    routed_vehicles: Vec<Id>,
    /// No usable window: when it last changed (see [`super::retention`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    undated: Option<Ts>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Serialize, Deserialize)]
struct FenceRow {
    revision: u32,
    live: Option<FenceChange>,
    last: Option<FenceChange>,
    no_fence: Option<Reason>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    watermark: Option<Ts>,
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    // Plain data with string keys: serializing cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

impl Engine {
    /// Starts recording which rows change (for [`Engine::drain_rows`]).
    pub fn track_changes(&mut self) {
        self.state.dirty.tracking = true;
    }

    /// The rows changed since the last drain: `(key, Some(value) | None = delete)`, in key order.
    pub fn drain_rows(&mut self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let st = &mut self.state;
        let mut keys = std::mem::take(&mut st.dirty.rows);
        for v in std::mem::take(&mut st.dirty.vehicles) {
            if let Some(vw) = st.watches.get_mut(&v) {
                vw.last_dirty = false;
            }
            keys.insert(RowKey::LastPing(v));
        }
        keys.into_iter().map(|k| (k.encode(), row_value(st, &k))).collect()
    }

    /// An engine whose state is the one the rows describe.
    pub fn from_rows<'a>(
        tenant: impl Into<String>,
        settings: Settings,
        rows: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<Engine, PersistError> {
        let mut engine = Engine::new(tenant, settings)?;
        let mut appts: Vec<(Id, AppointmentRow)> = Vec::new();
        let mut lasts: Vec<(Id, (Ts, LatLon))> = Vec::new();
        let mut routed: Vec<(Id, Routed)> = Vec::new();
        {
            let st = &mut engine.state;
            for (key, value) in rows {
                let bad = |reason: String| PersistError::Row { key: String::from_utf8_lossy(key).into(), reason };
                let text = std::str::from_utf8(key).map_err(|e| bad(e.to_string()))?;
                let parse_err = |e: serde_json::Error| bad(e.to_string());
                if text == "m" {
                    st.watermark = serde_json::from_slice::<Meta>(value).map_err(parse_err)?.watermark;
                    continue;
                }
                let (tag, id) = text.split_at_checked(2).ok_or_else(|| bad("no tag".into()))?;
                let id = Id::text(id);
                match tag {
                    "u/" => {
                        let u: User = serde_json::from_slice(value).map_err(parse_err)?;
                        st.put_user(&u.id.clone(), Some(u));
                    }
                    "l/" => {
                        let l: Location = serde_json::from_slice(value).map_err(parse_err)?;
                        st.put_location(&l.id.clone(), Some(l));
                    }
                    "j/" => {
                        let j: Job = serde_json::from_slice(value).map_err(parse_err)?;
                        st.put_job(&j.id.clone(), Some(j));
                    }
                    "d/" => {
                        let d: Driver = serde_json::from_slice(value).map_err(parse_err)?;
                        st.put_driver(&d.id.clone(), Some(d));
                    }
                    "v/" => {
                        let v: Vehicle = serde_json::from_slice(value).map_err(parse_err)?;
                        st.vehicles.insert(v.id.clone(), v);
                    }
                    "o/" => {
                        let o: Office = serde_json::from_slice(value).map_err(parse_err)?;
                        st.put_office(&o.id.clone(), Some(o));
                    }
                    "c/" => {
                        let c: Contact = serde_json::from_slice(value).map_err(parse_err)?;
                        st.put_contact(&c.id.clone(), Some(c));
                    }
                    "p/" => {
                        for p in serde_json::from_slice::<Vec<Pairing>>(value).map_err(parse_err)? {
                            st.pairings.upsert(&p);
                        }
                    }
                    "a/" => {
                        let row: AppointmentRow = serde_json::from_slice(value).map_err(parse_err)?;
                        appts.push((row.id.clone(), row));
                    }
                    "r/" => {
                        st.put_retired(&id, serde_json::from_slice::<Retired>(value).map_err(parse_err)?);
                    }
                    "g/" => lasts.push((id, serde_json::from_slice(value).map_err(parse_err)?)),
                    "w/" => routed.push((id, serde_json::from_slice(value).map_err(parse_err)?)),
                    _ => return Err(bad(format!("unknown tag {tag:?}"))),
                }
            }
            for (id, row) in &appts {
                if let Some(g) = row.revived {
                    st.generations.insert(id.clone(), g);
                }
                if row.route_seq > 0 {
                    st.route_seq.insert(id.clone(), row.route_seq);
                }
                if !row.routed_vehicles.is_empty() {
                    st.routed_vehicles.insert(id.clone(), row.routed_vehicles.clone());
                }
                if let Some(a) = &row.appointment {
                    st.put_appointment(a.clone());
                }
                for (user, a) in &row.assignments {
                    let slot = st.slot(id, user);
                    st.assignments[slot] = a.clone();
                }
                // As written; a windowless appointment in rows of an older
                // version lacks it, and the next tick stamps it (as it does
                // in any engine restored from the same rows).
                let undated = match (&row.appointment, row.undated) {
                    (_, Some(t)) => Some(t),
                    (Some(a), None) if a.window().is_none() => Some(Ts::MIN),
                    _ => None,
                };
                st.set_undated(id, undated);
            }
        }
        let ctx = Ctx { tenant: &engine.tenant, settings: &engine.settings };
        let st = &mut engine.state;
        for (id, row) in appts {
            let Some(f) = row.fence else { continue };
            let prepared = fences::desired(&ctx, st, &id)
                .ok()
                .and_then(|spec| PreparedFence::new(&spec.shape, ctx.settings.exit_buffer_m).ok().map(Arc::new));
            if let Some(live) = &f.live {
                st.live_until.insert((live.active_to, id.clone()));
            }
            st.fences.insert(
                id,
                FenceRecord { revision: f.revision, live: f.live, last: f.last, prepared, no_fence: f.no_fence },
            );
        }
        let ids: Vec<Id> = st.appointments.keys().cloned().collect();
        for id in &ids {
            watches::rebuild(&ctx, st, id);
        }
        for (id, r) in routed {
            route::restore(&ctx, st, &id, r);
        }
        for (v, last) in lasts {
            if let Some(vw) = st.watches.get_mut(&v) {
                vw.last = Some(last);
            }
        }
        Ok(engine)
    }
}

fn row_value(st: &State, key: &RowKey) -> Option<Vec<u8>> {
    match key {
        RowKey::User(id) => st.users.get(id).map(json),
        RowKey::Location(id) => st.locations.get(id).map(json),
        RowKey::Job(id) => st.jobs.get(id).map(json),
        RowKey::Driver(id) => st.drivers.get(id).map(json),
        RowKey::Vehicle(id) => st.vehicles.get(id).map(json),
        RowKey::Office(id) => st.offices.get(id).map(json),
        RowKey::Contact(id) => st.contacts.get(id).map(json),
        RowKey::Pairings(id) => {
            let list = st.pairings.of_driver(id);
            (!list.is_empty()).then(|| json(&list))
        }
        RowKey::LastPing(id) => st.watches.get(id).and_then(|vw| vw.last).map(|l| json(&l)),
        RowKey::Retired(id) => st.retired.get(id).map(json),
        RowKey::Routes(id) => st.routed.get(id).map(json),
        RowKey::Meta => Some(json(&Meta { watermark: st.watermark })),
        RowKey::Appointment(id) => {
            let row = AppointmentRow {
                id: id.clone(),
                appointment: st.appointments.get(id).cloned(),
                fence: st.fences.get(id).map(|f| FenceRow {
                    revision: f.revision,
                    live: f.live.clone(),
                    last: f.last.clone(),
                    no_fence: f.no_fence,
                }),
                assignments: st
                    .slots_of
                    .get(id)
                    .into_iter()
                    .flatten()
                    .map(|(user, slot)| (user.clone(), st.assignments[*slot].clone()))
                    .collect(),
                revived: st.generations.get(id).copied(),
                route_seq: st.route_seq.get(id).copied().unwrap_or(0),
                routed_vehicles: st.routed_vehicles.get(id).cloned().unwrap_or_default(),
                undated: st.undated.get(id).copied(),
            };
            let empty = row.appointment.is_none() && row.fence.is_none() && row.assignments.is_empty();
            (!empty).then(|| json(&row))
        }
    }
}
