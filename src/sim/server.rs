//! What both simulators share: serving a router on a loopback address, the
//! call-log layer, the admin answers, and request parsing that never panics.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::calls::CallLog;
use super::webhook::Outbox;
use super::SimError;

/// A simulator serving HTTP. Dropping it leaves the server running until the
/// runtime stops; [`Running::stop`] ends it.
pub struct Running {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<()>,
}

impl Running {
    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, finishes in-flight requests, returns when done.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.handle).await;
    }

    /// Waits until the server ends (for the CLI).
    pub async fn wait(self) {
        let _ = self.handle.await;
    }
}

/// Binds `listen` and serves `router` on the current runtime.
pub async fn serve(router: Router, listen: &str) -> Result<Running, SimError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| SimError::Bind { addr: listen.to_string(), message: e.to_string() })?;
    let addr =
        listener.local_addr().map_err(|e| SimError::Bind { addr: listen.to_string(), message: e.to_string() })?;
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        let server = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = rx.await;
        });
        if let Err(e) = server.await {
            tracing::error!(error = %e, "simulator server failed");
        }
    });
    Ok(Running { addr, shutdown: Some(tx), handle })
}

/// The admin endpoints both simulators have, over their call log and
/// webhook outbox: `GET /admin/calls?prefix=`, `GET /admin/deliveries`,
/// `GET /admin/outbox`, and chaos: `POST /admin/chaos {status, count}` makes
/// the next `count` API calls fail with `status` (a 429 carries
/// `Retry-After: 1`) before any handler runs ([`log_calls`]);
/// `GET /admin/chaos` → `{pending, rate_limited}` where `rate_limited`
/// counts the simulator's own rate-limit refusals (not injected ones).
/// Merge it into the simulator's router after its state is applied.
pub fn shared_admin(calls: Arc<CallLog>, outbox: Outbox) -> Router {
    Router::new()
        .route(
            "/admin/calls",
            get(|s: State<Arc<CallLog>>, q: Query<HashMap<String, String>>| async move {
                axum::Json(s.snapshot(q.get("prefix").map(String::as_str).unwrap_or("")))
            }),
        )
        .route("/admin/chaos", get(chaos_state).post(chaos))
        .with_state(calls)
        .merge(
            Router::new()
                .route("/admin/deliveries", get(|s: State<Outbox>| async move { axum::Json(s.deliveries()) }))
                .route(
                    "/admin/outbox",
                    get(|s: State<Outbox>| async move { axum::Json(serde_json::json!({"pending": s.pending()})) }),
                )
                .with_state(outbox),
        )
}

/// Records every non-admin request in the call log, with its status, and
/// answers the injected failures (see [`shared_admin`]).
pub async fn log_calls(State(log): State<Arc<CallLog>>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let injected = if path.starts_with("/admin") { None } else { log.take_injected() };
    let resp = match injected {
        Some(status) => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut r =
                (code, axum::Json(serde_json::json!({"messages": {"error": ["injected failure"]}, "data": null})))
                    .into_response();
            if code == StatusCode::TOO_MANY_REQUESTS {
                r.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
            }
            r
        }
        None => next.run(req).await,
    };
    if !path.starts_with("/admin") {
        log.record(&method, &path, &query, resp.status().as_u16());
    }
    resp
}

async fn chaos_state(State(log): State<Arc<CallLog>>) -> Response {
    axum::Json(serde_json::json!({"pending": log.injected_left(), "rate_limited": log.rate_limited()})).into_response()
}

async fn chaos(State(log): State<Arc<CallLog>>, body: axum::body::Bytes) -> Response {
    #[derive(serde::Deserialize)]
    struct Chaos {
        status: u16,
        count: u64,
    }
    match serde_json::from_slice::<Chaos>(&body) {
        Ok(c) if (400..600).contains(&c.status) => {
            log.inject(c.status, c.count);
            axum::Json(serde_json::json!({"pending": c.count})).into_response()
        }
        Ok(_) => admin_error(StatusCode::BAD_REQUEST, "status must be 400..599"),
        Err(e) => admin_error(StatusCode::BAD_REQUEST, format!("expected {{status, count}}: {e}")),
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

/// Wall-clock unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
