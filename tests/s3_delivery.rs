//! S3 delivery against a real S3 server (SeaweedFS on 127.0.0.1, checking
//! signatures): files arrive byte for byte and are deleted only after the
//! store confirmed them; wrong credentials keep them; a killed tracer's
//! half-written file is repaired and uploaded; a store that is down at start
//! gets everything once it is up.

use std::time::Duration;

use cuda_tracer_tests::{
    s3::{s3_flags, S3Server, SECRET_KEY},
    *,
};
use serde_json::Value;

fn lines_of(objects: &std::collections::BTreeMap<String, Vec<u8>>) -> Vec<Value> {
    objects
        .iter()
        .filter(|(k, _)| k.contains("/trace_"))
        .flat_map(|(_, bytes)| String::from_utf8(bytes.clone()).unwrap().lines().map(String::from).collect::<Vec<_>>())
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect()
}

type Log = std::sync::Arc<std::sync::Mutex<String>>;

/// A waiting workload (starts its calls when `go` exists) and an uploading
/// daemon tracing it, returned once both CUDA libraries are attached.
fn workload_and_daemon(tmp: &std::path::Path, iterations: &str, extra: &[&str]) -> (KillOnDrop, KillOnDrop, Log) {
    let traces = tmp.join("traces");
    let workload_args = ["--no-child", "--threads", "2", "--iterations", iterations, "--step-delay-us", "20000"];
    let (workload, _truth, _go) = held_workload(tmp, &workload_args);
    let pid = workload.0.id().to_string();
    let mut cmd = tracer_cmd();
    cmd.args(["run", "--pid", &pid, "--target-process", "^none$", "--rotate-secs", "1", "--upload-interval-secs", "1"])
        .args(extra)
        .arg("--trace-dir")
        .arg(&traces)
        .env("RUST_LOG", "info");
    s3_flags(&mut cmd, "traces", SECRET_KEY);
    let (daemon, log) = spawn_with_log(cmd);
    // Both the runtime and the driver must be attached before the calls start.
    wait_for("the daemon to attach", Duration::from_secs(90), || {
        log.lock().unwrap().matches("attached path=").count() >= 2
    });
    (workload, daemon, log)
}

#[test]
fn upload_dir_delivers_every_byte_then_deletes() {
    let _one_server = S3Server::lock();
    let tmp = tempfile::tempdir().unwrap();
    let (session, truth) = recorded_session(tmp.path());
    let trace = load_trace(&session);
    assert!(trace.files.len() >= 2, "rotated files");
    let local: Vec<(String, Vec<u8>)> = trace
        .files
        .iter()
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(p).unwrap()))
        .collect();

    let server = S3Server::start();
    server.create_bucket("traces");
    // Wrong credentials first: a clear error, and nothing deleted.
    let mut cmd = tracer_cmd();
    cmd.arg("upload").arg(tmp.path().join("traces"));
    s3_flags(&mut cmd, "traces", "not-the-secret");
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("credentials") && !text.contains(SECRET_KEY), "{text}");
    assert_eq!(load_trace(&session).files.len(), local.len(), "files kept after a failed upload");

    let mut cmd = tracer_cmd();
    cmd.arg("upload").arg(tmp.path().join("traces"));
    s3_flags(&mut cmd, "traces", SECRET_KEY);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    let objects = server.objects("traces", "test/node-1/session-a/");
    for (name, bytes) in &local {
        let key = format!("test/node-1/session-a/{name}");
        assert_eq!(objects.get(&key), Some(bytes), "{key} arrived byte for byte");
        assert!(!session.join(name).exists(), "{name} deleted after the store confirmed it");
    }
    assert!(objects.contains_key("test/node-1/session-a/metadata.json"));
    assert!(session.join("metadata.json").exists(), "metadata stays local");
    assert_matches_truth(&lines_of(&objects), &load_truth(&truth), false);
}

#[test]
fn a_killed_tracers_half_written_file_is_repaired_and_uploaded() {
    let _one_server = S3Server::lock();
    let tmp = tempfile::tempdir().unwrap();
    let (out, truth) = (tmp.path().join("traces").join("killed"), tmp.path().join("truth"));
    std::fs::create_dir_all(&truth).unwrap();
    let mut tracer = KillOnDrop(
        tracer_cmd()
            .args(["record", "-o"])
            .arg(&out)
            .args(["--", &workload(), "--no-child", "--iterations", "3000", "--step-delay-us", "2000"])
            .env("CUDA_FIXTURE_TRUTH_DIR", &truth)
            .env("LD_LIBRARY_PATH", fixtures())
            .spawn()
            .unwrap(),
    );
    // kill -9 once lines have reached the open file (the reader writes every 20 ms).
    wait_for("lines in the open trace file", Duration::from_secs(60), || {
        std::fs::read_dir(&out).is_ok_and(|d| {
            d.filter_map(Result::ok).any(|e| {
                e.file_name().to_string_lossy().ends_with(".partial") && e.metadata().is_ok_and(|m| m.len() > 300_000)
            })
        })
    });
    signal(&tracer.0, libc::SIGKILL);
    let _ = tracer.0.wait();

    let server = S3Server::start();
    server.create_bucket("traces");
    let mut cmd = tracer_cmd();
    cmd.arg("upload").arg(tmp.path().join("traces"));
    s3_flags(&mut cmd, "traces", SECRET_KEY);
    let result = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success() && stdout.contains("1 repaired"), "{stdout}");
    let lines = lines_of(&server.objects("traces", "test/node-1/killed/"));
    assert!(lines.len() > 1000, "{} lines", lines.len());
    // Every complete line survived and is a real call, in order.
    assert_matches_truth(&lines, &load_truth(&truth), true);
}

#[test]
fn a_store_that_is_down_at_start_gets_everything_once_up() {
    let _one_server = S3Server::lock();
    let tmp = tempfile::tempdir().unwrap();
    let (traces, truth, go) = (tmp.path().join("traces"), tmp.path().join("truth"), tmp.path().join("go"));
    let port = 19464;
    let metrics_addr = format!("127.0.0.1:{port}");
    let (mut workload, mut daemon, log) = workload_and_daemon(tmp.path(), "40", &["--metrics-addr", &metrics_addr]);
    std::fs::write(&go, b"").unwrap();
    assert!(wait_with_deadline(&mut workload.0, Duration::from_secs(60)).success());
    // Uploads have been failing: the store is down.
    wait_for("a failed upload", Duration::from_secs(30), || log.lock().unwrap().contains("upload failed"));
    let session = session_dir(&traces).unwrap();
    assert!(!load_trace(&session).files.is_empty(), "closed files wait on disk");

    let mut server = S3Server::stopped();
    server.up();
    server.create_bucket("traces");
    wait_for("the waiting files to arrive", Duration::from_secs(60), || {
        std::fs::read_dir(&session)
            .unwrap()
            .filter_map(Result::ok)
            .all(|e| !e.file_name().to_string_lossy().starts_with("trace_"))
    });
    // The daemon's own view, scraped like Prometheus and the kubelet would.
    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(http_get(port, "/readyz").map(|r| r.0), Some(200));
    let (status, metrics) = http_get(port, "/metrics").expect("metrics endpoint");
    assert_eq!(status, 200);
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in:\n{metrics}"))
    };
    assert!(value(r#"cuda_tracer_calls_total{func="cudaMalloc",type="cuda_runtime"}"#) >= 80.0);
    assert!(value(r#"cuda_tracer_upload_errors{kind="unreachable"}"#) >= 1.0, "the outage is counted");
    assert!(value("cuda_tracer_files_uploaded") >= 1.0);
    assert!(value("cuda_tracer_files_written_total") >= 1.0);
    assert!(value("cuda_tracer_last_upload_timestamp_seconds") > 1.7e9);
    assert_eq!(value(r#"cuda_tracer_dropped_events{kind="ringbuf_full"}"#), 0.0);
    signal(&daemon.0, libc::SIGTERM);
    assert!(wait_with_deadline(&mut daemon.0, Duration::from_secs(90)).success());

    let name = session.file_name().unwrap().to_string_lossy().into_owned();
    let objects = server.objects("traces", &format!("test/node-1/{name}/"));
    assert_matches_truth(&lines_of(&objects), &load_truth(&truth), false);
    let meta: Value = serde_json::from_slice(&objects[&format!("test/node-1/{name}/metadata.json")]).unwrap();
    assert_eq!(meta["status"], "finished", "the final metadata went up at shutdown");
    assert_eq!(meta["kubernetes"]["node"], "node-1", "downward-API values recorded");
}

#[test]
fn large_files_go_up_in_checked_parts() {
    let _one_server = S3Server::lock();
    let tmp = tempfile::tempdir().unwrap();
    let session = tmp.path().join("traces").join("big-session");
    std::fs::create_dir_all(&session).unwrap();
    // 12 MiB of distinct lines: three 5 MiB parts, the last one short.
    let mut text = String::new();
    let mut i = 0u64;
    while text.len() < 12 << 20 {
        text += &format!(
            "{{\"ts\":{i}.0,\"pid\":1,\"type\":\"cuda_api\",\"func\":\"cuLaunchKernel\",\"phase\":\"entry\"}}\n"
        );
        i += 1;
    }
    std::fs::write(session.join("trace_00001_20260101T000000Z.jsonl"), &text).unwrap();
    std::fs::write(session.join("metadata.json"), b"{}").unwrap();
    let server = S3Server::start();
    server.create_bucket("traces");
    let mut cmd = tracer_cmd();
    cmd.arg("upload").arg(tmp.path().join("traces")).args(["--multipart-bytes", "5242880"]);
    s3_flags(&mut cmd, "traces", SECRET_KEY);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let objects = server.objects("traces", "test/node-1/big-session/");
    let stored = &objects["test/node-1/big-session/trace_00001_20260101T000000Z.jsonl"];
    assert_eq!(stored.len(), text.len());
    assert!(stored == text.as_bytes(), "multipart object differs from the local file");
    assert!(!session.join("trace_00001_20260101T000000Z.jsonl").exists());
}

#[test]
fn a_store_killed_mid_run_and_restarted_loses_nothing() {
    let _one_server = S3Server::lock();
    let tmp = tempfile::tempdir().unwrap();
    let (traces, truth, go) = (tmp.path().join("traces"), tmp.path().join("truth"), tmp.path().join("go"));
    let mut server = S3Server::start();
    server.create_bucket("traces");
    let (mut workload, mut daemon, log) = workload_and_daemon(tmp.path(), "300", &[]);
    std::fs::write(&go, b"").unwrap();
    // Some files go up, then the store dies in the middle of the run ...
    wait_for("a first upload", Duration::from_secs(60), || log.lock().unwrap().contains("upload round"));
    server.down();
    wait_for("uploads failing", Duration::from_secs(60), || log.lock().unwrap().contains("upload failed"));
    // ... and comes back with its data while the workload still runs.
    server.up();
    assert!(wait_with_deadline(&mut workload.0, Duration::from_secs(120)).success());
    let session = session_dir(&traces).unwrap();
    wait_for("every closed file uploaded", Duration::from_secs(60), || {
        std::fs::read_dir(&session)
            .unwrap()
            .filter_map(Result::ok)
            .all(|e| !e.file_name().to_string_lossy().starts_with("trace_"))
    });
    signal(&daemon.0, libc::SIGTERM);
    assert!(wait_with_deadline(&mut daemon.0, Duration::from_secs(90)).success());
    let name = session.file_name().unwrap().to_string_lossy().into_owned();
    let objects = server.objects("traces", &format!("test/node-1/{name}/"));
    // Byte-level: every object parses line by line and together they equal the truth.
    assert_matches_truth(&lines_of(&objects), &load_truth(&truth), false);
}

#[test]
fn shutdown_stops_uploading_at_its_deadline_and_keeps_the_rest() {
    let _one_server = S3Server::lock();
    let tmp = tempfile::tempdir().unwrap();
    let (session, _truth) = recorded_session(tmp.path());
    let before = load_trace(&session).files.len();
    // No server: every upload fails; the deadline bounds the shutdown.
    let mut cmd = tracer_cmd();
    cmd.args(["run", "--pid", "1", "--target-process", "^none$", "--upload-deadline-secs", "2"])
        .arg("--trace-dir")
        .arg(tmp.path().join("traces"))
        .env("RUST_LOG", "info");
    s3_flags(&mut cmd, "traces", SECRET_KEY);
    let (mut daemon, log) = spawn_with_log(cmd);
    wait_for("the daemon to start", Duration::from_secs(90), || log.lock().unwrap().contains("tracing process"));
    let stopped = std::time::Instant::now();
    signal(&daemon.0, libc::SIGTERM);
    assert!(wait_with_deadline(&mut daemon.0, Duration::from_secs(90)).success());
    assert!(stopped.elapsed() < Duration::from_secs(30), "shutdown took {:?}", stopped.elapsed());
    assert!(log.lock().unwrap().contains("left_on_disk"), "{}", log.lock().unwrap());
    assert_eq!(load_trace(&session).files.len(), before, "nothing deleted without a confirmed upload");
}
