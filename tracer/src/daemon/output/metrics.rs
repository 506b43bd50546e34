//! Prometheus metrics and Kubernetes probes for the daemon: `/metrics`
//! (prometheus-client text format), `/healthz` (the process is alive) and
//! `/readyz` (probes loaded, every background task running, and the trace
//! dir writable).

use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{extract::State, http::StatusCode, routing::get, Router};
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tracer_common::funcs::FUNCS;

use crate::http_serve::{self, CappedTcp, ConnLimits};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FuncLabels {
    func: &'static str,
    #[prometheus(flatten)]
    layer: LayerLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LayerLabel {
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabel {
    task: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

/// Everything the daemon reports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Per function id, so the hot path increments without hashing labels.
    calls: Vec<Counter>,
    /// The same family, for name-only functions (ids past the table).
    calls_family: Family<FuncLabels, Counter>,
    dropped_calls: Family<FuncLabels, Gauge>,
    pub dropped: Family<KindLabel, Gauge>,
    /// Failed BPF map inserts, by map (`kind`).
    map_insert_failures: Family<KindLabel, Gauge>,
    pub traced_processes: Gauge,
    pub files_written: Counter,
    pub files_uploaded: Gauge,
    pub files_pending: Gauge,
    pub upload_errors: Family<KindLabel, Gauge>,
    pub local_bytes: Gauge,
    pub last_upload_unix: Gauge,
    /// Scrapes of vLLM's /metrics that gave a KV-cache row (`--vllm-metrics-url`).
    pub vllm_scrapes: Counter,
    /// Failed scrapes of vLLM's /metrics, by kind.
    pub vllm_scrape_errors: Family<KindLabel, Counter>,
    /// Connections to these endpoints closed unserved: all slots were in use.
    pub connections_refused: Counter,
    /// Background tasks that panicked or failed, by task.
    task_failures: Family<TaskLabel, Counter>,
    /// Libraries a traced process used that were not (fully) traced, by reason.
    libraries_missed: Family<ReasonLabel, Counter>,
    ready: AtomicBool,
    /// Tasks that failed and are not running again yet.
    failing_tasks: Mutex<BTreeSet<&'static str>>,
    trace_dir: PathBuf,
}

/// Registers metrics and hands back the handle the daemon keeps: a clone
/// shares its value with the registered one.
struct Registered<'a>(&'a mut Registry);

impl Registered<'_> {
    fn add<M: prometheus_client::registry::Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M {
        self.0.register(name, help, metric.clone());
        metric
    }
}

/// The labels of one function's series.
fn labels(spec: &'static tracer_common::funcs::FuncSpec) -> FuncLabels {
    FuncLabels { func: spec.name, layer: LayerLabel { r#type: spec.layer.type_name() } }
}

impl Metrics {
    pub fn new(trace_dir: PathBuf) -> Self {
        let mut registry = Registry::with_prefix("cuda_tracer");
        let family = Family::<FuncLabels, Counter>::default();
        // Clones share the counter: the hot path increments these directly.
        let calls = FUNCS.iter().map(|f| family.get_or_create(&labels(f)).clone()).collect();
        let calls_family = family.clone();
        registry.register("calls", "CUDA calls captured, per function", family);
        let mut reg = Registered(&mut registry);
        let dropped_calls =
            reg.add("dropped_calls", "Calls lost to a full ring buffer, per function", Family::default());
        let dropped = reg.add(
            "dropped_events",
            "Calls not recorded, by reason (kernel counters, and write_errors: lines lost to a full disk or I/O error)",
            Family::default(),
        );
        let map_insert_failures = reg.add(
            "map_insert_failures",
            "BPF map inserts refused because the map was full, by map: traced (a process went untraced, its calls unseen), names (a call lost its name argument), held (a library open was not held)",
            Family::default(),
        );
        let traced_processes = reg.add("traced_processes", "Processes traced now", Gauge::default());
        let files_written = reg.add("files_written", "Trace files closed", Counter::default());
        let files_uploaded = reg.add("files_uploaded", "Trace files uploaded and confirmed", Gauge::default());
        let files_pending = reg.add("files_pending", "Closed trace files waiting for upload", Gauge::default());
        let upload_errors = reg.add("upload_errors", "Failed upload attempts, by kind", Family::default());
        let local_bytes = reg.add("local_bytes", "Bytes of trace files on local disk", Gauge::default());
        let last_upload_unix =
            reg.add("last_upload_timestamp_seconds", "Unix time of the last confirmed upload", Gauge::default());
        let vllm_scrapes =
            reg.add("vllm_scrapes", "Scrapes of vLLM's /metrics that gave a KV-cache row", Counter::default());
        let vllm_scrape_errors =
            reg.add("vllm_scrape_errors", "Failed scrapes of vLLM's /metrics, by kind", Family::default());
        let connections_refused = reg.add(
            "http_connections_refused",
            "Connections to /metrics, /healthz and /readyz closed unserved because all connection slots were in use",
            Counter::default(),
        );
        let task_failures = reg.add(
            "task_failures",
            "Background tasks of the daemon that panicked or failed, by task",
            Family::default(),
        );
        let libraries_missed = reg.add(
            "libraries_missed",
            "CUDA libraries a traced process used whose calls are not all traced, by reason (attach_failed, late)",
            Family::default(),
        );
        Self {
            registry,
            calls,
            calls_family,
            dropped_calls,
            dropped,
            map_insert_failures,
            traced_processes,
            files_written,
            files_uploaded,
            files_pending,
            upload_errors,
            local_bytes,
            last_upload_unix,
            vllm_scrapes,
            vllm_scrape_errors,
            connections_refused,
            task_failures,
            libraries_missed,
            ready: AtomicBool::new(false),
            failing_tasks: Mutex::default(),
            trace_dir,
        }
    }

    /// One captured call of function `func_id`.
    #[inline]
    pub fn call(&self, func_id: u32) {
        if let Some(c) = self.calls.get(func_id as usize) {
            c.inc();
        } else if let Some(spec) = tracer_common::funcs::by_id(func_id) {
            // A name-only function: its series is made on first use (the
            // registry bounds how many there can be).
            self.calls_family.get_or_create(&labels(spec)).inc();
        }
    }

    /// Calls of `func` lost so far (kernel counter); the name-only
    /// functions' shared count comes as [`tracer_common::funcs::extra::DROPS_NAME`].
    pub fn set_dropped_calls(&self, func: &'static str, n: u64) {
        let label = match FUNCS.iter().find(|f| f.name == func) {
            Some(spec) => labels(spec),
            None if func == tracer_common::funcs::extra::DROPS_NAME => {
                FuncLabels { func, layer: LayerLabel { r#type: tracer_common::funcs::Group::Exported.name() } }
            }
            None => return,
        };
        self.dropped_calls.get_or_create(&label).set(n as i64);
    }

    /// The kernel's drop counters, by kind.
    pub fn set_drops(&self, drops: &crate::format::counts::Drops) {
        for (kind, n) in [
            ("ringbuf_full", drops.ringbuf_full),
            ("entry_map_full", drops.entry_map_full),
            ("return_without_entry", drops.return_without_entry),
        ] {
            self.dropped.get_or_create(&KindLabel { kind }).set(n as i64);
        }
        for (kind, n) in
            [("traced", drops.traced_map_full), ("names", drops.name_map_full), ("held", drops.hold_map_full)]
        {
            self.map_insert_failures.get_or_create(&KindLabel { kind }).set(n as i64);
        }
    }

    /// Lines lost to write errors (a full disk, an I/O error) so far.
    pub fn set_write_errors(&self, lines: u64) {
        self.dropped.get_or_create(&KindLabel { kind: "write_errors" }).set(lines as i64);
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// One more library missed for `reason`.
    pub fn library_missed(&self, reason: &str) {
        self.libraries_missed.get_or_create(&ReasonLabel { reason: reason.to_string() }).inc();
    }

    /// `task` failed: counted, and the daemon is not ready until it runs again.
    pub fn task_failed(&self, task: &'static str) {
        self.task_failures.get_or_create(&TaskLabel { task }).inc();
        if let Ok(mut failing) = self.failing_tasks.lock() {
            failing.insert(task);
        }
    }

    /// `task` runs again after a failure.
    pub fn task_running(&self, task: &'static str) {
        if let Ok(mut failing) = self.failing_tasks.lock() {
            failing.remove(task);
        }
    }

    /// The text of `/metrics`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// The answer of `/readyz`.
    pub fn readiness(&self) -> (StatusCode, String) {
        let failing: Vec<&str> = self.failing_tasks.lock().map(|f| f.iter().copied().collect()).unwrap_or_default();
        if !failing.is_empty() {
            return (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: task {} failed", failing.join(", ")));
        }
        if self.is_ready() {
            (StatusCode::OK, "ready".to_string())
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: probes not loaded or trace dir not writable".to_string())
        }
    }

    fn is_ready(&self) -> bool {
        // Asks the kernel instead of writing a probe file: an unauthenticated
        // request must never create, truncate or remove anything.
        self.ready.load(Ordering::Relaxed) && crate::format::safe_fs::dir_writable(&self.trace_dir)
    }
}

/// Bounds on the endpoints' clients (Prometheus and the kubelet send one
/// small GET at a time): a request head within 10 s (idle keep-alive
/// connections close then too), and a connection open for a minute at most.
const CONN_LIMITS: ConnLimits =
    ConnLimits { header_timeout: Duration::from_secs(10), max_lifetime: Duration::from_secs(60) };

/// Serves the endpoints on `listener`, at most `max_connections` at once
/// (more are closed at once and counted), until the future is dropped.
pub async fn serve(listener: tokio::net::TcpListener, max_connections: usize, metrics: Arc<Metrics>) {
    let refused = metrics.connections_refused.clone();
    let app = Router::new()
        .route("/metrics", get(|State(m): State<Arc<Metrics>>| async move { m.render() }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|State(m): State<Arc<Metrics>>| async move { m.readiness() }))
        .with_state(metrics);
    let listener = CappedTcp::new(listener, max_connections, refused);
    http_serve::serve(listener, app, CONN_LIMITS, std::future::pending()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_calls_per_function_and_gauges() {
        let dir = tempfile::tempdir().unwrap();
        let m = Metrics::new(dir.path().to_path_buf());
        let (id, _) = tracer_common::funcs::by_name("cudaMalloc").unwrap();
        m.call(u32::from(id));
        m.call(u32::from(id));
        m.upload_errors.get_or_create(&KindLabel { kind: "unreachable" }).set(3);
        let text = m.render();
        assert!(text.contains(r#"cuda_tracer_calls_total{func="cudaMalloc",type="cuda_runtime"} 2"#), "{text}");
        assert!(text.contains(r#"cuda_tracer_upload_errors{kind="unreachable"} 3"#), "{text}");
        assert!(!m.is_ready());
        m.set_ready(true);
        assert!(m.is_ready());
        m.task_failed("upload");
        assert_eq!(m.readiness().0, StatusCode::SERVICE_UNAVAILABLE);
        assert!(m.render().contains(r#"cuda_tracer_task_failures_total{task="upload"} 1"#), "{}", m.render());
        m.task_running("upload");
        assert_eq!(m.readiness(), (StatusCode::OK, "ready".to_string()));
    }

    #[test]
    fn counts_missed_libraries_by_reason() {
        let dir = tempfile::tempdir().unwrap();
        let m = Metrics::new(dir.path().to_path_buf());
        m.library_missed("attach_failed");
        m.library_missed("attach_failed");
        m.library_missed("late");
        let text = m.render();
        assert!(text.contains(r#"cuda_tracer_libraries_missed_total{reason="attach_failed"} 2"#), "{text}");
        assert!(text.contains(r#"cuda_tracer_libraries_missed_total{reason="late"} 1"#), "{text}");
    }

    #[test]
    fn failed_map_inserts_are_shown_by_map() {
        let dir = tempfile::tempdir().unwrap();
        let m = Metrics::new(dir.path().to_path_buf());
        let drops = crate::format::counts::Drops { traced_map_full: 5, name_map_full: 2, ..Default::default() };
        m.set_drops(&drops);
        let text = m.render();
        assert!(text.contains(r#"cuda_tracer_map_insert_failures{kind="traced"} 5"#), "{text}");
        assert!(text.contains(r#"cuda_tracer_map_insert_failures{kind="names"} 2"#), "{text}");
        assert!(text.contains(r#"cuda_tracer_map_insert_failures{kind="held"} 0"#), "{text}");
    }
}
