//! The `geoclock` command line. Parsing and dispatch only.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli_connect;

use geoclock::kafka::admin::ensure_topics;
use geoclock::kafka::topics::Catalogue;
use geoclock::scenario::Scenario;

#[derive(Parser)]
#[command(name = "geoclock", version, about = "Fleet GPS in, field-service events out")]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// Scenario files: entities and events run through the engine.
    Scenario {
        #[command(subcommand)]
        command: ScenarioCmd,
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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("geoclock: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Top::Scenario { command: ScenarioCmd::Run { file, compact } } => {
            let output = Scenario::load(&file)?.run()?;
            if compact {
                println!("{}", serde_json::to_string(&output)?);
            } else {
                println!("{}", output.to_json());
            }
            Ok(())
        }
        Top::Topics { command: TopicsCmd::Create { brokers, prefix, partitions, replication, timeout_s } } => {
            let catalogue = Catalogue { prefix, partitions, replication };
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let report =
                runtime.block_on(ensure_topics(&brokers, &catalogue, std::time::Duration::from_secs(timeout_s)))?;
            for name in &report.created {
                println!("created  {name} ({} partitions)", report.partitions.get(name).copied().unwrap_or(0));
            }
            for name in &report.existing {
                println!("exists   {name} ({} partitions)", report.partitions.get(name).copied().unwrap_or(0));
            }
            Ok(())
        }
        Top::Sim { command } => cli_connect::sim(command),
        Top::Connect { command } => cli_connect::connect(command),
    }
}
