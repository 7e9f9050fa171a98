//! A generated working day: deterministic (seeded) input for load tests,
//! crash tests and benchmarks, as engine events in the order they would be
//! published.
//!
//! World: `techs` technicians, each with a driver (matched by email), a
//! vehicle paired from midnight, and `appointments_per_tech` scheduled
//! appointments at their own sites (circles or 16-gons in a 60 km metro),
//! windows of 2 h every 2 h from 08:00, each preceded by an En Route
//! clock-in. Every vehicle reports every `ping_every_s` from 07:00 for 12 h,
//! parks about an hour at each site (GPS jitter inside the fence), and drives
//! far from its sites in between. Pings are interleaved in time order.

use crate::engine::Event;
use crate::model::{
    Activity, Appointment, AppointmentStatus, ClockAction, ClockEvent, Driver, Id, Job, Location, Pairing, Ping, Ts,
    User, Vehicle,
};
use crate::sim::rng::Rng;

/// What to generate.
#[derive(Debug, Clone)]
pub struct Day {
    pub seed: u64,
    pub techs: usize,
    pub appointments_per_tech: usize,
    pub ping_every_s: i64,
}

/// 2026-11-28T00:00:00Z
pub const DAY0_MS: i64 = 1_795_824_000_000;
const R_DEG_LAT: f64 = 150.0 / 111_195.0;

impl Day {
    /// Entities and clock events first, then every ping in time order.
    pub fn events(&self) -> Vec<Event> {
        self.stream().collect()
    }

    /// The same events as [`Day::events`], generated as they are taken:
    /// memory for the sites only (16 bytes per appointment), so a day of
    /// a million vehicles can be produced without holding it.
    pub fn stream(&self) -> DayEvents {
        DayEvents {
            day: self.clone(),
            rng: Rng::new(self.seed),
            sites: Vec::with_capacity(self.techs * self.appointments_per_tech),
            next: Next::Tech(0),
            buffer: std::collections::VecDeque::new(),
        }
    }

    /// How many events come before the first ping (entities and clock events).
    pub fn entity_count(&self) -> usize {
        self.techs * 4 + self.techs * self.appointments_per_tech * 4
    }

    /// How many pings the day has.
    pub fn ping_count(&self) -> usize {
        if self.appointments_per_tech == 0 {
            return 0;
        }
        self.steps() as usize * self.techs
    }

    fn steps(&self) -> i64 {
        12 * 3600 / self.ping_every_s.max(1)
    }
}

/// Where [`DayEvents`] goes on from.
#[derive(Debug, Clone, Copy)]
enum Next {
    Tech(usize),
    Site(usize),
    Ping(i64, usize),
}

/// The events of a [`Day`], in [`Day::events`]' order, generated lazily.
pub struct DayEvents {
    day: Day,
    rng: Rng,
    sites: Vec<(f64, f64)>,
    next: Next,
    buffer: std::collections::VecDeque<Event>,
}

impl Iterator for DayEvents {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.buffer.pop_front() {
                return Some(e);
            }
            let (techs, per) = (self.day.techs, self.day.appointments_per_tech);
            self.next = match self.next {
                Next::Tech(t) if t < techs => {
                    self.tech(t);
                    Next::Tech(t + 1)
                }
                Next::Tech(_) => Next::Site(0),
                Next::Site(n) if n < techs * per => {
                    self.site(n / per, n % per);
                    Next::Site(n + 1)
                }
                Next::Site(_) => Next::Ping(0, 0),
                Next::Ping(step, t) if per > 0 && step < self.day.steps() && t < techs => {
                    self.ping(step, t);
                    if t + 1 < techs {
                        Next::Ping(step, t + 1)
                    } else {
                        Next::Ping(step + 1, 0)
                    }
                }
                Next::Ping(..) => return None,
            };
        }
    }
}

impl DayEvents {
    fn tech(&mut self, t: usize) {
        let email = format!("tech{t}@fleet.example");
        self.buffer.push_back(Event::User(User {
            id: Id::number(t as i64 + 1),
            name: format!("Tech {t}"),
            email: Some(email.clone()),
            tech: true,
        }));
        self.buffer.push_back(Event::Driver(Driver {
            id: Id::text(format!("d{t}")),
            name: format!("Tech {t}"),
            email: Some(email.to_uppercase()),
        }));
        self.buffer.push_back(Event::Vehicle(Vehicle { id: Id::text(format!("v{t}")), name: format!("Truck {t}") }));
        self.buffer.push_back(Event::Pairing(Pairing {
            driver: Id::text(format!("d{t}")),
            vehicle: Id::text(format!("v{t}")),
            from: Ts(DAY0_MS),
            to: None,
        }));
    }

    fn site(&mut self, t: usize, f: usize) {
        let n = (t * self.day.appointments_per_tech + f) as i64 + 1;
        let (lat, lon) = (35.0 + self.rng.unit() * 0.54, -81.0 + self.rng.unit() * 0.66);
        self.sites.push((lat, lon));
        let polygon = (n % 2 == 0).then(|| polygon(lat, lon));
        self.buffer.push_back(Event::Location(Location {
            id: Id::number(n),
            name: format!("Site {n}"),
            lat: Some(lat),
            lon: Some(lon),
            email: Some(format!("site{n}@customer.example")),
            polygon,
            timezone: Some("America/New_York".into()),
            primary_contact: None,
            offices: Vec::new(),
        }));
        self.buffer.push_back(Event::Job(Job {
            id: Id::number(n),
            number: Some(Id::text(format!("J-{n}"))),
            location: Some(Id::number(n)),
        }));
        let start = DAY0_MS + (8 + 2 * f as i64) * 3_600_000;
        self.buffer.push_back(Event::Appointment(Appointment {
            id: Id::number(n),
            job: Some(Id::number(n)),
            status: AppointmentStatus::Scheduled,
            window_start: Some(Ts(start)),
            window_end: Some(Ts(start + 2 * 3_600_000)),
            techs: vec![Id::number(t as i64 + 1)],
        }));
        self.buffer.push_back(Event::Clock(ClockEvent {
            user: Id::number(t as i64 + 1),
            appointment: Id::number(n),
            activity: Activity::Enroute,
            action: ClockAction::In,
            time: Ts(start - 45 * 60_000),
        }));
    }

    fn ping(&mut self, step: i64, t: usize) {
        let second = step * self.day.ping_every_s;
        let minute = second / 60;
        let per = self.day.appointments_per_tech.max(1) as i64;
        let f = ((minute - 30).max(0) / 120).min(per - 1) as usize;
        let into = (minute - 30) - 120 * f as i64;
        let Some(&(lat, lon)) = self.sites.get(t * self.day.appointments_per_tech + f) else { return };
        let k = lat.to_radians().cos();
        let rng = &mut self.rng;
        let (plat, plon, speed) = if (0..60).contains(&into) {
            (lat + (rng.unit() - 0.5) * 0.0004, lon + (rng.unit() - 0.5) * 0.0004 / k, 0.0)
        } else {
            (lat + 0.02 + rng.unit() * 0.1, lon + 0.02 + rng.unit() * 0.1, 35.0)
        };
        self.buffer.push_back(Event::Ping(Ping {
            vehicle: Id::text(format!("v{t}")),
            time: Ts(DAY0_MS + 7 * 3_600_000 + second * 1000 + (t % 60) as i64 * 500),
            lat: plat,
            lon: plon,
            speed_mph: Some(speed),
            accuracy_m: Some(8.0),
        }));
    }
}

fn polygon(lat: f64, lon: f64) -> Vec<[f64; 2]> {
    let k = lat.to_radians().cos();
    (0..16)
        .map(|i| {
            let a = i as f64 * std::f64::consts::TAU / 16.0;
            [lat + R_DEG_LAT * a.sin(), lon + R_DEG_LAT * a.cos() / k]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Action, Engine};
    use crate::model::Settings;

    #[test]
    fn every_appointment_is_arrived_at_once() {
        let day = Day { seed: 7, techs: 20, appointments_per_tech: 4, ping_every_s: 120 };
        let events = day.events();
        assert_eq!(events, day.events(), "deterministic");
        assert_eq!(events.iter().position(|e| matches!(e, Event::Ping(_))), Some(day.entity_count()));
        assert_eq!(events.len() - day.entity_count(), day.ping_count());
        let mut engine = Engine::new("gen", Settings::default()).unwrap();
        let mut out = Vec::new();
        for e in &events {
            engine.handle(e, &mut out).unwrap();
        }
        let onsite_in = out
            .iter()
            .filter(|c| matches!(&c.action, Action::Clock(k) if k.activity == Activity::Onsite && k.action == ClockAction::In))
            .count();
        assert_eq!(onsite_in, 80);
        assert_eq!(out.iter().filter(|c| matches!(c.action, Action::SendServiceLink(_))).count(), 80);
    }
}
