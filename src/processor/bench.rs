//! `geoclock bench processor`: sustained pings/s through the processor on a
//! real broker, beside the raw consume-only rate of the same topic measured
//! in the same run, and the latency from ping produce to command visible.
//!
//! 1. Throughput: a generated day's entities
//!    ([`crate::scenario::generate::Day`]) are put on fresh topics and a
//!    processor runs until both stages are idle with them, then stops (as in
//!    production, where entities are mirrored long before the day's pings).
//!    Then the day's pings are produced; every pings partition is drained by
//!    a bare consumer (one thread per partition, the processor's consumer
//!    settings, no decoding: the raw rate); then the processor starts again
//!    on its state and runs until idle. Its rate: the records the vehicle
//!    stage takes (the pings, and a few progress records) from its first one
//!    after every task is ready (restored, local state loaded, consuming)
//!    and every vehicle task's gate is open (stage one has said it is caught
//!    up since the restart), to every task idle with its last batch
//!    committed, over that time. Restore, group join and the wait for the
//!    appointment stage's first caught-up claim are excluded, as connecting
//!    is from the raw rate.
//!
//!    Both drains are sampled as they run (records so far, every 1–2 ms).
//!    The rate reported as sustained is over the middle of each drain,
//!    from [`SUSTAINED`]`.0` to [`SUSTAINED`]`.1` of its records, so the
//!    first fetches' ramp-up and the last partition's tail, which weigh on
//!    a drain of a second or two, count against neither; the overall rate,
//!    first record to last, is printed beside it.
//! 2. Latency: on other fresh topics, a processor runs while the day's
//!    entities and then its pings are produced at a steady rate, each record
//!    stamped with its produce time. Commands carry their input's record
//!    time, so a reader of the commands topic sees, for each clock change a
//!    ping caused, `visible − produced`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::{Config, Processor, ProcessorError, Stage};
use crate::engine::{Action, Event};
use crate::kafka::admin::ensure_topics;
use crate::kafka::client::{consumer_config, unless_transient};
use crate::kafka::codec::Codec;
use crate::kafka::registry::FileRegistry;
use crate::kafka::topics::{Catalogue, Topic};
use crate::scenario::generate::Day;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub brokers: String,
    pub partitions: i32,
    pub day: Day,
    /// Pings per second offered in the latency run.
    pub latency_rate: u64,
    pub state_dir: PathBuf,
    /// Print every task's records processed, every 100 ms of the
    /// throughput run (where a stall is).
    pub timeline: bool,
}

#[derive(Debug, Clone, Default)]
pub struct BenchReport {
    pub pings: usize,
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
    pub latency_samples: usize,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_rate: u64,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "pings                      {}", self.pings)?;
        let pct = |x: f64, of: f64| 100.0 * x / of.max(1.0);
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
            "processor                  {:.0} pings/s sustained ({:.0}% of raw), {:.0} overall ({:.0}%)",
            self.processor_pings_per_s,
            pct(self.processor_pings_per_s, self.raw_pings_per_s),
            self.processor_overall_pings_per_s,
            pct(self.processor_overall_pings_per_s, self.raw_overall_pings_per_s)
        )?;
        if let (Some(raw), Some(proc)) = (self.raw_cpu_us_per_ping, self.processor_cpu_us_per_ping) {
            writeln!(f, "CPU per ping (this process) raw {raw:.2} µs, processor {proc:.2} µs")?;
        }
        write!(
            f,
            "ping produce → command     p50 {:.1} ms, p99 {:.1} ms ({} clock commands at {} pings/s offered)",
            self.latency_p50_ms, self.latency_p99_ms, self.latency_samples, self.latency_rate
        )
    }
}

/// The part of a drain a sustained rate is taken over: from this fraction
/// of its records to that one (ramp-up and tail left out of both drains
/// alike).
pub const SUSTAINED: (f64, f64) = (0.1, 0.9);

/// A drain's progress sampled as it runs: (seconds since a fixed start,
/// records taken so far), in time order, counts never decreasing.
#[derive(Debug, Default)]
pub struct Samples(Vec<(f64, u64)>);

impl Samples {
    pub fn push(&mut self, at: Duration, records: u64) {
        self.0.push((at.as_secs_f64(), records));
    }

    /// When the count reached `n`, interpolated between the samples around
    /// it; `None` if it never did.
    fn time_of(&self, n: f64) -> Option<f64> {
        let i = self.0.iter().position(|&(_, c)| c as f64 >= n)?;
        let (t1, c1) = self.0[i];
        let Some(&(t0, c0)) = i.checked_sub(1).map(|j| &self.0[j]) else { return Some(t1) };
        Some(t0 + (t1 - t0) * (n - c0 as f64) / (c1 - c0) as f64)
    }

    /// Records per second between [`SUSTAINED`]'s fractions of `total`
    /// (0 when the samples cannot tell).
    pub fn sustained(&self, total: u64) -> f64 {
        let (a, b) = (total as f64 * SUSTAINED.0, total as f64 * SUSTAINED.1);
        match (self.time_of(a), self.time_of(b)) {
            (Some(ta), Some(tb)) if tb > ta => (b - a) / (tb - ta),
            _ => 0.0,
        }
    }
}

fn e(what: &str, err: impl std::fmt::Display) -> ProcessorError {
    ProcessorError::Codec(format!("bench {what}: {err}"))
}

/// User + system CPU seconds of this process so far (Linux `/proc`, whose
/// clock ticks are always 1/100 s); `None` elsewhere.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn per_ping_us(from: Option<f64>, to: Option<f64>, pings: usize) -> Option<f64> {
    Some((to? - from?) * 1e6 / pings.max(1) as f64)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

const T: Duration = Duration::from_secs(60);

/// How many events come before the day's first ping (its entities).
pub(crate) fn entity_count(events: &[Event]) -> usize {
    events.iter().position(|x| matches!(x, Event::Ping(_))).unwrap_or(events.len())
}

/// The ping spacing of the latency run's day.
const LATENCY_PING_EVERY_S: i64 = 120;

pub fn run(opts: &BenchOptions) -> Result<BenchReport, ProcessorError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|x| e("runtime", x))?;
    let events = opts.day.events();
    let pings = events.iter().filter(|x| matches!(x, Event::Ping(_))).count();
    let mut report = BenchReport { pings, latency_rate: opts.latency_rate, ..BenchReport::default() };

    // 1. Throughput. The entities first, and a processor caught up with
    // them and stopped, as in production (where they are mirrored long
    // before the day's pings).
    let split = entity_count(&events);
    let catalogue = fresh(&runtime, opts, "tput")?;
    let codec = Codec::new(Arc::new(FileRegistry::in_memory()), &catalogue).map_err(|x| e("codec", x))?;
    let dir = opts.state_dir.join("tput");
    let _ = std::fs::remove_dir_all(&dir);
    produce(&runtime, &opts.brokers, &catalogue, &codec, &events[..split], None)?;
    let proc = Processor::start(config(opts, &catalogue, dir.clone()), runtime.handle().clone())?;
    wait_settled(&proc, opts.partitions)?;
    proc.stop()?;
    // Then the pings, drained by a bare consumer, then by the processor.
    tracing::info!(pings, "bench: entities settled; producing the pings");
    produce(&runtime, &opts.brokers, &catalogue, &codec, &events[split..], None)?;
    let cpu_before = cpu_seconds();
    let (drained, span, samples) = raw_consume(&opts.brokers, &catalogue.name(Topic::Pings), opts.partitions)?;
    report.raw_overall_pings_per_s = drained as f64 / span.as_secs_f64().max(1e-9);
    report.raw_pings_per_s = samples.sustained(drained);
    tracing::info!(
        pings = drained,
        rate = report.raw_pings_per_s as u64,
        "bench: raw drain done; restarting the processor"
    );
    report.raw_cpu_us_per_ping = per_ping_us(cpu_before, cpu_seconds(), drained as usize);
    let proc = Processor::start(config(opts, &catalogue, dir.clone()), runtime.handle().clone())?;
    // The records the vehicle stage takes (the pings, and a few progress
    // records) from its first one after every task is ready and every
    // vehicle task's gate is open (restore, loading local state, group join
    // and the appointment stage's first caught-up claim are excluded, as
    // connecting is from the raw rate) to all idle, which includes
    // committing the last batch.
    let mut first: Option<Instant> = None;
    let mut cpu_first = None;
    let started = Instant::now();
    let mut samples = Samples::default();
    // The vehicle stage's records when every task was ready, gates open.
    let mut ready_at: Option<u64> = None;
    let vehicle_records = |st: &[super::TaskStatus]| -> u64 {
        st.iter().filter(|s| s.stage == Stage::Vehicles).map(|s| s.processed).sum()
    };
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut last_line = Instant::now();
    let taken;
    loop {
        let st = proc.status();
        if opts.timeline && last_line.elapsed() >= Duration::from_millis(100) {
            eprintln!("timeline {:>6} ms  {}", first.map_or(0, |f| f.elapsed().as_millis()), timeline(&st));
            last_line = Instant::now();
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
        let done = |s: &super::TaskStatus| s.idle && (s.processed > 0 || s.stage == Stage::Appointments);
        if first.is_some() && every_task(&st, opts.partitions, done) {
            taken = vehicle_records(&st) - ready_at.unwrap_or(0);
            break;
        }
        if Instant::now() > deadline {
            return Err(e("throughput", "processor not idle within 30 min"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = first.map_or(Duration::ZERO, |f| f.elapsed());
    report.processor_overall_pings_per_s = taken as f64 / elapsed.as_secs_f64().max(1e-9);
    report.processor_pings_per_s = samples.sustained(taken);
    report.processor_cpu_us_per_ping = per_ping_us(cpu_first, cpu_seconds(), taken as usize);
    let m = proc.metrics();
    eprintln!(
        "throughput run: {taken} of {pings} pings taken after every task was ready, {:.2} s, {} batches, {:.2} s committing (summed over tasks)",
        elapsed.as_secs_f64(),
        m.batches.get(),
        m.commit_seconds.sum_seconds()
    );
    proc.stop()?;
    let _ = std::fs::remove_dir_all(&dir);

    // 2. Latency, over the day at its usual density (a ping per vehicle
    // every 2 min at most): a denser day only lengthens the run.
    drop(events);
    let events = Day { ping_every_s: opts.day.ping_every_s.max(LATENCY_PING_EVERY_S), ..opts.day.clone() }.events();
    let split = entity_count(&events);
    let catalogue = fresh(&runtime, opts, "lat")?;
    let codec = Codec::new(Arc::new(FileRegistry::in_memory()), &catalogue).map_err(|x| e("codec", x))?;
    let dir = opts.state_dir.join("lat");
    let _ = std::fs::remove_dir_all(&dir);
    let proc = Processor::start(config(opts, &catalogue, dir.clone()), runtime.handle().clone())?;
    while proc.status().len() < 2 * opts.partitions as usize {
        std::thread::sleep(Duration::from_millis(20));
    }
    let reader = {
        let (brokers, catalogue) = (opts.brokers.clone(), catalogue.clone());
        std::thread::spawn(move || command_latencies(&brokers, &catalogue, Duration::from_secs(20)))
    };
    // Entities first, and the processor caught up with them, as in
    // production (where they are mirrored long before the day's pings).
    produce(&runtime, &opts.brokers, &catalogue, &codec, &events[..split], None)?;
    wait_settled(&proc, opts.partitions)?;
    produce(&runtime, &opts.brokers, &catalogue, &codec, &events[split..], Some(opts.latency_rate))?;
    let mut lat = reader.join().map_err(|_| e("latency", "reader panicked"))??;
    proc.stop()?;
    let _ = std::fs::remove_dir_all(&dir);
    lat.sort_by(f64::total_cmp);
    report.latency_samples = lat.len();
    let pct = |q: f64| lat.get(((lat.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN);
    report.latency_p50_ms = pct(0.50);
    report.latency_p99_ms = pct(0.99);
    Ok(report)
}

/// Every task of both stages is up and passes `test`.
fn every_task(tasks: &[super::TaskStatus], partitions: i32, test: impl Fn(&super::TaskStatus) -> bool) -> bool {
    tasks.len() == 2 * partitions as usize && tasks.iter().all(test)
}

/// Waits until every task of both stages has taken records and all have
/// been idle for half a second (the appointment stage's routes applied).
pub(crate) fn wait_settled(proc: &Processor, partitions: i32) -> Result<(), ProcessorError> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut since: Option<Instant> = None;
    while since.is_none_or(|s| s.elapsed() < Duration::from_millis(500)) {
        let st = proc.status();
        let settled = every_task(&st, partitions, |s| s.idle && s.processed > 0);
        since = if settled { since.or(Some(Instant::now())) } else { None };
        if Instant::now() > deadline {
            return Err(e("entities", "processor not idle within 10 min"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Records processed per task (`a` marks the appointment stage, `*` an
/// idle task, `!` a vehicle task whose gate is shut): `a0:34616* 0:200000 …`.
fn timeline(tasks: &[super::TaskStatus]) -> String {
    let mut line = String::new();
    for s in tasks {
        let stage = if s.stage == Stage::Appointments { "a" } else { "" };
        let idle = if s.idle { "*" } else { "" };
        let shut = if s.gate_open { "" } else { "!" };
        line.push_str(&format!("{stage}{}:{}{idle}{shut} ", s.partition, s.processed));
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
/// `rate` pings per second when given (entities go first, unpaced).
pub(crate) fn produce(
    runtime: &tokio::runtime::Runtime,
    brokers: &str,
    catalogue: &Catalogue,
    codec: &Codec,
    events: &[Event],
    rate: Option<u64>,
) -> Result<(), ProcessorError> {
    let producer: FutureProducer = crate::kafka::client::base(brokers)
        .set("enable.idempotence", "true")
        .set("max.in.flight.requests.per.connection", "1")
        .set("linger.ms", "1")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .map_err(|x| e("producer", x))?;
    let mut encoded = Vec::with_capacity(events.len());
    for ev in events {
        let r = codec.encode_event("bench", ev).map_err(|x| e("encode", x))?;
        encoded.push((catalogue.name(r.topic), r.key, r.value, matches!(ev, Event::Ping(_))));
    }
    let started = Instant::now();
    let mut sent_pings = 0u64;
    runtime.block_on(async {
        let mut pending = Vec::new();
        for (topic, key, value, is_ping) in &encoded {
            if let (Some(rate), true) = (rate, *is_ping) {
                sent_pings += 1;
                let due = Duration::from_secs_f64(sent_pings as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    if wait > Duration::from_millis(2) {
                        tokio::time::sleep(wait).await;
                    }
                }
            }
            let mut r = FutureRecord::<Vec<u8>, Vec<u8>>::to(topic).key(key).timestamp(now_ms());
            if let Some(v) = value {
                r = r.payload(v);
            }
            match producer.send_result(r) {
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

/// A thread's count of records read, alone on its cache line (written on
/// every record, read by the sampler).
#[repr(align(64))]
#[derive(Default)]
struct Counter(AtomicU64);

/// Drains every partition of `topic` with one bare consumer per partition;
/// returns the records read, the time from the first record to the last
/// (connection set-up excluded, as the processor's group join is), and the
/// drain's progress sampled every millisecond.
pub(crate) fn raw_consume(
    brokers: &str,
    topic: &str,
    partitions: i32,
) -> Result<(u64, Duration, Samples), ProcessorError> {
    let first: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let counters: Vec<Arc<Counter>> = (0..partitions).map(|_| Arc::default()).collect();
    let handles: Vec<_> = (0..partitions)
        .map(|p| {
            let (brokers, topic, first) = (brokers.to_string(), topic.to_string(), first.clone());
            let counter = counters[p as usize].clone();
            std::thread::spawn(move || -> Result<u64, ProcessorError> {
                // The processor's consumer settings: the same fetching.
                let c: BaseConsumer = consumer_config(&brokers, "bench-raw")
                    .set("fetch.wait.max.ms", "50")
                    .create()
                    .map_err(|x| e("consumer", x))?;
                let (low, high) = c.fetch_watermarks(&topic, p, T).map_err(|x| e("watermarks", x))?;
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(&topic, p, Offset::Offset(low)).map_err(|x| e("assign", x))?;
                c.assign(&tpl).map_err(|x| e("assign", x))?;
                let mut n = 0u64;
                let mut next = low;
                while next < high {
                    let polled = c.poll(Duration::from_secs(10)).map(|r| unless_transient(r, "bench raw reader"));
                    match polled {
                        Some(Ok(Some(m))) => {
                            if n == 0 {
                                let mut f = first.lock().unwrap_or_else(|e| e.into_inner());
                                f.get_or_insert_with(Instant::now);
                            }
                            n += 1;
                            counter.0.store(n, Ordering::Relaxed);
                            next = m.offset() + 1;
                        }
                        Some(Ok(None)) => {}
                        Some(Err(x)) => return Err(e("consume", x)),
                        None => return Err(e("consume", "stalled")),
                    }
                }
                Ok(n)
            })
        })
        .collect();
    let started = Instant::now();
    let mut samples = Samples::default();
    loop {
        let finished = handles.iter().all(|h| h.is_finished());
        samples.push(started.elapsed(), counters.iter().map(|c| c.0.load(Ordering::Relaxed)).sum());
        if finished {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut total = 0;
    for h in handles {
        total += h.join().map_err(|_| e("consume", "thread panicked"))??;
    }
    let span = first.lock().unwrap_or_else(|e| e.into_inner()).map_or(Duration::ZERO, |f| f.elapsed());
    Ok((total, span, samples))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(points: &[(f64, u64)]) -> Samples {
        let mut s = Samples::default();
        for &(t, n) in points {
            s.push(Duration::from_secs_f64(t), n);
        }
        s
    }

    #[test]
    fn a_steady_drain_sustains_its_rate() {
        // 1 000 records/s, sampled every 10 ms.
        let s = samples(&(0..=100).map(|i| (i as f64 / 100.0, i * 10)).collect::<Vec<_>>());
        assert!((s.sustained(1000) - 1000.0).abs() < 1e-6);
    }

    #[test]
    fn ramp_up_and_tail_are_left_out() {
        // A slow first 5% and last 5%, 1 000/s in between.
        let s = samples(&[(0.0, 0), (1.0, 50), (1.9, 950), (3.0, 1000)]);
        assert!((s.sustained(1000) - 1000.0).abs() < 1e-6);
    }

    #[test]
    fn counts_between_samples_are_interpolated() {
        // Batches of 500 land at 1 s and 2 s.
        let s = samples(&[(0.0, 0), (1.0, 500), (2.0, 1000)]);
        // 10% (100) at 0.2 s, 90% (900) at 1.8 s.
        assert!((s.sustained(1000) - 800.0 / 1.6).abs() < 1e-6);
    }

    #[test]
    fn a_drain_that_never_got_there_has_no_rate() {
        assert_eq!(samples(&[(0.0, 0), (1.0, 10)]).sustained(1000), 0.0);
        assert_eq!(Samples::default().sustained(1000), 0.0);
        assert_eq!(samples(&[(0.5, 1000)]).sustained(1000), 0.0);
    }
}
