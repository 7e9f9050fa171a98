//! The connectors' Prometheus metrics, one typed method per event so that a
//! metric's name, labels and log line are decided in one place; built with
//! [`crate::telemetry::metrics`].
//!
//! Names: `geoclock_connector_<what>_<unit>`. Label sets are fixed:
//! `connector` (`servicetrade`, `azuga`), `tenant` (from the tenants file,
//! so bounded), plus one bounded label per metric (`topic`, `call`/`status`,
//! `outcome`, `reason`, `job`). No label ever carries an id, a URL or a
//! secret. Every counter an alert reads starts at zero for every tenant.
//! Periodic jobs (`reconcile`, `entity_sync`, `live_poll`, `history`)
//! report their last success and interval ([`Jobs`]); `working_hours` says
//! whether a tenant's fleet is expected to be driving now (07:00–19:00 on
//! weekdays in the tenant's timezone), so "no pings" can alert only then.

use chrono::{Datelike, Timelike};
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Registry};

use crate::telemetry::metrics::{self as m, Jobs};

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
    horizon: IntCounterVec,
    working_hours: IntGaugeVec,
    pub jobs: Jobs,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Webhook outcomes, as counted.
pub const WEBHOOK_OUTCOMES: [&str; 6] =
    ["accepted", "duplicate", "unauthorized", "malformed", "overloaded", "unknown_tenant"];

/// What happens to an entity past the mirror horizon
/// ([`crate::model::Settings::mirror_horizon_ms`]).
pub const HORIZON_ACTIONS: [&str; 2] = ["skipped", "forgotten"];

/// Dead-letter reason classes a connector uses.
pub const DEAD_LETTER_REASONS: [&str; 6] = ["malformed", "invalid", "position", "speed", "time", "conflict"];

impl Metrics {
    pub fn new() -> Metrics {
        let r = m::registry();
        let published = m::counter(
            &r,
            "geoclock_connector_records_published_total",
            "Records acknowledged by the broker.",
            &["connector", "tenant", "topic"],
        );
        let api_calls = m::counter(
            &r,
            "geoclock_connector_api_calls_total",
            "Vendor API calls by call and HTTP status class (2xx, 4xx, 429, 5xx, error).",
            &["connector", "tenant", "call", "status"],
        );
        let webhooks = m::counter(
            &r,
            "geoclock_connector_webhook_deliveries_total",
            "Webhook deliveries received, by outcome (accepted, duplicate, unauthorized, malformed, overloaded, unknown_tenant).",
            &["connector", "tenant", "outcome"],
        );
        let dead_letters = m::counter(
            &r,
            "geoclock_connector_dead_letters_total",
            "Records sent to the dead-letter topic, by reason class.",
            &["connector", "tenant", "reason"],
        );
        let duplicates = m::counter(
            &r,
            "geoclock_connector_duplicates_dropped_total",
            "Items already published, dropped (pings, unchanged entities).",
            &["connector", "tenant", "kind"],
        );
        let cursor_lag = m::float_gauge(
            &r,
            "geoclock_connector_reconcile_cursor_lag_seconds",
            "Seconds since the start of the last reconciliation pass that completed (set after every pass, failed ones included).",
            &["connector", "tenant"],
        );
        let sweep_confirmations = m::counter(
            &r,
            "geoclock_connector_sweep_confirmations_total",
            "Entities a full sweep found missing, more than its share at once, confirmed one by one before any tombstone.",
            &["connector", "tenant", "kind"],
        );
        let horizon = m::counter(
            &r,
            "geoclock_connector_past_horizon_total",
            "Appointments and clock events past the tenant's mirror horizon: not published (skipped) or let go by the ledger (forgotten).",
            &["connector", "tenant", "action"],
        );
        let working_hours = m::gauge(
            &r,
            "geoclock_connector_working_hours",
            "1 while the tenant's fleet is expected to drive (07:00-19:00 local, Monday to Friday), else 0.",
            &["tenant"],
        );
        let jobs = Jobs::new(&r, "connector", &["connector", "tenant"]);
        Metrics {
            registry: r,
            published,
            api_calls,
            webhooks,
            dead_letters,
            duplicates,
            cursor_lag,
            sweep_confirmations,
            horizon,
            working_hours,
            jobs,
        }
    }

    /// Creates `tenant`'s counters at zero (`topics`: what it publishes to).
    pub fn tenant(&self, connector: &str, tenant: &str, topics: &[String]) {
        for t in topics {
            self.published.with_label_values(&[connector, tenant, t]).inc_by(0);
        }
        for o in WEBHOOK_OUTCOMES {
            self.webhooks.with_label_values(&[connector, tenant, o]).inc_by(0);
        }
        for r in DEAD_LETTER_REASONS {
            self.dead_letters.with_label_values(&[connector, tenant, r]).inc_by(0);
        }
        for k in ["ping", "entity"] {
            self.duplicates.with_label_values(&[connector, tenant, k]).inc_by(0);
        }
        for a in HORIZON_ACTIONS {
            self.horizon.with_label_values(&[connector, tenant, a]).inc_by(0);
        }
    }

    /// Sets `working_hours` for a tenant at `now` (unix ms) in `timezone`.
    pub fn working_hours(&self, tenant: &str, timezone: Option<&str>, now_ms: i64) {
        self.working_hours.with_label_values(&[tenant]).set(i64::from(is_working_hours(timezone, now_ms)));
    }

    pub fn published(&self, connector: &str, tenant: &str, topic: &str, n: u64) {
        self.published.with_label_values(&[connector, tenant, topic]).inc_by(n);
    }

    pub fn api_call(&self, connector: &str, tenant: &str, call: &str, status: Option<u16>) {
        self.api_calls.with_label_values(&[connector, tenant, call, m::status_class(status)]).inc();
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

    /// `action`: one of [`HORIZON_ACTIONS`].
    pub fn past_horizon(&self, connector: &str, tenant: &str, action: &str, n: u64) {
        self.horizon.with_label_values(&[connector, tenant, action]).inc_by(n);
    }

    pub fn cursor_lag(&self, connector: &str, tenant: &str, seconds: f64) {
        self.cursor_lag.with_label_values(&[connector, tenant]).set(seconds);
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

/// Whether `now_ms` falls in a fleet's working hours (07:00–19:00 Monday
/// to Friday in `timezone`, UTC when absent or unknown). Pure.
pub fn is_working_hours(timezone: Option<&str>, now_ms: i64) -> bool {
    let utc = chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
    let (weekday, hour) = match timezone.and_then(|z| z.parse::<chrono_tz::Tz>().ok()) {
        Some(tz) => {
            let l = utc.with_timezone(&tz);
            (l.weekday().number_from_monday(), l.hour())
        }
        None => (utc.weekday().number_from_monday(), utc.hour()),
    };
    weekday <= 5 && (7..19).contains(&hour)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_named_metrics_with_zeroed_counters() {
        let m = Metrics::new();
        m.tenant("azuga", "acme", &["geoclock.azuga.pings".to_string()]);
        m.published("azuga", "acme", "geoclock.azuga.pings", 3);
        m.api_call("azuga", "acme", "GET /v1/live-locations", Some(429));
        m.cursor_lag("servicetrade", "acme", 2.5);
        m.tenant("servicetrade", "acme", &[]);
        m.past_horizon("servicetrade", "acme", "forgotten", 4);
        m.jobs.declare(&["azuga", "acme", "live_poll"], 120.0);
        let text = m.render();
        assert!(text.contains("geoclock_connector_records_published_total{connector=\"azuga\",tenant=\"acme\",topic=\"geoclock.azuga.pings\"} 3"), "{text}");
        assert!(text.contains("status=\"429\""));
        assert!(text.contains(
            "geoclock_connector_past_horizon_total{action=\"forgotten\",connector=\"servicetrade\",tenant=\"acme\"} 4"
        ));
        assert!(text.contains(
            "geoclock_connector_past_horizon_total{action=\"skipped\",connector=\"servicetrade\",tenant=\"acme\"} 0"
        ));
        assert!(text.contains("geoclock_connector_reconcile_cursor_lag_seconds"));
        assert!(text.contains("geoclock_connector_webhook_deliveries_total{connector=\"azuga\",outcome=\"unauthorized\",tenant=\"acme\"} 0"));
        assert!(text.contains(
            "geoclock_connector_job_interval_seconds{connector=\"azuga\",job=\"live_poll\",tenant=\"acme\"} 120"
        ));
    }

    #[test]
    fn working_hours_are_weekday_daytime_in_the_tenants_zone() {
        let at = |s: &str| crate::model::Ts::parse(s).unwrap().millis();
        // Tuesday 13:00 UTC = 08:00 in New York.
        assert!(is_working_hours(Some("America/New_York"), at("2026-12-01T13:00:00Z")));
        // Tuesday 11:00 UTC = 06:00 in New York: not yet.
        assert!(!is_working_hours(Some("America/New_York"), at("2026-12-01T11:00:00Z")));
        // Saturday.
        assert!(!is_working_hours(None, at("2026-12-05T12:00:00Z")));
        assert!(is_working_hours(None, at("2026-12-04T18:59:00Z")));
    }
}
