//! What the engine consumes.

use serde::{Deserialize, Serialize};

use super::timeline::{ClockLine, Interval};
use crate::geo::Shape;
use crate::model::{
    Appointment, ClockEvent, Contact, Driver, Id, Job, Location, Office, Pairing, Ping, Ts, User, Vehicle,
};

/// One input to the engine, for one tenant. Entity variants are upserts
/// (the whole current record); `Delete` removes one; `Tick` advances event
/// time for expiry (pings do not, so that a vehicle's buffered points never
/// expire another appointment's fence).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    User(User),
    Location(Location),
    Job(Job),
    Appointment(Appointment),
    Driver(Driver),
    Vehicle(Vehicle),
    Pairing(Pairing),
    Office(Office),
    Contact(Contact),
    Clock(ClockEvent),
    Ping(Ping),
    Delete(EntityRef),
    Tick(Ts),
    /// A fence route from stage one (input of stage two only; see the `route` module).
    Route(Route),
}

/// Names an entity to delete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityRef {
    User(Id),
    Location(Id),
    Job(Id),
    Appointment(Id),
    Driver(Id),
    Vehicle(Id),
    Pairing { driver: Id, vehicle: Id, from: Ts },
    Office(Id),
    Contact(Id),
}

impl Event {
    /// A short stable name for logs and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::User(_) => "user",
            Event::Location(_) => "location",
            Event::Job(_) => "job",
            Event::Appointment(_) => "appointment",
            Event::Driver(_) => "driver",
            Event::Vehicle(_) => "vehicle",
            Event::Pairing(_) => "pairing",
            Event::Office(_) => "office",
            Event::Contact(_) => "contact",
            Event::Clock(_) => "clock",
            Event::Ping(_) => "ping",
            Event::Delete(_) => "delete",
            Event::Tick(_) => "tick",
            Event::Route(_) => "route",
        }
    }
}

/// One appointment's routing to one vehicle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub vehicle: Id,
    pub appointment: Id,
    /// The appointment's generation (an appointment revived after retirement is a new one).
    pub generation: u32,
    /// Counts the appointment's watches routes within its generation.
    pub seq: u64,
    pub body: RouteBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RouteBody {
    /// The appointment's watches on the vehicle, replacing earlier ones;
    /// none: the vehicle no longer watches for it. `retired`: retention
    /// retired the appointment; stage two forgets it.
    Watches {
        shape: Option<Shape>,
        watches: Vec<RouteWatch>,
        #[serde(default)]
        retired: bool,
    },
    /// A technician's clock lines changed.
    Clock { user: Id, enroute: ClockLine, onsite: ClockLine },
}

/// One technician's watch, as stage two needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteWatch {
    pub user: Id,
    pub earliest: Ts,
    pub latest: Ts,
    pub paired: Vec<Interval>,
    pub enroute: ClockLine,
    pub onsite: ClockLine,
}
