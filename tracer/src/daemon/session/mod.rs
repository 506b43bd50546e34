//! One trace session: loads the probes, starts the reader, keeps the set of
//! traced processes and attached libraries up to date on a scan timer, keeps
//! `metadata.json` current, and on stop drains everything to disk.

mod load_watch;
mod scan;

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    path::PathBuf,
    process::ExitStatus,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, SystemTime},
};

use regex::Regex;
use tokio::sync::{mpsc, watch};
use tracer_common::abi::{proc_op, ProcEvent};

use crate::{
    clock::{self, SessionClock},
    daemon::ingest::pipeline::Pipeline,
    daemon::ingest::reader::{self, ReaderMsg},
    daemon::output::sink::{ClosedFile, JsonlSink},
    daemon::output::stats::Stats,
    daemon::probes::attach::{AttachError, Attacher, Selection},
    daemon::probes::discover::{self, ProcessInfo},
    daemon::probes::loader::{Drops, LoadError, LoadOptions, Probes},
    format::line::LineFormatter,
    format::metadata::{Counts, LateLibrary, Metadata, ProcessRecord},
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
    /// Prometheus metrics to keep current (`run --metrics-addr`).
    pub metrics: Option<Arc<crate::daemon::output::metrics::Metrics>>,
    /// The local disk budget (`--max-local-bytes`).
    pub budget: Option<crate::daemon::output::budget::DiskBudget>,
    /// Scrape vLLM's KV-cache usage into the session (`run --vllm-metrics-url`).
    pub kv_cache: Option<crate::daemon::output::kv_scrape::KvCacheConfig>,
}

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
    #[error("cannot start `{command}`: {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("the ring-buffer reader failed: {0}")]
    Reader(String),
    #[error(transparent)]
    Metadata(#[from] crate::format::metadata::MetadataError),
}

/// What a finished session reports.
pub struct SessionResult {
    pub dir: PathBuf,
    pub stats: Stats,
    pub drops: Drops,
    pub files: Vec<ClosedFile>,
    pub processes: usize,
    /// The command's exit status (record mode).
    pub exit_status: Option<ExitStatus>,
    /// Libraries a traced process used whose calls are (partly) missing.
    pub missed_libraries: Vec<crate::daemon::probes::load_watch::MissedLibrary>,
    /// The loaded probes, still attached: dropping them detaches every
    /// uprobe, slowly; `exit::leave` hands them off instead.
    pub probes: Probes,
}

struct Session {
    cfg: SessionConfig,
    probes: Probes,
    attacher: Attacher,
    clock: SessionClock,
    processes: BTreeMap<u32, ProcessRecord>,
    /// Libraries whose attach failed, with the error.
    failed_libs: BTreeMap<PathBuf, String>,
    /// Processes whose search-path libraries were attached.
    search_path_done: BTreeSet<u32>,
    late_libraries: Vec<LateLibrary>,
    /// Shared with the budget task, which records what it deletes.
    deleted_for_budget: Arc<std::sync::Mutex<Vec<crate::daemon::output::budget::DeletedFile>>>,
    /// Exited processes whose pid was reused by a later traced process.
    past_processes: Vec<ProcessRecord>,
    files: Vec<ClosedFile>,
    counts: Counts,
    finished: bool,
    kv: Option<crate::daemon::output::kv_scrape::KvScraper>,
    /// The scraper's record once it has stopped.
    kv_final: Option<crate::daemon::output::kv_scrape::KvStatus>,
    /// Holds each traced process opening a CUDA library until attached.
    load_watch: Option<crate::daemon::probes::load_watch::LoadWatch>,
    /// Libraries a traced process used whose calls are (partly) missing.
    missed_libraries: Vec<crate::daemon::probes::load_watch::MissedLibrary>,
}

/// Runs a session until the command exits (record) or `stop` resolves.
pub async fn run(
    cfg: SessionConfig,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<SessionResult, SessionError> {
    // The stop request is watched by its own task: it raises a flag that
    // interrupts attaching, which can block for seconds in the kernel.
    let stopping = Arc::new(AtomicBool::new(false));
    let (stopped_tx, mut stopped_rx) = watch::channel(false);
    let flag = Arc::clone(&stopping);
    tokio::spawn(async move {
        stop.await;
        flag.store(true, Ordering::Relaxed);
        let _ = stopped_tx.send(true);
    });
    prepare_dir(&cfg.dir)?;
    let tgid_offset = match crate::daemon::probes::btf::task_tgid_offset(std::path::Path::new(
        crate::daemon::probes::btf::VMLINUX_BTF,
    )) {
        Ok(off) => Some(off),
        Err(e) => {
            tracing::warn!(error = %e, "children are found by the /proc scan only");
            None
        }
    };
    let mut probes = Probes::load(&LoadOptions { ringbuf_bytes: cfg.ringbuf_bytes, task_tgid_offset: tgid_offset })?;
    let ring = probes.take_ring_buffer()?;
    let clock = SessionClock::now();
    let mut s = Session {
        attacher: Attacher::new(cfg.selection.clone(), cfg.empty_probes, Arc::clone(&stopping)),
        cfg,
        probes,
        clock,
        processes: BTreeMap::new(),
        failed_libs: BTreeMap::new(),
        search_path_done: BTreeSet::new(),
        late_libraries: Vec::new(),
        past_processes: Vec::new(),
        deleted_for_budget: Arc::default(),
        files: Vec::new(),
        counts: Counts::default(),
        finished: false,
        kv: None,
        kv_final: None,
        load_watch: None,
        missed_libraries: Vec::new(),
    };
    let mut lib_opens = s.start_load_watch();
    for lib in s.cfg.libs.clone() {
        let shown = lib.display().to_string();
        s.attacher.attach(&mut s.probes, &lib, &shown)?;
    }

    let (msg_tx, mut msg_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let sink = JsonlSink::new(&s.cfg.dir, LineFormatter { start_ns: clock.start_boot_ns });
    let reader = tokio::spawn(reader::run(
        ring,
        {
            let pipeline = Pipeline::new(Box::new(sink), s.cfg.metrics.clone());
            match &s.cfg.budget {
                Some(b) => pipeline.with_pause(Arc::clone(&b.paused)),
                None => pipeline,
            }
        },
        s.cfg.rotate_every,
        stop_rx,
        msg_tx,
    ));

    // The budget runs on its own timer: a scan can block for seconds in the
    // kernel while attaching, and the budget must not wait for it.
    let budget_task = s.cfg.budget.clone().map(|budget| {
        let deleted = Arc::clone(&s.deleted_for_budget);
        let every = s.cfg.scan_every;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let b = budget.clone();
                if let Ok(files) = tokio::task::spawn_blocking(move || b.enforce()).await {
                    if let Ok(mut d) = deleted.lock() {
                        d.extend(files);
                    }
                }
            }
        })
    });
    // On the session's clock, so its rows line up with the trace's `ts`.
    s.kv = s.cfg.kv_cache.clone().map(|kv| {
        crate::daemon::output::kv_scrape::spawn(
            kv,
            &s.cfg.dir,
            clock.start_boot_ns,
            s.cfg.rotate_every,
            s.cfg.metrics.clone(),
        )
    });
    let mut child = s.start_targets()?;
    if let Some(m) = &s.cfg.metrics {
        m.set_ready(true);
    }
    s.scan();
    s.write_metadata(&Stats::default());

    let mut scan = tokio::time::interval(s.cfg.scan_every);
    let mut exit_status = None;
    let mut reader_failed = None;
    loop {
        tokio::select! {
            _ = scan.tick() => s.scan(),
            Some(open) = load_watch::next_open(&mut lib_opens) => s.on_library_open(open),
            msg = msg_rx.recv() => match msg {
                Some(m) => s.on_message(m),
                None => { reader_failed = Some("reader stopped unexpectedly".to_string()); break }
            },
            status = wait_child(&mut child) => { exit_status = Some(status); break }
            _ = stopped_rx.changed() => { tracing::info!("stop requested: draining"); break }
        }
    }
    // Stop recording new calls (the filter empties instantly; removing the
    // probes themselves takes the kernel ~0.1 s each, see `exit`), then drain.
    s.probes.untrace_all();
    s.stop_load_watch();
    let _ = stop_tx.send(true);
    let pipeline = match reader.await {
        Ok(Ok(p)) => Some(p),
        Ok(Err(e)) => {
            reader_failed.get_or_insert(e.to_string());
            None
        }
        Err(e) => {
            reader_failed.get_or_insert(e.to_string());
            None
        }
    };
    while let Ok(m) = msg_rx.try_recv() {
        s.on_message(m);
    }
    if let Some(kv) = s.kv.take() {
        s.kv_final = Some(kv.stop().await);
    }
    let stats = pipeline.map(|p| p.stats).unwrap_or_default();
    s.counts = Counts {
        calls: stats.calls(),
        decode_errors: stats.decode_errors,
        write_errors: stats.write_errors,
        dropped_disk_budget: stats.budget_dropped,
    };
    s.finished = true;
    if let Some(task) = budget_task {
        task.abort();
    }
    if let Some(budget) = &s.cfg.budget {
        // Once more after the last file closed.
        let files = budget.enforce();
        if let Ok(mut d) = s.deleted_for_budget.lock() {
            d.extend(files);
        }
    }
    s.scan_exits();
    let drops = s.write_metadata(&stats);
    if let Some(e) = reader_failed {
        return Err(SessionError::Reader(e));
    }
    Ok(SessionResult {
        dir: s.cfg.dir.clone(),
        stats,
        drops,
        files: s.files.clone(),
        processes: s.processes.len() + s.past_processes.len(),
        exit_status: exit_status.and_then(Result::ok),
        missed_libraries: s.missed_libraries.clone(),
        probes: s.probes,
    })
}

async fn wait_child(child: &mut Option<tokio::process::Child>) -> std::io::Result<ExitStatus> {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

fn prepare_dir(dir: &std::path::Path) -> Result<(), SessionError> {
    let err = |source| SessionError::TraceDir { path: dir.display().to_string(), source };
    std::fs::create_dir_all(dir).map_err(err)?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"").map_err(err)?;
    std::fs::remove_file(&probe).map_err(err)
}

impl Session {
    fn now_ms(&self) -> f64 {
        self.clock.ms_since_start(clock::boot_ns())
    }

    /// Starts the command (record) or registers the given pids (daemon).
    fn start_targets(&mut self) -> Result<Option<tokio::process::Child>, SessionError> {
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
                let mut libs = discover::search_path_libraries(ld_path.as_deref());
                libs.extend(argv.first().map(|p| discover::runpath_libraries(p)).unwrap_or_default());
                for lib in libs {
                    self.try_attach(&lib, &lib.display().to_string());
                }
                let child = crate::daemon::probes::spawn::spawn_traced(&mut self.probes, &argv)?;
                if let Some(pid) = child.id() {
                    self.add_process(pid, "command", std::process::id());
                }
                Ok(Some(child))
            }
        }
    }

    fn on_message(&mut self, msg: ReaderMsg) {
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
            ReaderMsg::Closed { file, calls, decode_errors, write_errors, budget_dropped } => {
                if let Some(m) = &self.cfg.metrics {
                    m.files_written.inc();
                }
                self.files.push(file);
                self.counts = Counts { calls, decode_errors, write_errors, dropped_disk_budget: budget_dropped };
                self.write_metadata(&Stats::default());
            }
        }
    }

    /// Rewrites metadata.json; failures are logged, never fatal mid-session.
    fn write_metadata(&self, stats: &Stats) -> Drops {
        let drops = self.probes.drops().unwrap_or_default();
        let (mode, command, pattern) = match &self.cfg.target {
            Target::Command(argv) => ("record", Some(argv.clone()), None),
            Target::Daemon { pattern, .. } => ("daemon", None, pattern.as_ref().map(|r| r.as_str().to_string())),
        };
        let meta = Metadata {
            session_id: self.cfg.session_id.clone(),
            tracer_version: env!("CARGO_PKG_VERSION"),
            hostname: crate::format::metadata::hostname(),
            kubernetes: crate::format::metadata::Kubernetes::from_env(),
            status: if self.finished { "finished" } else { "running" },
            mode,
            command,
            target_pattern: pattern,
            start_wall_clock: clock::rfc3339(self.clock.start_wall),
            start_unix_ns: self
                .clock
                .start_wall
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
            start_boot_ns: self.clock.start_boot_ns,
            ts_unit: "milliseconds since start_boot_ns (CLOCK_BOOTTIME); one line per completed call, stamped at entry",
            end_wall_clock: self.finished.then(|| clock::rfc3339(SystemTime::now())),
            function_groups: self.cfg.selection.groups().collect(),
            follows_forks: self.probes.follows_forks,
            ringbuf_bytes: self.cfg.ringbuf_bytes,
            processes: self.past_processes.iter().chain(self.processes.values()).cloned().collect(),
            libraries: self.attacher.libraries(),
            late_libraries: self.late_libraries.clone(),
            missed_libraries: self.missed_libraries.clone(),
            library_holds: self.load_watch.as_ref().map(|w| w.holds().to_vec()).unwrap_or_default(),
            deleted_for_disk_budget: self.deleted_for_budget.lock().map(|d| d.clone()).unwrap_or_default(),
            files: self.files.clone(),
            counts: self.counts.clone(),
            drops,
            dropped_by_function: self.probes.drops_by_function().unwrap_or_default(),
            dropped_events: drops.lost_calls() + self.counts.write_errors + self.counts.dropped_disk_budget,
            summary: stats.rows(),
            kv_cache: self.kv.as_ref().map(|k| k.status()).or_else(|| self.kv_final.clone()),
        };
        if let Err(e) = meta.write(&self.cfg.dir) {
            tracing::error!(error = %e, "metadata not written");
        }
        drops
    }
}
