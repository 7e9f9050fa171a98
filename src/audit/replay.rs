//! Re-deriving decisions: the processor's two stages for every tenant, fed
//! the input in the processor's order ([`super::input`]), in one thread.
//!
//! Stage one ([`Role::Appointments`]) takes every input but pings; the
//! routes it decides go to the stage-two engine ([`Role::Vehicles`]) of the
//! partition the processor's producer puts them on
//! ([`super::input::partition_of`] of `tenant/vehicle`); a ping goes to the
//! engine of the partition it was read from. So a technician whose vehicles
//! sit on two partitions is judged per partition, as the processor judges
//! them (the documented limit of keying stage two by vehicle), and the
//! replay re-derives what the processor derived rather than what the
//! one-stage engine would. Pure: no Kafka, no clock.

use rustc_hash::FxHashMap;

use super::input::{partition_of, Input, PingInput, Position};
use crate::engine::{Command, Engine, EngineError, Event, Role};
use crate::model::Settings;
use crate::processor::Tenants;

/// A command the replay derived, with the input record that caused it.
#[derive(Debug, Clone, PartialEq)]
pub struct Derived {
    /// Index into [`Replay::tenant`].
    pub tenant: usize,
    pub command: Command,
    pub at: Position,
}

/// One tenant's engines.
struct Stages {
    name: String,
    one: Engine,
    /// One per pings partition.
    two: Vec<Engine>,
}

/// The processor's stages for every tenant seen so far.
pub struct Replay {
    tenants: Tenants,
    partitions: i32,
    stages: Vec<Stages>,
    index: FxHashMap<String, usize>,
    /// The tenant of the previous ping (pings come in runs of a tenant).
    last: Option<(compact_str::CompactString, usize)>,
    /// Reused for each ping's commands (almost always none).
    scratch: Vec<Command>,
    /// Input the engine refused (the processor dead-letters it as `rejected`).
    pub rejected: u64,
}

impl Replay {
    /// Engines with each tenant's settings from `tenants`, stage two over
    /// `partitions` partitions (the pings topic's).
    pub fn new(tenants: Tenants, partitions: i32) -> Result<Replay, EngineError> {
        // Fail now rather than on a tenant's first record.
        Engine::new("check", tenants.default.clone())?;
        for s in tenants.tenants.values() {
            Engine::new("check", s.clone())?;
        }
        Ok(Replay {
            tenants,
            partitions: partitions.max(1),
            stages: Vec::new(),
            index: FxHashMap::default(),
            last: None,
            scratch: Vec::new(),
            rejected: 0,
        })
    }

    /// A tenant's name by its index in [`Derived::tenant`].
    pub fn tenant(&self, index: usize) -> &str {
        &self.stages[index].name
    }

    /// The settings the replay judges `tenant` by.
    pub fn settings(&self, tenant: &str) -> Settings {
        self.tenants.settings(tenant)
    }

    /// The tenant's engines, made on its first record (the settings were
    /// validated in [`Replay::new`], so this does not fail in practice).
    fn stages(&mut self, tenant: &str) -> Result<usize, EngineError> {
        if let Some(i) = self.index.get(tenant) {
            return Ok(*i);
        }
        let settings = self.tenants.settings(tenant);
        let engine = |role| -> Result<Engine, EngineError> {
            let mut e = Engine::new(tenant, settings.clone())?;
            e.set_role(role);
            Ok(e)
        };
        let stages = Stages {
            name: tenant.to_string(),
            one: engine(Role::Appointments)?,
            two: (0..self.partitions).map(|_| engine(Role::Vehicles)).collect::<Result<_, _>>()?,
        };
        self.stages.push(stages);
        self.index.insert(tenant.to_string(), self.stages.len() - 1);
        Ok(self.stages.len() - 1)
    }

    /// Stage one's input (anything but a ping), then stage two's reaction
    /// to the routes it decided.
    pub fn input(&mut self, input: &Input, out: &mut Vec<Derived>) {
        if let Event::Ping(p) = &input.event {
            let ping = PingInput { at: input.at, tenant: input.tenant.as_str().into(), ping: p.clone() };
            return self.ping(ping, out);
        }
        let Ok(t) = self.stages(&input.tenant) else {
            self.rejected += 1;
            return;
        };
        let mut commands = Vec::new();
        let n = self.partitions;
        let s = &mut self.stages[t];
        if s.one.handle(&input.event, &mut commands).is_err() {
            self.rejected += 1;
            return;
        }
        for route in s.one.drain_routes() {
            let mut key = Vec::with_capacity(s.name.len() + 1 + route.vehicle.as_str().len());
            key.extend_from_slice(s.name.as_bytes());
            key.push(b'/');
            key.extend_from_slice(route.vehicle.as_str().as_bytes());
            let q = partition_of(&key, n) as usize;
            // Stage two takes every route.
            let _ = s.two[q].handle(&Event::Route(route), &mut commands);
        }
        out.extend(commands.into_iter().map(|command| Derived { tenant: t, command, at: input.at }));
    }

    /// A ping, to stage two of the partition it was read from.
    pub fn ping(&mut self, p: PingInput, out: &mut Vec<Derived>) {
        let cached = self.last.as_ref().filter(|(name, _)| *name == p.tenant).map(|(_, t)| *t);
        let t = match cached {
            Some(t) => t,
            None => match self.stages(&p.tenant) {
                Ok(t) => {
                    self.last = Some((p.tenant.clone(), t));
                    t
                }
                Err(_) => {
                    self.rejected += 1;
                    return;
                }
            },
        };
        let two = &mut self.stages[t].two;
        let n = two.len() as i32;
        let engine = &mut two[p.at.partition.rem_euclid(n) as usize];
        let mut commands = std::mem::take(&mut self.scratch);
        match engine.handle(&Event::Ping(p.ping), &mut commands) {
            Ok(()) => out.extend(commands.drain(..).map(|command| Derived { tenant: t, command, at: p.at })),
            Err(_) => self.rejected += 1,
        }
        self.scratch = commands;
    }

    /// Every tenant's stage-one engine, having absorbed what its stage-two
    /// engines learned (the Activity Report's view, as [`crate::report::state`]
    /// builds it from the processor's tasks).
    pub fn into_engines(self) -> Vec<Engine> {
        self.stages
            .into_iter()
            .map(|mut s| {
                for two in &s.two {
                    s.one.absorb_assignments(two);
                }
                s.one
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::route::run_split;
    use crate::scenario::Scenario;

    fn positions(events: &[Event]) -> Vec<Input> {
        events
            .iter()
            .enumerate()
            .map(|(i, e)| Input {
                at: Position { time: i as i64, class: 1, partition: 0, offset: i as i64 },
                tenant: "acme".into(),
                event: e.clone(),
            })
            .collect()
    }

    #[test]
    fn the_replay_decides_what_the_split_engine_decides_for_every_scenario() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
        let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.retain(|p| p.extension().is_some_and(|x| x == "yaml"));
        files.sort();
        assert!(files.len() >= 20);
        for file in files {
            let s = Scenario::load(&file).unwrap();
            let mut s = s;
            s.tenant = "acme".into();
            let events = s.all_events();
            let tenants = Tenants { tenants: [("acme".to_string(), s.settings.clone())].into(), ..Tenants::default() };
            for partitions in [1, 3] {
                let key = |v: &crate::model::Id| partition_of(format!("acme/{v}").as_bytes(), partitions) as usize;
                let (_, _, expected) = run_split("acme", &s.settings, &events, partitions as usize, key).unwrap();
                let mut replay = Replay::new(tenants.clone(), partitions).unwrap();
                let mut out = Vec::new();
                for mut input in positions(&events) {
                    if let Event::Ping(p) = &input.event {
                        input.at.partition = partition_of(format!("acme/{}", p.vehicle).as_bytes(), partitions);
                    }
                    replay.input(&input, &mut out);
                }
                let got: Vec<Command> = out.into_iter().map(|d| d.command).collect();
                assert_eq!(got, expected, "{} on {partitions} partitions", file.display());
            }
        }
    }
}
