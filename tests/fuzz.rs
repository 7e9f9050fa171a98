//! Fuzzing the decoders of hostile input: the Confluent-framed Avro decoder
//! of every record type (with schema resolution from evolved and hostile
//! writer schemas), the ServiceTrade and Azuga webhook parsers, the
//! scenario-file loader and the tenants-file loader.
//!
//! cargo-fuzz needs a nightly toolchain and this project builds on stable,
//! so this is a mutation fuzzer of its own, guided by outcomes rather than
//! by coverage: it starts from valid inputs (every record type encoded by
//! the codec, the simulators' webhook shapes, the golden scenario files, a
//! full tenants file), mutates them (bit flips, interesting bytes, varints
//! of extreme values, inserted and deleted runs, splices, token insertions
//! for the text formats) and keeps as a new seed every input whose outcome
//! (accepted, or the error's class and first words) was not seen before,
//! so it walks into the decoders' error paths (inputs are capped at twice
//! the largest seed, at least 4 KiB, as libFuzzer's `-max_len`). Each input must be answered
//! without a panic, and every rejection with a clear error: a dead-letter
//! class with a message, a non-empty reason, a message naming the problem;
//! a tenants-file error never shows a secret value of the file.
//!
//! `cargo test --test fuzz` runs a short campaign of every target (CI).
//! A long one: `cargo test --release --test fuzz -- --target avro --inputs
//! 10000000 [--seed N]` (targets: avro, servicetrade, azuga, scenario,
//! tenants, all). A panicking input is written to
//! `target/fuzz-crashes/TARGET-N.bin` and the run fails.

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use apache_avro::Schema;
use geoclock::engine::route::{Route, RouteBody};
use geoclock::engine::Event;
use geoclock::kafka::codec::{unframe, Codec, CodecError, RecordType};
use geoclock::kafka::records::{DeadLetter, Outcome, RouteProgress, SinkResult};
use geoclock::kafka::registry::{FileRegistry, SchemaRegistry};
use geoclock::kafka::topics::{Catalogue, Topic};
use geoclock::model::{Id, Ts};
use geoclock::scenario::Scenario;
use geoclock::sim::fleet::{generate, FleetConfig};

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.next().is_multiple_of(one_in)
    }
}

/// Avro's long: zigzag, then little-endian base-128.
fn varint(v: i64) -> Vec<u8> {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut out = Vec::new();
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
    out
}

const INTERESTING: &[i64] = &[
    0,
    1,
    -1,
    2,
    127,
    128,
    255,
    4096,
    65_535,
    i32::MAX as i64,
    i32::MIN as i64,
    1 << 31,
    -(1 << 31),
    1 << 40,
    i64::MAX,
    i64::MIN,
];

/// Tokens worth inserting into the text formats.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    "'",
    ":",
    ",",
    "\n",
    "\n  ",
    "- ",
    "&a ",
    "*a",
    "<<: *a",
    "!!binary ",
    "!tag ",
    "~",
    "null",
    "true",
    "1e400",
    "-0",
    ".nan",
    "NaN",
    "9999999999999999999999",
    "0x",
    "\\u0000",
    "\\",
    "=",
    "[[tenants]]",
    "{ value = \"SEKRIT-x\" }",
    "{ env = \"GEOCLOCK_FUZZ_UNSET\" }",
    "#",
    "\t",
    "\u{feff}",
    "é",
    "\u{10ffff}",
    "\"\"\"",
    "'''",
    "- ping: {",
    "- clock: {",
    "time: \"2026-11-28T14:00:00Z\"",
    "lat: 95",
    "window_hours",
    "2026-13-45T99:99:99Z",
];

fn mutate(rng: &mut Rng, seed: &[u8], seeds: &[Vec<u8>], text: bool) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = d.len();
        match rng.below(if text { 10 } else { 9 }) {
            0 if len > 0 => {
                let i = rng.below(len);
                d[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                d[i] = [0u8, 0xff, 0x7f, 0x80, 0x01, 0xfe, b'"', b'\\'][rng.below(8)];
            }
            2 => {
                let i = rng.below(len + 1);
                let v = varint(INTERESTING[rng.below(INTERESTING.len())]);
                d.splice(i..i, v);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below((len - i).min(16)) + 1;
                d.drain(i..i + n);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below((len - i).min(32)) + 1;
                let chunk = d[i..i + n].to_vec();
                let at = rng.below(d.len() + 1);
                d.splice(at..at, chunk.into_iter().cycle().take(n * (1 + rng.below(4))));
            }
            5 if len > 0 => d.truncate(rng.below(len)),
            6 => {
                let other = &seeds[rng.below(seeds.len())];
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let n = rng.below(other.len() - from) + 1;
                    let at = rng.below(d.len() + 1);
                    d.splice(at..at, other[from..from + n].iter().copied());
                }
            }
            7 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below((len - i).min(8)) + 1;
                for b in &mut d[i..i + n] {
                    *b = rng.next() as u8;
                }
            }
            8 if len >= 5 && !text => {
                // A varint where the datum starts: a string length, a count, a union branch.
                let i = 5 + rng.below(len - 4);
                let v = varint(INTERESTING[rng.below(INTERESTING.len())]);
                let end = (i + v.len()).min(d.len());
                d.splice(i..end, v);
            }
            _ => {
                let t = TOKENS[rng.below(TOKENS.len())];
                let at = rng.below(d.len() + 1);
                d.splice(at..at, t.bytes());
            }
        }
    }
    d
}

/// One fuzz target: its seeds and its check of one input (`Err`: a
/// violated property). `Ok` carries the outcome class for guidance.
struct Target {
    name: &'static str,
    text: bool,
    seeds: Vec<Vec<u8>>,
    check: Box<dyn Fn(&[u8]) -> Result<String, String>>,
}

fn class(e: &impl std::fmt::Display) -> String {
    e.to_string().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn avro() -> Target {
    let registry = Arc::new(FileRegistry::in_memory());
    let catalogue = Catalogue::default();
    let codec = Codec::new(registry.clone(), &catalogue).unwrap().with_unknown_grace(std::time::Duration::ZERO);
    // Writer schemas besides the current ones: each record evolved (an
    // extra field with a default), and hostile ones of the same names.
    let mut writer_ids = Vec::new();
    for rt in RecordType::ALL {
        let mut v: serde_json::Value = serde_json::from_str(rt.schema_json()).unwrap();
        if let Some(fields) = v["fields"].as_array_mut() {
            fields.push(serde_json::json!({"name": "fuzz_extra", "type": ["null", "string"], "default": null}));
            if fields.len() > 2 && rt != RecordType::Ping {
                fields.remove(1);
            }
        }
        if let Ok(s) = Schema::parse_str(&v.to_string()) {
            if let Ok(id) = registry.register(&format!("fuzz-{}", rt.full_name()), &s) {
                writer_ids.push(id);
            }
        }
        let (ns, name) = rt.full_name().rsplit_once('.').unwrap();
        let hostile = format!(
            r#"{{"type":"record","name":"{name}","namespace":"{ns}","fields":[
                {{"name":"a","type":{{"type":"array","items":"null"}}}},
                {{"name":"m","type":{{"type":"map","values":{{"type":"array","items":"string"}}}}}},
                {{"name":"u","type":["null","long","string",{{"type":"fixed","name":"F","size":4}}]}}]}}"#
        );
        let id = registry.register(&format!("fuzz-hostile-{name}"), &Schema::parse_str(&hostile).unwrap()).unwrap();
        writer_ids.push(id);
    }
    // Valid records of every type.
    let world = generate(&FleetConfig { technicians: 3, ..FleetConfig::default() });
    let tenant = world.tenant.clone();
    let topics = [
        Topic::Users,
        Topic::Locations,
        Topic::Jobs,
        Topic::Appointments,
        Topic::ClockEvents,
        Topic::Drivers,
        Topic::Vehicles,
        Topic::Pairings,
        Topic::Pings,
        Topic::Ticks,
        Topic::FenceRoutes,
    ];
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    let mut keyed = |topic: Topic, e: &Event| {
        if let Ok(r) = codec.encode_event(&tenant, e) {
            assert_eq!(r.topic, topic);
            let mut s = vec![topics.iter().position(|t| *t == topic).unwrap() as u8];
            s.extend(r.key.len().to_le_bytes().iter().take(1));
            s.extend(&r.key);
            s.extend(r.value.unwrap_or_default());
            seeds.push(s);
        }
    };
    for u in world.users.iter().take(3) {
        keyed(Topic::Users, &Event::User(u.clone()));
    }
    for l in world.locations.iter().take(3) {
        keyed(Topic::Locations, &Event::Location(l.clone()));
    }
    for j in world.jobs.iter().take(3) {
        keyed(Topic::Jobs, &Event::Job(j.clone()));
    }
    for a in world.appointments.iter().take(3) {
        keyed(Topic::Appointments, &Event::Appointment(a.clone()));
    }
    for c in world.clocks.iter().take(3) {
        keyed(Topic::ClockEvents, &Event::Clock(c.clone()));
    }
    for d in world.drivers.iter().take(2) {
        keyed(Topic::Drivers, &Event::Driver(d.clone()));
    }
    for v in world.vehicles.iter().take(2) {
        keyed(Topic::Vehicles, &Event::Vehicle(v.clone()));
    }
    for p in world.pairings.iter().take(2) {
        keyed(Topic::Pairings, &Event::Pairing(p.clone()));
    }
    for p in world.pings.iter().take(3) {
        keyed(Topic::Pings, &Event::Ping(p.ping.clone()));
    }
    keyed(Topic::Ticks, &Event::Tick(Ts::from_secs(1_800_000_000)));
    let route = Route {
        vehicle: Id::text("veh-1"),
        appointment: Id::text("7001"),
        generation: 1,
        seq: 2,
        body: RouteBody::Watches { shape: None, watches: vec![], retired: false },
    };
    keyed(Topic::FenceRoutes, &Event::Route(route));
    // The other decoders' records (topic byte 0xf0+).
    let scenario = Scenario::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/arrival_basic.yaml"));
    for c in scenario.unwrap().run().unwrap().commands {
        let mut s = vec![0xf0, 0];
        s.extend(codec.encode_command("acme", &c).unwrap());
        seeds.push(s);
    }
    let result = SinkResult {
        command_id: "c1".into(),
        appointment: "7001".into(),
        kind: "clock_change".into(),
        sink: "clock".into(),
        outcome: Outcome::Failed,
        reason: "HTTP 500".into(),
        remote_ref: Some("r".into()),
        attempts: 3,
        executed_at: Ts::from_secs(1_800_000_000),
        command_time: Ts::from_secs(1_800_000_000),
    };
    let mut s = vec![0xf1, 0];
    s.extend(codec.encode_result("acme", &result).unwrap());
    seeds.push(s);
    let dead = DeadLetter {
        reason: "bad".into(),
        kind: "decode".into(),
        topic: "t".into(),
        partition: 1,
        offset: 2,
        key: Some(b"k".to_vec()),
        value: None,
        component: "fuzz".into(),
    };
    let mut s = vec![0xf2, 0];
    s.extend(codec.encode_dead_letter(&dead).unwrap());
    seeds.push(s);
    let mut s = vec![0xf3, 0];
    s.extend(codec.encode_route_progress(&RouteProgress { task: 1, through: 5 }).unwrap());
    seeds.push(s);
    // The same records re-framed with the other writer ids.
    let n = seeds.len();
    for (i, id) in writer_ids.iter().enumerate() {
        let mut s = seeds[i % n].clone();
        let klen = s[1] as usize;
        if s.len() >= 2 + klen + 5 {
            s[2 + klen + 1..2 + klen + 5].copy_from_slice(&id.to_be_bytes());
            seeds.push(s);
        }
    }
    let check = move |input: &[u8]| -> Result<String, String> {
        // Layout: topic selector, key length, key, framed value.
        let Some((&sel, rest)) = input.split_first() else { return Ok("empty".into()) };
        let (&klen, rest) = rest.split_first().unwrap_or((&0, &[]));
        let klen = (klen as usize).min(rest.len());
        let (key, value) = rest.split_at(klen);
        let verdict = |r: Result<(), CodecError>| match r {
            Ok(()) => Ok("ok".to_string()),
            Err(e) if e.is_poison() && !e.to_string().trim().is_empty() => Ok(format!("{} {}", e.kind(), class(&e))),
            Err(e) => Err(format!("not a dead-letter class: {} ({e})", e.kind())),
        };
        match sel {
            0xf0 => verdict(codec.decode_command(value).map(|_| ())),
            0xf1 => verdict(codec.decode_result(value).map(|_| ())),
            0xf2 => verdict(codec.decode_dead_letter(value).map(|_| ())),
            0xf3 => verdict(codec.decode_route_progress(value).map(|_| ())),
            _ => {
                let topic = topics[sel as usize % topics.len()];
                let tombstone = value.is_empty() && sel & 0x80 != 0;
                let decoded = codec.decode_event(topic, key, (!tombstone).then_some(value));
                if topic == Topic::Pings {
                    if let Some((tenant, ping)) = codec.decode_current_ping(key, value) {
                        match &decoded {
                            Ok(e) if e.tenant == tenant && e.event == Event::Ping(ping.clone()) => {}
                            other => return Err(format!("hot path {ping:?} disagrees with {other:?}")),
                        }
                    }
                }
                // Anything decoded must encode back (the processor re-emits).
                if let Ok(e) = &decoded {
                    if let Err(err) = codec.encode_event(&e.tenant, &e.event) {
                        if !matches!(e.event, Event::Delete(_)) {
                            return Err(format!("decoded {e:?} does not encode: {err}"));
                        }
                    }
                }
                let _ = unframe(value);
                verdict(decoded.map(|_| ()))
            }
        }
    };
    Target { name: "avro", text: false, seeds, check: Box::new(check) }
}

fn servicetrade() -> Target {
    let seeds = [
        r#"{"messageId":"m-1","timestamp":1764336000,"data":[{"action":"updated","timestamp":1764336000,"userId":7,"entity":{"type":"appointment","id":7001,"uri":"/api/appointment/7001"},"changeset":[{"field":"status","oldValue":"unscheduled","newValue":"scheduled"}]}]}"#,
        r#"{"messageId":"m-2","data":[{"action":"created","entity":{"type":"job","id":"900"}},{"action":"deleted","entity":{"type":"location","id":5}},{"action":"created","entity":{"type":"clock","id":12}}]}"#,
        r#"{"messageId":"m-3","data":[]}"#,
    ];
    Target {
        name: "servicetrade",
        text: true,
        seeds: seeds.iter().map(|s| s.as_bytes().to_vec()).collect(),
        check: Box::new(|input| match geoclock::vendor::servicetrade::webhook::parse(input) {
            Ok(m) if m.message_id.is_empty() => Err("accepted a message without an id".into()),
            Ok(_) => Ok("ok".into()),
            Err(e) if e.trim().is_empty() => Err("empty reason".into()),
            Err(e) => Ok(class(&e)),
        }),
    }
}

fn azuga() -> Target {
    let seeds = [
        r#"[{"eventType":"GPS_MESSAGE","vehicleId":"veh-000","userId":"u1","deviceSerial":"d1","latitude":35.2271,"longitude":-80.8431,"speed":31,"locationTime":1764336000000,"tripState":"ON_TRIP","accuracy":4}]"#,
        r#"{"eventType":"GPS_MESSAGE","vehicleId":12,"latitude":35.1,"longitude":-80.1,"speed":0,"locationTime":1764336000000}"#,
        r#"[{"eventType":"ENTERED_GEOFENCE","vehicleId":"v","latitude":1,"longitude":2,"locationTime":1}]"#,
    ];
    Target {
        name: "azuga",
        text: true,
        seeds: seeds.iter().map(|s| s.as_bytes().to_vec()).collect(),
        check: Box::new(|input| match geoclock::vendor::azuga::map::webhook(input) {
            Ok(pings) => {
                for (p, _) in &pings {
                    if !(p.lat.is_finite() && p.lon.is_finite()) {
                        return Err(format!("non-finite position accepted: {p:?}"));
                    }
                }
                Ok(format!("ok {}", pings.len().min(3)))
            }
            Err(e) if e.trim().is_empty() => Err("empty reason".into()),
            Err(e) => Ok(class(&e)),
        }),
    }
}

fn scenario() -> Target {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut seeds = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml") {
            seeds.push(std::fs::read(&p).unwrap());
        }
    }
    seeds.sort();
    Target {
        name: "scenario",
        text: true,
        seeds,
        check: Box::new(|input| {
            let text = String::from_utf8_lossy(input);
            match Scenario::from_yaml(&text, "fuzz.yaml") {
                Ok(s) => match s.run() {
                    Ok(out) => {
                        let _ = out.to_json();
                        Ok("runs".into())
                    }
                    Err(e) if e.to_string().trim().is_empty() => Err("empty engine error".into()),
                    Err(e) => Ok(format!("engine {}", class(&e))),
                },
                Err(e) if !e.to_string().contains("fuzz.yaml") => Err(format!("error does not name the file: {e}")),
                Err(e) => Ok(class(&e.to_string().replace("malformed scenario fuzz.yaml: ", ""))),
            }
        }),
    }
}

const TENANTS: &str = r#"
[[tenants]]
name = "acme"
timezone = "America/New_York"
settings = { window_hours = 4 }
[tenants.servicetrade]
base_url = "http://st/"
username = "admin"
password = { value = "SEKRIT-pw-123" }
webhook_secret = { value = "SEKRIT-hook-456" }
webhook_auth = "hmac"
[tenants.azuga]
base_url = "http://az"
api_key = { value = "SEKRIT-key-789" }
webhook_secret = { value = "SEKRIT-hook-000" }
webhook_auth = "basic"
rate_limit_ms = 100
[tenants.email]
from = "Acme <ops@acme.example>"
smtp_url = { value = "smtp://user:SEKRIT-smtp@mail:25" }
report_recipients = ["ops@acme.example"]
report_token = { value = "SEKRIT-report" }
[[tenants]]
name = "other"
"#;

/// Whether `text` holds `marker` outside every quoted string (then an
/// error may name it: it is a key, not a value).
fn unquoted(text: &str, marker: &str) -> bool {
    text.lines().any(|line| {
        let mut outside = String::new();
        let mut quote: Option<char> = None;
        for c in line.chars() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '"' || c == '\'' => quote = Some(c),
                None if c == '#' => break,
                None => outside.push(c),
            }
        }
        outside.contains(marker)
    })
}

/// When `text` parses as TOML: the values of its secret fields (`{ value
/// = "…" }` under password, webhook_secret, api_key, smtp_url,
/// report_token) holding the marker, less any that a non-secret string of
/// the file also holds, or holds outside quotes (a name, a URL or a key
/// the mutation spliced one into: to show that is not to leak a secret).
fn secret_values(text: &str) -> Option<Vec<String>> {
    const SECRET_FIELDS: [&str; 5] = ["password", "webhook_secret", "api_key", "smtp_url", "report_token"];
    fn walk(v: &toml::Value, key: &str, secret: bool, secrets: &mut Vec<String>, others: &mut Vec<String>) {
        match v {
            toml::Value::String(s) if secret && key == "value" => secrets.push(s.clone()),
            toml::Value::String(s) => others.push(s.clone()),
            toml::Value::Array(a) => a.iter().for_each(|v| walk(v, key, secret, secrets, others)),
            toml::Value::Table(t) => {
                for (k, v) in t {
                    walk(v, k, secret || SECRET_FIELDS.contains(&key), secrets, others)
                }
            }
            _ => {}
        }
    }
    let table: toml::Table = text.parse().ok()?;
    let (mut secrets, mut others) = (Vec::new(), Vec::new());
    for (k, v) in &table {
        walk(v, k, false, &mut secrets, &mut others);
    }
    secrets.retain(|s| s.contains("SEKRIT") && !others.iter().any(|o| o.contains(s.as_str())) && !unquoted(text, s));
    Some(secrets)
}

fn tenants() -> Target {
    Target {
        name: "tenants",
        text: true,
        seeds: vec![TENANTS.as_bytes().to_vec(), TENANTS.replace("hmac", "key").into_bytes()],
        check: Box::new(|input| {
            let text = String::from_utf8_lossy(input);
            // A shown text leaks when it holds one of the file's secret
            // values; when the file does not parse, when it holds the
            // marker that the file has only inside quotes.
            let leaks = |shown: &str| match secret_values(&text) {
                Some(secrets) => secrets.iter().any(|s| shown.contains(s.as_str())),
                None => shown.contains("SEKRIT") && !unquoted(&text, "SEKRIT"),
            };
            match geoclock::config::tenants::parse(&text, "fuzz.toml") {
                Ok(t) => {
                    let shown = format!("{t:?}");
                    if leaks(&shown) {
                        return Err(format!("a secret in Debug: {shown}"));
                    }
                    Ok(format!("ok {}", t.len().min(3)))
                }
                Err(e) => {
                    let msg = e.to_string();
                    if leaks(&msg) {
                        return Err(format!("a secret value in the error: {msg}"));
                    }
                    if msg.trim().is_empty() {
                        return Err("empty error".into());
                    }
                    Ok(class(&msg.replace("malformed tenants file fuzz.toml: ", "")))
                }
            }
        }),
    }
}

/// Runs `inputs` mutated inputs through `t`; the number of failures.
fn campaign(t: &Target, inputs: u64, seed: u64) -> u64 {
    let mut rng = Rng(seed | 1);
    let mut corpus = t.seeds.clone();
    let mut seen: HashSet<String> = HashSet::new();
    let (mut failures, mut panics) = (0u64, 0u64);
    let started = Instant::now();
    let crash_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-crashes");
    for seed_input in t.seeds.iter() {
        if let Err(why) = (t.check)(seed_input) {
            eprintln!("{}: a seed fails its own check: {why}", t.name);
            std::process::exit(2);
        }
    }
    // Splices and repeats would otherwise grow inputs without end and the
    // rate with them; as libFuzzer's -max_len, cap them at twice the
    // largest seed (at least 4 KiB).
    let max_len = t.seeds.iter().map(|s| 2 * s.len()).max().unwrap_or(0).max(4096);
    for n in 0..inputs {
        let base = &corpus[rng.below(corpus.len())];
        let mut input = if rng.chance(64) { base.clone() } else { mutate(&mut rng, base, &corpus, t.text) };
        input.truncate(max_len);
        let outcome = catch_unwind(AssertUnwindSafe(|| (t.check)(&input)));
        let failed = match outcome {
            Ok(Ok(class)) => {
                if corpus.len() < 4096 && seen.insert(class) {
                    corpus.push(input.clone());
                }
                None
            }
            Ok(Err(why)) => Some(why),
            Err(p) => {
                panics += 1;
                Some(format!(
                    "panic: {}",
                    p.downcast_ref::<String>()
                        .cloned()
                        .or(p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default()
                ))
            }
        };
        if let Some(why) = failed {
            failures += 1;
            let _ = std::fs::create_dir_all(&crash_dir);
            let file = crash_dir.join(format!("{}-{n}.bin", t.name));
            let _ = std::fs::write(&file, &input);
            eprintln!("{}: input #{n} fails ({}): {why}", t.name, file.display());
            if failures >= 20 {
                break;
            }
        }
        if n > 0 && n % 1_000_000 == 0 {
            eprintln!("{}: {n} inputs, {} corpus, {:?}", t.name, corpus.len(), started.elapsed());
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "fuzz {}: {inputs} inputs in {secs:.1} s ({:.0}/s), {} outcome classes, corpus {}, {failures} failures ({panics} panics)",
        t.name,
        inputs as f64 / secs.max(1e-9),
        seen.len(),
        corpus.len()
    );
    failures
}

fn main() {
    // A panic is caught and reported per input; keep its message off stderr.
    std::panic::set_hook(Box::new(|_| {}));
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let which = arg("--target").unwrap_or_else(|| "all".into());
    let inputs: u64 = arg("--inputs").and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let seed: u64 = arg("--seed").and_then(|v| v.parse().ok()).unwrap_or(0x5eed);
    if args.iter().any(|a| a == "--list") {
        for t in ["avro", "servicetrade", "azuga", "scenario", "tenants"] {
            println!("{t}: test");
        }
        return;
    }
    let makers: [(&str, fn() -> Target); 5] = [
        ("avro", avro),
        ("servicetrade", servicetrade),
        ("azuga", azuga),
        ("scenario", scenario),
        ("tenants", tenants),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, make) in makers {
        if which != "all" && which != name {
            continue;
        }
        let t = make();
        if campaign(&t, inputs, seed) == 0 {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    println!("fuzz: {passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
