//! `geoclock report serve`: the Activity Report over HTTP.
//!
//! - `GET /report/{tenant}?day=YYYY-MM-DD&format=html|csv|json` (also
//!   `/report/{tenant}.csv`, `.json`, `.html`): the tenant's report for its
//!   local day (default: today in the tenant's zone; format default html).
//! - `GET /healthz` (alive), `GET /readyz` (the replica caught up once),
//!   `GET /metrics` (`geoclock_report_requests_total{format,status}`,
//!   `geoclock_report_replica_ready`).
//!
//! Access, checked in this order before anything else is looked at: a
//! tenant not in the tenants file → 404 (the answer names no tenant); a
//! tenant without `email.report_token` → 403 (its report is disabled); no
//! token or a wrong one → 401. The token is `Authorization: Bearer TOKEN`
//! or `?token=TOKEN`; both are compared through their SHA-256 digests, in
//! time independent of where they differ and of their lengths. Tokens
//! never reach logs, metrics or error texts; report answers are not cached
//! (`Cache-Control: no-store`) and send no referrer (a `?token=` URL must
//! not leak to ServiceTrade through the quick links).
//!
//! Until the replica has caught up once the report answers 503 with
//! `Retry-After` rather than a partial report. Building a report reads
//! RocksDB, so it runs on the blocking pool.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::NaiveDate;
use prometheus::{IntCounterVec, IntGauge, Registry};
use sha2::{Digest, Sha256};

use super::join::join;
use super::render::{content_security_policy, csv, for_day, html, json, local_day, zone};
use super::replica::{Replica, ReplicaError};
use crate::config::tenants::Tenant;
use crate::telemetry::metrics::{counter, render as render_registry};
use crate::http::server::{serve, Running};
use crate::kafka::codec::Codec;
use crate::kafka::registry::SchemaRegistry;
use crate::kafka::topics::Catalogue;
use crate::model::Ts;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("report server: schemas: {0}")]
    Codec(#[from] crate::kafka::codec::CodecError),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error("report server: {0}")]
    Listen(#[from] crate::http::server::ServeError),
    #[error("report server: metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Where the report server reads from and listens.
pub struct Options {
    pub brokers: String,
    pub catalogue: Catalogue,
    pub registry: Arc<dyn SchemaRegistry>,
    /// `HOST:PORT` (port 0: any free port; see [`Server::url`]).
    pub listen: String,
    /// The replica lives in `{state_dir}/report-replica`.
    pub state_dir: PathBuf,
}

struct App {
    replica: Replica,
    tenants: HashMap<String, Tenant>,
    registry: Registry,
    requests: IntCounterVec,
    ready: IntGauge,
}

impl App {
    fn render_metrics(&self) -> String {
        self.ready.set(i64::from(self.replica.ready()));
        render_registry(&self.registry)
    }
}

/// A running report server.
pub struct Server {
    running: Running,
    app: Arc<App>,
}

impl Server {
    /// `http://HOST:PORT`
    pub fn url(&self) -> String {
        self.running.url()
    }

    /// Whether the replica has caught up once (reports are served).
    pub fn ready(&self) -> bool {
        self.app.replica.ready()
    }

    /// The server's Prometheus metrics, for a process-wide `/metrics`.
    pub fn render_metrics(&self) -> String {
        self.app.render_metrics()
    }

    /// The same, as a function a separate metrics listener can own.
    pub fn metrics_renderer(&self) -> impl Fn() -> String + Send + 'static {
        let app = self.app.clone();
        move || app.render_metrics()
    }

    /// Stops accepting, finishes in-flight requests, stops the replica.
    pub async fn stop(self) {
        self.running.stop().await;
        let app = self.app.clone();
        let _ = tokio::task::spawn_blocking(move || app.replica.stop()).await;
    }

    /// Waits until the server ends (for the CLI).
    pub async fn wait(self) {
        self.running.wait().await;
    }
}

/// Starts the replica and serves on `opts.listen`, on `runtime`. Call it
/// from outside the runtime (it blocks until the listener is bound).
pub fn start(opts: Options, tenants: Vec<Tenant>, runtime: tokio::runtime::Handle) -> Result<Server, ReportError> {
    let codec = Arc::new(Codec::new(opts.registry.clone(), &opts.catalogue)?);
    let replica = Replica::start(&opts.brokers, &opts.catalogue, codec, &opts.state_dir.join("report-replica"))?;
    let registry = crate::telemetry::metrics::registry();
    let requests = counter(
        &registry,
        "geoclock_report_requests_total",
        "Report requests by format (html, csv, json, other) and HTTP status.",
        &["format", "status"],
    );
    let ready = IntGauge::new("geoclock_report_replica_ready", "1 once the report replica has caught up.")?;
    registry.register(Box::new(ready.clone()))?;
    let app = Arc::new(App {
        replica,
        tenants: tenants.into_iter().map(|t| (t.name.clone(), t)).collect(),
        registry,
        requests,
        ready,
    });
    let router = Router::new()
        .route("/report/{tenant}", get(report))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(|State(app): State<Arc<App>>| async move { app.render_metrics() }))
        .with_state(app.clone());
    let running = match runtime.block_on(serve(router, &opts.listen)) {
        Ok(r) => r,
        Err(e) => {
            app.replica.stop();
            return Err(e.into());
        }
    };
    Ok(Server { running, app })
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.replica.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "catching up with the processor's changelog and the sinks' results\n")
            .into_response()
    }
}

/// The report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Html,
    Csv,
    Json,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "html" => Some(Format::Html),
            "csv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Html => "html",
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }
}

/// The tenant a `/report/{segment}` names, and the format its suffix asks
/// for: `acme` or `acme.csv` (a tenant named `acme.csv` wins over the
/// suffix).
pub fn resolve_tenant<'a, T>(tenants: &'a HashMap<String, T>, segment: &str) -> Option<(&'a T, Option<Format>)> {
    if let Some(t) = tenants.get(segment) {
        return Some((t, None));
    }
    let (stem, suffix) = segment.rsplit_once('.')?;
    Some((tenants.get(stem)?, Some(Format::parse(suffix)?)))
}

/// The token a request presents: the `Authorization: Bearer` header, else
/// the `token` query parameter.
pub fn presented_token<'a>(headers: &'a HeaderMap, query: &'a HashMap<String, String>) -> Option<&'a str> {
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
        let (scheme, token) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    bearer.or(query.get("token").map(String::as_str)).filter(|t| !t.is_empty())
}

/// Compares two tokens in time independent of their contents and lengths.
pub fn token_matches(given: &str, expected: &str) -> bool {
    let (a, b) = (Sha256::digest(given.as_bytes()), Sha256::digest(expected.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], text).into_response()
}

async fn report(
    State(app): State<Arc<App>>,
    Path(segment): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let asked = q.get("format").map(String::as_str);
    let (response, format) = answer(&app, &segment, &q, &headers).await;
    let label = format.map(Format::as_str).or(asked.and_then(Format::parse).map(Format::as_str)).unwrap_or("other");
    let status = response.status();
    app.requests.with_label_values(&[label, status.as_str()]).inc();
    tracing::debug!(format = label, status = status.as_u16(), "report request");
    response
}

/// The answer, and the format it was for when known.
async fn answer(
    app: &Arc<App>,
    segment: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
) -> (Response, Option<Format>) {
    let Some((tenant, suffix)) = resolve_tenant(&app.tenants, segment) else {
        return (plain(StatusCode::NOT_FOUND, "no such report\n"), None);
    };
    let Some(expected) = tenant.email.as_ref().and_then(|e| e.report_token.as_ref()) else {
        return (plain(StatusCode::FORBIDDEN, "report disabled for this tenant\n"), suffix);
    };
    if !presented_token(headers, q).is_some_and(|given| token_matches(given, expected.expose())) {
        let mut r = plain(StatusCode::UNAUTHORIZED, "a valid report token is required\n");
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"geoclock-report\""));
        return (r, suffix);
    }
    let format = match (suffix, q.get("format").map(String::as_str)) {
        (s, None) => s.unwrap_or(Format::Html),
        (None, Some(f)) => match Format::parse(f) {
            Some(f) => f,
            None => return (plain(StatusCode::BAD_REQUEST, "format must be html, csv or json\n"), None),
        },
        (Some(s), Some(f)) if s.as_str() == f => s,
        (Some(s), Some(_)) => return (plain(StatusCode::BAD_REQUEST, "two different formats asked for\n"), Some(s)),
    };
    let tz = zone(tenant.timezone.as_deref());
    let day = match q.get("day") {
        None => local_day(Ts::from_millis(chrono::Utc::now().timestamp_millis()), tz),
        Some(d) => match NaiveDate::parse_from_str(d, "%Y-%m-%d") {
            Ok(d) => d,
            Err(_) => return (plain(StatusCode::BAD_REQUEST, "day must be YYYY-MM-DD\n"), Some(format)),
        },
    };
    if !app.replica.ready() {
        let mut r = plain(StatusCode::SERVICE_UNAVAILABLE, "the report is catching up; try again shortly\n");
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        return (r, Some(format));
    }
    let (app, tenant) = (app.clone(), tenant.clone());
    let built = tokio::task::spawn_blocking(move || build(&app, &tenant, day, format)).await;
    let response = match built {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "report not built");
            plain(StatusCode::SERVICE_UNAVAILABLE, "report state not readable\n")
        }
        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "report not built\n"),
    };
    (response, Some(format))
}

/// The report of `tenant` for `day` in `format`. Blocking.
fn build(app: &App, tenant: &Tenant, day: NaiveDate, format: Format) -> Result<Response, ReplicaError> {
    let tz = zone(tenant.timezone.as_deref());
    let rows = for_day(app.replica.rows(&tenant.name, &tenant.settings)?, day, tz);
    let appointments: Vec<String> = rows.iter().map(|r| r.appointment.to_string()).collect();
    let feed = app.replica.feed(&tenant.name, appointments.iter().map(String::as_str))?;
    let web = tenant.email.as_ref().and_then(|e| e.servicetrade_web_url.as_deref());
    let lines = join(rows, &feed.results, &feed.commands, web);
    let common = [
        (header::CACHE_CONTROL, "no-store".to_string()),
        (header::REFERRER_POLICY, "no-referrer".to_string()),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
    ];
    Ok(match format {
        Format::Html => (
            common,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8".to_string()),
                (header::CONTENT_SECURITY_POLICY, content_security_policy()),
            ],
            html(&tenant.name, day, tz, &lines),
        )
            .into_response(),
        Format::Csv => (
            common,
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8; header=present".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("inline; filename=\"activity-report-{}-{day}.csv\"", tenant.name),
                ),
            ],
            csv(&lines, tz),
        )
            .into_response(),
        Format::Json => {
            (common, [(header::CONTENT_TYPE, "application/json".to_string())], json(&lines)).into_response()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_resolve_with_or_without_a_format_suffix() {
        let tenants: HashMap<String, u8> = HashMap::from([("acme".into(), 1), ("odd.csv".into(), 2)]);
        assert_eq!(resolve_tenant(&tenants, "acme"), Some((&1, None)));
        assert_eq!(resolve_tenant(&tenants, "acme.csv"), Some((&1, Some(Format::Csv))));
        assert_eq!(resolve_tenant(&tenants, "acme.json"), Some((&1, Some(Format::Json))));
        assert_eq!(resolve_tenant(&tenants, "odd.csv"), Some((&2, None)), "a tenant's own name wins");
        assert_eq!(resolve_tenant(&tenants, "acme.pdf"), None);
        assert_eq!(resolve_tenant(&tenants, "nobody"), None);
        assert_eq!(resolve_tenant(&tenants, ""), None);
    }

    #[test]
    fn tokens_come_from_the_bearer_header_or_the_query() {
        let mut h = HeaderMap::new();
        let mut q = HashMap::new();
        assert_eq!(presented_token(&h, &q), None);
        q.insert("token".to_string(), "from-query".to_string());
        assert_eq!(presented_token(&h, &q), Some("from-query"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer  from-header "));
        assert_eq!(presented_token(&h, &q), Some("from-header"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic dXNlcjpwYXNz"));
        assert_eq!(presented_token(&h, &q), Some("from-query"), "other schemes are not tokens");
        q.insert("token".to_string(), String::new());
        assert_eq!(presented_token(&h, &q), None, "an empty token is none");
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cre", "s3cret"));
        assert!(!token_matches("s3creT", "s3cret"));
        assert!(!token_matches("", "s3cret"));
    }
}
