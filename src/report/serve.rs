//! `geoclock report serve`: the Activity Report and the live map over HTTP.
//!
//! - `GET /report/{tenant}?day=YYYY-MM-DD&format=html|csv|json` (also
//!   `/report/{tenant}.csv`, `.json`, `.html`): the tenant's report for its
//!   local day (default: today in the tenant's zone; format default html);
//!   `&office=ID` keeps only that office's rows ([`super::of_office`]).
//! - `GET /report/{tenant}/explain/{appointment}?tech=ID&format=html|text|json`:
//!   why each decision about the appointment was taken, or what stopped it
//!   ([`crate::audit::explain`], from the replica's state); every report
//!   row links to it. Same access rules as the report.
//! - `GET /map/{tenant}`, `/map/{tenant}/geojson`, `/map/{tenant}/events`:
//!   the live dispatch map ([`super::map::routes`]).
//! - `GET /healthz` (alive), `GET /readyz` (the replicas caught up once),
//!   `GET /metrics` (`geoclock_report_requests_total{format,status}`,
//!   `geoclock_report_replica_ready`,
//!   `geoclock_report_map_requests_total{endpoint,status}`,
//!   `geoclock_report_map_streams`,
//!   `geoclock_report_late_appointments{tenant}`).
//!
//! Access to a tenant's report and map is [`super::access`]'s one check,
//! before anything else is looked at: the token as `Authorization: Bearer
//! TOKEN`, or a short-lived signed link (the report: `?day=D&expires=…&sig=…`,
//! scope `report:D`, or with `&office=O` also scope `report:D/office:O`,
//! which opens only that office's rows and explanations; the map: scope
//! `map`); one uniform 401 for every
//! refusal, 429 for an address with too many recent failures (the report
//! and the map share that memory). Tokens never reach logs, metrics or
//! error texts; answers are not cached (`Cache-Control: no-store`) and send
//! no referrer (a signed link must not leak to ServiceTrade through the
//! quick links).
//!
//! Until the replica has caught up once the report answers 503 with
//! `Retry-After` rather than a partial report. Building a report reads
//! RocksDB, so it runs on the blocking pool. Stopping ends the map's event
//! streams first (a graceful stop waits for open requests).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::NaiveDate;
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use super::access::{plain, refusal, Access, Format, Refused};
use super::map::live::{Hub, LiveMap, MapData};
use super::map::positions::{Positions, PositionsError};
use super::map::routes::{router as map_router, MapMetrics};
use super::of_office;
use super::render::{
    content_security_policy, csv, explain_html, explain_security_policy, for_day, html, json, local_day, zone,
};
use super::replica::{Replica, ReplicaError};
use crate::config::link;
use crate::config::tenants::Tenant;
use crate::http::server::{serve, Running};
use crate::kafka::codec::Codec;
use crate::kafka::registry::SchemaRegistry;
use crate::kafka::topics::Catalogue;
use crate::model::{Id, Ts};
use crate::telemetry::metrics::{counter, registered};

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
    #[error(transparent)]
    Positions(#[from] PositionsError),
    #[error("report server: cannot start the map: {0}")]
    Map(std::io::Error),
}

/// Where the report server reads from and listens.
pub struct Options {
    pub brokers: String,
    pub catalogue: Catalogue,
    pub registry: Arc<dyn SchemaRegistry>,
    /// `HOST:PORT` (port 0: any free port; see [`Server::url`]).
    pub listen: String,
    /// The replicas live in `{state_dir}/report-replica` and
    /// `{state_dir}/report-positions`.
    pub state_dir: PathBuf,
}

struct App {
    replica: Arc<Replica>,
    positions: Arc<Positions>,
    map: Arc<LiveMap>,
    tenants: Arc<HashMap<String, Tenant>>,
    access: Arc<Access>,
    registry: Registry,
    requests: IntCounterVec,
    ready: IntGauge,
}

impl App {
    /// The registry, its readiness gauge brought up to date.
    fn metrics(&self) -> &Registry {
        self.ready.set(i64::from(self.replica.ready()));
        &self.registry
    }

    fn render_metrics(&self) -> String {
        crate::telemetry::metrics::render(self.metrics())
    }

    /// Stops the map (ending its streams), then both replicas. Blocking.
    fn stop_replicas(&self) {
        self.map.stop();
        self.positions.stop();
        self.replica.stop();
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

    /// Whether the replicas have caught up once (reports and maps are
    /// served).
    pub fn ready(&self) -> bool {
        self.app.map.ready()
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

    /// The server's registry, as a function a process-wide metrics
    /// listener can own (to merge with other components' registries).
    pub fn metrics_source(&self) -> impl Fn() -> Registry + Send + 'static {
        let app = self.app.clone();
        move || app.metrics().clone()
    }

    /// Ends the map's streams, stops accepting, finishes in-flight
    /// requests, stops the replicas.
    pub async fn stop(self) {
        self.app.map.hub().close();
        self.running.stop().await;
        let app = self.app.clone();
        let _ = tokio::task::spawn_blocking(move || app.stop_replicas()).await;
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
    let replica = Arc::new(Replica::start(
        &opts.brokers,
        &opts.catalogue,
        codec.clone(),
        &opts.state_dir.join("report-replica"),
    )?);
    let tenants: Arc<HashMap<String, Tenant>> = Arc::new(tenants.into_iter().map(|t| (t.name.clone(), t)).collect());
    let hub = Arc::new(Hub::new(tenants.keys().cloned()));
    let windows: HashMap<String, i64> =
        tenants.values().map(|t| (t.name.clone(), t.map.speed_window_s as i64 * 1000)).collect();
    let fixes_hub = hub.clone();
    let positions = Positions::start(
        &opts.brokers,
        &opts.catalogue,
        codec,
        &opts.state_dir.join("report-positions"),
        Box::new(move |tenant| windows.get(tenant).copied().unwrap_or(600_000)),
        Box::new(move |tenant, moved| fixes_hub.fixes(tenant, &moved)),
    );
    let positions = match positions {
        Ok(p) => Arc::new(p),
        Err(e) => {
            replica.stop();
            return Err(e.into());
        }
    };
    let registry = crate::telemetry::metrics::registry();
    let requests = counter(
        &registry,
        "geoclock_report_requests_total",
        "Report requests by format (html, csv, json, other; explain: an explanation page) and HTTP status.",
        &["format", "status"],
    );
    let ready = IntGauge::new("geoclock_report_replica_ready", "1 once the report replica has caught up.")?;
    registry.register(Box::new(ready.clone()))?;
    let late = registered(
        &registry,
        "geoclock_report_late_appointments",
        IntGaugeVec::new(
            Opts::new(
                "geoclock_report_late_appointments",
                "Appointments of the live day whose technician En Route is estimated to arrive after the window ends.",
            ),
            &["tenant"],
        ),
    );
    let map_metrics = MapMetrics {
        requests: counter(
            &registry,
            "geoclock_report_map_requests_total",
            "Map requests by endpoint (page, geojson, events) and HTTP status.",
            &["endpoint", "status"],
        ),
        streams: registered(
            &registry,
            "geoclock_report_map_streams",
            IntGauge::new("geoclock_report_map_streams", "Open map event streams."),
        ),
    };
    let map = match LiveMap::start(hub, replica.clone(), positions.clone(), tenants.clone(), late) {
        Ok(m) => m,
        Err(e) => {
            positions.stop();
            replica.stop();
            return Err(ReportError::Map(e));
        }
    };
    let access = Arc::new(Access::default());
    let app = Arc::new(App {
        replica,
        positions,
        map: map.clone(),
        tenants: tenants.clone(),
        access: access.clone(),
        registry,
        requests,
        ready,
    });
    let router = Router::new()
        .route("/report/{tenant}", get(report))
        .route("/report/{tenant}/explain/{appointment}", get(explain))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(|State(app): State<Arc<App>>| async move { app.render_metrics() }))
        .with_state(app.clone())
        .merge(map_router(map, tenants, access, map_metrics));
    let running = match runtime.block_on(serve(router, &opts.listen)) {
        Ok(r) => r,
        Err(e) => {
            app.stop_replicas();
            return Err(e.into());
        }
    };
    Ok(Server { running, app })
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.map.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "catching up with the processor's changelog, the sinks' results and the pings\n",
        )
            .into_response()
    }
}

async fn report(
    State(app): State<Arc<App>>,
    Path(segment): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let asked = q.get("format").map(String::as_str);
    let (response, format) = answer(&app, &segment, &q, &headers, client).await;
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
    client: SocketAddr,
) -> (Response, Option<Format>) {
    let scopes = report_scopes(q);
    let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
    let now_s = chrono::Utc::now().timestamp();
    let checked = app.access.authorize(&app.tenants, segment, &scopes, headers, q, client.ip(), Instant::now(), now_s);
    let (tenant, suffix) = match checked {
        Ok(t) => t,
        Err((refused, suffix)) => return (refusal(refused), suffix),
    };
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
    // A link for one day's report opens that day only: its page offers no
    // links to other days (they would answer 401). A token in a header or
    // a map link opens every day.
    let other_days = match (q.get("expires"), q.get("sig")) {
        (Some(exp), Some(sig)) => tenant
            .email
            .as_ref()
            .and_then(|e| e.report_token.as_ref())
            .is_some_and(|t| link::verify(t, &tenant.name, link::MAP_SCOPE, exp, sig, now_s).is_ok()),
        _ => true,
    };
    let (app, tenant, office) = (app.clone(), tenant.clone(), office_param(q));
    let built =
        tokio::task::spawn_blocking(move || build(&app, &tenant, day, office.as_ref(), format, other_days)).await;
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

/// `GET /report/{tenant}/explain/{appointment}` (module docs).
async fn explain(
    State(app): State<Arc<App>>,
    Path((tenant, appointment)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    // The header, or a link for the day's report the explanation was
    // opened from (`day=D`, scope `report:D`) or for the map.
    let scopes = report_scopes(&q);
    let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
    let now_s = chrono::Utc::now().timestamp();
    let checked =
        app.access.authorize(&app.tenants, &tenant, &scopes, &headers, &q, client.ip(), Instant::now(), now_s);
    // The tenant exactly, without a format suffix (`acme.csv` is no tenant here).
    let authorized = match checked {
        Ok((t, None)) => Ok(t.clone()),
        Ok((_, Some(_))) => Err(Refused::Unauthorized),
        Err((refused, _)) => Err(refused),
    };
    let tenant = match authorized {
        Ok(t) => t,
        Err(refused) => {
            let r = refusal(refused);
            app.requests.with_label_values(&["explain", r.status().as_str()]).inc();
            return r;
        }
    };
    let format = q.get("format").map(String::as_str).unwrap_or("html").to_string();
    if !matches!(format.as_str(), "html" | "text" | "json") {
        return plain(StatusCode::BAD_REQUEST, "format must be html, text or json\n");
    }
    if !app.replica.ready() {
        let mut r = plain(StatusCode::SERVICE_UNAVAILABLE, "the report is catching up; try again shortly\n");
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        return r;
    }
    let tech = q.get("tech").filter(|t| !t.is_empty()).map(|t| Id::from(t.as_str()));
    let appt = Id::from(appointment.as_str());
    let a = app.clone();
    let office = office_param(&q);
    let built = tokio::task::spawn_blocking(move || {
        // Asked within one office (as its signed links are): only its appointments.
        if let Some(o) = &office {
            let rows = a.replica.rows(&tenant.name, &tenant.settings)?;
            if !rows.iter().any(|r| r.appointment == appt && r.office.as_ref() == Some(o)) {
                return Ok((None, tenant));
            }
        }
        a.replica.explanation(&tenant.name, &tenant.settings, &appt, tech.as_ref()).map(|e| (e, tenant))
    })
    .await;
    let common = [
        (header::CACHE_CONTROL, "no-store".to_string()),
        (header::REFERRER_POLICY, "no-referrer".to_string()),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
    ];
    let response = match built {
        Ok(Ok((Some(e), tenant))) => match format.as_str() {
            "json" => (
                common,
                [(header::CONTENT_TYPE, "application/json".to_string())],
                serde_json::to_string_pretty(&e).unwrap_or_default(),
            )
                .into_response(),
            "text" => {
                (common, [(header::CONTENT_TYPE, "text/plain; charset=utf-8".to_string())], e.text()).into_response()
            }
            _ => (
                common,
                [
                    (header::CONTENT_TYPE, "text/html; charset=utf-8".to_string()),
                    (header::CONTENT_SECURITY_POLICY, explain_security_policy()),
                ],
                explain_html(&tenant.name, &e),
            )
                .into_response(),
        },
        Ok(Ok((None, _))) => plain(StatusCode::NOT_FOUND, "no such appointment in the report's state\n"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "explanation not built");
            plain(StatusCode::SERVICE_UNAVAILABLE, "report state not readable\n")
        }
        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "explanation not built\n"),
    };
    app.requests.with_label_values(&["explain", response.status().as_str()]).inc();
    response
}

/// `?office=ID`, when given and not empty.
fn office_param(q: &HashMap<String, String>) -> Option<Id> {
    q.get("office").filter(|o| !o.is_empty()).map(|o| Id::from(o.as_str()))
}

/// The signed-link scopes that open what `q` asks for: the day's report
/// (and, for one office's rows, that office's scope), or the map.
fn report_scopes(q: &HashMap<String, String>) -> Vec<String> {
    let day = q.get("day").map_or("", String::as_str);
    let mut scopes = vec![link::report_scope(day), link::MAP_SCOPE.to_string()];
    if let Some(o) = office_param(q) {
        scopes.push(link::office_report_scope(day, o.as_str()));
    }
    scopes
}

/// The report of `tenant` for `day` (one office's rows, or all) in `format`. Blocking.
fn build(
    app: &App,
    tenant: &Tenant,
    day: NaiveDate,
    office: Option<&Id>,
    format: Format,
    other_days: bool,
) -> Result<Response, ReplicaError> {
    let tz = zone(tenant.timezone.as_deref());
    let rows = of_office(for_day(app.replica.rows(&tenant.name, &tenant.settings)?, day, tz), office);
    let web = Some(tenant.servicetrade_web_url());
    let lines = app.replica.lines(&tenant.name, rows, web)?;
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
            html(&tenant.name, day, tz, &lines, other_days),
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
        Format::Json => (common, [(header::CONTENT_TYPE, "application/json".to_string())], json(&tenant.name, &lines))
            .into_response(),
    })
}
