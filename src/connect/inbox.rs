//! The webhook inbox, one HTTP server per connector process (served by
//! [`crate::http::server`], with its timeouts and connection cap).
//!
//! Routes: `POST /webhook/{tenant}` with the tenant's secret in a header
//! (`X-Geoclock-Key`, an `X-Geoclock-Signature` HMAC over the body, or
//! `Authorization: Basic`, as [`crate::config::webhook`] describes), and
//! the deprecated `POST /webhook/{tenant}/{secret}`, accepted only while
//! the tenant's `webhook_auth` is unset (a warning is logged the first time
//! each tenant uses it). `GET /healthz`. `/metrics` is not here: the
//! connector serves it on its own listener (`--metrics`), which can be kept
//! private.
//!
//! Invariants:
//! - an unknown tenant or a wrong secret is the same bare 401, after the
//!   same work (an unknown tenant is checked against a stand-in secret), and
//!   publishes nothing (not even a dead letter: an unauthenticated caller
//!   must not be able to write to our topics);
//! - an authenticated body larger than [`MAX_BODY`] is 413, one that does not
//!   parse as the vendor's shape is 400; both publish a dead letter with the
//!   reason (and the first 64 KiB) before answering; a body that does not
//!   arrive within the server's body timeout is 408;
//! - memory is bounded in bytes: bodies being read share [`IN_FLIGHT_BYTES`]
//!   (a request that would exceed it is 503 before its body is read), and
//!   each tenant's queue holds at most [`QUEUE_BYTES`] of bodies (and all
//!   tenants' queues [`TOTAL_QUEUE_BYTES`]);
//! - a good body is queued for the tenant's task and acknowledged at once
//!   (well within ServiceTrade's 5 s budget); a full queue is 503 so the
//!   vendor retries. Deduplication happens in the task, by message id or by
//!   ping identity;
//! - the secret never reaches a log line or a metric label.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::metrics::Metrics;
use super::out::Out;
use super::{Vendor, Work};
use crate::config::secret::Secret;
use crate::config::webhook::{self, Policy, Presented, Verdict};
use crate::http::server::BodyTimeout;
use crate::vendor::{azuga, servicetrade};

/// Largest webhook body accepted.
pub const MAX_BODY: usize = 1024 * 1024;
/// Bytes of bodies being received at once, all tenants together.
pub const IN_FLIGHT_BYTES: usize = 32 * 1024 * 1024;
/// Bytes of bodies queued for one tenant's task.
pub const QUEUE_BYTES: usize = 8 * 1024 * 1024;
/// Bytes of bodies queued for all tenants' tasks together.
pub const TOTAL_QUEUE_BYTES: usize = 64 * 1024 * 1024;
/// Items queued for one tenant's task.
pub const QUEUE_ITEMS: usize = 1024;
/// What an item costs in the byte budgets besides its body.
const ITEM_OVERHEAD: usize = 512;

/// The sending half of a tenant's queue (see [`queue`]).
pub struct QueueTx {
    tx: mpsc::Sender<(Work, [OwnedSemaphorePermit; 2])>,
    bytes: Arc<Semaphore>,
    total: Arc<Semaphore>,
}

/// The receiving half: what the tenant's task reads.
pub struct QueueRx {
    rx: mpsc::Receiver<(Work, [OwnedSemaphorePermit; 2])>,
}

impl QueueRx {
    /// The next item; its bytes are given back to the budgets as it is
    /// taken (the task holds at most one item at a time).
    pub async fn recv(&mut self) -> Option<Work> {
        self.rx.recv().await.map(|(work, _permits)| work)
    }
}

/// A tenant's queue, bounded by [`QUEUE_ITEMS`] and [`QUEUE_BYTES`], and
/// sharing `total` (made with [`total_budget`]) with the other tenants'.
pub fn queue(total: &Arc<Semaphore>) -> (QueueTx, QueueRx) {
    let (tx, rx) = mpsc::channel(QUEUE_ITEMS);
    (QueueTx { tx, bytes: Arc::new(Semaphore::new(QUEUE_BYTES)), total: total.clone() }, QueueRx { rx })
}

/// The budget all tenants' queues share.
pub fn total_budget() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(TOTAL_QUEUE_BYTES))
}

impl QueueTx {
    /// Queues `work` (of a `bytes`-long body) unless a budget is spent.
    fn try_send(&self, work: Work, bytes: usize) -> bool {
        let cost = u32::try_from(bytes + ITEM_OVERHEAD).unwrap_or(u32::MAX);
        let Ok(mine) = self.bytes.clone().try_acquire_many_owned(cost) else { return false };
        let Ok(all) = self.total.clone().try_acquire_many_owned(cost) else { return false };
        self.tx.try_send((work, [mine, all])).is_ok()
    }
}

pub struct TenantInbox {
    pub policy: Policy,
    pub tx: QueueTx,
    pub out: Out,
    /// Set once the deprecated path secret has been warned about.
    pub warned_path: AtomicBool,
}

impl TenantInbox {
    pub fn new(policy: Policy, tx: QueueTx, out: Out) -> TenantInbox {
        TenantInbox { policy, tx, out, warned_path: AtomicBool::new(false) }
    }
}

pub struct Inbox {
    pub vendor: Vendor,
    pub tenants: HashMap<String, TenantInbox>,
    pub metrics: Metrics,
    in_flight: Arc<Semaphore>,
    /// Checked when the tenant is unknown, so that costs what a known one does.
    stand_in: Policy,
}

impl Inbox {
    pub fn new(vendor: Vendor, tenants: HashMap<String, TenantInbox>, metrics: Metrics) -> Inbox {
        let allowed = match vendor {
            Vendor::ServiceTrade => webhook::SERVICETRADE,
            Vendor::Azuga => webhook::AZUGA,
        };
        let stand_in = Policy {
            tenant: String::new(),
            secret: Secret::new(format!("stand-in-{:x}", std::process::id())),
            configured: None,
            allowed,
        };
        Inbox { vendor, tenants, metrics, in_flight: Arc::new(Semaphore::new(IN_FLIGHT_BYTES)), stand_in }
    }
}

pub fn router(inbox: Arc<Inbox>) -> Router {
    Router::new()
        .route("/webhook/{tenant}/{secret}", post(with_path_secret))
        .route("/webhook/{tenant}", post(with_header_secret))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(inbox)
}

async fn with_path_secret(
    State(inbox): State<Arc<Inbox>>,
    Path((tenant, secret)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    receive(&inbox, &tenant, Some(&secret), &headers, body).await
}

async fn with_header_secret(
    State(inbox): State<Arc<Inbox>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    receive(&inbox, &tenant, None, &headers, body).await
}

fn status(code: StatusCode, text: &str) -> Response {
    (code, axum::Json(serde_json::json!({"status": code.as_u16(), "message": text}))).into_response()
}

/// Why a body could not be read.
enum Unread {
    TooLarge,
    TimedOut,
    Broken,
}

async fn read(body: Body) -> Result<Bytes, Unread> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| {
        let e = e.into_inner();
        if BodyTimeout::is(e.as_ref()) {
            Unread::TimedOut
        } else if e.is::<http_body_util::LengthLimitError>() {
            Unread::TooLarge
        } else {
            Unread::Broken
        }
    })
}

async fn receive(inbox: &Inbox, tenant: &str, path: Option<&str>, headers: &HeaderMap, body: Body) -> Response {
    let connector = inbox.vendor.name();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let presented = Presented {
        path,
        key: header(webhook::KEY_HEADER),
        authorization: header(header::AUTHORIZATION.as_str()),
        signature: header(webhook::SIGNATURE_HEADER),
    };
    let known = inbox.tenants.get(tenant);
    let policy = known.map_or(&inbox.stand_in, |t| &t.policy);

    // The body's bytes are reserved before it is read.
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(MAX_BODY)
        .min(MAX_BODY);
    let _reserved = match inbox.in_flight.clone().try_acquire_many_owned(announced.max(1) as u32) {
        Ok(p) => p,
        Err(_) => {
            inbox.metrics.webhook(connector, known.map_or("unknown", |_| tenant), "overloaded");
            return status(StatusCode::SERVICE_UNAVAILABLE, "busy, retry later");
        }
    };
    if policy.needs_body(&presented) {
        return match read(body).await {
            Ok(b) => after_body(inbox, tenant, known, &presented, b).await,
            Err(Unread::TimedOut) => status(StatusCode::REQUEST_TIMEOUT, "body not received in time"),
            // Too large or broken before it could be authenticated: no dead letter.
            Err(Unread::TooLarge) => status(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
            Err(Unread::Broken) => status(StatusCode::BAD_REQUEST, "body not readable"),
        };
    }
    let verdict = webhook::verify(policy, &presented, None);
    let Some(t) = authenticated(inbox, tenant, known, verdict) else {
        return status(StatusCode::UNAUTHORIZED, "unauthorized");
    };
    let source = format!("webhook.{connector}");
    let bytes = match read(body).await {
        Ok(b) => b,
        Err(Unread::TooLarge) => {
            inbox.metrics.webhook(connector, tenant, "malformed");
            t.out.dead_letter(&source, "too_large", &format!("body larger than {MAX_BODY} bytes"), b"").await;
            return status(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
        }
        Err(Unread::TimedOut) => return status(StatusCode::REQUEST_TIMEOUT, "body not received in time"),
        Err(Unread::Broken) => return status(StatusCode::BAD_REQUEST, "body not readable"),
    };
    accept(inbox, tenant, t, bytes).await
}

async fn after_body(
    inbox: &Inbox,
    tenant: &str,
    known: Option<&TenantInbox>,
    presented: &Presented<'_>,
    bytes: Bytes,
) -> Response {
    let policy = known.map_or(&inbox.stand_in, |t| &t.policy);
    let verdict = webhook::verify(policy, presented, Some(&bytes));
    match authenticated(inbox, tenant, known, verdict) {
        Some(t) => accept(inbox, tenant, t, bytes).await,
        None => status(StatusCode::UNAUTHORIZED, "unauthorized"),
    }
}

/// The tenant's inbox when `verdict` accepts; counts and logs a refusal.
fn authenticated<'a>(
    inbox: &Inbox,
    tenant: &str,
    known: Option<&'a TenantInbox>,
    verdict: Verdict,
) -> Option<&'a TenantInbox> {
    let connector = inbox.vendor.name();
    match (known, verdict) {
        (Some(t), Verdict::Accepted) => Some(t),
        (Some(t), Verdict::AcceptedFromPath) => {
            if !t.warned_path.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    connector,
                    tenant,
                    "webhook authenticated by a secret in the URL path (deprecated: the secret lands in the vendor's \
                     webhook list and in access logs); register the hook at /webhook/TENANT with header auth and set \
                     webhook_auth in the tenants file"
                );
            }
            Some(t)
        }
        (Some(_), Verdict::Refused(why)) => {
            tracing::debug!(connector, tenant, why, "webhook refused");
            inbox.metrics.webhook(connector, tenant, "unauthorized");
            None
        }
        (None, _) => {
            inbox.metrics.webhook(connector, "unknown", "unauthorized");
            None
        }
    }
}

async fn accept(inbox: &Inbox, tenant: &str, t: &TenantInbox, bytes: Bytes) -> Response {
    let connector = inbox.vendor.name();
    let source = format!("webhook.{connector}");
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
    if t.tx.try_send(work, bytes.len()) {
        inbox.metrics.webhook(connector, tenant, "accepted");
        status(StatusCode::OK, "accepted")
    } else {
        inbox.metrics.webhook(connector, tenant, "overloaded");
        status(StatusCode::SERVICE_UNAVAILABLE, "busy, retry later")
    }
}
