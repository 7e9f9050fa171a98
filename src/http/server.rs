//! Serving an axum router on an address, with a graceful stop.

use axum::Router;
use std::net::SocketAddr;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {message}")]
    Bind { addr: String, message: String },
}

/// A router being served. Dropping it leaves the server running until the
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
pub async fn serve(router: Router, listen: &str) -> Result<Running, ServeError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| ServeError::Bind { addr: listen.to_string(), message: e.to_string() })?;
    let addr =
        listener.local_addr().map_err(|e| ServeError::Bind { addr: listen.to_string(), message: e.to_string() })?;
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        let server = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = rx.await;
        });
        if let Err(e) = server.await {
            tracing::error!(error = %e, "http server failed");
        }
    });
    Ok(Running { addr, shutdown: Some(tx), handle })
}
