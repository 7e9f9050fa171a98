//! Scenario files: a tenant's entities and a sequence of events in YAML, run
//! through the engine, giving `{"commands": [...], "report": [...]}`.
//!
//! The file format is a public contract (see README and `tests/scenarios/`).
//! Entities under `servicetrade` and `azuga` are fed first, in the order
//! users, offices, contacts, locations, jobs, drivers, vehicles, pairings,
//! appointments; then
//! `events` in the order written. Unknown keys are errors, so a typo never
//! silently changes a scenario.

pub mod generate;
pub mod kafka;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::engine::{Command, Engine, EngineError, Event};
use crate::model::{Appointment, Contact, Driver, Job, Location, Office, Pairing, Settings, User, Vehicle};
use crate::report::{rows, ReportRow};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default = "default_tenant")]
    pub tenant: String,
    #[serde(default)]
    pub settings: Settings,
    #[serde(default)]
    pub servicetrade: ServiceTrade,
    #[serde(default)]
    pub azuga: Azuga,
    /// Each event is a one-key map: `- ping: {...}`.
    #[serde(default)]
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceTrade {
    #[serde(default)]
    pub users: Vec<User>,
    /// The account's offices (ServiceTrade vendor locations).
    #[serde(default)]
    pub offices: Vec<Office>,
    /// Contacts at customer locations (a location's `primary_contact`).
    #[serde(default)]
    pub contacts: Vec<Contact>,
    #[serde(default)]
    pub locations: Vec<Location>,
    #[serde(default)]
    pub jobs: Vec<Job>,
    #[serde(default)]
    pub appointments: Vec<Appointment>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Azuga {
    #[serde(default)]
    pub drivers: Vec<Driver>,
    #[serde(default)]
    pub vehicles: Vec<Vehicle>,
    #[serde(default)]
    pub pairings: Vec<Pairing>,
}

fn default_tenant() -> String {
    "default".to_string()
}

/// The result of a run, as printed.
#[derive(Debug, Clone, Serialize)]
pub struct Output {
    pub commands: Vec<Command>,
    pub report: Vec<ReportRow>,
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("malformed scenario {path}: {error}")]
    Parse { path: String, error: crate::config::yaml::YamlError },
    #[error(transparent)]
    Engine(EngineError),
    #[error("via kafka: {0}")]
    Kafka(String),
    #[error("event #{index} ({kind}) rejected: {source}")]
    Event { index: usize, kind: &'static str, source: EngineError },
}

impl Scenario {
    pub fn from_yaml(text: &str, path: &str) -> Result<Scenario, ScenarioError> {
        crate::config::yaml::from_str(text).map_err(|error| ScenarioError::Parse { path: path.to_string(), error })
    }

    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ScenarioError::Read { path: name.clone(), error })?;
        Scenario::from_yaml(&text, &name)
    }

    /// The whole input as engine events: entities first, then `events`.
    pub fn all_events(&self) -> Vec<Event> {
        let st = &self.servicetrade;
        let az = &self.azuga;
        st.users
            .iter()
            .cloned()
            .map(Event::User)
            .chain(st.offices.iter().cloned().map(Event::Office))
            .chain(st.contacts.iter().cloned().map(Event::Contact))
            .chain(st.locations.iter().cloned().map(Event::Location))
            .chain(st.jobs.iter().cloned().map(Event::Job))
            .chain(az.drivers.iter().cloned().map(Event::Driver))
            .chain(az.vehicles.iter().cloned().map(Event::Vehicle))
            .chain(az.pairings.iter().cloned().map(Event::Pairing))
            .chain(st.appointments.iter().cloned().map(Event::Appointment))
            .chain(self.events.iter().cloned())
            .collect()
    }

    /// Runs the scenario through a fresh engine.
    pub fn run(&self) -> Result<Output, ScenarioError> {
        let mut engine = Engine::new(self.tenant.clone(), self.settings.clone()).map_err(ScenarioError::Engine)?;
        let mut commands = Vec::new();
        for (index, event) in self.all_events().iter().enumerate() {
            engine.handle(event, &mut commands).map_err(|source| ScenarioError::Event {
                index,
                kind: event.kind(),
                source,
            })?;
        }
        Ok(Output { commands, report: rows(&engine) })
    }
}

impl Output {
    /// The JSON printed by `geoclock scenario run`: one object, stable bytes.
    pub fn to_json(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}
