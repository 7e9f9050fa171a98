use std::collections::HashMap;

use super::super::track::Fix;
use super::*;
use crate::engine::Engine;
use crate::geo::EARTH_RADIUS_M;
use crate::model::Ping;
use crate::report::join::join;
use crate::report::render::{for_day, zone};
use crate::report::rows;
use crate::scenario::Scenario;

const M_PER_DEG: f64 = EARTH_RADIUS_M * std::f64::consts::PI / 180.0;

/// The map's day: see the file.
pub(crate) const SCENARIO: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scenarios/map/day.yaml"));

pub(crate) fn engine(yaml: &str) -> Engine {
    let sc = Scenario::from_yaml(yaml, "view.yaml").unwrap();
    let mut e = Engine::new(sc.tenant.clone(), sc.settings.clone()).unwrap();
    let mut out = Vec::new();
    for ev in sc.all_events() {
        e.handle(&ev, &mut out).unwrap();
    }
    e
}

fn t(hhmm: &str) -> Ts {
    Ts::parse(&format!("2026-11-28T{hhmm}:00Z")).unwrap()
}

/// Pings of a vehicle `start_m` metres south of (`lat`, `lon`) moving north
/// (positive speed) or south at `kmh`, one every 30 s from `from` for
/// `minutes`.
pub(crate) fn drive(vehicle: &str, lat: f64, lon: f64, start_m: f64, kmh: f64, from: Ts, minutes: i64) -> Vec<Ping> {
    (0..=minutes * 2)
        .map(|k| {
            let south = start_m - kmh / 3.6 * 30.0 * k as f64;
            Ping {
                vehicle: Id::text(vehicle),
                time: from.plus_millis(k * 30_000),
                lat: lat - south / M_PER_DEG,
                lon,
                speed_mph: Some(kmh.abs() / 1.609_344),
                accuracy_m: None,
            }
        })
        .collect()
}

/// The engine's view after `pings` (given to the engine and the tracks).
pub(crate) fn view_after(e: &mut Engine, pings: &[Ping], map: &MapSettings) -> TenantView {
    let mut out = Vec::new();
    let mut tracks: HashMap<Id, Track> = HashMap::new();
    for p in pings {
        e.handle(&crate::engine::Event::Ping(p.clone()), &mut out).unwrap();
        match tracks.get_mut(&p.vehicle) {
            Some(t) => {
                t.apply(Fix::from(p), map.speed_window_s as i64 * 1000);
            }
            None => {
                tracks.insert(p.vehicle.clone(), Track::new(Fix::from(p)));
            }
        }
    }
    let now = pings.iter().map(|p| p.time).max();
    let tz = zone(None);
    let day = "2026-11-28".parse().unwrap();
    let lines = join(for_day(rows(e), day, tz), &[], &HashMap::new(), Some("https://st.example"));
    let fences = fences_of(&[e.state()]);
    build(&Input {
        tenant: "acme",
        day,
        tz,
        now,
        settings: e.settings(),
        map,
        state: e.state(),
        fences: &fences,
        lines: &lines,
        tracks: &tracks,
    })
}

fn fence<'a>(v: &'a TenantView, appt: &str) -> &'a FenceView {
    v.fences.iter().find(|f| f.appointment.as_str() == appt).unwrap_or_else(|| panic!("no fence {appt}"))
}

#[test]
fn fences_of_the_day_with_their_states_and_vehicles_with_their_technicians() {
    let mut e = engine(SCENARIO);
    let ann = drive("v1", 35.2271, -80.8431, 10_000.0, 50.0, t("13:40"), 10);
    let v = view_after(&mut e, &ann, &MapSettings::default());
    let ids: Vec<&str> = v.fences.iter().map(|f| f.appointment.as_str()).collect();
    assert_eq!(ids, ["7001", "7002", "7003", "7004"], "the cancelled 7005 is not on the map");
    assert_eq!(fence(&v, "7001").label, "Plant 7 | J-1 | 7001");
    assert_eq!((fence(&v, "7001").state, fence(&v, "7001").color), (FenceState::EnRoute, "#2563eb"));
    assert_eq!(fence(&v, "7002").state, FenceState::EnRoute);
    let cy = fence(&v, "7003");
    assert_eq!(cy.state, FenceState::Failed);
    assert_eq!(cy.state_reason.as_deref(), Some("Technician's email not found among Azuga drivers"));
    assert!(matches!(cy.shape, Shape::Polygon { .. }));
    assert_eq!(fence(&v, "7004").state, FenceState::Completed);
    assert_eq!(fence(&v, "7001").quick_link.as_deref(), Some("https://st.example/job/900"));
    assert_eq!(v.now, Some(t("13:50")));

    assert_eq!(v.vehicles.len(), 1, "only vehicles with a fix");
    let truck = &v.vehicles[0];
    assert_eq!((truck.id.as_str(), truck.name.as_str()), ("v1", "Truck 1"));
    assert_eq!(truck.tech.as_ref().map(Id::as_str), Some("11"));
    assert_eq!(truck.tech_name.as_deref(), Some("Ann Lee"));
    assert_eq!(truck.driver_name.as_deref(), Some("Ann L."));
    assert_eq!(truck.heading_deg, Some(0.0), "driving north");
    assert!(!truck.stale);
    assert_eq!(truck.eta_appointment.as_ref().map(Id::as_str), Some("7001"));
}

#[test]
fn a_technician_driving_away_or_too_slowly_runs_late_before_the_window_ends_and_one_on_time_does_not() {
    let map = MapSettings::default();
    // At 13:50 (the window ends at 15:00): Ann 11.7 km out at 50 km/h
    // towards Plant 7 (ETA about 14:08); Bob 3 km from the Depot driving
    // away from it.
    let mut pings = drive("v1", 35.2271, -80.8431, 20_000.0, 50.0, t("13:40"), 10);
    pings.extend(drive("v2", 35.4000, -80.9000, 3_000.0, -50.0, t("13:40"), 10));
    let v = view_after(&mut engine(SCENARIO), &pings, &map);
    let (ann, bob) = (fence(&v, "7001"), fence(&v, "7002"));
    assert!(v.now.unwrap() < ann.window_end, "judged before the window ends");
    assert!(!ann.late, "{:?}", ann.explanation);
    let eta = ann.eta.unwrap();
    assert!(eta > t("14:00") && eta < t("14:15"), "{eta}");
    assert!(bob.late, "{:?}", bob.explanation);
    assert_eq!(bob.eta, None, "heading away: no ETA");
    assert!(bob.explanation[0].contains("heading away") && bob.explanation[0].contains("running late"));
    assert_eq!(v.late, 1);
    let truck2 = v.vehicles.iter().find(|x| x.id.as_str() == "v2").unwrap();
    assert!(truck2.late && truck2.eta_appointment.as_ref().is_some_and(|a| a.as_str() == "7002"));

    // Ann crawling at 8 km/h from 10 km out: late too.
    let slow = drive("v1", 35.2271, -80.8431, 10_000.0, 8.0, t("13:40"), 10);
    let v = view_after(&mut engine(SCENARIO), &slow, &map);
    assert!(fence(&v, "7001").late, "{:?}", fence(&v, "7001").explanation);

    // Ann arrives: on site, no longer late, no ETA.
    let mut arrive = drive("v1", 35.2271, -80.8431, 10_000.0, 50.0, t("13:40"), 14);
    arrive.push(Ping { time: t("13:56"), lat: 35.2271, lon: -80.8431, ..arrive[0].clone() });
    let v = view_after(&mut engine(SCENARIO), &arrive, &map);
    let f = fence(&v, "7001");
    assert_eq!((f.state, f.late, f.eta), (FenceState::OnSite, false, None));
    assert!(f.explanation[0].contains("clocked En Route out and On Site in"), "{:?}", f.explanation);
}

#[test]
fn past_the_extended_window_without_an_arrival_is_failed_and_stale_fixes_are_marked() {
    let map = MapSettings { stale_after_s: 600, ..MapSettings::default() };
    // v2 reports once at 13:00; v1 drives until 17:10 (past 15:00 + 2 h).
    let mut pings = drive("v2", 35.4000, -80.9000, 3_000.0, 0.0, t("13:00"), 0);
    pings.extend(drive("v1", 36.0, -80.8431, 1_000.0, 0.0, t("17:00"), 10));
    let v = view_after(&mut engine(SCENARIO), &pings, &map);
    let ann = fence(&v, "7001");
    assert_eq!(ann.state, FenceState::Failed);
    assert_eq!(ann.state_reason.as_deref(), Some("Vehicle never arrived"));
    assert!(v.vehicles.iter().find(|x| x.id.as_str() == "v2").unwrap().stale);
    assert!(!v.vehicles.iter().find(|x| x.id.as_str() == "v1").unwrap().stale);
}

#[test]
fn every_state_has_its_own_colour() {
    let colours: std::collections::BTreeSet<&str> = FenceState::ALL.iter().map(|s| s.color()).collect();
    assert_eq!(colours.len(), FenceState::ALL.len());
}

#[test]
fn deltas_carry_changed_fences_removals_and_vehicle_changes_but_not_moves() {
    let map = MapSettings::default();
    let ann = drive("v1", 35.2271, -80.8431, 20_000.0, 50.0, t("13:40"), 10);
    let mut e = engine(SCENARIO);
    let before = view_after(&mut e, &ann, &map);
    let all = diff(None, &before);
    assert_eq!((all.fences.len(), all.vehicles.len()), (before.fences.len(), 1));
    assert!(diff(Some(&before), &before).is_empty());
    // Ann drives on: her ETA changes; the vehicle's ETA with it.
    let more = drive("v1", 35.2271, -80.8431, 20_000.0 - 50.0 / 3.6 * 660.0, 50.0, t("13:51"), 1);
    let after = view_after(&mut e, &more, &map);
    let d = diff(Some(&before), &after);
    assert_eq!(d.fences.iter().map(|f| f.appointment.as_str()).collect::<Vec<_>>(), vec!["7001"]);
    assert_eq!(d.vehicles.len(), 1);
    let mut gone = after.clone();
    gone.fences.retain(|f| f.appointment.as_str() != "7004");
    let moved_only = {
        let mut m = gone.clone();
        m.vehicles[0].lat += 0.001;
        m
    };
    let d = diff(Some(&after), &moved_only);
    assert_eq!(d.removed, vec![Id::text("7004")]);
    assert!(d.fences.is_empty() && d.vehicles.is_empty(), "a move alone travels as a fix");
}
