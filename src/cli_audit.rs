//! `geoclock audit` and `geoclock explain`: parsing and wiring only (see
//! src/audit/).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use geoclock::audit::kafka::{self as audit_kafka, AuditOptions, Source};
use geoclock::audit::whatif::Overrides;
use geoclock::audit::{trace, Span};
use geoclock::model::{Id, Ts};
use geoclock::processor::Tenants;
use geoclock::scenario::Scenario;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Where the topics are.
#[derive(Args)]
pub struct TopicArgs {
    #[arg(long, env = "GEOCLOCK_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// The topics' prefix: a deployment's, or the one `geoclock scenario run --via kafka` printed.
    #[arg(long, env = "GEOCLOCK_TOPIC_PREFIX", default_value = "geoclock")]
    prefix: String,
    /// The tenants' settings, as `geoclock process --tenants` (default: every tenant on the defaults).
    #[arg(long, env = "GEOCLOCK_TENANTS")]
    tenants: Option<PathBuf>,
    /// Schema registry: a Confluent REST URL, or a file path (default: built in).
    #[arg(long, env = "GEOCLOCK_SCHEMA_REGISTRY")]
    schema_registry: Option<String>,
    /// Seconds to wait for the broker before giving up on a partition.
    #[arg(long, default_value_t = 30)]
    timeout_s: u64,
}

impl TopicArgs {
    fn tenants(&self) -> anyhow::Result<Tenants> {
        Ok(match &self.tenants {
            Some(p) => Tenants::load(p)?,
            None => Tenants::default(),
        })
    }
}

#[derive(Args)]
pub struct AuditArgs {
    #[command(flatten)]
    topics: TopicArgs,
    /// Only this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Judge decisions caused from this time on (RFC 3339, or YYYY-MM-DD: that day's start, UTC); default: everything retained.
    #[arg(long)]
    from: Option<String>,
    /// ...up to this time (YYYY-MM-DD: that day's end, UTC); later input is not read.
    #[arg(long)]
    to: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// What-if: re-derive under these settings (YAML: overrides for every tenant, or `tenants: {NAME: {...}}`) and report what would change.
    #[arg(long)]
    settings: Option<PathBuf>,
    /// A matched command caused in the last SECONDS without a sink result is pending, not "not done".
    #[arg(long, default_value_t = 900)]
    grace_s: u64,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
pub struct ExplainArgs {
    /// The appointment to explain.
    #[arg(long)]
    appointment: String,
    /// Only this technician.
    #[arg(long)]
    tech: Option<String>,
    /// Replay this scenario file instead of topics.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// The appointment's tenant (topics).
    #[arg(long)]
    tenant: Option<String>,
    #[command(flatten)]
    topics: TopicArgs,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Args)]
pub struct BenchAuditArgs {
    #[command(flatten)]
    day: crate::BenchDay,
    /// Audits of the same topics, one after another.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// `geoclock bench audit`.
pub fn bench(a: BenchAuditArgs) -> anyhow::Result<()> {
    let opts = geoclock::audit::bench::AuditBenchOptions {
        day: a.day.day()?,
        brokers: a.day.brokers,
        partitions: a.day.partitions,
        runs: a.runs,
        state_dir: std::env::temp_dir().join(format!("geoclock-bench-audit-{}", std::process::id())),
    };
    println!("{}", geoclock::audit::bench::run(&opts)?);
    Ok(())
}

/// RFC 3339, or a date: its first (or, `end`, last) millisecond, UTC.
fn parse_time(s: &str, end: bool) -> anyhow::Result<Ts> {
    if let Ok(t) = Ts::parse(s) {
        return Ok(t);
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| anyhow::anyhow!("{s:?} is neither RFC 3339 nor YYYY-MM-DD"))?;
    let start = d.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp_millis()).unwrap_or_default();
    Ok(Ts(if end { start + 86_400_000 - 1 } else { start }))
}

fn now() -> Ts {
    Ts(chrono::Utc::now().timestamp_millis())
}

/// Exit 0 when clean, 1 on a discrepancy; errors are the caller's (2).
pub fn audit(a: AuditArgs) -> anyhow::Result<ExitCode> {
    let span = Span {
        from: a.from.as_deref().map(|s| parse_time(s, false)).transpose()?,
        to: a.to.as_deref().map(|s| parse_time(s, true)).transpose()?,
    };
    let what_if = a.settings.as_deref().map(Overrides::load).transpose()?;
    let opts = AuditOptions {
        source: Source {
            brokers: a.topics.brokers.clone(),
            prefix: a.topics.prefix.clone(),
            tenant: a.tenant.clone(),
            to: span.to,
            timeout: Duration::from_secs(a.topics.timeout_s),
            progress: !a.quiet && a.format == Format::Text,
        },
        tenants: a.topics.tenants()?,
        what_if,
        span,
        pending_after: Some(Ts(now().millis() - a.grace_s as i64 * 1000)),
        registry: crate::cli_connect::registry(a.topics.schema_registry.clone())?,
    };
    let report = audit_kafka::audit(&opts)?;
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => print!("{}", report.summary()),
    }
    // The text summary ends with the rate; JSON readers get it on stderr.
    let s = &report.input;
    if a.format == Format::Json {
        eprintln!(
            "geoclock audit: {} pings in {:.1} s, {:.0} pings/s{}",
            s.pings,
            s.seconds,
            s.pings_per_s,
            s.cpu_us_per_ping.map(|c| format!(", {c:.2} µs CPU per ping")).unwrap_or_default()
        );
    }
    Ok(if report.findings.clean() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub fn explain(a: ExplainArgs) -> anyhow::Result<()> {
    let appointment = Id::from(a.appointment.as_str());
    let tech = a.tech.as_deref().map(Id::from);
    let explanation = match &a.scenario {
        Some(file) => {
            let s = Scenario::load(file)?;
            trace::explain_events(&s.tenant, s.settings.clone(), &s.all_events(), &appointment, tech.as_ref())?
        }
        None => {
            let Some(tenant) = a.tenant.clone() else {
                anyhow::bail!("--tenant is needed to explain from topics (or give --scenario FILE)");
            };
            let src = Source {
                brokers: a.topics.brokers.clone(),
                prefix: a.topics.prefix.clone(),
                tenant: Some(tenant),
                to: None,
                timeout: Duration::from_secs(a.topics.timeout_s),
                progress: a.format == Format::Text,
            };
            let registry = crate::cli_connect::registry(a.topics.schema_registry.clone())?;
            audit_kafka::explain(&src, registry, &a.topics.tenants()?, &appointment, tech.as_ref())?
        }
    };
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&explanation)?),
        Format::Text => print!("{}", explanation.text()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc_3339_or_whole_days() {
        assert_eq!(parse_time("2026-11-28", false).unwrap(), Ts::parse("2026-11-28T00:00:00Z").unwrap());
        assert_eq!(parse_time("2026-11-28", true).unwrap(), Ts::parse("2026-11-28T23:59:59.999Z").unwrap());
        assert_eq!(parse_time("2026-11-28T10:00:00Z", true).unwrap(), Ts::parse("2026-11-28T10:00:00Z").unwrap());
        assert!(parse_time("yesterday", false).is_err());
    }
}
