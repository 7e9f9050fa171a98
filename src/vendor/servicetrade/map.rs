//! ServiceTrade JSON → model entities. Pure. Each function takes one item
//! as the API returns it and refuses anything it cannot map faithfully
//! (missing id, wrong type), with a reason for the dead letter.
//!
//! Times (`windowStart`, `windowEnd`, `eventTime`, `updated`) are unix
//! seconds; model times are milliseconds.

use serde_json::Value;

use crate::model::{
    Activity, Appointment, AppointmentStatus, ClockAction, ClockEvent, Contact, Id, Job, Location, Office, Ts, User,
};

pub type MapResult<T> = Result<T, String>;

fn id_of(v: &Value, field: &str) -> MapResult<Id> {
    match v.get(field) {
        Some(x @ (Value::Number(_) | Value::String(_))) => {
            serde_json::from_value::<Id>(x.clone()).map_err(|e| format!("{field}: {e}"))
        }
        Some(other) => Err(format!("{field}: expected an id, got {other}")),
        None => Err(format!("{field} is missing")),
    }
}

fn opt_id(v: &Value, field: &str) -> MapResult<Option<Id>> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => id_of(v, field).map(Some),
    }
}

fn opt_str(v: &Value, field: &str) -> MapResult<Option<String>> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("{field}: expected a string, got {other}")),
    }
}

fn opt_f64(v: &Value, field: &str) -> MapResult<Option<f64>> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or_else(|| format!("{field}: not a number")),
        Some(other) => Err(format!("{field}: expected a number, got {other}")),
    }
}

fn opt_secs(v: &Value, field: &str) -> MapResult<Option<Ts>> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            n.as_i64().map(|s| Some(Ts::from_secs(s))).ok_or_else(|| format!("{field}: not whole seconds"))
        }
        Some(other) => Err(format!("{field}: expected unix seconds, got {other}")),
    }
}

/// The item's `updated` stamp (unix seconds), 0 when absent.
pub fn updated(v: &Value) -> i64 {
    v.get("updated").and_then(Value::as_i64).unwrap_or(0)
}

pub fn user(v: &Value) -> MapResult<User> {
    let name = match opt_str(v, "name")? {
        Some(n) => n,
        None => {
            let first = opt_str(v, "firstName")?.unwrap_or_default();
            let last = opt_str(v, "lastName")?.unwrap_or_default();
            format!("{first} {last}").trim().to_string()
        }
    };
    let tech = match v.get("isTech") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(format!("isTech: expected a boolean, got {other}")),
    };
    Ok(User { id: id_of(v, "id")?, name, email: opt_str(v, "email")?, tech })
}

/// Ids from an array of ids or of objects with an `id` (`officeIds: [2]`,
/// `locations: [{"id": 5}]`); absent or null: none.
fn id_array(v: &Value, field: &str) -> MapResult<Vec<Id>> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|x| match x {
                Value::Object(_) => id_of(x, "id").map_err(|e| format!("{field}[].{e}")),
                _ => serde_json::from_value::<Id>(x.clone()).map_err(|_| format!("{field}[]: expected an id, got {x}")),
            })
            .collect(),
        Some(other) => Err(format!("{field}: expected an array, got {other}")),
    }
}

/// Whether a location item is one of the account's offices (`isVendor`).
pub fn is_office(v: &Value) -> bool {
    v.get("isVendor").and_then(Value::as_bool).unwrap_or(false)
}

/// An office: a vendor location (see [`is_office`]).
pub fn office(v: &Value) -> MapResult<Office> {
    Ok(Office { id: id_of(v, "id")?, name: opt_str(v, "name")?.unwrap_or_default() })
}

/// A contact (`GET /contact`): its locations from `locations[]` or `locationId`.
pub fn contact(v: &Value) -> MapResult<Contact> {
    let name = match opt_str(v, "name")? {
        Some(n) => n,
        None => {
            let first = opt_str(v, "firstName")?.unwrap_or_default();
            let last = opt_str(v, "lastName")?.unwrap_or_default();
            format!("{first} {last}").trim().to_string()
        }
    };
    let mut locations = id_array(v, "locations")?;
    if let Some(l) = opt_id(v, "locationId")? {
        if !locations.contains(&l) {
            locations.push(l);
        }
    }
    Ok(Contact { id: id_of(v, "id")?, name, email: opt_str(v, "email")?, locations })
}

pub fn location(v: &Value) -> MapResult<Location> {
    let primary_contact = match (opt_id(v, "primaryContactId")?, v.get("primaryContact")) {
        (Some(id), _) => Some(id),
        (None, Some(c @ Value::Object(_))) => opt_id(c, "id").map_err(|e| format!("primaryContact.{e}"))?,
        (None, None | Some(Value::Null)) => None,
        (None, Some(other)) => return Err(format!("primaryContact: expected an object, got {other}")),
    };
    Ok(Location {
        id: id_of(v, "id")?,
        name: opt_str(v, "name")?.unwrap_or_default(),
        lat: opt_f64(v, "lat")?,
        lon: opt_f64(v, "lon")?,
        email: opt_str(v, "email")?,
        polygon: None,
        timezone: None,
        primary_contact,
        offices: id_array(v, "officeIds")?,
    })
}

pub fn job(v: &Value) -> MapResult<Job> {
    let location = match v.get("location") {
        None | Some(Value::Null) => None,
        Some(l @ Value::Object(_)) => Some(id_of(l, "id").map_err(|e| format!("location.{e}"))?),
        Some(other) => return Err(format!("location: expected an object, got {other}")),
    };
    Ok(Job { id: id_of(v, "id")?, number: opt_id(v, "number")?, location })
}

pub fn appointment(v: &Value) -> MapResult<Appointment> {
    let status_text = opt_str(v, "status")?.ok_or("status is missing")?;
    let status: AppointmentStatus = serde_json::from_value(Value::String(status_text.clone()))
        .map_err(|_| format!("status {status_text:?} is not an appointment status"))?;
    let job = match v.get("job") {
        None | Some(Value::Null) => None,
        Some(j @ Value::Object(_)) => Some(id_of(j, "id").map_err(|e| format!("job.{e}"))?),
        Some(other) => return Err(format!("job: expected an object, got {other}")),
    };
    let techs = match v.get("techs") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ts)) => {
            ts.iter().map(|t| id_of(t, "id").map_err(|e| format!("techs[].{e}"))).collect::<Result<_, _>>()?
        }
        Some(other) => return Err(format!("techs: expected an array, got {other}")),
    };
    Ok(Appointment {
        id: id_of(v, "id")?,
        job,
        status,
        window_start: opt_secs(v, "windowStart")?,
        window_end: opt_secs(v, "windowEnd")?,
        techs,
    })
}

/// A clock event and its ServiceTrade id.
pub fn clock(v: &Value) -> MapResult<(Id, ClockEvent)> {
    let user = match v.get("user") {
        Some(u @ Value::Object(_)) => id_of(u, "id").map_err(|e| format!("user.{e}"))?,
        _ => id_of(v, "userId")?,
    };
    let activity: Activity = serde_json::from_value(v.get("activity").cloned().unwrap_or(Value::Null))
        .map_err(|_| "activity must be enroute, onsite or offsite".to_string())?;
    let action = match opt_str(v, "eventType")?.as_deref() {
        Some("in" | "clock_in") => ClockAction::In,
        Some("out" | "clock_out") => ClockAction::Out,
        other => return Err(format!("eventType {other:?} is not in/out")),
    };
    let time = opt_secs(v, "eventTime")?.ok_or("eventTime is missing")?;
    Ok((id_of(v, "id")?, ClockEvent { user, appointment: id_of(v, "appointmentId")?, activity, action, time }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_servicetrade_shapes() {
        let u = user(&json!({"id": 11, "firstName": "Ann", "lastName": "Lee", "email": "a@x.example", "isTech": true}))
            .unwrap();
        assert_eq!((u.id.as_str(), u.name.as_str()), ("11", "Ann Lee"));
        let a = appointment(&json!({"id": 7, "status": "scheduled", "windowStart": 100, "windowEnd": 200, "job": {"id": 9}, "techs": [{"id": 11}]})).unwrap();
        assert_eq!(a.window(), Some((Ts(100_000), Ts(200_000))));
        assert_eq!(a.techs, vec![Id::number(11)]);
        let j = job(&json!({"id": 9, "number": "J-1", "location": {"id": 5}})).unwrap();
        assert_eq!(j.location, Some(Id::number(5)));
        let (id, c) = clock(&json!({"id": 3, "user": {"id": 11}, "appointmentId": 7, "activity": "enroute", "eventType": "in", "eventTime": 50})).unwrap();
        assert_eq!((id, c.time, c.action), (Id::number(3), Ts(50_000), ClockAction::In));
        for bad in [
            json!({"id": 7, "status": "nope"}),
            json!({"status": "scheduled"}),
            json!({"id": 7, "status": "scheduled", "windowStart": "x"}),
            json!({"id": [1], "status": "scheduled"}),
        ] {
            assert!(appointment(&bad).is_err(), "{bad}");
        }
        assert!(location(&json!({"id": 1, "lat": "35"})).is_err());
    }

    #[test]
    fn maps_offices_contacts_and_a_locations_primary_contact() {
        let l = location(&json!({"id": 5, "name": "Plant", "email": "fm@plant.example", "primaryContactId": 31, "officeIds": [2, "3"], "isVendor": false})).unwrap();
        assert_eq!((l.primary_contact, l.offices), (Some(Id::number(31)), vec![Id::number(2), Id::text("3")]));
        let inline = location(&json!({"id": 6, "primaryContact": {"id": 32, "email": "x@y.example"}})).unwrap();
        assert_eq!((inline.primary_contact, inline.offices), (Some(Id::number(32)), vec![]));
        let o = json!({"id": 2, "name": "Charlotte", "isVendor": true});
        assert!(is_office(&o) && !is_office(&json!({"id": 5})));
        assert_eq!(office(&o).unwrap(), Office { id: Id::number(2), name: "Charlotte".into() });
        let c = contact(&json!({"id": 31, "firstName": "Pat", "lastName": "Lee", "email": "pat@plant.example", "locations": [{"id": 5}], "locationId": 6})).unwrap();
        assert_eq!((c.name.as_str(), c.email.as_deref()), ("Pat Lee", Some("pat@plant.example")));
        assert_eq!(c.locations, vec![Id::number(5), Id::number(6)]);
        assert!(location(&json!({"id": 1, "officeIds": 2})).is_err());
        assert!(location(&json!({"id": 1, "primaryContactId": [1]})).is_err());
        assert!(contact(&json!({"name": "no id"})).is_err());
    }
}
