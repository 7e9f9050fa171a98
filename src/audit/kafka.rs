//! The audit's reader: the input, commands and results topics of a
//! deployment (or of the topics `geoclock scenario run --via kafka` left
//! behind), fed to the pure replay, comparison and trace.
//!
//! Reading: every consumer is `assign()`ed its partitions from their low
//! to their high watermark as they stand when the audit starts, under a
//! throwaway group id that never joins the group (no `subscribe`) and never
//! commits: the audit writes nothing anywhere. Inputs other than pings
//! are read into memory first and merged ([`super::input::merge_lanes`]);
//! the commands and results topics are read beside them. Then one thread
//! per pings partition fetches and decodes its pings (the hot path:
//! [`Codec::decode_current_ping`], no allocation per ping) and hands
//! batches to the replay thread, which merges them with the rest in the
//! processor's order.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::diff::{Boundary, Comparison, Findings, Ledger, Span};
use super::explain::Explanation;
use super::input::{class, merge_lanes, next_of, partition_of, Input, PingInput, Position};
use super::replay::{Derived, Replay};
use super::trace::Tracer;
use super::whatif::{Collector, Overrides, WhatIf, WhatIfError};
use crate::engine::{Command, EngineError, Event};
use crate::kafka::client::{consumer_config, unless_transient};
use crate::kafka::codec::{Codec, CodecError};
use crate::kafka::registry::SchemaRegistry;
use crate::kafka::topics::{parse_key, Catalogue, Topic};
use crate::model::{Id, Ts};
use crate::processor::bench::cpu_seconds;
use crate::processor::Tenants;

/// The start of a truncated history that is replayed but not judged.
pub const WARM_UP_MS: i64 = 24 * 3_600_000;

/// Extra and differing commands whose emitted content is fetched for the
/// report, at most.
const FETCH_CONTENT: usize = 200;

/// Pings handed from a reader thread to the replay at once.
const BATCH: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("topic {0} not found: is the broker or the prefix wrong?")]
    NoTopic(String),
    #[error("schemas: {0}")]
    Codec(#[from] CodecError),
    #[error("settings: {0}")]
    Engine(#[from] EngineError),
    #[error(transparent)]
    WhatIf(#[from] WhatIfError),
    #[error("{topic}[{partition}] not read to its end: nothing for {secs} s")]
    Stalled { topic: String, partition: i32, secs: u64 },
    #[error("reader thread: {0}")]
    Thread(String),
}

/// Where to read, and what.
#[derive(Debug, Clone)]
pub struct Source {
    pub brokers: String,
    /// The topics' prefix (`geoclock`, or a scenario run's).
    pub prefix: String,
    /// Only this tenant's records.
    pub tenant: Option<String>,
    /// Inputs stamped after this are not read (their decisions are not
    /// judged either).
    pub to: Option<Ts>,
    /// Longest wait for a record while a partition is not read to its end.
    pub timeout: Duration,
    /// A progress bar on stderr (when it is a terminal).
    pub progress: bool,
}

impl Source {
    fn catalogue(&self) -> Catalogue {
        Catalogue { prefix: self.prefix.clone(), ..Catalogue::default() }
    }

    fn wants(&self, key: Option<&[u8]>) -> bool {
        let Some(want) = &self.tenant else { return true };
        key.and_then(|k| parse_key(k).ok()).is_some_and(|(t, _)| t == want)
    }

    fn group(&self) -> String {
        format!("geoclock-audit-{}-never-committed", std::process::id())
    }
}

/// What the reader read, and how fast.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReadStats {
    /// Input records replayed (pings included).
    pub records: u64,
    pub pings: u64,
    /// Input records that did not decode (the processor dead-letters them).
    pub undecodable: u64,
    /// Input records the engine refused (likewise).
    pub rejected: u64,
    pub pings_partitions: i32,
    /// Pings read from another partition than their key's default one
    /// (the replay's stage-two grouping assumes the default partitioner).
    pub partitioner_mismatch: u64,
    /// The whole run, seconds.
    pub seconds: f64,
    /// Pings over the pings phase (first ping fetched to the last replayed).
    pub pings_per_s: f64,
    /// This process's CPU time (every thread; the broker's not counted)
    /// per ping over the pings phase, µs.
    pub cpu_us_per_ping: Option<f64>,
}

/// Everything `geoclock audit` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub findings: Findings,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub what_if: Option<WhatIf>,
    pub input: ReadStats,
}

impl Report {
    pub fn summary(&self) -> String {
        let mut out = self.findings.summary();
        if let Some(w) = &self.what_if {
            out.push('\n');
            out.push_str(&w.summary());
        }
        let s = &self.input;
        out.push_str(&format!(
            "\nReplayed {} input records ({} pings) in {:.1} s: {:.0} pings/s{}\n",
            s.records,
            s.pings,
            s.seconds,
            s.pings_per_s,
            s.cpu_us_per_ping.map(|c| format!(", {c:.2} µs CPU per ping")).unwrap_or_default()
        ));
        if s.undecodable + s.rejected > 0 {
            out.push_str(&format!(
                "{} records did not decode and {} were refused by the engine (the processor dead-letters both)\n",
                s.undecodable, s.rejected
            ));
        }
        if s.partitioner_mismatch > 0 {
            out.push_str(&format!(
                "Warning: {} pings are not on their key's default partition; stage-two grouping may differ\n",
                s.partitioner_mismatch
            ));
        }
        out
    }
}

/// An audit to run.
pub struct AuditOptions {
    pub source: Source,
    pub tenants: Tenants,
    pub what_if: Option<Overrides>,
    /// The judged span asked for (`--from`, `--to`).
    pub span: Span,
    /// Matched commands caused after this without a result are pending.
    pub pending_after: Option<Ts>,
    pub registry: Arc<dyn SchemaRegistry>,
}

impl AuditOptions {
    /// Everything retained under `prefix`, every tenant on `tenants`, no
    /// what-if, no pending grace, the built-in schemas, no progress bar.
    pub fn everything(brokers: &str, prefix: &str, tenants: Tenants, timeout: Duration) -> AuditOptions {
        AuditOptions {
            source: Source {
                brokers: brokers.to_string(),
                prefix: prefix.to_string(),
                tenant: None,
                to: None,
                timeout,
                progress: false,
            },
            tenants,
            what_if: None,
            span: Span::default(),
            pending_after: None,
            registry: Arc::new(crate::kafka::registry::FileRegistry::in_memory()),
        }
    }
}

/// One partition of a topic, from `low` to `high`.
#[derive(Debug, Clone)]
struct Part {
    topic: Topic,
    name: String,
    partition: i32,
    low: i64,
    high: i64,
}

fn consumer(src: &Source) -> Result<BaseConsumer, AuditError> {
    Ok(consumer_config(&src.brokers, &src.group())
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "50")
        .create()?)
}

/// Every partition of `topics` with its watermarks.
fn parts(src: &Source, c: &BaseConsumer, topics: &[Topic]) -> Result<Vec<Part>, AuditError> {
    let catalogue = src.catalogue();
    let mut out = Vec::new();
    for t in topics {
        let name = catalogue.name(*t);
        let md = c.fetch_metadata(Some(&name), src.timeout)?;
        let n = md.topics().first().filter(|m| m.error().is_none()).map_or(0, |m| m.partitions().len());
        if n == 0 {
            return Err(AuditError::NoTopic(name));
        }
        for p in 0..n as i32 {
            let (low, high) = c.fetch_watermarks(&name, p, src.timeout)?;
            out.push(Part { topic: *t, name: name.clone(), partition: p, low, high });
        }
    }
    Ok(out)
}

/// Reads every record of `parts` (low to high) and hands each to `f`.
fn drain(src: &Source, parts: &[Part], mut f: impl FnMut(&Part, &BorrowedMessage)) -> Result<(), AuditError> {
    let c = consumer(src)?;
    let mut tpl = TopicPartitionList::new();
    // Whether each part still has records to read.
    let mut open: Vec<bool> = parts.iter().map(|p| p.high > p.low).collect();
    let mut left = open.iter().filter(|o| **o).count();
    for p in parts.iter().filter(|p| p.high > p.low) {
        tpl.add_partition_offset(&p.name, p.partition, Offset::Offset(p.low))?;
    }
    if left == 0 {
        return Ok(());
    }
    c.assign(&tpl)?;
    let mut last = Instant::now();
    // Records come in runs of one partition: the previous one's index.
    let mut at = 0;
    while left > 0 {
        let Some(polled) = c.poll(Duration::from_millis(100)) else {
            if last.elapsed() > src.timeout {
                let stuck = parts.iter().zip(&open).find(|(_, o)| **o).map(|(p, _)| p);
                return Err(AuditError::Stalled {
                    topic: stuck.map(|p| p.name.clone()).unwrap_or_default(),
                    partition: stuck.map_or(0, |p| p.partition),
                    secs: src.timeout.as_secs(),
                });
            }
            continue;
        };
        let Some(m) = unless_transient(polled, "audit reader")? else { continue };
        last = Instant::now();
        let same = |p: &Part| p.partition == m.partition() && p.name == m.topic();
        if !parts.get(at).is_some_and(same) {
            match parts.iter().position(same) {
                Some(i) => at = i,
                None => continue,
            }
        }
        let part = &parts[at];
        if !open[at] {
            continue;
        }
        if m.offset() < part.high {
            f(part, &m);
        }
        if m.offset() + 1 >= part.high {
            open[at] = false;
            left -= 1;
        }
    }
    Ok(())
}

fn timestamp(m: &BorrowedMessage) -> i64 {
    m.timestamp().to_millis().unwrap_or(0)
}

/// Notes on the history the time-retained topics lost to retention: the
/// oldest record every one of them still holds (the latest of their first
/// records, over partitions that lost records).
#[derive(Debug, Default)]
struct Truncation {
    /// `(topic, first retained record time)` of partitions with `low > 0`.
    retained_from: Vec<(String, i64)>,
    /// Compacted partitions with gaps in their offsets.
    compacted: Vec<String>,
}

impl Truncation {
    fn first_record(&mut self, part: &Part, m: &BorrowedMessage) {
        if part.low > 0 && m.offset() == part.low && !part.topic.compacted() {
            self.retained_from.push((format!("{}[{}]", part.name, part.partition), timestamp(m)));
        }
    }

    fn boundary(&self) -> (Boundary, Option<i64>) {
        let mut b = Boundary::default();
        let start = self.retained_from.iter().map(|(_, t)| *t).max();
        if let Some(s) = start {
            b.truncated = true;
            b.notes.push(format!(
                "retention deleted the oldest records of {} topic partitions; every time-retained topic holds records from {} on",
                self.retained_from.len(),
                Ts(s).to_rfc3339()
            ));
        }
        if !self.compacted.is_empty() {
            b.truncated = true;
            b.notes.push(format!("compaction removed superseded entity versions from {}", self.compacted.join(", ")));
        }
        (b, start)
    }
}

/// The inputs other than pings, merged in the processor's order, and the
/// partitions of the pings topic.
fn read_rest(
    src: &Source,
    codec: &Codec,
    stats: &mut ReadStats,
    trunc: &mut Truncation,
) -> Result<(Vec<Input>, Vec<Part>), AuditError> {
    let c = consumer(src)?;
    let topics: Vec<Topic> = super::input::INPUTS.iter().copied().filter(|t| *t != Topic::Pings).collect();
    let rest = parts(src, &c, &topics)?;
    let pings = parts(src, &c, &[Topic::Pings])?;
    let mut lanes: BTreeMap<(u8, i32), Vec<Input>> = BTreeMap::new();
    let mut previous: BTreeMap<(String, i32), i64> = BTreeMap::new();
    drain(src, &rest, |part, m| {
        trunc.first_record(part, m);
        if part.topic.compacted() {
            let prev = previous.insert((part.name.clone(), part.partition), m.offset());
            let gap = prev.map_or(m.offset() > part.low, |p| m.offset() > p + 1);
            if gap && !trunc.compacted.contains(&part.name) {
                trunc.compacted.push(part.name.clone());
            }
        }
        if !src.wants(m.key()) || src.to.is_some_and(|to| timestamp(m) > to.millis()) {
            return;
        }
        let Some(cl) = class(part.topic) else { return };
        match codec.decode_event(part.topic, m.key().unwrap_or_default(), m.payload()) {
            Ok(te) => {
                let at = Position { time: timestamp(m), class: cl, partition: part.partition, offset: m.offset() };
                lanes.entry((cl, part.partition)).or_default().push(Input { at, tenant: te.tenant, event: te.event });
            }
            Err(_) => stats.undecodable += 1,
        }
    })?;
    Ok((merge_lanes(lanes.into_values().collect(), |i| i.at), pings))
}

/// The commands and results topics.
fn read_ledger(src: &Source, codec: &Codec, trunc: &mut Truncation) -> Result<Ledger, AuditError> {
    let c = consumer(src)?;
    let parts = parts(src, &c, &[Topic::Commands, Topic::Results])?;
    let mut ledger = Ledger::default();
    drain(src, &parts, |part, m| {
        trunc.first_record(part, m);
        if !src.wants(m.key()) {
            return;
        }
        let Some(value) = m.payload() else { return };
        match part.topic {
            Topic::Commands => match codec.decode_command(value) {
                Ok(tc) => ledger.emitted(&tc.tenant, &tc.command, timestamp(m), m.partition(), m.offset()),
                Err(_) => ledger.undecodable += 1,
            },
            _ => match codec.decode_result(value) {
                Ok((tenant, r)) => ledger.result(&tenant, &r),
                Err(_) => ledger.undecodable += 1,
            },
        }
    })?;
    Ok(ledger)
}

/// Where the replayed input goes.
pub trait InputSink {
    fn input(&mut self, input: Input);
    fn ping(&mut self, ping: PingInput);
}

type Batch = Result<Vec<PingInput>, AuditError>;

/// One pings partition, fetched and decoded on its own thread.
fn spawn_ping_reader(
    src: &Source,
    codec: Arc<Codec>,
    part: Part,
    partitions: i32,
    mismatch: Arc<AtomicU64>,
    undecodable: Arc<AtomicU64>,
) -> Result<Receiver<Batch>, AuditError> {
    let (tx, rx) = sync_channel::<Batch>(8);
    let src = src.clone();
    std::thread::Builder::new()
        .name(format!("audit-pings-{}", part.partition))
        .spawn(move || {
            let mut batch = Vec::with_capacity(BATCH);
            let result = drain(&src, std::slice::from_ref(&part), |part, m| {
                let (Some(key), Some(value)) = (m.key(), m.payload()) else {
                    undecodable.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                if src.to.is_some_and(|to| timestamp(m) > to.millis()) || !src.wants(Some(key)) {
                    return;
                }
                let at = Position { time: timestamp(m), class: 0, partition: part.partition, offset: m.offset() };
                let decoded = match codec.decode_current_ping(key, value) {
                    Some((tenant, ping)) => Some(PingInput { at, tenant: tenant.into(), ping }),
                    None => match codec.decode_event(Topic::Pings, key, Some(value)) {
                        Ok(crate::kafka::records::TenantEvent { tenant, event: Event::Ping(ping) }) => {
                            Some(PingInput { at, tenant: tenant.into(), ping })
                        }
                        _ => None,
                    },
                };
                let Some(p) = decoded else {
                    undecodable.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                if partition_of(key, partitions) != part.partition {
                    mismatch.fetch_add(1, Ordering::Relaxed);
                }
                batch.push(p);
                if batch.len() >= BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    // A closed channel: the replay ended early; stop quietly.
                    let _ = tx.send(Ok(full));
                }
            });
            let _ = match result {
                Ok(()) if batch.is_empty() => Ok(()),
                Ok(()) => tx.send(Ok(batch)),
                Err(e) => tx.send(Err(e)),
            };
        })
        .map_err(|e| AuditError::Thread(e.to_string()))?;
    Ok(rx)
}

/// A progress bar on stderr, when it is a terminal.
struct Progress {
    total: u64,
    started: Instant,
    last: Instant,
    on: bool,
}

impl Progress {
    fn new(total: u64, on: bool) -> Progress {
        let now = Instant::now();
        Progress { total, started: now, last: now, on: on && std::io::stderr().is_terminal() }
    }

    fn tick(&mut self, done: u64) {
        if !self.on || self.last.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.last = Instant::now();
        let frac = done as f64 / self.total.max(1) as f64;
        let width = 30;
        let filled = ((frac * width as f64) as usize).min(width);
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        eprint!(
            "\r[{}{}] {:>3.0}% {}/{} pings, {:.2} M/s ",
            "#".repeat(filled),
            ".".repeat(width - filled),
            frac * 100.0,
            done,
            self.total,
            rate / 1e6
        );
        let _ = std::io::stderr().flush();
    }

    fn done(&self) {
        if self.on {
            eprintln!();
        }
    }
}

/// Reads every input of `src` and feeds it to `sink` in the processor's
/// order (module docs). The stats' rates cover the pings phase.
pub fn replay_topics(
    src: &Source,
    codec: Arc<Codec>,
    sink: &mut dyn InputSink,
    stats: &mut ReadStats,
    trunc_out: Option<&mut (Boundary, Option<i64>)>,
) -> Result<(), AuditError> {
    let mut trunc = Truncation::default();
    let (rest, pings) = read_rest(src, &codec, stats, &mut trunc)?;
    replay_with(src, codec, rest, pings, sink, stats, &mut trunc)?;
    if let Some(out) = trunc_out {
        *out = trunc.boundary();
    }
    Ok(())
}

fn replay_with(
    src: &Source,
    codec: Arc<Codec>,
    rest: Vec<Input>,
    pings: Vec<Part>,
    sink: &mut dyn InputSink,
    stats: &mut ReadStats,
    trunc: &mut Truncation,
) -> Result<(), AuditError> {
    let n = pings.len() as i32;
    stats.pings_partitions = n;
    let total: u64 = pings.iter().map(|p| (p.high - p.low).max(0) as u64).sum();
    let (mismatch, undecodable) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // The first ping of every partition that lost records: retention's mark.
    for p in pings.iter().filter(|p| p.low > 0) {
        trunc.retained_from.push((format!("{}[{}]", p.name, p.partition), first_time(src, p)?));
    }
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    let mut lanes: Vec<(Receiver<Batch>, std::vec::IntoIter<PingInput>, bool)> = Vec::new();
    for p in pings {
        let rx = spawn_ping_reader(src, codec.clone(), p, n, mismatch.clone(), undecodable.clone())?;
        lanes.push((rx, Vec::new().into_iter(), false));
    }
    let mut progress = Progress::new(total, src.progress);
    let mut rest = rest.into_iter().peekable();
    let mut fronts: Vec<Option<Position>> = vec![None; lanes.len()];
    for (i, lane) in lanes.iter_mut().enumerate() {
        fronts[i] = refill(lane)?;
    }
    let mut pings_seen = 0u64;
    loop {
        let Some(i) = next_of(&fronts, rest.peek().map(|x| x.at)) else { break };
        stats.records += 1;
        if i == fronts.len() {
            if let Some(input) = rest.next() {
                sink.input(input);
            }
            continue;
        }
        let lane = &mut lanes[i];
        if let Some(p) = lane.1.next() {
            sink.ping(p);
            pings_seen += 1;
            if pings_seen % 65_536 == 0 {
                progress.tick(pings_seen);
            }
        }
        fronts[i] = match lane.1.as_slice().first() {
            Some(p) => Some(p.at),
            None => refill(lane)?,
        };
    }
    progress.done();
    stats.pings = pings_seen;
    let secs = started.elapsed().as_secs_f64();
    stats.pings_per_s = pings_seen as f64 / secs.max(1e-9);
    stats.cpu_us_per_ping = match (cpu0, cpu_seconds()) {
        (Some(a), Some(b)) if pings_seen > 0 => Some((b - a) * 1e6 / pings_seen as f64),
        _ => None,
    };
    stats.partitioner_mismatch = mismatch.load(Ordering::Relaxed);
    stats.undecodable += undecodable.load(Ordering::Relaxed);
    Ok(())
}

/// The next batch of a ping lane; the front's position, `None` at its end.
fn refill(lane: &mut (Receiver<Batch>, std::vec::IntoIter<PingInput>, bool)) -> Result<Option<Position>, AuditError> {
    while !lane.2 {
        match lane.0.recv() {
            Ok(batch) => {
                lane.1 = batch?.into_iter();
                if let Some(p) = lane.1.as_slice().first() {
                    return Ok(Some(p.at));
                }
            }
            Err(_) => lane.2 = true,
        }
    }
    Ok(None)
}

/// The record time of a partition's first retained record.
fn first_time(src: &Source, part: &Part) -> Result<i64, AuditError> {
    let mut t = 0;
    let first = Part { high: part.low + 1, ..part.clone() };
    drain(src, std::slice::from_ref(&first), |_, m| t = timestamp(m))?;
    Ok(t)
}

/// The audit's sink: the replay(s), and the comparison fed as they decide.
struct AuditSink {
    replay: Replay,
    what_if: Option<(Replay, Collector)>,
    comparison: Comparison,
    derived: Vec<Derived>,
    alt: Vec<Derived>,
}

impl AuditSink {
    fn drain(&mut self) {
        for d in self.derived.drain(..) {
            let tenant = self.replay.tenant(d.tenant);
            self.comparison.derived(tenant, &d.command, d.at.time);
            if let Some((_, c)) = &mut self.what_if {
                c.production(tenant, &d.command, d.at.time);
            }
        }
        if let Some((r, c)) = &mut self.what_if {
            for d in self.alt.drain(..) {
                c.what_if(r.tenant(d.tenant), &d.command, d.at.time);
            }
        }
    }
}

impl InputSink for AuditSink {
    fn input(&mut self, input: Input) {
        if let Some((r, _)) = &mut self.what_if {
            r.input(&input, &mut self.alt);
        }
        self.replay.input(&input, &mut self.derived);
        self.drain();
    }

    fn ping(&mut self, ping: PingInput) {
        if let Some((r, _)) = &mut self.what_if {
            r.ping(ping.clone(), &mut self.alt);
        }
        self.replay.ping(ping, &mut self.derived);
        if !self.derived.is_empty() || !self.alt.is_empty() {
            self.drain();
        }
    }
}

/// `geoclock audit`: replay, compare, and (with `what_if`) re-derive under
/// other settings.
pub fn audit(opts: &AuditOptions) -> Result<Report, AuditError> {
    let started = Instant::now();
    let src = &opts.source;
    let codec = Arc::new(Codec::new(opts.registry.clone(), &src.catalogue())?);
    let mut trunc = Truncation::default();
    let mut stats = ReadStats::default();
    // The commands and results beside the other inputs.
    let (rest, ledger) = std::thread::scope(|s| {
        let ledger = s.spawn(|| {
            let mut t = Truncation::default();
            read_ledger(src, &codec, &mut t).map(|l| (l, t))
        });
        let rest = read_rest(src, &codec, &mut stats, &mut trunc);
        (rest, ledger.join())
    });
    let (rest, pings) = rest?;
    let (ledger, ledger_trunc) = ledger.map_err(|_| AuditError::Thread("ledger reader panicked".into()))??;
    trunc.retained_from.extend(ledger_trunc.retained_from);
    let partitions = pings.len() as i32;
    let what_if = match &opts.what_if {
        Some(o) => Some((Replay::new(o.tenants(&opts.tenants)?, partitions)?, Collector::default())),
        None => None,
    };
    let mut sink = AuditSink {
        replay: Replay::new(opts.tenants.clone(), partitions)?,
        what_if,
        comparison: Comparison::new(ledger, opts.pending_after),
        derived: Vec::new(),
        alt: Vec::new(),
    };
    replay_with(src, codec.clone(), rest, pings, &mut sink, &mut stats, &mut trunc)?;
    let (boundary, retained_from) = trunc.boundary();
    let mut span = opts.span;
    if span.from.is_none() {
        span.from = retained_from.map(|s| Ts(s.saturating_add(WARM_UP_MS)));
    }
    if span.to.is_none() {
        span.to = src.to;
    }
    stats.rejected = sink.replay.rejected;
    let AuditSink { comparison, what_if, .. } = sink;
    let mut findings = comparison.finish(span, boundary);
    fetch_contents(src, &codec, &mut findings)?;
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(Report { findings, what_if: what_if.map(|(_, c)| c.finish(span)), input: stats })
}

/// Fills in the emitted content of extra and differing commands (the
/// first [`FETCH_CONTENT`]), read back at their offsets.
fn fetch_contents(src: &Source, codec: &Codec, f: &mut Findings) -> Result<(), AuditError> {
    let name = src.catalogue().name(Topic::Commands);
    let wanted: Vec<(i32, i64)> =
        f.extra.iter().chain(f.differs.iter()).flat_map(|e| e.records.iter().copied()).take(FETCH_CONTENT).collect();
    let mut found: BTreeMap<(i32, i64), Command> = BTreeMap::new();
    for (partition, offset) in wanted {
        let part = Part { topic: Topic::Commands, name: name.clone(), partition, low: offset, high: offset + 1 };
        drain(src, std::slice::from_ref(&part), |_, m| {
            if let Some(c) = m.payload().and_then(|v| codec.decode_command(v).ok()) {
                found.insert((partition, offset), c.command);
            }
        })?;
    }
    for e in f.extra.iter_mut().chain(f.differs.iter_mut()) {
        e.emitted = e.records.iter().filter_map(|r| found.get(r).cloned()).collect();
    }
    Ok(())
}

/// `geoclock explain` on topics: the tenant's input replayed through the
/// one-stage engine, watching `appointment`.
pub fn explain(
    src: &Source,
    registry: Arc<dyn SchemaRegistry>,
    tenants: &Tenants,
    appointment: &Id,
    tech: Option<&Id>,
) -> Result<Explanation, AuditError> {
    let Some(tenant) = src.tenant.clone() else {
        return Err(AuditError::Thread("explain needs the tenant".into()));
    };
    let codec = Arc::new(Codec::new(registry, &src.catalogue())?);
    struct TraceSink(Tracer);
    impl InputSink for TraceSink {
        fn input(&mut self, input: Input) {
            self.0.event(&input.event, Some(Ts(input.at.time)));
        }
        fn ping(&mut self, ping: PingInput) {
            self.0.event(&Event::Ping(ping.ping), Some(Ts(ping.at.time)));
        }
    }
    let mut sink = TraceSink(Tracer::new(&tenant, tenants.settings(&tenant), appointment.clone())?);
    let mut stats = ReadStats::default();
    replay_topics(src, codec, &mut sink, &mut stats, None)?;
    let (engine, trace) = sink.0.finish();
    Ok(Explanation::build(&engine, appointment, tech, Some(&trace)))
}
