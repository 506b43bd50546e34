//! Ships closed trace files: finds them under the trace dir (this session's
//! and those an earlier run left), repairs half-written files a crash left
//! behind, uploads with retries and backoff, and deletes a trace file only
//! once the store has confirmed it. `metadata.json` and the step window's
//! export are uploaded whenever they changed and kept locally.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use serde::Serialize;

use crate::{
    daemon::output::upload::{S3Uploader, UploadError},
    format::{names, safe_fs, session_lock},
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
    /// `trace_*.parquet` (`--format parquet|both`): uploaded under the
    /// Parquet lake's Hive-style keys. A `.partial` one has no footer yet and
    /// is never "repaired": there is nothing in it a reader could use.
    Parquet,
    /// `kv_cache_usage_*.csv` and `kv_cache_evictions_*.csv`, written by the KV-cache scraper.
    KvChunk,
    /// `metadata.json`: uploaded whenever it changed, kept locally.
    Metadata,
    /// The PROFILE_STEPS Chrome export: like metadata, uploaded and kept
    /// (`kubectl cp` finds it in the pod too).
    StepExport,
    Other,
}

impl FileKind {
    fn of(name: &str) -> Self {
        if names::is_trace_file(name) {
            FileKind::Trace
        } else if names::is_parquet_trace_file(name) {
            FileKind::Parquet
        } else if names::is_kv_chunk(name) {
            FileKind::KvChunk
        } else if name == names::METADATA {
            FileKind::Metadata
        } else if name == names::STEP_WINDOW_EXPORT {
            FileKind::StepExport
        } else {
            FileKind::Other
        }
    }

    /// Closed line-oriented data files: repaired after a crash, uploaded,
    /// deleted once the store confirmed them.
    fn is_data(self) -> bool {
        matches!(self, FileKind::Trace | FileKind::Parquet | FileKind::KvChunk)
    }

    /// Data files made of lines: a half-written one is cut to its last line.
    fn is_lines(self) -> bool {
        matches!(self, FileKind::Trace | FileKind::KvChunk)
    }

    /// Uploaded whenever changed, after the data files, and kept locally.
    fn is_kept(self) -> bool {
        matches!(self, FileKind::Metadata | FileKind::StepExport)
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

/// A session `upload` leaves alone: a running tracer still writes it.
#[derive(Debug, thiserror::Error)]
#[error(
    "{} is still being written by a running tracer (it holds {}); nothing in it was uploaded, repaired or \
     deleted. Upload it once that tracer has ended (record ends with its command, run on SIGTERM; a run with \
     a bucket uploads its own sessions)",
    .0.display(),
    .0.join(names::SESSION_LOCK).display()
)]
pub struct LiveSession(pub PathBuf);

/// Session dirs under `dir` that another running tracer still writes (it
/// holds their lock): nothing in them is uploaded, repaired or deleted.
/// `own` is the caller's own live session, which is not another's.
pub fn live_sessions(dir: &Path, own: Option<&str>) -> Vec<PathBuf> {
    sessions(dir).into_iter().filter(|d| own != Some(session_name(d).as_str()) && session_lock::is_held(d)).collect()
}

/// Closed trace files and metadata under `dir`, traces first (so uploaded
/// metadata never names a file the store lacks); sessions another running
/// tracer holds are left out, the caller's `own` live session is not.
pub fn pending(dir: &Path, own: Option<&str>) -> Vec<Pending> {
    let mut traces = Vec::new();
    let mut metas = Vec::new();
    let others_live = live_sessions(dir, own);
    for session_dir in sessions(dir).into_iter().filter(|d| !others_live.contains(d)) {
        let session = session_name(&session_dir);
        for name in safe_fs::regular_files(&session_dir) {
            let item = Pending { session: session.clone(), path: session_dir.join(&name), name: name.clone() };
            match FileKind::of(&name) {
                kind if kind.is_data() => traces.push(item),
                kind if kind.is_kept() => metas.push(item),
                _ => {}
            }
        }
    }
    traces.extend(metas);
    traces
}

/// Turns the `.partial` files a killed tracer left into closed files: the
/// incomplete last line is cut, every complete line is kept. The session
/// dirs in `leave_alone` and every session a running tracer holds (still
/// being written) are left alone.
pub fn repair_partials(dir: &Path, leave_alone: &[PathBuf]) -> Vec<PathBuf> {
    let mut repaired = Vec::new();
    for session_dir in sessions(dir) {
        if leave_alone.contains(&session_dir) || session_lock::is_held(&session_dir) {
            continue;
        }
        for name in safe_fs::regular_files(&session_dir) {
            let Some(closed) = names::closed_name(&name) else { continue };
            if !FileKind::of(closed).is_lines() {
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
    /// Uploads in flight at the deadline, cancelled (also in `remaining`).
    pub cancelled: usize,
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
    /// The daemon's own live session, uploaded while it runs.
    own_session: Option<String>,
    /// Sessions never touched (`upload` refused them once: a writer that
    /// ends meanwhile does not change that).
    leave_alone: Vec<PathBuf>,
    metadata_sent: HashMap<PathBuf, (u64, SystemTime)>,
    last_error_log: HashMap<&'static str, Instant>,
    pub stats: DeliveryStats,
}

impl Delivery {
    /// Delivery of `dir`; `own_session` is the caller's own live session
    /// (the daemon's), whose closed files go up while it runs. Every other
    /// session a running tracer holds is left alone.
    pub fn new(
        uploader: S3Uploader,
        dir: &Path,
        own_session: Option<&str>,
        metrics: Option<std::sync::Arc<crate::daemon::output::metrics::Metrics>>,
    ) -> Self {
        Self {
            uploader,
            metrics,
            dir: dir.to_path_buf(),
            own_session: own_session.map(str::to_string),
            leave_alone: Vec::new(),
            metadata_sent: HashMap::new(),
            last_error_log: HashMap::new(),
            stats: DeliveryStats::default(),
        }
    }

    /// Never touches the session dirs `sessions`.
    pub fn leaving_alone(mut self, sessions: Vec<PathBuf>) -> Self {
        self.leave_alone = sessions;
        self
    }

    /// Files this delivery may upload (and then delete) now.
    fn work(&self) -> Vec<Pending> {
        let own = self.own_session.as_deref();
        pending(&self.dir, own)
            .into_iter()
            .filter(|p| !self.leave_alone.iter().any(|s| p.path.starts_with(s)))
            .collect()
    }

    fn unchanged_metadata(&self, p: &Pending) -> bool {
        let Ok(meta) = std::fs::metadata(&p.path) else { return true };
        let stamp = (meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
        FileKind::of(&p.name).is_kept() && self.metadata_sent.get(&p.path) == Some(&stamp)
    }

    /// Uploads every pending file once (with retries). At `deadline` no new
    /// upload starts and those in flight are cancelled: their files stay on
    /// disk, counted in [`RoundReport::cancelled`] and as `deadline` failures.
    pub async fn round(&mut self, deadline: Option<Instant>) -> RoundReport {
        let work: Vec<Pending> = self.work().into_iter().filter(|p| !self.unchanged_metadata(p)).collect();
        let mut report = RoundReport::default();
        let mut queue = work.into_iter();
        let mut running = tokio::task::JoinSet::new();
        // A panicked upload still owes the report its file.
        let mut in_flight = HashMap::new();
        let past = |d: Option<Instant>| d.is_some_and(|d| Instant::now() >= d);
        loop {
            while running.len() < CONCURRENCY && !past(deadline) {
                let Some(p) = queue.next() else { break };
                let uploader = self.uploader.clone();
                let path = p.path.clone();
                let task = running.spawn(async move {
                    let result = put_with_retries(&uploader, &p).await;
                    (p, result)
                });
                in_flight.insert(task.id(), path);
            }
            let next = running.join_next_with_id();
            let joined = match deadline {
                Some(d) => match tokio::time::timeout_at(d.into(), next).await {
                    Ok(joined) => joined,
                    Err(_) => break,
                },
                None => next.await,
            };
            let Some(joined) = joined else { break };
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
        running.abort_all();
        self.cancelled(in_flight.into_values(), &mut report);
        report.remaining.extend(queue.map(|p| p.path));
        let waiting: Vec<Pending> = self.work().into_iter().filter(|p| !FileKind::of(&p.name).is_kept()).collect();
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

    /// Uploads cut off at the deadline: their files stay on disk (a
    /// multipart upload's parts stay in the store until its lifecycle rule
    /// for incomplete uploads removes them).
    fn cancelled(&mut self, paths: impl Iterator<Item = PathBuf>, report: &mut RoundReport) {
        for path in paths {
            tracing::warn!(file = %path.display(), "upload cancelled at the deadline; the file stays on disk");
            report.cancelled += 1;
            report.remaining.push(path);
            *self.stats.failures.entry("deadline").or_default() += 1;
        }
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
                if FileKind::of(&p.name).is_kept() {
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
#[path = "delivery_tests.rs"]
mod tests;
