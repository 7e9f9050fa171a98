//! `geoclock bench audit`: the audit's rate on the bench day
//! ([`crate::processor::bench`]'s: 2 000 vehicles, a ping every 30 s for
//! 12 h, 2.88 M pings), read from a real broker.
//!
//! The day's entities and pings are put on fresh topics and a processor
//! runs until it has taken every ping and is idle (so the commands topic
//! holds the day's decisions, as in production), then stops. A bare
//! consumer drains the pings topic (the raw rate of the same topic, as the
//! processor bench measures it), then `runs` audits read and replay
//! everything. Each audit's rate is over its pings phase (first ping
//! fetched to the last replayed: metadata, the entity topics and the
//! commands topic, read before, are excluded, like a processor's restore);
//! its CPU is this process's (every thread) over that phase, per ping.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::kafka::{audit, AuditOptions, ReadStats};
use crate::kafka::codec::Codec;
use crate::kafka::registry::FileRegistry;
use crate::kafka::topics::Topic;
use crate::processor::bench::{self as pbench, BenchOptions};
use crate::processor::{Processor, ProcessorError, Stage, Tenants};
use crate::scenario::generate::Day;

#[derive(Debug, Clone)]
pub struct AuditBenchOptions {
    pub brokers: String,
    pub partitions: i32,
    pub day: Day,
    pub runs: usize,
    pub state_dir: std::path::PathBuf,
}

#[derive(Debug, Clone, Default)]
pub struct AuditBenchReport {
    pub pings: usize,
    pub commands: u64,
    pub raw_pings_per_s: f64,
    pub raw_cpu_us_per_ping: Option<f64>,
    pub runs: Vec<ReadStats>,
    pub clean: bool,
}

impl std::fmt::Display for AuditBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "pings                      {}", self.pings)?;
        writeln!(f, "commands matched           {} (audit clean: {})", self.commands, self.clean)?;
        writeln!(
            f,
            "raw consume (same topic)   {:.0} pings/s sustained{}",
            self.raw_pings_per_s,
            self.raw_cpu_us_per_ping.map(|c| format!(", {c:.2} µs CPU per ping")).unwrap_or_default()
        )?;
        for (i, r) in self.runs.iter().enumerate() {
            writeln!(
                f,
                "audit run {}                {:.0} pings/s ({:.0}% of raw), {:.2} s whole run{}",
                i + 1,
                r.pings_per_s,
                100.0 * r.pings_per_s / self.raw_pings_per_s.max(1.0),
                r.seconds,
                r.cpu_us_per_ping.map(|c| format!(", {c:.2} µs CPU per ping")).unwrap_or_default()
            )?;
        }
        Ok(())
    }
}

fn e(what: &str, err: impl std::fmt::Display) -> ProcessorError {
    ProcessorError::Codec(format!("audit bench {what}: {err}"))
}

pub fn run(opts: &AuditBenchOptions) -> Result<AuditBenchReport, ProcessorError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|x| e("runtime", x))?;
    let popts = BenchOptions {
        brokers: opts.brokers.clone(),
        partitions: opts.partitions,
        day: opts.day.clone(),
        latency_rate: 0,
        state_dir: opts.state_dir.clone(),
        timeline: false,
        backlog_pings: 0,
        only_backlog: false,
    };
    let mut events = opts.day.stream();
    let (pings, split) = (opts.day.ping_count(), opts.day.entity_count());
    let catalogue = pbench::fresh(&runtime, &popts, "audit")?;
    let codec = Codec::new(Arc::new(FileRegistry::in_memory()), &catalogue).map_err(|x| e("codec", x))?;
    let dir = opts.state_dir.join("audit");
    let _ = std::fs::remove_dir_all(&dir);
    pbench::produce(&runtime, &opts.brokers, &catalogue, &codec, events.by_ref().take(split), None)?;
    let proc = Processor::start(pbench::config(&popts, &catalogue, dir.clone()))?;
    pbench::wait_settled(&proc, opts.partitions)?;
    tracing::info!(pings, "audit bench: entities settled; producing the pings");
    pbench::produce(&runtime, &opts.brokers, &catalogue, &codec, events, None)?;
    wait_all_pings(&proc, opts.partitions, pings as u64)?;
    proc.stop()?;
    let _ = std::fs::remove_dir_all(&dir);

    let cpu0 = pbench::cpu_seconds();
    // The processor's own fetch queue, as in `bench processor`'s raw drain.
    let queue = crate::processor::Config::new(
        &opts.brokers,
        catalogue.clone(),
        dir.clone(),
        Arc::new(FileRegistry::in_memory()),
    )
    .limits
    .fetch_queue_kbytes;
    let (drained, _, samples) =
        pbench::raw_consume(&opts.brokers, &catalogue.name(Topic::Pings), opts.partitions, queue)?;
    let mut report = AuditBenchReport {
        pings,
        raw_pings_per_s: samples.sustained(drained),
        raw_cpu_us_per_ping: match (cpu0, pbench::cpu_seconds()) {
            (Some(a), Some(b)) => Some((b - a) * 1e6 / drained.max(1) as f64),
            _ => None,
        },
        ..AuditBenchReport::default()
    };
    for i in 0..opts.runs.max(1) {
        let audit_opts =
            AuditOptions::everything(&opts.brokers, &catalogue.prefix, Tenants::any(), Duration::from_secs(60));
        let r = audit(&audit_opts).map_err(|x| e("audit", x))?;
        tracing::info!(run = i + 1, rate = r.input.pings_per_s as u64, "audit bench: run done");
        let f = &r.findings;
        report.commands = f.matched;
        report.clean = f.missing.is_empty() && f.extra.is_empty() && f.differs.is_empty();
        report.runs.push(r.input);
    }
    Ok(report)
}

/// Waits until the vehicle stage has taken every ping and all tasks idle.
fn wait_all_pings(proc: &Processor, partitions: i32, pings: u64) -> Result<(), ProcessorError> {
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut since: Option<Instant> = None;
    while since.is_none_or(|s| s.elapsed() < Duration::from_secs(1)) {
        let st = proc.status();
        let taken: u64 = st.iter().filter(|s| s.stage == Stage::Vehicles).map(|s| s.processed).sum();
        let done = st.len() == 2 * partitions as usize && st.iter().all(|s| s.idle) && taken >= pings;
        since = if done { since.or(Some(Instant::now())) } else { None };
        if Instant::now() > deadline {
            return Err(e("processor", "not idle within 30 min"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
