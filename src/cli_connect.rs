//! `geoclock sim …`, `geoclock connect …` and `geoclock sink …`: parsing and wiring only.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};

use geoclock::config::tenants;
use geoclock::connect::{self, Options, Vendor};
use geoclock::kafka::registry::{ConfluentRegistry, FileRegistry, SchemaRegistry};
use geoclock::kafka::topics::Catalogue;
use geoclock::model::Ts;
use geoclock::sim::azuga::{self, AzugaSim};
use geoclock::sim::fleet::{generate, FleetConfig};
use geoclock::sim::servicetrade::{self, ServiceTradeSim};
use geoclock::sim::webhook::Faults;
use geoclock::sim::world::World;

#[derive(Subcommand)]
pub enum SimCmd {
    /// The ServiceTrade API (`/api`), with admin endpoints under `/admin`.
    Servicetrade {
        #[command(flatten)]
        common: SimArgs,
    },
    /// The Azuga API, with admin endpoints under `/admin`.
    Azuga {
        #[command(flatten)]
        common: SimArgs,
        /// Budget per API call, ms (Azuga: one per minute).
        #[arg(long, default_value_t = 60_000)]
        rate_limit_ms: u64,
        /// Do not release fixes as the wall clock passes their time (use POST /admin/advance).
        #[arg(long)]
        manual_time: bool,
    },
    /// A schema registry speaking the Confluent REST API (ids assigned 1, 2, 3…), with chaos under /admin.
    Registry {
        #[arg(long, default_value = "127.0.0.1:8083")]
        listen: String,
    },
    /// A mail receiver: SMTP on --listen, the mailbox as JSON on --http (/messages, /stats).
    Smtp {
        #[arg(long, default_value = "127.0.0.1:2525")]
        listen: String,
        #[arg(long, default_value = "127.0.0.1:8025")]
        http: String,
    },
}

#[derive(Args)]
pub struct SimArgs {
    /// Where to listen [default: 127.0.0.1:8081 for servicetrade, 127.0.0.1:8082 for azuga]
    #[arg(long)]
    listen: Option<String>,
    /// A scenario YAML file to hold (entities, clock events, pings).
    #[arg(long, conflicts_with = "generate")]
    seed_file: Option<PathBuf>,
    /// Generate a working day for N technicians instead (today, from 07:00 UTC).
    #[arg(long)]
    generate: Option<usize>,
    /// Seed of the generated day and of the webhook faults.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 0.0)]
    drop_rate: f64,
    #[arg(long, default_value_t = 0.0)]
    duplicate_rate: f64,
    #[arg(long, default_value_t = 0.0)]
    reorder_rate: f64,
}

impl SimArgs {
    fn world(&self) -> anyhow::Result<World> {
        if let Some(f) = &self.seed_file {
            return Ok(World::load(f)?);
        }
        let today = chrono::Utc::now().timestamp().div_euclid(86_400) * 86_400;
        let n = self.generate.unwrap_or(10);
        Ok(generate(&FleetConfig {
            seed: self.seed,
            technicians: n,
            day_start: Ts::from_secs(today + 7 * 3600),
            ..FleetConfig::default()
        }))
    }

    fn faults(&self) -> Faults {
        Faults {
            seed: self.seed,
            drop_rate: self.drop_rate,
            duplicate_rate: self.duplicate_rate,
            reorder_rate: self.reorder_rate,
            ..Faults::default()
        }
    }
}

/// What every process on the pipeline needs: the tenants, the broker, the
/// topics and the schema registry.
#[derive(Args)]
pub struct PipelineArgs {
    /// The tenants file (TOML; see src/config/tenants.rs).
    #[arg(long, env = "GEOCLOCK_TENANTS")]
    tenants: PathBuf,
    #[arg(long, env = "GEOCLOCK_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long, env = "GEOCLOCK_TOPIC_PREFIX", default_value = "geoclock")]
    prefix: String,
    /// Schema registry: a Confluent REST URL, or a file path (default: built in, ids derived from the schemas).
    #[arg(long, env = "GEOCLOCK_SCHEMA_REGISTRY")]
    schema_registry: Option<String>,
}

impl PipelineArgs {
    pub fn tenants(&self) -> anyhow::Result<Vec<tenants::Tenant>> {
        Ok(tenants::load(&self.tenants)?)
    }

    /// The topics, with `partitions` when the process needs to know them.
    pub fn catalogue(&self, partitions: Option<i32>) -> Catalogue {
        let c = Catalogue { prefix: self.prefix.clone(), ..Catalogue::default() };
        Catalogue { partitions: partitions.unwrap_or(c.partitions), ..c }
    }

    pub fn registry(&self) -> anyhow::Result<Arc<dyn SchemaRegistry>> {
        registry(self.schema_registry.clone())
    }

    pub fn brokers(&self) -> &str {
        &self.brokers
    }
}

#[derive(Subcommand)]
pub enum ConnectCmd {
    /// ServiceTrade → Kafka: initial sync, webhook inbox, updatedAfter reconciliation.
    Servicetrade {
        #[command(flatten)]
        common: ConnectArgs,
    },
    /// Azuga → Kafka: GPS_MESSAGE webhooks, live-location polling, drivers/vehicles/pairings.
    Azuga {
        #[command(flatten)]
        common: ConnectArgs,
    },
}

#[derive(Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// The webhook inbox (POST /webhook/TENANT, with the secret in a header).
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: String,
    /// Serve Prometheus metrics (and /healthz) at http://ADDR/metrics, a listener of its own that can stay private.
    #[arg(long, env = "GEOCLOCK_METRICS")]
    metrics: Option<std::net::SocketAddr>,
    /// Base URL the vendors reach the inbox at (default: http://LISTEN).
    #[arg(long)]
    public_url: Option<String>,
    /// Do not register webhooks with the vendor (polling/reconciliation only).
    #[arg(long)]
    no_webhooks: bool,
    /// Where the ledgers (published fingerprints, cursors) live.
    #[arg(long, default_value = "geoclock-state")]
    state_dir: PathBuf,
    /// The longest Retry-After a vendor can make the connector wait, seconds.
    #[arg(long, default_value_t = 600)]
    retry_after_cap_s: u64,
}

/// The schema registry named on the command line: a Confluent REST URL, a
/// file, or the built-in one (ids derived from the schemas).
pub fn registry(arg: Option<String>) -> anyhow::Result<Arc<dyn SchemaRegistry>> {
    Ok(match arg {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
            Arc::new(ConfluentRegistry::new(&url)?)
        }
        Some(path) => Arc::new(FileRegistry::open(path)?),
        None => Arc::new(FileRegistry::in_memory()),
    })
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

pub fn sim(cmd: SimCmd) -> anyhow::Result<()> {
    let rt = runtime()?;
    rt.block_on(async {
        match cmd {
            SimCmd::Registry { listen } => {
                let (_sim, running) = geoclock::sim::registry::RegistrySim::start(&listen).await?;
                println!("schema registry on {}", running.url());
                shutdown_signal().await;
                running.stop().await;
            }
            SimCmd::Smtp { listen, http } => {
                let sim = geoclock::sim::smtp::SmtpSim::start(&listen, &http).await?;
                println!("smtp receiver on {} (mailbox at {}/messages)", sim.smtp_addr, sim.http.url());
                shutdown_signal().await;
                sim.stop().await;
            }
            SimCmd::Servicetrade { common } => {
                let config = servicetrade::Config { faults: common.faults(), ..servicetrade::Config::default() };
                let (_sim, running) = ServiceTradeSim::start(
                    config,
                    &common.world()?,
                    common.listen.as_deref().unwrap_or("127.0.0.1:8081"),
                )
                .await?;
                println!("servicetrade simulator on {}", running.url());
                shutdown_signal().await;
                running.stop().await;
            }
            SimCmd::Azuga { common, rate_limit_ms, manual_time } => {
                let config = azuga::Config { rate_limit_ms, faults: common.faults(), ..azuga::Config::default() };
                let (sim, running) =
                    AzugaSim::start(config, &common.world()?, common.listen.as_deref().unwrap_or("127.0.0.1:8082"))
                        .await?;
                println!("azuga simulator on {}", running.url());
                if !manual_time {
                    let sim = sim.clone();
                    tokio::spawn(async move {
                        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
                        loop {
                            tick.tick().await;
                            sim.advance(Ts(chrono::Utc::now().timestamp_millis()));
                        }
                    });
                }
                shutdown_signal().await;
                running.stop().await;
            }
        }
        Ok(())
    })
}

/// Waits for SIGINT or SIGTERM (a container's stop).
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

pub fn connect(cmd: ConnectCmd) -> anyhow::Result<()> {
    let (vendor, a) = match cmd {
        ConnectCmd::Servicetrade { common } => (Vendor::ServiceTrade, common),
        ConnectCmd::Azuga { common } => (Vendor::Azuga, common),
    };
    let tenants = a.pipeline.tenants()?;
    let catalogue = a.pipeline.catalogue(None);
    let registry = a.pipeline.registry()?;
    let metrics_addr = a.metrics;
    let opts = Options {
        brokers: a.pipeline.brokers().to_string(),
        catalogue,
        registry,
        listen: a.listen,
        public_url: a.public_url,
        register_webhooks: !a.no_webhooks,
        state_dir: a.state_dir,
        policy: geoclock::vendor::retry::Policy {
            retry_after_cap: std::time::Duration::from_secs(a.retry_after_cap_s),
            ..Default::default()
        },
    };
    let rt = runtime()?;
    rt.block_on(async {
        let c = connect::start(vendor, opts, &tenants).await.context("starting the connector")?;
        println!("{} connector on {} (webhooks at /webhook/TENANT)", vendor.name(), c.url());
        if let Some(addr) = metrics_addr {
            let m = c.metrics.clone();
            let bound = geoclock::telemetry::serve_metrics(addr, move || m.render(), geoclock::telemetry::healthy)
                .with_context(|| format!("metrics listener on {addr}"))?;
            println!("metrics at http://{bound}/metrics");
        }
        let died = tokio::select! {
            _ = shutdown_signal() => None,
            name = c.died() => Some(name),
        };
        c.stop().await;
        match died {
            Some(name) => anyhow::bail!("connector task {name} died"),
            None => Ok(()),
        }
    })
}

#[derive(Subcommand)]
pub enum SinkCmd {
    /// Clock changes → ServiceTrade clock events (as the tenant's admin user).
    Clock {
        #[command(flatten)]
        common: SinkArgs,
    },
    /// Fence commands → Azuga geomarks (bulk, within Azuga's rate limit).
    Geofence {
        #[command(flatten)]
        common: SinkArgs,
    },
    /// Service Links → Azuga TrackMe link + email over SMTP.
    Email {
        #[command(flatten)]
        common: SinkArgs,
        /// SMTP relay for tenants without email.smtp_url: smtp://host:port (add ?tls=required for STARTTLS), smtps://host:port.
        #[arg(long, env = "GEOCLOCK_SMTP")]
        smtp: Option<String>,
        /// The report server (http://HOST:PORT) the daily Activity Report email is fetched from.
        #[arg(long, env = "GEOCLOCK_REPORT_URL")]
        report_url: Option<String>,
    },
}

#[derive(Args)]
pub struct SinkArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Consumer group (default: PREFIX-sink-KIND).
    #[arg(long, env = "GEOCLOCK_SINK_GROUP")]
    group: Option<String>,
    /// Where the sink's ledger (executed command ids) lives.
    #[arg(long, env = "GEOCLOCK_STATE_DIR", default_value = "geoclock-state")]
    state_dir: PathBuf,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, env = "GEOCLOCK_METRICS")]
    metrics: Option<std::net::SocketAddr>,
    /// Commands per batch at most.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Hours past its time a clock change (or geofence delete) is still retried through an outage.
    #[arg(long, default_value_t = 24)]
    max_effect_age_h: u64,
    /// The longest Retry-After honoured, seconds.
    #[arg(long, default_value_t = 600)]
    retry_after_cap_s: u64,
    /// Vendor call timeout, seconds.
    #[arg(long, default_value_t = 30)]
    http_timeout_s: u64,
    /// Do not fsync ledger steps (survives a process crash, not a machine crash).
    #[arg(long)]
    no_fsync: bool,
}

pub fn sink(cmd: SinkCmd) -> anyhow::Result<()> {
    use geoclock::sink::runner::{Sink, SinkConfig};
    use geoclock::sink::SinkKind;
    let (kind, a, smtp, report_url) = match cmd {
        SinkCmd::Clock { common } => (SinkKind::Clock, common, None, None),
        SinkCmd::Geofence { common } => (SinkKind::Geofence, common, None, None),
        SinkCmd::Email { common, smtp, report_url } => (SinkKind::Email, common, smtp, report_url),
    };
    let p = &a.pipeline;
    let mut config = SinkConfig::new(kind, p.brokers(), p.catalogue(None), a.state_dir, p.tenants()?, p.registry()?);
    config.group = a.group;
    config.smtp = smtp;
    config.report_url = report_url;
    config.metrics_addr = a.metrics;
    config.batch = a.batch.max(1);
    config.sync = !a.no_fsync;
    config.max_effect_age = std::time::Duration::from_secs(a.max_effect_age_h * 3600);
    config.retry_after_cap = std::time::Duration::from_secs(a.retry_after_cap_s);
    config.http_timeout = std::time::Duration::from_secs(a.http_timeout_s.max(1));
    config.stall_after = config.http_timeout * 4;
    let rt = runtime()?;
    let sink = Sink::start(config)?;
    if let Some(addr) = sink.metrics_addr {
        println!("{} sink running (metrics at http://{addr}/metrics, health at /healthz)", kind.name());
    } else {
        println!("{} sink running", kind.name());
    }
    // Until a signal, or until a worker dies (then exit non-zero, so the
    // supervisor restarts the process).
    let died = rt.block_on(async {
        let mut check = tokio::time::interval(std::time::Duration::from_millis(500));
        let signal = shutdown_signal();
        tokio::pin!(signal);
        loop {
            tokio::select! {
                _ = &mut signal => return None,
                _ = check.tick() => {
                    if let Some(name) = sink.finished() {
                        return Some(name);
                    }
                }
            }
        }
    });
    let result = sink.stop();
    match (died, result) {
        (_, Err(e)) => Err(e.into()),
        (Some(name), Ok(())) => anyhow::bail!("sink thread {name} ended unexpectedly"),
        (None, Ok(())) => Ok(()),
    }
}
