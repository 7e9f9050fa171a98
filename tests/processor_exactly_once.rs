//! Exactly-once effect through crashes, on a real broker (nisshi) with real
//! `geoclock process` processes killed by SIGKILL.
//!
//! A generated day (3 000 appointments, 216 000 pings) is put on the topics;
//! two processors share the work; one is killed mid-stream (mid-batch), a
//! third is started and killed as soon as it is assigned partitions (right
//! after a rebalance, while it restores), and a fourth takes over the first
//! one's stale state directory. At the end the commands topic must hold
//! exactly the commands the pure engine derives from the same input, as
//! the audit re-derives them ([`geoclock::audit`]): every id present, no
//! other id, and every record of an id (duplicates allowed) with the same
//! content.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use geoclock::audit::kafka::{audit, AuditOptions};
use geoclock::audit::Findings;
use geoclock::engine::Engine;
use geoclock::kafka::admin::ensure_topics;
use geoclock::kafka::codec::Codec;
use geoclock::kafka::registry::FileRegistry;
use geoclock::kafka::topics::Catalogue;
use geoclock::model::Settings;
use geoclock::processor::Tenants;
use geoclock::scenario::generate::Day;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use support::broker::{Broker, Storage};

const TENANT: &str = "fleet";
const T: Duration = Duration::from_secs(30);

struct Proc {
    child: Child,
    metrics: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn start(broker: &str, prefix: &str, state: &PathBuf) -> Proc {
        Proc::start_with(broker, prefix, state, None)
    }

    fn start_with(broker: &str, prefix: &str, state: &PathBuf, fault: Option<&str>) -> Proc {
        let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_geoclock"))
            .args(["process", "--brokers", broker, "--prefix", prefix, "--partitions", "3"])
            .args(["--group", &format!("{prefix}-group"), "--session-timeout-ms", "6000"])
            .args(["--batch", "2000", "--commit-ms", "100"])
            .arg("--state-dir")
            .arg(state)
            .args(["--metrics", &format!("127.0.0.1:{metrics}")])
            .env("GEOCLOCK_FAULT", fault.unwrap_or(""))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("geoclock process starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stderr, sink) = (child.stderr.take().unwrap(), log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Proc { child, metrics, log }
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    /// Waits up to `secs` for a log line containing `needle`.
    fn wait_logged(&self, needle: &str, secs: u64, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !self.logged(needle) {
            assert!(Instant::now() < deadline, "{what}:\n{}", self.log.lock().unwrap().join("\n"));
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Sum of a counter over its labels, from the live /metrics endpoint.
    fn counter(&self, name: &str) -> f64 {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.metrics)) else { return 0.0 };
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A broker with a generated day on its topics, and how many commands the
/// pure engine derives from it.
struct World {
    /// Kept alive: dropping it stops the broker.
    _broker: Broker,
    brokers: String,
    prefix: String,
    events: usize,
    expected: usize,
}

/// A fresh state directory root for one test's processes.
fn scratch(name: &str) -> std::path::PathBuf {
    let root = std::env::temp_dir().join(format!("geoclock-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    root
}

fn world(name: &str, techs: usize) -> World {
    let broker = Broker::start(Storage::Memory);
    let brokers = broker.brokers().to_string();
    let prefix = format!("{name}{}", std::process::id());
    let catalogue = Catalogue { prefix: prefix.clone(), partitions: 3, replication: 1 };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(ensure_topics(&brokers, &catalogue, T)).expect("topics");
    let codec = Codec::new(Arc::new(FileRegistry::in_memory()), &catalogue).unwrap();

    // The input, and what the pure engine makes of it.
    let events = Day { seed: 42, techs, appointments_per_tech: 5, ping_every_s: 120 }.events();
    let mut engine = Engine::new(TENANT, Settings::default()).unwrap();
    let mut expected_list = Vec::new();
    for e in &events {
        engine.handle(e, &mut expected_list).unwrap();
    }
    let expected = expected_list.iter().map(|c| &c.id).collect::<BTreeSet<_>>().len();
    assert!(expected >= techs * 5 * 4, "{expected} commands");

    // Put it all on the broker, in order, stamped in order.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("max.in.flight.requests.per.connection", "1")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let records: Vec<_> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let r = codec.encode_event(TENANT, e).unwrap();
            (catalogue.name(r.topic), r.key, r.value, 1_700_000_000_000 + i as i64)
        })
        .collect();
    rt.block_on(async {
        let sends = records.iter().map(|(topic, key, value, ts)| {
            let mut r = FutureRecord::<Vec<u8>, Vec<u8>>::to(topic).key(key).timestamp(*ts);
            if let Some(v) = value {
                r = r.payload(v);
            }
            producer.send(r, T)
        });
        for d in futures::future::join_all(sends).await {
            d.expect("input produced");
        }
    });
    World { _broker: broker, brokers, prefix, events: events.len(), expected }
}

impl World {
    /// The audit of the topics: every command re-derived from the input in
    /// the processor's order and compared with the commands topic.
    fn audit(&self) -> Findings {
        let opts = AuditOptions::everything(&self.brokers, &self.prefix, Tenants::default(), T);
        audit(&opts).expect("audit").findings
    }

    /// Waits until no derived command is missing from the topic and a few
    /// seconds pass; then checks: no id missing, none extra, every record
    /// of an id with the derived content. Returns the duplicate records.
    fn check(&self, logs: impl Fn() -> String) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut f = self.audit();
        while !f.missing.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(2));
            f = self.audit();
        }
        std::thread::sleep(Duration::from_secs(3));
        let f = self.audit();
        let some = |l: &[geoclock::audit::diff::Entry]| l.iter().take(5).map(|e| e.id.clone()).collect::<Vec<_>>();
        assert!(f.missing.is_empty(), "{} commands lost, e.g. {:?}\n{}", f.missing.len(), some(&f.missing), logs());
        assert!(f.extra.is_empty(), "{} commands not derived by the engine, e.g. {:?}", f.extra.len(), some(&f.extra));
        assert!(
            f.differs.is_empty(),
            "commands emitted with other content than the engine's:\n{:#?}\n{}",
            f.differs.iter().take(3).collect::<Vec<_>>(),
            logs()
        );
        assert_eq!(f.matched as usize, self.expected, "the audit re-derives what the pure engine derives");
        eprintln!(
            "{} distinct commands, {} duplicate records (dropped by sinks by id), {} input records",
            f.matched, f.duplicate_records, self.events
        );
        f.duplicate_records
    }
}

#[test]
fn sigkilled_processors_neither_lose_nor_double_a_command() {
    let w = world("eo", 600);
    let (brokers, prefix) = (&w.brokers, &w.prefix);
    let root = scratch("eo");
    let dir = |n: &str| root.join(n);
    let mut p1 = Proc::start(brokers, prefix, &dir("s1"));
    let p2 = Proc::start(brokers, prefix, &dir("s2"));

    // 1. Kill p1 in the middle of the stream (it is mid-batch all the time).
    let deadline = Instant::now() + Duration::from_secs(120);
    while p1.counter("geoclock_processor_records_total") < 30_000.0 {
        assert!(Instant::now() < deadline, "p1 made no progress:\n{}", p1.log.lock().unwrap().join("\n"));
        std::thread::sleep(Duration::from_millis(100));
    }
    p1.kill();

    // 2. A new member, killed as soon as it is assigned (restoring).
    let mut p3 = Proc::start(brokers, prefix, &dir("s3"));
    p3.wait_logged("partition assigned", 60, "p3 never assigned");
    p3.kill();

    // 3. p1's stale state directory comes back in a new process.
    let p4 = Proc::start(brokers, prefix, &dir("s1"));

    let logs = || format!("p2:\n{}\np4:\n{}", p2.log.lock().unwrap().join("\n"), p4.log.lock().unwrap().join("\n"));
    w.check(logs);

    // The crash paths really ran: partitions moved and were restored from
    // their changelogs.
    let notable: Vec<String> = [&p2, &p4]
        .iter()
        .flat_map(|p| p.log.lock().unwrap().clone())
        .filter(|l| l.contains("changelog restored") || l.contains("re-processing") || l.contains("partition"))
        .collect();
    eprintln!("{}", notable.join("\n"));
    assert!(
        notable.iter().any(|l| l.contains("changelog restored") && !l.contains(" records=0 ")),
        "no partition was restored from a changelog"
    );
    drop((p2, p4));
    let _ = std::fs::remove_dir_all(&root);
}

/// Graceful scale-out and scale-in (no crash): partitions move by
/// cooperative rebalance, each revoked one drained and committed before it
/// is released, so nothing is re-processed: every command exactly once, no
/// duplicate record at all.
#[test]
fn graceful_rebalances_emit_every_command_exactly_once() {
    let w = world("rb", 300);
    let (brokers, prefix) = (&w.brokers, &w.prefix);
    let root = scratch("rb");
    let p1 = Proc::start(brokers, prefix, &root.join("s1"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while p1.counter("geoclock_processor_records_total") < 10_000.0 {
        assert!(Instant::now() < deadline, "p1 made no progress:\n{}", p1.log.lock().unwrap().join("\n"));
        std::thread::sleep(Duration::from_millis(50));
    }
    // Scale out: p2 joins and takes partitions from p1.
    let mut p2 = Proc::start(brokers, prefix, &root.join("s2"));
    p2.wait_logged("task ready", 60, "p2 never got a partition");
    // Scale in: p2 leaves gracefully (SIGTERM: commit, leave the group).
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill").arg("-TERM").arg(p2.child.id().to_string()).status();
    let _ = p2.child.wait();
    let logs = || format!("p1:\n{}\np2:\n{}", p1.log.lock().unwrap().join("\n"), p2.log.lock().unwrap().join("\n"));
    let duplicates = w.check(logs);
    assert!(p1.logged("event=\"revoked\""), "p1 never gave a partition away:\n{}", logs());
    assert!(p2.logged("task stopped"), "p2 did not stop its tasks:\n{}", logs());
    assert_eq!(duplicates, 0, "a graceful rebalance re-processed input:\n{}", logs());
    // p1's appointment-stage tasks hold the day's 1 500 appointments.
    let held = p1.counter("geoclock_processor_state_appointments");
    assert!(held >= 1500.0, "state_appointments {held}");
    p2.kill();
    drop(p1);
    let _ = std::fs::remove_dir_all(&root);
}

/// The worst crash point, forced: a process aborts right after a batch's
/// commands were acknowledged and before its state was written. Its
/// successor must re-produce those commands, with the same ids and the same
/// contents, and nothing else.
#[test]
fn a_crash_after_commands_reemits_them_identically() {
    let w = world("ac", 300);
    let (brokers, prefix) = (&w.brokers, &w.prefix);
    let root = scratch("ac");
    let mut p1 = Proc::start_with(brokers, prefix, &root.join("s1"), Some("after_commands:3"));
    let status = p1.child.wait().expect("p1 ends");
    assert!(!status.success(), "p1 should have aborted");
    assert!(p1.logged("GEOCLOCK_FAULT"), "{}", p1.log.lock().unwrap().join("\n"));
    let p2 = Proc::start(brokers, prefix, &root.join("s1"));
    let logs = || p2.log.lock().unwrap().join("\n");
    let duplicates = w.check(logs);
    assert!(p2.logged("re-processing a batch cut short"), "no replay:\n{}", logs());
    assert!(duplicates > 0, "the aborted batch's commands should be on the topic twice");
    drop(p2);
    let _ = std::fs::remove_dir_all(&root);
}

/// A zombie: p1 stalls in a batch's commit (commands acknowledged, state not
/// yet written) and is stopped (SIGSTOP) until p2 has taken its partitions
/// over (claimed, restored, re-processing the cut batch); resumed, p1 writes
/// that batch's state to the changelog before it learns it lost the
/// partition. Nobody may restore those writes: a fresh p3 restoring every
/// partition must report them fenced, and the commands stay exactly the
/// engine's.
#[test]
fn a_zombies_late_writes_are_fenced_off() {
    let w = world("zo", 300);
    let (brokers, prefix) = (&w.brokers, &w.prefix);
    let root = scratch("zo");
    let mut p1 = Proc::start_with(brokers, prefix, &root.join("s1"), Some("stall_after_commands:3"));
    p1.wait_logged("stalling after commands", 120, "p1 never stalled");
    let signal = |sig: &str, p: &Proc| {
        let _ = Command::new("kill").arg(sig).arg(p.child.id().to_string()).status();
    };
    signal("-STOP", &p1);
    let stalled: String = {
        let log = p1.log.lock().unwrap();
        let line = log.iter().find(|l| l.contains("stalling after commands")).unwrap();
        line.split("task=").nth(1).unwrap().split(' ').next().unwrap().to_string()
    };
    // p2 takes every partition once p1's session times out.
    let mut p2 = Proc::start(brokers, prefix, &root.join("s2"));
    let took = format!("task ready task={stalled} ");
    p2.wait_logged(&took, 90, &format!("p2 never took {stalled}"));
    signal("-CONT", &p1);
    p1.wait_logged("stall over", 30, "p1 never resumed");
    std::thread::sleep(Duration::from_secs(2));
    p1.kill();
    let logs = || format!("p1:\n{}\np2:\n{}", p1.log.lock().unwrap().join("\n"), p2.log.lock().unwrap().join("\n"));
    w.check(logs);
    // p2 leaves cleanly; p3 restores everything from the changelogs.
    signal("-TERM", &p2);
    let _ = p2.child.wait();
    // p2 saw p1's late batch land in its changelog partition, so even its
    // clean stop leaves its local state untrusted.
    assert!(p2.logged("another writer appended"), "p2 never noticed p1's writes:\n{}", logs());
    let p3 = Proc::start(brokers, prefix, &root.join("s3"));
    let deadline = Instant::now() + Duration::from_secs(60);
    // Three partitions, a task per stage each.
    while p3.log.lock().unwrap().iter().filter(|l| l.contains("task ready")).count() < 6 {
        assert!(Instant::now() < deadline, "p3 not ready:\n{}", p3.log.lock().unwrap().join("\n"));
        std::thread::sleep(Duration::from_millis(50));
    }
    let ready = p3.log.lock().unwrap().iter().find(|l| l.contains(&took)).cloned().unwrap_or_default();
    let fenced: u64 =
        ready.split("fenced_records=").nth(1).and_then(|s| s.split(' ').next()?.parse().ok()).unwrap_or(0);
    assert!(fenced > 0, "p1's late writes were not fenced:\n{ready}\n{}", logs());
    w.check(|| p3.log.lock().unwrap().join("\n"));
    drop(p3);
    let _ = std::fs::remove_dir_all(&root);
}
