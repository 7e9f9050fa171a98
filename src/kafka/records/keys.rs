//! Topics, record keys and deletes.
//!
//! Invariant:
//! - Deletes: on a compacted entity topic a record with a null value (a
//!   tombstone) deletes the entity its key names: [`delete_event`] turns the
//!   key's id into the [`EntityRef`] of an [`Event::Delete`], and
//!   [`key_id`] gives the key id for any event, so that the tombstone for a
//!   deleted entity lands on the key its upserts used. Pairings are keyed by
//!   [`pairing_key_id`] (driver, vehicle and start, escaped).

use super::validate::{check_id_str, check_ts};
use super::CodecError;
use crate::engine::{Command, EntityRef, Event};
use crate::kafka::topics::Topic;
use crate::model::{Id, Ts};

/// The topic an event is published on (always `Some`).
pub fn topic_of(event: &Event) -> Option<Topic> {
    Some(match event {
        Event::User(_) => Topic::Users,
        Event::Location(_) => Topic::Locations,
        Event::Job(_) => Topic::Jobs,
        Event::Appointment(_) => Topic::Appointments,
        Event::Driver(_) => Topic::Drivers,
        Event::Vehicle(_) => Topic::Vehicles,
        Event::Pairing(_) => Topic::Pairings,
        Event::Office(_) => Topic::Offices,
        Event::Contact(_) => Topic::Contacts,
        Event::Clock(_) => Topic::ClockEvents,
        Event::Ping(_) => Topic::Pings,
        Event::Delete(r) => match r {
            EntityRef::User(_) => Topic::Users,
            EntityRef::Location(_) => Topic::Locations,
            EntityRef::Job(_) => Topic::Jobs,
            EntityRef::Appointment(_) => Topic::Appointments,
            EntityRef::Driver(_) => Topic::Drivers,
            EntityRef::Vehicle(_) => Topic::Vehicles,
            EntityRef::Pairing { .. } => Topic::Pairings,
            EntityRef::Office(_) => Topic::Offices,
            EntityRef::Contact(_) => Topic::Contacts,
        },
        Event::Tick(_) => Topic::Ticks,
        Event::Route(_) => Topic::FenceRoutes,
    })
}

/// The id part of an event's record key (`tenant/{id}`): the entity's id,
/// the vehicle for a ping, the appointment for a clock event, the
/// [`pairing_key_id`] for a pairing, `tick` for a tick, the vehicle for a
/// fence route.
pub fn key_id(event: &Event) -> Option<String> {
    Some(match event {
        Event::User(u) => u.id.to_string(),
        Event::Location(l) => l.id.to_string(),
        Event::Job(j) => j.id.to_string(),
        Event::Appointment(a) => a.id.to_string(),
        Event::Driver(d) => d.id.to_string(),
        Event::Vehicle(v) => v.id.to_string(),
        Event::Pairing(p) => pairing_key_id(&p.driver, &p.vehicle, p.from),
        Event::Office(o) => o.id.to_string(),
        Event::Contact(c) => c.id.to_string(),
        Event::Clock(c) => c.appointment.to_string(),
        Event::Ping(p) => p.vehicle.to_string(),
        Event::Delete(r) => match r {
            EntityRef::User(id)
            | EntityRef::Location(id)
            | EntityRef::Job(id)
            | EntityRef::Appointment(id)
            | EntityRef::Driver(id)
            | EntityRef::Vehicle(id)
            | EntityRef::Office(id)
            | EntityRef::Contact(id) => id.to_string(),
            EntityRef::Pairing { driver, vehicle, from } => pairing_key_id(driver, vehicle, *from),
        },
        Event::Tick(_) => "tick".to_string(),
        Event::Route(r) => r.vehicle.to_string(),
    })
}

/// The key id of a command record: its appointment (so that an
/// appointment's commands keep their order).
pub fn command_key_id(command: &Command) -> &str {
    command.appointment.as_str()
}

fn escape(id: &str) -> String {
    id.replace('%', "%25").replace('/', "%2F")
}

fn unescape(part: &str) -> Option<String> {
    let mut out = String::with_capacity(part.len());
    let mut rest = part;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3)?;
        match code {
            "25" => out.push('%'),
            "2F" => out.push('/'),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// The key id of a pairing: `{driver}/{vehicle}/{from}`, with `%` and `/`
/// in the ids escaped as `%25` and `%2F`, `from` in decimal milliseconds.
pub fn pairing_key_id(driver: &Id, vehicle: &Id, from: Ts) -> String {
    format!("{}/{}/{}", escape(driver.as_str()), escape(vehicle.as_str()), from.0)
}

/// Parses [`pairing_key_id`].
pub fn parse_pairing_key_id(key_id: &str) -> Result<(Id, Id, Ts), CodecError> {
    let bad = || CodecError::InvalidValue(format!("pairing key {key_id:?} is not driver/vehicle/fromMillis"));
    let mut parts = key_id.split('/');
    let (Some(d), Some(v), Some(f), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let driver = unescape(d).ok_or_else(bad)?;
    let vehicle = unescape(v).ok_or_else(bad)?;
    check_id_str("Pairing", "driver", &driver)?;
    check_id_str("Pairing", "vehicle", &vehicle)?;
    let from = check_ts("Pairing", "from", f.parse().map_err(|_| bad())?)?;
    Ok((Id::text(driver), Id::text(vehicle), from))
}

/// What a tombstone (null value) with key id `key_id` on `topic` deletes.
/// Only the compacted entity topics carry deletes; a null value anywhere
/// else is [`CodecError::InvalidValue`].
pub fn delete_event(topic: Topic, key_id: &str) -> Result<EntityRef, CodecError> {
    let id = || -> Result<Id, CodecError> {
        check_id_str("key", "id", key_id)?;
        Ok(Id::text(key_id))
    };
    Ok(match topic {
        Topic::Users => EntityRef::User(id()?),
        Topic::Locations => EntityRef::Location(id()?),
        Topic::Jobs => EntityRef::Job(id()?),
        Topic::Appointments => EntityRef::Appointment(id()?),
        Topic::Drivers => EntityRef::Driver(id()?),
        Topic::Vehicles => EntityRef::Vehicle(id()?),
        Topic::Offices => EntityRef::Office(id()?),
        Topic::Contacts => EntityRef::Contact(id()?),
        Topic::Pairings => {
            let (driver, vehicle, from) = parse_pairing_key_id(key_id)?;
            EntityRef::Pairing { driver, vehicle, from }
        }
        other => {
            return Err(CodecError::InvalidValue(format!(
                "a null value (tombstone) on {other:?}: only entity topics carry deletes"
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Pairing;

    #[test]
    fn pairing_keys_are_unambiguous() {
        let k = pairing_key_id(&Id::text("a/b%2F"), &Id::text("v"), Ts(7));
        assert_eq!(k, "a%2Fb%252F/v/7");
        assert_eq!(parse_pairing_key_id(&k).unwrap(), (Id::text("a/b%2F"), Id::text("v"), Ts(7)));
        for bad in ["a/b", "a/b/c/d", "a/b/x", "a%2/b/1", "a%41/b/1", "/b/1", "a/b/-5"] {
            assert_eq!(parse_pairing_key_id(bad).unwrap_err().kind(), "invalid_value", "{bad}");
        }
    }

    #[test]
    fn tombstones_name_the_deleted_entity() {
        assert_eq!(delete_event(Topic::Jobs, "J1").unwrap(), EntityRef::Job(Id::text("J1")));
        let p = Pairing { driver: Id::text("d/1"), vehicle: Id::text("v1"), from: Ts(1000), to: None };
        let key = key_id(&Event::Pairing(p.clone())).unwrap();
        assert_eq!(
            delete_event(Topic::Pairings, &key).unwrap(),
            EntityRef::Pairing { driver: p.driver.clone(), vehicle: p.vehicle.clone(), from: p.from }
        );
        let del = Event::Delete(EntityRef::Pairing { driver: p.driver, vehicle: p.vehicle, from: p.from });
        assert_eq!(key_id(&del).unwrap(), key);
        assert_eq!(topic_of(&del), Some(Topic::Pairings));
        assert_eq!(delete_event(Topic::Pings, "v1").unwrap_err().kind(), "invalid_value");
        assert_eq!(delete_event(Topic::Users, " ").unwrap_err().kind(), "invalid_value");
        assert_eq!(key_id(&Event::Tick(Ts(0))).as_deref(), Some("tick"));
    }
}
