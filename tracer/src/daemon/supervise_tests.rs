//! The supervisor with injected failures: each of the daemon's restartable
//! tasks is logged, counted, makes `/readyz` not ready and is restarted; a
//! failed reader is handed back to the daemon, not restarted.

use std::{
    io::Write,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::http::StatusCode;

use super::*;

const FAST: Backoff = Backoff { first: Duration::from_millis(5), max: Duration::from_millis(5) };

/// Everything logged on this thread while the guard lives.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn ready_metrics(dir: &tempfile::TempDir) -> Arc<Metrics> {
    let metrics = Arc::new(Metrics::new(dir.path().to_path_buf()));
    metrics.set_ready(true);
    assert_eq!(metrics.readiness().0, StatusCode::OK);
    metrics
}

/// Runs the supervisor until `done`; a task handed back fails the test.
async fn drive(sup: &mut Supervisor, mut done: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while !done() {
            tokio::select! {
                failure = sup.watch() => panic!("handed back: {failure}"),
                _ = tokio::time::sleep(Duration::from_millis(1)) => {}
            }
        }
    });
    waited.await.expect("the supervisor got there in time");
}

/// `kind`'s first run fails with `failure`; the second waits for a gate,
/// then runs.
async fn fails_once_then_runs_again(kind: TaskKind, failure: fn() -> TaskFuture, cause: &str) {
    let (logs, _guard) = Logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let metrics = ready_metrics(&dir);
    let mut sup = Supervisor::new(Some(Arc::clone(&metrics)), FAST);
    let starts = Arc::new(AtomicU32::new(0));
    let gate = Arc::new(tokio::sync::Notify::new());
    let (counted, opened) = (Arc::clone(&starts), Arc::clone(&gate));
    sup.spawn(kind, move |mut ctx| {
        if counted.fetch_add(1, Ordering::SeqCst) == 0 {
            return failure();
        }
        let opened = Arc::clone(&opened);
        Box::pin(async move {
            opened.notified().await;
            ctx.running();
            ctx.stopped().await;
            Ok(())
        })
    });

    drive(&mut sup, || starts.load(Ordering::SeqCst) == 2).await;
    let name = kind.name();
    let line = logs.text().lines().find(|l| l.contains("background task failed")).unwrap_or_default().to_string();
    assert!(line.contains("ERROR") && line.contains(&format!("task=\"{name}\"")), "{}", logs.text());
    assert!(line.contains(cause) && line.contains("restarting it"), "{line}");
    let rendered = metrics.render();
    assert!(rendered.contains(&format!("cuda_tracer_task_failures_total{{task=\"{name}\"}} 1")), "{rendered}");
    let (status, text) = metrics.readiness();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "not ready while {name} is down");
    assert!(text.contains(name), "{text}");

    gate.notify_one();
    drive(&mut sup, || metrics.readiness().0 == StatusCode::OK).await;
    assert_eq!(starts.load(Ordering::SeqCst), 2, "restarted once");
    assert!(logs.text().contains("task runs again"), "{}", logs.text());
    sup.stop(kind).await.expect("the restarted task stops cleanly");
}

#[tokio::test]
async fn a_panicking_upload_task_is_logged_counted_unready_and_restarted() {
    fails_once_then_runs_again(
        TaskKind::Upload,
        || Box::pin(async { panic!("injected upload panic") }),
        "panicked: injected upload panic",
    )
    .await;
}

#[tokio::test]
async fn a_failing_kv_scraper_is_logged_counted_unready_and_restarted() {
    let failure = || -> TaskFuture { Box::pin(async { Err(TaskError::new("injected scraper error")) }) };
    fails_once_then_runs_again(TaskKind::KvScraper, failure, "injected scraper error").await;
}

#[tokio::test]
async fn a_failing_budget_task_is_logged_counted_unready_and_restarted() {
    let failure = || -> TaskFuture {
        Box::pin(async {
            // The way the real one fails: `enforce` panicking on the blocking pool.
            let joined = tokio::task::spawn_blocking(|| panic!("injected budget panic")).await;
            joined.map_err(TaskError::from_join)
        })
    };
    fails_once_then_runs_again(TaskKind::Budget, failure, "panicked: injected budget panic").await;
}

#[tokio::test]
async fn a_failing_reader_is_handed_back_not_restarted() {
    let (logs, _guard) = Logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let metrics = ready_metrics(&dir);
    let mut sup = Supervisor::new(Some(Arc::clone(&metrics)), FAST);
    let starts = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&starts);
    sup.spawn_once(TaskKind::Reader, move |_ctx| {
        counted.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Err(TaskError::new("injected reader error")) })
    });
    let failure = tokio::time::timeout(Duration::from_secs(10), sup.watch()).await.expect("handed back");
    assert_eq!(failure.task, TaskKind::Reader);
    assert_eq!(failure.to_string(), "the reader task failed: injected reader error");
    let text = logs.text();
    assert!(text.contains("task=\"reader\"") && text.contains("the daemon stops"), "{text}");
    assert!(metrics.render().contains(r#"cuda_tracer_task_failures_total{task="reader"} 1"#));
    assert_eq!(metrics.readiness().0, StatusCode::SERVICE_UNAVAILABLE);
    // Nothing is restarted: the supervisor now waits for nothing.
    assert!(tokio::time::timeout(Duration::from_millis(50), sup.watch()).await.is_err());
    assert_eq!(starts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn stop_ends_a_task_in_its_backoff_and_reports_a_readers_last_error() {
    let mut sup = Supervisor::new(None, Backoff { first: Duration::from_secs(3600), max: Duration::from_secs(3600) });
    sup.spawn(TaskKind::Upload, |_ctx| Box::pin(async { Err(TaskError::new("always")) }));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    sup.spawn_once(TaskKind::Reader, move |mut ctx| {
        Box::pin(async move {
            ctx.stopped().await;
            let _ = tx.send(());
            Err(TaskError::new("failed while draining"))
        })
    });
    // The upload fails and waits an hour to restart; stopping does not wait for that.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let _ = tokio::time::timeout(Duration::from_millis(20), sup.watch()).await;
    tokio::time::timeout(Duration::from_secs(5), sup.stop(TaskKind::Upload)).await.unwrap().unwrap();
    let failure = sup.stop(TaskKind::Reader).await.unwrap_err();
    assert_eq!(failure.task, TaskKind::Reader);
    rx.await.unwrap();
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let b = Backoff::DAEMON;
    let secs: Vec<u64> = [1, 2, 3, 7, 40].map(|n| b.after(n).as_secs()).to_vec();
    assert_eq!(secs, [1, 2, 4, 60, 60]);
    assert!(TaskKind::Upload.restarts() && TaskKind::KvScraper.restarts() && TaskKind::Budget.restarts());
    assert!(!TaskKind::Reader.restarts());
}
