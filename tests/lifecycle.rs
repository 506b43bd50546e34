//! File rotation, SIGTERM in the middle of a run, and the daemon (`run`)
//! attaching to a process that is already running.

use std::{process::Stdio, time::Duration};

use cuda_tracer_tests::*;

#[test]
fn files_rotate_and_every_line_survives() {
    let (_tmp, out, truth) = scratch();
    // About 2.5 s of steps with a 1 s rotation interval.
    record(
        &out,
        &truth,
        &["--rotate-secs", "1"],
        &[&workload(), "--threads", "2", "--iterations", "250", "--step-delay-us", "10000"],
    );
    let trace = load_trace(&out);
    assert!(trace.files.len() >= 2, "expected rotation, got {:?}", trace.files);
    for (i, f) in trace.files.iter().enumerate() {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(&format!("trace_{:05}_", i + 1)), "{name}");
    }
    assert_matches_truth(&trace.lines, &load_truth(&truth), false);
}

#[test]
fn sigterm_drains_and_loses_nothing_captured() {
    let (_tmp, out, truth) = scratch();
    std::fs::create_dir_all(&truth).unwrap();
    let mut tracer = tracer_cmd()
        .args(["record", "-o"])
        .arg(&out)
        .args(["--", &workload(), "--no-child", "--threads", "2", "--iterations", "2000", "--step-delay-us", "2000"])
        .env("CUDA_FIXTURE_TRUTH_DIR", &truth)
        .env("LD_LIBRARY_PATH", fixtures())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stop once the first calls have been made.
    wait_for("the workload's first calls", Duration::from_secs(90), || {
        std::fs::read_dir(&truth).unwrap().filter_map(Result::ok).any(|e| e.metadata().unwrap().len() > 10_000)
    });
    signal(&tracer, libc::SIGTERM);
    let status = wait_with_deadline(&mut tracer, Duration::from_secs(90));
    assert!(status.success(), "tracer exit after SIGTERM: {status}");

    let trace = load_trace(&out);
    assert_eq!(trace.metadata["status"], "finished");
    assert_eq!(trace.metadata["counts"]["calls"], trace.lines.len() as u64, "metadata counts what was written");
    assert_eq!(trace.metadata["dropped_events"], 0);
    assert!(!trace.lines.is_empty());
    // The workload runs on; compare what was traced with its truth so far.
    let pid = trace.lines[0]["pid"].as_u64().unwrap() as i32;
    wait_for("the workload to finish", Duration::from_secs(60), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    let truth = load_truth(&truth);
    assert!(trace.lines.len() < truth.len(), "tracing stopped before the workload did");
    assert_matches_truth(&trace.lines, &truth, true);
}

#[test]
fn daemon_attaches_to_a_running_process_and_its_child() {
    let tmp = tempfile::tempdir().unwrap();
    let traces = tmp.path().join("traces");
    let (mut workload, truth, go) = held_workload(tmp.path(), &["--iterations", "10"]);
    let pid = workload.0.id().to_string();
    // No --lib: libcuda.so.1 is dlopened only after the delay; the daemon
    // must find it on the process's own LD_LIBRARY_PATH and attach it first.
    let mut daemon = KillOnDrop(
        tracer_cmd()
            .args([
                "run",
                "--no-upload",
                "--pid",
                &pid,
                "--target-process",
                "^no-such-process-name$",
                "--scan-interval-ms",
                "100",
            ])
            .arg("--trace-dir")
            .arg(&traces)
            .spawn()
            .unwrap(),
    );
    // The daemon is ready once it has attached libcudart (mapped at start).
    wait_attached("the daemon to attach", &traces, &["libcudart.so.12", "libcuda.so.1"]);
    std::fs::write(&go, b"").unwrap();
    assert!(wait_with_deadline(&mut workload.0, Duration::from_secs(60)).success());
    signal(&daemon.0, libc::SIGTERM);
    assert!(wait_with_deadline(&mut daemon.0, Duration::from_secs(90)).success());

    let trace = load_trace(&session_dir(&traces).unwrap());
    let truth = load_truth(&truth);
    assert_eq!(trace.metadata["mode"], "daemon");
    assert_matches_truth(&trace.lines, &truth, false);
    let sources: Vec<&str> =
        trace.metadata["processes"].as_array().unwrap().iter().map(|p| p["source"].as_str().unwrap()).collect();
    assert!(sources.contains(&"pid") && sources.contains(&"fork"), "{sources:?}");
}

#[test]
fn daemon_picks_up_each_restart_of_a_matching_process() {
    let tmp = tempfile::tempdir().unwrap();
    let traces = tmp.path().join("traces");
    // The pattern matches the go-files in every instance's command line.
    let marker = tmp.path().join("go-restart");
    let pattern = regex_escape(&marker.display().to_string());
    let mut cmd = tracer_cmd();
    cmd.args(["run", "--no-upload", "--target-process", &pattern, "--scan-interval-ms", "100", "--trace-dir"])
        .arg(&traces)
        .env("RUST_LOG", "info");
    let (mut daemon, log) = spawn_with_log(cmd);
    let truth = tmp.path().join("truth");
    std::fs::create_dir_all(&truth).unwrap();
    let mut pids = Vec::new();
    for i in 0..2 {
        let go = tmp.path().join(format!("go-restart-{i}"));
        let mut instance = std::process::Command::new(workload())
            .args(["--no-child", "--iterations", "2", "--wait-for-file"])
            .arg(&go)
            .env("CUDA_FIXTURE_TRUTH_DIR", &truth)
            .env("LD_LIBRARY_PATH", fixtures())
            .spawn()
            .unwrap();
        let pid = instance.id();
        pids.push(pid);
        // Traced, and (first instance) its libraries attached.
        wait_for("the daemon to trace the new instance", Duration::from_secs(90), || {
            let log = log.lock().unwrap();
            log.contains(&format!("pid={pid} ")) && log.matches("attached").count() >= 2
        });
        std::fs::write(&go, b"").unwrap();
        assert!(wait_with_deadline(&mut instance, Duration::from_secs(60)).success());
    }
    signal(&daemon.0, libc::SIGTERM);
    assert!(wait_with_deadline(&mut daemon.0, Duration::from_secs(90)).success());

    let trace = load_trace(&session_dir(&traces).unwrap());
    assert_matches_truth(&trace.lines, &load_truth(&truth), false);
    let procs = trace.metadata["processes"].as_array().unwrap();
    for pid in pids {
        assert!(procs.iter().any(|p| p["pid"] == pid && p["source"] == "pattern"), "{pid} in {procs:?}");
    }
}

#[test]
fn a_failed_reader_ends_the_daemon_with_metadata_written() {
    // The debug build's fault injection (daemon::supervise): the reader task
    // panics shortly after start. A release build has no such switch.
    let (_tmp, out, _truth) = scratch();
    let output = tracer_cmd()
        .args(["record", "-o"])
        .arg(&out)
        .args(["--", "sleep", "20"])
        .env("CUDA_TRACER_TEST_FAIL_TASK", "reader")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("background task failed; the daemon stops") && stderr.contains("task=\"reader\""),
        "{stderr}"
    );
    assert!(stderr.contains("error: the reader task failed: panicked: failure injected"), "{stderr}");
    let metadata: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(metadata["status"], "failed");
    assert!(metadata["end_wall_clock"].is_string());
}
