//! What the daemon is told up front: plain structs the command line (or a
//! test) fills in; nothing here parses.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use regex::Regex;

use crate::daemon::{
    output::{
        budget::DiskBudget, kv_scrape::KvCacheConfig, parquet_sink::TraceFormat, step_window::StepWindowConfig,
        upload::S3Config,
    },
    probes::attach::Selection,
};

/// The default `--target-process`: vLLM's own entry points only, matched
/// against a process's command line (arguments joined by spaces) and its
/// name. In order: the titles vLLM gives its processes (`VLLM::EngineCore`,
/// `VLLM::Worker_TP0`, `VLLM::APIServer`: `set_process_title`, prefix
/// `VLLM_PROCESS_NAME_PREFIX`), the `vllm` command itself (`vllm serve …`,
/// name `vllm`), and Python running the `vllm` script or `-m vllm…`
/// (`python3 -m vllm.entrypoints.openai.api_server`). Anchored at the start
/// of the command line: "vllm" in a later argument opts nothing in.
pub const DEFAULT_TARGET_PROCESS: &str =
    r"^VLLM::|^(\S*/)?vllm( |$)|^(\S*/)?python[0-9.]*( -\S+)* ((\S*/)?vllm|-m ?vllm(\.\S+)?)( |$)";

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
    /// One perf-event uprobe per function even where the kernel has
    /// uprobe_multi links (tests of the fallback; benchmarks compare both).
    pub per_probe_uprobes: bool,
    /// The local disk budget (`--max-local-bytes`).
    pub budget: Option<DiskBudget>,
    /// Scrape vLLM's KV-cache usage into the session (`run --vllm-metrics-url`).
    pub kv_cache: Option<KvCacheConfig>,
    /// Store command lines with secret values redacted (see [`crate::secrets::redact_argv`]).
    pub redact_cmdlines: bool,
    /// JSONL, Parquet or both (`--format`).
    pub format: TraceFormat,
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
    /// Write the Chrome/Perfetto export of these steps into the session
    /// once they have passed (`run --profile-steps`, PROFILE_STEPS).
    pub profile_steps: Option<StepWindowConfig>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_pattern_matches_vllm_entry_points_only() {
        let re = Regex::new(DEFAULT_TARGET_PROCESS).unwrap();
        for vllm in [
            "VLLM::EngineCore",
            "VLLM::EngineCor",
            "VLLM::Worker_TP0",
            "vllm",
            "vllm serve facebook/opt-125m",
            "/usr/local/bin/vllm serve m",
            "/usr/bin/python3 /usr/local/bin/vllm serve facebook/opt-125m --port 8000",
            "python3 -m vllm.entrypoints.openai.api_server --model=m --host=0.0.0.0",
            "/opt/venv/bin/python3.12 -u -m vllm.entrypoints.openai.api_server",
            "python -m vllm serve m",
        ] {
            assert!(re.is_match(vllm), "{vllm}");
        }
        for other in [
            "sleep 600 vllm",
            "python3 -c import time; time.sleep(1) vllm",
            "python3 /tmp/evil.py --name vllm",
            "bash -c exec vllm serve",
            "cat /models/vllm/config.json",
            "python3 /srv/vllm-clone/app.py",
            "/usr/bin/vllm-exporter",
            "myVLLM::Engine",
        ] {
            assert!(!re.is_match(other), "{other}");
        }
    }
}
