//! Connector test plumbing: tailing every topic, the test tenant, and
//! starting both connectors.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use geoclock::config::tenants::{parse, Tenant};
use geoclock::connect::{start, Connector, Options, Vendor};
use geoclock::engine::Event;
use geoclock::kafka::codec::Codec;
use geoclock::kafka::registry::FileRegistry;
use geoclock::kafka::topics::{Catalogue, Topic};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

pub const PARTITIONS: i32 = 3;

pub type Seen = Arc<Mutex<Vec<(Topic, Vec<u8>, Option<Vec<u8>>)>>>;

/// Reads every catalogue topic from the beginning into memory, forever.
pub fn tail(brokers: &str, catalogue: &Catalogue) -> Seen {
    let seen: Seen = Arc::default();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "e2e-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    let mut by_name = HashMap::new();
    for t in [
        Topic::Users,
        Topic::Locations,
        Topic::Jobs,
        Topic::Appointments,
        Topic::ClockEvents,
        Topic::Offices,
        Topic::Contacts,
        Topic::Drivers,
        Topic::Vehicles,
        Topic::Pairings,
        Topic::Pings,
        Topic::DeadLetters,
    ] {
        let name = catalogue.name(t);
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(&name, p, Offset::Beginning).expect("offset");
        }
        by_name.insert(name, t);
    }
    consumer.assign(&tpl).expect("assign");
    let out = seen.clone();
    std::thread::spawn(move || loop {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let topic = by_name[m.topic()];
            out.lock().unwrap().push((topic, m.key().unwrap_or_default().to_vec(), m.payload().map(<[u8]>::to_vec)));
        }
    });
    seen
}

pub fn tenants(st_url: &str, az_url: &str) -> Vec<Tenant> {
    tenants_with(st_url, az_url, "", "")
}

/// The test tenant, with extra lines for its `[tenants.servicetrade]` and
/// `[tenants.azuga]` tables.
pub fn tenants_with(st_url: &str, az_url: &str, st_extra: &str, az_extra: &str) -> Vec<Tenant> {
    let text = format!(
        r#"
[[tenants]]
name = "acme"
[tenants.servicetrade]
base_url = "{st_url}"
username = "geoclock-admin"
password = {{ value = "secret" }}
webhook_secret = {{ value = "st-hook-secret" }}
webhook_auth = "hmac"
reconcile_interval_ms = 700
full_sweep_every = 3
{st_extra}
[tenants.azuga]
base_url = "{az_url}"
api_key = {{ value = "azuga-key" }}
webhook_secret = {{ value = "az-hook-secret" }}
webhook_auth = "basic"
rate_limit_ms = 120
poll_interval_ms = 400
entity_sync_interval_ms = 600
history_interval_ms = 500
{az_extra}
"#
    );
    parse(&text, "e2e.toml").expect("tenants")
}

pub fn options(brokers: &str, catalogue: &Catalogue, dir: &Path, listen: &str) -> Options {
    Options {
        brokers: brokers.to_string(),
        catalogue: catalogue.clone(),
        registry: Arc::new(FileRegistry::in_memory()),
        listen: listen.into(),
        public_url: None,
        register_webhooks: true,
        policy: Default::default(),
        state_dir: dir.to_path_buf(),
    }
}

/// Starts both connectors; `ports` to come back on the same addresses after a restart.
pub async fn both(
    brokers: &str,
    catalogue: &Catalogue,
    dir: &Path,
    t: &[Tenant],
    ports: (&str, &str),
) -> (Connector, Connector) {
    let a = start(Vendor::ServiceTrade, options(brokers, catalogue, dir, ports.0), t)
        .await
        .expect("servicetrade connector");
    let b = start(Vendor::Azuga, options(brokers, catalogue, dir, ports.1), t).await.expect("azuga connector");
    (a, b)
}

/// What the topics say: per topic and key, every value in order.
pub fn by_key(codec: &Codec, seen: &Seen) -> BTreeMap<(Topic, Vec<u8>), Vec<Option<Event>>> {
    let mut out: BTreeMap<(Topic, Vec<u8>), Vec<Option<Event>>> = BTreeMap::new();
    for (topic, key, value) in seen.lock().unwrap().iter() {
        if *topic == Topic::DeadLetters {
            continue;
        }
        let e = codec.decode_event(*topic, key, value.as_deref()).expect("every record decodes");
        let e = match e.event {
            Event::Delete(_) => None,
            other => Some(other),
        };
        out.entry((*topic, key.clone())).or_default().push(e);
    }
    out
}
