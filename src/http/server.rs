//! Serving an axum router on an address, with a graceful stop, hardened
//! against hostile and slow clients. Every HTTP server of geoclock (the
//! connectors' inboxes, the report server, the simulators) goes through
//! [`serve`].
//!
//! Limits ([`Limits`], per server):
//! - a request's headers must arrive within `header_read_timeout` of the
//!   connection starting to wait for them (this also closes idle keep-alive
//!   connections), and fit in `max_header_bytes`;
//! - its body must arrive within `body_timeout` of the headers: a body read
//!   then fails with [`BodyTimeout`] (handlers answer 408);
//! - at most `max_connections` connections are open. When a new one
//!   arrives at the cap, the oldest connection that is not inside a request
//!   (still sending its headers, or idle between requests) is closed to make
//!   room; when every open connection is inside a request, accepting waits
//!   for one to end. So slow or idle clients cannot lock out a
//!   well-behaved one, and a burst cannot exhaust file descriptors.
//!
//! Handlers can ask for the client's address with axum's
//! `ConnectInfo<SocketAddr>` extractor.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::JoinHandle;
use tower_service::Service;

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {message}")]
    Bind { addr: String, message: String },
}

/// A server's limits (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub body_timeout: Duration,
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(20),
            max_header_bytes: 64 * 1024,
        }
    }
}

/// The error a request body gives when it did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within {0:?}")]
pub struct BodyTimeout(pub Duration);

impl BodyTimeout {
    /// Whether `e` (a body read's error, as axum reports it) is a
    /// [`BodyTimeout`].
    pub fn is(e: &(dyn std::error::Error + 'static)) -> bool {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = cur {
            if err.is::<BodyTimeout>() {
                return true;
            }
            cur = err.source();
        }
        false
    }
}

/// A router being served. Dropping it leaves the server running until the
/// runtime stops; [`Running::stop`] ends it.
pub struct Running {
    pub addr: SocketAddr,
    shutdown: Option<watch::Sender<bool>>,
    handle: JoinHandle<()>,
}

impl Running {
    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, finishes in-flight requests (closing connections
    /// still open after [`GRACE`]), returns when done.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        let _ = (&mut self.handle).await;
    }

    /// Waits until the server ends (for the CLI).
    pub async fn wait(self) {
        let _ = self.handle.await;
    }
}

/// How long a stop waits for open requests.
pub const GRACE: Duration = Duration::from_secs(10);

/// Binds `listen` and serves `router` on the current runtime with the
/// default [`Limits`].
pub async fn serve(router: Router, listen: &str) -> Result<Running, ServeError> {
    serve_with(router, listen, Limits::default()).await
}

/// [`serve`] with explicit limits.
pub async fn serve_with(router: Router, listen: &str, limits: Limits) -> Result<Running, ServeError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| ServeError::Bind { addr: listen.to_string(), message: e.to_string() })?;
    let addr =
        listener.local_addr().map_err(|e| ServeError::Bind { addr: listen.to_string(), message: e.to_string() })?;
    let (tx, rx) = watch::channel(false);
    let handle = tokio::spawn(accept_loop(listener, router, limits, rx));
    Ok(Running { addr, shutdown: Some(tx), handle })
}

/// The open connections: whether each is inside a request, and how to
/// close it.
#[derive(Default)]
struct Conns {
    next: u64,
    open: BTreeMap<u64, (Arc<AtomicUsize>, Option<oneshot::Sender<()>>)>,
}

fn lock(c: &Mutex<Conns>) -> std::sync::MutexGuard<'_, Conns> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// Closes the oldest connection not inside a request; whether there was one.
fn evict_oldest_idle(conns: &Mutex<Conns>) -> bool {
    let mut c = lock(conns);
    let victim = c.open.iter_mut().find(|(_, (busy, evict))| busy.load(Ordering::SeqCst) == 0 && evict.is_some());
    match victim.and_then(|(_, (_, evict))| evict.take()) {
        Some(tx) => tx.send(()).is_ok(),
        None => false,
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let conns = Arc::new(Mutex::new(Conns::default()));
    let mut tasks = tokio::task::JoinSet::new();
    let mut stop = shutdown.clone();
    loop {
        let accepted = tokio::select! {
            _ = stopped(&mut stop) => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait, never spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                evict_oldest_idle(&conns);
                tokio::select! {
                    _ = stopped(&mut stop) => break,
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                }
            }
        };
        let busy = Arc::new(AtomicUsize::new(0));
        let (evict_tx, evict_rx) = oneshot::channel();
        let id = {
            let mut c = lock(&conns);
            c.next += 1;
            let id = c.next;
            c.open.insert(id, (busy.clone(), Some(evict_tx)));
            id
        };
        let (router, conns, shutdown) = (router.clone(), conns.clone(), shutdown.clone());
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            connection(stream, peer, router, limits, busy, evict_rx, shutdown).await;
            lock(&conns).open.remove(&id);
            drop(permit);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(GRACE + Duration::from_secs(1), async { while tasks.join_next().await.is_some() {} })
        .await;
    tasks.abort_all();
}

/// Resolves once the stop flag is set (or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Decrements a connection's busy count when the request's response is
/// over (its body sent or dropped).
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn new(busy: &Arc<AtomicUsize>) -> Busy {
        busy.fetch_add(1, Ordering::SeqCst);
        Busy(busy.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    busy: Arc<AtomicUsize>,
    evict: oneshot::Receiver<()>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let guard = Busy::new(&busy);
        let mut router = router.clone();
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(ConnectInfo(peer));
        let req = hyper::Request::from_parts(parts, Body::new(TimedBody::new(body, limits.body_timeout)));
        async move {
            let response = match router.call(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            Ok::<_, Infallible>(response.map(|b| Body::new(Guarded { inner: b, _busy: guard })))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = evict => {}
        _ = stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(GRACE, conn.as_mut()).await;
        }
    }
}

/// A request body that fails with [`BodyTimeout`] once its deadline passes.
struct TimedBody {
    inner: Incoming,
    limit: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl TimedBody {
    fn new(inner: Incoming, limit: Duration) -> TimedBody {
        TimedBody { inner, limit, deadline: Box::pin(tokio::time::sleep(limit)) }
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(self.limit))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its connection marked busy until sent.
struct Guarded {
    inner: Body,
    _busy: Busy,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn request(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn slow_clients_are_cut_off_and_idle_ones_make_room() {
        let router = Router::new()
            .route("/", get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { format!("hi {}", peer.ip()) }))
            .route(
                "/echo",
                post(|body: Body| async move {
                    match axum::body::to_bytes(body, 1024).await {
                        Ok(b) => (axum::http::StatusCode::OK, b.len().to_string()),
                        Err(e) if BodyTimeout::is(&e) => (axum::http::StatusCode::REQUEST_TIMEOUT, "slow".into()),
                        Err(_) => (axum::http::StatusCode::BAD_REQUEST, "bad".into()),
                    }
                }),
            );
        let limits = Limits {
            max_connections: 4,
            header_read_timeout: Duration::from_millis(300),
            body_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let server = serve_with(router, "127.0.0.1:0", limits).await.unwrap();
        let addr = server.addr;
        let ok = request(addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200") && ok.contains("hi 127.0.0.1"), "{ok}");

        // Headers that never finish: closed after the header timeout.
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(3), slow.read_to_end(&mut buf)).await;
        assert!(n.is_ok(), "a connection that never finishes its headers is closed");

        // A body that never finishes: 408 after the body timeout.
        let r = request(addr, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nConnection: close\r\n\r\nabc")
            .await;
        assert!(r.starts_with("HTTP/1.1 408"), "{r}");

        // More idle connections than the cap: a good request still gets in, at once.
        let mut idle = Vec::new();
        for _ in 0..12 {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        let ok = request(addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        server.stop().await;
    }
}
