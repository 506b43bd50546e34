//! The session's `metadata.json`: what was traced, how `ts` maps to wall
//! time, which files hold the trace, and every count of what was lost.
//! Rewritten atomically (temp file + rename) at start, at each rotation and
//! at the end.

use std::path::Path;

use serde::Serialize;

use crate::{
    daemon::output::sink::ClosedFile, daemon::output::stats::SummaryRow, daemon::probes::attach::AttachedLibrary,
    daemon::probes::loader::Drops,
};

/// Why metadata could not be written.
#[derive(Debug, thiserror::Error)]
#[error("writing {path}: {source}")]
pub struct MetadataError {
    pub path: String,
    pub source: std::io::Error,
}

/// A process seen during the session.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ProcessRecord {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    pub cmdline: String,
    /// How it came to be traced: `command`, `pid`, `pattern`, `fork`, `scan-child`.
    pub source: &'static str,
    /// `ts` (ms since session start) when tracing began.
    pub first_seen_ms: f64,
    /// `ts` when it exited, if it did during the session.
    pub exited_ms: Option<f64>,
}

/// A library attached only after a traced process had mapped it: the calls
/// it served before `attached_ms` are not in the trace (and cannot be counted,
/// since nothing probed them).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LateLibrary {
    pub pid: u32,
    pub path: String,
    pub attached_ms: f64,
}

/// Counts of everything the session saw or lost.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Counts {
    /// Calls written to trace files.
    pub calls: u64,
    /// Records the decoder rejected (each is also logged).
    pub decode_errors: u64,
    /// Lines that could not be written (disk full, I/O error).
    pub write_errors: u64,
    /// Calls not written while the disk budget paused writing.
    pub dropped_disk_budget: u64,
}

/// The whole `metadata.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Metadata {
    pub session_id: String,
    pub tracer_version: &'static str,
    pub hostname: String,
    /// Kubernetes downward-API values (`POD_NAME`, `POD_NAMESPACE`, `NODE_NAME`), when set.
    pub kubernetes: Kubernetes,
    /// `running` while tracing, `finished` after a clean stop.
    pub status: &'static str,
    pub mode: &'static str,
    pub command: Option<Vec<String>>,
    pub target_pattern: Option<String>,
    pub start_wall_clock: String,
    pub start_unix_ns: u128,
    /// CLOCK_BOOTTIME nanoseconds at `ts` = 0; a line's boot time is
    /// `start_boot_ns + ts * 1e6`.
    pub start_boot_ns: u64,
    pub ts_unit: &'static str,
    pub end_wall_clock: Option<String>,
    pub function_groups: Vec<&'static str>,
    pub follows_forks: bool,
    pub ringbuf_bytes: u32,
    pub processes: Vec<ProcessRecord>,
    pub libraries: Vec<AttachedLibrary>,
    /// Libraries attached after a traced process had mapped them.
    pub late_libraries: Vec<LateLibrary>,
    /// Every library a traced process used whose calls are not all traced:
    /// `attach_failed` (with the error) or `late`.
    pub missed_libraries: Vec<crate::daemon::probes::load_watch::MissedLibrary>,
    /// Each time a traced process was held at a CUDA library open until its
    /// probes were attached, and for how long.
    pub library_holds: Vec<crate::daemon::probes::load_watch::LibraryHold>,
    /// Trace files deleted before upload to stay within the disk budget.
    pub deleted_for_disk_budget: Vec<crate::daemon::output::budget::DeletedFile>,
    pub files: Vec<ClosedFile>,
    pub counts: Counts,
    pub drops: Drops,
    /// Calls lost to a full ring buffer, per function.
    pub dropped_by_function: std::collections::BTreeMap<&'static str, u64>,
    /// Calls that happened in traced processes but are not in the files:
    /// kernel-side drops plus write errors.
    pub dropped_events: u64,
    pub summary: Vec<SummaryRow>,
    /// The vLLM metrics scraper (`run --vllm-metrics-url`), when on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_cache: Option<crate::daemon::output::kv_scrape::KvStatus>,
}

impl Metadata {
    /// Writes `dir/metadata.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<(), MetadataError> {
        let dest = dir.join("metadata.json");
        let tmp = dir.join(".metadata.json.partial");
        let err = |source| MetadataError { path: dest.display().to_string(), source };
        let json = serde_json::to_vec_pretty(self).map_err(|e| err(std::io::Error::other(e)))?;
        std::fs::write(&tmp, json).map_err(err)?;
        std::fs::rename(&tmp, &dest).map_err(err)
    }
}

/// Where the tracer runs in Kubernetes, from the downward-API environment.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Kubernetes {
    pub pod: Option<String>,
    pub namespace: Option<String>,
    pub node: Option<String>,
}

impl Kubernetes {
    pub fn from_env() -> Self {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        Self { pod: var("POD_NAME"), namespace: var("POD_NAMESPACE"), node: var("NODE_NAME") }
    }
}

/// The machine's host name (the node name in a pod with hostNetwork, else the pod name).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}
