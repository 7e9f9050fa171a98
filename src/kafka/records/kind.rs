//! What every record module and the codec share: the record types (with
//! their schema files, topics and subjects) and the one codec error. They
//! live here, below the codec, so that the codec uses the records and
//! nothing here uses the codec.

use crate::kafka::registry::RegistryError;
use crate::kafka::topics::{Catalogue, Topic};

/// Why a record could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecError {
    #[error("framing: {0}")]
    Framing(String),
    #[error("unknown schema id {0}: not in the schema registry")]
    UnknownSchema(u32),
    #[error("undecodable datum: {0}")]
    Decode(String),
    #[error("invalid value: {0}")]
    InvalidValue(String),
    #[error("cannot encode: {0}")]
    Encode(String),
    #[error(transparent)]
    Registry(RegistryError),
}

impl CodecError {
    /// The class, as the dead-letter record's `kind`: `framing`,
    /// `unknown_schema`, `decode`, `invalid_value`; and `encode`,
    /// `registry`, which are never dead-lettered.
    pub fn kind(&self) -> &'static str {
        match self {
            CodecError::Framing(_) => "framing",
            CodecError::UnknownSchema(_) => "unknown_schema",
            CodecError::Decode(_) => "decode",
            CodecError::InvalidValue(_) => "invalid_value",
            CodecError::Encode(_) => "encode",
            CodecError::Registry(_) => "registry",
        }
    }

    /// The record itself is bad (it will never decode): dead-letter it and
    /// move on. `false` for registry failures, which are worth retrying.
    pub fn is_poison(&self) -> bool {
        matches!(
            self,
            CodecError::Framing(_) | CodecError::UnknownSchema(_) | CodecError::Decode(_) | CodecError::InvalidValue(_)
        )
    }
}

impl From<RegistryError> for CodecError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NotFound(id) => CodecError::UnknownSchema(id),
            other => CodecError::Registry(other),
        }
    }
}

/// Every record type, with its schema file and topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordType {
    User,
    Location,
    Job,
    Appointment,
    ClockEvent,
    Driver,
    Vehicle,
    Pairing,
    Ping,
    Command,
    DeadLetter,
    Tick,
    SinkResult,
    Route,
    RouteProgress,
    Office,
    Contact,
}

impl RecordType {
    /// In declaration order (the codec indexes by it). A topic's main record
    /// type comes before any other it carries ([`RecordType::for_topic`]).
    pub const ALL: [RecordType; 17] = [
        RecordType::User,
        RecordType::Location,
        RecordType::Job,
        RecordType::Appointment,
        RecordType::ClockEvent,
        RecordType::Driver,
        RecordType::Vehicle,
        RecordType::Pairing,
        RecordType::Ping,
        RecordType::Command,
        RecordType::DeadLetter,
        RecordType::Tick,
        RecordType::SinkResult,
        RecordType::Route,
        RecordType::RouteProgress,
        RecordType::Office,
        RecordType::Contact,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The topic that carries this record.
    pub fn topic(self) -> Topic {
        match self {
            RecordType::User => Topic::Users,
            RecordType::Location => Topic::Locations,
            RecordType::Job => Topic::Jobs,
            RecordType::Appointment => Topic::Appointments,
            RecordType::ClockEvent => Topic::ClockEvents,
            RecordType::Driver => Topic::Drivers,
            RecordType::Vehicle => Topic::Vehicles,
            RecordType::Pairing => Topic::Pairings,
            RecordType::Ping => Topic::Pings,
            RecordType::Command => Topic::Commands,
            RecordType::DeadLetter => Topic::DeadLetters,
            RecordType::Tick => Topic::Ticks,
            RecordType::SinkResult => Topic::Results,
            RecordType::Route | RecordType::RouteProgress => Topic::FenceRoutes,
            RecordType::Office => Topic::Offices,
            RecordType::Contact => Topic::Contacts,
        }
    }

    /// The record type a topic carries, if it carries one of these; the
    /// main one for a topic that carries several (the fence routes topic:
    /// [`RecordType::Route`]; its progress records are told apart by their
    /// key, [`super::ROUTE_PROGRESS_KEY`]).
    pub fn for_topic(topic: Topic) -> Option<RecordType> {
        RecordType::ALL.into_iter().find(|r| r.topic() == topic)
    }

    /// The schema registry subject: `{topic}-value` (Confluent's
    /// TopicNameStrategy) for a topic's main record type, and
    /// `{topic}-{full name}` (TopicRecordNameStrategy) for another record
    /// type on the same topic, so that each subject holds the versions of
    /// one record type.
    pub fn subject(self, catalogue: &Catalogue) -> String {
        let topic = catalogue.name(self.topic());
        if RecordType::for_topic(self.topic()) == Some(self) {
            format!("{topic}-value")
        } else {
            format!("{topic}-{}", self.full_name())
        }
    }

    /// The schema file's text (`schemas/*.avsc`).
    pub fn schema_json(self) -> &'static str {
        match self {
            RecordType::User => include_str!("../../../schemas/user.avsc"),
            RecordType::Location => include_str!("../../../schemas/location.avsc"),
            RecordType::Job => include_str!("../../../schemas/job.avsc"),
            RecordType::Appointment => include_str!("../../../schemas/appointment.avsc"),
            RecordType::ClockEvent => include_str!("../../../schemas/clock_event.avsc"),
            RecordType::Driver => include_str!("../../../schemas/driver.avsc"),
            RecordType::Vehicle => include_str!("../../../schemas/vehicle.avsc"),
            RecordType::Pairing => include_str!("../../../schemas/pairing.avsc"),
            RecordType::Ping => include_str!("../../../schemas/ping.avsc"),
            RecordType::Command => include_str!("../../../schemas/command.avsc"),
            RecordType::DeadLetter => include_str!("../../../schemas/dead_letter.avsc"),
            RecordType::Tick => include_str!("../../../schemas/tick.avsc"),
            RecordType::SinkResult => include_str!("../../../schemas/sink_result.avsc"),
            RecordType::Route => include_str!("../../../schemas/route.avsc"),
            RecordType::RouteProgress => include_str!("../../../schemas/route_progress.avsc"),
            RecordType::Office => include_str!("../../../schemas/office.avsc"),
            RecordType::Contact => include_str!("../../../schemas/contact.avsc"),
        }
    }

    /// The record's full name (`io.geoclock.v1.Ping`).
    pub fn full_name(self) -> &'static str {
        match self {
            RecordType::User => "io.geoclock.v1.User",
            RecordType::Location => "io.geoclock.v1.Location",
            RecordType::Job => "io.geoclock.v1.Job",
            RecordType::Appointment => "io.geoclock.v1.Appointment",
            RecordType::ClockEvent => "io.geoclock.v1.ClockEvent",
            RecordType::Driver => "io.geoclock.v1.Driver",
            RecordType::Vehicle => "io.geoclock.v1.Vehicle",
            RecordType::Pairing => "io.geoclock.v1.Pairing",
            RecordType::Ping => "io.geoclock.v1.Ping",
            RecordType::Command => "io.geoclock.v1.Command",
            RecordType::DeadLetter => "io.geoclock.v1.DeadLetter",
            RecordType::Tick => "io.geoclock.v1.Tick",
            RecordType::SinkResult => "io.geoclock.v1.SinkResult",
            RecordType::Route => "io.geoclock.v1.Route",
            RecordType::RouteProgress => "io.geoclock.v1.RouteProgress",
            RecordType::Office => "io.geoclock.v1.Office",
            RecordType::Contact => "io.geoclock.v1.Contact",
        }
    }
}
