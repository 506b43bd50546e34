//! The arguments of `webhook` and `prompt`, and their conversion into the
//! Kubernetes-side tools' configurations.

use std::{path::PathBuf, time::Duration};

use clap::Args;

use super::S3Target;
use crate::kube::{
    prompt::PromptConfig,
    webhook::{
        server::Limits,
        settings::{defaults, SecretEnvRef},
        InjectConfig, WebhookConfig,
    },
};

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

impl From<WebhookArgs> for WebhookConfig {
    fn from(a: WebhookArgs) -> Self {
        Self {
            addr: a.addr,
            tls_cert: a.tls_cert,
            tls_key: a.tls_key,
            cert_reload: Duration::from_secs(a.cert_reload_secs),
            limits: Limits {
                max_body_bytes: a.max_body_bytes,
                client_timeout: Duration::from_secs(a.client_timeout_secs),
                max_connections: usize::try_from(a.max_connections).unwrap_or(usize::MAX),
                max_concurrent_reviews: usize::try_from(a.max_concurrent_reviews).unwrap_or(usize::MAX),
            },
            inject: a.inject.into(),
        }
    }
}

/// Which pods get the tracer, and the sidecar they get. Every field has a
/// flag and an environment variable; the defaults follow the seed webhook
/// (namespace `downstream-llm-d`, label `llm-d.ai/inferenceServing=true`).
/// The S3 flags are the daemon's, shown as what the sidecar is given.
#[derive(Clone, Debug, Args)]
#[command(
    mut_arg("bucket", |a| a.value_name("S3_BUCKET")
        .help("S3_BUCKET of the sidecar; without it the sidecar keeps traces local (UPLOAD_ENABLED=false)")),
    mut_arg("prefix", |a| a.value_name("S3_PREFIX").help("S3_PREFIX of the sidecar")),
    mut_arg("endpoint", |a| a.value_name("S3_ENDPOINT").help("S3_ENDPOINT of the sidecar (S3-compatible stores)")),
    mut_arg("region", |a| a.value_name("S3_REGION").help("S3_REGION of the sidecar")),
    mut_arg("path_style", |a| a.help("S3_PATH_STYLE=true in the sidecar")),
)]
pub struct InjectArgs {
    /// Namespace whose pods are injected (`*`: every namespace the webhook configuration sends).
    #[arg(long = "target-namespace", env = "TARGET_NAMESPACE", default_value = defaults::TARGET_NAMESPACE)]
    pub target_namespace: String,
    /// Pod label key that selects pods for injection.
    #[arg(long = "target-label-key", env = "TARGET_LABEL_KEY", default_value = defaults::LABEL_KEY)]
    pub label_key: String,
    /// Value the label must have.
    #[arg(long = "target-label-value", env = "TARGET_LABEL_VALUE", default_value = defaults::LABEL_VALUE)]
    pub label_value: String,
    /// Image of the injected tracer sidecar.
    #[arg(long = "tracer-image", env = "TRACER_IMAGE", default_value = defaults::IMAGE)]
    pub image: String,
    /// imagePullPolicy of the sidecar (IfNotPresent suits images imported into K3s).
    #[arg(
        long = "tracer-image-pull-policy",
        env = "TRACER_IMAGE_PULL_POLICY",
        default_value = defaults::IMAGE_PULL_POLICY,
        value_parser = ["Always", "IfNotPresent", "Never"]
    )]
    pub image_pull_policy: String,
    /// TARGET_PROCESS of the sidecar: regex over process command lines.
    #[arg(long = "target-process", env = "TARGET_PROCESS", default_value = defaults::TARGET_PROCESS)]
    pub target_process: String,
    /// VLLM_METRICS_URL of the sidecar (empty: no KV-cache scrape).
    #[arg(long = "vllm-metrics-url", env = "VLLM_METRICS_URL", default_value = defaults::VLLM_METRICS_URL)]
    pub vllm_metrics_url: String,
    /// PROFILE_STEPS of the sidecar: model steps whose Chrome/Perfetto trace it writes and
    /// uploads once they have passed (empty: none).
    #[arg(long = "profile-steps", env = "PROFILE_STEPS", default_value = defaults::PROFILE_STEPS,
          value_parser = parse_steps)]
    pub profile_steps: String,
    /// Sidecar port for /metrics, /healthz and /readyz (0: no metrics server, no probes).
    #[arg(long = "sidecar-metrics-port", env = "SIDECAR_METRICS_PORT", default_value_t = defaults::METRICS_PORT)]
    pub metrics_port: u16,
    #[command(flatten)]
    pub s3: S3Target,
    /// Secret in the pod's namespace whose keys (AWS_ACCESS_KEY_ID, ...) become sidecar env (optional).
    #[arg(long = "aws-secret", env = "AWS_CREDENTIALS_SECRET")]
    pub aws_secret: Option<String>,
    /// PersistentVolumeClaim in the pod's namespace for /traces (default: an emptyDir).
    #[arg(long = "traces-pvc", env = "TRACES_PVC")]
    pub traces_pvc: Option<String>,
    /// Run the sidecar privileged instead of with BPF, PERFMON and SYS_PTRACE (kernels < 5.8).
    #[arg(long = "sidecar-privileged", env = "TRACER_PRIVILEGED")]
    pub privileged: bool,
    /// Add SYS_ADMIN to the sidecar's capabilities: kernels before 6.6 (no uprobe_multi) with the
    /// 2025 uprobe fix (CVE-2025-38466) refuse its perf-event uprobes without it.
    #[arg(long = "sidecar-sys-admin", env = "TRACER_SYS_ADMIN")]
    pub sys_admin: bool,
    /// More sidecar env, NAME=VALUE, comma-separated or repeated (e.g. TRACE_INTERVAL=30). No secrets:
    /// the webhook refuses to start with a secret-looking one (use --sidecar-secret-env).
    #[arg(long = "sidecar-env", env = "SIDECAR_ENV", value_delimiter = ',', value_parser = parse_env_pair)]
    pub extra_env: Vec<(String, String)>,
    /// Sidecar env from Secrets in the pod's namespace, VAR=SECRET:KEY, comma-separated or repeated
    /// (e.g. HF_TOKEN=hf-token:token): injected as secretKeyRef, never as a value.
    #[arg(long = "sidecar-secret-env", env = "SIDECAR_SECRET_ENV", value_delimiter = ',',
          value_parser = parse_secret_ref)]
    pub secret_env: Vec<SecretEnvRef>,
}

impl From<InjectArgs> for InjectConfig {
    fn from(a: InjectArgs) -> Self {
        Self {
            target_namespace: a.target_namespace,
            label_key: a.label_key,
            label_value: a.label_value,
            image: a.image,
            image_pull_policy: a.image_pull_policy,
            target_process: a.target_process,
            vllm_metrics_url: a.vllm_metrics_url,
            metrics_port: a.metrics_port,
            profile_steps: a.profile_steps,
            s3_bucket: a.s3.bucket,
            s3_prefix: a.s3.prefix,
            s3_endpoint: a.s3.endpoint.endpoint,
            s3_region: a.s3.endpoint.region,
            s3_path_style: a.s3.endpoint.path_style,
            aws_secret: a.aws_secret,
            traces_pvc: a.traces_pvc,
            privileged: a.privileged,
            sys_admin: a.sys_admin,
            extra_env: a.extra_env,
            secret_env: a.secret_env,
        }
    }
}

/// A window the sidecar will accept: the webhook refuses to start with one it would not.
fn parse_steps(s: &str) -> Result<String, String> {
    crate::daemon::output::step_window::StepWindowConfig::parse(s)
        .map(|_| s.trim().to_string())
        .map_err(|e| e.to_string())
}

fn parse_env_pair(s: &str) -> Result<(String, String), String> {
    let (name, value) = s.split_once('=').ok_or_else(|| format!("`{s}` is not NAME=VALUE"))?;
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid {
        return Err(format!("`{name}` is not a valid environment variable name"));
    }
    Ok((name.to_string(), value.to_string()))
}

fn parse_secret_ref(s: &str) -> Result<SecretEnvRef, String> {
    let (var, source) = parse_env_pair(s)?;
    match source.split_once(':') {
        Some((secret, key)) if !secret.is_empty() && !key.is_empty() => {
            Ok(SecretEnvRef { var, secret: secret.into(), key: key.into() })
        }
        _ => Err(format!("`{var}=...`: expected VAR=SECRET:KEY (the Secret's name and the key in it)")),
    }
}

#[derive(Debug, Args)]
pub struct PromptArgs {
    /// Base URL of the OpenAI-compatible server.
    #[arg(long, env = "VLLM_URL", default_value = "http://127.0.0.1:30800")]
    pub url: String,
    /// Model name (default: the first one GET /v1/models lists).
    #[arg(long)]
    pub model: Option<String>,
    /// The single prompt.
    #[arg(long, default_value = "Explain in one paragraph what a KV cache is in a transformer.")]
    pub prompt: String,
    /// Prompts in the batch (0: single prompt only); built-in prompts are cycled.
    #[arg(long, default_value_t = 15)]
    pub batch: usize,
    /// Batch prompts from this file instead, one per line.
    #[arg(long)]
    pub prompts_file: Option<PathBuf>,
    /// Requests in flight at once for the parallel run (1: sequential run only).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub parallel: u32,
    /// Send the batch only in parallel (--parallel N > 1), without the sequential run first:
    /// the seed's `batch-prompts.py --parallel --workers N`.
    #[arg(long)]
    pub parallel_only: bool,
    /// Tokens to generate per request.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: u32,
    /// Use /v1/chat/completions instead of /v1/completions.
    #[arg(long)]
    pub chat: bool,
    /// Seconds one request may take.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    /// Directory for the result JSON files.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
}

impl From<PromptArgs> for PromptConfig {
    fn from(a: PromptArgs) -> Self {
        Self {
            url: a.url,
            model: a.model,
            prompt: a.prompt,
            batch: a.batch,
            prompts_file: a.prompts_file,
            parallel: a.parallel,
            parallel_only: a.parallel_only,
            max_tokens: a.max_tokens,
            chat: a.chat,
            timeout: Duration::from_secs(a.timeout_secs),
            out: a.out,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn webhook(args: &[&str]) -> InjectConfig {
        let cli = Cli::try_parse_from(["cuda-tracer", "webhook"].iter().chain(args)).unwrap();
        let Command::Webhook(w) = cli.command else { panic!() };
        WebhookConfig::from(w).inject
    }

    #[test]
    fn env_pairs_are_checked() {
        assert_eq!(parse_env_pair("TRACE_INTERVAL=30"), Ok(("TRACE_INTERVAL".into(), "30".into())));
        assert_eq!(parse_env_pair("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(parse_env_pair("NOVALUE").unwrap_err().contains("NAME=VALUE"));
        assert!(parse_env_pair("1X=2").unwrap_err().contains("not a valid"));
        assert!(parse_env_pair("A B=2").unwrap_err().contains("not a valid"));
    }

    #[test]
    fn webhook_flags_become_the_inject_settings() {
        assert_eq!(webhook(&[]), InjectConfig::default(), "the flags' defaults are the library's");
        let c = webhook(&["--s3-bucket", "traces", "--s3-path-style", "--sidecar-env", "A=1,B=2", "--sidecar-env=C=3"]);
        assert_eq!((c.s3_bucket.as_deref(), c.s3_path_style), (Some("traces"), true));
        let pairs = [("A", "1"), ("B", "2"), ("C", "3")].map(|(n, v)| (n.to_string(), v.to_string()));
        assert_eq!(c.extra_env, pairs);
    }
}
