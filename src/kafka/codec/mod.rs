//! The record codec: Avro values in the Confluent wire format.
//!
//! Layout: `framing` (the wire format, [`frame`], [`unframe`]), `decoder`
//! (the strict datum decoder, [`read_datum_with`]), and here the [`Codec`],
//! which picks the schema to read each record with.
//!
//! # Schemas and evolution
//!
//! The reader schemas are the files in `schemas/`, compiled in. A [`Codec`]
//! registers each under its subject ([`RecordType::subject`]: `{topic}-value`
//! for the topic's main record, `{topic}-{full name}` for a second record
//! type on the same topic) when it is built and writes with those ids. To read, it fetches the writer schema by the
//! record's id (once per id; [`SchemaRegistry`] implementations cache) and
//! decides, once per (writer id, record type):
//!
//! - writer structurally equal to the reader (same fields, types, logical
//!   types, names, order; docs and defaults may differ): the datum is read
//!   directly with the reader schema — for pings with a hand-written decoder;
//! - writer a record of the same full name (`io.geoclock.v1.Ping`, ...):
//!   each datum is read with the writer schema and resolved to the reader's
//!   by Avro's rules (apache-avro's `Value::resolve`): fields the writer
//!   lacks take the reader's default, fields the reader lacks are skipped,
//!   numeric promotions apply, an enum symbol the reader lacks becomes the
//!   reader enum's default. A datum that cannot be resolved (a field without
//!   default missing, an unknown symbol of an enum without default) fails
//!   with [`CodecError::Decode`]. Resolution is per datum rather than a
//!   schema-level compatibility check because apache-avro 0.21's
//!   `SchemaCompatibility::can_read` ignores enum defaults;
//! - any other writer schema: every record with that id fails with
//!   [`CodecError::Decode`].
//!
//! The evolution rule that keeps old records readable is in
//! `schemas/README.md`: new fields carry defaults, nothing is renamed or
//! retyped.
//!
//! # Error classes
//!
//! Decoding fails with exactly one of (see [`CodecError::kind`]):
//! `framing` (empty, shorter than the 5-byte header, or magic byte not 0),
//! `unknown_schema` (the registry has no schema with that id), `decode` (the
//! datum does not decode with its writer schema, has trailing bytes, or its
//! writer schema cannot be read as this record type), `invalid_value`
//! (decoded, but a value is out of range: see [`super::records`]). These
//! four mean the record itself is bad: dead-letter it
//! ([`CodecError::is_poison`]). `registry` (the registry could not be
//! asked) is transient: retry, do not dead-letter. `encode` only comes from
//! encoding.
//!
//! Nothing here panics on any input bytes (see `decoder`).

mod decoder;
mod encoder;
mod framing;

use std::sync::{Arc, RwLock};

use apache_avro::schema::Schema;
use apache_avro::schema_equality::{SchemataEq, StructFieldEq};
use apache_avro::types::Value;
use rustc_hash::FxHashMap;

use super::records::{
    self, dead_letter_from, dead_letter_value, route_progress_from, route_progress_value, AvroRecord, DeadLetter,
    RouteProgress, SinkResult, TenantCommand, TenantEvent,
};
pub use super::records::{CodecError, RecordType};
use super::registry::{RegistryError, SchemaRegistry};
use super::topics::{self, Catalogue, Topic};
use crate::engine::{Command, Event, Route};
use crate::model::{Appointment, ClockEvent, Contact, Driver, Job, Location, Office, Pairing, Ping, User, Vehicle};
use decoder::{names_of, read_datum, Names};

pub use decoder::read_datum_with;
pub use framing::{frame, unframe, HEADER_LEN, MAGIC};

struct Reader {
    schema: Arc<Schema>,
    names: Names,
    subject: String,
    id: u32,
}

/// How records of one writer schema id are read as one record type.
enum Plan {
    /// Same layout as the reader schema.
    Identical,
    /// Decode with the writer schema, then resolve to the reader's.
    Resolve { writer: Arc<Schema>, names: Names },
    /// Not readable as this record type.
    Incompatible(String),
}

/// A record that went onto (or came from) a topic.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedRecord {
    pub topic: Topic,
    /// `tenant/id`.
    pub key: Vec<u8>,
    /// `None` is a tombstone.
    pub value: Option<Vec<u8>>,
}

/// Encodes and decodes geoclock's records. Cheap to share (`Arc<Codec>`);
/// all methods take `&self`.
pub struct Codec {
    registry: Arc<dyn SchemaRegistry>,
    readers: Vec<Reader>,
    plans: RwLock<FxHashMap<(u32, RecordType), Arc<Plan>>>,
    /// Writer ids the registry did not know: (first seen, last asked).
    unknown: std::sync::Mutex<FxHashMap<u32, (std::time::Instant, std::time::Instant)>>,
    unknown_grace: std::time::Duration,
}

/// How long a writer schema id may be unknown to the registry before its
/// records are poison: a producer may have registered it a moment ago, or
/// the registry's replicas may lag.
pub const UNKNOWN_SCHEMA_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// How long "unknown" is believed before the registry is asked again
/// (one bad record must not cost a registry round trip each).
pub const UNKNOWN_SCHEMA_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Unknown writer ids remembered at most (records can carry any of 2^32
/// ids); past it, the id asked about longest ago is forgotten.
pub const UNKNOWN_SCHEMA_IDS: usize = 4096;

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<(&str, u32)> = self.readers.iter().map(|r| (r.subject.as_str(), r.id)).collect();
        f.debug_struct("Codec").field("schemas", &ids).finish_non_exhaustive()
    }
}

impl Codec {
    /// Parses the embedded schemas and registers each under its subject
    /// ([`RecordType::subject`]).
    pub fn new(registry: Arc<dyn SchemaRegistry>, catalogue: &Catalogue) -> Result<Codec, CodecError> {
        let mut readers = Vec::with_capacity(RecordType::ALL.len());
        let mut plans = FxHashMap::default();
        for rt in RecordType::ALL {
            let invalid = |message: String| RegistryError::InvalidSchema {
                context: format!("embedded schema {}", rt.full_name()),
                message,
            };
            let schema = Schema::parse_str(rt.schema_json()).map_err(|e| invalid(e.to_string()))?;
            let names = names_of(&schema).map_err(invalid)?;
            let subject = rt.subject(catalogue);
            let id = registry.register(&subject, &schema).map_err(CodecError::Registry)?;
            plans.insert((id, rt), Arc::new(Plan::Identical));
            readers.push(Reader { schema: Arc::new(schema), names, subject, id });
        }
        Ok(Codec {
            registry,
            readers,
            plans: RwLock::new(plans),
            unknown: Default::default(),
            unknown_grace: UNKNOWN_SCHEMA_GRACE,
        })
    }

    /// [`Codec::new`], waiting out an unreachable registry for up to
    /// `patience` (a process that starts while the registry is down).
    pub fn connect(
        registry: Arc<dyn SchemaRegistry>,
        catalogue: &Catalogue,
        patience: std::time::Duration,
    ) -> Result<Codec, CodecError> {
        let deadline = std::time::Instant::now() + patience;
        let mut wait = std::time::Duration::from_millis(200);
        loop {
            match Codec::new(registry.clone(), catalogue) {
                Err(CodecError::Registry(e)) if std::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "schema registry not reachable; retrying");
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(std::time::Duration::from_secs(5));
                }
                other => return other,
            }
        }
    }

    /// Sets how long an unknown writer id is retried before its records
    /// are poison ([`UNKNOWN_SCHEMA_GRACE`] by default).
    pub fn with_unknown_grace(mut self, grace: std::time::Duration) -> Codec {
        self.unknown_grace = grace;
        self
    }

    /// The error for an id the registry does not know: transient within
    /// the grace, poison after.
    fn unknown_error(&self, id: u32, first: std::time::Instant) -> CodecError {
        if first.elapsed() >= self.unknown_grace {
            CodecError::UnknownSchema(id)
        } else {
            CodecError::Registry(RegistryError::NotFound(id))
        }
    }

    fn reader(&self, rt: RecordType) -> &Reader {
        &self.readers[rt.index()]
    }

    /// The id this codec writes `rt` with.
    pub fn schema_id(&self, rt: RecordType) -> u32 {
        self.reader(rt).id
    }

    /// The subject `rt` is registered under.
    pub fn subject(&self, rt: RecordType) -> &str {
        &self.reader(rt).subject
    }

    /// The reader (and writer) schema of `rt`.
    pub fn schema(&self, rt: RecordType) -> &Schema {
        &self.reader(rt).schema
    }

    fn plan(&self, rt: RecordType, id: u32) -> Result<Arc<Plan>, CodecError> {
        if let Some(p) = self.plans.read().unwrap_or_else(|e| e.into_inner()).get(&(id, rt)) {
            return Ok(p.clone());
        }
        let now = std::time::Instant::now();
        if let Some((first, asked)) = self.unknown.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
            if asked.elapsed() < UNKNOWN_SCHEMA_RECHECK {
                return Err(self.unknown_error(id, *first));
            }
        }
        let writer = match self.registry.schema(id) {
            Ok(w) => w,
            Err(RegistryError::NotFound(_)) => {
                let mut u = self.unknown.lock().unwrap_or_else(|e| e.into_inner());
                if u.len() >= UNKNOWN_SCHEMA_IDS && !u.contains_key(&id) {
                    if let Some(stalest) = u.iter().min_by_key(|(_, (_, asked))| *asked).map(|(k, _)| *k) {
                        u.remove(&stalest);
                    }
                }
                let e = u.entry(id).or_insert((now, now));
                e.1 = now;
                return Err(self.unknown_error(id, e.0));
            }
            Err(other) => return Err(CodecError::Registry(other)),
        };
        self.unknown.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        let reader = self.reader(rt);
        let plan = if (StructFieldEq { include_attributes: false }).compare(&writer, &reader.schema) {
            Plan::Identical
        } else if writer.name() != reader.schema.name() {
            let got = writer.name().map(|n| n.fullname(None)).unwrap_or_else(|| "a non-record schema".into());
            Plan::Incompatible(format!("writer schema {id} is {got}, not {}", rt.full_name()))
        } else {
            match names_of(&writer) {
                Ok(names) => Plan::Resolve { writer, names },
                Err(e) => Plan::Incompatible(format!("writer schema {id}: {e}")),
            }
        };
        let mut plans = self.plans.write().unwrap_or_else(|e| e.into_inner());
        Ok(plans.entry((id, rt)).or_insert_with(|| Arc::new(plan)).clone())
    }

    /// Encodes one record with the current schema, framed.
    pub fn encode<T: AvroRecord>(&self, tenant: &str, record: &T) -> Result<Vec<u8>, CodecError> {
        let reader = self.reader(T::TYPE);
        let mut out = Vec::with_capacity(96);
        out.push(MAGIC);
        out.extend_from_slice(&reader.id.to_be_bytes());
        if let Some(r) = record.write_datum(tenant, &mut out) {
            r?;
            return Ok(out);
        }
        let value = record.to_value(tenant)?;
        encoder::write_datum(&value, &reader.schema, &reader.names, &mut out)?;
        Ok(out)
    }

    /// Decodes one framed record into its tenant and engine type.
    pub fn decode<T: AvroRecord>(&self, bytes: &[u8]) -> Result<(String, T), CodecError> {
        let (id, datum) = unframe(bytes)?;
        let reader = self.reader(T::TYPE);
        if id == reader.id {
            return decode_identical::<T>(reader, datum);
        }
        let plan = self.plan(T::TYPE, id)?;
        match &*plan {
            Plan::Identical => decode_identical::<T>(reader, datum),
            Plan::Resolve { writer, names } => {
                let value = read_datum(writer, names, datum)?;
                let value = value.resolve(&reader.schema).map_err(|e| {
                    CodecError::Decode(format!("resolving writer schema {id} to {}: {e}", T::TYPE.full_name()))
                })?;
                T::from_value(value)
            }
            Plan::Incompatible(why) => Err(CodecError::Decode(why.clone())),
        }
    }

    /// Decodes a framed datum of `rt` into an apache-avro [`Value`] of the
    /// current (reader) schema, without converting or validating it.
    pub fn decode_value(&self, rt: RecordType, bytes: &[u8]) -> Result<Value, CodecError> {
        let (id, datum) = unframe(bytes)?;
        let reader = self.reader(rt);
        let plan = if id == reader.id { Arc::new(Plan::Identical) } else { self.plan(rt, id)? };
        match &*plan {
            Plan::Identical => read_datum(&reader.schema, &reader.names, datum),
            Plan::Resolve { writer, names } => read_datum(writer, names, datum)?
                .resolve(&reader.schema)
                .map_err(|e| CodecError::Decode(format!("resolving writer schema {id} to {}: {e}", rt.full_name()))),
            Plan::Incompatible(why) => Err(CodecError::Decode(why.clone())),
        }
    }

    /// Encodes an engine event as the record for its topic: the key
    /// `tenant/{records::key_id}`, and the framed value, or `None` (a
    /// tombstone) for [`Event::Delete`]. A [`Event::Tick`] goes on the ticks
    /// topic, keyed `tenant/tick`; an [`Event::Route`] on the fence routes
    /// topic, keyed `tenant/vehicleId`.
    pub fn encode_event(&self, tenant: &str, event: &Event) -> Result<EncodedRecord, CodecError> {
        let (Some(topic), Some(id)) = (records::topic_of(event), records::key_id(event)) else {
            return Err(CodecError::Encode(format!("{} events are not published", event.kind())));
        };
        let key = topics::key(tenant, &id).map_err(|e| CodecError::InvalidValue(e.to_string()))?;
        let value = match event {
            Event::User(v) => Some(self.encode(tenant, v)?),
            Event::Location(v) => Some(self.encode(tenant, v)?),
            Event::Job(v) => Some(self.encode(tenant, v)?),
            Event::Appointment(v) => Some(self.encode(tenant, v)?),
            Event::Driver(v) => Some(self.encode(tenant, v)?),
            Event::Vehicle(v) => Some(self.encode(tenant, v)?),
            Event::Pairing(v) => Some(self.encode(tenant, v)?),
            Event::Office(v) => Some(self.encode(tenant, v)?),
            Event::Contact(v) => Some(self.encode(tenant, v)?),
            Event::Clock(v) => Some(self.encode(tenant, v)?),
            Event::Ping(v) => Some(self.encode(tenant, v)?),
            Event::Delete(_) => None,
            Event::Tick(t) => Some(self.encode(tenant, &records::Tick(*t))?),
            Event::Route(r) => Some(self.encode(tenant, r)?),
        };
        Ok(EncodedRecord { topic, key, value })
    }

    /// Decodes a record from an event topic into the engine event it
    /// carries. A `None` value (tombstone) is the delete of the key's entity
    /// ([`records::delete_event`]). The key must be `tenant/id` with the
    /// tenant and id the value carries ([`records::key_id`]); a mismatch is
    /// [`CodecError::InvalidValue`].
    pub fn decode_event(&self, topic: Topic, key: &[u8], value: Option<&[u8]>) -> Result<TenantEvent, CodecError> {
        let (key_tenant, key_id) = topics::parse_key(key).map_err(|e| CodecError::InvalidValue(e.to_string()))?;
        let Some(value) = value else {
            let entity = records::delete_event(topic, key_id)?;
            return Ok(TenantEvent { tenant: key_tenant.to_string(), event: Event::Delete(entity) });
        };
        let (tenant, event) = match RecordType::for_topic(topic) {
            Some(RecordType::User) => self.decode::<User>(value).map(|(t, v)| (t, Event::User(v)))?,
            Some(RecordType::Location) => self.decode::<Location>(value).map(|(t, v)| (t, Event::Location(v)))?,
            Some(RecordType::Job) => self.decode::<Job>(value).map(|(t, v)| (t, Event::Job(v)))?,
            Some(RecordType::Appointment) => {
                self.decode::<Appointment>(value).map(|(t, v)| (t, Event::Appointment(v)))?
            }
            Some(RecordType::ClockEvent) => self.decode::<ClockEvent>(value).map(|(t, v)| (t, Event::Clock(v)))?,
            Some(RecordType::Driver) => self.decode::<Driver>(value).map(|(t, v)| (t, Event::Driver(v)))?,
            Some(RecordType::Vehicle) => self.decode::<Vehicle>(value).map(|(t, v)| (t, Event::Vehicle(v)))?,
            Some(RecordType::Pairing) => self.decode::<Pairing>(value).map(|(t, v)| (t, Event::Pairing(v)))?,
            Some(RecordType::Office) => self.decode::<Office>(value).map(|(t, v)| (t, Event::Office(v)))?,
            Some(RecordType::Contact) => self.decode::<Contact>(value).map(|(t, v)| (t, Event::Contact(v)))?,
            Some(RecordType::Ping) => self.decode::<Ping>(value).map(|(t, v)| (t, Event::Ping(v)))?,
            Some(RecordType::Tick) => self.decode::<records::Tick>(value).map(|(t, v)| (t, Event::Tick(v.0)))?,
            Some(RecordType::Route) => self.decode::<Route>(value).map(|(t, v)| (t, Event::Route(v)))?,
            _ => return Err(CodecError::InvalidValue(format!("topic {topic:?} does not carry engine events"))),
        };
        if tenant != key_tenant {
            return Err(CodecError::InvalidValue(format!("key tenant {key_tenant:?} but value tenant {tenant:?}")));
        }
        match records::key_id(&event) {
            Some(id) if id == key_id => Ok(TenantEvent { tenant, event }),
            id => Err(CodecError::InvalidValue(format!(
                "key id {key_id:?} but the value's is {:?}",
                id.unwrap_or_default()
            ))),
        }
    }

    /// The ping hot path: a ping record in this codec's own ping schema,
    /// keyed `tenant/vehicle` as its value says, decoded with the tenant
    /// borrowed from the value. `None` for anything else (another writer
    /// schema, a malformed or mismatched record): [`Codec::decode_event`]
    /// then decides, and says what is wrong. Where this returns a ping,
    /// `decode_event` returns the same one.
    pub fn decode_current_ping<'v>(&self, key: &[u8], value: &'v [u8]) -> Option<(&'v str, Ping)> {
        let (id, datum) = unframe(value).ok()?;
        if id != self.reader(RecordType::Ping).id {
            return None;
        }
        let (tenant, ping) = records::read_ping_borrowed(datum).ok()?;
        let id = key.strip_prefix(tenant.as_bytes())?.strip_prefix(b"/")?;
        (id == ping.vehicle.as_str().as_bytes()).then_some((tenant, ping))
    }

    /// Encodes a command (key: `tenant/{records::command_key_id}`).
    pub fn encode_command(&self, tenant: &str, command: &Command) -> Result<Vec<u8>, CodecError> {
        self.encode(tenant, command)
    }

    /// Decodes a command record.
    pub fn decode_command(&self, bytes: &[u8]) -> Result<TenantCommand, CodecError> {
        self.decode::<Command>(bytes).map(|(tenant, command)| TenantCommand { tenant, command })
    }

    /// Encodes a dead letter.
    pub fn encode_dead_letter(&self, dead: &DeadLetter) -> Result<Vec<u8>, CodecError> {
        let reader = self.reader(RecordType::DeadLetter);
        let mut out = frame(reader.id, &[]);
        encoder::write_datum(&dead_letter_value(dead), &reader.schema, &reader.names, &mut out)?;
        Ok(out)
    }

    /// Decodes a dead letter.
    pub fn decode_dead_letter(&self, bytes: &[u8]) -> Result<DeadLetter, CodecError> {
        dead_letter_from(self.decode_value(RecordType::DeadLetter, bytes)?)
    }

    /// Encodes a route progress record (key: [`records::ROUTE_PROGRESS_KEY`]).
    pub fn encode_route_progress(&self, progress: &RouteProgress) -> Result<Vec<u8>, CodecError> {
        let reader = self.reader(RecordType::RouteProgress);
        let mut out = frame(reader.id, &[]);
        encoder::write_datum(&route_progress_value(progress)?, &reader.schema, &reader.names, &mut out)?;
        Ok(out)
    }

    /// Decodes a route progress record.
    pub fn decode_route_progress(&self, bytes: &[u8]) -> Result<RouteProgress, CodecError> {
        route_progress_from(self.decode_value(RecordType::RouteProgress, bytes)?)
    }
}

macro_rules! typed {
    ($($t:ident: $enc:ident, $dec:ident;)*) => {
        impl Codec {
            $(
                #[doc = concat!("Encodes a [`", stringify!($t), "`] of `tenant`, framed.")]
                pub fn $enc(&self, tenant: &str, value: &$t) -> Result<Vec<u8>, CodecError> {
                    self.encode(tenant, value)
                }
                #[doc = concat!("Decodes a framed [`", stringify!($t), "`] record: (tenant, value).")]
                pub fn $dec(&self, bytes: &[u8]) -> Result<(String, $t), CodecError> {
                    self.decode(bytes)
                }
            )*
        }
    };
}

typed! {
    Ping: encode_ping, decode_ping;
    User: encode_user, decode_user;
    Location: encode_location, decode_location;
    Job: encode_job, decode_job;
    Appointment: encode_appointment, decode_appointment;
    ClockEvent: encode_clock_event, decode_clock_event;
    Driver: encode_driver, decode_driver;
    Vehicle: encode_vehicle, decode_vehicle;
    Pairing: encode_pairing, decode_pairing;
    Office: encode_office, decode_office;
    Contact: encode_contact, decode_contact;
    SinkResult: encode_result, decode_result;
    Route: encode_route, decode_route;
}

fn decode_identical<T: AvroRecord>(reader: &Reader, datum: &[u8]) -> Result<(String, T), CodecError> {
    if let Some(r) = T::read_datum(datum) {
        return r;
    }
    T::from_value(read_datum(&reader.schema, &reader.names, datum)?)
}

#[cfg(test)]
mod tests;
