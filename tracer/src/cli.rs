//! Command-line interface (clap); environment variables from the seed's
//! sidecar (`TARGET_PROCESS`, `TRACE_DIR`, `TRACE_INTERVAL`) are defaults.
//! The only module that knows clap: each command's arguments convert into
//! the plain configuration its library module takes.

pub mod analysis;
pub mod kube;

use std::path::PathBuf;

use clap::{builder::PossibleValue, Args, Parser, Subcommand, ValueEnum};

use crate::daemon::{
    output::{budget::DiskFullPolicy, parquet_sink::TraceFormat},
    probes::attach::Selection,
};

#[derive(Debug, Parser)]
#[command(name = "cuda-tracer", version, about = "eBPF tracer of CUDA driver and runtime calls")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    // The display orders are the ones these options had while a ninth,
    // hidden subcommand existed: each command's help keeps its order.
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "LOG_FORMAT", display_order = 9)]
    pub log_format: LogFormat,
    /// Log filter (tracing env-filter syntax), e.g. `info` or `cuda_tracer=debug`.
    #[arg(long, global = true, default_value = "info", env = "RUST_LOG", display_order = 10)]
    pub log_level: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a command, trace it and its children until it exits, print a summary.
    Record(RecordArgs),
    /// Daemon: trace matching processes (now and later) into rotating files.
    Run(RunArgs),
    /// Preflight: kernel, BTF, uprobes, capabilities, and the target process.
    Check(CheckArgs),
    /// Upload a trace dir (or one session dir) to S3 once, with the daemon's rules.
    Upload(UploadArgs),
    /// Answers from trace files: functions, kernels, memory, CUDA graphs, steps, KV cache, plots.
    Report(analysis::ReportArgs),
    /// Convert trace files for other tools (Chrome/Perfetto trace JSON).
    Export(analysis::ExportArgs),
    /// The most launched kernels across every input (a fleet's lake, many nodes), with their
    /// launch-call time: report's kernels table added up per kernel, alone and fast.
    TopKernels(analysis::TopKernelsArgs),
    /// Mutating admission webhook that injects the tracer sidecar into labelled pods.
    Webhook(kube::WebhookArgs),
    /// Send prompts to an OpenAI-compatible server (vLLM) and save the results as JSON.
    Prompt(kube::PromptArgs),
}

/// Options shared by `record` and `run`.
#[derive(Clone, Debug, Args)]
pub struct TraceArgs {
    /// Function groups to trace: launch, memory, memcpy, sync, graph, module, memset, vmm,
    /// hostmem, nccl, stream, device, highrate; `default` is every group but highrate,
    /// `all` every group; `exported` adds every other exported function of the CUDA
    /// libraries, name-only.
    #[arg(long, default_value = "default", env = "TRACE_FUNCTIONS")]
    pub functions: Selection,
    /// Seconds between trace file rotations.
    #[arg(long = "rotate-secs", default_value_t = 60, env = "TRACE_INTERVAL", value_parser = clap::value_parser!(u64).range(1..=MAX_ROTATE_SECS))]
    pub rotate_secs: u64,
    /// Milliseconds between scans for new processes and newly mapped libraries.
    #[arg(long = "scan-interval-ms", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub scan_interval_ms: u64,
    /// Ring buffer size in bytes (power of two, at least one page).
    #[arg(long = "ringbuf-bytes", default_value_t = 16 << 20, value_parser = parse_ringbuf)]
    pub ringbuf_bytes: u32,
    /// Also attach this CUDA library up front (repeatable), e.g. one a program will dlopen.
    #[arg(long = "lib")]
    pub libs: Vec<PathBuf>,
    /// Cap on the bytes of trace files kept locally (default: no cap).
    #[arg(long = "max-local-bytes", env = "MAX_LOCAL_BYTES", value_parser = clap::value_parser!(u64).range(1..=1 << 50))]
    pub max_local_bytes: Option<u64>,
    /// At the cap: `pause` writing (counted, never deletes) or `delete-oldest` closed files (recorded).
    #[arg(long = "on-disk-full", env = "ON_DISK_FULL", value_enum, default_value_t = DiskFullPolicy::Pause)]
    pub on_disk_full: DiskFullPolicy,
    /// Store traced command lines in metadata.json as they are, secret values
    /// included (by default the values of --api-key, --hf-token, *-key, *token*,
    /// *secret*, *password* flags and of such KEY=VALUE words are redacted).
    #[arg(long = "keep-cmdline-secrets", env = "KEEP_CMDLINE_SECRETS")]
    pub keep_cmdline_secrets: bool,
    /// Trace file format: `jsonl` (the default), `parquet` or `both` (see docs/FLEET.md).
    #[arg(long = "format", env = "TRACE_FORMAT", value_enum, default_value_t = TraceFormat::Jsonl)]
    pub format: TraceFormat,
    /// Benchmarks: attach empty programs at the same points (records nothing).
    #[arg(long = "empty-probes", hide = true)]
    pub empty_probes: bool,
    /// Tests and benchmarks: one perf-event uprobe per function, as on
    /// kernels without uprobe_multi links.
    #[arg(long = "per-probe-uprobes", hide = true)]
    pub per_probe_uprobes: bool,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// Session directory for trace files and metadata.json (default: traces/<session-id>).
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub trace: TraceArgs,
    /// The command to run, after `--`.
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Regex matched against each process's command line and name.
    #[arg(long = "target-process", env = "TARGET_PROCESS", default_value = crate::daemon::config::DEFAULT_TARGET_PROCESS)]
    pub target_process: String,
    /// Trace this pid (repeatable); with --pid only, no pattern scan unless --target-process is also given.
    #[arg(long = "pid")]
    pub pids: Vec<u32>,
    /// Parent directory of session directories.
    #[arg(long = "trace-dir", env = "TRACE_DIR", default_value = "/traces")]
    pub trace_dir: PathBuf,
    #[command(flatten)]
    pub trace: TraceArgs,
    #[command(flatten)]
    pub s3: S3Args,
    /// Seconds between uploads of closed trace files.
    #[arg(long = "upload-interval-secs", env = "UPLOAD_INTERVAL", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=MAX_INTERVAL_SECS))]
    pub upload_interval_secs: u64,
    /// Serve Prometheus /metrics, /healthz and /readyz on this address (e.g. 0.0.0.0:9464).
    #[arg(long = "metrics-addr", env = "METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Scrape vLLM's Prometheus endpoint (e.g. http://127.0.0.1:8000/metrics) into kv_cache_usage.csv.
    #[arg(long = "vllm-metrics-url", env = "VLLM_METRICS_URL")]
    pub vllm_metrics_url: Option<String>,
    /// Seconds between scrapes of --vllm-metrics-url.
    #[arg(long = "metrics-interval", env = "VLLM_METRICS_INTERVAL", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub metrics_interval: u64,
    /// Keep traces local (the same as UPLOAD_ENABLED=false).
    #[arg(long = "no-upload")]
    pub no_upload: bool,
    /// The seed's switch: `false` keeps traces local; unset or `true`, upload is on whenever a
    /// bucket is configured.
    #[arg(long = "upload-enabled", env = "UPLOAD_ENABLED", action = clap::ArgAction::Set, hide = true)]
    pub upload_enabled: Option<bool>,
    #[command(flatten)]
    pub profile: ProfileArgs,
}

/// The step window of `run` (the seed webhook's calls 100-150, per pod).
#[derive(Clone, Debug, Args)]
pub struct ProfileArgs {
    /// Model steps whose Chrome/Perfetto trace is written into the session dir (and uploaded)
    /// once they have passed, e.g. `100..150`; empty: none.
    #[arg(long = "profile-steps", env = "PROFILE_STEPS", default_value = "100..150",
          value_parser = parse_profile_steps)]
    pub steps: ProfileSteps,
}

/// A checked `--profile-steps`: `None` when empty (off).
#[derive(Clone, Debug)]
pub struct ProfileSteps(pub Option<crate::daemon::output::step_window::StepWindowConfig>);

fn parse_profile_steps(s: &str) -> Result<ProfileSteps, String> {
    crate::daemon::output::step_window::StepWindowConfig::parse(s).map(ProfileSteps).map_err(|e| e.to_string())
}

/// `run` was told to upload but has no bucket.
#[derive(Debug, thiserror::Error)]
#[error(
    "S3_BUCKET / --s3-bucket is required when upload is on; pass --no-upload (or UPLOAD_ENABLED=false) to keep traces local"
)]
pub struct MissingBucket;

impl RunArgs {
    /// Where `run` uploads (the seed's rule: on whenever a bucket is
    /// configured). `None` keeps traces local: upload switched off, or
    /// S3_BUCKET set but blank (the manifests' ConfigMap default) while
    /// UPLOAD_ENABLED is not `true`. No S3_BUCKET at all is an error unless
    /// upload is off: a forgotten bucket must not silently keep traces local.
    pub fn upload_target(&self) -> Result<Option<crate::daemon::output::upload::S3Config>, MissingBucket> {
        if self.no_upload || self.upload_enabled == Some(false) {
            return Ok(None);
        }
        match self.s3.config() {
            Some(cfg) => Ok(Some(cfg)),
            None if self.upload_enabled.is_none() && self.s3.target.bucket.is_some() => Ok(None),
            None => Err(MissingBucket),
        }
    }
}

impl ValueEnum for DiskFullPolicy {
    fn value_variants<'a>() -> &'a [Self] {
        &[Self::Pause, Self::DeleteOldest]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Self::Pause => PossibleValue::new("pause")
                .help("Stop writing lines (each one counted as dropped) until uploads free space"),
            Self::DeleteOldest => {
                PossibleValue::new("delete-oldest").help("Delete the oldest closed trace files, recording which")
            }
        })
    }
}

impl ValueEnum for TraceFormat {
    fn value_variants<'a>() -> &'a [Self] {
        &[Self::Jsonl, Self::Parquet, Self::Both]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Self::Jsonl => PossibleValue::new("jsonl").help("JSONL trace files (one call a line)"),
            Self::Parquet => PossibleValue::new("parquet").help("Parquet trace files only"),
            Self::Both => PossibleValue::new("both").help("JSONL and Parquet, rotated together"),
        })
    }
}

/// Where traces are uploaded. Credentials come from the standard AWS chain
/// (env variables, web identity / IRSA, shared config, instance profile).
#[derive(Clone, Debug, Args)]
pub struct S3Args {
    #[command(flatten)]
    pub target: S3Target,
    /// At shutdown, seconds to keep uploading what is pending.
    #[arg(long = "upload-deadline-secs", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=MAX_INTERVAL_SECS))]
    pub deadline_secs: u64,
    /// Files above this size upload in parts of this size (at least 5 MiB per part).
    #[arg(long = "multipart-bytes", default_value_t = crate::daemon::output::upload::MULTIPART_BYTES, hide = true,
          value_parser = clap::value_parser!(u64).range(5 << 20..=5 << 30))]
    pub multipart_bytes: u64,
    #[command(flatten)]
    pub timeout: S3Timeout,
}

/// How long one request to the store may take.
#[derive(Clone, Debug, Args)]
pub struct S3Timeout {
    /// Seconds one request to the store may take to answer (connecting: at most 10 s of it); a store that
    /// accepts and never answers fails the upload (retried later) or the report. Bounds each upload at
    /// shutdown too.
    #[arg(long = "s3-timeout-secs", env = "S3_TIMEOUT_SECS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout_secs: u64,
}

/// The bucket and how to reach it: the flags (and variables) the daemon and
/// the webhook share; the webhook passes them on to its sidecar.
#[derive(Clone, Debug, Args)]
pub struct S3Target {
    /// Bucket for uploads; required when upload is on.
    #[arg(long = "s3-bucket", env = "S3_BUCKET")]
    pub bucket: Option<String>,
    /// Key prefix; objects go to <prefix><pod-or-node>/<session>/<file>.
    #[arg(long = "s3-prefix", env = "S3_PREFIX", default_value = "k3s-vllm/")]
    pub prefix: String,
    #[command(flatten)]
    pub endpoint: S3Endpoint,
}

/// How to reach the store: shared by uploads and by `report`/`export`
/// reading `s3://` inputs.
#[derive(Clone, Debug, Args)]
pub struct S3Endpoint {
    /// Endpoint of an S3-compatible store (MinIO, Ceph, R2, SeaweedFS).
    #[arg(long = "s3-endpoint", env = "S3_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Region (default: from the AWS chain, else us-east-1).
    #[arg(long = "s3-region", env = "S3_REGION")]
    pub region: Option<String>,
    /// Path-style addressing (endpoint/bucket/key), for S3-compatible stores.
    #[arg(long = "s3-path-style", env = "S3_PATH_STYLE")]
    pub path_style: bool,
}

impl S3Args {
    /// The upload target, if a bucket is set. Objects are grouped by the
    /// downward-API pod name, else the node name, else the host name.
    pub fn config(&self) -> Option<crate::daemon::output::upload::S3Config> {
        let source = ["POD_NAME", "NODE_NAME"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(crate::format::metadata::hostname);
        let k8s = crate::format::metadata::Kubernetes::from_env();
        let target = &self.target;
        Some(crate::daemon::output::upload::S3Config {
            // An empty S3_BUCKET (a blank ConfigMap value) means no bucket.
            bucket: target.bucket.clone().filter(|b| !b.trim().is_empty())?,
            prefix: target.prefix.clone(),
            endpoint: target.endpoint.endpoint.clone(),
            region: target.endpoint.region.clone(),
            path_style: target.endpoint.path_style,
            source,
            node: k8s.node.unwrap_or_else(crate::format::metadata::hostname),
            pod: k8s.pod,
            multipart_bytes: self.multipart_bytes,
            timeout: std::time::Duration::from_secs(self.timeout.timeout_secs),
        })
    }
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// A trace dir (session dirs inside) or one session dir.
    pub dir: PathBuf,
    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also check that this process maps CUDA libraries the tracer can attach to.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Check only the upload target: put and delete a probe object in the configured bucket
    /// with the configured credentials (the S3_* settings of `run`; credentials never printed).
    #[arg(long = "s3")]
    pub s3_only: bool,
    #[command(flatten)]
    pub s3: S3Args,
}

/// A week: a trace file rotated less often than this is never closed in practice.
const MAX_ROTATE_SECS: u64 = 86_400 * 7;
/// A day, for upload intervals and deadlines.
const MAX_INTERVAL_SECS: u64 = 86_400;

fn parse_ringbuf(s: &str) -> Result<u32, String> {
    let v: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if !(4096..=1 << 30).contains(&v) || !v.is_power_of_two() {
        return Err(format!("{v} is not a power of two from 4096 to 1073741824 (try 16777216)"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_takes_command_after_dashes() {
        let cli = Cli::try_parse_from(["cuda-tracer", "record", "-o", "out", "--", "prog", "-x"]).unwrap();
        let Command::Record(r) = cli.command else { panic!() };
        assert_eq!(r.command, ["prog", "-x"]);
        assert_eq!(r.trace.rotate_secs, 60);
    }

    #[test]
    fn bad_values_are_named() {
        let err = Cli::try_parse_from(["cuda-tracer", "run", "--ringbuf-bytes", "1000"]).unwrap_err().to_string();
        assert!(err.contains("power of two"), "{err}");
        let err = Cli::try_parse_from(["cuda-tracer", "run", "--functions", "nope"]).unwrap_err().to_string();
        assert!(err.contains("unknown function group"), "{err}");
        assert!(Cli::try_parse_from(["cuda-tracer", "run", "--rotate-secs", "0"]).is_err());
        assert!(Cli::try_parse_from(["cuda-tracer", "record"]).is_err());
    }

    fn run_args(args: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(["cuda-tracer", "run"].iter().chain(args)).unwrap();
        let Command::Run(r) = cli.command else { panic!() };
        r
    }

    #[test]
    fn profile_steps_default_to_the_seed_window_and_empty_turns_them_off() {
        assert_eq!(run_args(&[]).profile.steps.0.map(|w| w.steps).as_deref(), Some("100..150"));
        assert_eq!(run_args(&["--profile-steps", "5..10"]).profile.steps.0.map(|w| w.steps).as_deref(), Some("5..10"));
        assert!(run_args(&["--profile-steps", ""]).profile.steps.0.is_none());
        let err = Cli::try_parse_from(["cuda-tracer", "run", "--profile-steps", "5-10"]).unwrap_err().to_string();
        assert!(err.contains("PROFILE_STEPS") && err.contains("100..150"), "{err}");
    }

    #[test]
    fn upload_is_on_whenever_a_bucket_is_configured() {
        let bucket = ["--s3-bucket", "traces"];
        assert!(run_args(&bucket).upload_target().unwrap().is_some());
        assert!(run_args(&[&bucket[..], &["--upload-enabled", "false"]].concat()).upload_target().unwrap().is_none());
        assert!(run_args(&["--no-upload"]).upload_target().unwrap().is_none());
        // A blank bucket (the manifests' default) keeps traces local; none at all is named.
        assert!(run_args(&["--s3-bucket", " "]).upload_target().unwrap().is_none());
        assert!(run_args(&["--s3-bucket", "", "--upload-enabled", "true"]).upload_target().is_err());
    }
}
