//! The processor's Prometheus metrics and the `/metrics` endpoint, built
//! with [`crate::telemetry::metrics`].
//!
//! Names are `geoclock_processor_<what>_<unit>`; label sets are fixed:
//! `partition` for per-task gauges (a task's name: `3`, `a3`), removed when
//! the task stops; `topic` for input records (the topic's catalogue
//! suffix); `event` for rebalances (one per callback, not per partition);
//! `partition` and `waits_on` for a vehicle task's shut gate (the stage-one
//! task it waits on);
//! `tenant` and `kind` on commands, `tenant` on decision freshness (event
//! time of the ping that decided a clock change → the command produced).

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus::core::Collector;
use prometheus::{GaugeVec, HistogramVec, IntCounterVec, IntGaugeVec, Registry};

use crate::kafka::topics::Topic;
use crate::telemetry::metrics::{self as m, Jobs};

/// A monotonically increasing count.
#[derive(Clone)]
pub struct Counter(prometheus::IntCounter);

impl Counter {
    pub fn inc_by(&self, n: u64) {
        self.0.inc_by(n);
    }
    pub fn inc(&self) {
        self.0.inc();
    }
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// Values by one label.
#[derive(Clone)]
pub struct Family(IntGaugeVec);

impl Family {
    pub fn add(&self, label: &str, n: i64) {
        self.0.with_label_values(&[label]).add(n);
    }
    pub fn set(&self, label: &str, v: i64) {
        self.0.with_label_values(&[label]).set(v);
    }
    /// Drops the series (a task that stopped here).
    pub fn remove(&self, label: &str) {
        m::forget(&self.0, &[label]);
    }
}

/// Counts by one label.
#[derive(Clone)]
pub struct Counts(IntCounterVec);

impl Counts {
    pub fn add(&self, label: &str, n: u64) {
        self.0.with_label_values(&[label]).inc_by(n);
    }
}

/// Seconds, in fixed buckets.
#[derive(Clone)]
pub struct Histogram(prometheus::Histogram);

impl Histogram {
    pub fn sum_seconds(&self) -> f64 {
        self.0.get_sample_sum()
    }

    pub fn observe(&self, seconds: f64) {
        self.0.observe(seconds);
    }
}

const COMMIT_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

pub struct Metrics {
    registry: Registry,
    pub records: Counts,
    pub commands: Counter,
    pub dead_letters: Counter,
    pub batches: Counter,
    pub commit_seconds: Histogram,
    pub lag: Family,
    pub restore_remaining: Family,
    /// Appointments held in state (every tenant), per task: bounded by
    /// retention.
    pub state_appointments: Family,
    pub rebalances: Counts,
    /// What each task's merge holds, in bytes (bounded).
    pub buffered_bytes: Family,
    /// Inputs each task has paused for backpressure.
    pub paused_inputs: Family,
    gate_shut: GaugeVec,
    /// Tasks restarted after a failure.
    pub task_restarts: Counter,
    commands_by: IntCounterVec,
    arrivals: IntCounterVec,
    freshness: HistogramVec,
    latency: HistogramVec,
    pub jobs: Jobs,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(std::iter::empty())
    }
}

impl Metrics {
    /// The processor's metrics, with every counter at zero for `tenants`.
    pub fn new<'a>(tenants: impl IntoIterator<Item = &'a str>) -> Metrics {
        let r = m::registry();
        let plain = |name: &str, help: &str| Counter(m::registered(&r, name, prometheus::IntCounter::new(name, help)));
        let records = Counts(m::counter(
            &r,
            "geoclock_processor_records_total",
            "Input records processed, by topic.",
            &["topic"],
        ));
        let commands = plain("geoclock_processor_commands_produced_total", "Commands produced (all tenants).");
        let dead_letters = plain("geoclock_processor_dead_letters_total", "Records sent to the dead-letter topic.");
        let batches = plain("geoclock_processor_batches_total", "Batches committed.");
        let name = "geoclock_processor_commit_seconds";
        let commit_seconds = Histogram(m::registered(
            &r,
            name,
            prometheus::Histogram::with_opts(
                prometheus::HistogramOpts::new(name, "Produce-and-commit time of one batch.")
                    .buckets(COMMIT_BUCKETS.to_vec()),
            ),
        ));
        let lag = Family(m::gauge(
            &r,
            "geoclock_processor_lag_records",
            "Input records on the broker not yet processed, per task.",
            &["partition"],
        ));
        let restore_remaining = Family(m::gauge(
            &r,
            "geoclock_processor_restore_remaining_records",
            "Changelog records left to restore, per task.",
            &["partition"],
        ));
        let state_appointments = Family(m::gauge(
            &r,
            "geoclock_processor_state_appointments",
            "Appointments held in state (all tenants, bounded by retention_days), per task.",
            &["partition"],
        ));
        let rebalances = Counts(m::counter(
            &r,
            "geoclock_processor_rebalances_total",
            "Rebalance callbacks, by event (assigned, revoked, lost).",
            &["event"],
        ));
        let buffered_bytes = Family(m::gauge(
            &r,
            "geoclock_processor_buffered_bytes",
            "Bytes held by a task's merge (bounded: its inputs pause above the bound), per task.",
            &["partition"],
        ));
        let paused_inputs = Family(m::gauge(
            &r,
            "geoclock_processor_paused_inputs",
            "Input partitions a task has paused for backpressure, per task.",
            &["partition"],
        ));
        let gate_shut = m::float_gauge(
            &r,
            "geoclock_processor_gate_shut_seconds",
            "How long a vehicle task's gate has been shut (0: open), and the stage-one task it waits on.",
            &["partition", "waits_on"],
        );
        let task_restarts = plain("geoclock_processor_task_restarts_total", "Tasks restarted after a failure.");
        let commands_by = m::counter(
            &r,
            "geoclock_processor_commands_total",
            "Commands produced, per tenant and kind (clock, create_geofence, send_service_link, ...).",
            &["tenant", "kind"],
        );
        let arrivals = m::counter(
            &r,
            "geoclock_processor_arrivals_total",
            "Arrivals decided (a technician clocked On Site by GPS), per tenant.",
            &["tenant"],
        );
        let freshness = m::histogram(
            &r,
            "geoclock_processor_decision_freshness_seconds",
            "From the event time of the ping that decided a clock change to the command's production.",
            &["tenant"],
            m::SECONDS_BUCKETS,
        );
        let latency = m::histogram(
            &r,
            "geoclock_processor_decision_latency_seconds",
            "From the input record (its Kafka timestamp) that decided a command to the command's production.",
            &["tenant"],
            m::SECONDS_BUCKETS,
        );
        let jobs = Jobs::new(&r, "processor", &[]);
        for t in [Topic::Pings, Topic::FenceRoutes, Topic::Appointments, Topic::ClockEvents] {
            records.add(t.suffix(), 0);
        }
        for e in ["assigned", "revoked", "lost"] {
            rebalances.add(e, 0);
        }
        for t in tenants {
            arrivals.with_label_values(&[t]).inc_by(0);
            for k in ["clock", "create_geofence", "update_geofence", "delete_geofence", "send_service_link"] {
                commands_by.with_label_values(&[t, k]).inc_by(0);
            }
        }
        Metrics {
            registry: r,
            records,
            commands,
            dead_letters,
            batches,
            commit_seconds,
            lag,
            restore_remaining,
            state_appointments,
            rebalances,
            buffered_bytes,
            paused_inputs,
            gate_shut,
            task_restarts,
            commands_by,
            arrivals,
            freshness,
            latency,
            jobs,
        }
    }

    /// One command produced for `tenant`: how long after its input record
    /// reached Kafka (`record_age_s`), and for a clock change how old the
    /// ping that decided it is by its event time (`event_age_s`).
    pub fn command(&self, tenant: &str, kind: &str, record_age_s: f64, event_age_s: Option<f64>) {
        self.commands_by.with_label_values(&[tenant, kind]).inc();
        self.latency.with_label_values(&[tenant]).observe(record_age_s.max(0.0));
        if let Some(age) = event_age_s {
            self.freshness.with_label_values(&[tenant]).observe(age.max(0.0));
        }
    }

    /// An arrival decided for `tenant`.
    pub fn arrival(&self, tenant: &str) {
        self.arrivals.with_label_values(&[tenant]).inc();
    }

    /// Vehicle task `task`'s gate: shut for `seconds` (0: open), waiting on
    /// stage-one task `waits_on` (empty when open). One series per task.
    pub fn gate_shut(&self, task: &str, waits_on: &str, seconds: f64) {
        for mf in self.gate_shut.collect() {
            for metric in mf.get_metric() {
                let labels: Vec<&str> = metric.get_label().iter().map(|l| l.value()).collect();
                if labels.first() == Some(&task) && labels.get(1) != Some(&waits_on) {
                    let _ = self.gate_shut.remove_label_values(&labels);
                }
            }
        }
        self.gate_shut.with_label_values(&[task, waits_on]).set(seconds);
    }

    /// A task stopped here: its gauges go.
    pub fn forget_task(&self, task: &str) {
        self.lag.remove(task);
        self.restore_remaining.remove(task);
        self.state_appointments.remove(task);
        self.buffered_bytes.remove(task);
        self.paused_inputs.remove(task);
        self.gate_shut(task, "", 0.0);
        let _ = self.gate_shut.remove_label_values(&[task, ""]);
    }

    /// A batch was committed (the processor's periodic job).
    pub fn committed(&self) {
        self.jobs.succeeded(&["commit"]);
    }

    /// The registry (to render it with others: [`crate::telemetry::metrics::render_all`]).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        m::render(&self.registry)
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
    fn renders_fixed_names_and_labels_and_forgets_stopped_tasks() {
        let m = Metrics::new(["acme"]);
        m.records.add("azuga.pings", 3);
        m.commit_seconds.observe(0.003);
        m.lag.set("0", 7);
        m.state_appointments.set("1", 42);
        m.command("acme", "clock", 0.2, Some(12.0));
        m.gate_shut("2", "a0", 1.0);
        m.gate_shut("2", "a1", 12.5);
        let text = m.render();
        assert!(text.contains("geoclock_processor_gate_shut_seconds{partition=\"2\",waits_on=\"a1\"} 12.5"), "{text}");
        assert!(!text.contains("waits_on=\"a0\""), "one series per task: {text}");
        assert!(text.contains("geoclock_processor_records_total{topic=\"azuga.pings\"} 3"), "{text}");
        assert!(text.contains("geoclock_processor_records_total{topic=\"servicetrade.clock-events\"} 0"), "{text}");
        assert!(text.contains("geoclock_processor_commit_seconds_bucket{le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("geoclock_processor_lag_records{partition=\"0\"} 7"), "{text}");
        assert!(text.contains("geoclock_processor_state_appointments{partition=\"1\"} 42"), "{text}");
        assert!(text.contains("geoclock_processor_commands_total{kind=\"clock\",tenant=\"acme\"} 1"), "{text}");
        assert!(text.contains("geoclock_processor_commands_total{kind=\"send_service_link\",tenant=\"acme\"} 0"));
        assert!(text.contains("geoclock_processor_decision_freshness_seconds_count{tenant=\"acme\"} 1"));
        assert!(text.contains("geoclock_processor_rebalances_total{event=\"lost\"} 0"));
        m.forget_task("0");
        assert!(!m.render().contains("geoclock_processor_lag_records{partition=\"0\"}"));
    }
}
