//! The one way geoclock builds Prometheus metrics: the `prometheus` crate,
//! through these helpers. Each component keeps its metrics in one typed
//! struct (`connect::metrics`, `sink::metrics`, `processor::metrics`,
//! `report::serve`) whose methods take label values from enums or from the
//! tenants file, so label sets stay fixed and bounded.
//!
//! Conventions (checked by `promtool` and the Prometheus test in CI):
//! - names `geoclock_<subsystem>_<what>_<unit>`; counters end in `_total`,
//!   timestamps in `_timestamp_seconds`;
//! - every business metric carries `tenant`; counters a dashboard or an
//!   alert reads are created at zero for every label value known at start,
//!   so `rate()` and `absent()` mean what they say from the first scrape;
//! - a periodic job reports `..._last_success_timestamp_seconds` and its
//!   interval, so "no success for three intervals" is one expression;
//! - gauges of something this process no longer owns (a revoked
//!   partition's lag) are removed, not left at their last value;
//! - every registry carries `geoclock_build_info{version}`, the process
//!   collector (`process_cpu_seconds_total`, memory, fds), and the sizes of
//!   the process's bounded stores (`geoclock_store_entries{store,kind}`:
//!   [`store_entries`]).

use prometheus::core::Collector;
use prometheus::{
    CounterVec, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Registers a metric built from fixed names and labels. Building or
/// registering fails only for a bad or duplicate name: a programming error,
/// caught by every component's unit tests.
pub fn registered<C: Collector + Clone + 'static>(r: &Registry, name: &str, built: prometheus::Result<C>) -> C {
    let c = built.unwrap_or_else(|e| panic!("metric {name}: {e}"));
    r.register(Box::new(c.clone())).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    c
}

pub fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(r, name, IntCounterVec::new(Opts::new(name, help), labels))
}

pub fn float_counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> CounterVec {
    registered(r, name, CounterVec::new(Opts::new(name, help), labels))
}

pub fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    registered(r, name, IntGaugeVec::new(Opts::new(name, help), labels))
}

pub fn float_gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    registered(r, name, GaugeVec::new(Opts::new(name, help), labels))
}

pub fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    registered(r, name, HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels))
}

/// Seconds from milliseconds to a day: freshness and latency buckets.
pub const SECONDS_BUCKETS: &[f64] =
    &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0, 14_400.0, 86_400.0];

/// The process's one store-size gauge (every registry carries it).
fn stores() -> &'static IntGaugeVec {
    static STORES: std::sync::OnceLock<IntGaugeVec> = std::sync::OnceLock::new();
    STORES.get_or_init(|| {
        let opts = Opts::new("geoclock_store_entries", "Entries held by a bounded store (each has a retention rule).");
        IntGaugeVec::new(opts, &["store", "kind"]).unwrap_or_else(|e| panic!("geoclock_store_entries: {e}"))
    })
}

/// Sets how many entries of one kind a bounded store of this process
/// holds (a ledger, a task's state): `store` names the store (one per
/// ledger file or task), `kind` the entries.
pub fn store_entries(store: &str, kind: &str, entries: u64) {
    stores().with_label_values(&[store, kind]).set(entries.min(i64::MAX as u64) as i64);
}

/// A registry with `geoclock_build_info`, the process collector and the
/// store sizes.
pub fn registry() -> Registry {
    let r = Registry::new();
    let info = registered(
        &r,
        "geoclock_build_info",
        IntGaugeVec::new(Opts::new("geoclock_build_info", "Always 1; the version that runs."), &["version"]),
    );
    info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    let _ = r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
    let _ = r.register(Box::new(stores().clone()));
    r
}

/// A bounded label for an HTTP answer: `2xx`, `401`, `403`, `404`, `429`,
/// other `4xx`, `5xx`, or `error` when there was no answer. Credentials
/// refused (401, 403) and a routine "not found" are told apart.
pub fn status_class(status: Option<u16>) -> &'static str {
    match status {
        None => "error",
        Some(401) => "401",
        Some(403) => "403",
        Some(404) => "404",
        Some(429) => "429",
        Some(s) if s < 300 => "2xx",
        Some(s) if s < 500 => "4xx",
        Some(_) => "5xx",
    }
}

/// The text exposition format of `registry`.
pub fn render(registry: &Registry) -> String {
    let mut buf = String::new();
    if TextEncoder::new().encode_utf8(&registry.gather(), &mut buf).is_err() {
        return String::new();
    }
    buf
}

/// Several components' registries as one exposition (one process running
/// several components: the demo). Families of one name are merged; a
/// series that several registries carry alike (`geoclock_build_info`, the
/// process collector's) appears once.
pub fn render_all(registries: &[&Registry]) -> String {
    let mut families: Vec<prometheus::proto::MetricFamily> = Vec::new();
    for r in registries {
        for f in r.gather() {
            match families.iter_mut().find(|g| g.name() == f.name()) {
                None => families.push(f),
                Some(g) => {
                    let labels = |m: &prometheus::proto::Metric| {
                        m.get_label().iter().map(|l| (l.name().to_string(), l.value().to_string())).collect::<Vec<_>>()
                    };
                    for m in f.get_metric() {
                        if !g.get_metric().iter().any(|h| labels(h) == labels(m)) {
                            g.mut_metric().push(m.clone());
                        }
                    }
                }
            }
        }
    }
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut buf = String::new();
    if TextEncoder::new().encode_utf8(&families, &mut buf).is_err() {
        return String::new();
    }
    buf
}

/// Wall-clock seconds (for `_timestamp_seconds` gauges).
pub fn now_seconds() -> f64 {
    chrono::Utc::now().timestamp_millis() as f64 / 1000.0
}

/// One periodic job's health: when it last succeeded and how often it
/// should. `time() - last_success > 3 * interval` is "not succeeding".
#[derive(Clone)]
pub struct Jobs {
    last_success: GaugeVec,
    interval: GaugeVec,
}

impl Jobs {
    /// `subsystem`'s jobs, labelled by `labels` plus `job`.
    pub fn new(r: &Registry, subsystem: &str, labels: &[&str]) -> Jobs {
        let mut l = labels.to_vec();
        l.push("job");
        Jobs {
            last_success: float_gauge(
                r,
                &format!("geoclock_{subsystem}_last_success_timestamp_seconds"),
                "When a periodic job last completed successfully (unix seconds).",
                &l,
            ),
            interval: float_gauge(
                r,
                &format!("geoclock_{subsystem}_job_interval_seconds"),
                "How often a periodic job is meant to run.",
                &l,
            ),
        }
    }

    /// Declares a job (at start: its interval; its last success is "now",
    /// so a job that never succeeds alerts after three intervals).
    pub fn declare(&self, labels: &[&str], interval_s: f64) {
        self.interval.with_label_values(labels).set(interval_s);
        self.last_success.with_label_values(labels).set(now_seconds());
    }

    pub fn succeeded(&self, labels: &[&str]) {
        self.last_success.with_label_values(labels).set(now_seconds());
    }
}

/// A gauge per owned thing (a partition's task) that disappears with it.
pub fn forget(g: &IntGaugeVec, labels: &[&str]) {
    let _ = g.remove_label_values(labels);
}

/// An integer gauge without labels.
pub fn int_gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    registered(r, name, IntGauge::new(name, help))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_carries_build_info_and_process_metrics() {
        let r = registry();
        let jobs = Jobs::new(&r, "test", &["tenant"]);
        jobs.declare(&["acme", "reconcile"], 300.0);
        let text = render(&r);
        assert!(text.contains("geoclock_build_info{version=\""), "{text}");
        assert!(text.contains("process_cpu_seconds_total"), "{text}");
        assert!(text.contains("geoclock_test_job_interval_seconds{job=\"reconcile\",tenant=\"acme\"} 300"), "{text}");
        assert!(text.contains("geoclock_test_last_success_timestamp_seconds{job=\"reconcile\",tenant=\"acme\"}"));
        store_entries("sink_ledger:test", "commands", 42);
        let text = render(&r);
        assert!(text.contains("geoclock_store_entries{kind=\"commands\",store=\"sink_ledger:test\"} 42"), "{text}");
        let twice = render_all(&[&r, &registry()]);
        assert_eq!(twice.matches("store=\"sink_ledger:test\"").count(), 1, "{twice}");
    }
}
