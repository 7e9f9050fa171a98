//! The backlog run: memory under any backlog, measured on a real
//! `geoclock process` child (so its resident memory is the processor's
//! alone). The day's entities are processed; then the child is restarted
//! with stage one held (the fault-injection switch
//! `GEOCLOCK_FAULT=hold_stage_one:FILE`) and the pings are produced, so
//! stage two's gates stay shut and the whole backlog waits on the broker: the child's peak RSS above its idle RSS is the
//! price of the backlog. Released, it drains; its rate and CPU per ping are
//! taken from the release to idle, and every command on the topic is
//! checked against the pure engine's for the same input (ids and content).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{cpu_seconds_of, e, fresh, produce, rss_mib, BenchOptions};
use crate::engine::{Command as EngineCommand, Engine, Event};
use crate::kafka::codec::Codec;
use crate::kafka::read::read_topic;
use crate::kafka::registry::FileRegistry;
use crate::kafka::topics::Topic;
use crate::model::Settings;
use crate::processor::ProcessorError;
use crate::scenario::generate::Day;

#[derive(Debug, Clone, Default)]
pub struct BacklogReport {
    pub pings: usize,
    pub idle_rss_mib: f64,
    pub peak_rss_mib: f64,
    /// Buffered by the vehicle tasks at the peak (bytes, their metric).
    pub peak_buffered_bytes: f64,
    pub drain_pings_per_s: f64,
    pub drain_cpu_us_per_ping: f64,
    pub commands_expected: usize,
    pub commands_found: usize,
    pub missing: usize,
    pub extra: usize,
    pub differing: usize,
}

impl std::fmt::Display for BacklogReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "backlog (stage one held)   {} pings: RSS idle {:.0} MiB, peak {:.0} MiB (+{:.0} MiB; merges held {:.1} MiB)",
            self.pings,
            self.idle_rss_mib,
            self.peak_rss_mib,
            self.peak_rss_mib - self.idle_rss_mib,
            self.peak_buffered_bytes / (1 << 20) as f64
        )?;
        write!(
            f,
            "backlog released           drained at {:.0} pings/s, {:.2} µs CPU per ping (the child); commands {} of {} expected, {} missing, {} extra, {} differing",
            self.drain_pings_per_s,
            self.drain_cpu_us_per_ping,
            self.commands_found,
            self.commands_expected,
            self.missing,
            self.extra,
            self.differing
        )
    }
}

/// The child process, killed when dropped.
struct Child_ {
    child: Child,
    metrics: u16,
}

impl Drop for Child_ {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Child_ {
    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn metric(&self, name: &str) -> f64 {
        scrape(self.metrics, name)
    }
}

/// A metric of the `/metrics` endpoint on `port`, summed over its labels.
fn scrape(port: u16, name: &str) -> f64 {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return 0.0 };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(name))
        .filter(|l| l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn run(opts: &BenchOptions, runtime: &tokio::runtime::Runtime) -> Result<BacklogReport, ProcessorError> {
    // A day with about `backlog_pings` pings: 12 h of pings per vehicle.
    let per_vehicle = (opts.backlog_pings / opts.day.techs.max(1)).max(1) as i64;
    let day = Day { ping_every_s: (12 * 3600 / per_vehicle).max(1), ..opts.day.clone() };
    let (mut events, split, pings) = (day.stream(), day.entity_count(), day.ping_count());
    tracing::info!(pings, "bench backlog: the pure engine's commands");
    let expected = pure_commands(day.stream())?;
    let catalogue = fresh(runtime, opts, "backlog")?;
    let codec = Codec::new(Arc::new(FileRegistry::in_memory()), &catalogue).map_err(|x| e("codec", x))?;
    let dir = opts.state_dir.join("backlog");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|x| e("state dir", x))?;
    let hold = dir.join("hold-stage-one");
    let metrics =
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|x| e("port", x))?.port();
    let exe = std::env::current_exe().map_err(|x| e("exe", x))?;
    let spawn = || -> Result<Child_, ProcessorError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("process.log"))
            .map_err(|x| e("log", x))?;
        let child = Command::new(&exe)
            .args(["process", "--brokers", &opts.brokers, "--prefix", &catalogue.prefix])
            .args(["--partitions", &opts.partitions.to_string(), "--group", &format!("{}-group", catalogue.prefix)])
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--metrics", &format!("127.0.0.1:{metrics}")])
            .env("GEOCLOCK_FAULT", format!("hold_stage_one:{}", hold.display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|x| e("spawn", x))?;
        Ok(Child_ { child, metrics })
    };
    let child = spawn()?;
    produce(runtime, &opts.brokers, &catalogue, &codec, events.by_ref().take(split), None)?;
    wait_idle(&child, split as f64)?;
    // Restart with stage one held: the caught-up claims stage one wrote
    // before the restart are not trusted (see `processor::gate`), and a
    // held stage one writes none, so every vehicle task's gate stays shut
    // and the pings pile up behind it. (Held while running instead, the
    // gates would stay open on the last claim and no backlog would form.)
    std::fs::write(&hold, b"held by the bench").map_err(|x| e("hold", x))?;
    drop(child);
    let child = spawn()?;
    // Ready: the tasks have restored and report their gates (shut).
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.metric("geoclock_processor_gate_shut_seconds") <= 0.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    let gate_shut_s = child.metric("geoclock_processor_gate_shut_seconds");
    tracing::info!(gate_shut_s, "bench backlog: restarted with stage one held");
    let idle = rss_mib(&child.pid()).unwrap_or(0.0);
    tracing::info!(
        pings,
        idle_rss_mib = idle as u64,
        "bench backlog: restarted with stage one held; producing the pings"
    );
    let sampler = {
        let (pid, metrics) = (child.pid(), child.metrics);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let (mut peak, mut buffered) = (0f64, 0f64);
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                peak = peak.max(rss_mib(&pid).unwrap_or(0.0));
                buffered = buffered.max(scrape(metrics, "geoclock_processor_buffered_bytes"));
                std::thread::sleep(Duration::from_millis(100));
            }
            (peak, buffered)
        });
        (stop, handle)
    };
    produce(runtime, &opts.brokers, &catalogue, &codec, events, None)?;
    // The vehicle tasks take what their bound allows, then pause.
    std::thread::sleep(Duration::from_secs(5));
    sampler.0.store(true, std::sync::atomic::Ordering::SeqCst);
    let (peak, buffered) = sampler.1.join().map_err(|_| e("sampler", "panicked"))?;

    tracing::info!(peak_rss_mib = peak as u64, "bench backlog: releasing stage one");
    let cpu0 = cpu_seconds_of(&child.pid());
    let released = Instant::now();
    std::fs::remove_file(&hold).map_err(|x| e("release", x))?;
    wait_idle(&child, pings as f64)?;
    let drained = released.elapsed();
    let cpu = cpu_seconds_of(&child.pid()).zip(cpu0).map(|(b, a)| b - a).unwrap_or(0.0);

    let found = read_commands(&opts.brokers, &catalogue.name(Topic::Commands), &codec)?;
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
    let mut report = BacklogReport {
        pings,
        idle_rss_mib: idle,
        peak_rss_mib: peak,
        peak_buffered_bytes: buffered,
        drain_pings_per_s: pings as f64 / drained.as_secs_f64().max(1e-3),
        drain_cpu_us_per_ping: cpu * 1e6 / pings.max(1) as f64,
        commands_expected: expected.len(),
        commands_found: found.len(),
        ..BacklogReport::default()
    };
    for (id, want) in &expected {
        match found.get(id) {
            None => report.missing += 1,
            Some(got) if got.iter().any(|c| c != want) => report.differing += 1,
            Some(_) => {}
        }
    }
    report.extra = found.keys().filter(|id| !expected.contains_key(*id)).count();
    Ok(report)
}

/// Waits until the child has processed `records` input records and every
/// task's lag is zero.
fn wait_idle(child: &Child_, records: f64) -> Result<(), ProcessorError> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    let mut since: Option<Instant> = None;
    while since.is_none_or(|s| s.elapsed() < Duration::from_secs(2)) {
        let done = child.metric("geoclock_processor_records_total") >= records
            && child.metric("geoclock_processor_lag_records") == 0.0;
        since = if done { since.or(Some(Instant::now())) } else { None };
        if Instant::now() > deadline {
            return Err(e("backlog", "the processor never caught up"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn pure_commands(events: impl Iterator<Item = Event>) -> Result<BTreeMap<String, EngineCommand>, ProcessorError> {
    // The tenant the bench produces under.
    let mut engine = Engine::new("bench", Settings::default()).map_err(|x| e("engine", x))?;
    let mut out = Vec::new();
    for ev in events {
        engine.handle(&ev, &mut out).map_err(|x| e("engine", x))?;
    }
    Ok(out.into_iter().map(|c| (c.id.clone(), c)).collect())
}

/// Every command record on the topic: id → contents seen.
fn read_commands(
    brokers: &str,
    topic: &str,
    codec: &Codec,
) -> Result<BTreeMap<String, Vec<EngineCommand>>, ProcessorError> {
    let mut out: BTreeMap<String, Vec<EngineCommand>> = BTreeMap::new();
    for r in read_topic(brokers, topic, Duration::from_secs(600)).map_err(|x| e("commands", x))? {
        let Some(value) = r.value else { continue };
        let c = codec.decode_command(&value).map_err(|x| e("command", x))?;
        out.entry(c.command.id.clone()).or_default().push(c.command);
    }
    Ok(out)
}
