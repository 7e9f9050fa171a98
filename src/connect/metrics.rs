//! The connectors' Prometheus metrics, one typed method per event so that a
//! metric's name, labels and log line are decided in one place.
//!
//! Names: `geoclock_connector_<what>_<unit>`. Label sets are fixed:
//! `connector` (`servicetrade`, `azuga`), `tenant` (from the tenants file,
//! so bounded), plus one bounded label per metric (`topic`, `call`/`status`,
//! `outcome`, `reason`). No label ever carries an id, a URL or a secret.

use prometheus::core::Collector;
use prometheus::{Encoder, GaugeVec, IntCounterVec, Opts, Registry, TextEncoder};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    published: IntCounterVec,
    api_calls: IntCounterVec,
    webhooks: IntCounterVec,
    dead_letters: IntCounterVec,
    duplicates: IntCounterVec,
    cursor_lag: GaugeVec,
    sweep_confirmations: IntCounterVec,
}

/// Registers a metric built from fixed names and labels. Building or
/// registering fails only for a bad or duplicate name: a programming error.
pub(crate) fn registered<C: Collector + Clone + 'static>(r: &Registry, name: &str, built: prometheus::Result<C>) -> C {
    let c = built.unwrap_or_else(|e| panic!("metric {name}: {e}"));
    r.register(Box::new(c.clone())).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    c
}

pub(crate) fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(r, name, IntCounterVec::new(Opts::new(name, help), labels))
}

/// A bounded label for an HTTP answer: `2xx`, `4xx`, `429`, `5xx`, or
/// `error` when there was no answer.
pub(crate) fn status_class(status: Option<u16>) -> &'static str {
    match status {
        None => "error",
        Some(429) => "429",
        Some(s) if s < 300 => "2xx",
        Some(s) if s < 500 => "4xx",
        Some(_) => "5xx",
    }
}

/// The text exposition format of `registry`.
pub(crate) fn render_registry(registry: &Registry) -> String {
    let mut buf = Vec::new();
    if TextEncoder::new().encode(&registry.gather(), &mut buf).is_err() {
        return String::new();
    }
    String::from_utf8(buf).unwrap_or_default()
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let published = counter(
            &r,
            "geoclock_connector_records_published_total",
            "Records acknowledged by the broker.",
            &["connector", "tenant", "topic"],
        );
        let api_calls = counter(
            &r,
            "geoclock_connector_api_calls_total",
            "Vendor API calls by call and HTTP status class (2xx, 4xx, 429, 5xx, error).",
            &["connector", "tenant", "call", "status"],
        );
        let webhooks = counter(
            &r,
            "geoclock_connector_webhook_deliveries_total",
            "Webhook deliveries received, by outcome (accepted, duplicate, unauthorized, malformed, overloaded).",
            &["connector", "tenant", "outcome"],
        );
        let dead_letters = counter(
            &r,
            "geoclock_connector_dead_letters_total",
            "Records sent to the dead-letter topic, by reason class.",
            &["connector", "tenant", "reason"],
        );
        let duplicates = counter(
            &r,
            "geoclock_connector_duplicates_dropped_total",
            "Items already published, dropped (pings, unchanged entities).",
            &["connector", "tenant", "kind"],
        );
        let name = "geoclock_connector_reconcile_cursor_lag_seconds";
        let cursor_lag = registered(
            &r,
            name,
            GaugeVec::new(
                Opts::new(name, "Seconds since the start of the last reconciliation pass that completed (set after every pass, failed ones included)."),
                &["connector", "tenant"],
            ),
        );
        let sweep_confirmations = counter(
            &r,
            "geoclock_connector_sweep_confirmations_total",
            "Entities a full sweep found missing, more than its share at once, confirmed one by one before any tombstone.",
            &["connector", "tenant", "kind"],
        );
        Metrics {
            registry: r,
            published,
            api_calls,
            webhooks,
            dead_letters,
            duplicates,
            cursor_lag,
            sweep_confirmations,
        }
    }

    pub fn published(&self, connector: &str, tenant: &str, topic: &str, n: u64) {
        self.published.with_label_values(&[connector, tenant, topic]).inc_by(n);
    }

    pub fn api_call(&self, connector: &str, tenant: &str, call: &str, status: Option<u16>) {
        self.api_calls.with_label_values(&[connector, tenant, call, status_class(status)]).inc();
    }

    pub fn webhook(&self, connector: &str, tenant: &str, outcome: &str) {
        self.webhooks.with_label_values(&[connector, tenant, outcome]).inc();
    }

    pub fn dead_letter(&self, connector: &str, tenant: &str, reason: &str) {
        self.dead_letters.with_label_values(&[connector, tenant, reason]).inc();
    }

    pub fn duplicate(&self, connector: &str, tenant: &str, kind: &str, n: u64) {
        self.duplicates.with_label_values(&[connector, tenant, kind]).inc_by(n);
    }

    pub fn sweep_confirmations(&self, connector: &str, tenant: &str, kind: &str, n: u64) {
        self.sweep_confirmations.with_label_values(&[connector, tenant, kind]).inc_by(n);
    }

    pub fn cursor_lag(&self, connector: &str, tenant: &str, seconds: f64) {
        self.cursor_lag.with_label_values(&[connector, tenant]).set(seconds);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        render_registry(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_named_metrics() {
        let m = Metrics::new();
        m.published("azuga", "acme", "geoclock.azuga.pings", 3);
        m.api_call("azuga", "acme", "GET /v1/live-locations", Some(429));
        m.cursor_lag("servicetrade", "acme", 2.5);
        let text = m.render();
        assert!(text.contains("geoclock_connector_records_published_total{connector=\"azuga\",tenant=\"acme\",topic=\"geoclock.azuga.pings\"} 3"), "{text}");
        assert!(text.contains("status=\"429\""));
        assert!(text.contains("geoclock_connector_reconcile_cursor_lag_seconds"));
    }
}
