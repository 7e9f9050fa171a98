//! The sinks' Prometheus metrics. Names: `geoclock_sink_<what>_<unit>`.
//! Label sets are fixed and bounded: `sink` (`clock`, `geofence`, `email`),
//! `kind` (command kind), `outcome` (`done`, `superseded`, `failed`,
//! `duplicate`), `api` (`METHOD /path` without ids), `status` (class).

use prometheus::{CounterVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::connect::metrics::{counter, registered, render_registry, status_class};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    commands: IntCounterVec,
    api_calls: IntCounterVec,
    retries: IntCounterVec,
    latency: HistogramVec,
    rate_wait: CounterVec,
    lag: IntGaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let commands = counter(
            &r,
            "geoclock_sink_commands_total",
            "Commands decided, by kind and outcome (done, superseded, failed, duplicate).",
            &["sink", "kind", "outcome"],
        );
        let api_calls = counter(
            &r,
            "geoclock_sink_api_calls_total",
            "Vendor API calls by status class.",
            &["sink", "api", "status"],
        );
        let retries = counter(
            &r,
            "geoclock_sink_retries_total",
            "Vendor calls retried after a transient failure.",
            &["sink", "api"],
        );
        let name = "geoclock_sink_effect_latency_seconds";
        let latency = registered(
            &r,
            name,
            HistogramVec::new(
                HistogramOpts::new(name, "From the command record's timestamp to its effect (done outcomes).")
                    .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0]),
                &["sink"],
            ),
        );
        let name = "geoclock_sink_rate_limit_wait_seconds_total";
        let rate_wait = registered(
            &r,
            name,
            CounterVec::new(Opts::new(name, "Time spent waiting for a rate budget."), &["sink", "api"]),
        );
        let name = "geoclock_sink_lag_records";
        let lag = registered(
            &r,
            name,
            IntGaugeVec::new(
                Opts::new(name, "Commands on the sink's assigned partitions not yet consumed."),
                &["sink"],
            ),
        );
        Metrics { registry: r, commands, api_calls, retries, latency, rate_wait, lag }
    }

    pub fn command(&self, sink: &str, kind: &str, outcome: &str) {
        self.commands.with_label_values(&[sink, kind, outcome]).inc();
    }

    pub fn api_call(&self, sink: &str, api: &str, status: Option<u16>) {
        self.api_calls.with_label_values(&[sink, api, status_class(status)]).inc();
    }

    pub fn retry(&self, sink: &str, api: &str) {
        self.retries.with_label_values(&[sink, api]).inc();
    }

    pub fn latency(&self, sink: &str, seconds: f64) {
        self.latency.with_label_values(&[sink]).observe(seconds.max(0.0));
    }

    pub fn rate_wait(&self, sink: &str, api: &str, seconds: f64) {
        self.rate_wait.with_label_values(&[sink, api]).inc_by(seconds);
    }

    pub fn lag(&self, sink: &str, records: i64) {
        self.lag.with_label_values(&[sink]).set(records.max(0));
    }

    pub fn render(&self) -> String {
        render_registry(&self.registry)
    }
}
