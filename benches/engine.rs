//! Engine throughput: pings/s on one core for the decision core alone.
//!
//! World: 10 000 technicians, each with a driver and a vehicle, and 5
//! scheduled appointments each (50 000 active fences), every fence a 32-gon
//! of ~200 m radius at its own site in a 60 km × 60 km metro, every
//! technician En Route. Each batch runs on a fresh copy of the engine.
//!
//! - `day`: a working day as a partition delivers it: every vehicle reports
//!   every 2 minutes from 07:00 to 19:00 (360 pings each, 3.6 M in all,
//!   interleaved in time order), visits its 5 sites in turn and parks about
//!   an hour at each (inside the fence, GPS jitter), drives in between (2% of
//!   driving pings pass through the box of one of its fences). Each vehicle
//!   arrives 5 times: 50 000 arrivals, 100 000 clock commands.
//! - `edge_heavy`: a stress mix, 1 M pings: 80% driving far away, 15% inside
//!   a fence's bounding box but outside the polygon (point-in-polygon every
//!   time), 5% inside a fence, at random times in the morning.
//!
//! `cargo bench --bench engine`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use geoclock::engine::{Command, Engine, Event};
use geoclock::model::{
    Activity, Appointment, AppointmentStatus, ClockAction, ClockEvent, Driver, Id, Job, Location, Pairing, Ping,
    Settings, Ts, User, Vehicle,
};

const VEHICLES: usize = 10_000;
const FENCES_PER_VEHICLE: usize = 5;
const PINGS: usize = 1_000_000;
const DAY_PINGS_PER_VEHICLE: usize = 360;
const DAY0: i64 = 1_795_824_000_000; // 2026-11-28T00:00:00Z
const R_DEG_LAT: f64 = 200.0 / 111_195.0;

/// A small deterministic PRNG (xorshift64*), so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn site(rng: &mut Rng) -> (f64, f64) {
    (35.0 + rng.unit() * 0.54, -81.0 + rng.unit() * 0.66)
}

fn polygon(lat: f64, lon: f64) -> Vec<[f64; 2]> {
    let k = (lat.to_radians()).cos();
    (0..32)
        .map(|i| {
            let a = i as f64 * std::f64::consts::TAU / 32.0;
            [lat + R_DEG_LAT * a.sin(), lon + R_DEG_LAT * a.cos() / k]
        })
        .collect()
}

fn world(rng: &mut Rng) -> (Engine, Vec<(f64, f64)>) {
    let mut engine = Engine::new("bench", Settings::default()).expect("settings");
    let mut out = Vec::new();
    let mut sites = Vec::with_capacity(VEHICLES * FENCES_PER_VEHICLE);
    let mut feed = |e: Event| engine.handle(&e, &mut out).expect("valid");
    for v in 0..VEHICLES {
        let email = format!("tech{v}@fleet.example");
        feed(Event::User(User {
            id: Id::number(v as i64),
            name: format!("Tech {v}"),
            email: Some(email.clone()),
            tech: true,
        }));
        feed(Event::Driver(Driver { id: Id::text(format!("d{v}")), name: String::new(), email: Some(email) }));
        feed(Event::Vehicle(Vehicle { id: Id::text(format!("v{v}")), name: String::new() }));
        feed(Event::Pairing(Pairing {
            driver: Id::text(format!("d{v}")),
            vehicle: Id::text(format!("v{v}")),
            from: Ts(DAY0),
            to: None,
        }));
        for f in 0..FENCES_PER_VEHICLE {
            let n = (v * FENCES_PER_VEHICLE + f) as i64;
            let (lat, lon) = site(rng);
            sites.push((lat, lon));
            feed(Event::Location(Location {
                id: Id::number(n),
                name: format!("Site {n}"),
                lat: Some(lat),
                lon: Some(lon),
                email: None,
                polygon: Some(polygon(lat, lon)),
                timezone: None,
                primary_contact: None,
                offices: Vec::new(),
            }));
            feed(Event::Job(Job { id: Id::number(n), number: None, location: Some(Id::number(n)) }));
            let start = DAY0 + (8 + 2 * f as i64) * 3_600_000;
            feed(Event::Appointment(Appointment {
                id: Id::number(n),
                job: Some(Id::number(n)),
                status: AppointmentStatus::Scheduled,
                window_start: Some(Ts(start)),
                window_end: Some(Ts(start + 2 * 3_600_000)),
                techs: vec![Id::number(v as i64)],
            }));
            feed(Event::Clock(ClockEvent {
                user: Id::number(v as i64),
                appointment: Id::number(n),
                activity: Activity::Enroute,
                action: ClockAction::In,
                time: Ts(DAY0 + 6 * 3_600_000),
            }));
        }
    }
    (engine, sites)
}

fn pings(rng: &mut Rng, sites: &[(f64, f64)]) -> Vec<Event> {
    (0..PINGS)
        .map(|i| {
            let v = i % VEHICLES;
            let (lat, lon) = sites[v * FENCES_PER_VEHICLE + (rng.next() % FENCES_PER_VEHICLE as u64) as usize];
            let k = lat.to_radians().cos();
            let roll = rng.unit();
            let (plat, plon) = if roll < 0.80 {
                (lat + 0.05 + rng.unit() * 0.1, lon + 0.05 + rng.unit() * 0.1) // driving, km away
            } else if roll < 0.95 {
                box_corner(rng, lat, lon)
            } else {
                (lat + (rng.unit() - 0.5) * R_DEG_LAT, lon + (rng.unit() - 0.5) * R_DEG_LAT / k)
            };
            Event::Ping(Ping {
                vehicle: Id::text(format!("v{v}")),
                time: Ts(DAY0 + 7 * 3_600_000 + (i / VEHICLES) as i64 * 60_000),
                lat: plat,
                lon: plon,
                speed_mph: Some(30.0),
                accuracy_m: None,
            })
        })
        .collect()
}

/// A point in the box corner of a 32-gon around (lat, lon), outside it.
fn box_corner(rng: &mut Rng, lat: f64, lon: f64) -> (f64, f64) {
    let k = lat.to_radians().cos();
    let a = std::f64::consts::FRAC_PI_4 + (rng.unit() - 0.5) * 0.2;
    let r = R_DEG_LAT * (0.97 + rng.unit() * 0.02) / std::f64::consts::FRAC_PI_4.cos();
    (lat + r * a.sin() * 0.999, lon + r * a.cos() / k * 0.999)
}

fn day(rng: &mut Rng, sites: &[(f64, f64)]) -> Vec<Event> {
    let mut out = Vec::with_capacity(VEHICLES * DAY_PINGS_PER_VEHICLE);
    for step in 0..DAY_PINGS_PER_VEHICLE {
        let minute = step as i64 * 2; // from 07:00
        for v in 0..VEHICLES {
            // Site f is visited from 07:30 + 2h·f for ~60 min (windows start 08:00 + 2h·f).
            let f = ((minute - 30).max(0) / 120).min(FENCES_PER_VEHICLE as i64 - 1) as usize;
            let into = (minute - 30) - 120 * f as i64;
            let (lat, lon) = sites[v * FENCES_PER_VEHICLE + f];
            let k = lat.to_radians().cos();
            let (plat, plon) = if (0..60).contains(&into) {
                (lat + (rng.unit() - 0.5) * 0.0004, lon + (rng.unit() - 0.5) * 0.0004 / k)
            } else if rng.unit() < 0.02 {
                let (lat, lon) = sites[v * FENCES_PER_VEHICLE + (rng.next() % FENCES_PER_VEHICLE as u64) as usize];
                box_corner(rng, lat, lon)
            } else {
                (lat + 0.02 + rng.unit() * 0.1, lon + 0.02 + rng.unit() * 0.1)
            };
            out.push(Event::Ping(Ping {
                vehicle: Id::text(format!("v{v}")),
                time: Ts(DAY0 + 7 * 3_600_000 + minute * 60_000 + (v % 120) as i64 * 1000),
                lat: plat,
                lon: plon,
                speed_mph: Some(30.0),
                accuracy_m: None,
            }));
        }
    }
    out
}

fn run_batch(c: &mut Criterion, name: &str, engine: &Engine, pings: &[Event]) {
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(pings.len() as u64));
    group.sample_size(10).measurement_time(Duration::from_secs(30));
    group.bench_function(name, |b| {
        b.iter_batched(
            || (engine.clone(), Vec::<Command>::with_capacity(200_000)),
            |(mut e, mut out)| {
                for p in pings {
                    // Pings are generated valid; a rejection would be a bench bug.
                    e.handle(p, &mut out).expect("valid ping");
                }
                (e, out)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (engine, sites) = world(&mut rng);
    let day = day(&mut rng, &sites);
    {
        // Sanity: the day really arrives everywhere.
        let mut e = engine.clone();
        let mut out = Vec::new();
        for p in &day {
            e.handle(p, &mut out).expect("valid");
        }
        assert_eq!(out.len(), 2 * VEHICLES * FENCES_PER_VEHICLE, "every vehicle arrives at all 5 sites");
    }
    run_batch(c, "day_10k_vehicles_5_fences_32gon", &engine, &day);
    drop(day);
    let edge = pings(&mut rng, &sites);
    run_batch(c, "edge_heavy_10k_vehicles_5_fences_32gon", &engine, &edge);
}

criterion_group!(benches, bench);
criterion_main!(benches);
