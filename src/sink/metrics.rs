//! The sinks' Prometheus metrics, built with [`crate::telemetry::metrics`].
//! Names: `geoclock_sink_<what>_<unit>`. Label sets are fixed and bounded:
//! `sink` (`clock`, `geofence`, `email`), `tenant` (from the tenants file),
//! `kind` (command kind), `outcome` (`done`, `superseded`, `failed`,
//! `duplicate`), `reason` (why a command failed: [`FAILURE_REASONS`]),
//! `api` (`METHOD /path` without ids), `status` (class), `state`
//! (`waiting`, `unknown`), `event` (rebalance). Business counters start at
//! zero for every tenant.

use prometheus::{CounterVec, HistogramVec, IntCounterVec, IntGaugeVec, Registry};

use crate::telemetry::metrics::{self as m, counter, float_counter, gauge};

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
    failures: IntCounterVec,
    fences_live: IntGaugeVec,
}

/// Why a command failed, as counted.
pub const FAILURE_REASONS: [&str; 4] = ["refused", "gave_up", "invalid", "unconfigured"];

/// The failure reason class of a result's reason text.
pub fn failure_reason(reason: &str) -> &'static str {
    if reason.contains("gave up") {
        "gave_up"
    } else if reason.contains("tenants file") || reason.contains("no SMTP relay") {
        "unconfigured"
    } else if reason.contains("would reject") || reason.contains("invalid") || reason.starts_with("not a ") {
        "invalid"
    } else {
        "refused"
    }
}

impl Metrics {
    /// The metrics of the sinks `sinks`, with every tenant's counters at zero.
    pub fn new<'a>(sinks: &[&str], tenants: impl IntoIterator<Item = &'a str>) -> Metrics {
        let r = m::registry();
        let m = Metrics {
            commands: counter(
                &r,
                "geoclock_sink_commands_total",
                "Commands decided, by kind and outcome (done, superseded, failed, duplicate).",
                &["sink", "tenant", "kind", "outcome"],
            ),
            api_calls: counter(&r, "geoclock_sink_api_calls_total", "Vendor API calls by status class.", &["sink", "api", "status"]),
            retries: counter(
                &r,
                "geoclock_sink_retries_total",
                "Commands not decided after a transient failure, to be tried again.",
                &["sink", "api"],
            ),
            lookups: counter(
                &r,
                "geoclock_sink_effect_lookups_total",
                "Effects looked up at the vendor before acting, because an earlier outcome was unknown.",
                &["sink"],
            ),
            latency: m::histogram(
                &r,
                "geoclock_sink_effect_latency_seconds",
                "From the command record's timestamp to its effect (done outcomes).",
                &["sink", "tenant"],
                m::SECONDS_BUCKETS,
            ),
            rate_wait: float_counter(
                &r,
                "geoclock_sink_rate_limit_wait_seconds_total",
                "Time spent waiting for a rate budget.",
                &["sink", "api"],
            ),
            lag: gauge(&r, "geoclock_sink_lag_records", "Commands on the sink's assigned partitions not yet consumed.", &["sink"]),
            pending: gauge(
                &r,
                "geoclock_sink_pending_commands",
                "Commands consumed and not yet decided, per tenant: waiting (all) and unknown (outcome unknown, to be looked up).",
                &["sink", "tenant", "state"],
            ),
            rebalances: counter(&r, "geoclock_sink_rebalances_total", "Rebalance callbacks, by event.", &["sink", "event"]),
            failures: counter(
                &r,
                "geoclock_sink_failures_total",
                "Commands decided failed, by reason (refused by the vendor, gave up, invalid, unconfigured).",
                &["sink", "tenant", "reason"],
            ),
            fences_live: gauge(&r, "geoclock_sink_fences_live", "Geomarks geoclock holds at Azuga, per tenant.", &["tenant"]),
            registry: r,
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
                for reason in FAILURE_REASONS {
                    m.failures.with_label_values(&[sink, t, reason]).inc_by(0);
                }
            }
            for e in ["assigned", "revoked", "lost"] {
                m.rebalances.with_label_values(&[sink, e]).inc_by(0);
            }
            for api in apis(sink) {
                m.retries.with_label_values(&[sink, api]).inc_by(0);
                m.rate_wait.with_label_values(&[sink, api]).inc_by(0.0);
            }
        }
        m
    }

    pub fn command(&self, sink: &str, tenant: &str, kind: &str, outcome: &str) {
        self.commands.with_label_values(&[sink, tenant, kind, outcome]).inc();
    }

    /// A command decided failed, for `reason` (one of [`FAILURE_REASONS`]).
    pub fn failure(&self, sink: &str, tenant: &str, reason: &str) {
        self.failures.with_label_values(&[sink, tenant, reason]).inc();
    }

    /// Geomarks held at Azuga for `tenant`.
    pub fn fences_live(&self, tenant: &str, n: i64) {
        self.fences_live.with_label_values(&[tenant]).set(n);
    }

    pub fn api_call(&self, sink: &str, api: &str, status: Option<u16>) {
        self.api_calls.with_label_values(&[sink, api, m::status_class(status)]).inc();
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
        self.rate_wait.with_label_values(&[sink, api]).inc_by(seconds.max(0.0));
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

    /// The registry (to render it with others: [`crate::telemetry::metrics::render_all`]).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn render(&self) -> String {
        m::render(&self.registry)
    }
}

/// The vendor calls a sink makes.
fn apis(sink: &str) -> &'static [&'static str] {
    match sink {
        "clock" => &["POST /api/clock", "GET /api/clock", "POST /api/auth"],
        "geofence" => &["GET /v1/geomarks", "POST /v1/geomarks", "PUT /v1/geomarks", "DELETE /v1/geomarks"],
        _ => &["POST /v1/trackme", "GET /v1/trackme", "SMTP"],
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_start_at_zero_and_failures_are_classed() {
        let m = Metrics::new(&["clock"], ["acme"]);
        let text = m.render();
        assert!(
            text.contains(
                "geoclock_sink_commands_total{kind=\"clock\",outcome=\"failed\",sink=\"clock\",tenant=\"acme\"} 0"
            ),
            "{text}"
        );
        assert!(text.contains("geoclock_sink_failures_total{reason=\"gave_up\",sink=\"clock\",tenant=\"acme\"} 0"));
        assert_eq!(failure_reason("gave up after 40 attempts: ..."), "gave_up");
        assert_eq!(
            failure_reason("ServiceTrade clock event not created: POST /api/clock refused (404): user 9 not found"),
            "refused"
        );
        assert_eq!(failure_reason("no [tenants.azuga] in the tenants file"), "unconfigured");
        assert_eq!(failure_reason("Azuga would reject the geofence: radius"), "invalid");
    }
}
