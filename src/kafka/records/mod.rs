//! The Avro records of `schemas/` and the engine types they carry.
//!
//! Each entity, clock event and ping record is the engine's model type plus
//! the tenant ([`TenantEvent`]); a command record is [`Command`]
//! plus the tenant ([`TenantCommand`]). [`AvroRecord`] converts between the
//! engine type and apache-avro's [`Value`] for its schema, both ways, and
//! validates on the way in *and* out, so geoclock never writes a record it
//! would refuse to read.
//!
//! Layout (each module states the invariants it keeps in its docs):
//! - `validate`: the range checks every record passes, both ways;
//! - `value`: building and reading apache-avro [`Value`]s;
//! - `entities`: the entity and clock event records;
//! - `offices`: the office and contact records;
//! - `ping`: the ping record and its hand-written codec;
//! - `command`: the command record;
//! - `result`: the sink result record;
//! - `route`: the fence route and route progress records (stage one to
//!   stage two of the processor);
//! - `kind`: the record types and the codec error (shared with the codec,
//!   which sits above this module);
//! - `keys`: topics, record keys and deletes;
//! - `wire`: Avro binary primitives.

mod command;
mod entities;
mod keys;
mod kind;
mod offices;
mod ping;
mod result;
mod route;
mod validate;
mod value;
pub(crate) mod wire;

use apache_avro::types::Value;

use crate::engine::{Command, Event};
use value::{opt, record, s, Rec};

pub use entities::Tick;
pub use keys::{command_key_id, delete_event, key_id, pairing_key_id, parse_pairing_key_id, topic_of};
pub use kind::{CodecError, RecordType};
pub use ping::{read_ping_borrowed, read_ping_datum, write_ping_datum};
pub use result::{Outcome, SinkResult};
pub(crate) use route::{route_progress_from, route_progress_value};
pub use route::{RouteProgress, ROUTE_PROGRESS_KEY};
pub use validate::MAX_TIME_MS;

/// An engine event and the tenant it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantEvent {
    pub tenant: String,
    pub event: Event,
}

/// An engine command and the tenant it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantCommand {
    pub tenant: String,
    pub command: Command,
}

/// A record that could not be processed (`dead_letter.avsc`).
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Human-readable reason.
    pub reason: String,
    /// Machine-readable class: [`CodecError::kind`], or `rejected`.
    pub kind: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Which process dead-lettered it.
    pub component: String,
}

impl DeadLetter {
    /// The dead letter for a record that failed to decode.
    pub fn for_error(
        err: &CodecError,
        topic: &str,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        component: &str,
    ) -> Self {
        DeadLetter {
            reason: err.to_string(),
            kind: err.kind().to_string(),
            topic: topic.to_string(),
            partition,
            offset,
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            component: component.to_string(),
        }
    }
}

/// An engine type that is one Avro record (with its tenant).
pub trait AvroRecord: Sized {
    /// Which record, hence which schema and topic.
    const TYPE: RecordType;

    /// The record as a [`Value`] of the current schema. Validates.
    fn to_value(&self, tenant: &str) -> Result<Value, CodecError>;

    /// The record from a [`Value`] of the current schema (already resolved
    /// from the writer's). Validates.
    fn from_value(value: Value) -> Result<(String, Self), CodecError>;

    /// Appends the datum for the current schema, for types with a
    /// hand-written encoder; `None` means "use [`AvroRecord::to_value`]".
    fn write_datum(&self, _tenant: &str, _out: &mut Vec<u8>) -> Option<Result<(), CodecError>> {
        None
    }

    /// Reads a datum written with exactly the current schema, for types with
    /// a hand-written decoder; `None` means "use the generic decoder".
    fn read_datum(_datum: &[u8]) -> Option<Result<(String, Self), CodecError>> {
        None
    }
}

// ---------------------------------------------------------------------------
// Dead letters

pub(crate) fn dead_letter_value(d: &DeadLetter) -> Value {
    record(vec![
        ("reason", s(&d.reason)),
        ("kind", s(&d.kind)),
        ("topic", s(&d.topic)),
        ("partition", Value::Int(d.partition)),
        ("offset", Value::Long(d.offset)),
        ("key", opt(d.key.clone().map(Value::Bytes))),
        ("value", opt(d.value.clone().map(Value::Bytes))),
        ("component", s(&d.component)),
    ])
}

pub(crate) fn dead_letter_from(value: Value) -> Result<DeadLetter, CodecError> {
    let mut r = Rec::new("DeadLetter", value)?;
    let bytes = |r: &mut Rec, field: &str| match r.take(field)? {
        Value::Null => Ok(None),
        Value::Bytes(b) => Ok(Some(b)),
        other => Err(r.shape(field, "null or bytes", &other)),
    };
    let reason = r.string("reason")?;
    let kind = r.string("kind")?;
    let topic = r.string("topic")?;
    let partition = match r.take("partition")? {
        Value::Int(p) => p,
        other => return Err(r.shape("partition", "int", &other)),
    };
    let offset = r.long("offset")?;
    let key = bytes(&mut r, "key")?;
    let value = bytes(&mut r, "value")?;
    let component = r.string("component")?;
    Ok(DeadLetter { reason, kind, topic, partition, offset, key, value, component })
}

/// Generators for property tests (here and in `codec`).
#[cfg(test)]
pub(crate) mod tests_support;

#[cfg(test)]
mod tests;
