//! Ten simulated days, on an accelerated clock, through every store that
//! grows with time: the processor's state (both stages' task cores, their
//! rows in a state store), a connector's ledger (every ping of the fleet,
//! pruned by ping time), and a sink's ledger (every command's outcome,
//! with its wall clock replaced by the simulated one). Retention is set
//! short (2 days for the engine and the sink ledger, 1 day of pings) so
//! that it kicks in early; after it does, every store's size must stay
//! flat while the days keep coming.
//!
//! The stores are driven through their real code (the task core that the
//! processor's rdkafka driver wraps, the ledgers the connector and sink
//! use); the broker and the vendors are left out, so the ten days take
//! seconds.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use geoclock::engine::{Action, Command, Event};
use geoclock::kafka::codec::Codec;
use geoclock::kafka::records::{Outcome, SinkResult};
use geoclock::kafka::registry::FileRegistry;
use geoclock::kafka::topics::{Catalogue, Topic};
use geoclock::model::{Appointment, AppointmentStatus, ClockAction, ClockEvent, Id, Settings, Ts};
use geoclock::processor::batch::BatchOut;
use geoclock::processor::core::{Fetched, Input, Setup, Step, TaskCore};
use geoclock::processor::{Stage, Tenants};
use geoclock::scenario::generate::{Day, DAY0_MS};
use geoclock::store::layout::STATE_STORES;
use geoclock::store::memory::MemoryStore;
use geoclock::store::StateStore;

const TENANT: &str = "fleet";
const DAY_MS: i64 = 86_400_000;
const DAYS: i64 = 10;

static SIM_NOW: AtomicI64 = AtomicI64::new(0);

fn sim_now() -> i64 {
    SIM_NOW.load(Ordering::SeqCst)
}

fn catalogue() -> Catalogue {
    Catalogue { prefix: "days".into(), partitions: 1, replication: 1 }
}

/// Day `d`: the generated day moved `d` days on, its appointments new (ids
/// offset) at the same sites and jobs (recurring work: the entity mirrors
/// are as big as the vendors' data, not growing with time), the same
/// fleet; ticks every 15 minutes of it; and a few appointments that never
/// get a usable window (unscheduled, inverted) and a clock event for one
/// never mirrored.
fn day(d: i64) -> Vec<Event> {
    let shift = d * DAY_MS;
    let offset = |id: &Id| Id::number(id.as_str().parse::<i64>().unwrap_or(0) + d * 1_000_000);
    let mut out = Vec::new();
    for e in (Day { seed: d as u64 + 1, techs: 40, appointments_per_tech: 3, ping_every_s: 300 }).events() {
        let e = match e {
            // The fleet, its people, the sites and jobs are mirrored once.
            Event::User(_)
            | Event::Driver(_)
            | Event::Vehicle(_)
            | Event::Pairing(_)
            | Event::Location(_)
            | Event::Job(_)
                if d > 0 =>
            {
                continue
            }
            Event::Appointment(mut a) => {
                a.id = offset(&a.id);
                a.window_start = a.window_start.map(|t| Ts(t.0 + shift));
                a.window_end = a.window_end.map(|t| Ts(t.0 + shift));
                Event::Appointment(a)
            }
            Event::Clock(mut c) => {
                c.appointment = offset(&c.appointment);
                c.time = Ts(c.time.0 + shift);
                Event::Clock(c)
            }
            Event::Ping(mut p) => {
                p.time = Ts(p.time.0 + shift);
                Event::Ping(p)
            }
            other => other,
        };
        out.push(e);
    }
    for k in 0..5 {
        let id = Id::number(900_000_000 + d * 10 + k);
        let (start, end) = match k % 2 {
            0 => (None, None),
            _ => (Some(Ts(DAY0_MS + shift + 3_600_000)), Some(Ts(DAY0_MS + shift))),
        };
        let a = Appointment {
            id,
            job: None,
            status: AppointmentStatus::Unscheduled,
            window_start: start,
            window_end: end,
            techs: vec![Id::number(1)],
        };
        out.insert(0, Event::Appointment(a));
    }
    out.insert(
        0,
        Event::Clock(ClockEvent {
            user: Id::number(1),
            appointment: Id::number(800_000_000 + d),
            activity: geoclock::model::Activity::Enroute,
            action: ClockAction::In,
            time: Ts(DAY0_MS + shift + 1000),
        }),
    );
    // Event time for the engine: a tick every 15 minutes of the day.
    let mut with_ticks = Vec::with_capacity(out.len() + 96);
    let mut next_tick = DAY0_MS + shift;
    for e in out {
        if let Event::Ping(p) = &e {
            while p.time.0 >= next_tick {
                with_ticks.push(Event::Tick(Ts(next_tick)));
                next_tick += 15 * 60_000;
            }
        }
        with_ticks.push(e);
    }
    with_ticks
}

/// Records fed to a task core, input by input, offsets counting on.
struct Feeder {
    next: Vec<i64>,
}

impl Feeder {
    fn push(
        &mut self,
        core: &mut TaskCore,
        input: usize,
        time: i64,
        key: &[u8],
        value: Option<&[u8]>,
        source: Option<i32>,
    ) {
        let offset = self.next[input];
        self.next[input] += 1;
        core.push(Fetched { input, offset, timestamp: time, key: Some(key), value, source });
    }

    fn highs(&self, core: &mut TaskCore) {
        for (i, n) in self.next.iter().enumerate() {
            core.set_high(i, *n);
        }
    }
}

fn inputs(stage: Stage) -> Vec<Input> {
    Input::for_stage(stage, 0, &catalogue(), |_, _| Ok::<_, std::convert::Infallible>(1)).unwrap()
}

fn core(stage: Stage, store: &dyn StateStore, codec: &Arc<Codec>, tenants: &Arc<Tenants>) -> TaskCore {
    let setup = Setup {
        stage,
        p: 0,
        inputs: inputs(stage),
        catalogue: &catalogue(),
        codec: codec.clone(),
        tenants: tenants.clone(),
        batch_records: 1_000_000,
        max_buffered_bytes: 1 << 30,
        fresh_from: 0,
        incomplete: None,
    };
    TaskCore::new(setup, store).unwrap()
}

fn drain(core: &mut TaskCore, store: &MemoryStore) -> Option<BatchOut> {
    assert_eq!(core.step().unwrap(), Step::Waiting);
    let b = core.take_batch().unwrap()?;
    store.commit(&b.batch).unwrap();
    Some(b)
}

#[test]
fn every_store_stays_flat_once_retention_kicks_in() {
    let c = catalogue();
    let codec = Arc::new(Codec::new(Arc::new(FileRegistry::in_memory()), &c).unwrap());
    let settings = Settings { retention_days: 2, ..Settings::default() };
    let tenants = Arc::new(Tenants { tenants: BTreeMap::from([(TENANT.to_string(), settings)]), ..Tenants::default() });
    let (s1, s2) = (MemoryStore::new(&STATE_STORES), MemoryStore::new(&STATE_STORES));
    let mut one = core(Stage::Appointments, &s1, &codec, &tenants);
    let mut two = core(Stage::Vehicles, &s2, &codec, &tenants);
    let mut f1 = Feeder { next: vec![0; one.inputs().len()] };
    let mut f2 = Feeder { next: vec![0; 2] };
    let input_of = |core: &TaskCore, topic: Topic| core.inputs().iter().position(|i| i.topic == topic).unwrap();

    let dir = std::env::temp_dir().join(format!("geoclock-days-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut pings_ledger =
        geoclock::connect::ledger::Ledger::open_with_span(&dir.join("azuga-fleet.ledger.jsonl"), DAY_MS).unwrap();
    let retention = geoclock::sink::ledger::Retention {
        keep: Duration::from_secs(2 * 86_400),
        sweep_every: Duration::from_secs(3600),
        slice: 10_000,
        now: sim_now,
        ..Default::default()
    };
    let sink = geoclock::sink::ledger::Ledger::open_with(&dir.join("sink-clock"), false, retention).unwrap();

    let mut sizes: Vec<[usize; 4]> = Vec::new();
    let mut commands_total = 0;
    for d in 0..DAYS {
        let events = day(d);
        // Stage one: everything but the pings, in order.
        for (i, e) in events.iter().enumerate() {
            if matches!(e, Event::Ping(_)) {
                continue;
            }
            let r = codec.encode_event(TENANT, e).unwrap();
            let input = input_of(&one, r.topic);
            f1.push(&mut one, input, d * DAY_MS + i as i64, &r.key, r.value.as_deref(), None);
        }
        f1.highs(&mut one);
        let b1 = drain(&mut one, &s1).expect("stage one has a batch");
        // Stage two: its routes, stage one's word that it is caught up,
        // then the pings.
        let routes = c.name(Topic::FenceRoutes);
        for r in b1.out.iter().filter(|r| r.topic == routes) {
            f2.push(&mut two, 1, r.time.unwrap_or(0), &r.key, Some(&r.value), r.source);
        }
        for r in one.progress_records(i64::MAX).unwrap() {
            f2.push(&mut two, 1, 0, &r.key, Some(&r.value), None);
        }
        let mut new_pings = Vec::new();
        for (i, e) in events.iter().enumerate() {
            if let Event::Ping(p) = e {
                let r = codec.encode_event(TENANT, e).unwrap();
                f2.push(&mut two, 0, d * DAY_MS + i as i64, &r.key, r.value.as_deref(), None);
                new_pings.push(geoclock::connect::ledger::Entry::Ping {
                    vehicle: p.vehicle.to_string(),
                    time: p.time.0,
                    hash: 1,
                });
            }
        }
        f2.highs(&mut two);
        let b2 = drain(&mut two, &s2).expect("stage two has a batch");
        // The connector saw the pings; the clock sink carried out the
        // commands, decided and reported at the day's simulated end.
        pings_ledger.record(new_pings).unwrap();
        SIM_NOW.store(DAY0_MS + d * DAY_MS + DAY_MS - 1, Ordering::SeqCst);
        let commands: Vec<Command> = [&b1, &b2]
            .iter()
            .flat_map(|b| b.out.iter())
            .filter(|r| r.topic == c.name(Topic::Commands))
            .map(|r| codec.decode_command(&r.value).unwrap().command)
            .collect();
        commands_total += commands.len();
        for cmd in &commands {
            let result = SinkResult {
                command_id: cmd.id.clone(),
                appointment: cmd.appointment.to_string(),
                kind: cmd.action.kind().into(),
                sink: "clock".into(),
                outcome: Outcome::Done,
                reason: String::new(),
                remote_ref: None,
                attempts: 1,
                executed_at: Ts(sim_now()),
                command_time: Ts(sim_now()),
            };
            let step = geoclock::sink::ledger::Step::Done { result, reported: true };
            let extras = match &cmd.action {
                Action::CreateGeofence(_) => vec![(TENANT, format!("fence/{}", cmd.appointment))],
                _ => Vec::new(),
            };
            let extras: Vec<(&str, &str, Option<serde_json::Value>)> = extras
                .iter()
                .map(|(t, k)| (*t, k.as_str(), Some(serde_json::json!({"id": 1, "revision": 1}))))
                .collect();
            sink.record(&[(TENANT, &cmd.id, step)], &extras).unwrap();
        }
        let swept = sink.sweep().unwrap();
        let ledger = pings_ledger.state().sizes();
        let row = [
            s1.len(Stage::Appointments.store()),
            s2.len(Stage::Vehicles.store()),
            ledger.total(),
            (swept.commands + swept.extras) as usize,
        ];
        eprintln!(
            "day {d}: rows stage one {} stage two {}, connector ledger {} ({} pings, journal {} lines), sink ledger {} ({swept:?}), commands today {}",
            row[0], row[1], row[2], ledger.pings, pings_ledger.journal_lines(), row[3], commands.len()
        );
        sizes.push(row);
    }
    assert!(commands_total > 2_000, "{commands_total} commands: the days decided things");
    // Retention: 2 days after windows end (+ 8 h + 24 h) for the engine,
    // so by day 5 what leaves each day matches what comes.
    let (early, late) = (sizes[5], sizes[DAYS as usize - 1]);
    for (store, (a, b)) in
        ["stage one rows", "stage two rows", "connector ledger", "sink ledger"].iter().zip(early.iter().zip(late))
    {
        let (lo, hi) = (*a as f64 * 0.9, *a as f64 * 1.1);
        assert!((lo..=hi).contains(&(b as f64)), "{store}: {a} on day 5, {b} on day {}: not flat\n{sizes:?}", DAYS - 1);
    }
    assert!(sizes[DAYS as usize - 1][0] < sizes[2][0] * 3, "grew with the days: {sizes:?}");
    drop(sink);
    let _ = std::fs::remove_dir_all(&dir);
}
