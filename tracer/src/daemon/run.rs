//! `daemon::run`: the one owner of a session and every task around it.
//! Startup and shutdown order are written once, here, top to bottom.

use std::{
    future::Future,
    path::Path,
    sync::{atomic::AtomicBool, Arc},
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, watch, Mutex};

use crate::daemon::{
    config::{DaemonConfig, Target, UploadConfig},
    fd_limit,
    ingest::reader::{self, ReaderMsg},
    outcome::Outcome,
    output::{
        delivery::{self, Delivery, RoundReport},
        metrics::Metrics,
        step_window::{StepWindow, StepWindowConfig},
        upload::S3Uploader,
    },
    probes::load_watch::WatchEvent,
    session::{next_watch_event, wait_child, Session, SessionError},
    supervise::{Backoff, Failure, Supervisor, TaskError, TaskKind},
    tasks,
};

/// Uploads of a running daemon: the shared delivery state and its last deadline.
struct Uploads {
    delivery: Arc<Mutex<Delivery>>,
    cfg: UploadConfig,
}

/// Why the event loop ended.
enum Ending {
    /// The record command exited.
    CommandExited(Option<std::process::ExitStatus>),
    /// SIGINT or SIGTERM.
    StopRequested,
    /// A task the daemon cannot do without failed.
    Failed(Failure),
}

/// Runs a session until the command exits (record), `stop` resolves, or a
/// task it cannot do without fails; then stops everything in order. The
/// outcome says which; metadata.json is written in every case.
pub async fn run(cfg: DaemonConfig, stop: impl Future<Output = ()> + Send + 'static) -> Result<Outcome, SessionError> {
    let DaemonConfig { session: session_cfg, trace_dir, metrics_addr, upload, profile_steps } = cfg;
    let root = trace_dir.unwrap_or_else(|| session_cfg.dir.clone());
    let metrics = metrics_addr.map(|_| Arc::new(Metrics::new(root.clone())));
    // Room for trace files whatever network clients do: they get a fixed
    // share. The command `record` starts would inherit a raised limit: it
    // keeps the user's, and so does `record` (it serves no clients).
    let nofile = match session_cfg.target {
        Target::Command(_) => fd_limit::soft_limit(),
        Target::Daemon { .. } => fd_limit::raise_to_hard(),
    };
    let mut tasks = Supervisor::new(metrics.clone(), Backoff::DAEMON);

    // 1. The stop signal, first: a stop must interrupt whatever follows.
    let (stopping, stop_rx) = start_stop_signal(&mut tasks, stop);
    // 2. The endpoints, so /healthz answers while the probes load.
    if let (Some(addr), Some(m)) = (metrics_addr, metrics.clone()) {
        let cap = fd_limit::connection_cap(nofile);
        tasks.spawn(TaskKind::MetricsServer, move |ctx| Box::pin(tasks::serve_metrics(addr, cap, Arc::clone(&m), ctx)));
    }
    // 3. Uploads: files an earlier run left (closed or half-written) go up with this run's.
    let uploads = match upload {
        Some(u) => Some(start_uploads(&mut tasks, u, &root, &session_cfg.session_id, metrics.clone()).await),
        None => None,
    };
    // 4. The session: its dir, the probes, the libraries named up front.
    let (mut s, ring) = match Session::start(session_cfg, stopping, metrics.clone()) {
        Ok(started) => started,
        Err(e) => {
            tasks.stop_all().await;
            return Err(e);
        }
    };
    // 5. The load watch, the reader, the disk budget and the KV scraper.
    let lib_opens = start_load_watch(&mut tasks, &mut s);
    let (msg_tx, mut msg_rx) = mpsc::unbounded_channel();
    let (pipeline, rotate_every) = (s.pipeline(), s.cfg.rotate_every);
    tasks.spawn_once(TaskKind::Reader, move |ctx| {
        Box::pin(async move {
            reader::run(ring, pipeline, rotate_every, ctx.stop_receiver(), msg_tx).await.map_err(TaskError::new)
        })
    });
    start_session_tasks(&mut tasks, &s);
    let step_window = profile_steps.map(|w| start_step_window(&mut tasks, &s, w, &root));
    // 6. The targets; from here on the daemon is ready.
    let child = match s.start_targets() {
        Ok(child) => child,
        Err(e) => {
            tasks.stop_all().await;
            return Err(e);
        }
    };
    if let Some(m) = &metrics {
        m.set_ready(true);
    }
    s.scan();
    s.write_metadata();

    // 7. Until the command exits, a stop, or a fatal failure.
    let ending = event_loop(&mut s, &mut tasks, &mut msg_rx, lib_opens, child, stop_rx).await;

    // 8. Shutdown, in order.
    Ok(shut_down(s, &mut tasks, msg_rx, ending, (step_window, uploads)).await)
}

/// Stops everything in order once the event loop ended, and says how the
/// session went.
async fn shut_down(
    mut s: Session,
    tasks: &mut Supervisor,
    mut msg_rx: mpsc::UnboundedReceiver<ReaderMsg>,
    ending: Ending,
    (step_window, uploads): (Option<Arc<StepWindow>>, Option<Uploads>),
) -> Outcome {
    // Stop recording new calls (the filter empties instantly; removing the
    // probes themselves takes the kernel ~0.1 s each, see `exit`), release
    // any process held at a library open (once the pump no longer beats the
    // heartbeat), then drain the reader, then close what writes files.
    s.probes.untrace_all();
    let _ = tasks.stop(TaskKind::LoadWatch).await;
    s.stop_load_watch();
    let (exit_status, mut failure) = match ending {
        Ending::CommandExited(status) => (status, None),
        Ending::StopRequested => (None, None),
        Ending::Failed(f) => (None, Some(f)),
    };
    if let Err(f) = tasks.stop(TaskKind::Reader).await {
        failure.get_or_insert(f);
    }
    while let Ok(m) = msg_rx.try_recv() {
        s.on_message(m);
    }
    let _ = tasks.stop(TaskKind::KvScraper).await;
    let _ = tasks.stop(TaskKind::Budget).await;
    s.last_budget_pass();
    s.scan_exits();
    let (stats, counts, drops) = s.finish(failure.is_some());
    if let Some(w) = step_window {
        last_step_window_pass(tasks, w).await;
    }
    let delivery = match uploads {
        Some(u) => Some(last_upload_round(tasks, u).await),
        None => None,
    };
    tasks.stop_all().await;
    let (dir, processes, files) = (s.cfg.dir.clone(), s.process_count(), std::mem::take(&mut s.files));
    let missed_libraries = std::mem::take(&mut s.missed_libraries);
    Outcome {
        dir,
        stats,
        counts,
        drops,
        processes,
        files,
        missed_libraries,
        exit_status,
        delivery,
        failure,
        probes: s.probes,
    }
}

/// Watches for `stop`: raises the flag that interrupts attaching and tells
/// the event loop through the returned receiver.
fn start_stop_signal(
    tasks: &mut Supervisor,
    stop: impl Future<Output = ()> + Send + 'static,
) -> (Arc<AtomicBool>, watch::Receiver<bool>) {
    let stopping = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    let flag = Arc::clone(&stopping);
    tasks.spawn_once(TaskKind::StopSignal, move |ctx| Box::pin(tasks::stop_signal(stop, flag, stop_tx, ctx)));
    (stopping, stop_rx)
}

/// Repairs what an earlier run left half-written, connects to the store and
/// starts the upload timer.
async fn start_uploads(
    tasks: &mut Supervisor,
    cfg: UploadConfig,
    root: &Path,
    session_id: &str,
    metrics: Option<Arc<Metrics>>,
) -> Uploads {
    std::fs::create_dir_all(root).ok();
    delivery::repair_partials(root, &[root.join(session_id)]);
    let uploader = S3Uploader::new(cfg.s3.clone()).await;
    let delivery = Arc::new(Mutex::new(Delivery::new(uploader, root, Some(session_id), metrics)));
    let (shared, every) = (Arc::clone(&delivery), cfg.every);
    tasks.spawn(TaskKind::Upload, move |ctx| Box::pin(tasks::upload(Arc::clone(&shared), every, ctx)));
    Uploads { delivery, cfg }
}

/// Starts the load watch's pump as a task; the receiver gets the library
/// opens it forwards (none when the load watch is off or failed).
fn start_load_watch(tasks: &mut Supervisor, s: &mut Session) -> Option<mpsc::UnboundedReceiver<WatchEvent>> {
    let (pump, lib_opens) = s.start_load_watch()?;
    tasks.spawn_once(TaskKind::LoadWatch, move |ctx| {
        Box::pin(async move {
            pump.run(ctx.stop_receiver()).await;
            Ok(())
        })
    });
    Some(lib_opens)
}

/// The tasks that work beside the reader on the session's files.
fn start_session_tasks(tasks: &mut Supervisor, s: &Session) {
    if let Some(budget) = s.cfg.budget.clone() {
        let (deleted, every) = (Arc::clone(&s.deleted_for_budget), s.cfg.scan_every);
        tasks.spawn(TaskKind::Budget, move |ctx| {
            Box::pin(tasks::budget(budget.clone(), Arc::clone(&deleted), every, ctx))
        });
    }
    if let Some(kv) = &s.kv {
        let kv = Arc::clone(kv);
        tasks.spawn(TaskKind::KvScraper, move |ctx| {
            let scrape = kv.run(ctx.stop_receiver(), move || ctx.running());
            Box::pin(async move { scrape.await.map_err(TaskError::new) })
        });
    }
}

/// Starts the step window's timer: often enough that every trace file is
/// linked while it is still open (before any upload can delete it).
fn start_step_window(tasks: &mut Supervisor, s: &Session, cfg: StepWindowConfig, root: &Path) -> Arc<StepWindow> {
    StepWindow::clean_stale(root, &s.cfg.dir);
    let window = Arc::new(StepWindow::new(cfg, &s.cfg.dir));
    let every = s.cfg.scan_every.min(s.cfg.rotate_every / 2).max(std::time::Duration::from_millis(100));
    let shared = Arc::clone(&window);
    tasks.spawn(TaskKind::StepWindow, move |ctx| Box::pin(tasks::step_window(Arc::clone(&shared), every, ctx)));
    window
}

/// With every file closed: the window's last look, before the last upload
/// round takes its export along.
async fn last_step_window_pass(tasks: &mut Supervisor, window: Arc<StepWindow>) {
    let _ = tasks.stop(TaskKind::StepWindow).await;
    match tokio::task::spawn_blocking(move || window.pass(true)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "the PROFILE_STEPS export failed"),
        Err(e) => tracing::error!(error = %e, "the PROFILE_STEPS export panicked"),
    }
}

/// Scans on the timer, attaches each CUDA library the load watch reports
/// opened, and keeps the session current with what the reader reports, until the command exits, a stop is requested, or a task the
/// daemon cannot do without fails (restartable ones are restarted inside
/// `tasks.watch()`).
async fn event_loop(
    s: &mut Session,
    tasks: &mut Supervisor,
    msg_rx: &mut mpsc::UnboundedReceiver<ReaderMsg>,
    mut lib_opens: Option<mpsc::UnboundedReceiver<WatchEvent>>,
    mut child: Option<tokio::process::Child>,
    mut stop_rx: watch::Receiver<bool>,
) -> Ending {
    let mut scan = tokio::time::interval(scan_period(s.cfg.scan_every));
    // The reader's end is the supervisor's to report; its closed channel is not.
    let mut reader_open = true;
    loop {
        tokio::select! {
            _ = scan.tick() => s.scan(),
            Some(event) = next_watch_event(&mut lib_opens) => s.on_watch_event(event),
            msg = msg_rx.recv(), if reader_open => match msg {
                Some(m) => s.on_message(m),
                None => reader_open = false,
            },
            status = wait_child(&mut child) => return Ending::CommandExited(status.ok()),
            Ok(_) = stop_rx.wait_for(|stop| *stop) => {
                tracing::info!("stop requested: draining");
                return Ending::StopRequested;
            }
            failure = tasks.watch() => return Ending::Failed(failure),
        }
    }
}

/// Stops the timer's round and uploads what is left, until the deadline.
async fn last_upload_round(tasks: &mut Supervisor, uploads: Uploads) -> RoundReport {
    let _ = tasks.stop(TaskKind::Upload).await;
    let deadline = Instant::now() + uploads.cfg.deadline;
    let report = uploads.delivery.lock().await.round(Some(deadline)).await;
    if report.remaining.is_empty() {
        tracing::info!(uploaded = report.uploaded, "all trace files uploaded");
    } else {
        tracing::warn!(
            left_on_disk = report.remaining.len(),
            cancelled_at_deadline = report.cancelled,
            "some trace files stay on disk; the next run uploads them"
        );
    }
    report
}

/// The /proc scan's period. In debug builds only,
/// `CUDA_TRACER_TEST_SCAN_FLOOR_MS` raises it: `cargo xtask test` runs the
/// whole end-to-end suite with the scan slowed to a minute, to show that the
/// scan is not what catches libraries or processes. A release build (every
/// image and benchmark) has no such switch.
fn scan_period(configured: Duration) -> Duration {
    #[cfg(debug_assertions)]
    if let Some(floor) = std::env::var("CUDA_TRACER_TEST_SCAN_FLOOR_MS").ok().and_then(|v| v.parse().ok()) {
        return configured.max(Duration::from_millis(floor));
    }
    configured
}
