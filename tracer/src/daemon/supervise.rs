//! The daemon's supervised set of background tasks: every task is started
//! here, and one that panics or fails is logged with its cause, counted in
//! `/metrics`, makes `/readyz` not ready, and is either restarted with a
//! backoff or, where restarting is not safe, reported to the daemon, which
//! then stops.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{sync::watch, task::JoinHandle};

use crate::daemon::output::metrics::Metrics;

/// The daemon's tasks. A task's kind decides its name in logs and metrics
/// and whether it may be restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskKind {
    /// Drains the ring buffer into trace files: owns the only pipeline and
    /// the open file, so a second one cannot take over.
    Reader,
    /// Waits for SIGINT/SIGTERM: its future is consumed by the first stop.
    StopSignal,
    /// Applies the disk budget on a timer.
    Budget,
    /// Scrapes vLLM's KV-cache usage.
    KvScraper,
    /// Uploads closed files on a timer.
    Upload,
    /// Serves `/metrics`, `/healthz` and `/readyz`.
    MetricsServer,
    /// Forwards the kernel's CUDA library opens and beats the heartbeat
    /// without which the kernel holds no process: owns the opens' ring buffer.
    LoadWatch,
    /// Stages the session's trace files and writes the PROFILE_STEPS export.
    StepWindow,
}

impl TaskKind {
    /// The task's name: the `task` label of `cuda_tracer_task_failures_total`.
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Reader => "reader",
            TaskKind::StopSignal => "stop_signal",
            TaskKind::Budget => "budget",
            TaskKind::KvScraper => "kv_scraper",
            TaskKind::Upload => "upload",
            TaskKind::MetricsServer => "metrics_server",
            TaskKind::LoadWatch => "load_watch",
            TaskKind::StepWindow => "step_window",
        }
    }

    /// Whether a fresh start can take over from a failed one: tasks that
    /// keep their state outside themselves (files on disk, shared records).
    pub fn restarts(self) -> bool {
        !matches!(self, TaskKind::Reader | TaskKind::StopSignal | TaskKind::LoadWatch)
    }
}

/// Why a task ended: its own error or a panic.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TaskError(String);

impl TaskError {
    pub fn new(cause: impl std::fmt::Display) -> Self {
        Self(cause.to_string())
    }

    /// A joined task's panic (with its message) or cancellation.
    pub fn from_join(e: tokio::task::JoinError) -> Self {
        match e.try_into_panic() {
            Ok(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-text payload".to_string());
                Self(format!("panicked: {message}"))
            }
            Err(e) => Self(e.to_string()),
        }
    }
}

/// A task that failed and may not restart.
#[derive(Debug, thiserror::Error)]
#[error("the {} task failed: {cause}", task.name())]
pub struct Failure {
    pub task: TaskKind,
    pub cause: TaskError,
}

/// A task's future.
pub type TaskFuture = Pin<Box<dyn Future<Output = Result<(), TaskError>> + Send>>;

/// Starts one run of a task; called again for each restart.
type Start = Box<dyn FnMut(TaskContext) -> TaskFuture + Send>;

/// What a task is handed: its stop request and its way to say it runs.
pub struct TaskContext {
    kind: TaskKind,
    stop: watch::Receiver<bool>,
    health: Arc<Health>,
    metrics: Option<Arc<Metrics>>,
}

impl TaskContext {
    /// Resolves once the supervisor asks the task to stop.
    pub async fn stopped(&mut self) {
        let _ = self.stop.wait_for(|stop| *stop).await;
    }

    /// Waits for `tick`'s next tick; false once a stop is asked for instead.
    pub async fn tick(&mut self, tick: &mut tokio::time::Interval) -> bool {
        tokio::select! {
            _ = tick.tick() => true,
            _ = self.stopped() => false,
        }
    }

    /// The stop request, for tasks that watch it themselves.
    pub fn stop_receiver(&self) -> watch::Receiver<bool> {
        self.stop.clone()
    }

    /// Called by the task after each unit of work that went through: after a
    /// failure, this is when the daemon is ready again and the backoff resets.
    pub fn running(&self) {
        if self.health.failing.swap(false, Ordering::Relaxed) {
            self.health.failures.store(0, Ordering::Relaxed);
            tracing::info!(task = self.kind.name(), "task runs again");
            if let Some(m) = &self.metrics {
                m.task_running(self.kind.name());
            }
        }
    }
}

#[derive(Default)]
struct Health {
    /// Failed, and not yet running again.
    failing: AtomicBool,
    /// Failures since it last ran: the backoff grows with them.
    failures: AtomicU32,
}

struct Slot {
    kind: TaskKind,
    start: Start,
    handle: Option<JoinHandle<Result<(), TaskError>>>,
    stop: watch::Sender<bool>,
    health: Arc<Health>,
}

/// Delay before a restart: `first`, doubled for each failure in a row, at most `max`.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const DAEMON: Backoff = Backoff { first: Duration::from_secs(1), max: Duration::from_secs(60) };

    fn after(&self, failures: u32) -> Duration {
        self.first.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(self.max)
    }
}

/// The supervised set.
pub struct Supervisor {
    slots: Vec<Slot>,
    metrics: Option<Arc<Metrics>>,
    backoff: Backoff,
}

impl Supervisor {
    pub fn new(metrics: Option<Arc<Metrics>>, backoff: Backoff) -> Self {
        Self { slots: Vec::new(), metrics, backoff }
    }

    /// Starts a task; `start` is called again for every restart.
    pub fn spawn(&mut self, kind: TaskKind, start: impl FnMut(TaskContext) -> TaskFuture + Send + 'static) {
        let (stop, _) = watch::channel(false);
        let mut slot = Slot { kind, start: Box::new(start), handle: None, stop, health: Arc::default() };
        let ctx = self.context(&slot);
        let run = (slot.start)(ctx);
        slot.handle = Some(tokio::spawn(inject::wrap(kind, run)));
        self.slots.push(slot);
    }

    /// Starts a task that cannot be started twice (it consumes what it owns);
    /// its kind must not restart.
    pub fn spawn_once(&mut self, kind: TaskKind, start: impl FnOnce(TaskContext) -> TaskFuture + Send + 'static) {
        let mut start = Some(start);
        self.spawn(kind, move |ctx| match start.take() {
            Some(start) => start(ctx),
            None => Box::pin(async { Err(TaskError::new("it cannot start twice")) }),
        });
    }

    fn context(&self, slot: &Slot) -> TaskContext {
        TaskContext {
            kind: slot.kind,
            stop: slot.stop.subscribe(),
            health: Arc::clone(&slot.health),
            metrics: self.metrics.clone(),
        }
    }

    /// Waits for a task to end on its own. A task that may restart is
    /// logged, counted and restarted, and the wait goes on; one that may not
    /// is returned. Never resolves while every task runs.
    pub async fn watch(&mut self) -> Failure {
        loop {
            let running: Vec<(usize, &mut JoinHandle<_>)> =
                self.slots.iter_mut().enumerate().filter_map(|(i, s)| Some((i, s.handle.as_mut()?))).collect();
            if running.is_empty() {
                return std::future::pending().await;
            }
            let (indices, handles): (Vec<usize>, Vec<_>) = running.into_iter().unzip();
            let (joined, at, _) = futures_util::future::select_all(handles).await;
            let i = indices[at];
            self.slots[i].handle = None;
            let cause = match joined {
                Ok(Ok(())) => TaskError::new("it stopped on its own"),
                Ok(Err(e)) => e,
                Err(e) => TaskError::from_join(e),
            };
            if let Some(failure) = self.failed(i, cause) {
                return failure;
            }
        }
    }

    /// Logs and counts a failure; restarts the task if it may.
    fn failed(&mut self, i: usize, cause: TaskError) -> Option<Failure> {
        let kind = self.slots[i].kind;
        if let Some(m) = &self.metrics {
            m.task_failed(kind.name());
        }
        let health = Arc::clone(&self.slots[i].health);
        health.failing.store(true, Ordering::Relaxed);
        if !kind.restarts() {
            tracing::error!(task = kind.name(), cause = %cause, "background task failed; the daemon stops");
            return Some(Failure { task: kind, cause });
        }
        let failures = health.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let delay = self.backoff.after(failures);
        tracing::error!(task = kind.name(), cause = %cause, restart_in_ms = delay.as_millis() as u64, "background task failed; restarting it");
        let ctx = self.context(&self.slots[i]);
        let mut stop = ctx.stop_receiver();
        let run = (self.slots[i].start)(ctx);
        self.slots[i].handle = Some(tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.wait_for(|stop| *stop) => return Ok(()),
            }
            run.await
        }));
        None
    }

    /// Asks the task of `kind` to stop and waits for it. An error it ends
    /// with is logged and counted, and returned for a task that may not
    /// restart (nothing is restarted any more).
    pub async fn stop(&mut self, kind: TaskKind) -> Result<(), Failure> {
        let Some(slot) = self.slots.iter_mut().find(|s| s.kind == kind) else { return Ok(()) };
        let _ = slot.stop.send(true);
        let Some(handle) = slot.handle.take() else { return Ok(()) };
        let cause = match handle.await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(e) => TaskError::from_join(e),
        };
        if let Some(m) = &self.metrics {
            m.task_failed(kind.name());
        }
        tracing::error!(task = kind.name(), cause = %cause, "background task failed while stopping");
        if kind.restarts() {
            Ok(())
        } else {
            Err(Failure { task: kind, cause })
        }
    }

    /// Stops every task still running, in the order they were started.
    pub async fn stop_all(&mut self) {
        let kinds: Vec<TaskKind> = self.slots.iter().map(|s| s.kind).collect();
        for kind in kinds {
            let _ = self.stop(kind).await;
        }
    }
}

/// End-to-end tests make one task fail through the real binary:
/// `CUDA_TRACER_TEST_FAIL_TASK=<task name>` makes that task's first run
/// panic after a moment. Compiled into debug builds only, so a release
/// build (every image and benchmark) cannot be made to fail by any setting.
mod inject {
    use super::{TaskFuture, TaskKind};

    #[cfg(debug_assertions)]
    pub(super) fn wrap(kind: TaskKind, run: TaskFuture) -> TaskFuture {
        let chosen = std::env::var("CUDA_TRACER_TEST_FAIL_TASK").is_ok_and(|v| v.split(',').any(|t| t == kind.name()));
        if !chosen {
            return run;
        }
        Box::pin(async move {
            tokio::select! {
                result = run => result,
                _ = tokio::time::sleep(std::time::Duration::from_millis(300)) => {
                    panic!("failure injected by CUDA_TRACER_TEST_FAIL_TASK")
                }
            }
        })
    }

    #[cfg(not(debug_assertions))]
    pub(super) fn wrap(_kind: TaskKind, run: TaskFuture) -> TaskFuture {
        run
    }
}

#[cfg(test)]
#[path = "supervise_tests.rs"]
mod tests;
