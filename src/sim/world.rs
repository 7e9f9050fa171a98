//! What a simulator holds: one tenant's entities on both vendors, the clock
//! events technicians press, and the pings vehicles will report.
//!
//! A [`World`] comes from a scenario file ([`World::from_scenario`]) or from
//! the fleet simulator ([`super::fleet`]). Invariants:
//! - Entity lists have unique ids (a later upsert replaces an earlier one in
//!   place; a delete removes it).
//! - `pings` is sorted by `release_at` (stable), the time the tracker hands a
//!   point to Azuga; a point may be released after its own `time` (a late,
//!   buffered point) and the same point may appear twice (a duplicate).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::engine::{EntityRef, Event};
use crate::model::{
    Appointment, ClockEvent, Contact, Driver, Id, Job, Location, Office, Pairing, Ping, Ts, User, Vehicle,
};
use crate::scenario::{Scenario, ScenarioError};

/// A ping and when the tracker hands it to Azuga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduledPing {
    pub ping: Ping,
    pub release_at: Ts,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct World {
    pub tenant: String,
    pub users: Vec<User>,
    pub locations: Vec<Location>,
    #[serde(default)]
    pub offices: Vec<Office>,
    #[serde(default)]
    pub contacts: Vec<Contact>,
    pub jobs: Vec<Job>,
    pub appointments: Vec<Appointment>,
    pub clocks: Vec<ClockEvent>,
    pub drivers: Vec<Driver>,
    pub vehicles: Vec<Vehicle>,
    pub pairings: Vec<Pairing>,
    pub pings: Vec<ScheduledPing>,
    /// Appointments ServiceTrade holds locked (their job was invoiced): it
    /// refuses clock events on them with a 422.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clock_locked: Vec<Id>,
}

fn upsert<T>(list: &mut Vec<T>, item: T, same: impl Fn(&T, &T) -> bool) {
    match list.iter_mut().find(|x| same(x, &item)) {
        Some(slot) => *slot = item,
        None => list.push(item),
    }
}

impl World {
    /// The world a scenario describes: its entities, then its events applied
    /// in order (upserts replace, deletes remove, clocks and pings are held;
    /// ticks are ignored). Pings are released at their own time.
    pub fn from_scenario(s: &Scenario) -> World {
        let mut w = World {
            tenant: s.tenant.clone(),
            users: Vec::new(),
            locations: Vec::new(),
            offices: Vec::new(),
            contacts: Vec::new(),
            jobs: Vec::new(),
            appointments: Vec::new(),
            clocks: Vec::new(),
            drivers: Vec::new(),
            vehicles: Vec::new(),
            pairings: Vec::new(),
            pings: Vec::new(),
            clock_locked: Vec::new(),
        };
        for e in s.all_events() {
            w.apply(e);
        }
        w.pings.sort_by_key(|p| p.release_at);
        w
    }

    /// Loads a scenario YAML file as a world.
    pub fn load(path: &Path) -> Result<World, ScenarioError> {
        Ok(World::from_scenario(&Scenario::load(path)?))
    }

    /// The world as the pipeline would see it, in order: every entity, then
    /// the clock events and pings merged by when they happen (a clock event
    /// at its time, a ping at its release; a clock event first on a tie).
    /// What a pure engine run over the world consumes.
    pub fn events(&self) -> Vec<Event> {
        let mut out: Vec<Event> = Vec::new();
        out.extend(self.users.iter().cloned().map(Event::User));
        out.extend(self.offices.iter().cloned().map(Event::Office));
        out.extend(self.contacts.iter().cloned().map(Event::Contact));
        out.extend(self.locations.iter().cloned().map(Event::Location));
        out.extend(self.jobs.iter().cloned().map(Event::Job));
        out.extend(self.appointments.iter().cloned().map(Event::Appointment));
        out.extend(self.drivers.iter().cloned().map(Event::Driver));
        out.extend(self.vehicles.iter().cloned().map(Event::Vehicle));
        out.extend(self.pairings.iter().cloned().map(Event::Pairing));
        let mut timed: Vec<(Ts, u8, Event)> =
            self.clocks.iter().map(|c| (c.time, 0, Event::Clock(c.clone()))).collect();
        timed.extend(self.pings.iter().map(|p| (p.release_at, 1, Event::Ping(p.ping.clone()))));
        timed.sort_by_key(|(t, order, _)| (*t, *order));
        out.extend(timed.into_iter().map(|(_, _, e)| e));
        out
    }

    /// Applies one event (see [`World::from_scenario`]).
    pub fn apply(&mut self, event: Event) {
        match event {
            Event::User(u) => upsert(&mut self.users, u, |a, b| a.id == b.id),
            Event::Location(l) => upsert(&mut self.locations, l, |a, b| a.id == b.id),
            Event::Job(j) => upsert(&mut self.jobs, j, |a, b| a.id == b.id),
            Event::Appointment(a) => upsert(&mut self.appointments, a, |x, y| x.id == y.id),
            Event::Driver(d) => upsert(&mut self.drivers, d, |a, b| a.id == b.id),
            Event::Vehicle(v) => upsert(&mut self.vehicles, v, |a, b| a.id == b.id),
            Event::Office(o) => upsert(&mut self.offices, o, |a, b| a.id == b.id),
            Event::Contact(c) => upsert(&mut self.contacts, c, |a, b| a.id == b.id),
            Event::Pairing(p) => {
                upsert(&mut self.pairings, p, |a, b| a.driver == b.driver && a.vehicle == b.vehicle && a.from == b.from)
            }
            Event::Clock(c) => self.clocks.push(c),
            Event::Ping(p) => {
                let release_at = p.time;
                self.pings.push(ScheduledPing { ping: p, release_at })
            }
            Event::Delete(r) => match r {
                EntityRef::User(id) => self.users.retain(|x| x.id != id),
                EntityRef::Location(id) => self.locations.retain(|x| x.id != id),
                EntityRef::Job(id) => self.jobs.retain(|x| x.id != id),
                EntityRef::Appointment(id) => self.appointments.retain(|x| x.id != id),
                EntityRef::Driver(id) => self.drivers.retain(|x| x.id != id),
                EntityRef::Vehicle(id) => self.vehicles.retain(|x| x.id != id),
                EntityRef::Office(id) => self.offices.retain(|x| x.id != id),
                EntityRef::Contact(id) => self.contacts.retain(|x| x.id != id),
                EntityRef::Pairing { driver, vehicle, from } => {
                    self.pairings.retain(|p| !(p.driver == driver && p.vehicle == vehicle && p.from == from))
                }
            },
            Event::Tick(_) | Event::Route(_) => {}
        }
    }
}
