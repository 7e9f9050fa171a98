//! The processor's Prometheus metrics and the `/metrics` endpoint.
//!
//! Names are `geoclock_processor_<what>_<unit>`; label sets are fixed
//! (`partition` for per-task gauges, `topic` for input records: the topic's
//! catalogue suffix, `event` for rebalances, `partition` and `waits_on`
//! for a shut gate; never a tenant or an id).
//! Hand-rolled text exposition: a few atomics, no registry.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn inc(&self) {
        self.inc_by(1);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Values by one label.
#[derive(Debug, Default)]
pub struct Family(Mutex<BTreeMap<String, i64>>);

impl Family {
    pub fn add(&self, label: &str, n: i64) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()).entry(label.to_string()).or_default() += n;
    }
    pub fn set(&self, label: &str, v: i64) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(label.to_string(), v);
    }
    fn snapshot(&self) -> BTreeMap<String, i64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Seconds, in fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
    pub fn sum_seconds(&self) -> f64 {
        self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    }

    pub fn observe(&self, seconds: f64) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if seconds <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

const COMMIT_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

pub struct Metrics {
    pub records: Family,
    pub commands: Counter,
    pub dead_letters: Counter,
    pub batches: Counter,
    pub commit_seconds: Histogram,
    pub lag: Family,
    pub restore_remaining: Family,
    /// Appointments held in state (every tenant), per task: bounded by
    /// retention.
    pub state_appointments: Family,
    pub rebalances: Family,
    /// What each task's merge holds, in bytes (bounded).
    pub buffered_bytes: Family,
    /// Inputs each task has paused for backpressure.
    pub paused_inputs: Family,
    /// Per vehicle task: how long its gate has been shut (0: open) and the
    /// stage-one task it waits on.
    gate: Mutex<BTreeMap<String, (String, f64)>>,
    /// Tasks restarted after a failure.
    pub task_restarts: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            records: Family::default(),
            commands: Counter::default(),
            dead_letters: Counter::default(),
            batches: Counter::default(),
            commit_seconds: Histogram::new(COMMIT_BUCKETS),
            lag: Family::default(),
            restore_remaining: Family::default(),
            state_appointments: Family::default(),
            rebalances: Family::default(),
            buffered_bytes: Family::default(),
            paused_inputs: Family::default(),
            gate: Mutex::default(),
            task_restarts: Counter::default(),
        }
    }

    /// Vehicle task `task`'s gate: shut for `seconds` (0: open), waiting on
    /// stage-one task `waits_on` (empty when open).
    pub fn gate_shut(&self, task: &str, waits_on: &str, seconds: f64) {
        self.gate.lock().unwrap_or_else(|e| e.into_inner()).insert(task.to_string(), (waits_on.to_string(), seconds));
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let family = |o: &mut String, name: &str, kind: &str, help: &str, label: &str, f: &Family| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (l, v) in f.snapshot() {
                let _ = writeln!(o, "{name}{{{label}=\"{l}\"}} {v}");
            }
        };
        let counter = |o: &mut String, name: &str, help: &str, c: &Counter| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", c.get());
        };
        family(
            &mut o,
            "geoclock_processor_records_total",
            "counter",
            "Input records processed, by topic",
            "topic",
            &self.records,
        );
        counter(&mut o, "geoclock_processor_commands_total", "Commands produced", &self.commands);
        counter(
            &mut o,
            "geoclock_processor_dead_letters_total",
            "Records sent to the dead-letter topic",
            &self.dead_letters,
        );
        counter(&mut o, "geoclock_processor_batches_total", "Batches committed", &self.batches);
        let h = &self.commit_seconds;
        let name = "geoclock_processor_commit_seconds";
        let _ = writeln!(o, "# HELP {name} Produce-and-commit time of one batch\n# TYPE {name} histogram");
        for (b, c) in h.bounds.iter().zip(&h.counts) {
            let _ = writeln!(o, "{name}_bucket{{le=\"{b}\"}} {}", c.load(Ordering::Relaxed));
        }
        let count = h.count.load(Ordering::Relaxed);
        let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(o, "{name}_sum {}", h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(o, "{name}_count {count}");
        family(
            &mut o,
            "geoclock_processor_lag_records",
            "gauge",
            "Input records on the broker not yet processed, per task",
            "partition",
            &self.lag,
        );
        family(
            &mut o,
            "geoclock_processor_restore_remaining_records",
            "gauge",
            "Changelog records left to restore, per task",
            "partition",
            &self.restore_remaining,
        );
        family(
            &mut o,
            "geoclock_processor_state_appointments",
            "gauge",
            "Appointments held in state (all tenants, bounded by retention_days), per task",
            "partition",
            &self.state_appointments,
        );
        family(
            &mut o,
            "geoclock_processor_buffered_bytes",
            "gauge",
            "Bytes held by a task's merge (bounded: inputs pause above the bound)",
            "partition",
            &self.buffered_bytes,
        );
        family(
            &mut o,
            "geoclock_processor_paused_inputs",
            "gauge",
            "Input partitions a task has paused for backpressure",
            "partition",
            &self.paused_inputs,
        );
        let name = "geoclock_processor_gate_shut_seconds";
        let _ = writeln!(
            o,
            "# HELP {name} How long a vehicle task's gate has been shut (0: open), and the stage-one task it waits on\n# TYPE {name} gauge"
        );
        for (task, (waits, secs)) in self.gate.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(o, "{name}{{partition=\"{task}\",waits_on=\"{waits}\"}} {secs:.3}");
        }
        counter(
            &mut o,
            "geoclock_processor_task_restarts_total",
            "Tasks restarted after a failure",
            &self.task_restarts,
        );
        family(
            &mut o,
            "geoclock_processor_rebalances_total",
            "counter",
            "Partitions assigned, revoked or lost",
            "event",
            &self.rebalances,
        );
        o
    }
}

/// Serves `GET /metrics` on `addr` from a background thread; returns the
/// bound address (port 0 picks one).
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    crate::telemetry::serve_metrics(addr, move || metrics.render(), crate::telemetry::healthy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_fixed_names_and_labels() {
        let m = Metrics::new();
        m.records.add("azuga.pings", 3);
        m.commit_seconds.observe(0.003);
        m.lag.set("0", 7);
        m.state_appointments.set("1", 42);
        m.gate_shut("2", "a0", 12.5);
        let text = m.render();
        assert!(
            text.contains("geoclock_processor_gate_shut_seconds{partition=\"2\",waits_on=\"a0\"} 12.500"),
            "{text}"
        );
        assert!(text.contains("geoclock_processor_records_total{topic=\"azuga.pings\"} 3"), "{text}");
        assert!(text.contains("geoclock_processor_commit_seconds_bucket{le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("geoclock_processor_commit_seconds_bucket{le=\"0.0025\"} 0"), "{text}");
        assert!(text.contains("geoclock_processor_lag_records{partition=\"0\"} 7"), "{text}");
        assert!(text.contains("geoclock_processor_state_appointments{partition=\"1\"} 42"), "{text}");
    }
}
