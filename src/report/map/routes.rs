//! The map's HTTP routes, behind the report's access check
//! ([`crate::report::access::Access`], shared with the report: the token in
//! an `Authorization: Bearer` header or a signed link of scope `map`, one
//! uniform 401, failures throttled per client address):
//!
//! - `GET /map/{tenant}?day=YYYY-MM-DD`: the page (default: the live day);
//! - `GET /map/{tenant}/geojson?day=&breadcrumbs=all|VEHICLE`: the
//!   FeatureCollection ([`super::geojson`]); `application/geo+json`;
//! - `GET /map/{tenant}/events`: the live stream (server-sent events:
//!   `hello` on connect, then `fix` and `view`, see [`super::live`]).
//!
//! Thin: every answer is computed by the pure modules or read from
//! [`MapData`]. Until the data caught up once the GeoJSON answers 503 with
//! `Retry-After` (the page retries); the stream stays open and starts
//! sending when views are published. Answers are not cached and send no
//! referrer (the page's URL carries a signed link).
//!
//! The page carries the link its script uses for the GeoJSON, the stream
//! and the report links (an `EventSource` cannot send headers): the link
//! the page was opened with, or, when it was opened with the token in a
//! header, a fresh one valid for [`LINK_TTL_S`]. A link is never extended:
//! a page opened by link hands out that same link.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::NaiveDate;
use futures::stream::Stream;
use prometheus::{IntCounterVec, IntGauge};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::geojson::feature_collection;
use super::live::{MapData, MapError};
use super::page::{content_security_policy, page};
use crate::config::link::{self, LINK_TTL_S, MAP_SCOPE};
use crate::config::tenants::Tenant;
use crate::report::access::{plain, refusal, Access};

/// The map's metrics (registered by the report server).
#[derive(Clone)]
pub struct MapMetrics {
    /// `geoclock_report_map_requests_total{endpoint,status}`
    pub requests: IntCounterVec,
    /// `geoclock_report_map_streams`: open event streams.
    pub streams: IntGauge,
}

struct MapApp {
    data: Arc<dyn MapData>,
    tenants: Arc<HashMap<String, Tenant>>,
    access: Arc<Access>,
    metrics: MapMetrics,
}

/// The map's routes over `data`, behind `access`.
pub fn router(
    data: Arc<dyn MapData>,
    tenants: Arc<HashMap<String, Tenant>>,
    access: Arc<Access>,
    metrics: MapMetrics,
) -> Router {
    let app = Arc::new(MapApp { data, tenants, access, metrics });
    Router::new()
        .route("/map/{tenant}", get(page_route))
        .route("/map/{tenant}/geojson", get(geojson_route))
        .route("/map/{tenant}/events", get(events_route))
        .with_state(app)
}

type Q = Query<HashMap<String, String>>;

/// The tenant when the request may see its map; else the refusal (a map
/// has no format suffix: `acme.csv` is no map).
fn access<'a>(
    app: &'a MapApp,
    segment: &str,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    client: SocketAddr,
) -> Result<&'a Tenant, Response> {
    let now_s = chrono::Utc::now().timestamp();
    match app.access.authorize(&app.tenants, segment, &[MAP_SCOPE], headers, q, client.ip(), Instant::now(), now_s) {
        Ok((tenant, None)) => Ok(tenant),
        Ok((_, Some(_))) => Err(plain(StatusCode::NOT_FOUND, "no such map\n")),
        Err((refused, _)) => Err(refusal(refused)),
    }
}

/// The link the page hands its script (see the module docs): the request's
/// own when it is valid, else a fresh one. Both parts are URL-safe (digits,
/// hex).
fn page_link(tenant: &Tenant, q: &HashMap<String, String>, now_s: i64) -> String {
    let Some(token) = tenant.email.as_ref().and_then(|e| e.report_token.as_ref()) else {
        return String::new();
    };
    match (q.get("expires"), q.get("sig")) {
        (Some(e), Some(s)) if link::verify(token, &tenant.name, MAP_SCOPE, e, s, now_s).is_ok() => {
            format!("expires={e}&sig={s}")
        }
        _ => link::query(token, &tenant.name, MAP_SCOPE, now_s + LINK_TTL_S),
    }
}

fn day_param(q: &HashMap<String, String>) -> Result<Option<NaiveDate>, Response> {
    match q.get("day").map(String::as_str) {
        None | Some("") => Ok(None),
        Some(d) => NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .map(Some)
            .map_err(|_| plain(StatusCode::BAD_REQUEST, "day must be YYYY-MM-DD\n")),
    }
}

fn count(app: &MapApp, endpoint: &str, r: Response) -> Response {
    app.metrics.requests.with_label_values(&[endpoint, r.status().as_str()]).inc();
    r
}

const COMMON: [(header::HeaderName, &str); 3] = [
    (header::CACHE_CONTROL, "no-store"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
];

async fn page_route(
    State(app): State<Arc<MapApp>>,
    Path(segment): Path<String>,
    Query(q): Q,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let r = match access(&app, &segment, &headers, &q, client).and_then(|t| Ok((t, day_param(&q)?))) {
        Err(r) => r,
        Ok((tenant, day)) => (
            COMMON,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8".to_string()),
                (header::CONTENT_SECURITY_POLICY, content_security_policy(&tenant.map)),
            ],
            page(tenant, day, &page_link(tenant, &q, chrono::Utc::now().timestamp())),
        )
            .into_response(),
    };
    count(&app, "page", r)
}

async fn geojson_route(
    State(app): State<Arc<MapApp>>,
    Path(segment): Path<String>,
    Query(q): Q,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let r = match access(&app, &segment, &headers, &q, client).and_then(|t| Ok((t.clone(), day_param(&q)?))) {
        Err(r) => r,
        Ok((tenant, day)) => {
            let data = app.data.clone();
            let crumbs = q.get("breadcrumbs").cloned();
            let built = tokio::task::spawn_blocking(move || {
                let view = data.view(&tenant, day)?;
                let trails = match crumbs.as_deref() {
                    None | Some("") | Some("none") => Vec::new(),
                    Some("all") => data.trails(&tenant, view.day, None)?,
                    Some(v) => data.trails(&tenant, view.day, Some(v))?,
                };
                Ok::<_, MapError>(feature_collection(&view, &trails).to_string())
            })
            .await;
            match built {
                Ok(Ok(body)) => (COMMON, [(header::CONTENT_TYPE, "application/geo+json")], body).into_response(),
                Ok(Err(MapError::NotReady)) => {
                    let mut r = plain(StatusCode::SERVICE_UNAVAILABLE, "the map is catching up; try again shortly\n");
                    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
                    r
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "map not built");
                    plain(StatusCode::SERVICE_UNAVAILABLE, "map state not readable\n")
                }
                Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "map not built\n"),
            }
        }
    };
    count(&app, "geojson", r)
}

/// Counts an open stream while it lives.
struct Open(IntGauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn events_route(
    State(app): State<Arc<MapApp>>,
    Path(segment): Path<String>,
    Query(q): Q,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let tenant = match access(&app, &segment, &headers, &q, client) {
        Ok(t) => t,
        Err(r) => return count(&app, "events", r),
    };
    let Some((rx, closing)) = app.data.hub().subscribe(&tenant.name) else {
        return count(&app, "events", plain(StatusCode::NOT_FOUND, "no such map\n"));
    };
    let current = app.data.hub().view(&tenant.name);
    let hello = json!({
        "seq": current.as_ref().map_or(0, |v| v.seq),
        "day": current.as_ref().map(|v| v.day.to_string()),
        "now": current.as_ref().and_then(|v| v.now),
    });
    app.metrics.streams.inc();
    let open = Open(app.metrics.streams.clone());
    let first = Event::default().event("hello").retry(Duration::from_secs(1)).data(hello.to_string());
    let mut r = Sse::new(stream(first, rx, closing, open))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    count(&app, "events", r)
}

/// `hello`, then the hub's events until it closes; a page that fell too
/// far behind is told to `resync` (reload the GeoJSON).
fn stream(
    first: Event,
    rx: tokio::sync::broadcast::Receiver<Arc<super::live::LiveEvent>>,
    closing: tokio::sync::watch::Receiver<bool>,
    open: Open,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold((Some(first), rx, closing, open), |(first, mut rx, mut closing, open)| async move {
        if let Some(e) = first {
            return Some((Ok(e), (None, rx, closing, open)));
        }
        if *closing.borrow() {
            return None;
        }
        let event = tokio::select! {
            r = rx.recv() => match r {
                Ok(e) => Event::default().event(e.name).data(&e.data),
                Err(RecvError::Lagged(n)) => Event::default().event("resync").data(n.to_string()),
                Err(RecvError::Closed) => return None,
            },
            _ = closing.changed() => return None,
        };
        Some((Ok(event), (None, rx, closing, open)))
    })
}
