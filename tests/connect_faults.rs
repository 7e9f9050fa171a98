//! The connectors against vendors that misbehave: one record that will not
//! encode among good ones, list answers that come back short or without a
//! page count, and a connector whose clock is behind Azuga's. Each fails on
//! the connectors before these fixes (a whole page lost and the cursor
//! stuck; everything past page one tombstoned; live fixes refused as from
//! the future).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use geoclock::engine::{EntityRef, Event};
use geoclock::kafka::admin::ensure_topics;
use geoclock::kafka::codec::Codec;
use geoclock::kafka::registry::FileRegistry;
use geoclock::kafka::topics::{Catalogue, Topic};
use geoclock::model::{Id, Ping, Ts};
use geoclock::sim::azuga::{self, AzugaSim};
use geoclock::sim::fleet::{generate, FleetConfig};
use geoclock::sim::servicetrade::{self as st, ServiceTradeSim};
use geoclock::sim::world::World;
use serde_json::json;
use support::broker::{Broker, Storage};
use support::connect::*;
use support::sinks::chaos_rule;

struct Setup {
    rt: tokio::runtime::Runtime,
    _broker: Broker,
    brokers: String,
    catalogue: Catalogue,
    codec: Codec,
    seen: Seen,
    dir: std::path::PathBuf,
}

fn setup(name: &str) -> Setup {
    let broker = Broker::start(Storage::Memory);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    let catalogue = Catalogue { prefix: format!("cf-{name}"), partitions: PARTITIONS, replication: 1 };
    let brokers = broker.bootstrap();
    rt.block_on(ensure_topics(&brokers, &catalogue, Duration::from_secs(20))).expect("topics");
    let codec = Codec::new(Arc::new(FileRegistry::in_memory()), &catalogue).unwrap();
    let seen = tail(&brokers, &catalogue);
    let dir = std::env::temp_dir().join(format!("geoclock-cf-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Setup { rt, _broker: broker, brokers, catalogue, codec, seen, dir }
}

fn world(techs: usize) -> World {
    let day_start = Ts::from_secs(chrono::Utc::now().timestamp() - 14 * 3600);
    generate(&FleetConfig { technicians: techs, seed: 5, day_start, ..FleetConfig::default() })
}

fn wait_until(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Dead letters on the topic: (source topic field, reason).
fn dead_letters(s: &Setup) -> Vec<(String, String)> {
    s.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _, _)| *t == Topic::DeadLetters)
        .filter_map(|(_, _, v)| s.codec.decode_dead_letter(v.as_deref()?).ok())
        .map(|d| (d.topic, d.reason))
        .collect()
}

/// Tombstones published on entity topics.
fn tombstones(s: &Setup) -> usize {
    s.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _, v)| v.is_none() && !matches!(t, Topic::DeadLetters | Topic::Pings | Topic::ClockEvents))
        .count()
}

fn has(s: &Setup, e: &Event) -> bool {
    let rec = s.codec.encode_event("acme", e).unwrap();
    by_key(&s.codec, &s.seen).get(&(rec.topic, rec.key)).and_then(|v| v.last().cloned()) == Some(Some(e.clone()))
}

#[test]
fn one_bad_record_is_dead_lettered_and_the_rest_of_the_page_flows() {
    let s = setup("bad");
    let mut w = world(6);
    // A location no schema accepts, and a pairing from before 1970.
    w.locations[0].lat = Some(95.0);
    w.pairings[0].from = Ts(-1);
    let (sts, st_run) = s.rt.block_on(ServiceTradeSim::start(st::Config::default(), &w, "127.0.0.1:0")).unwrap();
    let (azs, az_run) = s
        .rt
        .block_on(AzugaSim::start(azuga::Config { rate_limit_ms: 50, ..azuga::Config::default() }, &w, "127.0.0.1:0"))
        .unwrap();
    let t = tenants(&st_run.url(), &az_run.url());
    let (c_st, c_az) = s.rt.block_on(both(&s.brokers, &s.catalogue, &s.dir, &t, ("127.0.0.1:0", "127.0.0.1:0")));
    let good: Vec<Event> = w
        .locations
        .iter()
        .skip(1)
        .cloned()
        .map(Event::Location)
        .chain(w.jobs.iter().cloned().map(Event::Job))
        .chain(w.appointments.iter().cloned().map(Event::Appointment))
        .chain(w.pairings.iter().skip(1).cloned().map(Event::Pairing))
        .chain(w.vehicles.iter().cloned().map(Event::Vehicle))
        .collect();
    wait_until("every good entity is published", 60, || good.iter().all(|e| has(&s, e)));
    let dead = dead_letters(&s);
    assert!(dead.iter().any(|(src, why)| src.contains("location") && why.contains("lat")), "{dead:?}");
    assert!(dead.iter().any(|(src, _)| src.contains("pairing")), "{dead:?}");
    // The cursor moved on: a later change is still picked up.
    let mut job = w.jobs[1].clone();
    job.number = Some(Id::text("J-CHANGED"));
    sts.apply(Event::Job(job.clone()), None).unwrap();
    wait_until("a change after the bad record is published", 30, || has(&s, &Event::Job(job.clone())));
    let _ = azs;
    s.rt.block_on(async {
        c_st.stop().await;
        c_az.stop().await;
    });
}

#[test]
fn short_or_uncounted_listings_delete_nothing() {
    let s = setup("partial");
    let w = world(12);
    let (sts, st_run) = s.rt.block_on(ServiceTradeSim::start(st::Config::default(), &w, "127.0.0.1:0")).unwrap();
    let (azs, az_run) = s
        .rt
        .block_on(AzugaSim::start(azuga::Config { rate_limit_ms: 50, ..azuga::Config::default() }, &w, "127.0.0.1:0"))
        .unwrap();
    // Small pages; every third reconciliation (about every 2 s) is a full sweep.
    let t = tenants_with(&st_run.url(), &az_run.url(), "page_limit = 3", "");
    let (c_st, c_az) = s.rt.block_on(both(&s.brokers, &s.catalogue, &s.dir, &t, ("127.0.0.1:0", "127.0.0.1:0")));
    let all: Vec<Event> = w
        .locations
        .iter()
        .cloned()
        .map(Event::Location)
        .chain(w.appointments.iter().cloned().map(Event::Appointment))
        .chain(w.drivers.iter().cloned().map(Event::Driver))
        .chain(w.pairings.iter().cloned().map(Event::Pairing))
        .collect();
    wait_until("the first sync is published", 60, || all.iter().all(|e| has(&s, e)));
    assert_eq!(tombstones(&s), 0);
    // ServiceTrade now answers every list without its page count, and with
    // pages cut short; Azuga answers its next three lists short.
    chaos_rule(&st_run.url(), json!({"rate": 1.0, "omit_page_count": true, "truncate": 2, "methods": ["GET"]}));
    chaos_rule(&az_run.url(), json!({"count": 3, "truncate": 1, "methods": ["GET"]}));
    // Several full sweeps and entity syncs go by.
    let before = sts.calls().snapshot("/api/location").len();
    wait_until("full sweeps ran", 60, || sts.calls().snapshot("/api/location").len() >= before + 6);
    wait_until("azuga's short lists were served", 60, || {
        azs.calls().snapshot("/v").iter().filter(|c| c.injected.is_some()).count() >= 3
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(tombstones(&s), 0, "a partial listing deleted entities");
    // A real delete still goes through once the listings are whole again.
    chaos_rule(&st_run.url(), json!({}));
    let gone = w.locations[0].id.clone();
    sts.apply(Event::Delete(EntityRef::Location(gone.clone())), None).unwrap();
    wait_until("a real delete is tombstoned", 60, || {
        let rec = s.codec.encode_event("acme", &Event::Delete(EntityRef::Location(gone.clone()))).unwrap();
        by_key(&s.codec, &s.seen).get(&(rec.topic, rec.key)).and_then(|v| v.last().cloned()) == Some(None)
    });
    assert_eq!(tombstones(&s), 1);
    s.rt.block_on(async {
        c_st.stop().await;
        c_az.stop().await;
    });
}

#[test]
fn a_connector_whose_clock_is_behind_azugas_keeps_live_fixes() {
    let s = setup("skew");
    let w = world(3);
    // Azuga's clock (and so the trackers') is 15 minutes ahead of ours.
    let skew_ms = 15 * 60_000;
    let (_sts, st_run) = s.rt.block_on(ServiceTradeSim::start(st::Config::default(), &w, "127.0.0.1:0")).unwrap();
    let (azs, az_run) =
        s.rt.block_on(AzugaSim::start(
            azuga::Config { rate_limit_ms: 50, clock_offset_ms: skew_ms, ..azuga::Config::default() },
            &w,
            "127.0.0.1:0",
        ))
        .unwrap();
    let t = tenants(&st_run.url(), &az_run.url());
    let (c_st, c_az) = s.rt.block_on(both(&s.brokers, &s.catalogue, &s.dir, &t, ("127.0.0.1:0", "127.0.0.1:0")));
    wait_until("the webhook is registered", 30, || azs.outbox().has_hooks());
    // A live fix, stamped by Azuga's clock: 15 minutes "ahead" of ours.
    let now = chrono::Utc::now().timestamp_millis();
    let ping = Ping {
        vehicle: w.vehicles[0].id.clone(),
        time: Ts(now + skew_ms),
        lat: 35.2271,
        lon: -80.8431,
        speed_mph: Some(20.0),
        accuracy_m: None,
    };
    azs.apply(Event::Ping(ping.clone())).unwrap();
    wait_until("the live fix is published", 30, || has(&s, &Event::Ping(ping.clone())));
    let dead = dead_letters(&s);
    assert!(!dead.iter().any(|(_, why)| why.contains("future")), "{dead:?}");
    s.rt.block_on(async {
        c_st.stop().await;
        c_az.stop().await;
    });
}

/// A change stamped earlier than it shows up in listings (ServiceTrade's
/// stamps and its listings need not agree in time) is still picked up: the
/// reconcile cursor is the pass's start less an overlap, not the newest
/// stamp seen (which had already moved past it).
#[test]
fn a_change_stamped_before_the_newest_one_seen_is_not_missed() {
    let s = setup("cursor");
    let w = world(4);
    let (sts, st_run) = s.rt.block_on(ServiceTradeSim::start(st::Config::default(), &w, "127.0.0.1:0")).unwrap();
    let (_azs, az_run) = s
        .rt
        .block_on(AzugaSim::start(azuga::Config { rate_limit_ms: 50, ..azuga::Config::default() }, &w, "127.0.0.1:0"))
        .unwrap();
    // No webhooks (they would fetch the change whatever the cursor), no
    // full sweeps: reconciliation alone.
    let t = tenants_with(&st_run.url(), &az_run.url(), "", "");
    let t: Vec<_> = t
        .into_iter()
        .map(|mut t| {
            if let Some(st) = t.servicetrade.as_mut() {
                st.full_sweep_every = 1000;
            }
            t
        })
        .collect();
    let mut o = options(&s.brokers, &s.catalogue, &s.dir, "127.0.0.1:0");
    o.register_webhooks = false;
    let c_st = s.rt.block_on(geoclock::connect::start(geoclock::connect::Vendor::ServiceTrade, o, &t)).unwrap();
    wait_until("the first sync", 30, || w.jobs.iter().all(|j| has(&s, &Event::Job(j.clone()))));
    let now_s = chrono::Utc::now().timestamp();
    let mut y = w.jobs[0].clone();
    y.number = Some(Id::text("J-Y"));
    sts.apply_stamped(Event::Job(y.clone()), None, now_s).unwrap();
    wait_until("Y is published", 30, || has(&s, &Event::Job(y.clone())));
    // X shows up now, stamped 20 s before Y.
    let mut x = w.jobs[1].clone();
    x.number = Some(Id::text("J-X"));
    sts.apply_stamped(Event::Job(x.clone()), None, now_s - 20).unwrap();
    wait_until("X, stamped before Y, is published too", 30, || has(&s, &Event::Job(x.clone())));
    s.rt.block_on(c_st.stop());
}
