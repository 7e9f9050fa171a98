//! The webhook inbox and `/metrics`, one HTTP server per connector process.
//!
//! Routes: `POST /webhook/{tenant}/{secret}` (the secret in the path), or
//! `POST /webhook/{tenant}` with `Authorization: Basic base64(tenant:secret)`
//! or `X-Geoclock-Key: secret` (neither vendor signs its webhooks, so a
//! per-tenant secret is what authenticates them). `GET /metrics`,
//! `GET /healthz`.
//!
//! Invariants:
//! - an unknown tenant or a wrong secret is 401 and publishes nothing (not
//!   even a dead letter: an unauthenticated caller must not be able to write
//!   to our topics);
//! - an authenticated body larger than [`MAX_BODY`] is 413, one that does not
//!   parse as the vendor's shape is 400; both publish a dead letter with the
//!   reason (and the first 64 KiB) before answering;
//! - a good body is queued for the tenant's task and acknowledged at once
//!   (well within ServiceTrade's 5 s budget); a full queue is 503 so the
//!   vendor retries. Deduplication happens in the task, by message id or by
//!   ping identity;
//! - the secret never reaches a log line or a metric label.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use tokio::sync::mpsc;

use super::metrics::Metrics;
use super::out::Out;
use super::{Vendor, Work};
use crate::config::secret::Secret;
use crate::vendor::{azuga, servicetrade};

/// Largest webhook body accepted.
pub const MAX_BODY: usize = 1024 * 1024;

pub struct TenantInbox {
    pub secret: Secret,
    pub tx: mpsc::Sender<Work>,
    pub out: Out,
}

pub struct Inbox {
    pub vendor: Vendor,
    pub tenants: HashMap<String, TenantInbox>,
    pub metrics: Metrics,
}

pub fn router(inbox: Arc<Inbox>) -> Router {
    Router::new()
        .route("/webhook/{tenant}/{secret}", post(with_path_secret))
        .route("/webhook/{tenant}", post(with_header_secret))
        .route("/metrics", get(|s: State<Arc<Inbox>>| async move { s.metrics.render() }))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(inbox)
}

async fn with_path_secret(
    State(inbox): State<Arc<Inbox>>,
    Path((tenant, secret)): Path<(String, String)>,
    body: Body,
) -> Response {
    receive(&inbox, &tenant, Some(&secret), body).await
}

async fn with_header_secret(
    State(inbox): State<Arc<Inbox>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let from_key = headers.get("x-geoclock-key").and_then(|v| v.to_str().ok()).map(str::to_string);
    let from_basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|d| String::from_utf8(d).ok())
        .and_then(|t| t.split_once(':').filter(|(u, _)| *u == tenant).map(|(_, p)| p.to_string()));
    let secret = from_key.or(from_basic);
    receive(&inbox, &tenant, secret.as_deref(), body).await
}

fn status(code: StatusCode, text: &str) -> Response {
    (code, axum::Json(serde_json::json!({"status": code.as_u16(), "message": text}))).into_response()
}

async fn receive(inbox: &Inbox, tenant: &str, secret: Option<&str>, body: Body) -> Response {
    let connector = inbox.vendor.name();
    let Some(t) = inbox.tenants.get(tenant).filter(|t| secret.is_some_and(|s| t.secret.matches(s))) else {
        let label = if inbox.tenants.contains_key(tenant) { tenant } else { "unknown" };
        inbox.metrics.webhook(connector, label, "unauthorized");
        return status(StatusCode::UNAUTHORIZED, "unauthorized");
    };
    let source = format!("webhook.{connector}");
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            inbox.metrics.webhook(connector, tenant, "malformed");
            t.out.dead_letter(&source, "too_large", &format!("body larger than {MAX_BODY} bytes"), b"").await;
            return status(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
        }
    };
    let work = match inbox.vendor {
        Vendor::ServiceTrade => servicetrade::webhook::parse(&bytes).map(Work::ServiceTrade),
        Vendor::Azuga => azuga::map::webhook(&bytes).map(Work::Azuga),
    };
    let work = match work {
        Ok(w) => w,
        Err(reason) => {
            inbox.metrics.webhook(connector, tenant, "malformed");
            t.out.dead_letter(&source, "malformed", &reason, &bytes).await;
            return status(StatusCode::BAD_REQUEST, &reason);
        }
    };
    match t.tx.try_send(work) {
        Ok(()) => {
            inbox.metrics.webhook(connector, tenant, "accepted");
            status(StatusCode::OK, "accepted")
        }
        Err(_) => {
            inbox.metrics.webhook(connector, tenant, "overloaded");
            status(StatusCode::SERVICE_UNAVAILABLE, "busy, retry later")
        }
    }
}
