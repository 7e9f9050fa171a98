//! Tests that span several record types.

use apache_avro::Schema;

use super::*;
use crate::model::{Activity, ClockAction, ClockEvent, Driver, Id, Job, Location, Pairing, Ts, User, Vehicle};

pub(super) fn schema(rt: RecordType) -> Schema {
    Schema::parse_str(rt.schema_json()).unwrap()
}

/// Encodes with apache-avro (validating against the schema) and decodes
/// with apache-avro, then converts back.
fn apache_round_trip<T: AvroRecord + PartialEq + std::fmt::Debug>(tenant: &str, v: &T) -> (String, T) {
    let sc = schema(T::TYPE);
    let bytes = apache_avro::to_avro_datum(&sc, v.to_value(tenant).unwrap()).unwrap();
    let back = apache_avro::from_avro_datum(&sc, &mut &bytes[..], None).unwrap();
    T::from_value(back).unwrap()
}

pub(super) use super::tests_support::ping;

#[test]
fn every_record_type_round_trips_through_apache_avro() {
    let t = "acme";
    let u = User { id: Id::number(11), name: "Ann".into(), email: Some("a@x.example".into()), tech: true };
    assert_eq!(apache_round_trip(t, &u), (t.to_string(), u));
    let l = Location {
        id: Id::text("L1"),
        name: "Plant".into(),
        lat: Some(1.0),
        lon: Some(2.0),
        email: None,
        polygon: Some(vec![[0.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
        timezone: Some("America/New_York".into()),
        primary_contact: None,
        offices: Vec::new(),
    };
    assert_eq!(apache_round_trip(t, &l), (t.to_string(), l));
    let j = Job { id: Id::text("J"), number: Some(Id::number(1001)), location: None };
    assert_eq!(apache_round_trip(t, &j), (t.to_string(), j));
    let c = ClockEvent {
        user: Id::text("11"),
        appointment: Id::text("7001"),
        activity: Activity::Enroute,
        action: ClockAction::In,
        time: Ts(5),
    };
    assert_eq!(apache_round_trip(t, &c), (t.to_string(), c));
    let d = Driver { id: Id::text("d1"), name: "".into(), email: None };
    assert_eq!(apache_round_trip(t, &d), (t.to_string(), d));
    let v = Vehicle { id: Id::text("v1"), name: "Truck".into() };
    assert_eq!(apache_round_trip(t, &v), (t.to_string(), v));
    let p = Pairing { driver: Id::text("d1"), vehicle: Id::text("v1"), from: Ts(0), to: Some(Ts(10)) };
    assert_eq!(apache_round_trip(t, &p), (t.to_string(), p));
    assert_eq!(apache_round_trip(t, &ping()), (t.to_string(), ping()));
    let dl = DeadLetter {
        reason: "r".into(),
        kind: "decode".into(),
        topic: "geoclock.azuga.pings".into(),
        partition: 3,
        offset: 42,
        key: Some(b"acme/v1".to_vec()),
        value: None,
        component: "processor".into(),
    };
    let sc = schema(RecordType::DeadLetter);
    let bytes = apache_avro::to_avro_datum(&sc, dead_letter_value(&dl)).unwrap();
    let back = apache_avro::from_avro_datum(&sc, &mut &bytes[..], None).unwrap();
    assert_eq!(dead_letter_from(back).unwrap(), dl);
}
