//! Record codec benchmarks: the per-ping cost of Avro on the hot path.
//!
//! Reference points (design §2): decoding an 86-byte framed ping costs
//! ≈ 580 ns with apache-avro into a typed struct (schema resolution
//! dominates) and ≈ 140 ns with serde-based decoding. geoclock decodes
//! pings written with its own schema by a hand-written decoder (checked
//! byte for byte against apache-avro in the unit tests); the apache-avro
//! baselines are measured here too, on the same bytes.

use std::hint::black_box;
use std::sync::Arc;

use apache_avro::Schema;
use criterion::{criterion_group, criterion_main, Criterion};
use geoclock::engine::{Action, ClockCause, ClockChange, Command};
use geoclock::kafka::codec::{frame, unframe, Codec, RecordType};
use geoclock::kafka::records::AvroRecord;
use geoclock::kafka::registry::{FileRegistry, SchemaRegistry};
use geoclock::kafka::topics::Catalogue;
use geoclock::model::{Activity, ClockAction, Id, Ping, Ts};
use serde::Deserialize;

/// What an apache-avro user would deserialize a ping into.
#[allow(dead_code)]
#[derive(Deserialize)]
struct PingRecord {
    tenant: String,
    vehicle: String,
    time: i64,
    lat: f64,
    lon: f64,
    speed_mph: Option<f64>,
    accuracy_m: Option<f64>,
}

fn bench(c: &mut Criterion) {
    let registry = Arc::new(FileRegistry::in_memory());
    let codec = Codec::new(registry.clone(), &Catalogue::default()).expect("codec");
    let tenant = "acme-field-services-northeast";
    let ping = Ping {
        vehicle: Id::text("veh-000123"),
        time: Ts(1_764_336_000_000),
        lat: 40.7128,
        lon: -74.006,
        speed_mph: Some(31.5),
        accuracy_m: Some(4.0),
    };
    let framed = codec.encode_ping(tenant, &ping).expect("encode");
    assert_eq!(framed.len(), 86);
    let schema = codec.schema(RecordType::Ping).clone();

    // The same ping written by an older producer whose schema lacks
    // `accuracy_m`: read through schema resolution.
    let mut old: serde_json::Value = serde_json::from_str(RecordType::Ping.schema_json()).expect("json");
    old["fields"].as_array_mut().expect("fields").retain(|f| f["name"] != "accuracy_m");
    let old = Schema::parse_str(&old.to_string()).expect("old schema");
    let old_id = registry.register("old", &old).expect("register");
    let mut old_ping = ping.clone();
    old_ping.accuracy_m = None;
    let old_value = match old_ping.to_value(tenant).expect("value") {
        apache_avro::types::Value::Record(mut f) => {
            f.retain(|(n, _)| n != "accuracy_m");
            apache_avro::types::Value::Record(f)
        }
        _ => unreachable!(),
    };
    let old_framed = frame(old_id, &apache_avro::to_avro_datum(&old, old_value).expect("old datum"));
    assert_eq!(codec.decode_ping(&old_framed).expect("old decodes").1, old_ping);

    let mut g = c.benchmark_group("ping_decode");
    g.bench_function("codec (hand-written, own schema)", |b| {
        b.iter(|| codec.decode_ping(black_box(&framed)).expect("decode"))
    });
    g.bench_function("codec generic (strict Value decoder + from_value)", |b| {
        b.iter(|| {
            let v = codec.decode_value(RecordType::Ping, black_box(&framed)).expect("decode");
            <Ping as AvroRecord>::from_value(v).expect("convert")
        })
    });
    g.bench_function("codec, older writer (resolution)", |b| {
        b.iter(|| codec.decode_ping(black_box(&old_framed)).expect("decode"))
    });
    g.bench_function("apache-avro from_avro_datum + resolve + from_value", |b| {
        b.iter(|| {
            let (_, mut datum) = unframe(black_box(&framed)).expect("frame");
            let v = apache_avro::from_avro_datum(&schema, &mut datum, Some(&schema)).expect("decode");
            apache_avro::from_value::<PingRecord>(&v).expect("serde")
        })
    });
    g.bench_function("apache-avro from_avro_datum (no resolve) + from_value", |b| {
        b.iter(|| {
            let (_, mut datum) = unframe(black_box(&framed)).expect("frame");
            let v = apache_avro::from_avro_datum(&schema, &mut datum, None).expect("decode");
            apache_avro::from_value::<PingRecord>(&v).expect("serde")
        })
    });
    g.finish();

    let mut g = c.benchmark_group("ping_encode");
    g.bench_function("codec (hand-written)", |b| b.iter(|| codec.encode_ping(black_box(tenant), black_box(&ping))));
    g.bench_function("apache-avro to_avro_datum (Value)", |b| {
        b.iter(|| {
            let v = black_box(&ping).to_value(tenant).expect("value");
            frame(7, &apache_avro::to_avro_datum(&schema, v).expect("encode"))
        })
    });
    g.finish();

    // A clock command, as the processor writes one per arrival.
    let command = Command {
        id: "0123456789abcdef0123456789abcdef".into(),
        appointment: Id::number(700_123),
        action: Action::Clock(ClockChange {
            user: Id::number(11),
            activity: Activity::Onsite,
            action: ClockAction::In,
            time: Ts(1_764_336_000_000),
            lat: 40.7128,
            lon: -74.006,
            vehicle: Id::text("veh-000123"),
            cause: ClockCause::Arrival,
        }),
    };
    let command_schema = codec.schema(RecordType::Command).clone();
    let mut g = c.benchmark_group("command_encode");
    g.bench_function("codec (Value + own encoder, names resolved once)", |b| {
        b.iter(|| codec.encode_command(black_box(tenant), black_box(&command)).expect("encode"))
    });
    g.bench_function("apache-avro to_avro_datum (Value, validates and resolves per call)", |b| {
        b.iter(|| {
            let v = black_box(&command).to_value(tenant).expect("value");
            frame(7, &apache_avro::to_avro_datum(&command_schema, v).expect("encode"))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
