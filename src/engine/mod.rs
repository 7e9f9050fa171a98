//! The decision core: `state + event → new state + commands`, for one tenant.
//!
//! No Kafka, RocksDB, HTTP or wall clock: every decision is a function of
//! the events handled so far, in order, and of their event times. The Kafka
//! processor, replay/audit and scenario files all run this same code.
//!
//! Invariants (each is checked by scenario files or property tests):
//! - Determinism: the same event sequence yields the same commands in the
//!   same order with the same ids, byte for byte. Output never depends on
//!   hash iteration order or on anything but the input.
//! - Duplicate-safety: re-handling an event immediately changes nothing; a
//!   ping or clock event re-delivered at any later point changes nothing.
//! - Once: at most one arrival (En Route out / On Site in), one exit and one
//!   Service Link per (appointment, technician) and generation (an
//!   appointment revived after retirement is a new generation). Command ids
//!   are unique while retention remembers the appointment: one revived
//!   after even its retired record was forgotten ([`retention`]) starts
//!   afresh, with its first visit's ids.
//! - Exit (auto clock-out) is decided only by a ping newer than every ping
//!   seen from that vehicle; late pings can arrive, never exit.
//! - Event time: expiry moves only on [`Event::Tick`]; arrivals are judged
//!   at each ping's own time.
//!
//! The rules live in one module each: [`fences`] (lifecycle), [`watches`]
//! (which vehicle's pings concern which appointment), [`arrival`] (pings),
//! [`service_link`] (clock events), [`retention`] (what is forgotten when).
//! The Activity Report reads the state
//! through [`crate::report`].

pub mod arrival;
pub mod command;
pub mod event;
pub mod fences;
pub mod offices;
pub mod persist;
#[cfg(test)]
mod properties;
pub mod retention;
pub mod route;
pub mod service_link;
pub mod state;
pub mod timeline;
pub mod watches;

use std::collections::BTreeSet;

pub use command::{Action, ClockCause, ClockChange, Command, FenceChange, ServiceLink};
pub use event::{EntityRef, Event};
pub use state::{Evidence, LinkState, Reason};

use crate::geo::GeoError;
use crate::model::{AppointmentStatus, Id, Settings, SettingsError};
pub use event::Route;
pub use state::Role;
use state::{Assignment, RowKey, State};

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum EngineError {
    #[error("invalid settings: {0}")]
    Settings(#[from] SettingsError),
    #[error("invalid ping: {0}")]
    InvalidPing(GeoError),
    #[error("{event} events are not input of the {role:?} stage")]
    NotMyInput { event: &'static str, role: Role },
    #[error("invalid pairing for driver {driver}: `to` ({to}) is not after `from` ({from})")]
    InvalidPairing { driver: Id, from: String, to: String },
}

/// What every rule needs besides the state.
pub struct Ctx<'a> {
    pub tenant: &'a str,
    pub settings: &'a Settings,
}

impl Ctx<'_> {
    /// Nothing left that pings could decide for this assignment.
    pub fn is_done(&self, a: &Assignment) -> bool {
        a.arrival.is_some() && (!self.settings.auto_clock_out_on_exit || a.exited.is_some())
    }
}

/// One tenant's engine.
#[derive(Debug, Clone)]
pub struct Engine {
    tenant: String,
    settings: Settings,
    state: State,
}

impl Engine {
    pub fn new(tenant: impl Into<String>, settings: Settings) -> Result<Self, EngineError> {
        settings.validate()?;
        Ok(Engine { tenant: tenant.into(), settings, state: State::default() })
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub(crate) fn state(&self) -> &State {
        &self.state
    }

    /// Runs only one stage of the engine ([`route`]).
    pub fn set_role(&mut self, role: Role) {
        self.state.role = role;
    }

    pub fn role(&self) -> Role {
        self.state.role
    }

    /// Adds to this engine's assignments what `other` (a stage-two engine)
    /// learned about the same ones ([`state::Assignment::absorb`]): the
    /// Activity Report of a two-stage run.
    pub fn absorb_assignments(&mut self, other: &Engine) {
        for ((appt, user), slot) in &other.state.slots {
            if let Some(&mine) = self.state.slots.get(&(appt.clone(), user.clone())) {
                let theirs = &other.state.assignments[*slot];
                self.state.assignments[mine].absorb(theirs);
            }
        }
    }

    /// Forgets every Service Link decision (tests comparing the rest).
    #[cfg(test)]
    pub(crate) fn forget_links(&mut self) {
        for a in &mut self.state.assignments {
            a.link = LinkState::NotAttempted;
        }
    }

    /// Stage one: the routes decided since the last call, in order.
    pub fn drain_routes(&mut self) -> Vec<Route> {
        std::mem::take(&mut self.state.routes_out)
    }

    /// Applies one event, appending the commands it decides to `out`.
    /// On error the state is unchanged and nothing is appended.
    pub fn handle(&mut self, event: &Event, out: &mut Vec<Command>) -> Result<(), EngineError> {
        let ctx = Ctx { tenant: &self.tenant, settings: &self.settings };
        let st = &mut self.state;
        mark_entity(st, event);
        match (st.role, event) {
            (Role::Vehicles, Event::Route(r)) => {
                route::apply(&ctx, st, r, out);
                return Ok(());
            }
            (Role::Vehicles, Event::Ping(_)) => {}
            (Role::Vehicles, _) | (_, Event::Route(_)) | (Role::Appointments, Event::Ping(_)) => {
                return Err(EngineError::NotMyInput { event: event.kind(), role: st.role });
            }
            _ => {}
        }
        let affected: BTreeSet<Id> = match event {
            Event::Route(_) => BTreeSet::new(),
            Event::Ping(p) => return arrival::on_ping(&ctx, st, p, out),
            Event::Clock(c) if retention::ignores(st, c) => return Ok(()),
            Event::Clock(c) => {
                st.dirty.mark(|| RowKey::Appointment(c.appointment.clone()));
                service_link::on_clock(&ctx, st, c, out);
                if st.appointments.get(&c.appointment).and_then(|a| a.window()).is_none() {
                    st.touch_undated(&c.appointment);
                }
                return Ok(());
            }
            Event::User(u) => st.put_user(&u.id, Some(u.clone())),
            Event::Location(l) => st.put_location(&l.id, Some(l.clone())),
            Event::Job(j) => st.put_job(&j.id, Some(j.clone())),
            Event::Appointment(a) => st.put_appointment(a.clone()),
            Event::Driver(d) => st.put_driver(&d.id, Some(d.clone())),
            Event::Vehicle(v) => {
                st.vehicles.insert(v.id.clone(), v.clone());
                BTreeSet::new()
            }
            Event::Office(o) => st.put_office(&o.id, Some(o.clone())),
            Event::Contact(c) => st.put_contact(&c.id, Some(c.clone())),
            Event::Pairing(p) => {
                if p.to.is_some_and(|to| to <= p.from) {
                    return Err(EngineError::InvalidPairing {
                        driver: p.driver.clone(),
                        from: p.from.to_rfc3339(),
                        to: p.to.map(|t| t.to_rfc3339()).unwrap_or_default(),
                    });
                }
                if st.pairings.upsert(p) {
                    st.appts_of_driver(&p.driver)
                } else {
                    BTreeSet::new()
                }
            }
            Event::Delete(r) => match r {
                EntityRef::User(id) => st.put_user(id, None),
                EntityRef::Location(id) => st.put_location(id, None),
                EntityRef::Job(id) => st.put_job(id, None),
                EntityRef::Driver(id) => st.put_driver(id, None),
                EntityRef::Vehicle(id) => {
                    st.vehicles.remove(id);
                    BTreeSet::new()
                }
                EntityRef::Office(id) => st.put_office(id, None),
                EntityRef::Contact(id) => st.put_contact(id, None),
                EntityRef::Appointment(id) => match st.appointments.get(id) {
                    Some(a) if a.status != AppointmentStatus::Deleted => {
                        let deleted = state_deleted(a);
                        st.put_appointment(deleted)
                    }
                    _ => BTreeSet::new(),
                },
                EntityRef::Pairing { driver, vehicle, from } => {
                    if st.pairings.remove(driver, vehicle, *from) {
                        st.appts_of_driver(driver)
                    } else {
                        BTreeSet::new()
                    }
                }
            },
            Event::Tick(t) => {
                if st.watermark.is_some_and(|w| w >= *t) {
                    return Ok(());
                }
                let before = st.watermark.replace(*t);
                st.dirty.mark(|| RowKey::Meta);
                refresh_all(&ctx, st, watches::due(st, *t), out);
                retention::on_tick(&ctx, st, before, *t);
                return Ok(());
            }
        };
        refresh_all(&ctx, st, affected, out);
        Ok(())
    }
}

/// Marks the entity row an event writes (a no-op unless tracking).
fn mark_entity(st: &mut State, event: &Event) {
    if !st.dirty.tracking {
        return;
    }
    let key = match event {
        Event::User(u) => RowKey::User(u.id.clone()),
        Event::Location(l) => RowKey::Location(l.id.clone()),
        Event::Job(j) => RowKey::Job(j.id.clone()),
        Event::Driver(d) => RowKey::Driver(d.id.clone()),
        Event::Vehicle(v) => RowKey::Vehicle(v.id.clone()),
        Event::Pairing(p) => RowKey::Pairings(p.driver.clone()),
        Event::Office(o) => RowKey::Office(o.id.clone()),
        Event::Contact(c) => RowKey::Contact(c.id.clone()),
        Event::Delete(r) => match r {
            EntityRef::User(id) => RowKey::User(id.clone()),
            EntityRef::Location(id) => RowKey::Location(id.clone()),
            EntityRef::Job(id) => RowKey::Job(id.clone()),
            EntityRef::Driver(id) => RowKey::Driver(id.clone()),
            EntityRef::Vehicle(id) => RowKey::Vehicle(id.clone()),
            EntityRef::Pairing { driver, .. } => RowKey::Pairings(driver.clone()),
            EntityRef::Office(id) => RowKey::Office(id.clone()),
            EntityRef::Contact(id) => RowKey::Contact(id.clone()),
            EntityRef::Appointment(_) => return,
        },
        Event::Appointment(_) | Event::Clock(_) | Event::Ping(_) | Event::Tick(_) | Event::Route(_) => return,
    };
    st.dirty.rows.insert(key);
}

fn state_deleted(a: &crate::model::Appointment) -> crate::model::Appointment {
    crate::model::Appointment { status: AppointmentStatus::Deleted, ..a.clone() }
}

fn refresh_all(ctx: &Ctx, st: &mut State, appts: impl IntoIterator<Item = Id>, out: &mut Vec<Command>) {
    for appt in appts {
        st.dirty.mark(|| RowKey::Appointment(appt.clone()));
        refresh(ctx, st, &appt, out);
    }
}

/// Brings one appointment's derived state and commands up to date with the
/// entities. Idempotent: a second call emits nothing.
fn refresh(ctx: &Ctx, st: &mut State, appt: &Id, out: &mut Vec<Command>) {
    fences::reconcile(ctx, st, appt, out);
    let old = watches::rebuild(ctx, st, appt);
    if st.role == Role::Appointments {
        route::publish_watches(st, appt, old);
    }
    service_link::retry_pending(ctx, st, appt, out);
}
