//! `cuda-tracer webhook`: a mutating admission webhook (HTTPS, AdmissionReview
//! v1) that injects the tracer sidecar into labelled vLLM pods.

pub mod decide;
pub mod pod_view;
pub mod secrets;
pub mod server;
pub mod settings;
pub mod sidecar;
pub mod tls;

use std::{path::PathBuf, sync::Arc, time::Duration};

pub use settings::InjectConfig;

use crate::http_serve::ConnLimits;

/// How long one connection may stay open: the API server reconnects, and a
/// client that stopped reading its answers loses its slot.
const MAX_CONNECTION_LIFETIME: Duration = Duration::from_secs(300);

/// Where the webhook listens, its certificate, its bounds, and what it injects.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Address to listen on (HTTPS).
    pub addr: std::net::SocketAddr,
    /// PEM certificate chain and private key, re-read when renewed.
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// How often the certificate files are checked for a renewed pair.
    pub cert_reload: Duration,
    /// Body size, timeouts and caps on what one client can make it hold.
    pub limits: server::Limits,
    pub inject: InjectConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    LiteralSecret(#[from] secrets::LiteralSecret),
    #[error("cannot listen on {addr}: {source} (is another process on that port? pick one with --addr)")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!("no SIGTERM handler ({e}); stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// Serves until SIGTERM/SIGINT, then finishes the requests in flight.
pub async fn serve(args: &WebhookConfig) -> Result<(), WebhookError> {
    secrets::refuse_literal_secrets(&args.inject)?;
    let limits = args.limits.clone();
    let store = Arc::new(tls::CertStore::load(&args.tls_cert, &args.tls_key)?);
    let config = tls::server_config(Arc::clone(&store))?;
    tokio::spawn(Arc::clone(&store).watch(args.cert_reload));
    let tcp = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|source| WebhookError::Bind { addr: args.addr, source })?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tls::TlsListener::new(tcp, acceptor, limits.client_timeout, limits.max_connections)
        .map_err(WebhookError::Serve)?;
    let local = listener.local_addr();
    let inject = &args.inject;
    tracing::info!(
        addr = %local,
        target_namespace = %inject.target_namespace,
        label = %format!("{}={}", inject.label_key, inject.label_value),
        image = %inject.image,
        "webhook serving https://{local}/mutate"
    );
    let conn_limits = ConnLimits { header_timeout: limits.client_timeout, max_lifetime: MAX_CONNECTION_LIFETIME };
    let app = Arc::new(server::App::new(inject.clone(), limits));
    crate::http_serve::serve(listener, server::router(app), conn_limits, shutdown_signal()).await;
    Ok(())
}
