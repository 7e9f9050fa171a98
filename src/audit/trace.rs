//! A replay that watches one appointment: the one-stage engine fed a
//! tenant's input in order, noting every input that touched the
//! appointment and every command emitted for it ([`Trace::moments`]), and
//! re-deriving from the same pings what the engine does not keep (the
//! last outside ping before the first inside one, how many pings were
//! tested). Pure; [`super::explain`] turns the result into an explanation.
//!
//! It runs the one-stage engine ([`crate::engine::Role::Whole`]), which
//! decides what the processor's two stages decide except for a technician
//! whose vehicles sit on two pings partitions (see [`super::replay`]).

use std::collections::{BTreeMap, BTreeSet};

use super::explain::Moment;
use crate::engine::state::keep_earliest;
use crate::engine::{Action, ClockCause, Command, Engine, EngineError, EntityRef, Event};
use crate::geo::LatLon;
use crate::model::{normalize_email, Id, Settings, Ts};

/// What a replay noticed about one appointment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trace {
    pub moments: Vec<Moment>,
    /// Per technician: the latest in-window ping outside the fence, among
    /// those before the first inside one.
    pub last_outside: BTreeMap<Id, crate::engine::Evidence>,
    /// Per technician: in-window pings of their vehicles tested.
    pub pings_tested: BTreeMap<Id, u64>,
}

/// The engine and the appointment it watches.
pub struct Tracer {
    engine: Engine,
    appointment: Id,
    input: u64,
    trace: Trace,
    /// Per technician: the earliest in-window inside ping seen so far.
    first_inside: BTreeMap<Id, crate::engine::Evidence>,
    /// Entity inputs, kept until the end shows which concern the
    /// appointment (its job, site, technicians, their drivers, pairings
    /// and vehicles, over every version of it).
    entities: Vec<(u64, Option<Ts>, Event)>,
    /// Jobs and technicians any version of the appointment named.
    jobs: BTreeSet<Id>,
    techs: BTreeSet<Id>,
}

fn t(ts: Ts) -> String {
    ts.to_rfc3339()
}

/// What concerns the appointment, over the whole replay.
#[derive(Default)]
struct Related {
    jobs: BTreeSet<Id>,
    locations: BTreeSet<Id>,
    techs: BTreeSet<Id>,
    emails: BTreeSet<String>,
    drivers: BTreeSet<Id>,
    vehicles: BTreeSet<Id>,
}

impl Tracer {
    pub fn new(tenant: &str, settings: Settings, appointment: Id) -> Result<Tracer, EngineError> {
        Ok(Tracer {
            engine: Engine::new(tenant, settings)?,
            appointment,
            input: 0,
            trace: Trace::default(),
            first_inside: BTreeMap::new(),
            entities: Vec::new(),
            jobs: BTreeSet::new(),
            techs: BTreeSet::new(),
        })
    }

    /// The next input of the tenant, with its record time when read from
    /// a topic.
    pub fn event(&mut self, event: &Event, record_time: Option<Ts>) {
        let n = self.input;
        self.input += 1;
        let about = self.describe(event);
        match event {
            Event::Ping(p) => self.test_ping(p),
            Event::Appointment(a) if a.id == self.appointment => {
                self.jobs.extend(a.job.iter().cloned());
                self.techs.extend(a.techs.iter().cloned());
            }
            Event::User(_)
            | Event::Location(_)
            | Event::Job(_)
            | Event::Driver(_)
            | Event::Vehicle(_)
            | Event::Pairing(_)
            | Event::Office(_)
            | Event::Contact(_)
            | Event::Delete(
                EntityRef::User(_)
                | EntityRef::Location(_)
                | EntityRef::Job(_)
                | EntityRef::Driver(_)
                | EntityRef::Vehicle(_)
                | EntityRef::Pairing { .. }
                | EntityRef::Office(_)
                | EntityRef::Contact(_),
            ) => self.entities.push((n, record_time, event.clone())),
            _ => {}
        }
        let mut out = Vec::new();
        let handled = self.engine.handle(event, &mut out);
        let mut say = |what: String| self.trace.moments.push(Moment { input: n, record_time, what });
        match (about, &handled) {
            (Some(about), Ok(())) => say(about),
            (Some(about), Err(e)) => say(format!("{about} (rejected: {e})")),
            _ => {}
        }
        for c in out.iter().filter(|c| c.appointment == self.appointment) {
            say(format!("→ {} (caused by this {})", command(c), event.kind()));
        }
    }

    pub fn finish(mut self) -> (Engine, Trace) {
        for (user, first) in &self.first_inside {
            if self.trace.last_outside.get(user).is_some_and(|o| o.time > first.time) {
                self.trace.last_outside.remove(user);
            }
        }
        let related = self.related();
        let entities = std::mem::take(&mut self.entities);
        let mut moments: Vec<Moment> = entities
            .iter()
            .filter_map(|(n, record_time, e)| {
                Some(Moment { input: *n, record_time: *record_time, what: describe_entity(&related, e)? })
            })
            .collect();
        moments.append(&mut self.trace.moments);
        // Stable: an input's own line before the commands it caused.
        moments.sort_by_key(|m| m.input);
        self.trace.moments = moments;
        (self.engine, self.trace)
    }

    /// Everything that concerns the appointment, from its versions and
    /// the entity inputs kept.
    fn related(&self) -> Related {
        let st = self.engine.state();
        let mut r = Related { jobs: self.jobs.clone(), techs: self.techs.clone(), ..Related::default() };
        let email = |e: Option<&str>| normalize_email(e);
        for (_, _, e) in &self.entities {
            match e {
                Event::Job(j) if r.jobs.contains(&j.id) => r.locations.extend(j.location.iter().cloned()),
                Event::User(u) if r.techs.contains(&u.id) => r.emails.extend(email(u.email.as_deref())),
                _ => {}
            }
        }
        for (_, _, e) in &self.entities {
            if let Event::Driver(d) = e {
                if email(d.email.as_deref()).is_some_and(|x| r.emails.contains(&x)) {
                    r.drivers.insert(d.id.clone());
                }
            }
        }
        r.drivers.extend(r.techs.iter().filter_map(|u| st.driver_of(u).cloned()));
        for (_, _, e) in &self.entities {
            if let Event::Pairing(p) = e {
                if r.drivers.contains(&p.driver) {
                    r.vehicles.insert(p.vehicle.clone());
                }
            }
        }
        r
    }

    /// A line for an input that names the appointment, `None` otherwise
    /// (entity inputs are described at the end: [`describe_entity`]).
    fn describe(&self, event: &Event) -> Option<String> {
        let me = &self.appointment;
        Some(match event {
            Event::Appointment(a) if &a.id == me => format!(
                "appointment {}: {}, window {} to {}, job {}, technicians [{}]",
                a.id,
                a.status.as_str(),
                a.window_start.map_or("none".into(), t),
                a.window_end.map_or("none".into(), t),
                a.job.as_ref().map_or("none".into(), ToString::to_string),
                a.techs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ),
            Event::Delete(EntityRef::Appointment(id)) if id == me => format!("appointment {id} deleted"),
            Event::Clock(c) if &c.appointment == me => format!(
                "clock event: technician {} {} {} at {}",
                c.user,
                c.activity.as_str(),
                c.action.as_str(),
                t(c.time)
            ),
            _ => return None,
        })
    }

    /// Re-derives, for each watch of the appointment on the ping's
    /// vehicle, whether the ping was inside, as the engine is about to.
    fn test_ping(&mut self, p: &crate::model::Ping) {
        let settings = self.engine.settings();
        if let (Some(max), Some(acc)) = (settings.max_accuracy_m, p.accuracy_m) {
            if acc.is_nan() || acc > max {
                return;
            }
        }
        let Ok(point) = LatLon::new(p.lat, p.lon).validate() else { return };
        let st = self.engine.state();
        let Some(vw) = st.watches.get(&p.vehicle) else { return };
        for w in vw.cold.iter().filter(|w| w.appointment == self.appointment) {
            if !w.paired_at(p.time) || p.time < w.earliest || p.time > w.latest {
                continue;
            }
            *self.trace.pings_tested.entry(w.user.clone()).or_default() += 1;
            let e = crate::engine::Evidence {
                time: p.time,
                vehicle: p.vehicle.clone(),
                lat: p.lat,
                lon: p.lon,
                distance_m: (w.fence.distance_to_center_m(point) * 10.0).round() / 10.0,
            };
            if w.fence.contains(point) {
                let mut first = self.first_inside.get(&w.user).cloned();
                keep_earliest(&mut first, &e);
                if let Some(f) = first {
                    self.first_inside.insert(w.user.clone(), f);
                }
                continue;
            }
            let before_inside = self.first_inside.get(&w.user).is_none_or(|f| e.time < f.time);
            let later = self.trace.last_outside.get(&w.user).is_none_or(|o| e.time > o.time);
            if before_inside && later {
                self.trace.last_outside.insert(w.user.clone(), e);
            }
        }
    }
}

/// A line for an entity input that concerns the appointment.
fn describe_entity(r: &Related, event: &Event) -> Option<String> {
    Some(match event {
        Event::Job(j) if r.jobs.contains(&j.id) => format!(
            "job {}: number {}, location {}",
            j.id,
            j.number.as_ref().map_or("none".into(), ToString::to_string),
            j.location.as_ref().map_or("none".into(), ToString::to_string)
        ),
        Event::Location(l) if r.locations.contains(&l.id) => format!(
            "location {} \"{}\": {}, email {}",
            l.id,
            l.name,
            match (l.lat, l.lon, &l.polygon) {
                (_, _, Some(p)) => format!("polygon of {} vertices", p.len()),
                (Some(a), Some(b), None) => format!("{a:.6}, {b:.6}"),
                _ => "no coordinates".into(),
            },
            l.email.as_deref().unwrap_or("none")
        ),
        Event::User(u) if r.techs.contains(&u.id) => {
            format!("technician {} \"{}\": email {}", u.id, u.name, u.email.as_deref().unwrap_or("none"))
        }
        Event::Driver(d) if r.drivers.contains(&d.id) => {
            format!("Azuga driver {} \"{}\": email {}", d.id, d.name, d.email.as_deref().unwrap_or("none"))
        }
        Event::Vehicle(v) if r.vehicles.contains(&v.id) => format!("vehicle {} \"{}\"", v.id, v.name),
        Event::Pairing(p) if r.drivers.contains(&p.driver) => format!(
            "pairing: driver {} with {} from {} to {}",
            p.driver,
            p.vehicle,
            t(p.from),
            p.to.map_or("open".into(), t)
        ),
        Event::Delete(EntityRef::Pairing { driver, vehicle, from }) if r.drivers.contains(driver) => {
            format!("pairing deleted: driver {driver} with {vehicle} from {}", t(*from))
        }
        Event::Delete(EntityRef::Job(id)) if r.jobs.contains(id) => format!("job {id} deleted"),
        Event::Delete(EntityRef::Location(id)) if r.locations.contains(id) => format!("location {id} deleted"),
        Event::Delete(EntityRef::User(id)) if r.techs.contains(id) => format!("technician {id} deleted"),
        Event::Delete(EntityRef::Driver(id)) if r.drivers.contains(id) => format!("Azuga driver {id} deleted"),
        Event::Delete(EntityRef::Vehicle(id)) if r.vehicles.contains(id) => format!("vehicle {id} deleted"),
        _ => return None,
    })
}

/// A command in a line.
pub fn command(c: &Command) -> String {
    let detail = match &c.action {
        Action::CreateGeofence(f) | Action::UpdateGeofence(f) => {
            format!("revision {}, \"{}\", active {} to {}", f.revision, f.name, t(f.active_from), t(f.active_to))
        }
        Action::DeleteGeofence { revision, name } => format!("revision {revision}, \"{name}\""),
        Action::SendServiceLink(l) => format!("technician {} to {} for {}", l.user, l.to, l.vehicle),
        Action::Clock(k) => format!(
            "technician {} {} {} at {} (vehicle {}, {})",
            k.user,
            k.activity.as_str(),
            k.action.as_str(),
            t(k.time),
            k.vehicle,
            match k.cause {
                ClockCause::Arrival => "arrival",
                ClockCause::Exit => "exit",
            }
        ),
    };
    format!("{} {} {detail}", c.action.kind(), c.id)
}

/// Replays `events` of `tenant` (a scenario's, say) and explains
/// `appointment` (only technician `tech` when given).
pub fn explain_events(
    tenant: &str,
    settings: Settings,
    events: &[Event],
    appointment: &Id,
    tech: Option<&Id>,
) -> Result<super::Explanation, EngineError> {
    let mut tracer = Tracer::new(tenant, settings, appointment.clone())?;
    for e in events {
        tracer.event(e, None);
    }
    let (engine, trace) = tracer.finish();
    Ok(super::Explanation::build(&engine, appointment, tech, Some(&trace)))
}
