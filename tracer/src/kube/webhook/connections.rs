//! Serves HTTP/1.1 on the webhook's TLS connections with hyper directly
//! (axum's `serve` sets no timeouts): a request head must arrive within the
//! client timeout, which also closes idle keep-alive connections, and heads
//! are capped in size. On shutdown, requests in flight finish.

use std::{future::Future, time::Duration};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};

use super::tls::TlsListener;

/// hyper's read buffer, which bounds a request head (hyper answers 431
/// past it). API server heads are well under 1 KiB.
const MAX_BUF_BYTES: usize = 64 << 10;
/// How long requests in flight get to finish after the shutdown signal.
const DRAIN: Duration = Duration::from_secs(25);

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    mut listener: TlsListener,
    router: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout).max_buf_size(MAX_BUF_BYTES);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(accepted.stream), service));
        let (peer, slot) = (accepted.peer, accepted.slot);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                // Timeouts and resets of misbehaving clients land here.
                tracing::debug!(%peer, "connection ended: {e}");
            }
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN) => tracing::warn!("requests still in flight after {DRAIN:?}: stopping anyway"),
    }
}
