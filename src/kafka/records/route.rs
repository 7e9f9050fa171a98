//! The fence route records (`route.avsc`, `route_progress.avsc`): what
//! stage one of the processor tells stage two ([`crate::engine::route`]).
//!
//! Invariants:
//! - A route record's key is `tenant/vehicleId` ([`super::key_id`]); a
//!   progress record's is [`ROUTE_PROGRESS_KEY`], which is never a
//!   `tenant/id` key, so the two cannot be mistaken for each other.
//! - Ids must not be blank, clock times and interval starts lie in
//!   `[0, MAX_TIME_MS]`, an interval's `to` is after its `from` (an open
//!   interval, `to == Ts::MAX`, travels as null), shapes pass
//!   [`Shape::validate`], the generation fits a `u32` and `seq` an `i64`;
//!   anything else is [`CodecError::InvalidValue`], both ways.
//! - A watch's `earliest` and `latest` (window ± the arrival window) may lie
//!   outside `[0, MAX_TIME_MS]` for windows at the ends of that range; they
//!   are clamped into it when written. The engine only compares them with
//!   ping times, which lie in that range, so this changes no decision.
//! - A progress record's `through` is any time `>= 0`; `i64::MAX` means
//!   "caught up".

use apache_avro::types::Value;

use super::command::{shape_branch, shape_from_branch};
use super::validate::{check_id, check_tenant, check_ts, check_u32, invalid, MAX_TIME_MS};
use super::value::{record, s, symbol, ts, value_kind, Rec, CLOCK_ACTION};
use super::AvroRecord;
use super::{CodecError, RecordType};
use crate::engine::route::{Route, RouteBody, RouteWatch};
use crate::engine::timeline::{ClockLine, Interval};
use crate::model::{ClockAction, Ts};

/// The key progress records carry on the routes topic (route records carry
/// `tenant/vehicleId`).
pub const ROUTE_PROGRESS_KEY: &[u8] = b"\0progress";

/// Stage one's progress (`route_progress.avsc`): task `task` has produced
/// every route caused by its input records with a record time at or before
/// `through` (`i64::MAX`: it is caught up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteProgress {
    pub task: i32,
    pub through: i64,
}

// ---------------------------------------------------------------------------
// Route

fn line_value(rec: &str, field: &str, line: &ClockLine) -> Result<Value, CodecError> {
    let mut items = Vec::new();
    for (t, action) in line.events() {
        check_ts(rec, field, t.0)?;
        items.push(record(vec![("time", ts(*t)), ("action", symbol(&CLOCK_ACTION, action.as_str()))]));
    }
    Ok(Value::Array(items))
}

fn line_from(r: &mut Rec, field: &str) -> Result<ClockLine, CodecError> {
    let mut line = ClockLine::default();
    for item in r.array(field)? {
        let mut f = Rec::new("ClockFact", item)?;
        let time = f.ts("time")?;
        let action: ClockAction = f.action("action")?;
        line.insert(time, action);
    }
    Ok(line)
}

/// `t` clamped into `[0, MAX_TIME_MS]` (see the module invariants).
fn clamped(t: Ts) -> Value {
    Value::TimestampMillis(t.0.clamp(0, MAX_TIME_MS))
}

fn interval_value(i: &Interval) -> Result<Value, CodecError> {
    const R: &str = "PairedInterval";
    let (from, to) = *i;
    check_ts(R, "from", from.0)?;
    if to <= from {
        return Err(invalid(R, "to", format_args!("{} is not after from {}", to.0, from.0)));
    }
    let to = if to == Ts::MAX {
        Value::Union(0, Box::new(Value::Null))
    } else {
        Value::Union(1, Box::new(Value::TimestampMillis(check_ts(R, "to", to.0)?.0)))
    };
    Ok(record(vec![("from", ts(from)), ("to", to)]))
}

fn interval_from(item: Value) -> Result<Interval, CodecError> {
    const R: &str = "PairedInterval";
    let mut r = Rec::new(R, item)?;
    let from = r.ts("from")?;
    let to = r.opt_ts("to")?.unwrap_or(Ts::MAX);
    if to <= from {
        return Err(invalid(R, "to", format_args!("{} is not after from {}", to.0, from.0)));
    }
    Ok((from, to))
}

fn watch_value(w: &RouteWatch) -> Result<Value, CodecError> {
    const R: &str = "RouteWatch";
    check_id(R, "user", &w.user)?;
    let paired = w.paired.iter().map(interval_value).collect::<Result<Vec<_>, _>>()?;
    Ok(record(vec![
        ("user", s(w.user.as_str())),
        ("earliest", clamped(w.earliest)),
        ("latest", clamped(w.latest)),
        ("paired", Value::Array(paired)),
        ("enroute", line_value(R, "enroute", &w.enroute)?),
        ("onsite", line_value(R, "onsite", &w.onsite)?),
    ]))
}

fn watch_from(item: Value) -> Result<RouteWatch, CodecError> {
    let mut r = Rec::new("RouteWatch", item)?;
    let user = r.st_id("user")?;
    let earliest = r.ts("earliest")?;
    let latest = r.ts("latest")?;
    let paired = r.array("paired")?.into_iter().map(interval_from).collect::<Result<Vec<_>, _>>()?;
    let enroute = line_from(&mut r, "enroute")?;
    let onsite = line_from(&mut r, "onsite")?;
    Ok(RouteWatch { user, earliest, latest, paired, enroute, onsite })
}

fn body_value(body: &RouteBody) -> Result<Value, CodecError> {
    Ok(match body {
        RouteBody::Watches { shape, watches, retired } => {
            let shape = match shape {
                None => Value::Union(0, Box::new(Value::Null)),
                Some(shape) => {
                    shape.validate().map_err(|e| invalid("RouteWatches", "shape", e))?;
                    let (branch, v) = shape_branch(shape);
                    Value::Union(branch + 1, Box::new(v))
                }
            };
            let watches = watches.iter().map(watch_value).collect::<Result<Vec<_>, _>>()?;
            Value::Union(
                0,
                Box::new(record(vec![
                    ("shape", shape),
                    ("watches", Value::Array(watches)),
                    ("retired", Value::Boolean(*retired)),
                ])),
            )
        }
        RouteBody::Clock { user, enroute, onsite } => {
            const R: &str = "RouteClock";
            check_id(R, "user", user)?;
            Value::Union(
                1,
                Box::new(record(vec![
                    ("user", s(user.as_str())),
                    ("enroute", line_value(R, "enroute", enroute)?),
                    ("onsite", line_value(R, "onsite", onsite)?),
                ])),
            )
        }
    })
}

fn union_branch(r: &Rec, field: &str) -> Option<u32> {
    match r.fields.iter().find(|(n, _)| n == field).map(|(_, v)| v) {
        Some(Value::Union(i, _)) => Some(*i),
        _ => None,
    }
}

fn body_from(r: &mut Rec) -> Result<RouteBody, CodecError> {
    match union_branch(r, "body") {
        Some(0) => {
            let mut w = r.record("body", "RouteWatches")?;
            let shape = match (union_branch(&w, "shape"), w.take("shape")?) {
                (Some(0), Value::Null) => None,
                (Some(b @ (1 | 2)), v) => Some(shape_from_branch("RouteWatches", b - 1, v)?),
                (_, other) => {
                    return Err(CodecError::Decode(format!(
                        "RouteWatches.shape: expected null, a Circle or a Polygon, got {}",
                        value_kind(&other)
                    )))
                }
            };
            let watches = w.array("watches")?.into_iter().map(watch_from).collect::<Result<Vec<_>, _>>()?;
            let retired = w.boolean("retired")?;
            Ok(RouteBody::Watches { shape, watches, retired })
        }
        Some(1) => {
            let mut c = r.record("body", "RouteClock")?;
            let user = c.st_id("user")?;
            let enroute = line_from(&mut c, "enroute")?;
            let onsite = line_from(&mut c, "onsite")?;
            Ok(RouteBody::Clock { user, enroute, onsite })
        }
        _ => Err(CodecError::Decode("Route.body: expected a RouteWatches or RouteClock branch".into())),
    }
}

impl AvroRecord for Route {
    const TYPE: RecordType = RecordType::Route;

    fn to_value(&self, tenant: &str) -> Result<Value, CodecError> {
        const R: &str = "Route";
        check_tenant(R, tenant)?;
        check_id(R, "vehicle", &self.vehicle)?;
        check_id(R, "appointment", &self.appointment)?;
        let seq = i64::try_from(self.seq)
            .map_err(|_| invalid(R, "seq", format_args!("{} is not in 0..=9223372036854775807", self.seq)))?;
        Ok(record(vec![
            ("tenant", s(tenant)),
            ("vehicle", s(self.vehicle.as_str())),
            ("appointment", s(self.appointment.as_str())),
            ("generation", Value::Long(self.generation.into())),
            ("seq", Value::Long(seq)),
            ("body", body_value(&self.body)?),
        ]))
    }

    fn from_value(value: Value) -> Result<(String, Self), CodecError> {
        const R: &str = "Route";
        let mut r = Rec::new(R, value)?;
        let tenant = r.tenant()?;
        let vehicle = r.id("vehicle")?;
        let appointment = r.st_id("appointment")?;
        let generation = check_u32(R, "generation", r.long("generation")?)?;
        let seq = r.long("seq")?;
        let seq = u64::try_from(seq).map_err(|_| invalid(R, "seq", format_args!("{seq} is negative")))?;
        let body = body_from(&mut r)?;
        Ok((tenant, Route { vehicle, appointment, generation, seq, body }))
    }
}

// ---------------------------------------------------------------------------
// RouteProgress

fn check_progress(p: &RouteProgress) -> Result<(), CodecError> {
    const R: &str = "RouteProgress";
    if p.task < 0 {
        return Err(invalid(R, "task", format_args!("{} is negative", p.task)));
    }
    if p.through < 0 {
        return Err(invalid(R, "through", format_args!("{} is negative", p.through)));
    }
    Ok(())
}

pub(crate) fn route_progress_value(p: &RouteProgress) -> Result<Value, CodecError> {
    check_progress(p)?;
    Ok(record(vec![("task", Value::Int(p.task)), ("through", Value::Long(p.through))]))
}

pub(crate) fn route_progress_from(value: Value) -> Result<RouteProgress, CodecError> {
    let mut r = Rec::new("RouteProgress", value)?;
    let task = match r.take("task")? {
        Value::Int(t) => t,
        other => return Err(r.shape("task", "int", &other)),
    };
    let p = RouteProgress { task, through: r.long("through")? };
    check_progress(&p)?;
    Ok(p)
}
