//! Tests of the [`Codec`] API.

use super::*;
use crate::engine::Route;
use crate::engine::{Action, EntityRef};
use crate::kafka::records::tests_support::ping;
use crate::kafka::records::{RouteProgress, ROUTE_PROGRESS_KEY};
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
    assert_eq!(c.subject(RecordType::Route), "geoclock.processor.fence-routes-value");
    assert_eq!(c.subject(RecordType::RouteProgress), "geoclock.processor.fence-routes-io.geoclock.v1.RouteProgress");
    assert_eq!(RecordType::for_topic(Topic::FenceRoutes), Some(RecordType::Route));
    let mut subjects = std::collections::BTreeSet::new();
    for (i, rt) in RecordType::ALL.into_iter().enumerate() {
        assert_eq!(rt as usize, i, "ALL is in declaration order");
        assert_eq!(c.schema(rt).name().unwrap().fullname(None), rt.full_name());
        assert_eq!(*reg.schema(c.schema_id(rt)).unwrap(), *c.schema(rt));
        assert!(subjects.insert(c.subject(rt).to_string()), "one subject per record type");
        if rt != RecordType::RouteProgress {
            assert_eq!(RecordType::for_topic(rt.topic()), Some(rt));
        }
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
    // Unknown ids are worth retrying for a while (a producer may have just
    // registered it), then poison; the "unknown" answer is remembered.
    let e = c.decode_ping(&unknown).unwrap_err();
    assert!(!e.is_poison(), "{e}");
    let c = c.with_unknown_grace(std::time::Duration::ZERO);
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
    // Not the current schema: the hot path leaves it to decode_event.
    assert!(c.decode_current_ping(b"acme/v1", &bytes).is_none());
    assert_eq!(
        p,
        Ping { vehicle: Id::text("v1"), time: Ts(1000), lat: 1.5, lon: 2.5, speed_mph: Some(3.0), accuracy_m: None }
    );
    // And again from the cached plan.
    assert_eq!(c.decode_ping(&bytes).unwrap().1, p);
}

#[test]
fn a_location_of_the_schema_before_contacts_and_offices_decodes_with_the_defaults() {
    let (reg, c) = codec();
    let mut v: serde_json::Value = serde_json::from_str(RecordType::Location.schema_json()).unwrap();
    v["fields"].as_array_mut().unwrap().retain(|f| f["name"] != "primaryContact" && f["name"] != "offices");
    let null = || Value::Union(0, Box::new(Value::Null));
    let bytes = framed_with(
        &reg,
        "geoclock.servicetrade.locations-value",
        &v.to_string(),
        Value::Record(vec![
            ("tenant".into(), Value::String("acme".into())),
            ("id".into(), Value::String("5".into())),
            ("name".into(), Value::String("Plant".into())),
            ("lat".into(), null()),
            ("lon".into(), null()),
            ("email".into(), Value::Union(1, Box::new(Value::String("fm@plant.example".into())))),
            ("polygon".into(), null()),
            ("timezone".into(), null()),
        ]),
    );
    let (tenant, l) = c.decode_location(&bytes).unwrap();
    assert_eq!((tenant.as_str(), l.id.as_str(), l.email.as_deref()), ("acme", "5", Some("fm@plant.example")));
    assert_eq!((l.primary_contact, l.offices), (None, Vec::new()));
}

#[test]
fn offices_and_contacts_travel_on_their_own_topics_and_tombstone_there() {
    let (_, c) = codec();
    let office = Office { id: Id::number(2), name: "Charlotte".into() };
    let contact = Contact {
        id: Id::number(31),
        name: "Pat Lee".into(),
        email: Some("pat@plant.example".into()),
        locations: vec![Id::number(5), Id::text("L-6")],
    };
    for (event, topic) in [(Event::Office(office), Topic::Offices), (Event::Contact(contact), Topic::Contacts)] {
        let rec = c.encode_event("acme", &event).unwrap();
        assert_eq!(rec.topic, topic);
        let back = c.decode_event(topic, &rec.key, rec.value.as_deref()).unwrap();
        assert_eq!(back, TenantEvent { tenant: "acme".into(), event });
        let gone = c.decode_event(topic, &rec.key, None).unwrap().event;
        let again = c.encode_event("acme", &gone).unwrap();
        assert_eq!((again.topic, again.key, again.value), (topic, rec.key, None));
    }
    assert!(matches!(
        c.decode_event(Topic::Contacts, b"acme/31", None).unwrap().event,
        Event::Delete(EntityRef::Contact(_))
    ));
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
                primary_contact: None,
                offices: Vec::new(),
            }
            .to_value("acme")
            .unwrap(),
            RecordType::Route => sample_route().to_value("acme").unwrap(),
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
        fn the_ping_hot_path_decodes_every_current_ping_as_decode_event_does(t in tenant(), p in ping_strategy()) {
            let (_, c) = codec();
            let rec = c.encode_event(&t, &Event::Ping(p.clone())).unwrap();
            let value = rec.value.unwrap();
            let (tenant, fast) = c.decode_current_ping(&rec.key, &value).unwrap();
            prop_assert_eq!((tenant, &fast), (t.as_str(), &p));
            let slow = c.decode_event(Topic::Pings, &rec.key, Some(&value)).unwrap();
            prop_assert_eq!(slow, TenantEvent { tenant: t.clone(), event: Event::Ping(fast) });
            // Another key: the hot path declines, decode_event says why.
            let other = format!("{t}/{}x", p.vehicle.as_str());
            prop_assert!(c.decode_current_ping(other.as_bytes(), &value).is_none());
            prop_assert!(c.decode_event(Topic::Pings, other.as_bytes(), Some(&value)).is_err());
        }

        #[test]
        fn the_ping_hot_path_never_accepts_what_decode_event_refuses(
            key in proptest::collection::vec(any::<u8>(), 0..20),
            datum in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let (_, c) = codec();
            let value = frame(c.schema_id(RecordType::Ping), &datum);
            if let Some((tenant, p)) = c.decode_current_ping(&key, &value) {
                let slow = c.decode_event(Topic::Pings, &key, Some(&value)).unwrap();
                prop_assert_eq!(slow, TenantEvent { tenant: tenant.to_string(), event: Event::Ping(p) });
            }
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
        fn route_round_trips(t in tenant(), r in route_strategy()) {
            let (_, c) = codec();
            let bytes = c.encode_route(&t, &r).unwrap();
            prop_assert_eq!(c.decode_route(&bytes).unwrap(), (t.clone(), r.clone()));
            let ev = Event::Route(r);
            let rec = c.encode_event(&t, &ev).unwrap();
            prop_assert_eq!(rec.topic, Topic::FenceRoutes);
            prop_assert_eq!(&rec.value, &Some(bytes));
            let back = c.decode_event(rec.topic, &rec.key, rec.value.as_deref()).unwrap();
            prop_assert_eq!(back, TenantEvent { tenant: t, event: ev });
        }

        #[test]
        fn route_progress_round_trips(task in 0..=i32::MAX, through in prop_oneof![Just(i64::MAX), 0..=i64::MAX]) {
            let (_, c) = codec();
            let p = RouteProgress { task, through };
            prop_assert_eq!(c.decode_route_progress(&c.encode_route_progress(&p).unwrap()).unwrap(), p);
        }

        #[test]
        fn random_bytes_never_panic(id in prop_oneof![Just(None), (0usize..15).prop_map(Some)],
                                    datum in proptest::collection::vec(any::<u8>(), 0..200)) {
            let (_, c) = codec();
            let framed = match id {
                Some(i) => frame(c.schema_id(RecordType::ALL[i % RecordType::ALL.len()]), &datum),
                None => datum,
            };
            let _ = c.decode_ping(&framed);
            let _ = c.decode_location(&framed);
            let _ = c.decode_appointment(&framed);
            let _ = c.decode_command(&framed);
            let _ = c.decode_dead_letter(&framed);
            let _ = c.decode_event(Topic::Pairings, b"acme/x", Some(&framed));
            let _ = c.decode_route(&framed);
            let _ = c.decode_route_progress(&framed);
            let _ = c.decode_event(Topic::FenceRoutes, b"acme/x", Some(&framed));
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
        route in crate::kafka::records::tests_support::route_strategy(),
        tenant in crate::kafka::records::tests_support::tenant(),
    ) {
        let (_, c) = codec();
        same_bytes_as_apache(&c, &tenant, &command);
        same_bytes_as_apache(&c, &tenant, &route);
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
        let p = RouteProgress { task: 3, through: i64::MAX };
        let reader = c.reader(RecordType::RouteProgress);
        let theirs = apache_avro::to_avro_datum(&reader.schema, crate::kafka::records::route_progress_value(&p).unwrap()).unwrap();
        proptest::prop_assert_eq!(c.encode_route_progress(&p).unwrap(), frame(reader.id, &theirs));
    }
}

fn sample_route() -> Route {
    use crate::engine::route::{RouteBody, RouteWatch};
    use crate::engine::timeline::ClockLine;
    use crate::geo::{LatLon, Shape};
    use crate::model::ClockAction;
    let mut enroute = ClockLine::default();
    enroute.insert(Ts(1_000), ClockAction::In);
    enroute.insert(Ts(2_000), ClockAction::Out);
    Route {
        vehicle: Id::text("veh-1"),
        appointment: Id::number(7001),
        generation: 2,
        seq: 5,
        body: RouteBody::Watches {
            retired: false,
            shape: Some(Shape::Circle { center: LatLon::new(40.0, -74.0), radius_m: 150.0 }),
            watches: vec![RouteWatch {
                user: Id::number(11),
                earliest: Ts(500),
                latest: Ts(9_000),
                paired: vec![(Ts(0), Ts(3_000)), (Ts(4_000), Ts::MAX)],
                enroute,
                onsite: ClockLine::default(),
            }],
        },
    }
}

/// A route datum apache-avro wrote from `route`'s value with `edit` applied.
fn route_with(c: &Codec, route: &Route, edit: impl FnOnce(&mut Vec<(String, Value)>)) -> Vec<u8> {
    let Value::Record(mut fields) = route.to_value("acme").unwrap() else { unreachable!() };
    edit(&mut fields);
    let reader = c.reader(RecordType::Route);
    frame(reader.id, &apache_avro::to_avro_datum(&reader.schema, Value::Record(fields)).unwrap())
}

#[test]
fn routes_are_keyed_by_vehicle_and_checked_against_their_key() {
    let (_, c) = codec();
    let r = sample_route();
    let ev = Event::Route(r.clone());
    let rec = c.encode_event("acme", &ev).unwrap();
    assert_eq!((rec.topic, rec.key.as_slice()), (Topic::FenceRoutes, &b"acme/veh-1"[..]));
    assert_eq!(c.decode_event(rec.topic, &rec.key, rec.value.as_deref()).unwrap().event, ev);
    // The key names another vehicle, or another tenant.
    for key in [&b"acme/veh-2"[..], b"other/veh-1"] {
        let err = c.decode_event(Topic::FenceRoutes, key, rec.value.as_deref()).unwrap_err();
        assert_eq!(err.kind(), "invalid_value", "{err}");
    }
    // No tombstones on the routes topic; a progress record is not an event.
    assert_eq!(c.decode_event(Topic::FenceRoutes, b"acme/veh-1", None).unwrap_err().kind(), "invalid_value");
    let progress = c.encode_route_progress(&RouteProgress { task: 0, through: 5 }).unwrap();
    let err = c.decode_event(Topic::FenceRoutes, ROUTE_PROGRESS_KEY, Some(&progress)).unwrap_err();
    assert_eq!(err.kind(), "invalid_value", "{err}");
    // Either record read as the other: not its schema.
    assert_eq!(c.decode_route(&progress).unwrap_err().kind(), "decode");
    assert_eq!(c.decode_route_progress(rec.value.as_deref().unwrap()).unwrap_err().kind(), "decode");
    // A clock route.
    let clock = Route {
        body: crate::engine::route::RouteBody::Clock {
            user: Id::text("u/1"),
            enroute: Default::default(),
            onsite: Default::default(),
        },
        ..r
    };
    let bytes = c.encode_route("acme", &clock).unwrap();
    assert_eq!(c.decode_route(&bytes).unwrap(), ("acme".to_string(), clock));
}

#[test]
fn route_values_are_validated_both_ways() {
    use crate::engine::route::RouteBody;
    let (_, c) = codec();
    let r = sample_route();
    fn watches(r: &mut Route) -> &mut crate::engine::route::RouteWatch {
        match &mut r.body {
            RouteBody::Watches { watches, .. } => &mut watches[0],
            RouteBody::Clock { .. } => unreachable!(),
        }
    }
    // Refused on the way out.
    type Edit = fn(&mut Route);
    let bad: Vec<(&str, Edit)> = vec![
        ("blank vehicle", |r| r.vehicle = Id::text(" ")),
        ("blank appointment", |r| r.appointment = Id::text("")),
        ("seq beyond i64", |r| r.seq = u64::MAX),
        ("blank user", |r| watches(r).user = Id::text("")),
        ("empty interval", |r| watches(r).paired[0] = (Ts(5), Ts(5))),
        ("reversed interval", |r| watches(r).paired[0] = (Ts(5), Ts(4))),
        ("negative from", |r| watches(r).paired[0] = (Ts(-1), Ts(4))),
        ("to past 9999", |r| watches(r).paired[0] = (Ts(0), Ts(crate::kafka::records::MAX_TIME_MS + 1))),
        ("clock time", |r| {
            watches(r).onsite.insert(Ts(-5), crate::model::ClockAction::In);
        }),
        ("shape", |r| {
            if let RouteBody::Watches { shape, .. } = &mut r.body {
                *shape = Some(crate::geo::Shape::Circle { center: crate::geo::LatLon::new(0.0, 0.0), radius_m: -1.0 });
            }
        }),
    ];
    for (what, edit) in &bad {
        let mut b = r.clone();
        edit(&mut b);
        assert_eq!(c.encode_route("acme", &b).unwrap_err().kind(), "invalid_value", "{what}");
    }
    assert_eq!(c.encode_route("a/b", &r).unwrap_err().kind(), "invalid_value");
    // Windows at the ends of time are clamped, which no ping can tell.
    let mut edge = r.clone();
    watches(&mut edge).earliest = Ts(-3_600_000);
    watches(&mut edge).latest = Ts(crate::kafka::records::MAX_TIME_MS + 3_600_000);
    let (_, back) = c.decode_route(&c.encode_route("acme", &edge).unwrap()).unwrap();
    let mut want = edge.clone();
    watches(&mut want).earliest = Ts(0);
    watches(&mut want).latest = Ts(crate::kafka::records::MAX_TIME_MS);
    assert_eq!(back, want);

    // Refused on the way in.
    let generation = route_with(&c, &r, |f| f[3].1 = Value::Long(1 << 32));
    let seq = route_with(&c, &r, |f| f[4].1 = Value::Long(-1));
    let interval = route_with(&c, &r, |f| {
        let Value::Union(_, body) = &mut f[5].1 else { unreachable!() };
        let Value::Record(body) = &mut **body else { unreachable!() };
        let Value::Array(ws) = &mut body[1].1 else { unreachable!() };
        let Value::Record(w) = &mut ws[0] else { unreachable!() };
        let Value::Array(paired) = &mut w[3].1 else { unreachable!() };
        paired[0] = Value::Record(vec![
            ("from".into(), Value::TimestampMillis(7)),
            ("to".into(), Value::Union(1, Box::new(Value::TimestampMillis(7)))),
        ]);
    });
    for (what, bytes) in [("generation", generation), ("seq", seq), ("interval", interval)] {
        assert_eq!(c.decode_route(&bytes).unwrap_err().kind(), "invalid_value", "{what}");
    }
    assert_eq!(c.decode_route(&route_with(&c, &r, |_| ())).unwrap(), ("acme".to_string(), r));
}

#[test]
fn route_progress_is_validated_both_ways() {
    let (_, c) = codec();
    for p in [RouteProgress { task: -1, through: 0 }, RouteProgress { task: 0, through: -1 }] {
        assert_eq!(c.encode_route_progress(&p).unwrap_err().kind(), "invalid_value", "{p:?}");
        let reader = c.reader(RecordType::RouteProgress);
        let v = Value::Record(vec![("task".into(), Value::Int(p.task)), ("through".into(), Value::Long(p.through))]);
        let bytes = frame(reader.id, &apache_avro::to_avro_datum(&reader.schema, v).unwrap());
        assert_eq!(c.decode_route_progress(&bytes).unwrap_err().kind(), "invalid_value", "{p:?}");
    }
    let p = RouteProgress { task: 2, through: i64::MAX };
    assert_eq!(c.decode_route_progress(&c.encode_route_progress(&p).unwrap()).unwrap(), p);
}

/// Every route stage one decides for the scenario files encodes, and
/// decodes to itself.
#[test]
fn the_routes_of_every_scenario_round_trip() {
    use crate::engine::{Engine, Role};
    let (_, c) = codec();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut routes = 0;
    for f in files.iter().filter(|f| f.extension().is_some_and(|x| x == "yaml")) {
        let s = crate::scenario::Scenario::load(f).unwrap();
        let mut e = Engine::new(s.tenant.clone(), s.settings.clone()).unwrap();
        e.set_role(Role::Appointments);
        let mut out = Vec::new();
        for ev in s.all_events() {
            let _ = e.handle(&ev, &mut out);
            for r in e.drain_routes() {
                let ev = Event::Route(r);
                let rec = c.encode_event(&s.tenant, &ev).unwrap_or_else(|err| panic!("{}: {err}", f.display()));
                let back = c.decode_event(rec.topic, &rec.key, rec.value.as_deref()).unwrap();
                assert_eq!(back.event, ev, "{}", f.display());
                routes += 1;
            }
        }
    }
    assert!(routes > 0);
}
