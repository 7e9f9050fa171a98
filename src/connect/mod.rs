//! Connectors: ServiceTrade and Azuga onto Kafka.
//!
//! One process runs one vendor's connector for every tenant of the tenants
//! file ([`crate::config::tenants`]). Per tenant, one task ([`servicetrade::Task`],
//! [`azuga::Task`]) owns that tenant's API client and ledger and does all of
//! its publishing, in order; the shared HTTP server ([`inbox`]) only
//! authenticates, parses and queues webhook bodies for it. The connector's
//! metrics ([`Connector::metrics`]) are served on a listener of their own
//! (the CLI's `--metrics`), never on the inbox's public port.
//!
//! Records are the engine's events encoded with the shared Avro codec
//! (Confluent framing), keyed `tenant/id`, on the catalogue's topics
//! ([`publish`]). Exactly-once per key and content comes from the ledger
//! ([`ledger`]): publish only what differs from the last acknowledged
//! content, record after the acknowledgement.
//!
//! Secrets are [`crate::config::secret::Secret`]s: they show as `***` in logs and errors.

pub mod azuga;
pub mod inbox;
pub mod ledger;
pub mod metrics;
pub mod out;
pub mod publish;
pub mod servicetrade;
pub mod sweep;
pub mod validate;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::tenants::Tenant;
use crate::config::webhook::Registration;
use crate::http::server::{serve, Running as Server};
use crate::kafka::codec::{Codec, CodecError};
use crate::kafka::registry::SchemaRegistry;
use crate::kafka::topics::{Catalogue, Topic};
use crate::model::Ping;
use crate::vendor::call::{Stop, VendorError};
use crate::vendor::retry::Policy;
use inbox::{Inbox, TenantInbox};
use ledger::{Ledger, LedgerError};
use metrics::Metrics;
use out::Out;
use publish::{PublishError, Publisher};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    ServiceTrade,
    Azuga,
}

impl Vendor {
    pub fn name(self) -> &'static str {
        match self {
            Vendor::ServiceTrade => "servicetrade",
            Vendor::Azuga => "azuga",
        }
    }
}

/// A parsed webhook body, queued for its tenant's task.
#[derive(Debug, Clone)]
pub enum Work {
    ServiceTrade(crate::vendor::servicetrade::webhook::Message),
    Azuga(Vec<(Ping, Value)>),
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Vendor(#[from] VendorError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("{0}")]
    Setup(String),
}

pub struct Options {
    pub brokers: String,
    pub catalogue: Catalogue,
    pub registry: Arc<dyn SchemaRegistry>,
    /// The inbox listens here (`127.0.0.1:0`: any port).
    pub listen: String,
    /// Base URL the vendors reach the inbox at; default `http://{listen}`.
    /// `None` with `register_webhooks` false: no webhook is registered.
    pub public_url: Option<String>,
    pub register_webhooks: bool,
    /// Ledgers live here, one file per (vendor, tenant).
    pub state_dir: PathBuf,
    /// How the vendor clients retry reads (the longest `Retry-After`
    /// honoured included).
    pub policy: Policy,
}

/// Runs a vendor call on tokio's blocking pool (vendor clients block: they
/// wait out rate budgets and backoffs).
pub(crate) async fn off_runtime<C: Send + Sync + 'static, T: Send + 'static>(
    client: &Arc<C>,
    f: impl FnOnce(&C) -> Result<T, VendorError> + Send + 'static,
) -> Result<T, ConnectError> {
    let client = client.clone();
    tokio::task::spawn_blocking(move || f(&client))
        .await
        .map_err(|_| ConnectError::Setup("vendor call panicked".into()))?
        .map_err(ConnectError::Vendor)
}

/// Trips `stop` (interrupting a vendor client's waits) once `shutdown`
/// turns true.
pub(crate) fn stop_on(mut shutdown: watch::Receiver<bool>, stop: Stop) {
    tokio::spawn(async move {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        stop.stop();
    });
}

/// A running connector.
pub struct Connector {
    pub addr: SocketAddr,
    pub metrics: Metrics,
    server: Server,
    shutdown: watch::Sender<bool>,
    tasks: Vec<(String, JoinHandle<()>)>,
    publisher: Arc<Publisher>,
}

/// Starts `vendor`'s connector for every tenant that configures it.
pub async fn start(vendor: Vendor, opts: Options, tenants: &[Tenant]) -> Result<Connector, ConnectError> {
    let (registry, catalogue) = (opts.registry.clone(), opts.catalogue.clone());
    let codec = tokio::task::spawn_blocking(move || Codec::connect(registry, &catalogue, Duration::from_secs(120)))
        .await
        .map_err(|_| ConnectError::Setup("codec start panicked".into()))??;
    let codec = Arc::new(codec);
    let component = format!("geoclock-connect-{}", vendor.name());
    let publisher = Arc::new(Publisher::new(&opts.brokers, codec, opts.catalogue.clone(), &component)?);
    let metrics = Metrics::new();
    let (shutdown, shutdown_rx) = watch::channel(false);

    // Bind first: the hook URL needs the real port.
    let listener = std::net::TcpListener::bind(&opts.listen)
        .map_err(|e| ConnectError::Setup(format!("cannot listen on {}: {e}", opts.listen)))?;
    let addr = listener.local_addr().map_err(|e| ConnectError::Setup(e.to_string()))?;
    drop(listener);
    let public = opts.public_url.clone().unwrap_or_else(|| format!("http://{addr}"));

    let mut inboxes = HashMap::new();
    let mut tasks = Vec::new();
    let total = inbox::total_budget();
    let topics: Vec<String> = match vendor {
        Vendor::ServiceTrade => [
            Topic::Users,
            Topic::Locations,
            Topic::Jobs,
            Topic::Appointments,
            Topic::ClockEvents,
            Topic::Offices,
            Topic::Contacts,
        ]
        .iter()
        .map(|t| opts.catalogue.name(*t))
        .collect(),
        Vendor::Azuga => [Topic::Drivers, Topic::Vehicles, Topic::Pairings, Topic::Pings, Topic::Ticks]
            .iter()
            .map(|t| opts.catalogue.name(*t))
            .collect(),
    };
    for t in tenants {
        metrics.tenant(vendor.name(), &t.name, &topics);
    }
    // Whether each tenant's fleet should be driving now, kept current.
    {
        let (metrics, zones) =
            (metrics.clone(), tenants.iter().map(|t| (t.name.clone(), t.timezone.clone())).collect::<Vec<_>>());
        let mut stop = shutdown_rx.clone();
        tokio::spawn(async move {
            loop {
                let now = chrono::Utc::now().timestamp_millis();
                for (name, zone) in &zones {
                    metrics.working_hours(name, zone.as_deref(), now);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                    _ = stop.changed() => return,
                }
            }
        });
    }
    let keep_pings_from = chrono::Utc::now().timestamp_millis() - 8 * 86_400_000;
    for t in tenants {
        let out = Out {
            publisher: publisher.clone(),
            metrics: metrics.clone(),
            connector: vendor.name(),
            tenant: t.name.clone(),
            watermark: Default::default(),
        };
        let ledger_path = opts.state_dir.join(format!("{}-{}.ledger.jsonl", vendor.name(), t.name));
        let (tx, rx) = inbox::queue(&total);
        match (vendor, &t.servicetrade, &t.azuga) {
            (Vendor::ServiceTrade, Some(cfg), _) => {
                let ledger = Ledger::open(&ledger_path, keep_pings_from)?;
                let policy = cfg.webhook_policy(&t.name);
                let hook = opts.register_webhooks.then(|| Registration::new(&public, &policy));
                let horizon_ms = t.settings.mirror_horizon_ms();
                let task = servicetrade::Task::new(cfg.clone(), ledger, out.clone(), hook, opts.policy, horizon_ms);
                tasks.push((t.name.clone(), tokio::spawn(task.run(rx, shutdown_rx.clone()))));
                inboxes.insert(t.name.clone(), TenantInbox::new(policy, tx, out));
            }
            (Vendor::Azuga, _, Some(cfg)) => {
                // A ping older than `max_ping_age_s` is refused anyway: it
                // is remembered that long (and a day for clocks that differ),
                // so no accepted ping is published twice.
                let span = (cfg.max_ping_age_s + 86_400) * 1000;
                let ledger = Ledger::open_with_span(&ledger_path, span)?;
                let policy = cfg.webhook_policy(&t.name);
                let hook = opts.register_webhooks.then(|| Registration::new(&public, &policy));
                let task = azuga::Task::new(cfg.clone(), ledger, out.clone(), hook, opts.policy);
                tasks.push((t.name.clone(), tokio::spawn(task.run(rx, shutdown_rx.clone()))));
                inboxes.insert(t.name.clone(), TenantInbox::new(policy, tx, out));
            }
            _ => {}
        }
    }
    if inboxes.is_empty() {
        return Err(ConnectError::Setup(format!("no tenant configures {}", vendor.name())));
    }
    let inbox = Arc::new(Inbox::new(vendor, inboxes, metrics.clone()));
    let server =
        serve(inbox::router(inbox), &addr.to_string()).await.map_err(|e| ConnectError::Setup(e.to_string()))?;
    tracing::info!(connector = vendor.name(), addr = %server.addr, tenants = tenants.len(), "connector listening");
    Ok(Connector { addr: server.addr, metrics, server, shutdown, tasks, publisher })
}

impl Connector {
    /// `http://127.0.0.1:PORT` of the inbox.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Resolves when a tenant task has ended before a stop (it panicked):
    /// the tenant's name. Never resolves otherwise.
    pub async fn died(&self) -> String {
        loop {
            if let Some((name, _)) = self.tasks.iter().find(|(_, t)| t.is_finished()) {
                return name.clone();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Stops the tasks (each finishes the item in hand), the server, and
    /// flushes the producer.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for (_, t) in self.tasks {
            let _ = t.await;
        }
        self.server.stop().await;
        if let Err(e) = self.publisher.flush(Duration::from_secs(10)).await {
            tracing::warn!(error = %e, "flush on stop failed");
        }
    }
}
