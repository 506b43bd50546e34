//! `cuda-tracer webhook`: a mutating admission webhook (HTTPS, AdmissionReview
//! v1) that injects the tracer sidecar into labelled vLLM pods.

pub mod decide;
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
    #[command(flatten)]
    pub inject: InjectArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
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
    let store = Arc::new(tls::CertStore::load(&args.tls_cert, &args.tls_key)?);
    let config = tls::server_config(Arc::clone(&store))?;
    tokio::spawn(Arc::clone(&store).watch(Duration::from_secs(args.cert_reload_secs)));
    let tcp = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|source| WebhookError::Bind { addr: args.addr, source })?;
    let listener =
        tls::TlsListener::new(tcp, tokio_rustls::TlsAcceptor::from(Arc::new(config))).map_err(WebhookError::Serve)?;
    let local = axum::serve::Listener::local_addr(&listener).map_err(WebhookError::Serve)?;
    let inject = &args.inject;
    tracing::info!(
        addr = %local,
        target_namespace = %inject.target_namespace,
        label = %format!("{}={}", inject.label_key, inject.label_value),
        image = %inject.image,
        "webhook serving https://{local}/mutate"
    );
    let app = Arc::new(server::App { inject: inject.clone(), max_body_bytes: args.max_body_bytes });
    axum::serve(listener, server::router(app))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(WebhookError::Serve)
}
