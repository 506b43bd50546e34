//! Serves HTTP/1.1 with hyper directly, on bounded connections (axum's
//! `serve` sets no timeouts): a capped number open at once, a request head
//! that must arrive within a timeout (which also closes idle keep-alive
//! connections), capped head size, and a longest life per connection, so a
//! client that never reads its answer frees its slot too. On shutdown,
//! requests in flight get a grace period to finish. The webhook (TLS) and the
//! daemon's metrics server (plain TCP) both serve through this.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use prometheus_client::metrics::counter::Counter;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::{watch, OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};

/// hyper's read buffer, which bounds a request head (hyper answers 431
/// past it). Real clients' heads are well under 1 KiB.
const MAX_BUF_BYTES: usize = 64 << 10;
/// How long requests in flight get to finish after the shutdown signal.
const DRAIN: Duration = Duration::from_secs(25);

/// The bounds of each connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Time for a request head to arrive, counted from the connection's
    /// start or the end of the previous answer.
    pub header_timeout: Duration,
    /// After this, the connection is asked to close once its request in
    /// flight is answered; `header_timeout` later it is closed regardless.
    pub max_lifetime: Duration,
}

/// A connection ready for HTTP, holding one of its listener's slots until
/// it is dropped.
pub struct Accepted<S> {
    pub stream: S,
    pub peer: SocketAddr,
    pub slot: OwnedSemaphorePermit,
}

/// Where connections come from.
pub trait Incoming {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next connection; never fails (errors are the listener's to log).
    fn accept(&mut self) -> impl Future<Output = Accepted<Self::Stream>> + Send;
}

/// Serves `router` on `listener` until `shutdown` resolves, then gives
/// requests in flight [`DRAIN`] to finish.
pub async fn serve<L: Incoming>(
    mut listener: L,
    router: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).max_buf_size(MAX_BUF_BYTES);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let conn = builder.serve_connection(TokioIo::new(accepted.stream), service);
        conns.spawn(one_connection(conn, accepted.peer, accepted.slot, limits, stop_rx.clone()));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!("requests still in flight after {DRAIN:?}: stopping anyway");
    }
}

type Conn<S> = http1::Connection<TokioIo<S>, TowerToHyperService<Router>>;

/// Runs one connection to its end, its lifetime or the server's shutdown.
async fn one_connection<S>(
    conn: Conn<S>,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::pin!(conn);
    let ended = tokio::select! {
        result = conn.as_mut() => Some(result),
        () = tokio::time::sleep(limits.max_lifetime) => None,
        _ = stop.wait_for(|stop| *stop) => None,
    };
    let result = match ended {
        Some(result) => result,
        None => {
            // Finish the request in flight, if any, then close; a client
            // that does not read its answer is cut off.
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(limits.header_timeout, conn.as_mut()).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::debug!(%peer, "connection closed: its answer was not taken in time");
                    Ok(())
                }
            }
        }
    };
    if let Err(e) = result {
        // Timeouts and resets of misbehaving clients land here.
        tracing::debug!(%peer, "connection ended: {e}");
    }
    drop(slot);
}

/// A plain TCP listener that keeps at most `max_connections` open: one
/// past that is accepted and closed at once (counted in `refused`), so a
/// flood never holds more of the process's file descriptors than the cap.
pub struct CappedTcp {
    tcp: TcpListener,
    slots: Arc<Semaphore>,
    refused: Counter,
}

impl CappedTcp {
    pub fn new(tcp: TcpListener, max_connections: usize, refused: Counter) -> Self {
        Self { tcp, slots: Arc::new(Semaphore::new(max_connections.max(1))), refused }
    }
}

impl Incoming for CappedTcp {
    type Stream = TcpStream;

    async fn accept(&mut self) -> Accepted<TcpStream> {
        loop {
            let (stream, peer) = match self.tcp.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match Arc::clone(&self.slots).try_acquire_owned() {
                Ok(slot) => return Accepted { stream, peer, slot },
                Err(_) => {
                    let n = self.refused.inc() + 1;
                    if n.is_power_of_two() {
                        tracing::warn!(%peer, refused_so_far = n, "connection refused: all connection slots are in use");
                    }
                    drop(stream);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn started(max_connections: usize, limits: ConnLimits) -> (SocketAddr, Counter) {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let refused = Counter::default();
        let listener = CappedTcp::new(tcp, max_connections, refused.clone());
        let router = Router::new().route("/", axum::routing::get(|| async { "hi" }));
        tokio::spawn(serve(listener, router, limits, std::future::pending()));
        (addr, refused)
    }

    /// Reads until the server closes the stream; what it sent.
    async fn until_closed(stream: &mut TcpStream) -> String {
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got)).await.unwrap();
        String::from_utf8_lossy(&got).into_owned()
    }

    #[tokio::test]
    async fn connections_past_the_cap_are_closed_and_counted_and_idle_ones_time_out() {
        let limits = ConnLimits { header_timeout: Duration::from_millis(300), max_lifetime: Duration::from_secs(60) };
        let (addr, refused) = started(2, limits).await;
        let mut idle = [TcpStream::connect(addr).await.unwrap(), TcpStream::connect(addr).await.unwrap()];
        let mut third = TcpStream::connect(addr).await.unwrap();
        assert_eq!(until_closed(&mut third).await, "", "closed at once");
        assert_eq!(refused.get(), 1);
        for s in &mut idle {
            assert_eq!(until_closed(s).await, "", "an idle connection is closed after the header timeout");
        }
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        assert!(until_closed(&mut s).await.ends_with("hi"), "slots are free again");
    }

    #[tokio::test]
    async fn a_connection_is_closed_at_its_lifetime() {
        let limits = ConnLimits { header_timeout: Duration::from_secs(60), max_lifetime: Duration::from_millis(300) };
        let (addr, _) = started(2, limits).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        assert!(until_closed(&mut s).await.ends_with("hi"), "answered, then closed when its time was up");
    }
}
