//! Operating against a real cluster: the deployment's librdkafka properties
//! reach librdkafka (a SASL/TLS configuration against the plaintext test
//! broker fails loudly, with librdkafka's own error in the log and no
//! password in it), and the processor resolves writer schema ids from a
//! Confluent-compatible registry.

mod support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use geoclock::kafka::admin::ensure_topics;
use geoclock::kafka::codec::Codec;
use geoclock::kafka::registry::ConfluentRegistry;
use geoclock::kafka::topics::{Catalogue, Topic};
use geoclock::scenario::Scenario;
use geoclock::sim::registry::RegistrySim;
use support::broker::{Broker, Storage};
use support::kafka::{produce, read_to_end};

const PASSWORD: &str = "kafka-pw-9b3e71";

#[test]
fn kafka_properties_from_the_environment_and_a_file_reach_librdkafka() {
    let broker = Broker::start(Storage::Memory);
    let dir = std::env::temp_dir().join(format!("geoclock-kafka-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let props = dir.join("client.properties");
    std::fs::write(
        &props,
        "# a managed cluster\nsecurity.protocol=SASL_SSL\nsasl.mechanisms=PLAIN\nsasl.username=geoclock\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_geoclock"))
        .args(["topics", "create", "--brokers", broker.brokers(), "--timeout-s", "8"])
        .arg("--kafka-config")
        .arg(&props)
        .env("GEOCLOCK_KAFKA_SASL_PASSWORD", PASSWORD)
        .env("GEOCLOCK_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("geoclock runs");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a TLS client cannot talk to a plaintext broker:\n{log}");
    assert!(
        log.contains("properties=[\"security.protocol\", \"sasl.mechanisms\", \"sasl.username\", \"sasl.password\"]"),
        "{log}"
    );
    assert!(log.contains("librdkafka"), "librdkafka's own lines are logged:\n{log}");
    assert!(
        log.contains("SSL") || log.contains("ssl") || log.contains("handshake"),
        "the transport error is named:\n{log}"
    );
    assert!(!log.contains(PASSWORD), "the password never appears:\n{log}");
    // A bad filter or properties file is an error at start, not ignored.
    let bad = Command::new(env!("CARGO_BIN_EXE_geoclock"))
        .args(["topics", "create", "--brokers", broker.brokers()])
        .env("GEOCLOCK_LOG", "geoclock=loud")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("GEOCLOCK_LOG"), "{}", String::from_utf8_lossy(&bad.stderr));
    std::fs::write(&props, "security.protocol SASL_SSL\n").unwrap();
    let bad = Command::new(env!("CARGO_BIN_EXE_geoclock"))
        .args(["topics", "create", "--brokers", broker.brokers(), "--kafka-config"])
        .arg(&props)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("line 1: expected key=value"));
    // JSON logs: one object per line.
    let json = Command::new(env!("CARGO_BIN_EXE_geoclock"))
        .args(["topics", "create", "--brokers", broker.brokers(), "--timeout-s", "20"])
        .env("GEOCLOCK_LOG_FORMAT", "json")
        .env("GEOCLOCK_KAFKA_CLIENT_ID", "geoclock-json-test")
        .output()
        .unwrap();
    assert!(json.status.success(), "{}", String::from_utf8_lossy(&json.stderr));
    for line in String::from_utf8_lossy(&json.stderr).lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{line}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_processor_resolves_ids_from_a_confluent_registry() {
    let broker = Broker::start(Storage::Memory);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let catalogue = Catalogue { prefix: "reg".into(), partitions: 1, replication: 1 };
    rt.block_on(ensure_topics(broker.brokers(), &catalogue, Duration::from_secs(30))).unwrap();
    let (_sim, run) = rt.block_on(RegistrySim::start("127.0.0.1:0")).unwrap();
    let url = run.url();
    // The registry assigns its own ids (1, 2, 3…), not the built-in ones.
    let codec = Codec::new(Arc::new(ConfluentRegistry::new(&url).unwrap()), &catalogue).unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/arrival_basic.yaml");
    let scenario = Scenario::load(&path).unwrap();
    let want: BTreeSet<String> = scenario.run().unwrap().commands.iter().map(|c| c.id.clone()).collect();
    for e in scenario.all_events() {
        let r = codec.encode_event(&scenario.tenant, &e).unwrap();
        produce(broker.brokers(), &catalogue.name(r.topic), &[(r.key, r.value.unwrap_or_default())]);
    }
    let dir = std::env::temp_dir().join(format!("geoclock-registry-proc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let tenants = dir.join("tenants.yaml");
    std::fs::write(
        &tenants,
        format!("tenants:\n  {}: {}\n", scenario.tenant, serde_json::to_string(&scenario.settings).unwrap()),
    )
    .unwrap();
    let mut proc = Command::new(env!("CARGO_BIN_EXE_geoclock"))
        .args(["process", "--brokers", broker.brokers(), "--prefix", "reg", "--partitions", "1", "--commit-ms", "100"])
        .args(["--schema-registry", &url, "--group", "reg-processor"])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--tenants")
        .arg(&tenants)
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(dir.join("processor.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let got = loop {
        let records = read_to_end(broker.brokers(), &catalogue.name(Topic::Commands), 1, Duration::from_secs(30));
        let got: BTreeSet<String> =
            records.iter().filter_map(|(_, v)| codec.decode_command(v).ok()).map(|tc| tc.command.id).collect();
        if got == want || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let _ = proc.kill();
    let _ = proc.wait();
    let dead = read_to_end(broker.brokers(), &catalogue.name(Topic::DeadLetters), 1, Duration::from_secs(10));
    assert!(
        dead.is_empty(),
        "nothing dead-lettered: {} records\n{}",
        dead.len(),
        std::fs::read_to_string(dir.join("processor.log")).unwrap_or_default()
    );
    assert_eq!(got, want, "the processor decided the scenario's commands from registry ids");
    let _ = std::fs::remove_dir_all(&dir);
}
