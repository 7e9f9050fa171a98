//! The entity records (user, location, job, appointment, driver, vehicle,
//! pairing) and the clock event record (offices and contacts: `offices`).

use apache_avro::types::Value;

use super::validate::{check_id, check_id_str, check_lat, check_latlon, check_lon, check_tenant, check_ts};
use super::value::{latlon, opt, record, s, symbol, ts, Rec, ACTIVITY, CLOCK_ACTION, STATUS};
use super::AvroRecord;
use super::{CodecError, RecordType};
use crate::geo::LatLon;
use crate::model::{Appointment, AppointmentStatus, ClockEvent, Driver, Job, Location, Pairing, User, Vehicle};

impl AvroRecord for User {
    const TYPE: RecordType = RecordType::User;

    fn to_value(&self, tenant: &str) -> Result<Value, CodecError> {
        check_tenant("User", tenant)?;
        check_id("User", "id", &self.id)?;
        Ok(record(vec![
            ("tenant", s(tenant)),
            ("id", s(self.id.as_str())),
            ("name", s(&self.name)),
            ("email", opt(self.email.as_deref().map(s))),
            ("tech", Value::Boolean(self.tech)),
        ]))
    }

    fn from_value(value: Value) -> Result<(String, Self), CodecError> {
        let mut r = Rec::new("User", value)?;
        let tenant = r.tenant()?;
        let user = User {
            id: r.st_id("id")?,
            name: r.string("name")?,
            email: r.opt_string("email")?,
            tech: r.boolean("tech")?,
        };
        Ok((tenant, user))
    }
}

impl AvroRecord for Location {
    const TYPE: RecordType = RecordType::Location;

    fn to_value(&self, tenant: &str) -> Result<Value, CodecError> {
        const R: &str = "Location";
        check_tenant(R, tenant)?;
        check_id(R, "id", &self.id)?;
        if let Some(c) = &self.primary_contact {
            check_id(R, "primaryContact", c)?;
        }
        if let Some(lat) = self.lat {
            check_lat(R, "lat", lat)?;
        }
        if let Some(lon) = self.lon {
            check_lon(R, "lon", lon)?;
        }
        let polygon = match &self.polygon {
            None => None,
            Some(ring) => {
                let mut items = Vec::with_capacity(ring.len());
                for [lat, lon] in ring {
                    items.push(latlon(check_latlon(R, "polygon", LatLon::new(*lat, *lon))?));
                }
                Some(Value::Array(items))
            }
        };
        Ok(record(vec![
            ("tenant", s(tenant)),
            ("id", s(self.id.as_str())),
            ("name", s(&self.name)),
            ("lat", opt(self.lat.map(Value::Double))),
            ("lon", opt(self.lon.map(Value::Double))),
            ("email", opt(self.email.as_deref().map(s))),
            ("polygon", opt(polygon)),
            ("timezone", opt(self.timezone.as_deref().map(s))),
            ("primaryContact", opt(self.primary_contact.as_ref().map(|c| s(c.as_str())))),
            ("offices", super::offices::id_list(R, "offices", &self.offices)?),
        ]))
    }

    fn from_value(value: Value) -> Result<(String, Self), CodecError> {
        const R: &str = "Location";
        let mut r = Rec::new(R, value)?;
        let tenant = r.tenant()?;
        let id = r.st_id("id")?;
        let name = r.string("name")?;
        let lat = r.opt_double("lat")?.map(|v| check_lat(R, "lat", v)).transpose()?;
        let lon = r.opt_double("lon")?.map(|v| check_lon(R, "lon", v)).transpose()?;
        let email = r.opt_string("email")?;
        let polygon = match r.take("polygon")? {
            Value::Null => None,
            Value::Array(items) => {
                let mut ring = Vec::with_capacity(items.len());
                for item in items {
                    let mut p = Rec::new("LatLon", item)?;
                    let q = check_latlon(R, "polygon", LatLon::new(p.double("lat")?, p.double("lon")?))?;
                    ring.push([q.lat, q.lon]);
                }
                Some(ring)
            }
            other => return Err(r.shape("polygon", "null or array", &other)),
        };
        let timezone = r.opt_string("timezone")?;
        let primary_contact = r.opt_st_id("primaryContact")?;
        let offices = super::offices::read_id_list(&mut r, R, "offices")?;
        Ok((tenant, Location { id, name, lat, lon, email, polygon, timezone, primary_contact, offices }))
    }
}

impl AvroRecord for Job {
    const TYPE: RecordType = RecordType::Job;

    fn to_value(&self, tenant: &str) -> Result<Value, CodecError> {
        check_tenant("Job", tenant)?;
        check_id("Job", "id", &self.id)?;
        if let Some(n) = &self.number {
            check_id("Job", "number", n)?;
        }
        if let Some(l) = &self.location {
            check_id("Job", "location", l)?;
        }
        Ok(record(vec![
            ("tenant", s(tenant)),
            ("id", s(self.id.as_str())),
            ("number", opt(self.number.as_ref().map(|n| s(n.as_str())))),
            ("location", opt(self.location.as_ref().map(|l| s(l.as_str())))),
        ]))
    }

    fn from_value(value: Value) -> Result<(String, Self), CodecError> {
        let mut r = Rec::new("Job", value)?;
        let tenant = r.tenant()?;
        Ok((tenant, Job { id: r.st_id("id")?, number: r.opt_st_id("number")?, location: r.opt_st_id("location")? }))
    }
}

impl AvroRecord for Appointment {
    const TYPE: RecordType = RecordType::Appointment;

    fn to_value(&self, tenant: &str) -> Result<Value, CodecError> {
        const R: &str = "Appointment";
        check_tenant(R, tenant)?;
        check_id(R, "id", &self.id)?;
        if let Some(j) = &self.job {
            check_id(R, "job", j)?;
        }
        for (field, t) in [("window_start", self.window_start), ("window_end", self.window_end)] {
            if let Some(t) = t {
                check_ts(R, field, t.0)?;
            }
        }
        let mut techs = Vec::with_capacity(self.techs.len());
        for t in &self.techs {
            check_id(R, "techs", t)?;
            techs.push(s(t.as_str()));
        }
        Ok(record(vec![
            ("tenant", s(tenant)),
            ("id", s(self.id.as_str())),
            ("job", opt(self.job.as_ref().map(|j| s(j.as_str())))),
            ("status", symbol(&STATUS, self.status.as_str())),
            ("window_start", opt(self.window_start.map(ts))),
            ("window_end", opt(self.window_end.map(ts))),
            ("techs", Value::Array(techs)),
        ]))
    }

    fn from_value(value: Value) -> Result<(String, Self), CodecError> {
        const R: &str = "Appointment";
        let mut r = Rec::new(R, value)?;
        let tenant = r.tenant()?;
        let id = r.st_id("id")?;
        let job = r.opt_st_id("job")?;
        let sym = r.symbol("status")?;
        let status = match sym.as_str() {
            "unscheduled" => AppointmentStatus::Unscheduled,
            "scheduled" => AppointmentStatus::Scheduled,
            "canceled_by_vendor" => AppointmentStatus::CanceledByVendor,
            "canceled_by_customer" => AppointmentStatus::CanceledByCustomer,
            "completed" => AppointmentStatus::Completed,
            "no_show" => AppointmentStatus::NoShow,
            "deleted" => AppointmentStatus::Deleted,
            _ => return Err(r.unknown_symbol("status", &sym)),
        };
        let window_start = r.opt_ts("window_start")?;
        let window_end = r.opt_ts("window_end")?;
        let mut techs = Vec::new();
        for t in r.array("techs")? {
            match t {
                Value::String(t) => {
                    check_id_str(R, "techs", &t)?;
                    techs.push(super::validate::servicetrade_id(t));
                }
                other => return Err(r.shape("techs", "string items", &other)),
            }
        }
        Ok((tenant, Appointment { id, job, status, window_start, window_end, techs }))
    }
}

impl AvroRecord for ClockEvent {
    const TYPE: RecordType = RecordType::ClockEvent;

    fn to_value(&self, tenant: &str) -> Result<Value, CodecError> {
        const R: &str = "ClockEvent";
        check_tenant(R, tenant)?;
        check_id(R, "user", &self.user)?;
        check_id(R, "appointment", &self.appointment)?;
        check_ts(R, "time", self.time.0)?;
        Ok(record(vec![
            ("tenant", s(tenant)),
            ("user", s(self.user.as_str())),
            ("appointment", s(self.appointment.as_str())),
            ("activity", symbol(&ACTIVITY, self.activity.as_str())),
            ("action", symbol(&CLOCK_ACTION, self.action.as_str())),
            ("time", ts(self.time)),
        ]))
    }

    fn from_value(value: Value) -> Result<(String, Self), CodecError> {
        let mut r = Rec::new("ClockEvent", value)?;
        let tenant = r.tenant()?;
        let ev = ClockEvent {
            user: r.st_id("user")?,
            appointment: r.st_id("appointment")?,
            activity: r.activity("activity")?,
            action: r.action("action")?,
            time: r.ts("time")?,
        };
        Ok((tenant, ev))
    }
}

impl AvroRecord for Driver {
    const TYPE: RecordType = RecordType::Driver;

    fn to_value(&self, tenant: &str) -> Result<Value, CodecError> {
        check_tenant("Driver", tenant)?;
        check_id("Driver", "id", &self.id)?;
        Ok(record(vec![
            ("tenant", s(tenant)),
            ("id", s(self.id.as_str())),
            ("name", s(&self.name)),
            ("email", opt(self.email.as_deref().map(s))),
        ]))
    }

    fn from_value(value: Value) -> Result<(String, Self), CodecError> {
        let mut r = Rec::new("Driver", value)?;
        let tenant = r.tenant()?;
        Ok((tenant, Driver { id: r.id("id")?, name: r.string("name")?, email: r.opt_string("email")? }))
    }
}

impl AvroRecord for Vehicle {
    const TYPE: RecordType = RecordType::Vehicle;

    fn to_value(&self, tenant: &str) -> Result<Value, CodecError> {
        check_tenant("Vehicle", tenant)?;
        check_id("Vehicle", "id", &self.id)?;
        Ok(record(vec![("tenant", s(tenant)), ("id", s(self.id.as_str())), ("name", s(&self.name))]))
    }

    fn from_value(value: Value) -> Result<(String, Self), CodecError> {
        let mut r = Rec::new("Vehicle", value)?;
        let tenant = r.tenant()?;
        Ok((tenant, Vehicle { id: r.id("id")?, name: r.string("name")? }))
    }
}

impl AvroRecord for Pairing {
    const TYPE: RecordType = RecordType::Pairing;

    fn to_value(&self, tenant: &str) -> Result<Value, CodecError> {
        const R: &str = "Pairing";
        check_tenant(R, tenant)?;
        check_id(R, "driver", &self.driver)?;
        check_id(R, "vehicle", &self.vehicle)?;
        check_ts(R, "from", self.from.0)?;
        if let Some(to) = self.to {
            check_ts(R, "to", to.0)?;
        }
        Ok(record(vec![
            ("tenant", s(tenant)),
            ("driver", s(self.driver.as_str())),
            ("vehicle", s(self.vehicle.as_str())),
            ("from", ts(self.from)),
            ("to", opt(self.to.map(ts))),
        ]))
    }

    fn from_value(value: Value) -> Result<(String, Self), CodecError> {
        let mut r = Rec::new("Pairing", value)?;
        let tenant = r.tenant()?;
        let p =
            Pairing { driver: r.id("driver")?, vehicle: r.id("vehicle")?, from: r.ts("from")?, to: r.opt_ts("to")? };
        Ok((tenant, p))
    }
}

/// The tick record: event-time progress for a tenant ([`crate::engine::Event::Tick`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tick(pub crate::model::Ts);

impl AvroRecord for Tick {
    const TYPE: RecordType = RecordType::Tick;

    fn to_value(&self, tenant: &str) -> Result<Value, CodecError> {
        check_tenant("Tick", tenant)?;
        check_ts("Tick", "time", self.0 .0)?;
        Ok(record(vec![("tenant", s(tenant)), ("time", ts(self.0))]))
    }

    fn from_value(value: Value) -> Result<(String, Self), CodecError> {
        let mut r = Rec::new("Tick", value)?;
        let tenant = r.tenant()?;
        Ok((tenant, Tick(r.ts("time")?)))
    }
}
