//! `cuda-tracer webhook`: a mutating admission webhook (HTTPS, AdmissionReview
//! v1) that injects the tracer sidecar into labelled vLLM pods.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// Address to listen on.
    #[arg(long, env = "WEBHOOK_ADDR", default_value = "0.0.0.0:8443")]
    pub addr: std::net::SocketAddr,
    /// PEM certificate chain.
    #[arg(long = "tls-cert", env = "TLS_CERT", default_value = "/etc/webhook/certs/tls.crt")]
    pub tls_cert: PathBuf,
    /// PEM private key.
    #[arg(long = "tls-key", env = "TLS_KEY", default_value = "/etc/webhook/certs/tls.key")]
    pub tls_key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook is not implemented yet")]
    Unimplemented,
}

/// Serves until SIGTERM/SIGINT.
pub async fn serve(args: &WebhookArgs) -> Result<(), WebhookError> {
    let _ = args;
    Err(WebhookError::Unimplemented)
}
