//! Azuga JSON → model: drivers, vehicles, pairings, and pings from
//! `GPS_MESSAGE` webhooks and live locations. Pure; wrong types are refused
//! with a reason. Range checks on positions and times are
//! [`super::super::validate`]'s job, after parsing.

use serde_json::Value;

use crate::model::{Driver, Id, Pairing, Ping, Ts, Vehicle};

pub type MapResult<T> = Result<T, String>;

fn id_of(v: &Value, field: &str) -> MapResult<Id> {
    match v.get(field) {
        Some(Value::Number(n)) if n.is_i64() => Ok(Id::number(n.as_i64().unwrap_or_default())),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Id::text(s.clone())),
        other => {
            Err(format!("{field}: expected an id, got {}", other.map(|o| o.to_string()).unwrap_or("nothing".into())))
        }
    }
}

fn num(v: &Value, field: &str) -> MapResult<f64> {
    v.get(field).and_then(Value::as_f64).ok_or_else(|| format!("{field}: expected a number"))
}

fn opt_num(v: &Value, field: &str) -> MapResult<Option<f64>> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x.as_f64().map(Some).ok_or_else(|| format!("{field}: expected a number, got {x}")),
    }
}

fn millis(v: &Value, field: &str) -> MapResult<Ts> {
    v.get(field).and_then(Value::as_i64).map(Ts).ok_or_else(|| format!("{field}: expected integer milliseconds"))
}

fn opt_str(v: &Value, field: &str) -> MapResult<Option<String>> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(x) => Err(format!("{field}: expected a string, got {x}")),
    }
}

/// A `v3/users?userType=driver` item.
pub fn driver(v: &Value) -> MapResult<Driver> {
    let name = match opt_str(v, "fullName")? {
        Some(n) => n,
        None => {
            format!("{} {}", opt_str(v, "firstName")?.unwrap_or_default(), opt_str(v, "lastName")?.unwrap_or_default())
                .trim()
                .to_string()
        }
    };
    Ok(Driver { id: id_of(v, "id")?, name, email: opt_str(v, "email")? })
}

pub fn vehicle(v: &Value) -> MapResult<Vehicle> {
    Ok(Vehicle { id: id_of(v, "id")?, name: opt_str(v, "name")?.unwrap_or_default() })
}

pub fn pairing(v: &Value) -> MapResult<Pairing> {
    let to = match v.get("toDate") {
        None | Some(Value::Null) => None,
        Some(_) => Some(millis(v, "toDate")?),
    };
    Ok(Pairing { driver: id_of(v, "driverId")?, vehicle: id_of(v, "vehicleId")?, from: millis(v, "fromDate")?, to })
}

/// A `GPS_MESSAGE`; `Ok(None)` for other event types (ignored).
pub fn gps_message(v: &Value) -> MapResult<Option<Ping>> {
    if !v.is_object() {
        return Err(format!("expected an object, got {v}"));
    }
    match v.get("eventType").and_then(Value::as_str) {
        Some("GPS_MESSAGE") => {}
        Some(_) => return Ok(None),
        None => return Err("eventType is missing".into()),
    }
    Ok(Some(Ping {
        vehicle: id_of(v, "vehicleId")?,
        time: millis(v, "locationTime")?,
        lat: num(v, "latitude")?,
        lon: num(v, "longitude")?,
        speed_mph: opt_num(v, "speed")?,
        accuracy_m: None,
    }))
}

/// A live-location item.
pub fn live_location(v: &Value) -> MapResult<Ping> {
    Ok(Ping {
        vehicle: id_of(v, "vehicleId")?,
        time: millis(v, "date")?,
        lat: num(v, "latitude")?,
        lon: num(v, "longitude")?,
        speed_mph: opt_num(v, "speed")?,
        accuracy_m: None,
    })
}

/// A webhook body: one message or an array of them. Each parsed ping comes
/// with its JSON (for a dead letter).
pub fn webhook(body: &[u8]) -> MapResult<Vec<(Ping, Value)>> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let items = match v {
        Value::Array(items) => items,
        other => vec![other],
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        if let Some(p) = gps_message(&item).map_err(|e| format!("item {i}: {e}"))? {
            out.push((p, item));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gps_messages_strictly() {
        let body = br#"[{"eventType":"GPS_MESSAGE","vehicleId":"v1","userId":"d1","deviceSerial":"S","latitude":35.1,"longitude":-80.2,"speed":12.5,"locationTime":1000,"tripState":"IN_TRIP"},{"eventType":"ENTERED_GEOFENCE","vehicleId":"v1"}]"#;
        let p = webhook(body).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].0.vehicle.as_str(), p[0].0.time, p[0].0.speed_mph), ("v1", Ts(1000), Some(12.5)));
        for bad in [
            &b"{"[..],
            br#"{"eventType":"GPS_MESSAGE","vehicleId":"v1","latitude":"35","longitude":1,"locationTime":1}"#,
            br#"{"eventType":"GPS_MESSAGE","latitude":35,"longitude":1,"locationTime":1}"#,
            br#"{"eventType":"GPS_MESSAGE","vehicleId":"v1","latitude":35,"longitude":1,"locationTime":1.5}"#,
            br#"[1,2]"#,
            br#"{"vehicleId":"v1"}"#,
        ] {
            assert!(webhook(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let pr =
            pairing(&serde_json::json!({"driverId": "d", "vehicleId": "v", "fromDate": 5, "toDate": null})).unwrap();
        assert_eq!((pr.from, pr.to), (Ts(5), None));
    }
}
