//! The bodies of the daemon's background tasks that are not a module's own
//! loop: the disk budget timer, the upload timer, the step window timer, the
//! metrics server and the stop signal. Each runs until its [`TaskContext`]
//! asks it to stop.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::sync::watch;

use crate::daemon::{
    output::{
        budget::{DeletedFile, DiskBudget},
        delivery::Delivery,
        metrics::{self, Metrics},
        step_window::StepWindow,
    },
    supervise::{TaskContext, TaskError},
};

/// Applies the budget every `every`, off the runtime's threads: a scan can
/// block for seconds in the kernel while attaching, and the budget must not
/// wait for it.
pub async fn budget(
    budget: DiskBudget,
    deleted: Arc<Mutex<Vec<DeletedFile>>>,
    every: Duration,
    mut ctx: TaskContext,
) -> Result<(), TaskError> {
    let mut tick = tokio::time::interval(every);
    while ctx.tick(&mut tick).await {
        let b = budget.clone();
        let files = tokio::task::spawn_blocking(move || b.enforce()).await.map_err(TaskError::from_join)?;
        if let Ok(mut d) = deleted.lock() {
            d.extend(files);
        }
        ctx.running();
    }
    Ok(())
}

/// Uploads what is pending every `every`. A stop cancels the round in
/// progress: the daemon's last round, with its deadline, follows.
pub async fn upload(
    delivery: Arc<tokio::sync::Mutex<Delivery>>,
    every: Duration,
    mut ctx: TaskContext,
) -> Result<(), TaskError> {
    let mut tick = tokio::time::interval(every);
    while ctx.tick(&mut tick).await {
        let mut d = delivery.lock().await;
        let report = tokio::select! {
            report = d.round(None) => report,
            _ = ctx.stopped() => return Ok(()),
        };
        if report.uploaded > 0 || report.failed > 0 {
            tracing::info!(uploaded = report.uploaded, failed = report.failed, "upload round");
        }
        ctx.running();
    }
    Ok(())
}

/// Looks at the session's trace files every `every` (off the runtime's
/// threads: it links files and, once, reads the window's), until the
/// window's export is written; the daemon's last look follows a stop.
pub async fn step_window(window: Arc<StepWindow>, every: Duration, mut ctx: TaskContext) -> Result<(), TaskError> {
    let mut tick = tokio::time::interval(every);
    while ctx.tick(&mut tick).await {
        let w = Arc::clone(&window);
        tokio::task::spawn_blocking(move || w.pass(false))
            .await
            .map_err(TaskError::from_join)?
            .map_err(TaskError::new)?;
        ctx.running();
    }
    Ok(())
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr`, at most
/// `max_connections` at once.
pub async fn serve_metrics(
    addr: SocketAddr,
    max_connections: usize,
    metrics: Arc<Metrics>,
    mut ctx: TaskContext,
) -> Result<(), TaskError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| TaskError::new(format!("cannot listen on {addr}: {e}")))?;
    ctx.running();
    tokio::select! {
        () = metrics::serve(listener, max_connections, metrics) => Ok(()),
        _ = ctx.stopped() => Ok(()),
    }
}

/// Waits for `stop` (the process's signals), then raises `stopping` (which
/// interrupts attaching, a blocking call the event loop cannot leave) and
/// tells the daemon; runs on until the daemon stops it.
pub async fn stop_signal(
    stop: impl Future<Output = ()>,
    stopping: Arc<AtomicBool>,
    requested: watch::Sender<bool>,
    mut ctx: TaskContext,
) -> Result<(), TaskError> {
    tokio::select! {
        () = stop => {
            stopping.store(true, Ordering::Relaxed);
            let _ = requested.send(true);
            ctx.stopped().await;
        }
        _ = ctx.stopped() => {}
    }
    Ok(())
}
