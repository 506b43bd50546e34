//! What the webhook injects and into which pods: the settings that shape the
//! sidecar, with the seed's defaults.

/// The seed's defaults; the command line shows them in its help.
pub mod defaults {
    pub const TARGET_NAMESPACE: &str = "downstream-llm-d";
    pub const LABEL_KEY: &str = "llm-d.ai/inferenceServing";
    pub const LABEL_VALUE: &str = "true";
    pub const IMAGE: &str = "cuda-tracer:latest";
    pub const IMAGE_PULL_POLICY: &str = "IfNotPresent";
    pub const TARGET_PROCESS: &str = crate::daemon::config::DEFAULT_TARGET_PROCESS;
    pub const VLLM_METRICS_URL: &str = "http://127.0.0.1:8000/metrics";
    pub const METRICS_PORT: u16 = 9464;
    pub const S3_PREFIX: &str = "k3s-vllm/";
    /// The seed webhook's calls 100-150, as a step window.
    pub const PROFILE_STEPS: &str = "100..150";
}

/// Which pods get the tracer, and the sidecar they get (the seed's defaults:
/// namespace `downstream-llm-d`, label `llm-d.ai/inferenceServing=true`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectConfig {
    /// Namespace whose pods are injected (`*`: every namespace).
    pub target_namespace: String,
    pub label_key: String,
    pub label_value: String,
    /// Image of the sidecar and its imagePullPolicy.
    pub image: String,
    pub image_pull_policy: String,
    /// The sidecar's TARGET_PROCESS and VLLM_METRICS_URL (empty: no scrape).
    pub target_process: String,
    pub vllm_metrics_url: String,
    /// Sidecar port for /metrics and the probes (0: none).
    pub metrics_port: u16,
    /// The sidecar's PROFILE_STEPS (empty: no step window export).
    pub profile_steps: String,
    /// Where the sidecar uploads; no bucket keeps traces local.
    pub s3_bucket: Option<String>,
    pub s3_prefix: String,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_path_style: bool,
    /// Secret whose keys become sidecar env.
    pub aws_secret: Option<String>,
    /// PersistentVolumeClaim for /traces (none: an emptyDir).
    pub traces_pvc: Option<String>,
    /// Privileged instead of the BPF capabilities (kernels < 5.8).
    pub privileged: bool,
    /// SYS_ADMIN added to the capabilities (perf-event uprobes on kernels
    /// before 6.6 with the 2025 uprobe fix).
    pub sys_admin: bool,
    /// More sidecar env, overriding the rest. Never secrets: the webhook
    /// refuses to start with a secret-looking one.
    pub extra_env: Vec<(String, String)>,
    /// Sidecar env from Secrets in the pod's namespace, injected as
    /// `secretKeyRef`, never as a value.
    pub secret_env: Vec<SecretEnvRef>,
}

/// A sidecar variable read from a Secret: `VAR=SECRET:KEY`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretEnvRef {
    pub var: String,
    pub secret: String,
    pub key: String,
}

impl Default for InjectConfig {
    fn default() -> Self {
        Self {
            target_namespace: defaults::TARGET_NAMESPACE.into(),
            label_key: defaults::LABEL_KEY.into(),
            label_value: defaults::LABEL_VALUE.into(),
            image: defaults::IMAGE.into(),
            image_pull_policy: defaults::IMAGE_PULL_POLICY.into(),
            target_process: defaults::TARGET_PROCESS.into(),
            vllm_metrics_url: defaults::VLLM_METRICS_URL.into(),
            metrics_port: defaults::METRICS_PORT,
            profile_steps: defaults::PROFILE_STEPS.into(),
            s3_bucket: None,
            s3_prefix: defaults::S3_PREFIX.into(),
            s3_endpoint: None,
            s3_region: None,
            s3_path_style: false,
            aws_secret: None,
            traces_pvc: None,
            privileged: false,
            sys_admin: false,
            extra_env: Vec::new(),
            secret_env: Vec::new(),
        }
    }
}

/// A set, non-empty value (an env var set to "" counts as unset).
pub(crate) fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// Parses `cuda-tracer webhook ARGS` into an [`InjectConfig`] through the
/// real command line, for tests.
#[cfg(test)]
pub(crate) fn parse_for_test(args: &[&str]) -> InjectConfig {
    use clap::Parser as _;
    let argv = ["cuda-tracer", "webhook"].into_iter().chain(args.iter().copied());
    let cli = crate::cli::Cli::try_parse_from(argv).expect("test arguments parse");
    let crate::cli::Command::Webhook(w) = cli.command else { unreachable!("parsed as webhook") };
    super::WebhookConfig::from(w).inject
}
