//! `run --profile-steps` (PROFILE_STEPS, the seed webhook's calls 100-150):
//! the daemon traces the fixture's vLLM-like engine loop, and once the
//! window's steps have passed, while it still runs, writes their Chrome
//! export into the session dir and uploads it to a real S3 server with the
//! traces, although the trace files holding the window were uploaded and
//! deleted first.

use std::time::Duration;

use cuda_tracer_tests::{
    s3::{s3_flags, S3Server, SECRET_KEY},
    *,
};
use serde_json::Value;

const EXPORT: &str = "profile_steps_trace.json";

#[test]
fn the_step_window_is_exported_once_passed_and_uploaded_with_the_traces() {
    let (_one_server, server) = S3Server::with_bucket("traces");
    let tmp = tempfile::tempdir().unwrap();
    let traces = tmp.path().join("traces");
    // The engine loop does not wait for a go-file itself: a shell waits for
    // it, with the file's name (the daemon's pattern) on its command line,
    // then becomes the loop (same pid, already traced).
    let go = tmp.path().join("go-profile-steps");
    // The scratch dir's own name makes the pattern this test's alone.
    let scratch_name = tmp.path().file_name().unwrap().to_string_lossy().into_owned();
    let go_name = format!("{scratch_name}/go-profile-steps");
    let mut cmd = tracer_cmd();
    cmd.args(["run", "--target-process", &go_name, "--scan-interval-ms", "100"])
        .args(["--rotate-secs", "1", "--upload-interval-secs", "1", "--profile-steps", "5..10", "--trace-dir"])
        .arg(&traces)
        .env("RUST_LOG", "info");
    s3_flags(&mut cmd, "traces", SECRET_KEY);
    let (mut daemon, log) = spawn_with_log(cmd);
    wait_for("the daemon to start", Duration::from_secs(60), || session_dir(&traces).is_some());
    let truth = tmp.path().join("truth");
    std::fs::create_dir_all(&truth).unwrap();
    let script = format!(
        "while [ ! -e '{}' ]; do sleep 0.02; done; exec '{}' --vllm-loop --vllm-steps 61",
        go.display(),
        workload()
    );
    let mut workload = std::process::Command::new("sh")
        .args(["-c", &script])
        .env("CUDA_FIXTURE_TRUTH_DIR", &truth)
        .env("LD_LIBRARY_PATH", fixtures())
        .spawn()
        .unwrap();
    let pid = workload.id();
    wait_for("the daemon to trace the waiting shell", Duration::from_secs(60), || {
        log.lock().unwrap().contains(&format!("pid={pid} "))
    });
    std::fs::write(&go, b"").unwrap();
    assert!(wait_with_deadline(&mut workload, Duration::from_secs(60)).success());

    // Written while the daemon runs: once a closed file shows step 10.
    let session = session_dir(&traces).unwrap();
    wait_for("the step window's export", Duration::from_secs(60), || session.join(EXPORT).exists());
    let name = session.file_name().unwrap().to_string_lossy().into_owned();
    let key = format!("test/node-1/{name}/{EXPORT}");
    wait_for("the export in S3", Duration::from_secs(60), || server.objects("traces", &key).contains_key(&key));
    let local = std::fs::read(session.join(EXPORT)).unwrap();
    assert_eq!(server.objects("traces", &key)[&key], local, "uploaded byte for byte, and kept in the pod");
    // The traces went up (in the same or a later round: the uploads of a
    // round run at once, so the export may land first) and were deleted
    // locally; the window still had them.
    let traces_key = format!("test/node-1/{name}/trace_");
    wait_for("trace files uploaded", Duration::from_secs(60), || !server.objects("traces", &traces_key).is_empty());

    signal(&daemon.0, libc::SIGTERM);
    assert!(wait_with_deadline(&mut daemon.0, Duration::from_secs(90)).success(), "{}", log.lock().unwrap());
    assert!(!session.join(".step-window").exists(), "the staging links are gone");
    assert!(log.lock().unwrap().contains("wrote the PROFILE_STEPS Chrome/Perfetto trace"));

    let doc: Value = serde_json::from_slice(&local).expect("the export is JSON");
    let events = doc["traceEvents"].as_array().expect("traceEvents");
    let steps: Vec<u64> = events
        .iter()
        .filter(|e| e["ph"] == "X" && e["cat"] == "step")
        .map(|e| e["args"]["index"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (5..10).collect::<Vec<_>>(), "exactly the window's steps");
    let calls = events.iter().filter(|e| e["ph"] == "X" && e["cat"] != "step").count();
    assert!(calls > 0, "the window's calls are in the export");
}
