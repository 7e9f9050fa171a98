//! Stage one's "caught up" claim is good only for the moment it was made.
//! An appointment mirrored while the processor was down must be routed to
//! its vehicle before that vehicle's later pings are judged, even though a
//! caught-up claim from before the stop sits unread on the routes partition.
//! (Before the gate distrusted such claims, the restarted vehicle task took
//! the pings at once and the arrival was never decided.)

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use geoclock::engine::Event;
use geoclock::kafka::records::{RouteProgress, ROUTE_PROGRESS_KEY};
use geoclock::kafka::registry::FileRegistry;
use geoclock::kafka::topics::Topic;
use geoclock::processor::{Config, Processor};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

const T: Duration = Duration::from_secs(30);

type Rec = (String, Vec<u8>, Option<Vec<u8>>);

fn produce(rt: &tokio::runtime::Runtime, brokers: &str, records: &[Rec], first_time: i64) {
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    rt.block_on(async {
        for (i, (topic, key, value)) in records.iter().enumerate() {
            let mut r = FutureRecord::<Vec<u8>, Vec<u8>>::to(topic).key(key).timestamp(first_time + i as i64);
            if let Some(v) = value {
                r = r.payload(v);
            }
            producer.send(r, T).await.map_err(|(e, _)| e).unwrap_or_else(|e| panic!("{topic}: {e}"));
        }
    });
}

fn run_until_idle(config: &Config) {
    let proc = Processor::start(config.clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut since: Option<Instant> = None;
    // Idle for a while: stage one's routes (if any) applied by stage two
    // (stage one repeats its caught-up claim every second, a moment's work).
    while since.is_none_or(|s| s.elapsed() < Duration::from_millis(300)) {
        let st = proc.status();
        let idle = st.len() == 2 && st.iter().all(|s| s.idle && s.ready);
        since = if idle { since.or(Some(Instant::now())) } else { None };
        assert!(Instant::now() < deadline, "processor never idle: {st:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    proc.stop().unwrap();
}

#[test]
fn an_appointment_mirrored_while_down_is_routed_before_later_pings() {
    let support::ScenarioWorld { broker: _broker, brokers, catalogue, rt, codec, scenario, pure } =
        support::scenario_world("rg", "arrival_basic.yaml");
    assert!(pure.commands.len() >= 3, "the scenario decides an arrival: {:?}", pure.commands);
    let encode = |e: &Event| {
        let r = codec.encode_event(&scenario.tenant, e).unwrap();
        (catalogue.name(r.topic), r.key, r.value)
    };
    // Everything but the appointment first; the appointment and the day's
    // clock events and pings while the processor is down.
    let (later, first): (Vec<Event>, Vec<Event>) = scenario
        .all_events()
        .into_iter()
        .partition(|e| matches!(e, Event::Appointment(_) | Event::Clock(_) | Event::Ping(_)));
    let dir = std::env::temp_dir().join(format!("geoclock-restart-gate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = Config::new(&brokers, catalogue.clone(), dir.clone(), Arc::new(FileRegistry::in_memory()));
    config.group_id = "restart-gate".into();
    config.tenants.tenants.insert(scenario.tenant.clone(), scenario.settings.clone());

    let base = 1_600_000_000_000;
    produce(&rt, &brokers, &first.iter().map(encode).collect::<Vec<_>>(), base);
    run_until_idle(&config);
    // Stage one's last words before the stop, unread by stage two: caught up.
    let claim = codec.encode_route_progress(&RouteProgress { task: 0, through: i64::MAX }).unwrap();
    produce(
        &rt,
        &brokers,
        &[(catalogue.name(Topic::FenceRoutes), ROUTE_PROGRESS_KEY.to_vec(), Some(claim))],
        base + 1000,
    );
    produce(&rt, &brokers, &later.iter().map(encode).collect::<Vec<_>>(), base + 2000);
    run_until_idle(&config);

    let commands: Vec<_> = support::kafka::read_to_end(&brokers, &catalogue.name(Topic::Commands), 1, T)
        .into_iter()
        .map(|(_, v)| codec.decode_command(&v).unwrap().command)
        .collect();
    assert_eq!(commands, pure.commands);
    let _ = std::fs::remove_dir_all(&dir);
}
