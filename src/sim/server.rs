//! What both simulators share: the call-log layer, the admin answers, and
//! request parsing that never panics. Serving is [`crate::http::server`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::calls::{CallLog, Chaos};
use super::webhook::Outbox;
pub use crate::http::server::{serve, Running};

/// The admin endpoints both simulators have, over their call log and
/// webhook outbox: `GET /admin/calls?prefix=`, `GET /admin/deliveries`,
/// `GET /admin/outbox`, and chaos: `POST /admin/chaos` with a
/// [`super::calls::Chaos`] rule (`{status, count}`, `rate`, `apply`,
/// `stall_ms`, `outage_s`, `retry_after_s`, `methods`, `seed`; `{}`
/// clears), answered by [`log_calls`]; `GET /admin/chaos` →
/// `{pending, injected, outage_left_s, rate, rate_limited}` where
/// `rate_limited` counts the simulator's own rate-limit refusals.
/// Merge it into the simulator's router after its state is applied.
pub fn shared_admin(calls: Arc<CallLog>, outbox: Outbox) -> Router {
    calls_admin(calls).merge(
        Router::new()
            .route("/admin/deliveries", get(|s: State<Outbox>| async move { axum::Json(s.deliveries()) }))
            .route(
                "/admin/outbox",
                get(|s: State<Outbox>| async move { axum::Json(serde_json::json!({"pending": s.pending()})) }),
            )
            .with_state(outbox),
    )
}

/// The call log and chaos admin endpoints alone (a simulator without
/// webhooks).
pub fn calls_admin(calls: Arc<CallLog>) -> Router {
    Router::new()
        .route(
            "/admin/calls",
            get(|s: State<Arc<CallLog>>, q: Query<HashMap<String, String>>| async move {
                axum::Json(s.snapshot(q.get("prefix").map(String::as_str).unwrap_or("")))
            }),
        )
        .route("/admin/chaos", get(chaos_state).post(chaos))
        .with_state(calls)
}

/// Records every non-admin request in the call log, with its status, and
/// answers the injected failures ([`super::calls::Chaos`]): before the
/// handler runs, or after it (`apply`: the effect happens, the answer is
/// lost), held back `stall_ms`.
pub async fn log_calls(State(log): State<Arc<CallLog>>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    if path.starts_with("/admin") {
        return next.run(req).await;
    }
    let injected = log.decide(&method);
    let resp = match injected {
        None => next.run(req).await,
        Some(i) => {
            let stall = std::time::Duration::from_millis(i.stall_ms);
            let real = if i.applied {
                let r = next.run(req).await;
                tokio::time::sleep(stall).await;
                Some(r)
            } else {
                tokio::time::sleep(stall).await;
                match i.status {
                    None => Some(next.run(req).await),
                    Some(_) => None,
                }
            };
            match (i.status, real) {
                (None, Some(real)) if i.truncate.is_some() || i.omit_page_count => rewrite(real, i).await,
                (None, Some(real)) => real,
                (status, _) => {
                    let code = StatusCode::from_u16(status.unwrap_or(502)).unwrap_or(StatusCode::BAD_GATEWAY);
                    let mut r = (
                        code,
                        axum::Json(serde_json::json!({"messages": {"error": ["injected failure"]}, "data": null})),
                    )
                        .into_response();
                    let retry_after = i.retry_after_s.or((code == StatusCode::TOO_MANY_REQUESTS).then_some(1));
                    if let Some(v) = retry_after.and_then(|s| axum::http::HeaderValue::from_str(&s.to_string()).ok()) {
                        r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
                    }
                    r
                }
            }
        }
    };
    log.record(&method, &path, &query, resp.status().as_u16(), injected);
    resp
}

/// The real answer with its lists cut to `truncate` items and without
/// `totalPages` (the body is JSON; anything else passes unchanged).
async fn rewrite(resp: Response, i: super::calls::Injected) -> Response {
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 20).await else {
        return Response::from_parts(parts, axum::body::Body::empty());
    };
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    };
    fn cut(v: &mut serde_json::Value, n: usize) {
        match v {
            serde_json::Value::Array(a) => a.truncate(n),
            serde_json::Value::Object(o) => o.values_mut().for_each(|x| cut(x, n)),
            _ => {}
        }
    }
    if let Some(n) = i.truncate {
        if let Some(d) = v.get_mut("data") {
            cut(d, n);
        }
    }
    if i.omit_page_count {
        if let Some(d) = v.get_mut("data").and_then(|d| d.as_object_mut()) {
            d.remove("totalPages");
        }
    }
    let mut parts = parts;
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(v.to_string()))
}

async fn chaos_state(State(log): State<Arc<CallLog>>) -> Response {
    axum::Json(log.chaos_state()).into_response()
}

async fn chaos(State(log): State<Arc<CallLog>>, body: axum::body::Bytes) -> Response {
    match serde_json::from_slice::<Chaos>(&body) {
        Ok(c) => match c.check() {
            Ok(()) => {
                log.chaos(c);
                axum::Json(log.chaos_state()).into_response()
            }
            Err(e) => admin_error(StatusCode::BAD_REQUEST, e),
        },
        Err(e) => admin_error(
            StatusCode::BAD_REQUEST,
            format!("expected {{status, count, rate, apply, stall_ms, outage_s, retry_after_s, methods, seed}}: {e}"),
        ),
    }
}

/// A plain JSON error for admin endpoints.
pub fn admin_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// Parses a body that is one JSON value of `T` or an array of them.
pub fn one_or_many<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<Vec<T>, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    match v {
        serde_json::Value::Array(items) => {
            items.into_iter().map(|i| serde_json::from_value(i).map_err(|e| e.to_string())).collect()
        }
        other => serde_json::from_value(other).map(|x| vec![x]).map_err(|e| e.to_string()),
    }
}

/// Sets a response's `Date` header to `ms` (a simulator's own clock).
pub fn set_date(resp: &mut axum::response::Response, ms: i64) {
    let at = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    if let Ok(v) = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string().parse() {
        resp.headers_mut().insert(axum::http::header::DATE, v);
    }
}

/// Wall-clock unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
