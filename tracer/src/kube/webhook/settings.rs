//! What the webhook injects and into which pods: the flags and environment
//! variables of `cuda-tracer webhook` that shape the sidecar.

use clap::Args;

/// Which pods get the tracer, and the sidecar they get. Every field has a
/// flag and an environment variable; the defaults follow the seed webhook
/// (namespace `downstream-llm-d`, label `llm-d.ai/inferenceServing=true`).
#[derive(Clone, Debug, Args)]
pub struct InjectArgs {
    /// Namespace whose pods are injected (`*`: every namespace the webhook configuration sends).
    #[arg(long = "target-namespace", env = "TARGET_NAMESPACE", default_value = "downstream-llm-d")]
    pub target_namespace: String,
    /// Pod label key that selects pods for injection.
    #[arg(long = "target-label-key", env = "TARGET_LABEL_KEY", default_value = "llm-d.ai/inferenceServing")]
    pub label_key: String,
    /// Value the label must have.
    #[arg(long = "target-label-value", env = "TARGET_LABEL_VALUE", default_value = "true")]
    pub label_value: String,
    /// Image of the injected tracer sidecar.
    #[arg(long = "tracer-image", env = "TRACER_IMAGE", default_value = "cuda-tracer:latest")]
    pub image: String,
    /// imagePullPolicy of the sidecar (IfNotPresent suits images imported into K3s).
    #[arg(
        long = "tracer-image-pull-policy",
        env = "TRACER_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent",
        value_parser = ["Always", "IfNotPresent", "Never"]
    )]
    pub image_pull_policy: String,
    /// TARGET_PROCESS of the sidecar: regex over process command lines.
    #[arg(long = "target-process", env = "TARGET_PROCESS", default_value = "vllm|VLLM")]
    pub target_process: String,
    /// VLLM_METRICS_URL of the sidecar (empty: no KV-cache scrape).
    #[arg(long = "vllm-metrics-url", env = "VLLM_METRICS_URL", default_value = "http://127.0.0.1:8000/metrics")]
    pub vllm_metrics_url: String,
    /// Sidecar port for /metrics, /healthz and /readyz (0: no metrics server, no probes).
    #[arg(long = "sidecar-metrics-port", env = "SIDECAR_METRICS_PORT", default_value_t = 9464)]
    pub metrics_port: u16,
    /// S3_BUCKET of the sidecar; without it the sidecar keeps traces local (UPLOAD_ENABLED=false).
    #[arg(long = "s3-bucket", env = "S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// S3_PREFIX of the sidecar.
    #[arg(long = "s3-prefix", env = "S3_PREFIX", default_value = "k3s-vllm/")]
    pub s3_prefix: String,
    /// S3_ENDPOINT of the sidecar (S3-compatible stores).
    #[arg(long = "s3-endpoint", env = "S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3_REGION of the sidecar.
    #[arg(long = "s3-region", env = "S3_REGION")]
    pub s3_region: Option<String>,
    /// S3_PATH_STYLE=true in the sidecar.
    #[arg(long = "s3-path-style", env = "S3_PATH_STYLE")]
    pub s3_path_style: bool,
    /// Secret in the pod's namespace whose keys (AWS_ACCESS_KEY_ID, ...) become sidecar env (optional).
    #[arg(long = "aws-secret", env = "AWS_CREDENTIALS_SECRET")]
    pub aws_secret: Option<String>,
    /// PersistentVolumeClaim in the pod's namespace for /traces (default: an emptyDir).
    #[arg(long = "traces-pvc", env = "TRACES_PVC")]
    pub traces_pvc: Option<String>,
    /// Run the sidecar privileged instead of with BPF, PERFMON, SYS_PTRACE and SYS_ADMIN (kernels < 5.8).
    #[arg(long = "sidecar-privileged", env = "TRACER_PRIVILEGED")]
    pub privileged: bool,
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

/// A sidecar variable read from a Secret: `VAR=SECRET:KEY`.
#[derive(Clone, Debug, PartialEq)]
pub struct SecretEnvRef {
    pub var: String,
    pub secret: String,
    pub key: String,
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

/// A set, non-empty value (an env var set to "" counts as unset).
pub(crate) fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// Parses `cuda-tracer webhook ARGS` into [`InjectArgs`], for tests.
#[cfg(test)]
pub(crate) fn parse_for_test(args: &[&str]) -> InjectArgs {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        inject: InjectArgs,
    }
    Cli::parse_from(std::iter::once(&"webhook").chain(args)).inject
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_pairs_are_checked() {
        assert_eq!(parse_env_pair("TRACE_INTERVAL=30"), Ok(("TRACE_INTERVAL".into(), "30".into())));
        assert_eq!(parse_env_pair("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(parse_env_pair("NOVALUE").unwrap_err().contains("NAME=VALUE"));
        assert!(parse_env_pair("1X=2").unwrap_err().contains("not a valid"));
        assert!(parse_env_pair("A B=2").unwrap_err().contains("not a valid"));
    }

    #[test]
    fn secret_refs_name_the_secret_and_key() {
        let r = parse_secret_ref("HF_TOKEN=hf-token:token").unwrap();
        assert_eq!((r.var.as_str(), r.secret.as_str(), r.key.as_str()), ("HF_TOKEN", "hf-token", "token"));
        for bad in ["HF_TOKEN=hf-token", "HF_TOKEN=:token", "HF_TOKEN=hf-token:"] {
            assert!(parse_secret_ref(bad).unwrap_err().contains("VAR=SECRET:KEY"), "{bad}");
        }
    }
}
