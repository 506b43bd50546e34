//! What the daemon is told up front: plain structs the command line (or a
//! test) fills in; nothing here parses.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use regex::Regex;

use crate::daemon::{
    output::{budget::DiskBudget, kv_scrape::KvCacheConfig, upload::S3Config},
    probes::attach::Selection,
};

/// What to trace.
#[derive(Clone, Debug)]
pub enum Target {
    /// Start this command and trace it and its descendants until it exits.
    Command(Vec<String>),
    /// Trace these pids and every process matching the pattern, now or later.
    Daemon { pattern: Option<Regex>, pids: Vec<u32> },
}

/// Everything a session needs to know up front.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// The session directory: trace files and metadata.json go here.
    pub dir: PathBuf,
    pub session_id: String,
    pub target: Target,
    pub rotate_every: Duration,
    pub scan_every: Duration,
    pub selection: Selection,
    pub ringbuf_bytes: u32,
    /// Libraries to attach before anything runs (`--lib`).
    pub libs: Vec<PathBuf>,
    /// Attach do-nothing programs instead (benchmarks only).
    pub empty_probes: bool,
    /// The local disk budget (`--max-local-bytes`).
    pub budget: Option<DiskBudget>,
    /// Scrape vLLM's KV-cache usage into the session (`run --vllm-metrics-url`).
    pub kv_cache: Option<KvCacheConfig>,
    /// Store command lines with secret values redacted (see [`crate::secrets::redact_argv`]).
    pub redact_cmdlines: bool,
}

/// Uploads of the trace dir (`run` with a bucket).
#[derive(Clone, Debug)]
pub struct UploadConfig {
    pub s3: S3Config,
    /// Time between upload rounds.
    pub every: Duration,
    /// At shutdown, how long the last round may take.
    pub deadline: Duration,
}

/// One daemon: a session and the services around it.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub session: SessionConfig,
    /// The trace dir holding this and earlier sessions (`run`): uploaded,
    /// repaired and probed by `/readyz`. `record` has none.
    pub trace_dir: Option<PathBuf>,
    /// Serve `/metrics`, `/healthz` and `/readyz` here.
    pub metrics_addr: Option<SocketAddr>,
    pub upload: Option<UploadConfig>,
}
