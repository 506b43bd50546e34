//! The session's `metadata.json`: what was traced, how `ts` maps to wall
//! time, which files hold the trace, and every count of what was lost.
//! Rewritten at start, at each rotation and at the end (atomically, and so
//! that a full disk cannot leave it `running`: [`super::metadata_store`]);
//! read back through the same type by `report` and `export`, so a renamed
//! field fails to compile. Every field may be absent (older
//! writers) and unknown fields are ignored (newer writers).
//!
//! Names the daemon takes from static tables are [`Name`]s: borrowed when
//! written, owned when read.

use std::{
    borrow::Cow,
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

pub use super::counts::{Counts, Drops};
use super::names;
use crate::daemon::output::stats::SummaryRow;

/// A name from one of the daemon's static tables (a function, a layer, a
/// status), or the same name read back from a file.
pub type Name = Cow<'static, str>;

/// Why metadata could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("writing {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} is not a cuda-tracer metadata.json: {source}")]
    Json { path: String, source: serde_json::Error },
}

/// A process seen during the session.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ProcessRecord {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    pub cmdline: String,
    /// How it came to be traced: `command`, `pid`, `pattern`, `fork`, `scan-child`.
    pub source: Name,
    /// `ts` (ms since session start) when tracing began.
    pub first_seen_ms: f64,
    /// `ts` when it exited, if it did during the session.
    pub exited_ms: Option<f64>,
}

/// A library attached only after a traced process had mapped it: the calls
/// it served before `attached_ms` are not in the trace (and cannot be counted,
/// since nothing probed them).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct LateLibrary {
    pub pid: u32,
    pub path: String,
    pub attached_ms: f64,
}

/// A library a traced process used whose calls are (partly) missing.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct MissedLibrary {
    pub pid: u32,
    /// The path as the process sees it.
    pub path: String,
    /// `attach_failed` (nothing of it is traced) or `late` (attached after
    /// the process had mapped it: its calls before `at_ms` are missing).
    pub reason: Name,
    /// Why the attach failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `ts` (ms since session start) when the miss was noticed.
    pub at_ms: f64,
}

/// One process held at a library open until its probes were attached.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct LibraryHold {
    pub pid: u32,
    pub tid: u32,
    pub path: String,
    /// From the open's return to the tracer's SIGCONT (0 when the kernel did not hold).
    pub held_ms: f64,
    /// `attached`, `already_attached`, `attach_failed`, `not_cuda`, `gone`.
    pub outcome: Name,
}

/// A library the probes are attached to.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AttachedLibrary {
    /// The path inside the process's mount namespace, as in /proc/PID/maps.
    pub path: String,
    /// The path the tracer opened (through /proc/PID/root for containers).
    pub opened: PathBuf,
    #[serde(rename = "type")]
    pub layer: Name,
    pub dev: u64,
    pub inode: u64,
    pub functions: Vec<Name>,
    /// Selected functions this library does not export.
    pub missing: Vec<Name>,
    pub probes: usize,
    /// How the probes are attached: `uprobe_multi` (one link per program
    /// for the whole library) or `perf_event` (one uprobe per function).
    pub attach: Name,
    /// Of `functions`, those traced name-only (`--functions exported`).
    pub name_only: usize,
    /// Exported functions not probed: past the per-library bound.
    pub not_probed: usize,
    /// Time spent attaching this library's probes.
    pub attach_ms: f64,
}

/// A finished trace file.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ClosedFile {
    pub name: String,
    pub lines: u64,
    pub bytes: u64,
}

/// A data file deleted to stay within the disk budget.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct DeletedFile {
    pub path: String,
    pub bytes: u64,
}

/// The KV-cache scraper's record, kept under `kv_cache`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct KvStatus {
    pub url: String,
    pub interval_secs: f64,
    /// Scrapes that gave a row.
    pub scrapes: u64,
    /// Failed scrapes by kind (`connect`, `timeout`, `http_status`, `body`, `too_large`, `bad_page`, `write`).
    pub scrape_errors: BTreeMap<Name, u64>,
    pub last_error: Option<String>,
    /// The usage gauge the endpoint serves (new or old name).
    pub usage_metric: Option<Name>,
    /// Whether the page served vLLM's sampled KV-block residency histograms
    /// (`vllm:kv_block_lifetime_seconds`, `--kv-cache-metrics`), whose
    /// differences are the `kv_cache_evictions_<seq>.csv` rows.
    pub eviction_metrics: bool,
    /// Closed CSV chunks (usage and evictions), in order.
    pub files: Vec<String>,
}

/// The largest `metadata.json` read back: one session's records are a few
/// MiB even with thousands of processes and files.
pub const MAX_METADATA_BYTES: u64 = 64 << 20;

/// The whole `metadata.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Metadata {
    pub session_id: String,
    pub tracer_version: Name,
    pub hostname: String,
    /// Kubernetes downward-API values (`POD_NAME`, `POD_NAMESPACE`, `NODE_NAME`), when set.
    pub kubernetes: Kubernetes,
    /// `running` while tracing, `finished` after a clean stop, `failed`
    /// when a task the daemon cannot do without failed (or the last write
    /// of this file did), `killed` when the tracer was killed (marked by
    /// its watchdog process).
    pub status: Name,
    pub mode: Name,
    pub command: Option<Vec<String>>,
    /// Whether secret values in `command` and the processes' `cmdline`s are
    /// replaced by `[REDACTED]` (the default; `--keep-cmdline-secrets` keeps them).
    pub cmdlines_redacted: bool,
    pub target_pattern: Option<String>,
    pub start_wall_clock: String,
    pub start_unix_ns: u128,
    /// CLOCK_BOOTTIME nanoseconds at `ts` = 0; a line's boot time is
    /// `start_boot_ns + ts * 1e6`. `None` only in a file that lacks it.
    pub start_boot_ns: Option<u64>,
    /// The boot whose CLOCK_BOOTTIME `start_boot_ns` reads: sessions with
    /// the same id are aligned by boot time, others by `start_unix_ns`.
    pub boot_id: Option<String>,
    /// The kernel's bound (NTP maximum error, microseconds) on how far
    /// `start_unix_ns` is from true time; `None` when the wall clock was not
    /// synchronized (or an older writer did not record it).
    pub start_wall_max_error_us: Option<u64>,
    pub ts_unit: Name,
    pub end_wall_clock: Option<String>,
    pub function_groups: Vec<Name>,
    pub follows_forks: bool,
    pub ringbuf_bytes: u32,
    pub processes: Vec<ProcessRecord>,
    pub libraries: Vec<AttachedLibrary>,
    /// Libraries attached after a traced process had mapped them.
    pub late_libraries: Vec<LateLibrary>,
    /// Every library a traced process used whose calls are not all traced:
    /// `attach_failed` (with the error) or `late`.
    pub missed_libraries: Vec<MissedLibrary>,
    /// Each time a traced process was held at a CUDA library open until its
    /// probes were attached, and for how long.
    pub library_holds: Vec<LibraryHold>,
    /// Data files deleted before upload to stay within the disk budget.
    pub deleted_for_disk_budget: Vec<DeletedFile>,
    pub files: Vec<ClosedFile>,
    pub counts: Counts,
    pub drops: Drops,
    /// Calls lost to a full ring buffer, per function.
    pub dropped_by_function: BTreeMap<Name, u64>,
    /// Calls that happened in traced processes but are not in the files:
    /// kernel-side drops plus write errors.
    pub dropped_events: u64,
    pub summary: Vec<SummaryRow>,
    /// The vLLM metrics scraper (`run --vllm-metrics-url`), when on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_cache: Option<KvStatus>,
}

impl Metadata {
    /// Writes `dir/metadata.json` (see [`super::metadata_store::write`]).
    pub fn write(&self, dir: &Path) -> Result<(), MetadataError> {
        let err = |source| MetadataError::Write { path: dir.join(names::METADATA).display().to_string(), source };
        let json = serde_json::to_vec_pretty(self).map_err(|e| err(std::io::Error::other(e)))?;
        super::metadata_store::write(dir, &json).map_err(err)
    }

    /// Reads `dir/metadata.json`.
    pub fn read(dir: &Path) -> Result<Self, MetadataError> {
        let path = dir.join(names::METADATA);
        let shown = || path.display().to_string();
        let bytes = super::open::read_regular(&path, MAX_METADATA_BYTES)
            .map_err(|source| MetadataError::Read { path: shown(), source })?;
        serde_json::from_slice(&bytes).map_err(|source| MetadataError::Json { path: shown(), source })
    }

    /// The metadata of the session a trace file belongs to (the
    /// `metadata.json` beside it), if it has readable metadata.
    pub fn of_trace_file(file: &Path) -> Option<Self> {
        let dir = file.parent()?;
        match Self::read(dir) {
            Ok(metadata) => Some(metadata),
            Err(e) => {
                // Absent metadata is normal (a bare trace file); anything else is said.
                if dir.join(names::METADATA).symlink_metadata().is_ok() {
                    tracing::warn!("{e}");
                }
                None
            }
        }
    }
}

/// The shift, in milliseconds, that puts `ts` of sessions on one boot clock
/// on one time axis: aligned on the earliest `start_boot_ns` (a session
/// without one is not shifted). `starts` holds each input's `start_boot_ns`.
/// Sessions of several machines are aligned by [`super::align::align`].
pub fn shifts_ms(starts: &[Option<u64>]) -> Vec<f64> {
    let origin = starts.iter().flatten().min().copied();
    starts
        .iter()
        .map(|start| match (start, origin) {
            (Some(s), Some(o)) => s.saturating_sub(o) as f64 / 1e6,
            _ => 0.0,
        })
        .collect()
}

/// Where the tracer runs in Kubernetes, from the downward-API environment.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_metadata_reads_back_as_itself() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Metadata {
            session_id: "s1".into(),
            tracer_version: "0.1.0".into(),
            status: "finished".into(),
            start_boot_ns: Some(1_000_000),
            boot_id: Some("b1".into()),
            start_wall_max_error_us: Some(1500),
            start_unix_ns: 1_700_000_000_000_000_000,
            function_groups: vec!["memory".into()],
            processes: vec![ProcessRecord {
                pid: 7,
                comm: "python".into(),
                source: "command".into(),
                ..Default::default()
            }],
            files: vec![ClosedFile { name: names::trace_file(1, "x"), lines: 2, bytes: 30 }],
            dropped_by_function: [("cudaMalloc".into(), 3)].into(),
            missed_libraries: vec![MissedLibrary {
                pid: 7,
                path: "/x/libcudart.so.12".into(),
                reason: "attach_failed".into(),
                error: Some("not an ELF file".into()),
                at_ms: 1.5,
            }],
            library_holds: vec![LibraryHold {
                pid: 7,
                tid: 8,
                path: "/x/libcudart.so.13".into(),
                held_ms: 12.0,
                outcome: "attached".into(),
            }],
            kv_cache: Some(KvStatus { scrape_errors: [("connect".into(), 1)].into(), ..Default::default() }),
            ..Default::default()
        };
        meta.write(dir.path()).unwrap();
        assert!(!dir.path().join(names::partial(names::METADATA)).exists());
        let back = Metadata::read(dir.path()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&meta).unwrap());
        assert_eq!((back.processes, back.start_boot_ns), (meta.processes, Some(1_000_000)));
    }

    #[test]
    fn older_and_newer_files_read_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(names::METADATA), r#"{"start_boot_ns":5,"a_future_field":{"x":[1]}}"#).unwrap();
        let meta = Metadata::read(dir.path()).unwrap();
        assert_eq!((meta.start_boot_ns, meta.processes.len(), meta.kv_cache), (Some(5), 0, None));
        std::fs::write(dir.path().join(names::METADATA), "{}").unwrap();
        assert_eq!(Metadata::read(dir.path()).unwrap().start_boot_ns, None);
        std::fs::write(dir.path().join(names::METADATA), "[").unwrap();
        assert!(Metadata::read(dir.path()).unwrap_err().to_string().contains("not a cuda-tracer metadata.json"));
    }

    #[test]
    fn sessions_are_aligned_on_the_earliest_start() {
        assert_eq!(shifts_ms(&[Some(3_000_000), None, Some(1_000_000)]), [2.0, 0.0, 0.0]);
        assert_eq!(shifts_ms(&[None, None]), [0.0, 0.0]);
    }
}
