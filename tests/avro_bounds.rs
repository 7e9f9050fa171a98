//! A crafted Avro datum cannot make the decoder allocate without bound.
//!
//! The attack: a producer with topic access registers a writer schema of
//! the ping's record name with an `array<null>` field, then writes a datum
//! declaring 2^31 nulls in blocks of 4096 (about 1.5 MB: every block count
//! fits the bytes left, so no single block looks absurd). Decoding it must
//! fail with a `decode` error (a dead letter) having allocated next to
//! nothing: measured here with a counting global allocator, not assumed.

use std::alloc::System;
use std::sync::Arc;

use apache_avro::Schema;
use geoclock::kafka::codec::{frame, Codec};
use geoclock::kafka::registry::{FileRegistry, SchemaRegistry};
use geoclock::kafka::topics::{Catalogue, Topic};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

/// Avro's long: zigzag, then little-endian base-128.
fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn a_datum_declaring_2_pow_31_zero_size_items_is_rejected_without_allocating() {
    let registry = Arc::new(FileRegistry::in_memory());
    let catalogue = Catalogue::default();
    let codec = Codec::new(registry.clone(), &catalogue).unwrap();
    let writer = Schema::parse_str(
        r#"{"type":"record","name":"Ping","namespace":"io.geoclock.v1",
            "fields":[{"name":"tenant","type":"string"},{"name":"junk","type":{"type":"array","items":"null"}}]}"#,
    )
    .unwrap();
    let id = registry.register("attacker-value", &writer).unwrap();
    let mut datum = Vec::new();
    put_long(&mut datum, 4);
    datum.extend_from_slice(b"acme");
    let mut left: u64 = 1 << 31;
    while left > 0 {
        let n = left.min(4096);
        put_long(&mut datum, n as i64);
        left -= n;
    }
    put_long(&mut datum, 0);
    let value = frame(id, &datum);
    assert!(value.len() > 1_000_000, "{} bytes", value.len());

    // Warm up: the codec plans the writer schema once (parsing it allocates).
    let _ = codec.decode_event(Topic::Pings, b"acme/v1", Some(&frame(id, &[8, b'a', b'c', b'm', b'e', 0])));

    let region = Region::new(GLOBAL);
    let err = codec.decode_event(Topic::Pings, b"acme/v1", Some(&value)).unwrap_err();
    let stats = region.change();
    assert_eq!(err.kind(), "decode", "{err}");
    assert!(err.is_poison(), "dead-lettered, not retried");
    assert!(err.to_string().contains("no size"), "{err}");
    // 2^31 values would be ~100 GiB; the decoder stops after 4096 nulls.
    assert!(
        stats.bytes_allocated < 1024 * 1024,
        "decoding allocated {} bytes in {} allocations",
        stats.bytes_allocated,
        stats.allocations
    );
    eprintln!("rejected after allocating {} bytes in {} allocations", stats.bytes_allocated, stats.allocations);
}
