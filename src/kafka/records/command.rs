//! The command record: [`Command`] and its fence, service link and clock
//! payloads.

use apache_avro::types::Value;

use super::validate::{
    check_id, check_id_str, check_lat, check_latlon, check_lon, check_tenant, check_ts, check_u32, invalid,
};
use super::value::{latlon, opt, record, s, symbol, ts, Rec, ACTIVITY, CAUSE, CLOCK_ACTION, COMMAND_KIND};
use super::AvroRecord;
use super::{CodecError, RecordType};
use crate::engine::{Action, ClockCause, ClockChange, Command, FenceChange, ServiceLink};
use crate::geo::{LatLon, Shape};

/// The shape's record and its branch in the union `[Circle, Polygon]`
/// (the command and route schemas share these records).
pub(super) fn shape_branch(shape: &Shape) -> (u32, Value) {
    match shape {
        Shape::Circle { center, radius_m } => {
            (0, record(vec![("center", latlon(*center)), ("radius_m", Value::Double(*radius_m))]))
        }
        Shape::Polygon { ring } => (1, record(vec![("ring", Value::Array(ring.iter().map(|p| latlon(*p)).collect()))])),
    }
}

fn shape_value(shape: &Shape) -> Value {
    let (branch, v) = shape_branch(shape);
    Value::Union(branch, Box::new(v))
}

/// The shape from the record of branch `branch` of `[Circle, Polygon]`,
/// validated (`rec` names the record holding it, for errors).
pub(super) fn shape_from_branch(rec: &'static str, branch: u32, v: Value) -> Result<Shape, CodecError> {
    let shape = match branch {
        0 => {
            let mut c = Rec::new("Circle", v)?;
            let center = c.latlon("center")?;
            Shape::Circle { center, radius_m: c.double("radius_m")? }
        }
        1 => {
            let mut p = Rec::new("Polygon", v)?;
            let mut ring = Vec::new();
            for item in p.array("ring")? {
                let mut q = Rec::new("LatLon", item)?;
                ring.push(check_latlon("Polygon", "ring", LatLon::new(q.double("lat")?, q.double("lon")?))?);
            }
            Shape::Polygon { ring }
        }
        _ => return Err(CodecError::Decode(format!("{rec}.shape: expected a Circle or Polygon branch"))),
    };
    shape.validate().map_err(|e| invalid(rec, "shape", e))?;
    Ok(shape)
}

fn check_revision(rec: &str, rev: i64) -> Result<u32, CodecError> {
    check_u32(rec, "revision", rev)
}

fn fence_value(f: &FenceChange) -> Result<Value, CodecError> {
    const R: &str = "FenceChange";
    f.shape.validate().map_err(|e| invalid(R, "shape", e))?;
    for (field, t) in [
        ("window_start", f.window_start),
        ("window_end", f.window_end),
        ("active_from", f.active_from),
        ("active_to", f.active_to),
    ] {
        check_ts(R, field, t.0)?;
    }
    check_id(R, "job", &f.job)?;
    check_id(R, "location", &f.location)?;
    Ok(record(vec![
        ("revision", Value::Long(f.revision.into())),
        ("name", s(&f.name)),
        ("shape", shape_value(&f.shape)),
        ("window_start", ts(f.window_start)),
        ("window_end", ts(f.window_end)),
        ("active_from", ts(f.active_from)),
        ("active_to", ts(f.active_to)),
        ("job", s(f.job.as_str())),
        ("location", s(f.location.as_str())),
    ]))
}

fn fence_from(mut r: Rec) -> Result<FenceChange, CodecError> {
    let revision = check_revision(r.name, r.long("revision")?)?;
    let name = r.string("name")?;
    let branch = match r.fields.iter().find(|(n, _)| n == "shape").map(|(_, v)| v) {
        Some(Value::Union(i, _)) => *i,
        _ => return Err(CodecError::Decode("FenceChange.shape: expected a Circle or Polygon branch".into())),
    };
    let shape = shape_from_branch("FenceChange", branch, r.take("shape")?)?;
    Ok(FenceChange {
        revision,
        name,
        shape,
        window_start: r.ts("window_start")?,
        window_end: r.ts("window_end")?,
        active_from: r.ts("active_from")?,
        active_to: r.ts("active_to")?,
        job: r.st_id("job")?,
        location: r.st_id("location")?,
    })
}

fn link_value(l: &ServiceLink) -> Result<Value, CodecError> {
    const R: &str = "ServiceLink";
    check_id(R, "user", &l.user)?;
    check_id(R, "vehicle", &l.vehicle)?;
    if let Some(n) = &l.job_number {
        check_id(R, "job_number", n)?;
    }
    for (field, t) in [("window_start", l.window_start), ("window_end", l.window_end)] {
        if let Some(t) = t {
            check_ts(R, field, t.0)?;
        }
    }
    if let Some(d) = l.destination {
        check_latlon(R, "destination", d)?;
    }
    check_ts(R, "enroute_at", l.enroute_at.0)?;
    Ok(record(vec![
        ("user", s(l.user.as_str())),
        ("tech_name", s(&l.tech_name)),
        ("vehicle", s(l.vehicle.as_str())),
        ("vehicle_name", s(&l.vehicle_name)),
        ("to", s(&l.to)),
        ("location_name", s(&l.location_name)),
        ("job_number", opt(l.job_number.as_ref().map(|n| s(n.as_str())))),
        ("window_start", opt(l.window_start.map(ts))),
        ("window_end", opt(l.window_end.map(ts))),
        // Without a destination: 0,0 and `destination_known` false
        // (`destination` is a required field of the first version).
        ("destination", latlon(l.destination.unwrap_or(LatLon { lat: 0.0, lon: 0.0 }))),
        ("timezone", opt(l.timezone.as_deref().map(s))),
        ("enroute_at", ts(l.enroute_at)),
        ("destination_known", Value::Boolean(l.destination.is_some())),
    ]))
}

fn link_from(mut r: Rec) -> Result<ServiceLink, CodecError> {
    Ok(ServiceLink {
        user: r.st_id("user")?,
        tech_name: r.string("tech_name")?,
        vehicle: r.id("vehicle")?,
        vehicle_name: r.string("vehicle_name")?,
        to: r.string("to")?,
        location_name: r.string("location_name")?,
        job_number: r.opt_st_id("job_number")?,
        window_start: r.opt_ts("window_start")?,
        window_end: r.opt_ts("window_end")?,
        destination: {
            let d = r.latlon("destination")?;
            r.boolean("destination_known")?.then_some(d)
        },
        timezone: r.opt_string("timezone")?,
        enroute_at: r.ts("enroute_at")?,
    })
}

fn clock_value(c: &ClockChange) -> Result<Value, CodecError> {
    const R: &str = "ClockChange";
    check_id(R, "user", &c.user)?;
    check_id(R, "vehicle", &c.vehicle)?;
    check_ts(R, "time", c.time.0)?;
    check_lat(R, "lat", c.lat)?;
    check_lon(R, "lon", c.lon)?;
    let cause = match c.cause {
        ClockCause::Arrival => "arrival",
        ClockCause::Exit => "exit",
    };
    Ok(record(vec![
        ("user", s(c.user.as_str())),
        ("activity", symbol(&ACTIVITY, c.activity.as_str())),
        ("action", symbol(&CLOCK_ACTION, c.action.as_str())),
        ("time", ts(c.time)),
        ("lat", Value::Double(c.lat)),
        ("lon", Value::Double(c.lon)),
        ("vehicle", s(c.vehicle.as_str())),
        ("cause", symbol(&CAUSE, cause)),
    ]))
}

fn clock_from(mut r: Rec) -> Result<ClockChange, CodecError> {
    const R: &str = "ClockChange";
    let user = r.st_id("user")?;
    let activity = r.activity("activity")?;
    let action = r.action("action")?;
    let time = r.ts("time")?;
    let lat = check_lat(R, "lat", r.double("lat")?)?;
    let lon = check_lon(R, "lon", r.double("lon")?)?;
    let vehicle = r.id("vehicle")?;
    let sym = r.symbol("cause")?;
    let cause = match sym.as_str() {
        "arrival" => ClockCause::Arrival,
        "exit" => ClockCause::Exit,
        _ => return Err(r.unknown_symbol("cause", &sym)),
    };
    Ok(ClockChange { user, activity, action, time, lat, lon, vehicle, cause })
}

impl AvroRecord for Command {
    const TYPE: RecordType = RecordType::Command;

    fn to_value(&self, tenant: &str) -> Result<Value, CodecError> {
        const R: &str = "Command";
        check_tenant(R, tenant)?;
        check_id_str(R, "id", &self.id)?;
        check_id(R, "appointment", &self.appointment)?;
        let payload = match &self.action {
            Action::CreateGeofence(f) | Action::UpdateGeofence(f) => Value::Union(0, Box::new(fence_value(f)?)),
            Action::DeleteGeofence { revision, name } => Value::Union(
                1,
                Box::new(record(vec![("revision", Value::Long((*revision).into())), ("name", s(name))])),
            ),
            Action::SendServiceLink(l) => Value::Union(2, Box::new(link_value(l)?)),
            Action::Clock(c) => Value::Union(3, Box::new(clock_value(c)?)),
        };
        Ok(record(vec![
            ("tenant", s(tenant)),
            ("id", s(&self.id)),
            ("appointment", s(self.appointment.as_str())),
            ("kind", symbol(&COMMAND_KIND, self.action.kind())),
            ("payload", payload),
        ]))
    }

    fn from_value(value: Value) -> Result<(String, Self), CodecError> {
        const R: &str = "Command";
        let mut r = Rec::new(R, value)?;
        let tenant = r.tenant()?;
        let id = r.string("id")?;
        check_id_str(R, "id", &id)?;
        let appointment = r.st_id("appointment")?;
        let kind = r.symbol("kind")?;
        let branch = match r.fields.iter().find(|(n, _)| n == "payload").map(|(_, v)| v) {
            Some(Value::Union(i, _)) => *i,
            _ => return Err(CodecError::Decode("Command.payload: expected a union branch".into())),
        };
        let expected = match kind.as_str() {
            "create_geofence" | "update_geofence" => 0,
            "delete_geofence" => 1,
            "send_service_link" => 2,
            "clock" => 3,
            _ => return Err(r.unknown_symbol("kind", &kind)),
        };
        if branch != expected {
            return Err(invalid(R, "payload", format_args!("branch {branch} does not match kind {kind}")));
        }
        let action = match (kind.as_str(), r.record("payload", "payload")?) {
            ("create_geofence", p) => Action::CreateGeofence(fence_from(Rec { name: "FenceChange", ..p })?),
            ("update_geofence", p) => Action::UpdateGeofence(fence_from(Rec { name: "FenceChange", ..p })?),
            ("delete_geofence", mut p) => {
                p.name = "DeleteGeofence";
                Action::DeleteGeofence {
                    revision: check_revision(p.name, p.long("revision")?)?,
                    name: p.string("name")?,
                }
            }
            ("send_service_link", p) => Action::SendServiceLink(link_from(Rec { name: "ServiceLink", ..p })?),
            (_, p) => Action::Clock(clock_from(Rec { name: "ClockChange", ..p })?),
        };
        Ok((tenant, Command { id, appointment, action }))
    }
}
