//! `geoclock report serve`: the Activity Report over HTTP.
//!
//! `GET /report/{tenant}?day=YYYY-MM-DD&format=html|csv|json` (day: the
//! tenant's local day, default today there; format default html), with the
//! tenant's report token as `Authorization: Bearer …` or `?token=…`.
//! Unknown tenants and wrong or missing tokens get the same 401 (which
//! tenants exist is not revealed); a tenant without a token gets 403. Tokens
//! are compared in constant time and never logged. `/healthz`, `/metrics`
//! (`geoclock_report_requests_total{format,status}`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::NaiveDate;
use prometheus::{IntCounterVec, Registry};

use super::join::join;
use super::render::{csv, for_day, html, json, local_day};
use super::replica::Replica;
use super::state::rows_from_state;
use crate::connect::metrics::{counter, render_registry};
use crate::connect::tenants::Tenant;
use crate::kafka::codec::Codec;
use crate::kafka::registry::SchemaRegistry;
use crate::kafka::topics::Catalogue;
use crate::sim::server::{serve, Running};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("report server: {0}")]
    Start(String),
}

pub struct Options {
    pub brokers: String,
    pub catalogue: Catalogue,
    pub registry: Arc<dyn SchemaRegistry>,
    pub listen: String,
    pub state_dir: std::path::PathBuf,
}

struct App {
    replica: Replica,
    tenants: HashMap<String, Tenant>,
    registry: Registry,
    requests: IntCounterVec,
}

/// A running report server.
pub struct Server {
    running: Running,
    _app: Arc<App>,
}

impl Server {
    pub fn url(&self) -> String {
        self.running.url()
    }

    pub async fn stop(self) {
        self.running.stop().await;
    }

    pub async fn wait(self) {
        self.running.wait().await;
    }
}

/// Starts the replica and serves on `opts.listen`, on `runtime`.
pub fn start(opts: Options, tenants: Vec<Tenant>, runtime: tokio::runtime::Handle) -> Result<Server, ReportError> {
    let codec =
        Arc::new(Codec::new(opts.registry.clone(), &opts.catalogue).map_err(|e| ReportError::Start(e.to_string()))?);
    let replica = Replica::start(&opts.brokers, &opts.catalogue, codec, &opts.state_dir.join("report-replica"))
        .map_err(|e| ReportError::Start(e.to_string()))?;
    let registry = Registry::new();
    let requests = counter(
        &registry,
        "geoclock_report_requests_total",
        "Report requests by format and status.",
        &["format", "status"],
    );
    let app = Arc::new(App {
        replica,
        tenants: tenants.into_iter().map(|t| (t.name.clone(), t)).collect(),
        registry,
        requests,
    });
    let router = Router::new()
        .route("/report/{tenant}", get(report))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(|s: State<Arc<App>>| async move { render_registry(&s.registry) }))
        .with_state(app.clone());
    let running = runtime.block_on(serve(router, &opts.listen)).map_err(|e| ReportError::Start(e.to_string()))?;
    Ok(Server { running, _app: app })
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn report(
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let format = match q.get("format").map(String::as_str).unwrap_or("html") {
        f @ ("html" | "csv" | "json") => f,
        _ => "other",
    };
    let answer = answer(&app, &tenant, &q, &headers, format).await;
    app.requests.with_label_values(&[format, answer.status().as_str()]).inc();
    answer
}

async fn answer(
    app: &Arc<App>,
    tenant: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    format: &str,
) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .or(q.get("token").map(String::as_str))
        .unwrap_or("");
    let Some(t) = app.tenants.get(tenant) else {
        return (StatusCode::UNAUTHORIZED, "unknown tenant or wrong token\n").into_response();
    };
    let Some(token) = t.email.as_ref().and_then(|e| e.report_token.as_ref()) else {
        return (StatusCode::FORBIDDEN, "the report is disabled for this tenant (no email.report_token)\n")
            .into_response();
    };
    if !same(given.as_bytes(), token.expose().as_bytes()) {
        return (StatusCode::UNAUTHORIZED, "unknown tenant or wrong token\n").into_response();
    }
    if format == "other" {
        return (StatusCode::BAD_REQUEST, "format must be html, csv or json\n").into_response();
    }
    let tz = t.timezone.clone();
    let day = match q.get("day") {
        Some(d) => match d.parse::<NaiveDate>() {
            Ok(d) => d,
            Err(_) => return (StatusCode::BAD_REQUEST, "day must be YYYY-MM-DD\n").into_response(),
        },
        None => local_day(crate::sink::now(), tz.as_deref()),
    };
    let (app, t, format) = (app.clone(), t.clone(), format.to_string());
    let built = tokio::task::spawn_blocking(move || {
        let rows = rows_from_state(app.replica.store.as_ref(), app.replica.partitions, &t.name, &t.settings)?;
        let (results, commands) = {
            let f = app.replica.feed.lock().unwrap_or_else(|e| e.into_inner());
            (f.results.get(&t.name).cloned().unwrap_or_default(), f.commands.get(&t.name).cloned().unwrap_or_default())
        };
        let web = t.email.as_ref().and_then(|e| e.servicetrade_web_url.clone());
        let lines = for_day(join(rows, &results, &commands, web.as_deref()), day, tz.as_deref());
        Ok::<_, super::state::StateRowsError>(match format.as_str() {
            "csv" => ("text/csv; charset=utf-8", csv(&lines, tz.as_deref())),
            "json" => ("application/json", json(&lines)),
            _ => ("text/html; charset=utf-8", html(&t.name, day, tz.as_deref(), &lines)),
        })
    })
    .await;
    match built {
        Ok(Ok((ctype, body))) => ([(header::CONTENT_TYPE, ctype)], body).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(tenant, error = %e, "report rows");
            (StatusCode::SERVICE_UNAVAILABLE, "report state not readable yet\n").into_response()
        }
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "report task failed\n").into_response(),
    }
}
