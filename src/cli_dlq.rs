//! `geoclock dlq …`: the dead-letter topic, listed and re-driven.

use clap::Subcommand;

use geoclock::kafka::codec::Codec;
use geoclock::sink::redrive::{self, Filter};

use crate::cli_connect::registry;

#[derive(Subcommand)]
pub enum DlqCmd {
    /// List the dead-lettered commands that `replay` would re-drive.
    List {
        #[command(flatten)]
        args: DlqArgs,
    },
    /// Put dead-lettered commands back on the commands topic (deduplicated by command id: a command done meanwhile stays done).
    Replay {
        #[command(flatten)]
        args: DlqArgs,
        /// Show what would be re-driven, do nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(clap::Args)]
pub struct DlqArgs {
    #[arg(long, env = "GEOCLOCK_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long, env = "GEOCLOCK_TOPIC_PREFIX", default_value = "geoclock")]
    prefix: String,
    /// Schema registry: a Confluent REST URL, or a file path (default: built in).
    #[arg(long, env = "GEOCLOCK_SCHEMA_REGISTRY")]
    schema_registry: Option<String>,
    /// Only this tenant's.
    #[arg(long)]
    tenant: Option<String>,
    /// Only this sink's (clock, geofence, email).
    #[arg(long)]
    sink: Option<String>,
    /// Only those dead-lettered since this time (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// `text` or `json`.
    #[arg(long, default_value = "text")]
    format: String,
}

pub fn dlq(cmd: DlqCmd) -> anyhow::Result<()> {
    let (args, dry_run) = match cmd {
        DlqCmd::List { args } => (args, true),
        DlqCmd::Replay { args, dry_run } => (args, dry_run),
    };
    let since_ms = match &args.since {
        Some(s) => Some(geoclock::model::Ts::parse(s)?.millis()),
        None => None,
    };
    let catalogue = geoclock::kafka::topics::Catalogue { prefix: args.prefix.clone(), ..Default::default() };
    let codec = Codec::new(registry(args.schema_registry.clone())?, &catalogue)?;
    let filter = Filter { tenant: args.tenant.clone(), since_ms, sink: args.sink.clone() };
    let report = redrive::run(&args.brokers, &catalogue, &codec, &filter, dry_run)?;
    if args.format == "json" {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    for c in &report.commands {
        println!("{}  {}  {}  appointment {}  {}", c.tenant, c.id, c.kind, c.appointment, c.reason);
    }
    println!(
        "{} dead letters: {} commands {}, {} other records left alone",
        report.dead_letters,
        report.commands.len(),
        if report.replayed { "re-driven" } else { "to re-drive" },
        report.other
    );
    Ok(())
}
