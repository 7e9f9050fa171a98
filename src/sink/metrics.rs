//! The sinks' Prometheus metrics. Names: `geoclock_sink_<what>_<unit>`.
//! Label sets are fixed and bounded: `sink` (`clock`, `geofence`, `email`),
//! `tenant` (from the tenants file), `kind` (command kind), `outcome`
//! (`done`, `superseded`, `failed`, `duplicate`), `api` (`METHOD /path`
//! without ids), `status` (class), `state` (`waiting`, `unknown`), `event`
//! (rebalance). Business counters start at zero for every tenant.

use prometheus::{CounterVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::connect::metrics::{counter, registered, render_registry, status_class};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    commands: IntCounterVec,
    api_calls: IntCounterVec,
    retries: IntCounterVec,
    lookups: IntCounterVec,
    latency: HistogramVec,
    rate_wait: CounterVec,
    lag: IntGaugeVec,
    pending: IntGaugeVec,
    rebalances: IntCounterVec,
}

impl Metrics {
    /// The metrics of the sinks `sinks`, with every tenant's counters at zero.
    pub fn new<'a>(sinks: &[&str], tenants: impl IntoIterator<Item = &'a str>) -> Metrics {
        let r = Registry::new();
        let commands = counter(
            &r,
            "geoclock_sink_commands_total",
            "Commands decided, by kind and outcome (done, superseded, failed, duplicate).",
            &["sink", "tenant", "kind", "outcome"],
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
            "Commands not decided after a transient failure, to be tried again.",
            &["sink", "api"],
        );
        let lookups = counter(
            &r,
            "geoclock_sink_effect_lookups_total",
            "Effects looked up at the vendor before acting, because an earlier outcome was unknown.",
            &["sink"],
        );
        let name = "geoclock_sink_effect_latency_seconds";
        let latency = registered(
            &r,
            name,
            HistogramVec::new(
                HistogramOpts::new(name, "From the command record's timestamp to its effect (done outcomes).")
                    .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0]),
                &["sink", "tenant"],
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
        let name = "geoclock_sink_pending_commands";
        let pending = registered(
            &r,
            name,
            IntGaugeVec::new(
                Opts::new(name, "Commands consumed and not yet decided, per tenant: waiting (all) and unknown (outcome unknown, to be looked up)."),
                &["sink", "tenant", "state"],
            ),
        );
        let rebalances =
            counter(&r, "geoclock_sink_rebalances_total", "Partitions assigned, revoked or lost.", &["sink", "event"]);
        let m = Metrics {
            registry: r,
            commands,
            api_calls,
            retries,
            lookups,
            latency,
            rate_wait,
            lag,
            pending,
            rebalances,
        };
        let tenants: Vec<&str> = tenants.into_iter().collect();
        for sink in sinks {
            m.lookups.with_label_values(&[sink]).inc_by(0);
            m.lag.with_label_values(&[sink]).set(0);
            for t in &tenants {
                for outcome in ["done", "failed", "duplicate", "superseded"] {
                    for kind in kinds(sink) {
                        m.commands.with_label_values(&[sink, t, kind, outcome]).inc_by(0);
                    }
                }
                m.pending(sink, t, 0, 0);
            }
        }
        m
    }

    pub fn command(&self, sink: &str, tenant: &str, kind: &str, outcome: &str) {
        self.commands.with_label_values(&[sink, tenant, kind, outcome]).inc();
    }

    pub fn api_call(&self, sink: &str, api: &str, status: Option<u16>) {
        self.api_calls.with_label_values(&[sink, api, status_class(status)]).inc();
    }

    pub fn retry(&self, sink: &str, api: &str) {
        self.retries.with_label_values(&[sink, api]).inc();
    }

    pub fn lookup(&self, sink: &str) {
        self.lookups.with_label_values(&[sink]).inc();
    }

    pub fn latency(&self, sink: &str, tenant: &str, seconds: f64) {
        self.latency.with_label_values(&[sink, tenant]).observe(seconds.max(0.0));
    }

    pub fn rate_wait(&self, sink: &str, api: &str, seconds: f64) {
        self.rate_wait.with_label_values(&[sink, api]).inc_by(seconds);
    }

    pub fn lag(&self, sink: &str, records: i64) {
        self.lag.with_label_values(&[sink]).set(records.max(0));
    }

    pub fn pending(&self, sink: &str, tenant: &str, waiting: i64, unknown: i64) {
        self.pending.with_label_values(&[sink, tenant, "waiting"]).set(waiting);
        self.pending.with_label_values(&[sink, tenant, "unknown"]).set(unknown);
    }

    pub fn rebalance(&self, sink: &str, event: &str) {
        self.rebalances.with_label_values(&[sink, event]).inc();
    }

    pub fn render(&self) -> String {
        render_registry(&self.registry)
    }
}

/// The command kinds a sink decides.
fn kinds(sink: &str) -> &'static [&'static str] {
    match sink {
        "clock" => &["clock"],
        "geofence" => &["create_geofence", "update_geofence", "delete_geofence"],
        _ => &["send_service_link", "daily_report"],
    }
}
