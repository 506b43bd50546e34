//! Ships closed trace files: finds them under the trace dir (this session's
//! and those an earlier run left), repairs half-written files a crash left
//! behind, uploads with retries and backoff, and deletes a trace file only
//! once the store has confirmed it. `metadata.json` is uploaded whenever it
//! changed and kept locally.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use serde::Serialize;

use crate::{
    daemon::output::upload::{S3Uploader, UploadError},
    format::{names, safe_fs},
};

/// A closed file waiting for the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub session: String,
    pub path: PathBuf,
    pub name: String,
}

/// What a file in a session dir is to delivery: one table, so a new kind of
/// file is one new row, not a widened special case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileKind {
    /// `trace_*.jsonl`.
    Trace,
    /// `kv_cache_usage_*.csv` and `kv_cache_evictions_*.csv`, written by the KV-cache scraper.
    KvChunk,
    /// `metadata.json`: uploaded whenever it changed, kept locally.
    Metadata,
    Other,
}

impl FileKind {
    fn of(name: &str) -> Self {
        if names::is_trace_file(name) {
            FileKind::Trace
        } else if names::is_kv_chunk(name) {
            FileKind::KvChunk
        } else if name == names::METADATA {
            FileKind::Metadata
        } else {
            FileKind::Other
        }
    }

    /// Closed line-oriented data files: repaired after a crash, uploaded,
    /// deleted once the store confirmed them.
    fn is_data(self) -> bool {
        matches!(self, FileKind::Trace | FileKind::KvChunk)
    }
}

/// Session directories under `dir`: `dir` itself when it holds a session
/// (`cuda-tracer upload SESSION_DIR`), else its subdirectories.
fn sessions(dir: &Path) -> Vec<PathBuf> {
    if safe_fs::is_regular_entry(&dir.join(names::METADATA)) {
        return vec![dir.to_path_buf()];
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    // A symlinked session dir is skipped: it would upload and delete files elsewhere.
    let mut dirs: Vec<PathBuf> =
        entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| safe_fs::is_real_dir(p)).collect();
    dirs.sort();
    dirs
}

fn session_name(dir: &Path) -> String {
    dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Closed trace files and metadata under `dir`, traces first (so uploaded
/// metadata never names a file the store lacks).
pub fn pending(dir: &Path) -> Vec<Pending> {
    let mut traces = Vec::new();
    let mut metas = Vec::new();
    for session_dir in sessions(dir) {
        let session = session_name(&session_dir);
        for name in safe_fs::regular_files(&session_dir) {
            let item = Pending { session: session.clone(), path: session_dir.join(&name), name: name.clone() };
            match FileKind::of(&name) {
                kind if kind.is_data() => traces.push(item),
                FileKind::Metadata => metas.push(item),
                _ => {}
            }
        }
    }
    traces.extend(metas);
    traces
}

/// Turns the `.partial` files a killed tracer left into closed files: the
/// incomplete last line is cut, every complete line is kept. Files of
/// `live_session` (still being written) are left alone.
pub fn repair_partials(dir: &Path, live_session: Option<&str>) -> Vec<PathBuf> {
    let mut repaired = Vec::new();
    for session_dir in sessions(dir) {
        if live_session == Some(session_name(&session_dir).as_str()) {
            continue;
        }
        for name in safe_fs::regular_files(&session_dir) {
            let Some(closed) = names::closed_name(&name) else { continue };
            if !FileKind::of(closed).is_data() {
                continue;
            }
            let partial = session_dir.join(&name);
            match repair_one(&partial, &session_dir.join(closed)) {
                Ok(()) => repaired.push(session_dir.join(closed)),
                Err(e) => {
                    tracing::error!(file = %partial.display(), error = %e, "cannot repair a half-written trace file")
                }
            }
        }
    }
    repaired
}

/// Reads and cuts the file through one descriptor, opened without following
/// a symlink: a link planted under a `.partial` name is never truncated.
fn repair_one(partial: &Path, closed: &Path) -> std::io::Result<()> {
    let mut file = safe_fs::open_regular(partial, true).map_err(safe_fs::SafeFsError::into_io)?;
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut data)?;
    let keep = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    file.set_len(keep as u64)?;
    file.sync_all()?;
    std::fs::rename(partial, closed)?;
    tracing::warn!(file = %closed.display(), kept_bytes = keep, cut_bytes = data.len() - keep, "repaired a trace file left half-written by an earlier run");
    Ok(())
}

/// Running totals, for logs, metrics and the exit report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DeliveryStats {
    pub uploaded_files: u64,
    pub uploaded_bytes: u64,
    pub failures: BTreeMap<&'static str, u64>,
    pub pending_files: usize,
    pub last_success_unix: Option<u64>,
}

/// The outcome of one upload round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoundReport {
    pub uploaded: usize,
    pub failed: usize,
    /// Files still only on local disk.
    pub remaining: Vec<PathBuf>,
}

/// Attempts per file in one round; later rounds try again.
const ATTEMPTS: u32 = 3;
/// Files uploaded at once.
const CONCURRENCY: usize = 4;

/// Uploads everything pending under a trace dir.
pub struct Delivery {
    uploader: S3Uploader,
    metrics: Option<std::sync::Arc<crate::daemon::output::metrics::Metrics>>,
    dir: PathBuf,
    metadata_sent: HashMap<PathBuf, (u64, SystemTime)>,
    last_error_log: HashMap<&'static str, Instant>,
    pub stats: DeliveryStats,
}

impl Delivery {
    pub fn new(
        uploader: S3Uploader,
        dir: &Path,
        metrics: Option<std::sync::Arc<crate::daemon::output::metrics::Metrics>>,
    ) -> Self {
        Self {
            uploader,
            metrics,
            dir: dir.to_path_buf(),
            metadata_sent: HashMap::new(),
            last_error_log: HashMap::new(),
            stats: DeliveryStats::default(),
        }
    }

    fn unchanged_metadata(&self, p: &Pending) -> bool {
        let Ok(meta) = std::fs::metadata(&p.path) else { return true };
        let stamp = (meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
        p.name == names::METADATA && self.metadata_sent.get(&p.path) == Some(&stamp)
    }

    /// Uploads every pending file once (with retries), stopping new work at
    /// `deadline`.
    pub async fn round(&mut self, deadline: Option<Instant>) -> RoundReport {
        let work: Vec<Pending> = pending(&self.dir).into_iter().filter(|p| !self.unchanged_metadata(p)).collect();
        let mut report = RoundReport::default();
        let mut queue = work.into_iter();
        let mut running = tokio::task::JoinSet::new();
        // A panicked upload still owes the report its file.
        let mut in_flight = HashMap::new();
        loop {
            while running.len() < CONCURRENCY {
                let Some(p) = queue.next() else { break };
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    report.remaining.push(p.path);
                    continue;
                }
                let uploader = self.uploader.clone();
                let path = p.path.clone();
                let task = running.spawn(async move {
                    let result = put_with_retries(&uploader, &p).await;
                    (p, result)
                });
                in_flight.insert(task.id(), path);
            }
            let Some(joined) = running.join_next_with_id().await else { break };
            match joined {
                Ok((id, (p, result))) => {
                    in_flight.remove(&id);
                    self.settle(p, result, &mut report);
                }
                Err(e) => {
                    let Some(path) = in_flight.remove(&e.id()) else { continue };
                    tracing::error!(file = %path.display(), error = %e, "upload task failed; the file stays on disk and is retried");
                    report.failed += 1;
                    report.remaining.push(path);
                    *self.stats.failures.entry("panic").or_default() += 1;
                }
            }
        }
        let waiting: Vec<Pending> = pending(&self.dir).into_iter().filter(|p| p.name != names::METADATA).collect();
        self.stats.pending_files = waiting.len();
        if let Some(m) = &self.metrics {
            m.files_uploaded.set(self.stats.uploaded_files as i64);
            m.files_pending.set(waiting.len() as i64);
            for (kind, n) in &self.stats.failures {
                m.upload_errors.get_or_create(&crate::daemon::output::metrics::KindLabel { kind }).set(*n as i64);
            }
            if let Some(t) = self.stats.last_success_unix {
                m.last_upload_unix.set(t as i64);
            }
            let bytes: u64 = waiting.iter().filter_map(|p| std::fs::metadata(&p.path).ok()).map(|md| md.len()).sum();
            m.local_bytes.set(bytes as i64);
        }
        report
    }

    fn settle(&mut self, p: Pending, result: Result<u64, UploadError>, report: &mut RoundReport) {
        match result {
            Ok(bytes) => {
                report.uploaded += 1;
                self.stats.uploaded_files += 1;
                self.stats.uploaded_bytes += bytes;
                self.stats.last_success_unix =
                    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).ok().map(|d| d.as_secs());
                // Per file, not per round: a scrape never lags what is on disk.
                if let Some(m) = &self.metrics {
                    m.files_uploaded.set(self.stats.uploaded_files as i64);
                    if let Some(t) = self.stats.last_success_unix {
                        m.last_upload_unix.set(t as i64);
                    }
                }
                if p.name == names::METADATA {
                    if let Ok(meta) = std::fs::metadata(&p.path) {
                        let stamp = (meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
                        self.metadata_sent.insert(p.path, stamp);
                    }
                } else if !safe_fs::is_regular_entry(&p.path) {
                    // Swapped for a symlink (or anything else) since it was read: not ours to delete.
                    tracing::warn!(file = %p.path.display(), "uploaded, but the entry is no longer a regular file; left alone");
                } else if let Err(e) = std::fs::remove_file(&p.path) {
                    tracing::warn!(file = %p.path.display(), error = %e, "uploaded, but the local file could not be removed");
                } else {
                    tracing::debug!(file = %p.name, session = %p.session, bytes, "uploaded and removed");
                }
            }
            Err(e) => {
                report.failed += 1;
                report.remaining.push(p.path.clone());
                *self.stats.failures.entry(e.kind()).or_default() += 1;
                // One line per kind of failure per minute: no log flood while the store is down.
                let now = Instant::now();
                let due =
                    self.last_error_log.get(e.kind()).is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(60));
                if due {
                    self.last_error_log.insert(e.kind(), now);
                    tracing::error!(error = %e, kind = e.kind(), "upload failed; the file stays on disk and is retried");
                }
            }
        }
    }
}

async fn put_with_retries(uploader: &S3Uploader, p: &Pending) -> Result<u64, UploadError> {
    let key = uploader.key(&p.session, &p.name);
    let mut attempt = 0;
    loop {
        match uploader.put(&p.path, &key).await {
            Ok(n) => return Ok(n),
            // Waiting does not fix credentials, a missing bucket or a vanished file.
            Err(e @ (UploadError::Credentials { .. } | UploadError::NoBucket { .. } | UploadError::Read { .. })) => {
                return Err(e)
            }
            Err(e) if attempt + 1 >= ATTEMPTS => return Err(e),
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
    }
}

/// Exponential backoff with jitter: 0.5 s, 1 s, 2 s … plus up to 50 %.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(500) * 2u32.saturating_pow(attempt.saturating_sub(1));
    let jitter = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos()) % 1000;
    base + base * jitter / 2000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_has_one_kind() {
        let kinds =
            ["trace_00001_20260101T000000Z.jsonl", "kv_cache_usage_00002.csv", "metadata.json", "kv_cache_usage.csv"]
                .map(FileKind::of);
        assert_eq!(kinds, [FileKind::Trace, FileKind::KvChunk, FileKind::Metadata, FileKind::Other]);
        assert_eq!(kinds.map(FileKind::is_data), [true, true, false, false]);
    }

    #[test]
    fn delivery_uploads_what_the_disk_budget_counts() {
        let trace = names::trace_file(1, "20260101T000000Z");
        for name in [trace.as_str(), "kv_cache_usage_00002.csv", "metadata.json", "kv_cache_usage.csv", "notes.txt"] {
            assert_eq!(FileKind::of(name).is_data(), names::is_data_file(name), "{name}");
        }
    }

    #[test]
    fn partial_files_of_other_sessions_are_repaired_to_their_last_full_line() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old-session");
        let live = dir.path().join("live-session");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::create_dir_all(&live).unwrap();
        std::fs::write(old.join(".trace_00003_x.jsonl.partial"), b"{\"a\":1}\n{\"a\":2}\n{\"a\":").unwrap();
        std::fs::write(live.join(".trace_00001_x.jsonl.partial"), b"{\"a\":1}\n{\"b\"").unwrap();
        let fixed = repair_partials(dir.path(), Some("live-session"));
        assert_eq!(fixed, vec![old.join("trace_00003_x.jsonl")]);
        assert_eq!(std::fs::read(&fixed[0]).unwrap(), b"{\"a\":1}\n{\"a\":2}\n");
        assert!(live.join(".trace_00001_x.jsonl.partial").exists(), "the live session is untouched");
    }

    #[test]
    fn pending_lists_closed_traces_before_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path().join("s1");
        std::fs::create_dir_all(&s).unwrap();
        for f in [
            "metadata.json",
            "trace_00002_b.jsonl",
            "trace_00001_a.jsonl",
            ".trace_00003_c.jsonl.partial",
            "kv_cache_usage_00001.csv",
            ".kv_cache_usage_00002.csv.partial",
        ] {
            std::fs::write(s.join(f), b"x\n").unwrap();
        }
        let names: Vec<String> = pending(dir.path()).into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["kv_cache_usage_00001.csv", "trace_00001_a.jsonl", "trace_00002_b.jsonl", "metadata.json"]);
        // A crash's open KV chunk is repaired like a trace file.
        let mut fixed = repair_partials(dir.path(), None);
        fixed.sort();
        assert_eq!(fixed, [s.join("kv_cache_usage_00002.csv"), s.join("trace_00003_c.jsonl")]);
        // A session dir given directly is its own session.
        assert_eq!(pending(&s)[0].session, "s1");
    }

    #[test]
    fn backoff_grows() {
        assert!(backoff(1) >= Duration::from_millis(500) && backoff(1) < Duration::from_millis(751));
        assert!(backoff(3) >= Duration::from_secs(2));
    }
}
