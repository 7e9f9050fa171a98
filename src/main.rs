//! The `geoclock` command line. Parsing and dispatch only.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    }
}
