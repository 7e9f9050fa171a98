//! Tests of the [`Codec`] API.

use super::*;
use crate::engine::{Action, EntityRef};
use crate::kafka::records::tests_support::ping;
use crate::kafka::registry::FileRegistry;
use crate::model::{AppointmentStatus, Id, Ts};

fn codec() -> (Arc<FileRegistry>, Codec) {
    let reg = Arc::new(FileRegistry::in_memory());
    let codec = Codec::new(reg.clone(), &Catalogue::default()).unwrap();
    (reg, codec)
}

/// A framed ping whose datum apache-avro wrote for `value` with `schema_json`.
fn framed_with(reg: &FileRegistry, subject: &str, schema_json: &str, value: Value) -> Vec<u8> {
    let schema = Schema::parse_str(schema_json).unwrap();
    let id = reg.register(subject, &schema).unwrap();
    frame(id, &apache_avro::to_avro_datum(&schema, value).unwrap())
}

fn ping_schema_without(field: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(RecordType::Ping.schema_json()).unwrap();
    v["fields"].as_array_mut().unwrap().retain(|f| f["name"] != field);
    v.to_string()
}

#[test]
fn embedded_schemas_parse_and_register_under_topic_subjects() {
    let (reg, c) = codec();
    assert_eq!(c.subject(RecordType::Ping), "geoclock.azuga.pings-value");
    assert_eq!(c.subject(RecordType::Command), "geoclock.commands-value");
    for rt in RecordType::ALL {
        assert_eq!(c.schema(rt).name().unwrap().fullname(None), rt.full_name());
        assert_eq!(*reg.schema(c.schema_id(rt)).unwrap(), *c.schema(rt));
        assert_eq!(RecordType::for_topic(rt.topic()), Some(rt));
    }
    // A second codec on the same registry gets the same ids.
    let c2 = Codec::new(reg, &Catalogue::default()).unwrap();
    assert_eq!(c2.schema_id(RecordType::Ping), c.schema_id(RecordType::Ping));
}

#[test]
fn ping_round_trip_and_size() {
    let (_, c) = codec();
    let bytes = c.encode_ping("acme-field-services-northeast", &ping()).unwrap();
    assert_eq!(bytes.len(), 86, "the benchmark's ping is 86 bytes framed");
    assert_eq!(c.decode_ping(&bytes).unwrap(), ("acme-field-services-northeast".to_string(), ping()));
    // The generic path agrees with the hand-written one.
    let v = c.decode_value(RecordType::Ping, &bytes).unwrap();
    assert_eq!(<Ping as AvroRecord>::from_value(v).unwrap().1, ping());
}

#[test]
fn bad_bytes_map_to_the_right_error_class_and_never_panic() {
    let (_, c) = codec();
    let good = c.encode_ping("acme", &ping()).unwrap();
    // Truncated anywhere.
    for n in 0..good.len() {
        let err = c.decode_ping(&good[..n]).unwrap_err();
        let want = if n < HEADER_LEN { "framing" } else { "decode" };
        assert_eq!(err.kind(), want, "truncated to {n}: {err}");
    }
    let mut wrong_magic = good.clone();
    wrong_magic[0] = 1;
    assert_eq!(c.decode_ping(&wrong_magic).unwrap_err().kind(), "framing");
    let mut unknown = good.clone();
    unknown[1..5].copy_from_slice(&777u32.to_be_bytes());
    assert_eq!(c.decode_ping(&unknown).unwrap_err(), CodecError::UnknownSchema(777));
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(c.decode_ping(&trailing).unwrap_err().kind(), "decode");
    let garbage = frame(c.schema_id(RecordType::Ping), &[0xff; 40]);
    assert_eq!(c.decode_ping(&garbage).unwrap_err().kind(), "decode");
    // A ping datum read as another record type: not its schema.
    let err = c.decode_job(&good).unwrap_err();
    assert_eq!(err.kind(), "decode", "{err}");
}

#[test]
fn out_of_range_values_are_invalid_not_panics() {
    let (_, c) = codec();
    let id = c.schema_id(RecordType::Ping);
    let schema = c.schema(RecordType::Ping).clone();
    let raw = |lat: f64, time: i64| {
        let v = Value::Record(vec![
            ("tenant".into(), Value::String("acme".into())),
            ("vehicle".into(), Value::String("v1".into())),
            ("time".into(), Value::TimestampMillis(time)),
            ("lat".into(), Value::Double(lat)),
            ("lon".into(), Value::Double(1.0)),
            ("speed_mph".into(), Value::Union(0, Box::new(Value::Null))),
            ("accuracy_m".into(), Value::Union(0, Box::new(Value::Null))),
        ]);
        frame(id, &apache_avro::to_avro_datum(&schema, v).unwrap())
    };
    assert!(c.decode_ping(&raw(1.0, 5)).is_ok());
    for (lat, time) in [(f64::NAN, 5), (95.0, 5), (f64::INFINITY, 5), (1.0, -1), (1.0, i64::MAX)] {
        let err = c.decode_ping(&raw(lat, time)).unwrap_err();
        assert_eq!(err.kind(), "invalid_value", "lat {lat} time {time}: {err}");
        assert!(err.is_poison());
    }
    // Encoding refuses the same values.
    let mut p = ping();
    p.lat = 95.0;
    assert_eq!(c.encode_ping("acme", &p).unwrap_err().kind(), "invalid_value");
}

#[test]
fn an_older_writer_without_accuracy_decodes_with_the_default() {
    let (reg, c) = codec();
    let old = ping_schema_without("accuracy_m");
    let bytes = framed_with(
        &reg,
        "geoclock.azuga.pings-value",
        &old,
        Value::Record(vec![
            ("tenant".into(), Value::String("acme".into())),
            ("vehicle".into(), Value::String("v1".into())),
            ("time".into(), Value::TimestampMillis(1000)),
            ("lat".into(), Value::Double(1.5)),
            ("lon".into(), Value::Double(2.5)),
            ("speed_mph".into(), Value::Union(1, Box::new(Value::Double(3.0)))),
        ]),
    );
    let (tenant, p) = c.decode_ping(&bytes).unwrap();
    assert_eq!(tenant, "acme");
    assert_eq!(
        p,
        Ping { vehicle: Id::text("v1"), time: Ts(1000), lat: 1.5, lon: 2.5, speed_mph: Some(3.0), accuracy_m: None }
    );
    // And again from the cached plan.
    assert_eq!(c.decode_ping(&bytes).unwrap().1, p);
}

#[test]
fn a_newer_writer_with_an_extra_field_decodes_and_an_incompatible_one_does_not() {
    let (reg, c) = codec();
    let mut v: serde_json::Value = serde_json::from_str(RecordType::Ping.schema_json()).unwrap();
    v["fields"].as_array_mut().unwrap().insert(
        2,
        serde_json::json!({"name": "heading", "type": {"type": "map", "values": ["null", "int"]}, "doc": "x", "default": {}}),
    );
    let mut fields = match ping().to_value("acme").unwrap() {
        Value::Record(f) => f,
        _ => unreachable!(),
    };
    fields.insert(
        2,
        ("heading".into(), Value::Map([("deg".to_string(), Value::Union(1, Box::new(Value::Int(90))))].into())),
    );
    let bytes = framed_with(&reg, "x", &v.to_string(), Value::Record(fields));
    assert_eq!(c.decode_ping(&bytes).unwrap(), ("acme".to_string(), ping()));

    // Writer without `lat`, which has no default: not readable.
    let no_lat = ping_schema_without("lat");
    let bytes = framed_with(
        &reg,
        "y",
        &no_lat,
        Value::Record(vec![
            ("tenant".into(), Value::String("acme".into())),
            ("vehicle".into(), Value::String("v1".into())),
            ("time".into(), Value::TimestampMillis(1000)),
            ("lon".into(), Value::Double(2.5)),
            ("speed_mph".into(), Value::Union(0, Box::new(Value::Null))),
            ("accuracy_m".into(), Value::Union(0, Box::new(Value::Null))),
        ]),
    );
    let err = c.decode_ping(&bytes).unwrap_err();
    assert_eq!(err.kind(), "decode", "{err}");
}

#[test]
fn a_status_added_by_a_newer_writer_reads_as_the_enum_default() {
    let (reg, c) = codec();
    let mut v: serde_json::Value = serde_json::from_str(RecordType::Appointment.schema_json()).unwrap();
    let status = v["fields"].as_array_mut().unwrap().iter_mut().find(|f| f["name"] == "status").unwrap();
    status["type"]["symbols"].as_array_mut().unwrap().push("on_hold".into());
    let appt = Appointment {
        id: Id::text("A1"),
        job: None,
        status: AppointmentStatus::Scheduled,
        window_start: None,
        window_end: None,
        techs: vec![],
    };
    let mut fields = match appt.to_value("acme").unwrap() {
        Value::Record(f) => f,
        _ => unreachable!(),
    };
    fields[3].1 = Value::Enum(7, "on_hold".into());
    let bytes = framed_with(&reg, "newer", &v.to_string(), Value::Record(fields));
    let (_, back) = c.decode_appointment(&bytes).unwrap();
    assert_eq!(back.status, AppointmentStatus::Unscheduled);

    // Clock activities have no default: a new one is not guessed.
    let mut v: serde_json::Value = serde_json::from_str(RecordType::ClockEvent.schema_json()).unwrap();
    let activity = v["fields"].as_array_mut().unwrap().iter_mut().find(|f| f["name"] == "activity").unwrap();
    activity["type"]["symbols"].as_array_mut().unwrap().push("break".into());
    let clock = ClockEvent {
        user: Id::text("11"),
        appointment: Id::text("A1"),
        activity: crate::model::Activity::Onsite,
        action: crate::model::ClockAction::In,
        time: Ts(1),
    };
    let mut fields = match clock.to_value("acme").unwrap() {
        Value::Record(f) => f,
        _ => unreachable!(),
    };
    fields[3].1 = Value::Enum(3, "break".into());
    let bytes = framed_with(&reg, "newer-clock", &v.to_string(), Value::Record(fields));
    assert_eq!(c.decode_clock_event(&bytes).unwrap_err().kind(), "decode");
}

#[test]
fn events_round_trip_with_keys_and_tombstones() {
    let (_, c) = codec();
    let appt = Appointment {
        id: Id::number(7001),
        job: Some(Id::text("J1")),
        status: AppointmentStatus::Scheduled,
        window_start: Some(Ts(1000)),
        window_end: Some(Ts(2000)),
        techs: vec![Id::number(11)],
    };
    let ev = Event::Appointment(appt);
    let rec = c.encode_event("acme", &ev).unwrap();
    assert_eq!(rec.topic, Topic::Appointments);
    assert_eq!(rec.key, b"acme/7001");
    let back = c.decode_event(rec.topic, &rec.key, rec.value.as_deref()).unwrap();
    assert_eq!(back, TenantEvent { tenant: "acme".into(), event: ev });

    let del = Event::Delete(EntityRef::Appointment(Id::text("7001")));
    let rec = c.encode_event("acme", &del).unwrap();
    assert_eq!(rec.value, None);
    assert_eq!(c.decode_event(rec.topic, &rec.key, None).unwrap().event, del);

    let p = Event::Ping(ping());
    let rec = c.encode_event("acme", &p).unwrap();
    assert_eq!(rec.key, b"acme/veh-000123");
    assert_eq!(c.decode_event(Topic::Pings, &rec.key, rec.value.as_deref()).unwrap().event, p);
    // Key and value disagree.
    let err = c.decode_event(Topic::Pings, b"other/veh-000123", rec.value.as_deref()).unwrap_err();
    assert_eq!(err.kind(), "invalid_value");
    let err = c.decode_event(Topic::Pings, b"acme/veh-9", rec.value.as_deref()).unwrap_err();
    assert_eq!(err.kind(), "invalid_value");
    assert_eq!(c.decode_event(Topic::Pings, b"acme/veh-000123", None).unwrap_err().kind(), "invalid_value");
    let tick = c.encode_event("acme", &Event::Tick(Ts(1_800_000_000_000))).unwrap();
    assert_eq!(tick.key, b"acme/tick");
    let back = c.decode_event(tick.topic, &tick.key, tick.value.as_deref()).unwrap();
    assert_eq!(back.event, Event::Tick(Ts(1_800_000_000_000)));
}

#[test]
fn commands_and_dead_letters_round_trip() {
    let (_, c) = codec();
    let cmd = Command {
        id: "fd4e3d05d73e112a5393af45c8a64c93".into(),
        appointment: Id::text("7001"),
        action: Action::DeleteGeofence { revision: u32::MAX, name: "Plant | J-1 | 7001".into() },
    };
    let bytes = c.encode_command("acme", &cmd).unwrap();
    assert_eq!(c.decode_command(&bytes).unwrap(), TenantCommand { tenant: "acme".into(), command: cmd });

    let err = c.decode_ping(&[9]).unwrap_err();
    let dl = DeadLetter::for_error(&err, "geoclock.azuga.pings", 2, 17, Some(b"acme/v1"), Some(&[9]), "processor");
    assert_eq!(dl.kind, "framing");
    let bytes = c.encode_dead_letter(&dl).unwrap();
    assert_eq!(c.decode_dead_letter(&bytes).unwrap(), dl);
}

#[test]
fn the_datum_decoder_agrees_with_apache_avro_on_valid_data() {
    let (_, c) = codec();
    for rt in RecordType::ALL {
        let schema = c.schema(rt);
        // apache-avro's own view of an encoded value of each type.
        let value = match rt {
            RecordType::Ping => ping().to_value("acme").unwrap(),
            RecordType::Location => Location {
                id: Id::text("L"),
                name: "n".into(),
                lat: Some(1.0),
                lon: None,
                email: None,
                polygon: Some(vec![[1.0, 2.0]; 3]),
                timezone: None,
            }
            .to_value("acme")
            .unwrap(),
            _ => continue,
        };
        let datum = apache_avro::to_avro_datum(schema, value).unwrap();
        let theirs = apache_avro::from_avro_datum(schema, &mut &datum[..], None).unwrap();
        assert_eq!(read_datum_with(schema, &datum).unwrap(), theirs);
    }
}

mod props {
    use super::*;
    use crate::kafka::records::tests_support::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn ping_round_trips(t in tenant(), p in ping_strategy()) {
            let (_, c) = codec();
            let bytes = c.encode_ping(&t, &p).unwrap();
            prop_assert_eq!(c.decode_ping(&bytes).unwrap(), (t, p));
        }

        #[test]
        fn appointment_round_trips(t in tenant(), a in appointment_strategy()) {
            let (_, c) = codec();
            let bytes = c.encode_appointment(&t, &a).unwrap();
            prop_assert_eq!(c.decode_appointment(&bytes).unwrap(), (t, a));
        }

        #[test]
        fn location_round_trips(t in tenant(), l in location_strategy()) {
            let (_, c) = codec();
            let bytes = c.encode_location(&t, &l).unwrap();
            prop_assert_eq!(c.decode_location(&bytes).unwrap(), (t, l));
        }

        #[test]
        fn command_round_trips(t in tenant(), cmd in command_strategy()) {
            let (_, c) = codec();
            let bytes = c.encode_command(&t, &cmd).unwrap();
            prop_assert_eq!(c.decode_command(&bytes).unwrap(), TenantCommand { tenant: t, command: cmd });
        }

        #[test]
        fn random_bytes_never_panic(id in prop_oneof![Just(None), (0usize..11).prop_map(Some)],
                                    datum in proptest::collection::vec(any::<u8>(), 0..200)) {
            let (_, c) = codec();
            let framed = match id {
                Some(i) => frame(c.schema_id(RecordType::ALL[i]), &datum),
                None => datum,
            };
            let _ = c.decode_ping(&framed);
            let _ = c.decode_location(&framed);
            let _ = c.decode_appointment(&framed);
            let _ = c.decode_command(&framed);
            let _ = c.decode_dead_letter(&framed);
            let _ = c.decode_event(Topic::Pairings, b"acme/x", Some(&framed));
        }
    }
}

#[test]
fn sink_result_round_trips_and_validates() {
    use crate::kafka::records::{Outcome, SinkResult};
    let (_, c) = codec();
    let r = SinkResult {
        command_id: "fd4e3d05d73e112a5393af45c8a64c93".into(),
        appointment: "7001".into(),
        kind: "clock".into(),
        sink: "clock".into(),
        outcome: Outcome::Failed,
        reason: "ServiceTrade refused the clock event: user 11 not found".into(),
        remote_ref: None,
        attempts: 3,
        executed_at: Ts(1_800_000_000_000),
        command_time: Ts(1_799_999_999_000),
    };
    let bytes = c.encode_result("acme", &r).unwrap();
    assert_eq!(c.decode_result(&bytes).unwrap(), ("acme".to_string(), r.clone()));
    assert!(c.encode_result("a b", &r).is_err(), "tenant names are checked");
    assert!(c.encode_result("acme", &SinkResult { command_id: String::new(), ..r }).is_err());
}

/// The codec's own datum encoder writes exactly apache-avro's bytes.
fn same_bytes_as_apache<T: crate::kafka::records::AvroRecord>(c: &Codec, tenant: &str, v: &T) {
    let reader = c.reader(T::TYPE);
    let theirs = apache_avro::to_avro_datum(&reader.schema, v.to_value(tenant).unwrap()).unwrap();
    assert_eq!(c.encode(tenant, v).unwrap(), frame(reader.id, &theirs));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
    #[test]
    fn the_datum_encoder_writes_what_apache_avro_writes(
        command in crate::kafka::records::tests_support::command_strategy(),
        appointment in crate::kafka::records::tests_support::appointment_strategy(),
        location in crate::kafka::records::tests_support::location_strategy(),
        tenant in crate::kafka::records::tests_support::tenant(),
    ) {
        let (_, c) = codec();
        same_bytes_as_apache(&c, &tenant, &command);
        same_bytes_as_apache(&c, &tenant, &appointment);
        same_bytes_as_apache(&c, &tenant, &location);
        let dl = crate::kafka::records::DeadLetter {
            reason: "bad".into(),
            kind: "decode".into(),
            topic: "t".into(),
            partition: 1,
            offset: 9,
            key: Some(tenant.clone().into_bytes()),
            value: None,
            component: "processor".into(),
        };
        let reader = c.reader(RecordType::DeadLetter);
        let theirs = apache_avro::to_avro_datum(&reader.schema, crate::kafka::records::dead_letter_value(&dl)).unwrap();
        proptest::prop_assert_eq!(c.encode_dead_letter(&dl).unwrap(), frame(reader.id, &theirs));
    }
}
