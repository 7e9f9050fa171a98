//! `geoclock bench processor`: the processor on a real broker, measured
//! against a bare consumer of the same topic in the same run.
//!
//! 1. Throughput, steady state: a generated day's entities
//!    ([`crate::scenario::generate::Day`]) are put on fresh topics and a
//!    processor runs until both stages are idle with them, then stops (as in
//!    production, where entities are mirrored long before the day's pings).
//!    Then the day's pings are produced; every pings partition is drained by
//!    a bare consumer (one thread per partition, the processor's consumer
//!    settings, no decoding: the raw rate); then the processor starts again
//!    on its state and runs until idle. Its rate: the records the vehicle
//!    stage takes from its first one after every task is ready (restored,
//!    consuming) and every vehicle task's gate is open, to every task idle
//!    with its last batch committed. Before its gate opens a vehicle task
//!    holds only a small buffer (its pings pause while the gate holds them:
//!    [`super::core`]), so the window measures processing, with all tasks
//!    running in parallel from its start, not the draining of a backlog
//!    buffered while a gate was shut.
//!
//!    Both drains are sampled as they run (records so far, every 1–2 ms).
//!    The sustained rate is over the middle of each drain, from
//!    [`SUSTAINED`]`.0` to [`SUSTAINED`]`.1` of its records; the overall
//!    rate, first record to last, is printed beside it. CPU time of this
//!    process per ping is measured over each drain (every thread; the
//!    broker is not counted), and their difference is the processor's
//!    overhead per ping.
//! 2. Restore: the processor's local state is deleted and it starts again:
//!    every task restores its changelog partition; rows per second, per task
//!    and over all, and the time until every task is ready.
//! 3. Backlog ([`backlog`], `--backlog-pings`): a `geoclock process` child
//!    whose stage one is held while the pings are produced; its peak RSS
//!    above its idle RSS, its drain once released, and its commands against
//!    the pure engine's.
//! 4. Latency: on other fresh topics, a processor runs while the day's
//!    entities and then its pings are produced at a steady rate, each record
//!    stamped with its produce time. Commands carry their input's record
//!    time, so a reader of the commands topic sees, for each clock change a
//!    ping caused, `visible − produced`.

mod backlog;
mod drain;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::{Config, Processor, ProcessorError, Stage, TaskStatus};
use crate::engine::{Action, Event};
use crate::kafka::admin::ensure_topics;
use crate::kafka::client::unless_transient;
use crate::kafka::codec::Codec;
use crate::kafka::registry::FileRegistry;
use crate::kafka::topics::{Catalogue, Topic};
use crate::scenario::generate::Day;
pub use backlog::BacklogReport;
pub(crate) use drain::raw_consume;
pub use drain::{Samples, SUSTAINED};

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub brokers: String,
    pub partitions: i32,
    pub day: Day,
    /// Pings per second offered in the latency run (0: no latency run).
    pub latency_rate: u64,
    pub state_dir: PathBuf,
    /// Print every task's records processed, every 100 ms of the
    /// throughput run (where a stall is).
    pub timeline: bool,
    /// Pings of the backlog run (0: no backlog run).
    pub backlog_pings: usize,
    /// Skip the throughput and restore runs.
    pub only_backlog: bool,
}

#[derive(Debug, Clone, Default)]
pub struct BenchReport {
    pub pings: usize,
    pub vehicles: usize,
    pub appointments: usize,
    /// Sustained rates: over the middle of each drain (see [`Samples`]).
    pub raw_pings_per_s: f64,
    pub processor_pings_per_s: f64,
    /// Over each whole drain, first record to last (ramp-up and tail in).
    pub raw_overall_pings_per_s: f64,
    pub processor_overall_pings_per_s: f64,
    /// CPU time of this process (every thread, not the broker's) per ping,
    /// in µs: a steadier comparison than rates on a shared machine.
    pub raw_cpu_us_per_ping: Option<f64>,
    pub processor_cpu_us_per_ping: Option<f64>,
    /// Peak of this process's RSS during the processor's drain (MiB).
    pub processor_peak_rss_mib: f64,
    /// The restore run: rows restored, over the slowest task's time, and
    /// the time until every task was ready.
    pub restore_rows: u64,
    pub restore_rows_per_s: f64,
    pub restore_ready_s: f64,
    pub backlog: Option<BacklogReport>,
    pub latency_samples: usize,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_rate: u64,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "day                        {} vehicles, {} appointments, {} pings",
            self.vehicles, self.appointments, self.pings
        )?;
        let pct = |x: f64, of: f64| 100.0 * x / of.max(1.0);
        if self.raw_pings_per_s > 0.0 {
            writeln!(
                f,
                "raw consume (same topic)   {:.0} pings/s sustained ({:.0}–{:.0}% of the drain), {:.0} overall",
                self.raw_pings_per_s,
                100.0 * SUSTAINED.0,
                100.0 * SUSTAINED.1,
                self.raw_overall_pings_per_s
            )?;
            writeln!(
                f,
                "processor                  {:.0} pings/s sustained ({:.0}% of raw), {:.0} overall ({:.0}%), peak RSS {:.0} MiB",
                self.processor_pings_per_s,
                pct(self.processor_pings_per_s, self.raw_pings_per_s),
                self.processor_overall_pings_per_s,
                pct(self.processor_overall_pings_per_s, self.raw_overall_pings_per_s),
                self.processor_peak_rss_mib
            )?;
        }
        if let (Some(raw), Some(proc)) = (self.raw_cpu_us_per_ping, self.processor_cpu_us_per_ping) {
            writeln!(
                f,
                "CPU per ping (this process) raw {raw:.2} µs, processor {proc:.2} µs: overhead {:.2} µs",
                proc - raw
            )?;
        }
        if self.restore_rows > 0 {
            writeln!(
                f,
                "restore                    {} rows at {:.0} rows/s (slowest task), every task ready in {:.2} s",
                self.restore_rows, self.restore_rows_per_s, self.restore_ready_s
            )?;
        }
        if let Some(b) = &self.backlog {
            writeln!(f, "{b}")?;
        }
        if self.latency_samples > 0 {
            write!(
                f,
                "ping produce → command     p50 {:.1} ms, p99 {:.1} ms ({} clock commands at {} pings/s offered)",
                self.latency_p50_ms, self.latency_p99_ms, self.latency_samples, self.latency_rate
            )?;
        }
        Ok(())
    }
}

fn e(what: &str, err: impl std::fmt::Display) -> ProcessorError {
    ProcessorError::Codec(format!("bench {what}: {err}"))
}

/// User + system CPU seconds of a process so far (Linux `/proc`, whose
/// clock ticks are always 1/100 s); `None` elsewhere.
fn cpu_seconds_of(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

pub fn cpu_seconds() -> Option<f64> {
    cpu_seconds_of("self")
}

/// Resident memory of a process, in MiB (`/proc/PID/status`).
fn rss_mib(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn per_ping_us(from: Option<f64>, to: Option<f64>, pings: usize) -> Option<f64> {
    Some((to? - from?) * 1e6 / pings.max(1) as f64)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

const T: Duration = Duration::from_secs(60);

/// The ping spacing of the latency run's day.
const LATENCY_PING_EVERY_S: i64 = 120;

pub fn run(opts: &BenchOptions) -> Result<BenchReport, ProcessorError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|x| e("runtime", x))?;
    let mut report = BenchReport {
        latency_rate: opts.latency_rate,
        vehicles: opts.day.techs,
        appointments: opts.day.techs * opts.day.appointments_per_tech,
        ..BenchReport::default()
    };
    if !opts.only_backlog {
        throughput_and_restore(opts, &runtime, &mut report)?;
    }
    if opts.backlog_pings > 0 {
        report.backlog = Some(backlog::run(opts, &runtime)?);
    }
    if opts.latency_rate > 0 {
        latency(opts, &runtime, &mut report)?;
    }
    Ok(report)
}

fn throughput_and_restore(
    opts: &BenchOptions,
    runtime: &tokio::runtime::Runtime,
    report: &mut BenchReport,
) -> Result<(), ProcessorError> {
    let mut events = opts.day.stream();
    let pings = opts.day.ping_count();
    report.pings = pings;
    // The entities first, and a processor caught up with them and stopped,
    // as in production (where they are mirrored long before the day's
    // pings).
    let split = opts.day.entity_count();
    let catalogue = fresh(runtime, opts, "tput")?;
    let codec = Codec::new(Arc::new(FileRegistry::in_memory()), &catalogue).map_err(|x| e("codec", x))?;
    let dir = opts.state_dir.join("tput");
    let _ = std::fs::remove_dir_all(&dir);
    tracing::info!(entities = split, "bench: producing the entities");
    produce(runtime, &opts.brokers, &catalogue, &codec, events.by_ref().take(split), None)?;
    let proc = Processor::start(config(opts, &catalogue, dir.clone()))?;
    wait_settled(&proc, opts.partitions)?;
    proc.stop()?;
    // Then the pings, drained by a bare consumer, then by the processor.
    tracing::info!(pings, "bench: entities settled; producing the pings");
    produce(runtime, &opts.brokers, &catalogue, &codec, events, None)?;
    let queue = Config::new(&opts.brokers, catalogue.clone(), dir.clone(), Arc::new(FileRegistry::in_memory()))
        .limits
        .fetch_queue_kbytes;
    let cpu_before = cpu_seconds();
    let (drained, span, samples) =
        drain::raw_consume(&opts.brokers, &catalogue.name(Topic::Pings), opts.partitions, queue)?;
    report.raw_overall_pings_per_s = drained as f64 / span.as_secs_f64().max(1e-9);
    report.raw_pings_per_s = samples.sustained(drained);
    report.raw_cpu_us_per_ping = per_ping_us(cpu_before, cpu_seconds(), drained as usize);
    tracing::info!(
        pings = drained,
        rate = report.raw_pings_per_s as u64,
        "bench: raw drain done; restarting the processor"
    );
    let proc = Processor::start(config(opts, &catalogue, dir.clone()))?;
    let (taken, elapsed, samples, cpu, peak) = processor_drain(&proc, opts)?;
    report.processor_overall_pings_per_s = taken as f64 / elapsed.as_secs_f64().max(1e-9);
    report.processor_pings_per_s = samples.sustained(taken);
    report.processor_cpu_us_per_ping = cpu.map(|c| c * 1e6 / taken.max(1) as f64);
    report.processor_peak_rss_mib = peak;
    let m = proc.metrics();
    eprintln!(
        "throughput run: {taken} of {pings} pings taken after every task was ready, {:.2} s, {} batches, {:.2} s committing (summed over tasks)",
        elapsed.as_secs_f64(),
        m.batches.get(),
        m.commit_seconds.sum_seconds()
    );
    proc.stop()?;

    // 2. Restore: the same state, local copy gone.
    let _ = std::fs::remove_dir_all(&dir);
    let started = Instant::now();
    let proc = Processor::start(config(opts, &catalogue, dir.clone()))?;
    let deadline = Instant::now() + Duration::from_secs(1800);
    let st = loop {
        let st = proc.status();
        if every_task(&st, opts.partitions, |s| s.ready) {
            break st;
        }
        if Instant::now() > deadline {
            return Err(e("restore", "tasks not ready within 30 min"));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    report.restore_ready_s = started.elapsed().as_secs_f64();
    report.restore_rows = st.iter().map(|s| s.restored).sum();
    let slowest = st.iter().map(|s| s.restore_ms).max().unwrap_or(0);
    report.restore_rows_per_s = report.restore_rows as f64 / (slowest as f64 / 1e3).max(1e-3);
    for s in &st {
        eprintln!(
            "restore: task {} {} rows in {} ms ({:.0} rows/s)",
            s.stage.task(s.partition),
            s.restored,
            s.restore_ms,
            s.restored as f64 / (s.restore_ms as f64 / 1e3).max(1e-3)
        );
    }
    proc.stop()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Runs the restarted processor until every task is idle; returns the
/// vehicle stage's records in its window, the window, its samples, the CPU
/// seconds of this process over it and the peak RSS.
fn processor_drain(
    proc: &Processor,
    opts: &BenchOptions,
) -> Result<(u64, Duration, Samples, Option<f64>, f64), ProcessorError> {
    let mut first: Option<Instant> = None;
    let mut cpu_first = None;
    let started = Instant::now();
    let mut samples = Samples::default();
    // The vehicle stage's records when every task was ready, gates open.
    let mut ready_at: Option<u64> = None;
    let vehicle_records =
        |st: &[TaskStatus]| -> u64 { st.iter().filter(|s| s.stage == Stage::Vehicles).map(|s| s.processed).sum() };
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut last_line = Instant::now();
    let mut peak: f64 = 0.0;
    let mut last_rss = Instant::now();
    loop {
        let st = proc.status();
        if opts.timeline && last_line.elapsed() >= Duration::from_millis(100) {
            eprintln!("timeline {:>6} ms  {}", first.map_or(0, |f| f.elapsed().as_millis()), timeline(&st));
            last_line = Instant::now();
        }
        if last_rss.elapsed() >= Duration::from_millis(50) {
            peak = peak.max(rss_mib("self").unwrap_or(0.0));
            last_rss = Instant::now();
        }
        if ready_at.is_none() && every_task(&st, opts.partitions, |s| s.ready && s.gate_open) {
            ready_at = Some(vehicle_records(&st));
        }
        if let Some(before) = ready_at {
            if first.is_none() && vehicle_records(&st) > before {
                first = Some(Instant::now());
                cpu_first = cpu_seconds();
            }
            samples.push(started.elapsed(), vehicle_records(&st) - before);
        }
        // The appointment stage may have nothing new to take.
        let done = |s: &TaskStatus| s.idle && (s.processed > 0 || s.stage == Stage::Appointments);
        if first.is_some() && every_task(&st, opts.partitions, done) {
            let taken = vehicle_records(&st) - ready_at.unwrap_or(0);
            let elapsed = first.map_or(Duration::ZERO, |f| f.elapsed());
            let cpu = cpu_seconds().zip(cpu_first).map(|(b, a)| b - a);
            return Ok((taken, elapsed, samples, cpu, peak));
        }
        if Instant::now() > deadline {
            return Err(e("throughput", "processor not idle within 30 min"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn latency(
    opts: &BenchOptions,
    runtime: &tokio::runtime::Runtime,
    report: &mut BenchReport,
) -> Result<(), ProcessorError> {
    // Over the day at its usual density (a ping per vehicle every 2 min at
    // most): a denser day only lengthens the run.
    let day = Day { ping_every_s: opts.day.ping_every_s.max(LATENCY_PING_EVERY_S), ..opts.day.clone() };
    let (mut events, split) = (day.stream(), day.entity_count());
    let catalogue = fresh(runtime, opts, "lat")?;
    let codec = Codec::new(Arc::new(FileRegistry::in_memory()), &catalogue).map_err(|x| e("codec", x))?;
    let dir = opts.state_dir.join("lat");
    let _ = std::fs::remove_dir_all(&dir);
    let proc = Processor::start(config(opts, &catalogue, dir.clone()))?;
    while proc.status().len() < 2 * opts.partitions as usize {
        std::thread::sleep(Duration::from_millis(20));
    }
    let reader = {
        let (brokers, catalogue) = (opts.brokers.clone(), catalogue.clone());
        std::thread::spawn(move || command_latencies(&brokers, &catalogue, Duration::from_secs(20)))
    };
    // Entities first, and the processor caught up with them, as in
    // production (where they are mirrored long before the day's pings).
    produce(runtime, &opts.brokers, &catalogue, &codec, events.by_ref().take(split), None)?;
    wait_settled(&proc, opts.partitions)?;
    produce(runtime, &opts.brokers, &catalogue, &codec, events, Some(opts.latency_rate))?;
    let mut lat = reader.join().map_err(|_| e("latency", "reader panicked"))??;
    proc.stop()?;
    let _ = std::fs::remove_dir_all(&dir);
    lat.sort_by(f64::total_cmp);
    report.latency_samples = lat.len();
    let pct = |q: f64| lat.get(((lat.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN);
    report.latency_p50_ms = pct(0.50);
    report.latency_p99_ms = pct(0.99);
    Ok(())
}

/// Every task of both stages is up and passes `test`.
fn every_task(tasks: &[TaskStatus], partitions: i32, test: impl Fn(&TaskStatus) -> bool) -> bool {
    tasks.len() == 2 * partitions as usize && tasks.iter().all(test)
}

/// Waits until every task of both stages has taken records and all have
/// been idle for half a second (the appointment stage's routes applied).
pub(crate) fn wait_settled(proc: &Processor, partitions: i32) -> Result<(), ProcessorError> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    let mut since: Option<Instant> = None;
    while since.is_none_or(|s| s.elapsed() < Duration::from_millis(500)) {
        let st = proc.status();
        let settled = every_task(&st, partitions, |s| s.idle && s.processed > 0);
        since = if settled { since.or(Some(Instant::now())) } else { None };
        if Instant::now() > deadline {
            return Err(e("entities", "processor not idle within an hour"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Records processed per task (`a` marks the appointment stage, `*` an
/// idle task, `!` a vehicle task whose gate is shut, `p` one with paused
/// inputs): `a0:34616* 0:200000 …`.
fn timeline(tasks: &[TaskStatus]) -> String {
    let mut line = String::new();
    for s in tasks {
        let stage = if s.stage == Stage::Appointments { "a" } else { "" };
        let idle = if s.idle { "*" } else { "" };
        let shut = if s.gate_open { "" } else { "!" };
        let paused = if s.paused_inputs > 0 { "p" } else { "" };
        line.push_str(&format!("{stage}{}:{}{idle}{shut}{paused} ", s.partition, s.processed));
    }
    line
}

pub(crate) fn config(opts: &BenchOptions, catalogue: &Catalogue, dir: PathBuf) -> Config {
    let mut c = Config::new(&opts.brokers, catalogue.clone(), dir, Arc::new(FileRegistry::in_memory()));
    c.group_id = format!("{}-group", catalogue.prefix);
    c
}

pub(crate) fn fresh(
    runtime: &tokio::runtime::Runtime,
    opts: &BenchOptions,
    what: &str,
) -> Result<Catalogue, ProcessorError> {
    let catalogue = Catalogue {
        prefix: format!("bench-{what}-{}-{}", std::process::id(), now_ms()),
        partitions: opts.partitions,
        replication: 1,
    };
    runtime.block_on(ensure_topics(&opts.brokers, &catalogue, T)).map_err(|x| e("topics", x))?;
    Ok(catalogue)
}

/// Produces the events in order, each stamped with its produce time; at
/// `rate` pings per second when given (entities go first, unpaced). Events
/// are encoded as they are sent (a generated day is never held whole).
pub(crate) fn produce(
    runtime: &tokio::runtime::Runtime,
    brokers: &str,
    catalogue: &Catalogue,
    codec: &Codec,
    events: impl IntoIterator<Item = Event>,
    rate: Option<u64>,
) -> Result<(), ProcessorError> {
    let producer: FutureProducer = crate::kafka::client::base(brokers)
        .set("enable.idempotence", "true")
        .set("max.in.flight.requests.per.connection", "1")
        .set("linger.ms", "1")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .map_err(|x| e("producer", x))?;
    let started = Instant::now();
    let mut sent_pings = 0u64;
    runtime.block_on(async {
        let mut pending = Vec::new();
        for ev in events {
            let is_ping = matches!(ev, Event::Ping(_));
            let r = codec.encode_event("bench", &ev).map_err(|x| e("encode", x))?;
            if let (Some(rate), true) = (rate, is_ping) {
                sent_pings += 1;
                let due = Duration::from_secs_f64(sent_pings as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    if wait > Duration::from_millis(2) {
                        tokio::time::sleep(wait).await;
                    }
                }
            }
            let topic = catalogue.name(r.topic);
            let mut record = FutureRecord::<Vec<u8>, Vec<u8>>::to(&topic).key(&r.key).timestamp(now_ms());
            if let Some(v) = &r.value {
                record = record.payload(v);
            }
            match producer.send_result(record) {
                Ok(d) => pending.push(d),
                Err((err, _)) => return Err(e("produce", err)),
            }
            if pending.len() >= 50_000 {
                for d in pending.drain(..) {
                    d.await.map_err(|x| e("produce", x))?.map_err(|(x, _)| e("produce", x))?;
                }
            }
        }
        for d in pending {
            d.await.map_err(|x| e("produce", x))?.map_err(|(x, _)| e("produce", x))?;
        }
        Ok(())
    })
}

/// Reads clock commands as they appear until `quiet` passes without one;
/// returns `visible − input record time` in milliseconds for each.
fn command_latencies(brokers: &str, catalogue: &Catalogue, quiet: Duration) -> Result<Vec<f64>, ProcessorError> {
    let codec = Codec::new(Arc::new(FileRegistry::in_memory()), catalogue).map_err(|x| e("codec", x))?;
    let (topic, partitions) = (&catalogue.name(Topic::Commands), catalogue.partitions);
    let c: BaseConsumer = crate::kafka::client::base(brokers)
        .set("group.id", "bench-latency")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()
        .map_err(|x| e("consumer", x))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).map_err(|x| e("assign", x))?;
    }
    c.assign(&tpl).map_err(|x| e("assign", x))?;
    let mut out = Vec::new();
    let mut seen: BTreeMap<Vec<u8>, ()> = BTreeMap::new();
    let mut last = Instant::now();
    let mut started = false;
    while !started || last.elapsed() < quiet {
        let Some(m) = c.poll(Duration::from_millis(100)) else {
            if !started && last.elapsed() > Duration::from_secs(600) {
                break;
            }
            continue;
        };
        let Some(m) = unless_transient(m, "bench latency reader").map_err(|x| e("consume", x))? else { continue };
        started = true;
        last = Instant::now();
        let visible = now_ms();
        // Clock changes are caused by pings; each command record carries
        // its input's record time (the ping's produce time).
        let Some(value) = m.payload() else { continue };
        let Ok(c) = codec.decode_command(value) else { continue };
        if let (Some(ts), Action::Clock(_)) = (m.timestamp().to_millis(), &c.command.action) {
            if seen.insert(c.command.id.into_bytes(), ()).is_none() {
                out.push((visible - ts) as f64);
            }
        }
    }
    Ok(out)
}
