//! The ServiceTrade simulator's data: entities with their `updated` stamps,
//! rendered in ServiceTrade's JSON shapes, listed with paging and filters.
//!
//! Invariants:
//! - `updated` is unix seconds (ServiceTrade's unit) of the last change;
//!   `updatedAfter=T` lists entities with `updated > T`.
//! - Lists are ordered by id, so paging is stable while nothing changes.
//!   Entities are held in hash maps (an [`Id`] hashes by its text; its
//!   order is numeric-aware, so a `BTreeMap` could not be searched by `&str`).
//! - Every change returns the webhook item describing it
//!   (`{action, timestamp, userId, entity{type,id,uri}, changeset}`), with
//!   the changeset listing the top-level fields whose JSON changed.
//! - Times in the JSON (windows, clock event times) are unix seconds; the
//!   milliseconds of a model time are dropped.
//! - Offices are locations with `isVendor: true`: listed, fetched, changed
//!   and deleted as `location`s (an office and a customer location never
//!   share an id). Contacts are `GET /contact` (filter `locationId`).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::{json, Value};

use crate::engine::{EntityRef, Event};
use crate::model::{Appointment, AppointmentStatus};
use crate::model::{ClockEvent, Contact, Id, Job, Location, Office, Ts, User};

/// Entity types as they appear in webhook payloads and paths.
pub use crate::vendor::servicetrade::TYPES;

#[derive(Debug, Clone)]
struct Rec<T> {
    value: T,
    updated: i64,
}

/// A clock event as ServiceTrade holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClockRec {
    pub id: i64,
    pub event: ClockEvent,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    /// The user whose session created it (`None`: the technician's app).
    pub created_by: Option<Id>,
}

/// What the simulator holds, in model types (for tests and `/admin/state`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Snapshot {
    pub users: Vec<User>,
    pub locations: Vec<Location>,
    pub offices: Vec<Office>,
    pub contacts: Vec<Contact>,
    pub jobs: Vec<Job>,
    pub appointments: Vec<Appointment>,
    pub clocks: Vec<ClockRec>,
}

#[derive(Debug, Default)]
pub struct Store {
    users: HashMap<Id, Rec<User>>,
    locations: HashMap<Id, Rec<Location>>,
    offices: HashMap<Id, Rec<Office>>,
    contacts: HashMap<Id, Rec<Contact>>,
    jobs: HashMap<Id, Rec<Job>>,
    appointments: HashMap<Id, Rec<Appointment>>,
    clocks: BTreeMap<i64, Rec<ClockRec>>,
}

/// One change, for the webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub entity: &'static str,
    pub id: String,
    pub item: Value,
}

fn secs(t: Ts) -> i64 {
    t.millis().div_euclid(1000)
}

fn uri(kind: &str, id: &impl std::fmt::Display) -> String {
    format!("/api/{kind}/{id}")
}

fn split_name(name: &str) -> (&str, &str) {
    name.trim().split_once(' ').unwrap_or((name.trim(), ""))
}

fn sorted<T>(m: &HashMap<Id, Rec<T>>) -> Vec<&Rec<T>> {
    let mut v: Vec<(&Id, &Rec<T>)> = m.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v.into_iter().map(|(_, r)| r).collect()
}

impl Store {
    pub fn user_json(&self, u: &User, updated: i64) -> Value {
        let (first, last) = split_name(&u.name);
        json!({
            "id": u.id, "uri": uri("user", &u.id), "name": u.name, "firstName": first, "lastName": last,
            "email": u.email, "isTech": u.tech, "status": "active", "updated": updated,
        })
    }

    pub fn location_json(&self, l: &Location, updated: i64) -> Value {
        json!({
            "id": l.id, "uri": uri("location", &l.id), "name": l.name,
            "address": {"street": "", "city": "", "state": "", "postalCode": ""},
            "lat": l.lat, "lon": l.lon, "email": l.email, "primaryContactId": l.primary_contact,
            "officeIds": l.offices, "isVendor": false, "updated": updated,
        })
    }

    /// An office: a vendor location.
    pub fn office_json(&self, o: &Office, updated: i64) -> Value {
        json!({
            "id": o.id, "uri": uri("location", &o.id), "name": o.name,
            "address": {"street": "", "city": "", "state": "", "postalCode": ""},
            "lat": null, "lon": null, "email": null, "primaryContactId": null, "officeIds": [],
            "isVendor": true, "updated": updated,
        })
    }

    pub fn contact_json(&self, c: &Contact, updated: i64) -> Value {
        let (first, last) = split_name(&c.name);
        let locations: Vec<Value> = c.locations.iter().map(|l| json!({"id": l, "uri": uri("location", l)})).collect();
        json!({
            "id": c.id, "uri": uri("contact", &c.id), "firstName": first, "lastName": last,
            "email": c.email, "locations": locations, "updated": updated,
        })
    }

    pub fn job_json(&self, j: &Job, updated: i64) -> Value {
        let location = j.location.as_ref().map(|id| {
            let loc = self.locations.get(id);
            let contact = loc
                .and_then(|l| l.value.primary_contact.as_ref())
                .map(|c| json!({"id": c, "email": self.contacts.get(c).and_then(|r| r.value.email.clone())}));
            json!({
                "id": id, "uri": uri("location", id),
                "name": loc.map(|l| l.value.name.clone()),
                "primaryContact": contact,
            })
        });
        json!({
            "id": j.id, "uri": uri("job", &j.id), "number": j.number, "status": "scheduled",
            "location": location, "updated": updated,
        })
    }

    pub fn appointment_json(&self, a: &Appointment, updated: i64) -> Value {
        let techs: Vec<Value> =
            a.techs.iter().map(|t| json!({"id": t, "name": self.users.get(t).map(|u| u.value.name.clone())})).collect();
        json!({
            "id": a.id, "uri": uri("appointment", &a.id), "status": a.status.as_str(),
            "windowStart": a.window_start.map(secs), "windowEnd": a.window_end.map(secs),
            "job": a.job.as_ref().map(|j| json!({"id": j, "uri": uri("job", j)})),
            "techs": techs, "updated": updated,
        })
    }

    pub fn clock_json(&self, c: &ClockRec, updated: i64) -> Value {
        let e = &c.event;
        let job = self.appointments.get(&e.appointment).and_then(|a| a.value.job.clone());
        json!({
            "id": c.id, "uri": uri("clock", &c.id),
            "user": {"id": e.user, "name": self.users.get(&e.user).map(|u| u.value.name.clone())},
            "appointmentId": e.appointment, "jobId": job,
            "activity": e.activity.as_str(),
            "eventType": e.action.as_str(),
            "eventTime": secs(e.time), "lat": c.lat, "lon": c.lon, "updated": updated,
        })
    }

    /// The JSON of one entity, if it exists.
    pub fn get(&self, kind: &str, id: &str) -> Option<Value> {
        match kind {
            "user" => self.users.get(id).map(|r| self.user_json(&r.value, r.updated)),
            "location" => match self.locations.get(id) {
                Some(r) => Some(self.location_json(&r.value, r.updated)),
                None => self.offices.get(id).map(|r| self.office_json(&r.value, r.updated)),
            },
            "contact" => self.contacts.get(id).map(|r| self.contact_json(&r.value, r.updated)),
            "job" => self.jobs.get(id).map(|r| self.job_json(&r.value, r.updated)),
            "appointment" => self.appointments.get(id).map(|r| self.appointment_json(&r.value, r.updated)),
            "clock" => {
                id.parse::<i64>().ok().and_then(|n| self.clocks.get(&n)).map(|r| self.clock_json(&r.value, r.updated))
            }
            _ => None,
        }
    }

    /// Every entity of `kind` passing `filter`, as JSON, ordered by id.
    pub fn list(&self, kind: &str, q: &HashMap<String, String>) -> Result<Vec<Value>, String> {
        let updated_after = num(q, "updatedAfter")?;
        let fresh = |u: i64| updated_after.is_none_or(|t| u > t);
        let eq = |key: &str, v: Option<&Id>| q.get(key).is_none_or(|want| v.is_some_and(|v| v.as_str() == want));
        let out = match kind {
            "user" => sorted(&self.users)
                .into_iter()
                .filter(|r| fresh(r.updated))
                .filter(|r| q.get("isTech").is_none_or(|w| (w == "true") == r.value.tech))
                .map(|r| self.user_json(&r.value, r.updated))
                .collect(),
            "location" => {
                let mut all: Vec<(&Id, i64, Value)> = Vec::new();
                for (id, r) in &self.locations {
                    all.push((id, r.updated, self.location_json(&r.value, r.updated)));
                }
                for (id, r) in &self.offices {
                    all.push((id, r.updated, self.office_json(&r.value, r.updated)));
                }
                let vendor = q.get("isVendor").map(|v| v == "true");
                all.sort_by(|a, b| a.0.cmp(b.0));
                all.into_iter()
                    .filter(|(_, u, v)| fresh(*u) && vendor.is_none_or(|w| v["isVendor"] == w))
                    .map(|(_, _, v)| v)
                    .collect()
            }
            "contact" => sorted(&self.contacts)
                .into_iter()
                .filter(|r| fresh(r.updated))
                .filter(|r| q.get("locationId").is_none_or(|l| r.value.locations.iter().any(|x| x.as_str() == l)))
                .map(|r| self.contact_json(&r.value, r.updated))
                .collect(),
            "job" => sorted(&self.jobs)
                .into_iter()
                .filter(|r| fresh(r.updated) && eq("locationId", r.value.location.as_ref()))
                .map(|r| self.job_json(&r.value, r.updated))
                .collect(),
            "appointment" => {
                let after = num(q, "windowBeginsAfter")?;
                let before = num(q, "windowEndsBefore")?;
                sorted(&self.appointments)
                    .into_iter()
                    .filter(|r| fresh(r.updated) && eq("jobId", r.value.job.as_ref()))
                    .filter(|r| q.get("status").is_none_or(|s| s.split(',').any(|s| s == r.value.status.as_str())))
                    .filter(|r| after.is_none_or(|t| r.value.window_start.is_some_and(|w| secs(w) > t)))
                    .filter(|r| before.is_none_or(|t| r.value.window_end.is_some_and(|w| secs(w) < t)))
                    .map(|r| self.appointment_json(&r.value, r.updated))
                    .collect()
            }
            "clock" => {
                let activity = q.get("activity");
                self.clocks
                    .values()
                    .filter(|r| fresh(r.updated))
                    .filter(|r| {
                        eq("userId", Some(&r.value.event.user)) && eq("appointmentId", Some(&r.value.event.appointment))
                    })
                    .filter(|r| activity.is_none_or(|a| a == r.value.event.activity.as_str()))
                    .map(|r| self.clock_json(&r.value, r.updated))
                    .collect()
            }
            other => return Err(format!("unknown resource {other}")),
        };
        Ok(out)
    }

    /// Adds a clock event; its id.
    pub fn add_clock(
        &mut self,
        event: ClockEvent,
        lat: Option<f64>,
        lon: Option<f64>,
        by: Option<Id>,
        now_s: i64,
    ) -> (i64, Change) {
        let id = self.clocks.keys().next_back().copied().unwrap_or(0) + 1;
        let rec = ClockRec { id, event, lat, lon, created_by: by.clone() };
        let value = self.clock_json(&rec, now_s);
        self.clocks.insert(id, Rec { value: rec, updated: now_s });
        (id, change("clock", &id.to_string(), "created", now_s, by.as_ref(), None, Some(&value)))
    }

    /// Applies an upsert or delete; the change, or `None` when nothing changed.
    /// Pings and ticks are not ServiceTrade's: `Err`.
    pub fn apply(&mut self, event: Event, now_s: i64, actor: Option<&Id>) -> Result<Option<Change>, String> {
        macro_rules! upsert {
            ($map:ident, $kind:literal, $v:expr, $render:ident) => {{
                let v = $v;
                let id = v.id.clone();
                let old = self.$map.get(&id).map(|r| self.$render(&r.value, 0));
                let new = self.$render(&v, 0);
                if old.as_ref() == Some(&new) {
                    return Ok(None);
                }
                self.$map.insert(id.clone(), Rec { value: v, updated: now_s });
                let action = if old.is_some() { "updated" } else { "created" };
                Ok(Some(change($kind, id.as_str(), action, now_s, actor, old.as_ref(), Some(&new))))
            }};
        }
        macro_rules! delete {
            ($map:ident, $kind:literal, $id:expr) => {{
                let id = $id;
                match self.$map.remove(id.as_str()) {
                    Some(_) => Ok(Some(change($kind, id.as_str(), "deleted", now_s, actor, None, None))),
                    None => Ok(None),
                }
            }};
        }
        match event {
            Event::User(v) => upsert!(users, "user", v, user_json),
            Event::Location(v) => upsert!(locations, "location", v, location_json),
            Event::Office(v) => upsert!(offices, "location", v, office_json),
            Event::Contact(v) => upsert!(contacts, "contact", v, contact_json),
            Event::Job(v) => upsert!(jobs, "job", v, job_json),
            Event::Appointment(v) => upsert!(appointments, "appointment", v, appointment_json),
            Event::Clock(c) => Ok(Some(self.add_clock(c, None, None, actor.cloned(), now_s).1)),
            Event::Delete(EntityRef::User(id)) => delete!(users, "user", id),
            Event::Delete(EntityRef::Location(id)) => delete!(locations, "location", id),
            Event::Delete(EntityRef::Office(id)) => delete!(offices, "location", id),
            Event::Delete(EntityRef::Contact(id)) => delete!(contacts, "contact", id),
            Event::Delete(EntityRef::Job(id)) => delete!(jobs, "job", id),
            Event::Delete(EntityRef::Appointment(id)) => delete!(appointments, "appointment", id),
            other => Err(format!("{} is not a ServiceTrade entity", other.kind())),
        }
    }

    pub fn user(&self, id: &str) -> Option<&User> {
        self.users.get(id).map(|r| &r.value)
    }

    pub fn appointment(&self, id: &str) -> Option<&Appointment> {
        self.appointments.get(id).map(|r| &r.value)
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            users: sorted(&self.users).into_iter().map(|r| r.value.clone()).collect(),
            locations: sorted(&self.locations).into_iter().map(|r| r.value.clone()).collect(),
            offices: sorted(&self.offices).into_iter().map(|r| r.value.clone()).collect(),
            contacts: sorted(&self.contacts).into_iter().map(|r| r.value.clone()).collect(),
            jobs: sorted(&self.jobs).into_iter().map(|r| r.value.clone()).collect(),
            appointments: sorted(&self.appointments).into_iter().map(|r| r.value.clone()).collect(),
            clocks: self.clocks.values().map(|r| r.value.clone()).collect(),
        }
    }

    /// Whether an appointment status string is one ServiceTrade knows.
    pub fn parse_status(s: &str) -> Option<AppointmentStatus> {
        serde_json::from_value(Value::String(s.to_string())).ok()
    }
}

fn num(q: &HashMap<String, String>, key: &str) -> Result<Option<i64>, String> {
    q.get(key)
        .map(|v| v.trim().parse::<i64>().map_err(|_| format!("{key} must be an integer (unix seconds)")))
        .transpose()
}

fn change(
    kind: &'static str,
    id: &str,
    action: &str,
    now_s: i64,
    actor: Option<&Id>,
    old: Option<&Value>,
    new: Option<&Value>,
) -> Change {
    let mut changeset = Vec::new();
    if let Some(Value::Object(n)) = new {
        for (field, nv) in n {
            if field == "updated" {
                continue;
            }
            let ov = old.and_then(|o| o.get(field)).cloned().unwrap_or(Value::Null);
            if &ov != nv {
                changeset.push(json!({"field": field, "oldValue": ov, "newValue": nv}));
            }
        }
    }
    let id_json = id.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::String(id.to_string()));
    let item = json!({
        "action": action, "timestamp": now_s, "userId": actor,
        "entity": {"type": kind, "id": id_json, "uri": uri(kind, &id)},
        "changeset": changeset,
    });
    Change { entity: kind, id: id.to_string(), item }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vendor::servicetrade::map;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// What the simulator serves maps back, through the connector's own
    /// mapping, to what it was given.
    #[test]
    fn offices_and_contacts_in_servicetrades_shapes_map_back() {
        let mut s = Store::default();
        let office = Office { id: Id::number(101), name: "North Office".into() };
        let contact = Contact {
            id: Id::number(31),
            name: "Pat Green".into(),
            email: Some("pat@plant.example".into()),
            locations: vec![Id::number(5)],
        };
        let loc = Location {
            id: Id::number(5),
            name: "Plant 7".into(),
            lat: Some(35.2),
            lon: Some(-80.8),
            email: Some("fm@plant.example".into()),
            polygon: None,
            timezone: None,
            primary_contact: Some(Id::number(31)),
            offices: vec![Id::number(101)],
        };
        let job = Job { id: Id::number(900), number: None, location: Some(Id::number(5)) };
        for e in [
            Event::Office(office.clone()),
            Event::Contact(contact.clone()),
            Event::Location(loc.clone()),
            Event::Job(job),
        ] {
            assert!(s.apply(e, 100, None).unwrap().is_some());
        }
        let listed = s.list("location", &q(&[])).unwrap();
        assert_eq!(listed.len(), 2, "the office is a location too");
        assert_eq!(listed[0]["isVendor"], false);
        assert_eq!(map::location(&listed[0]).unwrap(), loc);
        assert!(map::is_office(&listed[1]));
        assert_eq!(map::office(&listed[1]).unwrap(), office);
        assert_eq!(s.list("location", &q(&[("isVendor", "true")])).unwrap().len(), 1);
        assert!(map::is_office(&s.get("location", "101").unwrap()));
        assert_eq!(map::contact(&s.get("contact", "31").unwrap()).unwrap(), contact);
        assert_eq!(s.list("contact", &q(&[("locationId", "5")])).unwrap().len(), 1);
        assert!(s.list("contact", &q(&[("locationId", "6")])).unwrap().is_empty());
        assert_eq!(s.get("job", "900").unwrap()["location"]["primaryContact"]["email"], "pat@plant.example");
        let gone = s.apply(Event::Delete(EntityRef::Office(Id::number(101))), 200, None).unwrap().unwrap();
        assert_eq!((gone.entity, gone.id.as_str()), ("location", "101"), "an office's webhook names a location");
        assert_eq!(s.snapshot().offices, vec![]);
    }
}
