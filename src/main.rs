//! The `geoclock` command line. Parsing and dispatch only.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use std::sync::Arc;
use std::time::Duration;

mod cli_audit;
mod cli_connect;
mod cli_demo;
mod cli_dlq;
mod cli_report;

use cli_connect::shutdown_signal;
use geoclock::kafka::admin::{ensure_topics, ensure_topics_with};
use geoclock::kafka::registry::FileRegistry;
use geoclock::kafka::topics::Catalogue;
use geoclock::processor::{Config, Processor, Tenants};
use geoclock::scenario::kafka::ViaKafka;
use geoclock::scenario::Scenario;

/// mimalloc rather than glibc's malloc: the processor's tasks allocate and
/// free on many threads, where glibc's per-thread arenas keep freed memory
/// (RSS that grows with every batch) and its `malloc`/`free` were a fifth
/// of the CPU per ping at fleet scale (README, "Processor at fleet scale").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "geoclock", version, about = "Fleet GPS in, field-service events out")]
struct Cli {
    #[command(subcommand)]
    command: Top,
    /// Extra librdkafka properties for every Kafka client (`key=value` lines: security.protocol, sasl.*, ssl.*); GEOCLOCK_KAFKA_<PROPERTY> env vars add to and override them.
    #[arg(long, global = true, env = "GEOCLOCK_KAFKA_CONFIG")]
    kafka_config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Top {
    /// Scenario files: entities and events run through the engine.
    Scenario {
        #[command(subcommand)]
        command: ScenarioCmd,
    },
    /// Run the stream processor: join the consumer group and process until SIGINT/SIGTERM.
    Process {
        #[arg(long, env = "GEOCLOCK_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long, env = "GEOCLOCK_TOPIC_PREFIX", default_value = "geoclock")]
        prefix: String,
        /// Partitions for topics it has to create.
        #[arg(long, env = "GEOCLOCK_PARTITIONS", default_value_t = 6)]
        partitions: i32,
        #[arg(long, env = "GEOCLOCK_GROUP", default_value = "geoclock-processor")]
        group: String,
        /// RocksDB directory (one per process).
        #[arg(long, env = "GEOCLOCK_STATE_DIR", default_value = "./geoclock-state")]
        state_dir: PathBuf,
        /// Tenants file: the deployment's TOML file (its per-tenant `settings`), or YAML with `tenants: {name: settings}`. Only its tenants are served (records of others are dead-lettered); without it, every tenant is.
        #[arg(long, env = "GEOCLOCK_TENANTS")]
        tenants: Option<PathBuf>,
        /// Serve Prometheus metrics on this address (`127.0.0.1:9464`).
        #[arg(long, env = "GEOCLOCK_METRICS")]
        metrics: Option<std::net::SocketAddr>,
        /// Records per batch (commit at most this many at once).
        #[arg(long, default_value_t = 100_000)]
        batch: usize,
        /// Commit at least this often while input keeps coming (caught-up input commits at once).
        #[arg(long, default_value_t = 1000)]
        commit_ms: u64,
        /// Consumer-group session timeout: how soon a dead member's partitions move.
        #[arg(long, default_value_t = 10_000)]
        session_timeout_ms: u64,
        /// What each task may hold in memory waiting to be processed (MiB); above it the task pauses fetching.
        #[arg(long, env = "GEOCLOCK_MAX_BUFFER_MB", default_value_t = 32)]
        max_buffer_mb: usize,
        /// Schema registry: a Confluent REST URL, or a file path (default: built in, ids derived from the schemas).
        #[arg(long, env = "GEOCLOCK_SCHEMA_REGISTRY")]
        schema_registry: Option<String>,
    },
    /// Benchmarks against a running broker.
    Bench {
        #[command(subcommand)]
        command: BenchCmd,
    },
    /// Kafka topics of the catalogue.
    Topics {
        #[command(subcommand)]
        command: TopicsCmd,
    },
    /// Simulated vendor APIs on loopback (see src/sim/).
    Sim {
        #[command(subcommand)]
        command: cli_connect::SimCmd,
    },
    /// Vendor connectors: APIs and webhooks onto Kafka (see src/connect/).
    Connect {
        #[command(subcommand)]
        command: cli_connect::ConnectCmd,
    },
    /// Everything in one process on a simulated day: embedded broker, simulators, connectors, processor, sinks, report.
    Demo(cli_demo::DemoArgs),
    /// Many simulated days through the whole pipeline with short retention: every store's size, once a day; exit 1 if one keeps growing.
    Soak(cli_demo::SoakArgs),
    /// The Activity Report server (see src/report/).
    Report {
        #[command(subcommand)]
        command: cli_report::ReportCmd,
    },
    /// Sink workers: commands → ServiceTrade, Azuga and SMTP, each exactly once (see src/sink/).
    Sink {
        #[command(subcommand)]
        command: cli_connect::SinkCmd,
    },
    /// Exit 0 if URL answers 2xx within the timeout (for container health checks), 1 otherwise.
    Healthcheck {
        /// e.g. http://127.0.0.1:9471/healthz
        url: String,
        #[arg(long, default_value_t = 3)]
        timeout_s: u64,
    },
    /// The dead-letter topic: list and re-drive failed commands.
    Dlq {
        #[command(subcommand)]
        command: cli_dlq::DlqCmd,
    },
    /// Re-derive every decision from the topics and compare it with the commands and the sinks' results (exit 0 clean, 1 discrepancies, 2 error; see src/audit/).
    Audit(cli_audit::AuditArgs),
    /// Why each decision about one appointment was taken, or what stopped it (from topics or a scenario file).
    Explain(cli_audit::ExplainArgs),
}

/// The bench day's broker and shape, shared by every bench.
#[derive(clap::Args)]
pub struct BenchDay {
    #[arg(long, env = "GEOCLOCK_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,
    /// Technicians (vehicles) in the generated day; each pings every
    /// `--ping-every-s` for 12 h.
    #[arg(long, alias = "vehicles", default_value_t = 2000)]
    techs: usize,
    /// Appointments per technician (each with its own site and fence).
    #[arg(long, default_value_t = 5)]
    appointments_per_tech: usize,
    /// Seconds between a vehicle's pings (the default, 30, makes a
    /// 2.88 M-ping day for 2 000 vehicles: drains of a second or more).
    #[arg(long, default_value_t = 30)]
    ping_every_s: i64,
}

impl BenchDay {
    pub fn day(&self) -> anyhow::Result<geoclock::scenario::generate::Day> {
        anyhow::ensure!((1..=43_200).contains(&self.ping_every_s), "--ping-every-s must be 1 to 43200");
        Ok(geoclock::scenario::generate::Day {
            seed: 1,
            techs: self.techs,
            appointments_per_tech: self.appointments_per_tech,
            ping_every_s: self.ping_every_s,
        })
    }
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Pings/s through the processor beside the raw consume rate, and ping → command latency.
    Processor {
        #[command(flatten)]
        day: BenchDay,
        /// Pings per second offered in the latency run (0: no latency run).
        #[arg(long, default_value_t = 5000)]
        latency_rate: u64,
        /// Print every task's records processed every 100 ms of the
        /// throughput run (to stderr), to see where it stalls.
        #[arg(long)]
        timeline: bool,
        /// Pings of the backlog run: a `geoclock process` child with stage one held while they are produced (0: no backlog run).
        #[arg(long, default_value_t = 0)]
        backlog_pings: usize,
        /// Only the backlog run (and the latency run unless --latency-rate 0).
        #[arg(long)]
        only_backlog: bool,
    },
    /// `geoclock audit`'s pings/s and CPU per ping on the bench day, read from the broker, beside the raw consume rate.
    Audit(cli_audit::BenchAuditArgs),
}

#[derive(Subcommand)]
enum TopicsCmd {
    /// Create the missing topics; refuse to go on when co-partitioned topics disagree on partitions.
    Create {
        #[arg(long, env = "GEOCLOCK_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long, env = "GEOCLOCK_TOPIC_PREFIX", default_value = "geoclock")]
        prefix: String,
        #[arg(long, env = "GEOCLOCK_PARTITIONS", default_value_t = 6)]
        partitions: i32,
        #[arg(long, env = "GEOCLOCK_REPLICATION", default_value_t = 1)]
        replication: i32,
        /// Seconds to wait for the broker.
        #[arg(long, default_value_t = 30)]
        timeout_s: u64,
        /// Days the audit can look back: pings, clock events, ticks, commands and results are kept this long, and every entity version (existing topics are brought to it).
        #[arg(long, env = "GEOCLOCK_AUDIT_DAYS", default_value_t = geoclock::kafka::topics::Retention::DEFAULT_AUDIT_DAYS)]
        audit_days: u32,
        /// The tenants file, to check audit_days against their longest retention_days (default 30).
        #[arg(long, env = "GEOCLOCK_TENANTS")]
        tenants: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ScenarioCmd {
    /// Run FILE through the engine and print {"commands": [...], "report": [...]}.
    Run {
        file: PathBuf,
        /// One line of JSON instead of pretty-printed.
        #[arg(long)]
        compact: bool,
        /// `engine` (in memory) or `kafka` (real topics and the real processor).
        #[arg(long, value_enum, default_value_t = Via::Engine)]
        via: Via,
        #[arg(long, env = "GEOCLOCK_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Partitions of the run's fresh topics (`--via kafka`).
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        /// Seconds the whole `--via kafka` run may take.
        #[arg(long, default_value_t = 120)]
        timeout_s: u64,
        /// The run's topic prefix (`--via kafka`; default: a fresh one). The topics stay: `geoclock audit --prefix` reads them.
        #[arg(long)]
        prefix: Option<String>,
        /// Print only the report rows of this ServiceTrade office (the commands stay whole).
        #[arg(long)]
        office: Option<String>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Via {
    Engine,
    Kafka,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // GEOCLOCK_LOG is an EnvFilter (`info`, `geoclock=debug,librdkafka=warn`);
    // the demo's output is its progress lines, so it logs warnings only.
    // GEOCLOCK_LOG_FORMAT=json: one JSON object per line.
    let default = match cli.command {
        Top::Demo(_) | Top::Soak(_) => "warn",
        Top::Audit(_) | Top::Explain(_) => "warn,geoclock=info",
        _ => "info",
    };
    // A usage or connection error of the audit exits 2 (1 is a discrepancy;
    // for the soak, a store that grew).
    let failure = if matches!(cli.command, Top::Audit(_) | Top::Explain(_) | Top::Soak(_)) { 2 } else { 1 };
    if let Err(e) = init_logging(default) {
        eprintln!("geoclock: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = geoclock::kafka::client::init_properties(cli.kafka_config.as_deref()) {
        eprintln!("geoclock: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Top::Audit(args) => cli_audit::audit(args),
        Top::Soak(args) => cli_demo::soak(args),
        command => run(command).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("geoclock: {e:#}");
            ExitCode::from(failure)
        }
    }
}

/// Logs to stderr: text (colours on a terminal) or JSON lines, filtered by
/// `GEOCLOCK_LOG` (an invalid filter is an error, not silently replaced).
fn init_logging(default: &str) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let spec = std::env::var("GEOCLOCK_LOG").ok().filter(|v| !v.trim().is_empty());
    let filter = match &spec {
        Some(v) => tracing_subscriber::EnvFilter::try_new(v)
            .map_err(|e| anyhow::anyhow!("GEOCLOCK_LOG={v:?} is not a valid filter: {e}"))?,
        None => tracing_subscriber::EnvFilter::new(default),
    };
    let format = std::env::var("GEOCLOCK_LOG_FORMAT").unwrap_or_default();
    match format.as_str() {
        "" | "text" => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .init(),
        "json" => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
        other => anyhow::bail!("GEOCLOCK_LOG_FORMAT={other:?}: use text or json"),
    }
    Ok(())
}

fn run(command: Top) -> anyhow::Result<()> {
    match command {
        // `main` runs the audit itself, for its exit status.
        Top::Audit(args) => cli_audit::audit(args).map(drop),
        Top::Soak(args) => cli_demo::soak(args).map(drop),
        Top::Explain(args) => cli_audit::explain(args),
        Top::Bench { command: BenchCmd::Audit(args) } => cli_audit::bench(args),
        Top::Scenario {
            command: ScenarioCmd::Run { file, compact, via, brokers, partitions, timeout_s, prefix, office },
        } => {
            let scenario = Scenario::load(&file)?;
            let mut output = match via {
                Via::Engine => scenario.run()?,
                Via::Kafka => {
                    let opts =
                        ViaKafka { brokers, partitions, timeout: Duration::from_secs(timeout_s), state_dir: None };
                    let prefix = prefix.unwrap_or_else(geoclock::scenario::kafka::fresh_prefix);
                    eprintln!("topics of this run: --prefix {prefix}");
                    // The audit judges by the tenants' settings: these are the scenario's.
                    let tenants = serde_json::json!({ "tenants": { &scenario.tenant: &scenario.settings } });
                    eprintln!(
                        "audit them with the scenario's settings: echo '{tenants}' > tenants.yaml; \
                         geoclock audit --prefix {prefix} --tenants tenants.yaml"
                    );
                    let catalogue = Catalogue { prefix, partitions, replication: 1 };
                    scenario.run_via_kafka_on(&opts, &catalogue, Arc::new(FileRegistry::in_memory()))?
                }
            };
            let office = office.map(|o| geoclock::model::Id::from(o.as_str()));
            output.report = geoclock::report::of_office(output.report, office.as_ref());
            if compact {
                println!("{}", serde_json::to_string(&output)?);
            } else {
                println!("{}", output.to_json());
            }
            Ok(())
        }
        Top::Process {
            brokers,
            prefix,
            partitions,
            group,
            state_dir,
            tenants,
            metrics,
            batch,
            commit_ms,
            session_timeout_ms,
            max_buffer_mb,
            schema_registry,
        } => {
            let catalogue = Catalogue { prefix, partitions, replication: 1 };
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(ensure_topics(&brokers, &catalogue, Duration::from_secs(30)))?;
            let mut config = Config::new(&brokers, catalogue, state_dir, cli_connect::registry(schema_registry)?);
            config.group_id = group;
            config.metrics_addr = metrics;
            config.limits.batch_records = batch;
            config.limits.commit_interval = Duration::from_millis(commit_ms);
            config.session_timeout = Duration::from_millis(session_timeout_ms);
            config.limits.max_buffered_bytes = max_buffer_mb.max(1) << 20;
            if let Some(path) = tenants {
                config.tenants = Tenants::load(&path)?;
            }
            let processor = Processor::start(config)?;
            if let Some(addr) = processor.metrics_addr {
                tracing::info!(%addr, "metrics at /metrics");
            }
            // Until a signal, or until the group thread dies (then exit
            // non-zero, so the supervisor restarts the process).
            let died = runtime.block_on(async {
                let signal = shutdown_signal();
                tokio::pin!(signal);
                let mut check = tokio::time::interval(Duration::from_millis(500));
                loop {
                    tokio::select! {
                        _ = &mut signal => return false,
                        _ = check.tick() => if processor.is_finished() { return true },
                    }
                }
            });
            tracing::info!("stopping: committing every task");
            processor.stop()?;
            anyhow::ensure!(!died, "the processor's group thread ended unexpectedly");
            Ok(())
        }
        Top::Bench { command: BenchCmd::Processor { day, latency_rate, timeline, backlog_pings, only_backlog } } => {
            let opts = geoclock::processor::bench::BenchOptions {
                day: day.day()?,
                brokers: day.brokers,
                partitions: day.partitions,
                latency_rate,
                state_dir: std::env::temp_dir().join(format!("geoclock-bench-{}", std::process::id())),
                timeline,
                backlog_pings,
                only_backlog,
            };
            let report = geoclock::processor::bench::run(&opts)?;
            println!("{report}");
            Ok(())
        }
        Top::Topics {
            command: TopicsCmd::Create { brokers, prefix, partitions, replication, timeout_s, audit_days, tenants },
        } => {
            let catalogue = Catalogue { prefix, partitions, replication };
            let tenants = tenants.map(|p| Tenants::load(&p)).transpose()?;
            let longest = tenants.map_or(geoclock::model::Settings::default().retention_days, |t| {
                t.tenants.values().chain([&t.default]).map(|s| s.retention_days).max().unwrap_or(30)
            });
            let retention = geoclock::kafka::topics::Retention { audit_days };
            retention.check(longest)?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let timeout = std::time::Duration::from_secs(timeout_s);
            let report = runtime.block_on(ensure_topics_with(&brokers, &catalogue, &retention, true, timeout))?;
            println!(
                "audit_days {audit_days}: pings, clock events, ticks, commands and results are kept {audit_days} days; \
                 entity topics keep every version at least {audit_days} days before compaction"
            );
            for name in &report.created {
                println!("created  {name} ({} partitions)", report.partitions.get(name).copied().unwrap_or(0));
            }
            for name in &report.existing {
                println!("exists   {name} ({} partitions)", report.partitions.get(name).copied().unwrap_or(0));
            }
            for u in &report.updated {
                let what: Vec<String> = u
                    .changes
                    .iter()
                    .map(|(k, old, new)| format!("{k} {} -> {new}", old.as_deref().unwrap_or("unset")))
                    .collect();
                println!("updated  {}: {} (audit_days {audit_days})", u.topic, what.join(", "));
            }
            for n in &report.not_updated {
                println!("NOT UPDATED {n}");
            }
            anyhow::ensure!(
                report.not_updated.is_empty(),
                "{} existing topics keep their old retention: the audit cannot look back {audit_days} days until they are changed",
                report.not_updated.len()
            );
            Ok(())
        }
        Top::Sim { command } => cli_connect::sim(command),
        Top::Connect { command } => cli_connect::connect(command),
        Top::Sink { command } => cli_connect::sink(command),
        Top::Demo(args) => cli_demo::demo(args),
        Top::Report { command } => cli_report::report(command),
        Top::Dlq { command } => cli_dlq::dlq(command),
        Top::Healthcheck { url, timeout_s } => {
            let http = geoclock::http::client::Http::new(Duration::from_secs(timeout_s.max(1)));
            let answer = http.call_blocking("GET", &url, &[], None);
            match answer {
                Ok(a) if (200..300).contains(&a.status) => Ok(()),
                Ok(a) => anyhow::bail!("{url} answered {}: {}", a.status, a.body.trim()),
                Err(e) => anyhow::bail!("{url}: {e}"),
            }
        }
    }
}
