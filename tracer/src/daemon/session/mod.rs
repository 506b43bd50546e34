//! One trace session's state: the loaded probes, the traced processes and
//! attached libraries (kept current by [`scan`]), the files and counters the
//! reader reports, and `metadata.json` (written by [`metadata`]). The daemon
//! ([`crate::daemon::run`]) drives it; it starts no task of its own.

mod load_watch;
mod metadata;
mod scan;

pub(super) use load_watch::next_watch_event;

use std::{
    collections::{BTreeMap, BTreeSet},
    os::fd::{AsRawFd as _, OwnedFd, RawFd},
    path::Path,
    process::ExitStatus,
    sync::{atomic::AtomicBool, Arc, Mutex},
};

use aya::maps::{MapData, RingBuf};
use tracer_common::abi::{proc_op, ProcEvent};

use crate::{
    clock::{self, SessionClock},
    daemon::config::{SessionConfig, Target},
    daemon::ingest::{pipeline::Pipeline, reader::ReaderMsg},
    daemon::output::{
        budget::DeletedFile,
        kv_scrape::KvScraper,
        metrics::Metrics,
        parquet_sink::{ParquetSink, TeeSink, TraceFormat},
        sink::{ClosedFile, JsonlSink, Sink},
        stats::Stats,
    },
    daemon::probes::{
        attach::{AttachError, Attacher},
        btf,
        discover::{self, ProcessInfo},
        libraries,
        load_watch::LoadWatch,
        loader::{LoadError, LoadOptions, Probes},
        spawn::{spawn_traced, SpawnError},
    },
    daemon::target_files::TargetRoot,
    format::{
        counts::Counts,
        line::LineFormatter,
        metadata::{LateLibrary, MissedLibrary, ProcessRecord},
        metadata_store::{self, EndMark},
        safe_fs,
        session_lock::{LockError, SessionLock},
    },
};

/// Why a session could not run.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error(transparent)]
    Discover(#[from] discover::DiscoverError),
    #[error("trace dir {path} is not usable: {source} (choose a writable directory with -o/--trace-dir or TRACE_DIR)")]
    TraceDir { path: String, source: std::io::Error },
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error("cannot open the root directory: {source}")]
    OwnRoot { source: std::io::Error },
    #[error(transparent)]
    Lock(#[from] LockError),
}

pub(super) struct Session {
    pub(super) cfg: SessionConfig,
    pub(super) probes: Probes,
    attacher: Attacher,
    pub(super) clock: SessionClock,
    metrics: Option<Arc<Metrics>>,
    processes: BTreeMap<u32, ProcessRecord>,
    /// Library files (dev, inode) whose attach failed, with the error.
    failed_libs: BTreeMap<(u64, u64), String>,
    /// Processes whose search-path libraries were attached.
    search_path_done: BTreeSet<u32>,
    late_libraries: Vec<LateLibrary>,
    /// Shared with the budget task, which records what it deletes.
    pub(super) deleted_for_budget: Arc<Mutex<Vec<DeletedFile>>>,
    /// Exited processes whose pid was reused by a later traced process.
    past_processes: Vec<ProcessRecord>,
    pub(super) files: Vec<ClosedFile>,
    counts: Counts,
    /// The reader's statistics once it has stopped.
    stats: Option<Box<Stats>>,
    /// `running`, `finished` or `failed`, as metadata.json says.
    status: &'static str,
    pub(super) kv: Option<Arc<KvScraper>>,
    /// Holds each traced process opening a CUDA library until attached.
    load_watch: Option<LoadWatch>,
    /// Libraries a traced process used whose calls are (partly) missing.
    pub(super) missed_libraries: Vec<MissedLibrary>,
    /// Processes the scan matched but could not add to the traced-pid map
    /// (it was full): counted with the kernel's failed inserts.
    untraceable: BTreeSet<u32>,
    /// Held while the session writes its dir: `upload` leaves it alone.
    _lock: SessionLock,
    /// Never lets metadata.json say `running` once the session is gone.
    end_guard: EndGuard,
}

/// The session dir, held open: the watchdog marks metadata.json `killed`
/// through it if the tracer is killed, and dropping the guard while it
/// still says `running` (a panic) marks it `failed`.
struct EndGuard(OwnedFd);

impl EndGuard {
    fn dir_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        if metadata_store::mark_ended(self.dir_fd(), EndMark::Failed) {
            tracing::error!("the session ended without its final metadata; metadata.json says `failed`");
        }
    }
}

impl Session {
    /// Prepares the session dir, loads the probes and attaches the
    /// libraries named up front; the ring buffer goes to the reader.
    /// `stopping` interrupts attaching, which can block for seconds.
    pub(super) fn start(
        cfg: SessionConfig,
        stopping: Arc<AtomicBool>,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<(Session, RingBuf<MapData>), SessionError> {
        let (lock, end_guard) = prepare_dir(&cfg.dir)?;
        let tgid_offset = match btf::task_tgid_offset(Path::new(btf::VMLINUX_BTF)) {
            Ok(off) => Some(off),
            Err(e) => {
                tracing::warn!(error = %e, "children are found by the /proc scan only");
                None
            }
        };
        let match_exec = matches!(&cfg.target, Target::Daemon { pattern: Some(_), .. });
        let mut probes =
            Probes::load(&LoadOptions { ringbuf_bytes: cfg.ringbuf_bytes, task_tgid_offset: tgid_offset, match_exec })?;
        let ring = probes.take_ring_buffer()?;
        let clock = SessionClock::now();
        // On the session's clock, so its rows line up with the trace's `ts`.
        let kv = cfg
            .kv_cache
            .clone()
            .map(|kv| Arc::new(KvScraper::new(kv, &cfg.dir, clock.start_boot_ns, cfg.rotate_every, metrics.clone())));
        let mut s = Session {
            attacher: Attacher::new(cfg.selection.clone(), cfg.empty_probes, cfg.per_probe_uprobes, stopping),
            cfg,
            probes,
            clock,
            metrics,
            processes: BTreeMap::new(),
            failed_libs: BTreeMap::new(),
            search_path_done: BTreeSet::new(),
            late_libraries: Vec::new(),
            past_processes: Vec::new(),
            deleted_for_budget: Arc::default(),
            files: Vec::new(),
            counts: Counts::default(),
            stats: None,
            status: "running",
            kv,
            load_watch: None,
            missed_libraries: Vec::new(),
            untraceable: BTreeSet::new(),
            _lock: lock,
            end_guard,
        };
        if !s.cfg.libs.is_empty() {
            // The administrator's paths, in the tracer's own root.
            let root = TargetRoot::own().map_err(|source| SessionError::OwnRoot { source })?;
            for lib in s.cfg.libs.clone() {
                let lib = std::path::absolute(&lib).unwrap_or(lib);
                s.attacher.attach_file(&mut s.probes, &root.open(&lib).map_err(AttachError::from)?)?;
            }
        }
        Ok((s, ring))
    }

    /// The reader's pipeline: JSONL and/or Parquet files in the session
    /// dir, counted in `/metrics`, paused by the disk budget.
    pub(super) fn pipeline(&self) -> Pipeline {
        let formatter = LineFormatter { start_ns: self.clock.start_boot_ns };
        let jsonl = || JsonlSink::new(&self.cfg.dir, formatter);
        let parquet = || ParquetSink::new(&self.cfg.dir, formatter, self.parquet_context());
        let sink: Box<dyn Sink> = match self.cfg.format {
            TraceFormat::Jsonl => Box::new(jsonl()),
            TraceFormat::Parquet => Box::new(parquet()),
            TraceFormat::Both => Box::new(TeeSink { first: jsonl(), second: parquet() }),
        };
        let pipeline = Pipeline::new(sink, self.metrics.clone());
        match &self.cfg.budget {
            Some(b) => pipeline.with_pause(Arc::clone(&b.paused)),
            None => pipeline,
        }
    }

    /// The node, pod, namespace and session every Parquet row carries.
    fn parquet_context(&self) -> crate::format::parquet::FileContext {
        let k8s = crate::format::metadata::Kubernetes::from_env();
        let start = self.clock.start_wall.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        crate::format::parquet::FileContext {
            node: k8s.node.unwrap_or_else(crate::format::metadata::hostname),
            pod: k8s.pod,
            namespace: k8s.namespace,
            session: self.cfg.session_id.clone(),
            start_unix_ns: i64::try_from(start.as_nanos()).unwrap_or(i64::MAX),
        }
    }

    fn now_ms(&self) -> f64 {
        self.clock.ms_since_start(clock::boot_ns())
    }

    /// Starts the command (record) or registers the given pids (daemon).
    pub(super) fn start_targets(&mut self) -> Result<Option<tokio::process::Child>, SessionError> {
        match self.cfg.target.clone() {
            Target::Daemon { pids, .. } => {
                for pid in pids {
                    ProcessInfo::read(pid)?;
                    self.probes.trace_pid(pid)?;
                    self.add_process(pid, "pid", 0);
                }
                Ok(None)
            }
            Target::Command(argv) => {
                // A late dlopen of a library on the search path is traced from
                // its first call: its probes are in place before the command runs.
                let ld_path = std::env::var_os("LD_LIBRARY_PATH");
                let mut libs = libraries::search_path_libraries(ld_path.as_deref());
                libs.extend(argv.first().map(|p| libraries::runpath_libraries(p)).unwrap_or_default());
                for lib in libs {
                    self.try_attach(lib);
                }
                let child = spawn_traced(&mut self.probes, &argv)?;
                if let Some(pid) = child.id() {
                    self.add_process(pid, "command", std::process::id());
                }
                Ok(Some(child))
            }
        }
    }

    pub(super) fn on_message(&mut self, msg: ReaderMsg) {
        match msg {
            ReaderMsg::Proc(ProcEvent { pid, ppid, op, ts_ns, .. }) => {
                if op == proc_op::FORK && ppid != std::process::id() {
                    self.add_process(pid, "fork", ppid);
                    self.search_path_done.remove(&pid);
                } else if op == proc_op::EXIT {
                    let at = self.clock.ms_since_start(ts_ns);
                    if let Some(rec) = self.processes.get_mut(&pid) {
                        rec.exited_ms.get_or_insert(at);
                    }
                }
            }
            ReaderMsg::Closed { file, counts } => {
                if let Some(m) = &self.metrics {
                    m.files_written.inc();
                }
                self.files.push(file);
                self.counts = counts;
                self.write_metadata();
            }
            ReaderMsg::Finished(stats) => {
                self.counts = stats.counts;
                self.stats = Some(stats);
            }
        }
    }

    /// After the last file closed: the budget once more.
    pub(super) fn last_budget_pass(&mut self) {
        if let Some(budget) = &self.cfg.budget {
            let files = budget.enforce();
            if let Ok(mut d) = self.deleted_for_budget.lock() {
                d.extend(files);
            }
        }
    }

    /// Processes traced during the session, past and present.
    pub(super) fn process_count(&self) -> usize {
        self.processes.len() + self.past_processes.len()
    }
}

/// Waits for the record command; never resolves in daemon mode.
pub(super) async fn wait_child(child: &mut Option<tokio::process::Child>) -> std::io::Result<ExitStatus> {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

/// Creates the session dir, proves it writable, and takes its lock (before
/// any of the session's files is written there).
fn prepare_dir(dir: &Path) -> Result<(SessionLock, EndGuard), SessionError> {
    let err = |source| SessionError::TraceDir { path: dir.display().to_string(), source };
    // A symlink planted at the session path would send every file we write elsewhere.
    if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(err(std::io::Error::other("it is a symlink; not followed")));
    }
    std::fs::create_dir_all(dir).map_err(err)?;
    let probe = dir.join(crate::format::names::WRITE_TEST);
    safe_fs::unlink_entry(&probe).map_err(err)?;
    safe_fs::create_new(&probe).map_err(|e| err(e.into_io()))?;
    std::fs::remove_file(&probe).map_err(err)?;
    let lock = SessionLock::acquire(dir)?;
    let guard = EndGuard(metadata_store::open_dir(dir).map_err(err)?);
    Ok((lock, guard))
}
