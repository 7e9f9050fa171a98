//! The fleet simulator: a deterministic working day for N technicians.
//!
//! Pure: no I/O, no wall clock; the day is a function of [`FleetConfig`]
//! (seed included); addresses are the tenant's own (`@{tenant}.example`,
//! customers `@{tenant}-customer.example`). For each technician it makes a ServiceTrade user, an
//! Azuga driver with the same email (case varied, to exercise matching), a
//! vehicle and a pairing; a depot; 3 to 5 appointments at customer
//! locations, each on its own job, windows around the planned arrival; and
//! the drive: from the depot to each location in turn along a two-leg
//! (street-grid) route at 20–45 mph, with stops at lights, dwell on site,
//! GPS noise, a fix every 30–120 s. Before leaving for an appointment the
//! technician presses En Route (a clock event at departure time).
//!
//! Invariants (unit-tested below):
//! - same config, same day, byte for byte;
//! - per vehicle, distinct fix times are 30–120 s apart (before duplicates);
//! - every fix is a valid position (finite, in range) with whole-second time;
//! - a duplicated fix is the identical ping listed twice; a late fix is
//!   released 5–30 min after its time; everything else is released at its
//!   time; `World::pings` is sorted by release time;
//! - every scheduled appointment's location is visited (a fix within the
//!   fence radius) inside its window ± 8 h, after that technician's En Route.
//!
//! With [`FleetConfig::failures`] the day also holds what the Activity
//! Report exists to explain, each in a few percent of rows, chosen by
//! position so every day of 24 or more technicians has each one:
//! technician 4 of every 24 is not paired with a vehicle, technician 9 of
//! every 24 has an Azuga email that is not their ServiceTrade email (not
//! found in Azuga), appointment 11 of every 30 has no job, and appointment
//! 23 of every 30 (of a healthy technician) is locked at ServiceTrade
//! ([`World::clock_locked`]: its clock POSTs are refused). About one
//! appointment in ten is not scheduled either way (with failures it keeps
//! its planned window, so it shows on that day's report).

use crate::model::{
    Activity, Appointment, AppointmentStatus, ClockAction, ClockEvent, Contact, Driver, Id, Job, Location, Office,
    Pairing, Ping, Ts, User, Vehicle,
};

use super::rng::Rng;
use super::world::{ScheduledPing, World};

#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    pub seed: u64,
    pub tenant: String,
    pub technicians: usize,
    /// The first departure of the day (technicians leave 0–30 min after).
    pub day_start: Ts,
    /// Centre of the service area.
    pub center: (f64, f64),
    /// Half-width of the service area, metres.
    pub radius_m: f64,
    pub late_rate: f64,
    pub duplicate_rate: f64,
    /// GPS noise standard deviation, metres.
    pub noise_m: f64,
    /// The failures a real day has (see the module docs).
    pub failures: bool,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            seed: 1,
            tenant: "acme".into(),
            technicians: 10,
            day_start: Ts::from_secs(1_795_856_400), // 2026-11-28T07:00:00Z
            center: (35.2271, -80.8431),
            radius_m: 15_000.0,
            late_rate: 0.02,
            duplicate_rate: 0.02,
            noise_m: 6.0,
            failures: false,
        }
    }
}

impl FleetConfig {
    /// The day `geoclock demo` runs: `technicians` from `day_start`, with
    /// a real day's failures.
    pub fn demo(seed: u64, technicians: usize, day_start: Ts) -> FleetConfig {
        FleetConfig { seed, technicians, day_start, failures: true, ..FleetConfig::default() }
    }
}

const FIRST: [&str; 12] = ["Ann", "Bo", "Cruz", "Dee", "Eli", "Fay", "Gus", "Hana", "Ike", "Jo", "Kai", "Lena"];
const LAST: [&str; 10] = ["Lee", "Moss", "Park", "Quinn", "Reyes", "Shaw", "Tran", "Vega", "Wolfe", "Young"];
const METERS_PER_DEG: f64 = 111_320.0;
const MPH_TO_MPS: f64 = 0.44704;

fn offset(center: (f64, f64), north_m: f64, east_m: f64) -> (f64, f64) {
    let lat = center.0 + north_m / METERS_PER_DEG;
    let lon = center.1 + east_m / (METERS_PER_DEG * center.0.to_radians().cos());
    (lat, lon)
}

/// Flat-earth distance in metres (fine at city scale).
pub fn distance_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    let dn = (b.0 - a.0) * METERS_PER_DEG;
    let de = (b.1 - a.1) * METERS_PER_DEG * a.0.to_radians().cos();
    (dn * dn + de * de).sqrt()
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// One vehicle's day under construction: fixes at least 30 s apart.
struct Track {
    vehicle: Id,
    /// Time (unix s) of the last fix.
    last_fix: i64,
    next_gap: i64,
    fixes: Vec<(i64, (f64, f64), f64)>,
}

impl Track {
    /// Moves to time `t` at `pos` with `speed` mph; fixes as due.
    fn at(&mut self, rng: &mut Rng, t: i64, pos: (f64, f64), speed: f64, noise_m: f64) {
        while self.last_fix + self.next_gap <= t {
            let ft = self.last_fix + self.next_gap;
            let p = offset(pos, rng.gauss() * noise_m, rng.gauss() * noise_m);
            self.fixes.push((ft, (round6(p.0), round6(p.1)), (speed * 10.0).round() / 10.0));
            self.last_fix = ft;
            self.next_gap = rng.range_i64(30, 120);
        }
    }
}

/// Generates the day.
pub fn generate(cfg: &FleetConfig) -> World {
    let mut w = World { tenant: cfg.tenant.clone(), ..World::default() };
    w.users.push(User {
        id: Id::number(1),
        name: "Office Admin".into(),
        email: Some(format!("office@{}.example", cfg.tenant)),
        tech: false,
    });
    // Two offices; each technician's sites are served by one of them, and
    // every other site names a primary contact (the others' Service Links
    // fall back to the site's own email).
    let offices = [(101, "North Office"), (102, "South Office")];
    for (id, name) in offices {
        w.offices.push(Office { id: Id::number(id), name: name.into() });
    }
    let day0 = cfg.day_start.millis().div_euclid(1000);
    let mut next_site: i64 = 0;
    let mut pings = Vec::new();
    for i in 0..cfg.technicians {
        let mut rng = Rng::stream(cfg.seed, i as u64 + 1);
        let first = FIRST[i % FIRST.len()];
        let last = LAST[(i / FIRST.len()) % LAST.len()];
        let email = format!("{}.{}{}@{}.example", first.to_lowercase(), last.to_lowercase(), i, cfg.tenant);
        let user_id = Id::number(1000 + i as i64);
        let driver_id = Id::text(format!("drv-{i:03}"));
        let vehicle_id = Id::text(format!("veh-{i:03}"));
        w.users.push(User {
            id: user_id.clone(),
            name: format!("{first} {last}"),
            email: Some(email.clone()),
            tech: true,
        });
        let unpaired = cfg.failures && i % 24 == 4;
        let unknown_email = cfg.failures && i % 24 == 9;
        let driver_email = if unknown_email {
            format!("{}{}.{}@personal.example", first.to_lowercase(), i, last.to_lowercase())
        } else if i % 3 == 0 {
            format!(" {} ", email.to_uppercase())
        } else {
            email.clone()
        };
        w.drivers.push(Driver { id: driver_id.clone(), name: format!("{first} {last}"), email: Some(driver_email) });
        w.vehicles.push(Vehicle { id: vehicle_id.clone(), name: format!("Truck {}", i + 1) });
        if !unpaired {
            w.pairings.push(Pairing {
                driver: driver_id,
                vehicle: vehicle_id.clone(),
                from: Ts::from_secs(day0 - 3600),
                to: None,
            });
        }

        let depot =
            offset(cfg.center, rng.range_f64(-0.5, 0.5) * cfg.radius_m, rng.range_f64(-0.5, 0.5) * cfg.radius_m);
        let mut t = day0 + rng.range_i64(0, 1800);
        let mut pos = depot;
        let mut track = Track {
            vehicle: vehicle_id.clone(),
            last_fix: t - rng.range_i64(30, 120),
            next_gap: 30,
            fixes: Vec::new(),
        };
        track.at(&mut rng, t, pos, 0.0, cfg.noise_m);
        let visits = rng.range_i64(3, 5);
        for _ in 0..visits {
            next_site += 1;
            let site =
                offset(cfg.center, rng.range_f64(-1.0, 1.0) * cfg.radius_m, rng.range_f64(-1.0, 1.0) * cfg.radius_m);
            let loc_id = Id::number(5000 + next_site);
            let job_id = Id::number(9000 + next_site);
            let appt_id = Id::number(70_000 + next_site);
            let contact = (next_site % 2 == 0).then(|| Id::number(60_000 + next_site));
            if let Some(c) = &contact {
                w.contacts.push(Contact {
                    id: c.clone(),
                    name: format!("Facility Manager {next_site}"),
                    email: Some(format!("manager{next_site}@{}-customer.example", cfg.tenant)),
                    locations: vec![loc_id.clone()],
                });
            }
            w.locations.push(Location {
                id: loc_id.clone(),
                name: format!("Site {next_site}"),
                lat: Some(round6(site.0)),
                lon: Some(round6(site.1)),
                // Each tenant's customers are its own.
                email: Some(format!("fm{next_site}@{}-customer.example", cfg.tenant)),
                polygon: None,
                timezone: None,
                primary_contact: contact,
                offices: vec![Id::number(offices[i % offices.len()].0)],
            });
            w.jobs.push(Job {
                id: job_id.clone(),
                number: Some(Id::text(format!("J-{}", 1000 + next_site))),
                location: Some(loc_id),
            });
            // En Route at departure.
            w.clocks.push(ClockEvent {
                user: user_id.clone(),
                appointment: appt_id.clone(),
                activity: Activity::Enroute,
                action: ClockAction::In,
                time: Ts::from_secs(t),
            });
            // Drive: north/south leg, then east/west leg, via the corner.
            let corner = (site.0, pos.1);
            let speed = rng.range_f64(20.0, 45.0);
            for (from, to) in [(pos, corner), (corner, site)] {
                let d = distance_m(from, to);
                let mut covered = 0.0;
                while covered < d {
                    let step_s = 10;
                    covered = (covered + speed * MPH_TO_MPS * step_s as f64).min(d);
                    t += step_s;
                    let f = if d > 0.0 { covered / d } else { 1.0 };
                    let here = (from.0 + (to.0 - from.0) * f, from.1 + (to.1 - from.1) * f);
                    let v = speed + rng.gauss() * 3.0;
                    track.at(&mut rng, t, here, v, cfg.noise_m);
                    if rng.chance(0.004) {
                        // A red light.
                        let stop = rng.range_i64(30, 90);
                        for _ in 0..stop / 10 {
                            t += 10;
                            track.at(&mut rng, t, here, 0.0, cfg.noise_m);
                        }
                    }
                }
            }
            pos = site;
            let arrival = t;
            // Window: the half hour before arrival, two hours long; one in ten unscheduled.
            let ws = arrival - arrival.rem_euclid(1800);
            let scheduled = !rng.chance(0.1);
            let no_job = cfg.failures && next_site % 30 == 11;
            if cfg.failures && next_site % 30 == 23 && scheduled && !unpaired && !unknown_email {
                w.clock_locked.push(appt_id.clone());
            }
            w.appointments.push(Appointment {
                id: appt_id,
                job: (!no_job).then_some(job_id),
                status: if scheduled { AppointmentStatus::Scheduled } else { AppointmentStatus::Unscheduled },
                // With failures, an unscheduled appointment keeps its planned
                // window (it shows on that day's report, not scheduled).
                window_start: (scheduled || cfg.failures).then(|| Ts::from_secs(ws)),
                window_end: (scheduled || cfg.failures).then(|| Ts::from_secs(ws + 7200)),
                techs: vec![user_id.clone()],
            });
            // On site.
            let dwell = rng.range_i64(40 * 60, 90 * 60);
            let until = t + dwell;
            while t < until {
                t += 10;
                track.at(&mut rng, t, site, 0.0, cfg.noise_m);
            }
        }
        for (ft, p, speed) in track.fixes {
            let ping = Ping {
                vehicle: track.vehicle.clone(),
                time: Ts::from_secs(ft),
                lat: p.0,
                lon: p.1,
                speed_mph: Some(speed.max(0.0)),
                accuracy_m: None,
            };
            let release = if rng.chance(cfg.late_rate) { ft + rng.range_i64(300, 1800) } else { ft };
            if rng.chance(cfg.duplicate_rate) {
                pings.push(ScheduledPing {
                    ping: ping.clone(),
                    release_at: Ts::from_secs(release + rng.range_i64(0, 120)),
                });
            }
            pings.push(ScheduledPing { ping, release_at: Ts::from_secs(release) });
        }
    }
    pings.sort_by(|a, b| {
        (a.release_at, &a.ping.vehicle, a.ping.time).cmp(&(b.release_at, &b.ping.vehicle, b.ping.time))
    });
    w.pings = pings;
    w
}

/// How far apart the appointment ids of two days of [`generate_days`] are.
const APPOINTMENTS_PER_DAY: i64 = 1_000_000;

/// `days` working days of the same fleet, one a day from `cfg.day_start`:
/// recurring work, the same sites, jobs and drives every day (the first
/// day's [`generate`], moved on a day at a time), each day with its own
/// appointments (day `d`'s ids are the first day's plus `d × 1 000 000`)
/// and En Route presses. A later day holds only what is new that day:
/// appointments, clock events, fixes and locked appointments (the first
/// day's pairings are open-ended).
pub fn generate_days(cfg: &FleetConfig, days: u32) -> Vec<World> {
    (0..days as i64)
        .map(|d| {
            let w = generate(&FleetConfig { day_start: cfg.day_start.plus_millis(d * 86_400_000), ..cfg.clone() });
            if d == 0 {
                return w;
            }
            let id = |a: &Id| match a.as_str().parse::<i64>() {
                Ok(n) => Id::number(n + d * APPOINTMENTS_PER_DAY),
                Err(_) => Id::text(format!("{a}-d{d}")),
            };
            World {
                tenant: w.tenant,
                appointments: w.appointments.into_iter().map(|a| Appointment { id: id(&a.id), ..a }).collect(),
                clocks: w.clocks.into_iter().map(|c| ClockEvent { appointment: id(&c.appointment), ..c }).collect(),
                pings: w.pings,
                clock_locked: w.clock_locked.iter().map(id).collect(),
                ..World::default()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use super::*;

    fn day() -> World {
        generate(&FleetConfig { technicians: 12, seed: 42, ..FleetConfig::default() })
    }

    #[test]
    fn deterministic() {
        let a = serde_json::to_string(&day()).unwrap();
        let b = serde_json::to_string(&day()).unwrap();
        assert_eq!(a, b);
        let other =
            serde_json::to_string(&generate(&FleetConfig { technicians: 12, seed: 43, ..FleetConfig::default() }))
                .unwrap();
        assert_ne!(a, other);
    }

    #[test]
    fn fixes_are_valid_and_30_to_120_s_apart() {
        let w = day();
        assert!(w.pings.windows(2).all(|p| p[0].release_at <= p[1].release_at));
        let mut by_vehicle: BTreeMap<&Id, Vec<i64>> = BTreeMap::new();
        for sp in &w.pings {
            let p = &sp.ping;
            assert!(p.lat.is_finite() && p.lon.is_finite() && p.lat.abs() <= 90.0 && p.lon.abs() <= 180.0);
            assert_eq!(p.time.millis() % 1000, 0);
            assert!(p.speed_mph.is_some_and(|s| (0.0..80.0).contains(&s)), "{p:?}");
            assert!(sp.release_at >= p.time);
            by_vehicle.entry(&p.vehicle).or_default().push(p.time.millis() / 1000);
        }
        assert_eq!(by_vehicle.len(), 12);
        for times in by_vehicle.values_mut() {
            times.sort();
            times.dedup();
            assert!(times.windows(2).all(|w| (30..=120).contains(&(w[1] - w[0]))), "{times:?}");
            assert!(times.len() > 100, "a day has many fixes: {}", times.len());
        }
    }

    #[test]
    fn duplicates_and_late_points_occur() {
        let w = generate(&FleetConfig {
            technicians: 12,
            seed: 42,
            late_rate: 0.05,
            duplicate_rate: 0.05,
            ..FleetConfig::default()
        });
        let mut seen = HashSet::new();
        let dups = w.pings.iter().filter(|p| !seen.insert((p.ping.vehicle.clone(), p.ping.time))).count();
        let late = w.pings.iter().filter(|p| p.release_at.millis() - p.ping.time.millis() >= 300_000).count();
        let n = w.pings.len();
        assert!(dups > n / 50 && dups < n / 10, "{dups} of {n}");
        assert!(late > n / 50 && late < n / 10, "{late} of {n}");
    }

    #[test]
    fn every_scheduled_appointment_is_visited_after_en_route() {
        let w = day();
        assert!(w.appointments.len() >= 36);
        for a in &w.appointments {
            let job = w.jobs.iter().find(|j| Some(&j.id) == a.job.as_ref()).unwrap();
            let loc = w.locations.iter().find(|l| Some(&l.id) == job.location.as_ref()).unwrap();
            let tech = &a.techs[0];
            let vehicle = Id::text(format!("veh-{:03}", tech.as_str().parse::<i64>().unwrap() - 1000));
            let en_route = w.clocks.iter().find(|c| c.appointment == a.id && &c.user == tech).unwrap().time;
            let arrival = w
                .pings
                .iter()
                .filter(|p| p.ping.vehicle == vehicle && p.ping.time > en_route)
                .find(|p| distance_m((p.ping.lat, p.ping.lon), (loc.lat.unwrap(), loc.lon.unwrap())) < 150.0)
                .map(|p| p.ping.time);
            let arrival = arrival.unwrap_or_else(|| panic!("appointment {} never visited", a.id));
            if let Some((s, e)) = a.window() {
                assert!(
                    arrival.millis() >= s.millis() - 8 * 3_600_000 && arrival.millis() <= e.millis() + 8 * 3_600_000
                );
            }
        }
        let emails: HashSet<_> =
            w.users.iter().filter(|u| u.tech).map(|u| crate::model::normalize_email(u.email.as_deref())).collect();
        assert!(w.drivers.iter().all(|d| emails.contains(&crate::model::normalize_email(d.email.as_deref()))));
    }

    #[test]
    fn a_day_with_failures_has_each_in_a_few_percent_of_rows() {
        let w = generate(&FleetConfig { technicians: 24, seed: 7, failures: true, ..FleetConfig::default() });
        let appts = w.appointments.len();
        assert!(appts >= 72, "{appts}");
        let paired: HashSet<_> = w.pairings.iter().map(|p| p.driver.clone()).collect();
        assert_eq!(w.drivers.iter().filter(|d| !paired.contains(&d.id)).count(), 1, "one technician unpaired");
        let emails: HashSet<_> =
            w.users.iter().filter(|u| u.tech).map(|u| crate::model::normalize_email(u.email.as_deref())).collect();
        let unknown = w.drivers.iter().filter(|d| !emails.contains(&crate::model::normalize_email(d.email.as_deref())));
        assert_eq!(unknown.count(), 1, "one technician's Azuga email is not theirs at ServiceTrade");
        let no_job = w.appointments.iter().filter(|a| a.job.is_none()).count();
        assert!((1..=appts / 20).contains(&no_job), "{no_job} of {appts} without a job");
        assert!((1..=appts / 20).contains(&w.clock_locked.len()), "{:?}", w.clock_locked);
        for id in &w.clock_locked {
            let a = w.appointments.iter().find(|a| &a.id == id).unwrap();
            assert!(
                a.job.is_some() && a.status == AppointmentStatus::Scheduled,
                "a locked appointment would be clocked"
            );
        }
        let unscheduled = w.appointments.iter().filter(|a| a.status != AppointmentStatus::Scheduled).count();
        assert!((1..=appts / 5).contains(&unscheduled), "{unscheduled} of {appts} not scheduled");
        let plain = generate(&FleetConfig { technicians: 24, seed: 7, ..FleetConfig::default() });
        assert!(plain.clock_locked.is_empty() && plain.appointments.iter().all(|a| a.job.is_some()));
        assert_eq!(plain.pairings.len(), 24);
    }

    #[test]
    fn days_are_the_same_fleet_and_sites_with_new_appointments_each_day() {
        let cfg = FleetConfig { technicians: 6, seed: 3, ..FleetConfig::default() };
        let days = generate_days(&cfg, 3);
        assert_eq!(days.len(), 3);
        assert_eq!(serde_json::to_string(&days[0]).unwrap(), serde_json::to_string(&generate(&cfg)).unwrap());
        let mut ids = HashSet::new();
        for (d, w) in days.iter().enumerate() {
            if d > 0 {
                assert!(w.users.is_empty() && w.drivers.is_empty() && w.pairings.is_empty() && w.locations.is_empty());
                assert!(w.jobs.is_empty() && w.contacts.is_empty() && w.offices.is_empty() && w.vehicles.is_empty());
                let jobs: HashSet<_> = days[0].jobs.iter().map(|j| Some(j.id.clone())).collect();
                assert!(w.appointments.iter().all(|a| jobs.contains(&a.job)), "day {d}: the first day's jobs");
            }
            assert_eq!(w.appointments.len(), days[0].appointments.len());
            for a in &w.appointments {
                assert!(ids.insert(a.id.clone()), "appointment {} again on day {d}", a.id);
            }
            let names: HashSet<_> = w.appointments.iter().map(|a| a.id.clone()).collect();
            assert!(w.clocks.iter().all(|c| names.contains(&c.appointment)), "day {d}: its own En Route presses");
            let from = cfg.day_start.plus_millis(d as i64 * 86_400_000);
            let to = from.plus_millis(86_400_000);
            assert!(w.pings.iter().all(|p| from.minus_millis(3_600_000) <= p.ping.time && p.ping.time < to), "day {d}");
        }
    }
}
