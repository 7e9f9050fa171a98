//! The vocabulary shared by every part of geoclock: identifiers, event time,
//! the mirrored vendor entities and a tenant's settings.
//!
//! Invariants:
//! - Identifiers compare by their text: `11` and `"11"` are the same id, so a
//!   ServiceTrade user id sent as a number matches the same id sent as a
//!   string. Output keeps the form an id first arrived in.
//! - Time is UTC milliseconds since the Unix epoch ([`Ts`]); nothing in the
//!   model reads the wall clock.

mod entities;
mod id;
mod map_settings;
mod settings;
mod time;

pub use entities::{
    normalize_email, valid_email, Activity, Appointment, AppointmentStatus, ClockAction, ClockEvent, Contact, Driver,
    Job, Location, Office, Pairing, Ping, User, Vehicle,
};
pub use id::Id;
pub use map_settings::{MapSettings, MapSettingsError};
pub use settings::{Settings, SettingsError};
pub use time::{Ts, TsError};
