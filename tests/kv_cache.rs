//! `run --vllm-metrics-url`: the daemon scrapes a local HTTP server serving
//! recorded vLLM `/metrics` pages into `kv_cache_usage_<seq>.csv` chunks,
//! survives bad pages and an unreachable endpoint, and keeps tracing.

use std::{path::Path, process::Command, sync::atomic::Ordering, time::Duration};

use cuda_tracer_tests::*;
use serde_json::Value;

const HEADER: &str =
    "timestamp_sec,usage_pct,num_blocks,total_blocks,num_requests_running,num_requests_waiting,num_preemptions";
const EVICTIONS_HEADER: &str = "timestamp_sec,lifetime_sec,idle_sec,sampled_evictions,interval_sec";

/// vLLM's sampled KV-block residency histograms (`--kv-cache-metrics`), as
/// its Prometheus client writes them; `with_values` sets their `_sum` and
/// `_count` samples.
const RESIDENCY: &str = r#"# HELP vllm:kv_block_lifetime_seconds Histogram of KV cache block lifetime from allocation to eviction. Sampled metrics (controlled by --kv-cache-metrics-sample).
# TYPE vllm:kv_block_lifetime_seconds histogram
vllm:kv_block_lifetime_seconds_bucket{engine="0",le="+Inf",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 0.0
vllm:kv_block_lifetime_seconds_count{engine="0",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 0.0
vllm:kv_block_lifetime_seconds_sum{engine="0",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 0.0
# HELP vllm:kv_block_idle_before_evict_seconds Histogram of idle time before KV cache block eviction. Sampled metrics (controlled by --kv-cache-metrics-sample).
# TYPE vllm:kv_block_idle_before_evict_seconds histogram
vllm:kv_block_idle_before_evict_seconds_bucket{engine="0",le="+Inf",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 0.0
vllm:kv_block_idle_before_evict_seconds_count{engine="0",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 0.0
vllm:kv_block_idle_before_evict_seconds_sum{engine="0",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 0.0
"#;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(name)).expect("fixture page")
}

/// The page with each listed metric's samples set to a new value.
fn with_values(page: &str, values: &[(&str, f64)]) -> String {
    page.lines()
        .map(|line| {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            match values.iter().find(|(n, _)| *n == name) {
                Some((_, v)) if !line.starts_with('#') => {
                    let (sample, _) = line.rsplit_once(' ').expect("sample line");
                    format!("{sample} {v}\n")
                }
                _ => format!("{line}\n"),
            }
        })
        .collect()
}

/// Every row of the session's closed KV chunks, in order, after asserting
/// the chunks are numbered from 1, each with the header, none left open.
fn kv_rows(session: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    chunk_rows(session, "kv_cache_usage", HEADER)
}

/// [`kv_rows`] of the chunks named `<kind>_<seq>.csv` with `header`.
fn chunk_rows(session: &Path, kind: &str, header: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut names: Vec<String> = std::fs::read_dir(session)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(kind))
        .collect();
    names.sort();
    let mut rows = Vec::new();
    for (i, name) in names.iter().enumerate() {
        assert_eq!(name, &format!("{kind}_{:05}.csv", i + 1), "{names:?}");
        let text = std::fs::read_to_string(session.join(name)).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(header));
        rows.extend(lines.map(|l| l.split(',').map(String::from).collect::<Vec<_>>()));
    }
    (names, rows)
}

fn daemon(traces: &Path, extra: &[&str]) -> Command {
    let mut cmd = uploading_daemon(traces, extra);
    cmd.arg("--no-upload");
    cmd
}

fn uploading_daemon(traces: &Path, extra: &[&str]) -> Command {
    let mut cmd = tracer_cmd();
    cmd.args(["run", "--scan-interval-ms", "100", "--metrics-interval", "1"])
        .args(extra)
        .arg("--trace-dir")
        .arg(traces);
    cmd
}

#[test]
fn vllm_metrics_become_csv_rows_on_the_trace_clock_beside_the_trace() {
    let tmp = tempfile::tempdir().unwrap();
    let traces = tmp.path().join("traces");
    let page = fixture("vllm_metrics.txt") + RESIDENCY;
    // Each scrape sees new values; after the fifth they stay. Between two
    // of the first five scrapes one sampled block is evicted, after 10 s of
    // life and 2 s idle.
    let usage = [0.0, 0.125, 0.5, 0.9375, 1.0];
    let (port, served) = serve_http(move |n| {
        let i = n.min(4);
        let body = with_values(
            &page,
            &[
                ("vllm:kv_cache_usage_perc", usage[i]),
                ("vllm:num_requests_running", i as f64),
                ("vllm:num_requests_waiting", (2 * i) as f64),
                ("vllm:num_preemptions_total", (10 + i) as f64),
                ("vllm:kv_block_lifetime_seconds_count", i as f64),
                ("vllm:kv_block_lifetime_seconds_sum", (10 * i) as f64),
                ("vllm:kv_block_idle_before_evict_seconds_count", i as f64),
                ("vllm:kv_block_idle_before_evict_seconds_sum", (2 * i) as f64),
            ],
        );
        (200, body)
    });
    let (mut workload, truth, go) = held_workload(tmp.path(), &["--iterations", "10"]);
    let url = format!("http://127.0.0.1:{port}/metrics");
    let pid = workload.0.id().to_string();
    let mut tracer = KillOnDrop(
        daemon(&traces, &["--pid", &pid, "--target-process", "^no-such-process$", "--rotate-secs", "2"])
            .args(["--vllm-metrics-url", &url])
            .spawn()
            .unwrap(),
    );
    wait_attached("the daemon to attach", &traces, &["libcuda.so.1"]);
    std::fs::write(&go, b"").unwrap();
    assert!(wait_with_deadline(&mut workload.0, Duration::from_secs(60)).success());
    wait_for("six scrapes", Duration::from_secs(60), || served.load(Ordering::SeqCst) >= 6);
    signal(&tracer.0, libc::SIGTERM);
    assert!(wait_with_deadline(&mut tracer.0, Duration::from_secs(90)).success());

    let session = session_dir(&traces).unwrap();
    let trace = load_trace(&session);
    assert_matches_truth(&trace.lines, &load_truth(&truth), false);
    let (files, rows) = kv_rows(&session);
    assert!(files.len() >= 2, "chunks rotate with --rotate-secs 2: {files:?}");
    // A scrape in flight at the stop is served but not written.
    let n = served.load(Ordering::SeqCst);
    assert!(rows.len() >= 6 && rows.len() <= n, "{} rows, {n} pages served", rows.len());
    // num_blocks is usage × vLLM's num_gpu_blocks (58893 in the page), rounded.
    let expected = [
        "0.0000,0,58893,0,0,10",
        "12.5000,7362,58893,1,2,11",
        "50.0000,29447,58893,2,4,12",
        "93.7500,55212,58893,3,6,13",
        "100.0000,58893,58893,4,8,14",
    ];
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[1..].join(","), expected[i.min(4)], "row {i}: {row:?}");
    }
    let ts: Vec<f64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    assert!(ts[0] >= 0.0 && ts.windows(2).all(|w| w[1] > w[0]), "seconds since the session start, rising: {ts:?}");
    let kv = &trace.metadata["kv_cache"];
    assert_eq!(kv["url"], url.as_str());
    assert_eq!(kv["scrapes"], rows.len() as u64);
    assert_eq!(kv["usage_metric"], "vllm:kv_cache_usage_perc");
    assert_eq!(kv["scrape_errors"], serde_json::json!({}));
    assert_eq!(kv["eviction_metrics"], true);
    // One eviction row per interval with an eviction: scrapes 1 to 4.
    let (eviction_files, evicted) = chunk_rows(&session, "kv_cache_evictions", EVICTIONS_HEADER);
    assert_eq!(evicted.len(), 4, "{evicted:?}");
    for (row, ts) in evicted.iter().zip(&ts[1..]) {
        assert_eq!(row[1..4].join(","), "10.000000,2.000000,1", "{row:?}");
        assert_eq!(row[0].parse::<f64>().unwrap(), *ts, "stamped as its usage row");
        assert!(row[4].parse::<f64>().unwrap() > 0.0, "the interval it covers: {row:?}");
    }
    // metadata lists every closed chunk of each kind, in order.
    let listed = |kind: &str| -> Vec<String> {
        let all = kv["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string());
        all.filter(|f| f.starts_with(kind)).collect()
    };
    assert_eq!(listed("kv_cache_usage_"), files);
    assert_eq!(listed("kv_cache_evictions_"), eviction_files);
    assert_eq!(kv["files"].as_array().unwrap().len(), files.len() + eviction_files.len());
}

#[test]
fn bad_answers_are_counted_and_the_old_metric_name_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let traces = tmp.path().join("traces");
    let old = fixture("vllm_metrics_v0.6.txt");
    let (port, served) = serve_http(move |n| match n {
        0 => (503, "starting".to_string()),
        1 => (200, "<html>not metrics</html>".to_string()),
        _ => (200, old.clone()),
    });
    let url = format!("http://127.0.0.1:{port}/metrics");
    let mut tracer = KillOnDrop(
        daemon(&traces, &["--target-process", "^no-such-process$", "--vllm-metrics-url", &url]).spawn().unwrap(),
    );
    wait_for("four scrapes", Duration::from_secs(60), || served.load(Ordering::SeqCst) >= 4);
    signal(&tracer.0, libc::SIGTERM);
    assert!(wait_with_deadline(&mut tracer.0, Duration::from_secs(90)).success());

    let session = session_dir(&traces).unwrap();
    let (_, rows) = kv_rows(&session);
    assert!(rows.len() >= 2, "{rows:?}");
    assert!(rows.iter().all(|r| r[1..].join(",") == "37.5000,22085,58893,5,2,7"), "{rows:?}");
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(session.join("metadata.json")).unwrap()).unwrap();
    let kv = &meta["kv_cache"];
    assert_eq!(kv["scrape_errors"], serde_json::json!({"http_status": 1, "bad_page": 1}));
    assert_eq!(kv["usage_metric"], "vllm:gpu_cache_usage_perc");
    assert_eq!(kv["scrapes"], rows.len() as u64);
    assert_eq!(kv["eviction_metrics"], false, "vLLM 0.6 has no residency histograms");
    assert!(chunk_rows(&session, "kv_cache_evictions", EVICTIONS_HEADER).0.is_empty());
}

#[test]
fn an_unreachable_endpoint_is_counted_and_tracing_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let traces = tmp.path().join("traces");
    let url = format!("http://127.0.0.1:{}/metrics", free_port());
    let metrics_port = free_port();
    let (mut workload, truth, go) = held_workload(tmp.path(), &["--iterations", "10"]);
    let pid = workload.0.id().to_string();
    let mut tracer = KillOnDrop(
        daemon(&traces, &["--pid", &pid, "--target-process", "^no-such-process$", "--vllm-metrics-url", &url])
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .spawn()
            .unwrap(),
    );
    wait_attached("the daemon to attach", &traces, &["libcuda.so.1"]);
    std::fs::write(&go, b"").unwrap();
    assert!(wait_with_deadline(&mut workload.0, Duration::from_secs(60)).success());
    wait_for("two failed scrapes on /metrics", Duration::from_secs(60), || {
        http_get(metrics_port, "/metrics").is_some_and(|(_, body)| {
            body.lines()
                .find_map(|l| l.strip_prefix(r#"cuda_tracer_vllm_scrape_errors_total{kind="connect"} "#))
                .is_some_and(|n| n.trim().parse::<u64>().is_ok_and(|n| n >= 2))
        })
    });
    signal(&tracer.0, libc::SIGTERM);
    assert!(wait_with_deadline(&mut tracer.0, Duration::from_secs(90)).success(), "never fatal");

    let session = session_dir(&traces).unwrap();
    let trace = load_trace(&session);
    assert_matches_truth(&trace.lines, &load_truth(&truth), false);
    let (files, _) = kv_rows(&session);
    assert!(files.is_empty(), "no rows, no empty chunk: {files:?}");
    let kv = &trace.metadata["kv_cache"];
    assert!(kv["scrape_errors"]["connect"].as_u64().unwrap() >= 2, "{kv}");
    assert_eq!(kv["scrapes"], 0);
    let last_error = kv["last_error"].as_str().unwrap();
    assert!(last_error.contains("is unreachable") && last_error.contains("refused"), "{kv}");
}

#[test]
fn kv_chunks_reach_s3_with_the_traces_and_leave_the_disk() {
    use cuda_tracer_tests::s3::{s3_flags, S3Server, SECRET_KEY};
    let _one_server = S3Server::lock();
    let server = S3Server::start();
    server.create_bucket("traces");
    let tmp = tempfile::tempdir().unwrap();
    let traces = tmp.path().join("traces");
    let page = fixture("vllm_metrics.txt");
    let (port, served) = serve_http(move |n| (200, with_values(&page, &[("vllm:num_requests_running", n as f64)])));
    let url = format!("http://127.0.0.1:{port}/metrics");
    let mut cmd = uploading_daemon(&traces, &["--target-process", "^no-such-process$", "--vllm-metrics-url", &url]);
    cmd.args(["--rotate-secs", "1", "--upload-interval-secs", "1"]);
    s3_flags(&mut cmd, "traces", SECRET_KEY);
    let mut tracer = KillOnDrop(cmd.spawn().unwrap());
    wait_for("four scrapes", Duration::from_secs(90), || served.load(Ordering::SeqCst) >= 4);
    signal(&tracer.0, libc::SIGTERM);
    assert!(wait_with_deadline(&mut tracer.0, Duration::from_secs(90)).success());

    let session = session_dir(&traces).unwrap();
    let (left, _) = kv_rows(&session);
    assert!(left.is_empty(), "uploaded chunks are deleted locally: {left:?}");
    let name = session.file_name().unwrap().to_string_lossy().into_owned();
    let objects = server.objects("traces", &format!("test/node-1/{name}/"));
    let mut running = Vec::new();
    for (key, bytes) in objects.iter().filter(|(k, _)| k.contains("/kv_cache_usage_")) {
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with(HEADER) && text.ends_with('\n'), "{key}: {text}");
        running.extend(text.lines().skip(1).map(|l| l.split(',').nth(4).unwrap().parse::<u64>().unwrap()));
    }
    assert!(running.len() >= 4, "{objects:?}");
    assert_eq!(running, (0..running.len() as u64).collect::<Vec<_>>(), "every row, in order, once");
    let meta: Value = serde_json::from_slice(&objects[&format!("test/node-1/{name}/metadata.json")]).unwrap();
    assert_eq!(meta["kv_cache"]["scrapes"], running.len() as u64);
}
