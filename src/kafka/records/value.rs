//! Building and reading apache-avro [`Value`]s of the record schemas.
//!
//! Reading is shape-checked ([`Rec`]): a field of the wrong Avro type is
//! [`CodecError::Decode`]; ids, tenants, times and positions read through
//! [`Rec`] are validated ([`super::validate`]).

use apache_avro::types::Value;

use super::validate::{check_id_str, check_latlon, check_tenant, check_ts};
use super::CodecError;
use crate::geo::LatLon;
use crate::model::{Activity, ClockAction, Id, Ts};

// ---------------------------------------------------------------------------
// Building values

pub(super) fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

pub(super) fn ts(t: Ts) -> Value {
    Value::TimestampMillis(t.0)
}

pub(super) fn opt(v: Option<Value>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(v) => Value::Union(1, Box::new(v)),
    }
}

pub(super) fn record(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

pub(super) fn symbol(symbols: &[&str], sym: &str) -> Value {
    let idx = symbols.iter().position(|s| *s == sym).unwrap_or(0);
    Value::Enum(idx as u32, sym.to_string())
}

pub(super) fn latlon(p: LatLon) -> Value {
    record(vec![("lat", Value::Double(p.lat)), ("lon", Value::Double(p.lon))])
}

pub(super) const STATUS: [&str; 7] =
    ["unscheduled", "scheduled", "canceled_by_vendor", "canceled_by_customer", "completed", "no_show", "deleted"];
pub(super) const ACTIVITY: [&str; 3] = ["enroute", "onsite", "offsite"];
pub(super) const CLOCK_ACTION: [&str; 2] = ["in", "out"];
pub(super) const CAUSE: [&str; 2] = ["arrival", "exit"];
pub(super) const COMMAND_KIND: [&str; 5] =
    ["create_geofence", "update_geofence", "delete_geofence", "send_service_link", "clock"];

// ---------------------------------------------------------------------------
// Reading values

pub(super) fn value_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Boolean(_) => "boolean",
        Value::Int(_) => "int",
        Value::Long(_) => "long",
        Value::Float(_) => "float",
        Value::Double(_) => "double",
        Value::Bytes(_) => "bytes",
        Value::String(_) => "string",
        Value::Fixed(..) => "fixed",
        Value::Enum(..) => "enum",
        Value::Union(..) => "union",
        Value::Array(_) => "array",
        Value::Map(_) => "map",
        Value::Record(_) => "record",
        Value::TimestampMillis(_) => "timestamp-millis",
        _ => "other logical type",
    }
}

/// A decoded record's fields, taken one by one.
pub(super) struct Rec {
    pub(super) name: &'static str,
    pub(super) fields: Vec<(String, Value)>,
}

impl Rec {
    pub(super) fn new(name: &'static str, v: Value) -> Result<Rec, CodecError> {
        match v {
            Value::Record(fields) => Ok(Rec { name, fields }),
            other => Err(CodecError::Decode(format!("{name}: expected a record, got {}", value_kind(&other)))),
        }
    }

    pub(super) fn shape(&self, field: &str, want: &str, got: &Value) -> CodecError {
        CodecError::Decode(format!("{}.{field}: expected {want}, got {}", self.name, value_kind(got)))
    }

    pub(super) fn take(&mut self, field: &str) -> Result<Value, CodecError> {
        match self.fields.iter_mut().find(|(n, _)| n == field) {
            Some((_, v)) => Ok(unwrap_union(std::mem::replace(v, Value::Null))),
            None => Err(CodecError::Decode(format!("{}: missing field {field}", self.name))),
        }
    }

    pub(super) fn string(&mut self, field: &str) -> Result<String, CodecError> {
        match self.take(field)? {
            Value::String(s) => Ok(s),
            other => Err(self.shape(field, "string", &other)),
        }
    }

    pub(super) fn opt_string(&mut self, field: &str) -> Result<Option<String>, CodecError> {
        match self.take(field)? {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            other => Err(self.shape(field, "null or string", &other)),
        }
    }

    pub(super) fn tenant(&mut self) -> Result<String, CodecError> {
        let t = self.string("tenant")?;
        check_tenant(self.name, &t)?;
        Ok(t)
    }

    pub(super) fn id(&mut self, field: &str) -> Result<Id, CodecError> {
        let s = self.string(field)?;
        check_id_str(self.name, field, &s)?;
        Ok(Id::text(s))
    }

    /// A ServiceTrade id field ([`super::validate::servicetrade_id`]).
    pub(super) fn st_id(&mut self, field: &str) -> Result<Id, CodecError> {
        Ok(super::validate::servicetrade_id(self.id(field)?.as_str().to_string()))
    }

    pub(super) fn opt_st_id(&mut self, field: &str) -> Result<Option<Id>, CodecError> {
        Ok(self.opt_id(field)?.map(|i| super::validate::servicetrade_id(i.as_str().to_string())))
    }

    pub(super) fn opt_id(&mut self, field: &str) -> Result<Option<Id>, CodecError> {
        match self.opt_string(field)? {
            None => Ok(None),
            Some(s) => {
                check_id_str(self.name, field, &s)?;
                Ok(Some(Id::text(s)))
            }
        }
    }

    pub(super) fn long(&mut self, field: &str) -> Result<i64, CodecError> {
        match self.take(field)? {
            Value::Long(v) | Value::TimestampMillis(v) => Ok(v),
            Value::Int(v) => Ok(v.into()),
            other => Err(self.shape(field, "long", &other)),
        }
    }

    pub(super) fn ts(&mut self, field: &str) -> Result<Ts, CodecError> {
        let ms = self.long(field)?;
        check_ts(self.name, field, ms)
    }

    pub(super) fn opt_ts(&mut self, field: &str) -> Result<Option<Ts>, CodecError> {
        match self.take(field)? {
            Value::Null => Ok(None),
            Value::Long(v) | Value::TimestampMillis(v) => check_ts(self.name, field, v).map(Some),
            Value::Int(v) => check_ts(self.name, field, v.into()).map(Some),
            other => Err(self.shape(field, "null or timestamp-millis", &other)),
        }
    }

    pub(super) fn as_double(&self, field: &str, v: Value) -> Result<f64, CodecError> {
        match v {
            Value::Double(v) => Ok(v),
            Value::Float(v) => Ok(v.into()),
            Value::Long(v) => Ok(v as f64),
            Value::Int(v) => Ok(v.into()),
            other => Err(self.shape(field, "double", &other)),
        }
    }

    pub(super) fn double(&mut self, field: &str) -> Result<f64, CodecError> {
        let v = self.take(field)?;
        self.as_double(field, v)
    }

    pub(super) fn opt_double(&mut self, field: &str) -> Result<Option<f64>, CodecError> {
        match self.take(field)? {
            Value::Null => Ok(None),
            v => self.as_double(field, v).map(Some),
        }
    }

    pub(super) fn boolean(&mut self, field: &str) -> Result<bool, CodecError> {
        match self.take(field)? {
            Value::Boolean(b) => Ok(b),
            other => Err(self.shape(field, "boolean", &other)),
        }
    }

    pub(super) fn symbol(&mut self, field: &str) -> Result<String, CodecError> {
        match self.take(field)? {
            Value::Enum(_, s) => Ok(s),
            other => Err(self.shape(field, "enum", &other)),
        }
    }

    pub(super) fn array(&mut self, field: &str) -> Result<Vec<Value>, CodecError> {
        match self.take(field)? {
            Value::Array(v) => Ok(v),
            other => Err(self.shape(field, "array", &other)),
        }
    }

    pub(super) fn record(&mut self, field: &str, name: &'static str) -> Result<Rec, CodecError> {
        let v = self.take(field)?;
        Rec::new(name, v)
    }

    pub(super) fn latlon(&mut self, field: &str) -> Result<LatLon, CodecError> {
        let mut r = self.record(field, "LatLon")?;
        let p = LatLon::new(r.double("lat")?, r.double("lon")?);
        check_latlon(self.name, field, p)
    }

    pub(super) fn unknown_symbol(&self, field: &str, sym: &str) -> CodecError {
        CodecError::Decode(format!("{}.{field}: unknown symbol {sym:?}", self.name))
    }

    pub(super) fn activity(&mut self, field: &str) -> Result<Activity, CodecError> {
        let sym = self.symbol(field)?;
        match sym.as_str() {
            "enroute" => Ok(Activity::Enroute),
            "onsite" => Ok(Activity::Onsite),
            "offsite" => Ok(Activity::Offsite),
            _ => Err(self.unknown_symbol(field, &sym)),
        }
    }

    pub(super) fn action(&mut self, field: &str) -> Result<ClockAction, CodecError> {
        let sym = self.symbol(field)?;
        match sym.as_str() {
            "in" => Ok(ClockAction::In),
            "out" => Ok(ClockAction::Out),
            _ => Err(self.unknown_symbol(field, &sym)),
        }
    }
}

pub(super) fn unwrap_union(v: Value) -> Value {
    match v {
        Value::Union(_, inner) => *inner,
        v => v,
    }
}
