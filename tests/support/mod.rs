#[allow(dead_code)]
pub mod broker;
#[allow(dead_code)]
pub mod browser;
#[allow(dead_code)]
pub mod compaction;
#[allow(dead_code)]
pub mod connect;
#[allow(dead_code)]
pub mod kafka;
#[allow(dead_code)]
pub mod pipeline;
#[allow(dead_code)]
pub mod sinks;

use std::path::{Path, PathBuf};

/// Every scenario file in `tests/scenarios/`, sorted.
#[allow(dead_code)]
pub fn scenario_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/scenarios exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// A broker with the topics of a one-partition catalogue named `prefix`, a
/// codec for them, and a scenario file of `tests/scenarios/` with its pure
/// run.
#[allow(dead_code)]
pub struct ScenarioWorld {
    /// Kept alive: dropping it stops the broker.
    pub broker: broker::Broker,
    pub brokers: String,
    pub catalogue: geoclock::kafka::topics::Catalogue,
    pub rt: tokio::runtime::Runtime,
    pub codec: geoclock::kafka::codec::Codec,
    pub scenario: geoclock::scenario::Scenario,
    pub pure: geoclock::scenario::Output,
}

#[allow(dead_code)]
pub fn scenario_world(prefix: &str, file: &str) -> ScenarioWorld {
    use std::sync::Arc;
    let broker = broker::Broker::start(broker::Storage::Memory);
    let brokers = broker.brokers().to_string();
    let catalogue = geoclock::kafka::topics::Catalogue { prefix: prefix.into(), partitions: 1, replication: 1 };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(geoclock::kafka::admin::ensure_topics(&brokers, &catalogue, std::time::Duration::from_secs(30)))
        .unwrap();
    let registry = Arc::new(geoclock::kafka::registry::FileRegistry::in_memory());
    let codec = geoclock::kafka::codec::Codec::new(registry, &catalogue).unwrap();
    let scenario =
        geoclock::scenario::Scenario::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios").join(file))
            .unwrap();
    let pure = scenario.run().unwrap();
    ScenarioWorld { broker, brokers, catalogue, rt, codec, scenario, pure }
}

/// A broker with the topics of a `partitions`-partition catalogue of its
/// own (`{name}-{nanos}`), its schema registry and codec, a runtime, and a
/// scratch directory for state.
#[allow(dead_code)]
pub struct World {
    /// Kept alive: dropping it stops the broker.
    pub broker: broker::Broker,
    pub catalogue: geoclock::kafka::topics::Catalogue,
    pub registry: std::sync::Arc<geoclock::kafka::registry::FileRegistry>,
    pub codec: geoclock::kafka::codec::Codec,
    pub rt: tokio::runtime::Runtime,
    pub scratch: PathBuf,
}

#[allow(dead_code)]
pub fn world(name: &str, partitions: i32) -> World {
    let broker = broker::Broker::start(broker::Storage::Memory);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let catalogue =
        geoclock::kafka::topics::Catalogue { prefix: format!("{name}-{nanos}"), partitions, replication: 1 };
    let registry = std::sync::Arc::new(geoclock::kafka::registry::FileRegistry::in_memory());
    let codec = geoclock::kafka::codec::Codec::new(registry.clone(), &catalogue).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(geoclock::kafka::admin::ensure_topics(
        broker.brokers(),
        &catalogue,
        std::time::Duration::from_secs(30),
    ))
    .expect("topics");
    let scratch = std::env::temp_dir().join(format!("geoclock-{name}-test-{nanos}"));
    World { broker, catalogue, registry, codec, rt, scratch }
}

impl World {
    /// A report server over this world's topics, its replicas in `dir`.
    #[allow(dead_code)]
    pub fn report_server(
        &self,
        tenants: Vec<geoclock::config::tenants::Tenant>,
        dir: &Path,
        listen: &str,
    ) -> geoclock::report::serve::Server {
        let opts = geoclock::report::serve::Options {
            brokers: self.broker.bootstrap(),
            catalogue: self.catalogue.clone(),
            registry: self.registry.clone(),
            listen: listen.into(),
            state_dir: dir.to_path_buf(),
        };
        geoclock::report::serve::start(opts, tenants, self.rt.handle().clone()).expect("report server starts")
    }
}
