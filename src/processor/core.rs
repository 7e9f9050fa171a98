//! The pure core of one task: the merge, the gate, the engine calls and
//! the assembly of each batch (output records, replay plan, state rows),
//! synchronous, over a [`StateStore`]. No Kafka client, no RocksDB, no
//! clock: the driver ([`super::task`]) feeds it fetched records and high
//! watermarks, asks it to process what may leave, hands each batch it
//! assembles to the committer ([`super::commit`]), and pauses or resumes
//! the inputs it names. Tests drive it with an in-memory store
//! ([`crate::store::memory::MemoryStore`]) and hand-made records.
//!
//! Invariants (the task-level ones, with the crash argument, are in
//! [`super::task`] and [`crate::store`]):
//! - Records are processed in the merge's order ([`super::merge`]), except
//!   while a batch cut short by a crash is re-processed: then in its
//!   recorded order ([`Plan`]), and that batch is committed at exactly its
//!   recorded end.
//! - A record whose writer schema the registry cannot serve yet is left
//!   where it is ([`Step::Blocked`]): records of a partition are processed
//!   in order, so the task waits rather than dead-letters it.
//! - A record of a tenant the tenants file does not list creates no engine
//!   and goes to the dead letters (`unknown_tenant`), as do malformed
//!   records and records the engine rejects; each is dead-lettered by the
//!   task that owns its partition (global inputs: stage-one task 0).
//! - Memory is bounded: while the merge holds more than
//!   `max_buffered_bytes` (a sixteenth of it while only stage two's gate
//!   keeps its records from leaving), every input with records waiting in
//!   it is paused ([`TaskCore::flow`]) until it has none left or the merge
//!   is below half the bound; the inputs the merge waits for keep flowing.
//!   Stage two's routes input is never paused: it carries the progress that
//!   opens the gate.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::batch::{BatchOut, Decided, OutRecord, Plan};
use super::gate::Gate;
use super::merge::{Body, Merger, Record};
use super::tenants::Tenants;
use crate::engine::{Command, Engine, Event, Route};
use crate::kafka::codec::{Codec, CodecError};
use crate::kafka::records::{command_key_id, DeadLetter, RouteProgress, TenantEvent, ROUTE_PROGRESS_KEY};
use crate::kafka::topics::{self, Catalogue, Topic};
use crate::store::layout::{row_prefix, Stage};
use crate::store::{changelog, Batch, StateStore, StoreError};

/// The entity topics every appointment-stage task reads in full (global
/// tables: they are keyed by their own ids, not by appointment).
pub const GLOBAL_INPUTS: [Topic; 8] = [
    Topic::Users,
    Topic::Locations,
    Topic::Jobs,
    Topic::Drivers,
    Topic::Vehicles,
    Topic::Pairings,
    Topic::Offices,
    Topic::Contacts,
];

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("encode: {0}")]
    Encode(String),
    #[error("state of partition {partition}: {error}")]
    State { partition: i32, error: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One input partition of a task.
#[derive(Debug, Clone)]
pub struct Input {
    pub topic: Topic,
    pub name: String,
    pub partition: i32,
    /// This task dead-letters the input's malformed records.
    pub owned: bool,
    /// Merge lanes: one, or (stage two's routes) one per stage-one task,
    /// chosen by the [`SOURCE_HEADER`](super::batch::SOURCE_HEADER) of a route and the task of a
    /// progress record.
    pub lanes: usize,
}

impl Input {
    /// Task `(stage, p)`'s inputs: its own partitions first, then the
    /// global ones, every partition of each (`partitions` says how many; a
    /// global input's malformed records are dead-lettered by task 0 only).
    /// At equal record time the merge takes the earlier input first.
    pub fn for_stage<E>(
        stage: Stage,
        p: i32,
        catalogue: &Catalogue,
        mut partitions: impl FnMut(Topic, &str) -> Result<i32, E>,
    ) -> Result<Vec<Input>, E> {
        let lanes = |t: Topic| if t == Topic::FenceRoutes { catalogue.partitions.max(1) as usize } else { 1 };
        let own = |t: Topic| Input { topic: t, name: catalogue.name(t), partition: p, owned: true, lanes: lanes(t) };
        let (mut out, global): (Vec<Input>, Vec<Topic>) = match stage {
            Stage::Appointments => (
                vec![own(Topic::Appointments), own(Topic::ClockEvents)],
                GLOBAL_INPUTS.into_iter().chain([Topic::Ticks]).collect(),
            ),
            Stage::Vehicles => (vec![own(Topic::Pings), own(Topic::FenceRoutes)], Vec::new()),
        };
        for t in global {
            let name = catalogue.name(t);
            for q in 0..partitions(t, &name)? {
                out.push(Input { topic: t, name: name.clone(), partition: q, owned: p == 0, lanes: 1 });
            }
        }
        Ok(out)
    }
}

/// One record as fetched (borrowed from the consumer).
#[derive(Debug, Clone, Copy)]
pub struct Fetched<'a> {
    pub input: usize,
    pub offset: i64,
    /// Record time (ms).
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The [`SOURCE_HEADER`](super::batch::SOURCE_HEADER) (inputs with several lanes only).
    pub source: Option<i32>,
}

/// What [`TaskCore::step`] stopped at.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing more may leave the merge until more is fetched.
    Waiting,
    /// The batch is full, or a replayed batch reached its recorded end:
    /// commit it now.
    Commit,
    /// The next record's writer schema cannot be had yet (registry
    /// trouble): wait and try again; the record stays first in line.
    Blocked(CodecError),
}

/// Everything the core needs to start.
pub struct Setup<'a> {
    pub stage: Stage,
    pub p: i32,
    pub inputs: Vec<Input>,
    pub catalogue: &'a Catalogue,
    pub codec: Arc<Codec>,
    pub tenants: Arc<Tenants>,
    pub batch_records: usize,
    pub max_buffered_bytes: usize,
    /// Stage two: the routes partition's end when the task started ([`Gate`]).
    pub fresh_from: i64,
    /// The plan of a batch the changelog holds begun but not finished.
    pub incomplete: Option<Vec<u8>>,
}

/// The task's state between two calls from the driver.
pub struct TaskCore {
    stage: Stage,
    p: i32,
    name: String,
    inputs: Vec<Input>,
    codec: Arc<Codec>,
    tenants: Arc<Tenants>,
    batch_records: usize,
    max_bytes: usize,
    /// Output topic names.
    commands_topic: String,
    routes_topic: String,
    dead_topic: String,
    partitions: i32,
    engines: BTreeMap<String, Engine>,
    merger: Merger,
    gate: Gate,
    /// Per input: a record of it may leave only up to the gate's limit.
    gated: Vec<bool>,
    paused: Vec<bool>,
    /// `(tenant, command, input record time, emission sequence)`.
    commands: Vec<(String, Command, i64, u64)>,
    /// Stage one: `(tenant, route, input record time)`.
    routes: Vec<(String, Route, i64)>,
    /// Stage one: the latest record time processed.
    through: i64,
    seq: u64,
    dead: Vec<DeadLetter>,
    pending: usize,
    /// Of `pending`, stage one's progress records: their only effect (the
    /// gate) is in memory and rebuilt from the routes partition, so they
    /// are committed lazily and do not make the task busy.
    pending_progress: usize,
    /// Records processed since the start.
    processed: u64,
    /// Records processed per input since the last batch.
    counted: Vec<u64>,
    /// The order of this batch's records: `(lane number, run length)`.
    order: Vec<(u32, u32)>,
    /// A batch cut short by a crash, being re-processed in its recorded order.
    replay: Option<Plan>,
    /// The input of the previous record fetched (records come in runs).
    last_input: usize,
}

/// The name a lane's position is stored under (per task, as global inputs
/// are read by several tasks; per lane where an input has several).
fn offset_name(stage: Stage, p: i32, input: &Input, lane: usize) -> String {
    match input.lanes {
        1 => format!("{}{}", row_prefix(stage, p), input.name),
        _ => format!("{}{}@{lane}", row_prefix(stage, p), input.name),
    }
}

/// While the gate holds the pings back, this share of the bound is held.
const GATED_SHARE: usize = 16;

/// The raw record's key and value, for a dead letter.
type Raw = (Option<Vec<u8>>, Option<Vec<u8>>);

impl TaskCore {
    /// The core of task `(stage, p)`, its engines rebuilt from the rows in
    /// `store` and its inputs positioned at the offsets stored with them.
    pub fn new(setup: Setup<'_>, store: &dyn StateStore) -> Result<TaskCore, CoreError> {
        let Setup { stage, p, inputs, catalogue, codec, tenants, batch_records, max_buffered_bytes, .. } = setup;
        let engines = load_engines(stage, p, &tenants, store)?;
        let mut starts = Vec::with_capacity(inputs.len());
        for i in &inputs {
            let mut lanes = Vec::with_capacity(i.lanes);
            for lane in 0..i.lanes {
                lanes.push(store.offset(&offset_name(stage, p, i, lane), i.partition)?.unwrap_or(0));
            }
            starts.push(lanes);
        }
        let partitions = catalogue.partitions.max(1);
        let gated = inputs.iter().map(|i| stage == Stage::Vehicles && i.topic != Topic::FenceRoutes).collect();
        let mut core = TaskCore {
            stage,
            p,
            name: stage.task(p),
            codec,
            tenants,
            batch_records: batch_records.max(1),
            max_bytes: max_buffered_bytes.max(1),
            commands_topic: catalogue.name(Topic::Commands),
            routes_topic: catalogue.name(Topic::FenceRoutes),
            dead_topic: catalogue.name(Topic::DeadLetters),
            partitions,
            engines,
            merger: Merger::with_lanes(&starts),
            gate: Gate::new(partitions as usize, setup.fresh_from),
            gated,
            paused: vec![false; inputs.len()],
            commands: Vec::new(),
            routes: Vec::new(),
            through: i64::MIN,
            seq: stage.seq_base(),
            dead: Vec::new(),
            pending: 0,
            pending_progress: 0,
            processed: 0,
            counted: vec![0; inputs.len()],
            order: Vec::new(),
            replay: None,
            last_input: 0,
            inputs,
        };
        if let Some(bytes) = setup.incomplete {
            match serde_json::from_slice::<Plan>(&bytes) {
                Ok(plan) if plan.ends.len() == core.merger.lanes().count() => {
                    let records: u64 = plan.order.iter().map(|o| o.1 as u64).sum();
                    tracing::warn!(task = %core.name, records, "re-processing a batch cut short, in its recorded order");
                    core.replay = Some(plan);
                }
                Ok(_) => tracing::error!(
                    task = %core.name,
                    "batch plan does not match the inputs (topics repartitioned?): processing afresh"
                ),
                Err(e) => tracing::error!(task = %core.name, error = %e, "unreadable batch plan: processing afresh"),
            }
        }
        Ok(core)
    }

    pub fn inputs(&self) -> &[Input] {
        &self.inputs
    }

    /// Where each input is fetched from: its lowest lane position.
    pub fn fetch_starts(&self) -> Vec<i64> {
        let mut starts = vec![i64::MAX; self.inputs.len()];
        for ((i, _), pos) in self.merger.lanes().zip(self.merger.positions()) {
            starts[i] = starts[i].min(pos);
        }
        starts
    }

    /// The input a fetched record of `topic`/`partition` belongs to.
    pub fn input_of(&mut self, topic: &str, partition: i32) -> Option<usize> {
        let last = self.last_input;
        if self.inputs.get(last).is_some_and(|i| i.partition == partition && i.name == topic) {
            return Some(last);
        }
        let found = self.inputs.iter().position(|i| i.partition == partition && i.name == topic)?;
        self.last_input = found;
        Some(found)
    }

    /// Whether records of `input` carry a merge lane in [`SOURCE_HEADER`](super::batch::SOURCE_HEADER).
    pub fn wants_source(&self, input: usize) -> bool {
        self.inputs.get(input).is_some_and(|i| i.lanes > 1)
    }

    fn is_progress(&self, input: usize, key: Option<&[u8]>) -> bool {
        key == Some(ROUTE_PROGRESS_KEY) && self.inputs[input].topic == Topic::FenceRoutes
    }

    /// Puts a fetched record into the merge (a progress record also moves
    /// the gate; a ping in the current schema is decoded here).
    pub fn push(&mut self, f: Fetched<'_>) {
        let Some(input) = self.inputs.get(f.input) else { return };
        let (mut timestamp, mut source) = (f.timestamp, f.source);
        if self.is_progress(f.input, f.key) {
            // Its task's routes before it in this partition are fetched
            // already (offset order); it holds nothing back in the merge.
            match f.value.map(|v| self.codec.decode_route_progress(v)) {
                Some(Ok(pr)) => {
                    tracing::debug!(task = %self.name, from = pr.task, through = pr.through, offset = f.offset, "route progress");
                    self.gate.update(pr.task, pr.through, f.offset);
                    source = Some(pr.task);
                }
                _ => tracing::warn!(task = %self.name, offset = f.offset, "unreadable route progress record"),
            }
            timestamp = i64::MIN;
        }
        // A record without a readable source (dead-lettered when
        // processed) keeps to lane 0.
        let lanes = input.lanes;
        let lane = source.and_then(|q| usize::try_from(q).ok()).filter(|q| *q < lanes).unwrap_or(0);
        let ping = match (input.topic, f.key, f.value) {
            (Topic::Pings, Some(key), Some(value)) => self.codec.decode_current_ping(key, value),
            _ => None,
        };
        let body = match ping {
            Some((tenant, ping)) => Body::Ping { tenant: tenant.into(), ping },
            None => Body::Raw { key: f.key.map(<[u8]>::to_vec), value: f.value.map(<[u8]>::to_vec) },
        };
        self.merger.push(Record { input: f.input, lane, offset: f.offset, timestamp, body });
    }

    pub fn set_high(&mut self, input: usize, high: i64) {
        self.merger.set_high(input, high);
    }

    /// Processes records while they may leave the merge, up to a full batch.
    pub fn step(&mut self) -> Result<Step, CoreError> {
        loop {
            let (i, l) = match &self.replay {
                Some(plan) => match plan.front() {
                    Some(n) => match self.merger.lane_at(n) {
                        Some(lane) => lane,
                        None => {
                            tracing::error!(task = %self.name, lane = n, "replay plan names no lane: processing afresh");
                            self.replay = None;
                            continue;
                        }
                    },
                    None => {
                        let ends: Vec<i64> = self.merger.handed_out().collect();
                        if self.replay.take().is_some_and(|plan| plan.ends != ends) {
                            tracing::error!(task = %self.name, "replayed batch ended elsewhere than recorded");
                        }
                        return Ok(Step::Commit);
                    }
                },
                None => {
                    let limit = match self.stage {
                        Stage::Appointments => i64::MAX,
                        Stage::Vehicles => self.gate.limit(),
                    };
                    match self.merger.next_before(limit, &self.gated) {
                        Some(lane) => lane,
                        None => return Ok(Step::Waiting),
                    }
                }
            };
            let Some(r) = self.merger.peek_lane(i, l) else { return Ok(Step::Waiting) };
            // Raw records are decoded before they leave the merge, so that
            // one whose schema cannot be had yet stays first in line.
            let decoded = match &r.body {
                Body::Raw { key, value } if !self.is_progress(i, key.as_deref()) => {
                    let topic = self.inputs[i].topic;
                    match self.codec.decode_event(topic, key.as_deref().unwrap_or_default(), value.as_deref()) {
                        Err(e) if !e.is_poison() => return Ok(Step::Blocked(e)),
                        other => Some(other),
                    }
                }
                _ => None,
            };
            let Some(r) = self.merger.pop_lane(i, l) else { return Ok(Step::Waiting) };
            let replaying = match &mut self.replay {
                Some(plan) => {
                    plan.advance();
                    true
                }
                None => false,
            };
            self.process(r, decoded);
            if !replaying && self.pending >= self.batch_records {
                return Ok(Step::Commit);
            }
        }
    }

    fn process(&mut self, r: Record, decoded: Option<Result<TenantEvent, CodecError>>) {
        self.pending += 1;
        self.processed += 1;
        let lane = self.merger.lane_number(r.input, r.lane) as u32;
        match self.order.last_mut() {
            Some(last) if last.0 == lane => last.1 += 1,
            _ => self.order.push((lane, 1)),
        }
        self.counted[r.input] += 1;
        if self.is_progress(r.input, r.key()) {
            self.pending_progress += 1;
            return;
        }
        self.through = self.through.max(r.timestamp);
        let (tenant, event, raw): (compact_str::CompactString, Event, Option<Raw>) = match (r.body, decoded) {
            (Body::Ping { tenant, ping }, _) => (tenant, Event::Ping(ping), None),
            (Body::Raw { key, value }, Some(Ok(te))) => (te.tenant.into(), te.event, Some((key, value))),
            (Body::Raw { key, value }, Some(Err(e))) => {
                let input = &self.inputs[r.input];
                if input.owned {
                    let dl = DeadLetter::for_error(
                        &e,
                        &input.name,
                        input.partition,
                        r.offset,
                        key.as_deref(),
                        value.as_deref(),
                        "processor",
                    );
                    self.dead.push(dl);
                }
                return;
            }
            (Body::Raw { .. }, None) => return,
        };
        if !self.engines.contains_key(tenant.as_str()) {
            let made = match self.tenants.serves(&tenant) {
                true => Engine::new(tenant.to_string(), self.tenants.settings(&tenant)).map_err(|e| e.to_string()),
                false => Err(format!("tenant {tenant:?} is not in the tenants file")),
            };
            match made {
                Ok(mut e) => {
                    e.set_role(self.stage.role());
                    e.track_changes();
                    self.engines.insert(tenant.to_string(), e);
                }
                Err(reason) => {
                    let kind = if self.tenants.serves(&tenant) { "rejected" } else { "unknown_tenant" };
                    self.reject(r.input, r.offset, &tenant, &event, raw, reason, kind);
                    return;
                }
            }
        }
        let Some(engine) = self.engines.get_mut(tenant.as_str()) else { return };
        let mut out = Vec::new();
        let handled = engine.handle(&event, &mut out);
        for route in engine.drain_routes() {
            self.routes.push((tenant.to_string(), route, r.timestamp));
        }
        match handled {
            // Stage one decides only fences and Service Links, stage two
            // only clock changes: each command comes from one task.
            Ok(()) => {
                for c in out {
                    self.seq += 1;
                    self.commands.push((tenant.to_string(), c, r.timestamp, self.seq));
                }
            }
            Err(e) => self.reject(r.input, r.offset, &tenant, &event, raw, e.to_string(), "rejected"),
        }
    }

    /// Dead-letters a record that decoded but is not processed (when this
    /// task owns its partition). A ping decoded when fetched is re-encoded,
    /// which gives its bytes back (it was in the current schema, whose
    /// encoding is canonical).
    #[allow(clippy::too_many_arguments)]
    fn reject(
        &mut self,
        input: usize,
        offset: i64,
        tenant: &str,
        event: &Event,
        raw: Option<Raw>,
        reason: String,
        kind: &str,
    ) {
        let input = &self.inputs[input];
        if !input.owned {
            return;
        }
        let (key, value) = raw.unwrap_or_else(|| match self.codec.encode_event(tenant, event) {
            Ok(enc) => (Some(enc.key), enc.value),
            Err(_) => (None, None),
        });
        self.dead.push(DeadLetter {
            reason,
            kind: kind.into(),
            topic: input.name.clone(),
            partition: input.partition,
            offset,
            key,
            value,
            component: "processor".into(),
        });
    }

    /// The uncommitted records include more than stage one's progress.
    pub fn pending_data(&self) -> bool {
        self.pending > self.pending_progress
    }

    /// Records processed and not yet in a batch.
    pub fn pending(&self) -> usize {
        self.pending
    }

    pub fn replaying(&self) -> bool {
        self.replay.is_some()
    }

    /// Assembles the uncommitted records into a batch (`None`: there are none).
    pub fn take_batch(&mut self) -> Result<Option<BatchOut>, CoreError> {
        if self.pending == 0 {
            return Ok(None);
        }
        let store = self.stage.store();
        let prefix = row_prefix(self.stage, self.p);
        let mut batch = Batch::default();
        for (tenant, engine) in &mut self.engines {
            for (k, v) in engine.drain_rows() {
                let mut key = Vec::with_capacity(prefix.len() + tenant.len() + 1 + k.len());
                key.extend_from_slice(prefix.as_bytes());
                key.extend_from_slice(tenant.as_bytes());
                key.push(b'/');
                key.extend_from_slice(&k);
                batch.writes.push((store, key, v));
            }
        }
        for ((i, lane), next) in self.merger.lanes().zip(self.merger.positions()) {
            let input = &self.inputs[i];
            batch.offset(&offset_name(self.stage, self.p, input, lane), input.partition, next);
        }
        let encode = |e: String| CoreError::Encode(e);
        let mut out: Vec<OutRecord> = Vec::with_capacity(self.commands.len() + self.routes.len() + self.dead.len());
        for (tenant, c, ts, seq) in &self.commands {
            let key = topics::key(tenant, command_key_id(c)).map_err(|e| encode(e.to_string()))?;
            let value = self.codec.encode_command(tenant, c).map_err(|e| encode(e.to_string()))?;
            out.push(OutRecord {
                time: Some(*ts),
                seq: *seq,
                ..OutRecord::new(self.commands_topic.clone(), key, value)
            });
        }
        for (tenant, route, ts) in &self.routes {
            // Keyed like the vehicle's pings, with the same (default)
            // partitioner: the route lands on the vehicle's partition.
            let key = topics::key(tenant, route.vehicle.as_str()).map_err(|e| encode(e.to_string()))?;
            let value = self.codec.encode_route(tenant, route).map_err(|e| encode(e.to_string()))?;
            out.push(OutRecord {
                time: Some(*ts),
                source: Some(self.p),
                ..OutRecord::new(self.routes_topic.clone(), key, value)
            });
        }
        // Sent once this batch's routes are acknowledged (a keyed record
        // may wait for the partitioner while one with an explicit
        // partition goes straight out, so send order is not enough).
        let progress = match self.stage == Stage::Appointments && self.through > i64::MIN {
            true => self.progress_records(self.through)?,
            false => Vec::new(),
        };
        for d in &self.dead {
            let key = format!("{}/{}/{}", d.topic, d.partition, d.offset).into_bytes();
            let value = self.codec.encode_dead_letter(d).map_err(|e| encode(e.to_string()))?;
            out.push(OutRecord::new(self.dead_topic.clone(), key, value));
        }
        let plan = Plan { ends: self.merger.handed_out().collect(), order: std::mem::take(&mut self.order) };
        let begin = vec![changelog::begin_record(serde_json::to_vec(&plan).unwrap_or_default())];
        let records = changelog::records(store, &batch);
        let counted = self
            .inputs
            .iter()
            .zip(self.counted.iter_mut())
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| (i.topic.suffix(), std::mem::take(n)))
            .collect();
        let sum = |f: fn(&crate::engine::state::State) -> usize| self.engines.values().map(|e| f(e.state())).sum();
        let appointments = sum(|st| st.appointments.len() + st.routed.len());
        let sizes = [
            ("appointments", sum(|st| st.appointments.len())),
            ("routed", sum(|st| st.routed.len())),
            ("retired", sum(|st| st.retired.len())),
            ("undated", sum(|st| st.undated.len())),
        ];
        let decided = self
            .commands
            .iter()
            .map(|(tenant, c, record_ms, _)| {
                let clock = match &c.action {
                    crate::engine::Action::Clock(k) => Some(k),
                    _ => None,
                };
                Decided {
                    tenant: tenant.clone(),
                    kind: c.action.kind(),
                    record_ms: *record_ms,
                    clock_ms: clock.map(|k| k.time.millis()),
                    arrival: clock.is_some_and(|k| {
                        k.cause == crate::engine::ClockCause::Arrival && k.activity == crate::model::Activity::Onsite
                    }),
                }
            })
            .collect();
        let done = BatchOut {
            decided,
            begin,
            out,
            progress,
            records,
            batch,
            commands: self.commands.len(),
            dead_letters: self.dead.len(),
            counted,
            data: self.pending_data(),
            appointments,
            sizes,
        };
        self.commands.clear();
        self.routes.clear();
        self.dead.clear();
        self.pending = 0;
        self.pending_progress = 0;
        Ok(Some(done))
    }

    /// Stage one: one progress record per routes partition, saying every
    /// route caused by input up to record time `through` is produced
    /// (`i64::MAX`: caught up).
    pub fn progress_records(&self, through: i64) -> Result<Vec<OutRecord>, CoreError> {
        let value = self
            .codec
            .encode_route_progress(&RouteProgress { task: self.p, through })
            .map_err(|e| CoreError::Encode(e.to_string()))?;
        Ok((0..self.partitions)
            .map(|q| OutRecord {
                partition: Some(q),
                ..OutRecord::new(self.routes_topic.clone(), ROUTE_PROGRESS_KEY.to_vec(), value.clone())
            })
            .collect())
    }

    /// Stage one: the latest record time processed (`i64::MIN`: none).
    pub fn through(&self) -> i64 {
        self.through
    }

    /// Inputs to pause (`true`) or resume (`false`) to keep the merge within
    /// its bound (see the module invariants); applied by the driver.
    pub fn flow(&mut self) -> Vec<(usize, bool)> {
        let total = self.merger.bytes();
        // While the gate holds back what waits, only a little is worth
        // holding (it opens all at once, and the broker keeps the rest).
        let bound = match self.gate_holds() {
            true => self.max_bytes / GATED_SHARE,
            false => self.max_bytes,
        };
        let mut changes = Vec::new();
        for i in 0..self.inputs.len() {
            if self.stage == Stage::Vehicles && self.inputs[i].topic == Topic::FenceRoutes {
                continue;
            }
            let held = self.merger.input_held(i);
            if !self.paused[i] && total > bound && held > 0 {
                self.paused[i] = true;
                changes.push((i, true));
            } else if self.paused[i] && (held == 0 || total <= bound / 2) {
                self.paused[i] = false;
                changes.push((i, false));
            }
        }
        changes
    }

    /// Stage two: records wait that only the gate keeps from leaving.
    fn gate_holds(&self) -> bool {
        self.stage == Stage::Vehicles
            && self.merger.next_before(self.gate.limit(), &self.gated).is_none()
            && self.merger.next_before(i64::MAX, &self.gated).is_some()
    }

    /// Nothing buffered and every input caught up.
    pub fn idle(&self) -> bool {
        self.merger.idle()
    }

    /// Records known on the broker or buffered, not yet processed.
    pub fn lag(&self) -> i64 {
        self.merger.lag() + self.merger.buffered() as i64
    }

    pub fn buffered_bytes(&self) -> usize {
        self.merger.bytes()
    }

    pub fn paused_inputs(&self) -> usize {
        self.paused.iter().filter(|p| **p).count()
    }

    pub fn processed(&self) -> u64 {
        self.processed
    }

    /// Some input's high watermark was never reported.
    pub fn unknown_high(&self) -> bool {
        self.merger.unknown_high()
    }

    /// Vehicle stage: every stage-one task has said it is caught up since
    /// the start; appointment stage: always.
    pub fn gate_open(&self) -> bool {
        self.stage == Stage::Appointments || self.gate.open()
    }

    /// Vehicle stage, gate shut: the stage-one task it waits on.
    pub fn gate_waiting_on(&self) -> Option<i32> {
        match self.stage {
            Stage::Vehicles => self.gate.waiting_on(),
            Stage::Appointments => None,
        }
    }

    /// The first input holding the merge back: `(input, fetched to, high)`.
    pub fn blocked_on(&self) -> Option<(usize, i64, Option<i64>)> {
        self.merger.blocked_on()
    }

    pub fn tenants_held(&self) -> usize {
        self.engines.len()
    }
}

/// State rows by tenant: `(row key, value)`.
type TenantRows = BTreeMap<String, Vec<(Vec<u8>, Vec<u8>)>>;

/// Task `(stage, p)`'s engines, from its rows in `store`.
fn load_engines(
    stage: Stage,
    p: i32,
    tenants: &Tenants,
    store: &dyn StateStore,
) -> Result<BTreeMap<String, Engine>, CoreError> {
    let prefix = row_prefix(stage, p);
    let rows = store.scan_prefix(stage.store(), prefix.as_bytes())?;
    let mut by_tenant: TenantRows = BTreeMap::new();
    for (k, v) in rows {
        let rest = &k[prefix.len()..];
        let Some(slash) = rest.iter().position(|b| *b == b'/') else {
            return Err(CoreError::State {
                partition: p,
                error: format!("row key {:?} has no tenant", String::from_utf8_lossy(&k)),
            });
        };
        let tenant = String::from_utf8_lossy(&rest[..slash]).into_owned();
        by_tenant.entry(tenant).or_default().push((rest[slash + 1..].to_vec(), v));
    }
    let mut engines = BTreeMap::new();
    for (tenant, rows) in by_tenant {
        let settings = tenants.settings(&tenant);
        let mut engine =
            Engine::from_rows(tenant.clone(), settings, rows.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
                .map_err(|e| CoreError::State { partition: p, error: e.to_string() })?;
        engine.set_role(stage.role());
        engine.track_changes();
        engines.insert(tenant, engine);
    }
    Ok(engines)
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
