//! The engine's state: mirrored entities, their indexes, and what has been
//! decided per appointment (fence) and per appointment × technician
//! (assignment).
//!
//! Invariants:
//! - Assignments are kept while their appointment is: they hold the evidence
//!   the Activity Report needs even after a technician is unassigned or the
//!   fence is gone. Only retention ([`super::retention`]) removes an
//!   appointment with its fence record and assignments, leaving its last
//!   fence revision in `retired` so that a revived appointment's commands
//!   continue the revision sequence.
//! - `watches[v]` holds one entry per (appointment, technician) whose driver
//!   drives vehicle `v` at some time near the appointment's window; it is
//!   derived from the entities and rebuilt whenever they change
//!   ([`super::watches`]), and is the only thing a ping touches.
//! - Nothing here is iterated in hash order on a path that produces output.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::command::FenceChange;
use super::event::Route;
use super::timeline::{ClockLine, Interval, PairingBook};
use crate::geo::{BBox, PreparedFence};
use crate::model::{normalize_email, Appointment, Contact, Driver, Id, Job, Location, Office, Ts, User, Vehicle};

/// What part of the engine an `Engine` runs (the stages are the `route` module's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Everything, in one state (pure runs, scenarios, replay).
    #[default]
    Whole,
    /// Stage one: entities and clock events in, fence and Service Link
    /// commands and routes out; pings are not its input.
    Appointments,
    /// Stage two: routes and pings in, clock commands out; entity, clock
    /// and tick events are not its input.
    Vehicles,
}

/// Stage two's record of one appointment: the last watches route applied
/// per vehicle (what its rows hold and a restore replays).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Routed {
    pub generation: u32,
    pub vehicles: BTreeMap<Id, Route>,
}

/// A row of the state, by what it holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RowKey {
    User(Id),
    Location(Id),
    Job(Id),
    Driver(Id),
    Vehicle(Id),
    Pairings(Id),
    Office(Id),
    Contact(Id),
    Appointment(Id),
    LastPing(Id),
    Retired(Id),
    /// Stage two: the routes applied for an appointment.
    Routes(Id),
    Meta,
}

impl RowKey {
    pub fn encode(&self) -> Vec<u8> {
        let (tag, id) = match self {
            RowKey::User(id) => ("u/", id),
            RowKey::Location(id) => ("l/", id),
            RowKey::Job(id) => ("j/", id),
            RowKey::Driver(id) => ("d/", id),
            RowKey::Vehicle(id) => ("v/", id),
            RowKey::Pairings(id) => ("p/", id),
            RowKey::Office(id) => ("o/", id),
            RowKey::Contact(id) => ("c/", id),
            RowKey::Appointment(id) => ("a/", id),
            RowKey::LastPing(id) => ("g/", id),
            RowKey::Retired(id) => ("r/", id),
            RowKey::Routes(id) => ("w/", id),
            RowKey::Meta => return b"m".to_vec(),
        };
        let mut k = tag.as_bytes().to_vec();
        k.extend_from_slice(id.as_str().as_bytes());
        k
    }
}

/// Why something did not happen, as shown in the Activity Report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    NotScheduled,
    NoJob,
    NoLocationCoordinates,
    NoTechAssigned,
    TechNotFoundInAzuga,
    TechNotPaired,
    NoEnrouteClockIn,
    VehicleDidNotArrive,
    ArrivedOutsideWindow,
    /// Written by versions before contacts were mirrored (read, never
    /// decided now: [`Reason::NoContactEmail`] replaced it).
    NoLocationEmail,
    /// Neither the location's primary contact nor the location has a valid email.
    NoContactEmail,
}

impl Reason {
    /// The reason's code (its JSON form).
    pub fn code(self) -> &'static str {
        match self {
            Reason::NotScheduled => "not_scheduled",
            Reason::NoJob => "no_job",
            Reason::NoLocationCoordinates => "no_location_coordinates",
            Reason::NoTechAssigned => "no_tech_assigned",
            Reason::TechNotFoundInAzuga => "tech_not_found_in_azuga",
            Reason::TechNotPaired => "tech_not_paired",
            Reason::NoEnrouteClockIn => "no_enroute_clock_in",
            Reason::VehicleDidNotArrive => "vehicle_did_not_arrive",
            Reason::ArrivedOutsideWindow => "arrived_outside_window",
            Reason::NoLocationEmail => "no_location_email",
            Reason::NoContactEmail => "no_contact_email",
        }
    }

    /// The reason in words.
    pub fn text(self) -> &'static str {
        match self {
            Reason::NotScheduled => "Appointment not scheduled",
            Reason::NoJob => "Appointment has no job",
            Reason::NoLocationCoordinates => "Job location has no coordinates",
            Reason::NoTechAssigned => "No technician assigned",
            Reason::TechNotFoundInAzuga => "Technician's email not found among Azuga drivers",
            Reason::TechNotPaired => "Technician not paired with a vehicle",
            Reason::NoEnrouteClockIn => "Arrived without an En Route clock-in: not clocked On Site",
            Reason::VehicleDidNotArrive => "Vehicle never arrived",
            Reason::ArrivedOutsideWindow => "Arrived outside the appointment window",
            Reason::NoLocationEmail => "Service Link not sent: the location has no valid email",
            Reason::NoContactEmail => {
                "Service Link not sent: neither the primary contact nor the location has a valid email"
            }
        }
    }
}

/// A ping that decided something (or would have), for the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub time: Ts,
    pub vehicle: Id,
    pub lat: f64,
    pub lon: f64,
    /// Great-circle distance to the fence centre, rounded to 0.1 m.
    pub distance_m: f64,
}

/// Two consecutive pings of a vehicle, both outside, whose straight path
/// crossed the fence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Crossing {
    pub from: Ts,
    pub to: Ts,
    pub vehicle: Id,
}

/// A ping as kept for dwell and late-clock-event evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub inside: bool,
    pub evidence: Evidence,
}

/// At most this many samples are kept per assignment (oldest dropped).
pub const MAX_SAMPLES: usize = 256;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub enum LinkState {
    #[default]
    NotAttempted,
    Sent {
        at: Ts,
        vehicle: Id,
        to: String,
    },
    Failed(Reason),
}

/// One technician on one appointment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub enroute: ClockLine,
    pub onsite: ClockLine,
    /// In-window pings not yet decisive, sorted by time, distinct times.
    pub samples: Vec<Sample>,
    pub arrival: Option<Evidence>,
    /// First inside-the-fence ping within the window, decisive or not.
    pub inside_in_window: Option<Evidence>,
    /// First inside-the-fence ping outside the window.
    pub inside_outside_window: Option<Evidence>,
    /// On Site clock-out sent on exit.
    pub exited: Option<Evidence>,
    /// After arrival, the first of the newest pings beyond the exit buffer
    /// with none back within it since: the start of a possible exit, decided
    /// once pings stay out `min_exit_dwell_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaving: Option<Evidence>,
    /// First pair of consecutive outside pings whose straight path crossed
    /// the fence within the window (sparse GPS skipping over it).
    pub passed_through: Option<Crossing>,
    pub link: LinkState,
    /// The ping nearest the fence centre within the window, among those
    /// within [`super::arrival::NEAR_M`] of the fence, until an arrival is
    /// decided (ties: the earlier ping): why a vehicle did not arrive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closest: Option<Evidence>,
    /// How many times the appointment was revived after retirement when
    /// this assignment began ([`super::retention`]); part of its command ids.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Assignment {
    /// Inserts a sample in time order; false for a duplicate time.
    pub fn insert_sample(&mut self, s: Sample) -> bool {
        match self.samples.binary_search_by_key(&s.evidence.time, |x| x.evidence.time) {
            Ok(_) => false,
            Err(i) => {
                self.samples.insert(i, s);
                if self.samples.len() > MAX_SAMPLES {
                    self.samples.remove(0);
                }
                true
            }
        }
    }
}

impl Assignment {
    /// Unites clock facts into this assignment's lines; whether any was new.
    pub fn merge_lines(&mut self, enroute: &ClockLine, onsite: &ClockLine) -> bool {
        let mut changed = false;
        for (t, action) in enroute.events() {
            changed |= self.enroute.insert(*t, *action);
        }
        for (t, action) in onsite.events() {
            changed |= self.onsite.insert(*t, *action);
        }
        changed
    }

    /// Adds what another task learned about the same assignment (stage two
    /// holds the ping evidence, stage one the clock events and the Service
    /// Link): clock facts and samples are united, the earliest evidence of
    /// each kind is kept, the link stays this one's. Another generation's
    /// assignment is a different visit and is ignored.
    pub fn absorb(&mut self, o: &Assignment) {
        if o.generation != self.generation {
            return;
        }
        self.merge_lines(&o.enroute, &o.onsite);
        for s in &o.samples {
            self.insert_sample(s.clone());
        }
        for (mine, theirs) in [
            (&mut self.arrival, &o.arrival),
            (&mut self.inside_in_window, &o.inside_in_window),
            (&mut self.inside_outside_window, &o.inside_outside_window),
            (&mut self.exited, &o.exited),
        ] {
            if let Some(e) = theirs {
                keep_earliest(mine, e);
            }
        }
        if let Some(c) = &o.passed_through {
            if self.passed_through.as_ref().is_none_or(|x| c.from < x.from) {
                self.passed_through = Some(c.clone());
            }
        }
        if let Some(e) = &o.closest {
            keep_closest(&mut self.closest, e);
        }
        if self.leaving.is_none() && self.exited.is_none() && o.exited.is_none() {
            self.leaving = o.leaving.clone();
        }
        if self.arrival.is_some() {
            self.samples = Vec::new();
        }
    }
}

/// Remember the earliest evidence.
pub fn keep_earliest(slot: &mut Option<Evidence>, e: &Evidence) {
    if slot.as_ref().is_none_or(|x| e.time < x.time) {
        *slot = Some(e.clone());
    }
}

/// Remember the evidence nearest the fence centre (the earlier of equals);
/// whether it replaced what was there.
pub fn keep_closest(slot: &mut Option<Evidence>, e: &Evidence) -> bool {
    let closer = slot.as_ref().is_none_or(|x| (e.distance_m, e.time) < (x.distance_m, x.time));
    if closer {
        *slot = Some(e.clone());
    }
    closer
}

/// What is kept of a retired appointment (until retention forgets that too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retired {
    pub revision: u32,
    pub generation: u32,
    /// The event time it was retired at (absent in rows of older versions:
    /// then the first tick after loading stands for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Ts>,
}

/// An appointment revived after retirement: its generation, and the event
/// time it was revived at. It takes only pings and clock events from then
/// on (earlier ones belong to a visit of an earlier generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    pub n: u32,
    pub since: Ts,
}

/// An appointment's fence: what Azuga holds (`live`), the last spec it had
/// (kept for reporting after removal), and the hot-path geometry.
#[derive(Debug, Clone, Default)]
pub struct FenceRecord {
    pub revision: u32,
    pub live: Option<FenceChange>,
    pub last: Option<FenceChange>,
    pub prepared: Option<Arc<PreparedFence>>,
    /// Why the appointment has no fence now, when it has none.
    pub no_fence: Option<Reason>,
}

/// A (appointment, technician) the pings of one vehicle are tested for.
#[derive(Debug, Clone)]
pub struct Watch {
    pub appointment: Id,
    pub user: Id,
    pub slot: usize,
    pub fence: Arc<PreparedFence>,
    /// `[window_start − h, window_end + h]`
    pub earliest: Ts,
    pub latest: Ts,
    /// When this technician's driver drives this vehicle.
    pub paired: Vec<Interval>,
}

/// The part of a [`Watch`] every ping reads, kept inline in the vehicle's
/// hash-map bucket: a ping that every box rejects costs one cache miss.
#[derive(Debug, Clone, Copy)]
pub struct HotWatch {
    /// Copy of `fence.bbox()`.
    pub bbox: BBox,
    /// `bbox` grown by [`super::arrival::NEAR_M`]: pings in it may be the
    /// closest approach (contains `bbox`).
    pub near: BBox,
    /// Hull of `paired`; exact when there is one interval (the usual case).
    pub paired_hull: Interval,
    pub single_pairing: bool,
    /// Nothing this watch could still decide.
    pub done: bool,
}

/// One vehicle's watches: `hot[i]` and `cold[i]` describe the same watch.
#[derive(Debug, Clone, Default)]
pub struct VehicleWatches {
    pub hot: SmallVec<[HotWatch; 6]>,
    pub cold: Vec<Watch>,
    /// The vehicle's latest ping by event time (for pass-through detection).
    pub last: Option<(Ts, crate::geo::LatLon)>,
    /// `last` changed since the last drain of the changed rows.
    pub last_dirty: bool,
}

impl VehicleWatches {
    pub fn push(&mut self, w: Watch, done: bool) {
        let from = w.paired.iter().map(|i| i.0).min().unwrap_or(Ts::MAX);
        let to = w.paired.iter().map(|i| i.1).max().unwrap_or(Ts::MIN);
        let bbox = w.fence.bbox();
        self.hot.push(HotWatch {
            bbox,
            near: bbox.grown_by_m(super::arrival::NEAR_M),
            paired_hull: (from, to),
            single_pairing: w.paired.len() == 1,
            done,
        });
        self.cold.push(w);
    }

    /// Drops the watches of one appointment.
    pub fn remove_appointment(&mut self, appt: &Id) {
        let mut i = 0;
        while i < self.cold.len() {
            if &self.cold[i].appointment == appt {
                self.cold.remove(i);
                self.hot.remove(i);
            } else {
                i += 1;
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.cold.is_empty()
    }
}

impl HotWatch {
    /// Within the hull of the pairing intervals: exact when
    /// `single_pairing`, otherwise the caller checks `Watch::paired_at`.
    #[inline(always)]
    pub fn paired_may_cover(&self, t: Ts) -> bool {
        self.paired_hull.0 <= t && t < self.paired_hull.1
    }
}

impl Watch {
    pub fn paired_at(&self, t: Ts) -> bool {
        self.paired.iter().any(|(f, to)| *f <= t && t < *to)
    }
}

/// Reverse indexes from an entity to the appointments it affects.
#[derive(Debug, Clone, Default)]
pub struct Index {
    pub jobs_by_location: FxHashMap<Id, BTreeSet<Id>>,
    pub appts_by_job: FxHashMap<Id, BTreeSet<Id>>,
    pub appts_by_tech: FxHashMap<Id, BTreeSet<Id>>,
    pub users_by_email: FxHashMap<String, BTreeSet<Id>>,
    pub drivers_by_email: FxHashMap<String, BTreeSet<Id>>,
    /// contact → the locations naming it their primary contact.
    pub locations_by_contact: FxHashMap<Id, BTreeSet<Id>>,
}

#[derive(Debug, Clone, Default)]
pub struct State {
    pub users: FxHashMap<Id, User>,
    pub locations: FxHashMap<Id, Location>,
    pub jobs: FxHashMap<Id, Job>,
    pub appointments: BTreeMap<Id, Appointment>,
    pub drivers: FxHashMap<Id, Driver>,
    pub vehicles: FxHashMap<Id, Vehicle>,
    pub offices: FxHashMap<Id, Office>,
    pub contacts: FxHashMap<Id, Contact>,
    pub pairings: PairingBook,
    pub index: Index,
    pub fences: BTreeMap<Id, FenceRecord>,
    pub assignments: Vec<Assignment>,
    /// Slots of retired assignments, reused before `assignments` grows.
    pub free_slots: Vec<usize>,
    pub slots: FxHashMap<(Id, Id), usize>,
    /// appointment → its assignment slots, by technician, in creation order.
    pub slots_of: FxHashMap<Id, SmallVec<[(Id, usize); 2]>>,
    pub watches: FxHashMap<Id, VehicleWatches>,
    /// appointment → (drop time, vehicles holding its watches)
    pub watched: FxHashMap<Id, (Ts, Vec<Id>)>,
    /// `(active_to, appointment)` of fences live in Azuga, for expiry.
    pub live_until: BTreeSet<(Ts, Id)>,
    /// `(drop time, appointment)` of appointments with watches.
    pub watch_until: BTreeSet<(Ts, Id)>,
    /// `(window_end, appointment)` of appointments with a window, for retention.
    pub retire_at: BTreeSet<(Ts, Id)>,
    /// Appointments holding state without a usable window (none, an
    /// inverted one, or only clock events so far), with the event time they
    /// were last changed at, for retention ([`State::touch_undated`]).
    pub undated: FxHashMap<Id, Ts>,
    /// `(last changed, appointment)` of `undated`; `Ts::MIN`: changed before
    /// the first tick (the next tick stamps it).
    pub undated_at: BTreeSet<(Ts, Id)>,
    /// Retired appointments: their last fence revision and generation.
    pub retired: FxHashMap<Id, Retired>,
    /// `(retired at, appointment)` of `retired`, for its own retention
    /// (`Ts::MIN` as in `undated_at`).
    pub retired_at: BTreeSet<(Ts, Id)>,
    /// Appointments revived after retirement (absent: first generation).
    pub generations: FxHashMap<Id, Generation>,
    /// Event-time progress from ticks.
    pub watermark: Option<Ts>,
    /// Which stage this state serves.
    pub role: Role,
    /// Stage one: routes decided since the last `Engine::drain_routes`.
    pub routes_out: Vec<Route>,
    /// Stage one: watches routes published per appointment (this generation).
    pub route_seq: FxHashMap<Id, u64>,
    /// Stage one: every vehicle an appointment was routed to (this generation).
    pub routed_vehicles: FxHashMap<Id, Vec<Id>>,
    /// Stage two: what routes told it, per appointment.
    pub routed: FxHashMap<Id, Routed>,

    /// What changed since the last drain, when tracking (rows: see the `persist` module).
    pub dirty: Dirty,
}

/// Rows of the state changed since the last drain. Off (and free) unless
/// `tracking`: pure runs never pay for it.
#[derive(Debug, Clone, Default)]
pub struct Dirty {
    pub tracking: bool,
    pub rows: BTreeSet<RowKey>,
    /// Vehicles whose `last` changed (each once; see `VehicleWatches::last_dirty`).
    pub vehicles: Vec<Id>,
}

impl Dirty {
    #[inline]
    pub fn mark(&mut self, key: impl FnOnce() -> RowKey) {
        if self.tracking {
            self.rows.insert(key());
        }
    }
}

fn add<K: std::hash::Hash + Eq>(map: &mut FxHashMap<K, BTreeSet<Id>>, key: Option<K>, id: &Id) {
    if let Some(k) = key {
        map.entry(k).or_default().insert(id.clone());
    }
}

fn del<K: std::hash::Hash + Eq>(map: &mut FxHashMap<K, BTreeSet<Id>>, key: Option<K>, id: &Id) {
    if let Some(k) = key {
        if let Some(set) = map.get_mut(&k) {
            set.remove(id);
            if set.is_empty() {
                map.remove(&k);
            }
        }
    }
}

impl State {
    /// Takes `appt`'s watches off `vehicle`; a vehicle left with none is
    /// forgotten, its latest ping too (that row is marked for deletion).
    pub fn unwatch_vehicle(&mut self, vehicle: &Id, appt: &Id) {
        let Some(list) = self.watches.get_mut(vehicle) else { return };
        list.remove_appointment(appt);
        if list.is_empty() {
            if list.last.is_some() && self.dirty.tracking {
                self.dirty.vehicles.push(vehicle.clone());
            }
            self.watches.remove(vehicle);
        }
    }

    /// The assignment slot for (appointment, user), created on first use.
    pub fn slot(&mut self, appointment: &Id, user: &Id) -> usize {
        if let Some(slot) = self.slots.get(&(appointment.clone(), user.clone())) {
            return *slot;
        }
        let slot = match self.free_slots.pop() {
            Some(free) => free,
            None => {
                self.assignments.push(Assignment::default());
                self.assignments.len() - 1
            }
        };
        self.assignments[slot].generation = self.generations.get(appointment).map_or(0, |g| g.n);
        self.slots.insert((appointment.clone(), user.clone()), slot);
        self.slots_of.entry(appointment.clone()).or_default().push((user.clone(), slot));
        slot
    }

    pub fn assignment(&self, appointment: &Id, user: &Id) -> Option<&Assignment> {
        self.slots.get(&(appointment.clone(), user.clone())).map(|s| &self.assignments[*s])
    }

    /// The Azuga driver matched to a ServiceTrade user by email (the lowest
    /// driver id when several share an address).
    pub fn driver_of(&self, user: &Id) -> Option<&Id> {
        let email = normalize_email(self.users.get(user)?.email.as_deref())?;
        self.index.drivers_by_email.get(&email)?.iter().next()
    }

    fn appts_of_users(&self, users: Option<&BTreeSet<Id>>, out: &mut BTreeSet<Id>) {
        for u in users.into_iter().flatten() {
            out.extend(self.index.appts_by_tech.get(u).into_iter().flatten().cloned());
        }
    }

    fn appts_of_email(&self, email: Option<String>, out: &mut BTreeSet<Id>) {
        if let Some(e) = email {
            self.appts_of_users(self.index.users_by_email.get(&e), out);
        }
    }

    fn appts_of_jobs<'a>(&self, jobs: impl IntoIterator<Item = &'a Id>, out: &mut BTreeSet<Id>) {
        for j in jobs {
            out.extend(self.index.appts_by_job.get(j).into_iter().flatten().cloned());
        }
    }

    /// Upserts or removes a user; returns the appointments to refresh.
    pub fn put_user(&mut self, id: &Id, new: Option<User>) -> BTreeSet<Id> {
        let old = match new {
            Some(u) => self.users.insert(id.clone(), u),
            None => self.users.remove(id),
        };
        let old_email = old.as_ref().and_then(|u| normalize_email(u.email.as_deref()));
        let new_email = self.users.get(id).and_then(|u| normalize_email(u.email.as_deref()));
        if old.as_ref() == self.users.get(id) {
            return BTreeSet::new();
        }
        del(&mut self.index.users_by_email, old_email, id);
        add(&mut self.index.users_by_email, new_email, id);
        self.index.appts_by_tech.get(id).cloned().unwrap_or_default()
    }

    pub fn put_location(&mut self, id: &Id, new: Option<Location>) -> BTreeSet<Id> {
        let old = match new {
            Some(l) => self.locations.insert(id.clone(), l),
            None => self.locations.remove(id),
        };
        let mut out = BTreeSet::new();
        if old.as_ref() != self.locations.get(id) {
            let new_contact = self.locations.get(id).and_then(|l| l.primary_contact.clone());
            del(&mut self.index.locations_by_contact, old.and_then(|l| l.primary_contact), id);
            add(&mut self.index.locations_by_contact, new_contact, id);
            self.appts_of_jobs(self.index.jobs_by_location.get(id).into_iter().flatten(), &mut out);
        }
        out
    }

    /// The appointments of the jobs at `locations`.
    pub(super) fn appts_at_locations<'a>(&self, locations: impl IntoIterator<Item = &'a Id>) -> BTreeSet<Id> {
        let mut out = BTreeSet::new();
        for l in locations {
            self.appts_of_jobs(self.index.jobs_by_location.get(l).into_iter().flatten(), &mut out);
        }
        out
    }

    pub fn put_job(&mut self, id: &Id, new: Option<Job>) -> BTreeSet<Id> {
        let old = match new {
            Some(j) => self.jobs.insert(id.clone(), j),
            None => self.jobs.remove(id),
        };
        if old.as_ref() == self.jobs.get(id) {
            return BTreeSet::new();
        }
        del(&mut self.index.jobs_by_location, old.and_then(|j| j.location), id);
        add(&mut self.index.jobs_by_location, self.jobs.get(id).and_then(|j| j.location.clone()), id);
        let mut out = BTreeSet::new();
        self.appts_of_jobs([id], &mut out);
        out
    }

    /// A delete marks an appointment `deleted`; only retention removes one
    /// ([`State::remove_appointment`]). A retired appointment seen again
    /// starts from its retired fence revision.
    pub fn put_appointment(&mut self, a: Appointment) -> BTreeSet<Id> {
        let id = a.id.clone();
        if let Some(r) = self.retired.remove(&id) {
            self.retired_at.remove(&(r.at.unwrap_or(Ts::MIN), id.clone()));
            self.fences.insert(id.clone(), FenceRecord { revision: r.revision, ..FenceRecord::default() });
            let since = self.watermark.unwrap_or(Ts::MIN);
            self.generations.insert(id.clone(), Generation { n: r.generation + 1, since });
            self.dirty.mark(|| RowKey::Retired(id.clone()));
        }
        let old = self.appointments.insert(id.clone(), a);
        let new = &self.appointments[&id];
        if old.as_ref() == Some(new) {
            return BTreeSet::new();
        }
        let (new_job, new_techs, new_end) = (new.job.clone(), new.techs.clone(), new.window().map(|w| w.1));
        if let Some(old) = old {
            self.unindex_appointment(&id, old);
        }
        add(&mut self.index.appts_by_job, new_job, &id);
        for t in new_techs {
            add(&mut self.index.appts_by_tech, Some(t), &id);
        }
        match new_end {
            Some(end) => {
                self.retire_at.insert((end, id.clone()));
                self.set_undated(&id, None);
            }
            None => self.touch_undated(&id),
        }
        BTreeSet::from([id])
    }

    /// Notes that `id` holds state without a usable window, changed now
    /// (at the watermark): retention forgets it that long after.
    pub fn touch_undated(&mut self, id: &Id) {
        self.set_undated(id, Some(self.watermark.unwrap_or(Ts::MIN)));
    }

    /// Sets (or, with `None`, clears) when undated `id` was last changed.
    pub fn set_undated(&mut self, id: &Id, at: Option<Ts>) {
        let old = match at {
            Some(t) => {
                self.undated_at.insert((t, id.clone()));
                self.undated.insert(id.clone(), t).filter(|o| *o != t)
            }
            None => self.undated.remove(id),
        };
        if let Some(o) = old {
            self.undated_at.remove(&(o, id.clone()));
        }
    }

    /// Records a retired appointment (`at`: when).
    pub fn put_retired(&mut self, id: &Id, r: Retired) {
        if let Some(old) = self.retired.insert(id.clone(), r) {
            self.retired_at.remove(&(old.at.unwrap_or(Ts::MIN), id.clone()));
        }
        self.retired_at.insert((r.at.unwrap_or(Ts::MIN), id.clone()));
    }

    fn unindex_appointment(&mut self, id: &Id, old: Appointment) {
        if let Some((_, end)) = old.window() {
            self.retire_at.remove(&(end, id.clone()));
        }
        del(&mut self.index.appts_by_job, old.job, id);
        for t in old.techs {
            del(&mut self.index.appts_by_tech, Some(t), id);
        }
    }

    /// Forgets an appointment, its fence record and its assignments (their
    /// slots are reused), keeping its last fence revision in `retired`.
    /// Watches must be dropped by the caller ([`super::watches::rebuild`]
    /// drops them once the appointment is gone).
    pub fn remove_appointment(&mut self, id: &Id) {
        if let Some(old) = self.appointments.remove(id) {
            self.unindex_appointment(id, old);
        }
        self.route_seq.remove(id);
        self.routed_vehicles.remove(id);
        let revision = self.fences.remove(id).map_or(0, |f| f.revision);
        let generation = self.generations.remove(id).map_or(0, |g| g.n);
        self.set_undated(id, None);
        self.put_retired(id, Retired { revision, generation, at: Some(self.watermark.unwrap_or(Ts::MIN)) });
        for (user, slot) in self.slots_of.remove(id).into_iter().flatten() {
            self.slots.remove(&(id.clone(), user));
            self.assignments[slot] = Assignment::default();
            self.free_slots.push(slot);
        }
    }

    pub fn put_driver(&mut self, id: &Id, new: Option<Driver>) -> BTreeSet<Id> {
        let old = match new {
            Some(d) => self.drivers.insert(id.clone(), d),
            None => self.drivers.remove(id),
        };
        if old.as_ref() == self.drivers.get(id) {
            return BTreeSet::new();
        }
        let old_email = old.and_then(|d| normalize_email(d.email.as_deref()));
        let new_email = self.drivers.get(id).and_then(|d| normalize_email(d.email.as_deref()));
        del(&mut self.index.drivers_by_email, old_email.clone(), id);
        add(&mut self.index.drivers_by_email, new_email.clone(), id);
        let mut out = BTreeSet::new();
        self.appts_of_email(old_email, &mut out);
        self.appts_of_email(new_email, &mut out);
        out
    }

    /// Appointments whose technicians match this driver's email.
    pub fn appts_of_driver(&self, driver: &Id) -> BTreeSet<Id> {
        let mut out = BTreeSet::new();
        let email = self.drivers.get(driver).and_then(|d| normalize_email(d.email.as_deref()));
        self.appts_of_email(email, &mut out);
        out
    }
}
