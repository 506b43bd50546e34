//! `cuda-tracer webhook`: a mutating admission webhook (HTTPS, AdmissionReview
//! v1) that injects the tracer sidecar into labelled vLLM pods.

pub mod connections;
pub mod decide;
pub mod pod_view;
pub mod secrets;
pub mod server;
pub mod settings;
pub mod sidecar;
pub mod tls;

use std::{path::PathBuf, sync::Arc, time::Duration};

use clap::Args;

pub use settings::InjectArgs;

#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// Address to listen on (HTTPS).
    #[arg(long, env = "WEBHOOK_ADDR", default_value = "0.0.0.0:8443")]
    pub addr: std::net::SocketAddr,
    /// PEM certificate chain.
    #[arg(long = "tls-cert", env = "TLS_CERT", default_value = "/etc/webhook/certs/tls.crt")]
    pub tls_cert: PathBuf,
    /// PEM private key.
    #[arg(long = "tls-key", env = "TLS_KEY", default_value = "/etc/webhook/certs/tls.key")]
    pub tls_key: PathBuf,
    /// Seconds between checks of the certificate files for a renewed pair.
    #[arg(long = "cert-reload-secs", env = "CERT_RELOAD_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub cert_reload_secs: u64,
    /// Largest AdmissionReview body accepted (the API server sends at most 3 MiB).
    #[arg(long = "max-body-bytes", env = "MAX_BODY_BYTES", default_value_t = 3 << 20)]
    pub max_body_bytes: usize,
    /// Seconds a client has for each of the TLS handshake, the request head and the body (and an idle connection stays).
    #[arg(long = "client-timeout-secs", env = "CLIENT_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub client_timeout_secs: u64,
    /// Open connections at most (handshakes included); more wait in the kernel's backlog.
    #[arg(long = "max-connections", env = "MAX_CONNECTIONS", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub max_connections: u64,
    /// AdmissionReviews read and parsed at once; more wait up to the client timeout, then get 503.
    #[arg(long = "max-concurrent-reviews", env = "MAX_CONCURRENT_REVIEWS", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub max_concurrent_reviews: u64,
    #[command(flatten)]
    pub inject: InjectArgs,
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
pub async fn serve(args: &WebhookArgs) -> Result<(), WebhookError> {
    secrets::refuse_literal_secrets(&args.inject)?;
    let limits = server::Limits {
        max_body_bytes: args.max_body_bytes,
        client_timeout: Duration::from_secs(args.client_timeout_secs),
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        max_concurrent_reviews: usize::try_from(args.max_concurrent_reviews).unwrap_or(usize::MAX),
    };
    let store = Arc::new(tls::CertStore::load(&args.tls_cert, &args.tls_key)?);
    let config = tls::server_config(Arc::clone(&store))?;
    tokio::spawn(Arc::clone(&store).watch(Duration::from_secs(args.cert_reload_secs)));
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
    let header_timeout = limits.client_timeout;
    let app = Arc::new(server::App::new(inject.clone(), limits));
    connections::serve(listener, server::router(app), header_timeout, shutdown_signal()).await;
    Ok(())
}
