//! The task core driven by hand, over the in-memory store: no broker.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::engine::{Command, Engine, Event};
use crate::kafka::codec::Codec;
use crate::kafka::records::ROUTE_PROGRESS_KEY;
use crate::kafka::registry::FileRegistry;
use crate::kafka::topics::{Catalogue, Topic};
use crate::model::Settings;
use crate::scenario::generate::Day;
use crate::store::layout::STATE_STORES;
use crate::store::memory::MemoryStore;
use crate::store::StateStore;

const TENANT: &str = "fleet";

fn catalogue() -> Catalogue {
    Catalogue { prefix: "t".into(), partitions: 1, replication: 1 }
}

fn codec() -> Arc<Codec> {
    Arc::new(Codec::new(Arc::new(FileRegistry::in_memory()), &catalogue()).unwrap())
}

fn stage_inputs(stage: Stage) -> Vec<Input> {
    Input::for_stage(stage, 0, &catalogue(), |_, _| Ok::<_, std::convert::Infallible>(1)).unwrap()
}

fn core(
    stage: Stage,
    store: &dyn StateStore,
    tenants: Tenants,
    max_bytes: usize,
    incomplete: Option<Vec<u8>>,
) -> TaskCore {
    let setup = Setup {
        stage,
        p: 0,
        inputs: stage_inputs(stage),
        catalogue: &catalogue(),
        codec: codec(),
        tenants: Arc::new(tenants),
        batch_records: 1_000_000,
        max_buffered_bytes: max_bytes,
        fresh_from: 0,
        incomplete,
    };
    TaskCore::new(setup, store).unwrap()
}

/// Records as they would sit on the broker: per topic, in order.
#[derive(Default)]
struct Log(BTreeMap<String, Vec<(i64, Option<Vec<u8>>, Option<Vec<u8>>, Option<i32>)>>);

impl Log {
    fn put(&mut self, topic: &str, time: i64, key: Vec<u8>, value: Option<Vec<u8>>, source: Option<i32>) {
        self.0.entry(topic.to_string()).or_default().push((time, Some(key), value, source));
    }

    /// Hands every record of the core's inputs from `from[input]` on, and
    /// the high watermarks.
    fn feed(&self, core: &mut TaskCore, from: &[i64]) {
        for (idx, input) in core.inputs().to_vec().iter().enumerate() {
            let records = self.0.get(&input.name).map(Vec::as_slice).unwrap_or_default();
            core.set_high(idx, records.len() as i64);
            for (offset, (time, key, value, source)) in records.iter().enumerate().skip(from[idx] as usize) {
                let f = Fetched {
                    input: idx,
                    offset: offset as i64,
                    timestamp: *time,
                    key: key.as_deref(),
                    value: value.as_deref(),
                    source: *source,
                };
                core.push(f);
            }
        }
    }
}

fn day() -> (Vec<Event>, Vec<Command>) {
    let events = Day { seed: 3, techs: 4, appointments_per_tech: 2, ping_every_s: 300 }.events();
    let mut engine = Engine::new(TENANT, Settings::default()).unwrap();
    let mut out = Vec::new();
    for e in &events {
        engine.handle(e, &mut out).unwrap();
    }
    (events, out)
}

/// The day's input on the log, record time = position in the day.
fn input_log(events: &[Event], tenant: &str) -> Log {
    let (c, codec) = (catalogue(), codec());
    let mut log = Log::default();
    for (i, e) in events.iter().enumerate() {
        let r = codec.encode_event(tenant, e).unwrap();
        log.put(&c.name(r.topic), i as i64, r.key, r.value, None);
    }
    log
}

fn run_to_end(core: &mut TaskCore) -> Option<BatchOut> {
    assert_eq!(core.step().unwrap(), Step::Waiting);
    core.take_batch().unwrap()
}

/// Commands of a batch, decoded.
fn commands(b: &BatchOut) -> Vec<Command> {
    let codec = codec();
    b.out
        .iter()
        .filter(|r| r.topic == catalogue().name(Topic::Commands))
        .map(|r| codec.decode_command(&r.value).unwrap().command)
        .collect()
}

/// Stage one's routes and progress, as stage two's routes partition.
fn routes_of(b: &BatchOut, log: &mut Log) {
    let topic = catalogue().name(Topic::FenceRoutes);
    for r in b.out.iter().chain(&b.progress).filter(|r| r.topic == topic) {
        log.put(&topic, r.time.unwrap_or(0), r.key.clone(), Some(r.value.clone()), r.source);
    }
}

fn caught_up(core: &TaskCore, log: &mut Log) {
    let topic = catalogue().name(Topic::FenceRoutes);
    for r in core.progress_records(i64::MAX).unwrap() {
        assert_eq!(r.key, ROUTE_PROGRESS_KEY);
        log.put(&topic, 0, r.key, Some(r.value), None);
    }
}

fn sorted(mut v: Vec<Command>) -> Vec<Command> {
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

#[test]
fn two_stages_decide_what_the_pure_engine_decides() {
    let (events, expected) = day();
    let mut log = input_log(&events, TENANT);
    let (s1, s2) = (MemoryStore::new(&STATE_STORES), MemoryStore::new(&STATE_STORES));
    let mut one = core(Stage::Appointments, &s1, Tenants::any(), 1 << 30, None);
    let n = one.inputs().len();
    log.feed(&mut one, &vec![0; n]);
    let b1 = run_to_end(&mut one).expect("stage one has a batch");
    assert!(b1.progress.len() == 1 && b1.data);
    routes_of(&b1, &mut log);
    caught_up(&one, &mut log);

    let mut two = core(Stage::Vehicles, &s2, Tenants::any(), 1 << 30, None);
    assert!(!two.gate_open());
    log.feed(&mut two, &[0, 0]);
    assert!(two.gate_open(), "stage one said it is caught up");
    let b2 = run_to_end(&mut two).expect("stage two has a batch");
    let mut got = commands(&b1);
    got.extend(commands(&b2));
    assert!(commands(&b2).iter().all(|c| matches!(c.action, crate::engine::Action::Clock(_))));
    assert_eq!(sorted(got), sorted(expected));
    assert!(two.idle() && two.take_batch().unwrap().is_none(), "nothing left");
}

#[test]
fn pings_wait_for_stage_one_and_are_paused_beyond_the_bound_routes_never() {
    let (events, _) = day();
    let mut log = input_log(&events, TENANT);
    let s2 = MemoryStore::new(&STATE_STORES);
    let mut two = core(Stage::Vehicles, &s2, Tenants::any(), 4096, None);
    log.feed(&mut two, &[0, 0]);
    assert_eq!(two.step().unwrap(), Step::Waiting);
    assert_eq!(two.pending(), 0, "the gate holds every ping");
    assert_eq!(two.gate_waiting_on(), Some(0));
    assert!(two.buffered_bytes() > 4096);
    assert_eq!(two.flow(), vec![(0, true)], "the pings input pauses, not the routes");
    assert_eq!(two.flow(), vec![], "once");
    // Stage one catches up; its progress arrives on the routes input.
    let s1 = MemoryStore::new(&STATE_STORES);
    let mut one = core(Stage::Appointments, &s1, Tenants::any(), 1 << 30, None);
    let n = one.inputs().len();
    log.feed(&mut one, &vec![0; n]);
    let b1 = run_to_end(&mut one).unwrap();
    routes_of(&b1, &mut log);
    caught_up(&one, &mut log);
    let routes = catalogue().name(Topic::FenceRoutes);
    let n = log.0[&routes].len();
    for (offset, (time, key, value, source)) in log.0[&routes].iter().enumerate() {
        two.set_high(1, n as i64);
        let f = Fetched {
            input: 1,
            offset: offset as i64,
            timestamp: *time,
            key: key.as_deref(),
            value: value.as_deref(),
            source: *source,
        };
        two.push(f);
    }
    assert!(two.gate_open());
    assert_eq!(two.step().unwrap(), Step::Waiting);
    assert_eq!(two.buffered_bytes(), 0);
    assert_eq!(two.flow(), vec![(0, false)], "drained: fetching resumes");
}

#[test]
fn a_restored_core_continues_exactly_and_a_cut_batch_replays_in_its_order() {
    let (events, expected) = day();
    // Stage one's input (the pings are stage two's).
    let events: Vec<Event> = events.into_iter().filter(|e| !matches!(e, Event::Ping(_))).collect();
    let half = events.len() / 2;
    // The whole run, through one batch: what stage one must decide.
    let whole: Vec<Command> =
        expected.into_iter().filter(|c| !matches!(c.action, crate::engine::Action::Clock(_))).collect();

    // The first half committed to the store, the second half processed
    // from the restored rows and positions.
    let store = MemoryStore::new(&STATE_STORES);
    let mut log = input_log(&events[..half], TENANT);
    let mut one = core(Stage::Appointments, &store, Tenants::any(), 1 << 30, None);
    let starts = vec![0; one.inputs().len()];
    log.feed(&mut one, &starts);
    let first = run_to_end(&mut one).unwrap();
    store.commit(&first.batch).unwrap();
    let positions_after_first: Vec<i64>;
    {
        log = input_log(&events, TENANT);
        let mut again = core(Stage::Appointments, &store, Tenants::any(), 1 << 30, None);
        positions_after_first = again.fetch_starts();
        log.feed(&mut again, &positions_after_first);
        let second = run_to_end(&mut again).unwrap();
        let mut got = commands(&first);
        got.extend(commands(&second));
        assert_eq!(sorted(got), sorted(whole.clone()));

        // A crash after the second batch's begin marker: its plan comes
        // back from the changelog, and a fresh core from the first batch's
        // state re-processes it into the very same records.
        let plan = second.begin[0].1.clone();
        let mut replay = core(Stage::Appointments, &store, Tenants::any(), 1 << 30, plan);
        assert!(replay.replaying());
        log.feed(&mut replay, &positions_after_first);
        assert_eq!(replay.step().unwrap(), Step::Commit, "the replayed batch ends where it ended");
        let replayed = replay.take_batch().unwrap().unwrap();
        assert_eq!(replayed.out, second.out, "same commands, routes and dead letters, in order");
        assert_eq!(replayed.records, second.records, "same state rows and markers");
        assert!(!replay.replaying());
    }
}

#[test]
fn unknown_tenants_are_dead_lettered_and_get_no_engine() {
    let (events, _) = day();
    let log = input_log(&events[..40], "evil");
    let store = MemoryStore::new(&STATE_STORES);
    let tenants =
        Tenants { tenants: BTreeMap::from([(TENANT.to_string(), Settings::default())]), ..Tenants::default() };
    let mut one = core(Stage::Appointments, &store, tenants, 1 << 30, None);
    let n = one.inputs().len();
    log.feed(&mut one, &vec![0; n]);
    let b = run_to_end(&mut one).unwrap();
    assert_eq!(one.tenants_held(), 0);
    assert_eq!(b.commands, 0);
    let dead: Vec<_> = b.out.iter().filter(|r| r.topic == catalogue().name(Topic::DeadLetters)).collect();
    assert_eq!(dead.len(), 40, "every record of the unknown tenant");
    let codec = codec();
    let dl = codec.decode_dead_letter(&dead[0].value).unwrap();
    assert_eq!(dl.kind, "unknown_tenant");
    assert!(dl.reason.contains("\"evil\" is not in the tenants file"), "{}", dl.reason);
    assert!(dl.value.is_some(), "the record itself goes with it");
    assert!(store.is_empty() && b.batch.writes.is_empty(), "no engine, no rows");
}

#[test]
fn a_record_whose_schema_is_not_known_yet_waits_in_line_then_is_dead_lettered() {
    let (events, _) = day();
    let c = catalogue();
    let mut log = input_log(&events[..3], TENANT);
    // A user record with a writer schema id nobody registered.
    let users = c.name(Topic::Users);
    let mut value = log.0[&users][0].2.clone().unwrap();
    value[1..5].copy_from_slice(&0x7fff_fff0u32.to_be_bytes());
    log.0.get_mut(&users).unwrap()[0].2 = Some(value);
    let store = MemoryStore::new(&STATE_STORES);
    let mut one = core(Stage::Appointments, &store, Tenants::any(), 1 << 30, None);
    let n = one.inputs().len();
    log.feed(&mut one, &vec![0; n]);
    assert!(matches!(one.step().unwrap(), Step::Blocked(_)), "within the registry's grace");
    assert_eq!(one.pending(), 0, "nothing after it either");
    // Past the grace the codec calls it poison: dead-lettered, and the rest flows.
    let mut strict = core(Stage::Appointments, &store, Tenants::any(), 1 << 30, None);
    strict.codec = Arc::new(
        Codec::new(Arc::new(FileRegistry::in_memory()), &c).unwrap().with_unknown_grace(std::time::Duration::ZERO),
    );
    let n = strict.inputs().len();
    log.feed(&mut strict, &vec![0; n]);
    let b = run_to_end(&mut strict).unwrap();
    assert_eq!(b.dead_letters, 1);
    assert_eq!(strict.pending(), 0);
    assert_eq!(strict.processed(), 3);
}
