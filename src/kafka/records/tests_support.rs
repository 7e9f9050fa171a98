use proptest::prelude::*;

use super::MAX_TIME_MS;
use crate::engine::route::{Route, RouteBody, RouteWatch};
use crate::engine::timeline::ClockLine;
use crate::engine::{Action, ClockCause, ClockChange, Command, FenceChange, ServiceLink};
use crate::geo::{LatLon, Shape};
use crate::model::{Activity, Appointment, AppointmentStatus, ClockAction, Id, Location, Ping, Ts};

/// A fixed, realistic ping (the codec bench uses the same values).
pub(crate) fn ping() -> Ping {
    Ping {
        vehicle: Id::text("veh-000123"),
        time: Ts(1_764_336_000_000),
        lat: 40.7128,
        lon: -74.006,
        speed_mph: Some(31.5),
        accuracy_m: Some(4.0),
    }
}

// -- property tests ------------------------------------------------------

pub(crate) fn id() -> impl Strategy<Value = Id> {
    prop_oneof![
        "[A-Za-z0-9][A-Za-z0-9 /%._-]{0,30}".prop_map(Id::text),
        (0i64..i64::MAX).prop_map(Id::number),
        "[^\\s]{1,8}".prop_map(Id::text),
    ]
}

pub(crate) fn tenant() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.-]{1,40}"
}

pub(crate) fn ts() -> impl Strategy<Value = Ts> {
    (0..=MAX_TIME_MS).prop_map(Ts)
}

pub(crate) fn lat() -> impl Strategy<Value = f64> {
    prop_oneof![-90.0..=90.0f64, Just(90.0), Just(-90.0), Just(0.0), Just(-0.0)]
}

pub(crate) fn lon() -> impl Strategy<Value = f64> {
    prop_oneof![-180.0..=180.0f64, Just(180.0), Just(-180.0)]
}

pub(crate) fn point() -> impl Strategy<Value = LatLon> {
    (lat(), lon()).prop_map(|(a, o)| LatLon::new(a, o))
}

pub(crate) fn ping_strategy() -> impl Strategy<Value = Ping> {
    (
        id(),
        ts(),
        lat(),
        lon(),
        proptest::option::of(0.0..500.0f64),
        proptest::option::of(prop_oneof![0.0..1e6f64, Just(f64::MAX)]),
    )
        .prop_map(|(vehicle, time, lat, lon, speed_mph, accuracy_m)| Ping {
            vehicle,
            time,
            lat,
            lon,
            speed_mph,
            accuracy_m,
        })
}

pub(crate) fn appointment_strategy() -> impl Strategy<Value = Appointment> {
    let status = prop_oneof![
        Just(AppointmentStatus::Unscheduled),
        Just(AppointmentStatus::Scheduled),
        Just(AppointmentStatus::CanceledByVendor),
        Just(AppointmentStatus::CanceledByCustomer),
        Just(AppointmentStatus::Completed),
        Just(AppointmentStatus::NoShow),
        Just(AppointmentStatus::Deleted),
    ];
    (
        id(),
        proptest::option::of(id()),
        status,
        proptest::option::of(ts()),
        proptest::option::of(ts()),
        proptest::collection::vec(id(), 0..5),
    )
        .prop_map(|(id, job, status, window_start, window_end, techs)| Appointment {
            id,
            job,
            status,
            window_start,
            window_end,
            techs,
        })
}

pub(crate) fn location_strategy() -> impl Strategy<Value = Location> {
    (
        id(),
        ".{0,20}",
        proptest::option::of(lat()),
        proptest::option::of(lon()),
        proptest::option::of("[a-z]{1,8}@[a-z]{1,8}\\.example"),
        proptest::option::of(proptest::collection::vec(point().prop_map(|p| [p.lat, p.lon]), 0..40)),
        proptest::option::of("[A-Za-z_/]{1,30}"),
        (proptest::option::of(id()), proptest::collection::vec(id(), 0..3)),
    )
        .prop_map(|(id, name, lat, lon, email, polygon, timezone, (primary_contact, offices))| Location {
            id,
            name,
            lat,
            lon,
            email,
            polygon,
            timezone,
            primary_contact,
            offices,
        })
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        (point(), 1.0..=crate::geo::MAX_RADIUS_M).prop_map(|(center, radius_m)| Shape::Circle { center, radius_m }),
        // A valid triangle (or more) around a centre, from offsets.
        ((-80.0..80.0f64), (-170.0..170.0f64), proptest::collection::vec(0.001..1.0f64, 3..12)).prop_map(
            |(lat, lon, radii)| {
                let n = radii.len();
                let ring = radii
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let a = i as f64 * std::f64::consts::TAU / n as f64;
                        LatLon::new(lat + r * a.sin(), lon + r * a.cos())
                    })
                    .collect();
                Shape::Polygon { ring }
            }
        ),
    ]
}

fn fence() -> impl Strategy<Value = FenceChange> {
    (any::<u32>(), ".{0,40}", shape(), ts(), ts(), ts(), ts(), id(), id()).prop_map(
        |(revision, name, shape, window_start, window_end, active_from, active_to, job, location)| FenceChange {
            revision,
            name,
            shape,
            window_start,
            window_end,
            active_from,
            active_to,
            job,
            location,
        },
    )
}

fn link() -> impl Strategy<Value = ServiceLink> {
    (
        (id(), ".{0,10}", id(), ".{0,10}", ".{0,20}", ".{0,10}"),
        (
            proptest::option::of(id()),
            proptest::option::of(ts()),
            proptest::option::of(ts()),
            proptest::option::of(point()),
            proptest::option::of("[A-Za-z_/]{1,20}"),
            ts(),
        ),
    )
        .prop_map(
            |(
                (user, tech_name, vehicle, vehicle_name, to, location_name),
                (job_number, window_start, window_end, destination, timezone, enroute_at),
            )| ServiceLink {
                user,
                tech_name,
                vehicle,
                vehicle_name,
                to,
                location_name,
                job_number,
                window_start,
                window_end,
                destination,
                timezone,
                enroute_at,
            },
        )
}

fn clock() -> impl Strategy<Value = ClockChange> {
    (
        id(),
        prop_oneof![Just(Activity::Enroute), Just(Activity::Onsite), Just(Activity::Offsite)],
        prop_oneof![Just(ClockAction::In), Just(ClockAction::Out)],
        ts(),
        point(),
        id(),
        prop_oneof![Just(ClockCause::Arrival), Just(ClockCause::Exit)],
    )
        .prop_map(|(user, activity, action, time, p, vehicle, cause)| ClockChange {
            user,
            activity,
            action,
            time,
            lat: p.lat,
            lon: p.lon,
            vehicle,
            cause,
        })
}

pub(crate) fn command_strategy() -> impl Strategy<Value = Command> {
    let action = prop_oneof![
        fence().prop_map(Action::CreateGeofence),
        fence().prop_map(Action::UpdateGeofence),
        (any::<u32>(), ".{0,40}").prop_map(|(revision, name)| Action::DeleteGeofence { revision, name }),
        link().prop_map(Action::SendServiceLink),
        clock().prop_map(Action::Clock),
    ];
    ("[0-9a-f]{32}", id(), action).prop_map(|(id, appointment, action)| Command { id, appointment, action })
}

fn clock_line() -> impl Strategy<Value = ClockLine> {
    proptest::collection::vec((ts(), prop_oneof![Just(ClockAction::In), Just(ClockAction::Out)]), 0..6).prop_map(
        |events| {
            let mut line = ClockLine::default();
            for (t, a) in events {
                line.insert(t, a);
            }
            line
        },
    )
}

fn interval() -> impl Strategy<Value = (Ts, Ts)> {
    (0..MAX_TIME_MS)
        .prop_flat_map(|from| (Just(Ts(from)), prop_oneof![Just(Ts::MAX), (from + 1..=MAX_TIME_MS).prop_map(Ts)]))
}

fn route_watch() -> impl Strategy<Value = RouteWatch> {
    (id(), ts(), ts(), proptest::collection::vec(interval(), 0..4), clock_line(), clock_line()).prop_map(
        |(user, earliest, latest, paired, enroute, onsite)| RouteWatch {
            user,
            earliest,
            latest,
            paired,
            enroute,
            onsite,
        },
    )
}

/// Routes of both bodies, every value in range (so they round-trip exactly).
pub(crate) fn route_strategy() -> impl Strategy<Value = Route> {
    let body = prop_oneof![
        (proptest::option::of(shape()), proptest::collection::vec(route_watch(), 0..4))
            .prop_map(|(shape, watches)| RouteBody::Watches { shape, watches, retired: false }),
        (id(), clock_line(), clock_line()).prop_map(|(user, enroute, onsite)| RouteBody::Clock {
            user,
            enroute,
            onsite
        }),
    ];
    (id(), id(), any::<u32>(), prop_oneof![Just(0u64), Just(i64::MAX as u64), 0..=i64::MAX as u64], body)
        .prop_map(|(vehicle, appointment, generation, seq, body)| Route { vehicle, appointment, generation, seq, body })
}
