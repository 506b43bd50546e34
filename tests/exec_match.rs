//! `run --target-process` decides at exec: a job that matches the pattern
//! and is over well within a second is traced from its first call, with the
//! /proc scan slowed to a minute; children a matching process started before
//! the daemon did are traced too.

use std::{path::Path, time::Duration};

use cuda_tracer_tests::*;
use serde_json::Value;

/// A short job: loads the runtime by absolute path, calls cudaMalloc and
/// cudaFree, starts one `multiprocessing` spawn worker that does the same
/// (its command line does not name the pattern), and exits. Each call goes
/// to the truth file as the tracer should write it.
const SHORT_JOB_MAIN: &str = r#"
import multiprocessing as mp, sys

if __name__ == "__main__":
    mp.set_start_method("spawn")
    marker, truth, lib = sys.argv[1:4]
    calls(lib, truth, 2, 512)
    w = mp.Process(target=calls, args=(lib, truth, 2, 512))
    w.start()
    w.join()
    assert w.exitcode == 0, w.exitcode
"#;

/// Starts `run` matching `pattern`, the scan slowed to a minute, and waits
/// until it watches library opens.
fn start_daemon(traces: &Path, pattern: &str) -> (KillOnDrop, std::sync::Arc<std::sync::Mutex<String>>) {
    let mut cmd = tracer_cmd();
    cmd.args(["run", "--no-upload", "--target-process", pattern, "--scan-interval-ms", "60000", "--trace-dir"])
        .arg(traces)
        .env("RUST_LOG", "info");
    let (daemon, log) = spawn_with_log(cmd);
    wait_for("the daemon to watch library opens", Duration::from_secs(90), || {
        log.lock().unwrap().contains("matching_execs=true")
    });
    (daemon, log)
}

fn stop(mut daemon: KillOnDrop, traces: &Path) -> Trace {
    signal(&daemon.0, libc::SIGTERM);
    assert!(wait_with_deadline(&mut daemon.0, Duration::from_secs(90)).success());
    load_trace(&session_dir(traces).expect("a session"))
}

fn sources_of(trace: &Trace) -> Vec<(u64, String)> {
    let procs = trace.metadata["processes"].as_array().expect("processes");
    procs.iter().map(|p| (p["pid"].as_u64().unwrap(), p["source"].as_str().unwrap().to_owned())).collect()
}

#[test]
fn short_jobs_matching_the_pattern_are_traced_from_their_first_call_with_the_scan_slowed_to_a_minute() {
    let tmp = tempfile::tempdir().unwrap();
    let traces = tmp.path().join("traces");
    let marker = tmp.path().join("short-job-marker").display().to_string();
    let (daemon, _log) = start_daemon(&traces, &regex_escape(&marker));
    let truth_dir = tmp.path().join("truth");
    std::fs::create_dir_all(&truth_dir).unwrap();
    let lib = private_copy(&tmp.path().join("wheel/nvidia/cuda_runtime/lib"), &nvidia_cudart());
    let script = tmp.path().join("job.py");
    std::fs::write(&script, format!("{PY_RECORDED_CALLS}{SHORT_JOB_MAIN}")).unwrap();
    let truth_prefix = truth_dir.join("truth").display().to_string();
    for _ in 0..3 {
        let status = std::process::Command::new("python3")
            .arg(&script)
            .args([&marker, &truth_prefix, &lib])
            .env_remove("LD_LIBRARY_PATH")
            .status()
            .unwrap();
        assert!(status.success());
    }
    let trace = stop(daemon, &traces);

    let truth = load_truth(&truth_dir);
    assert_eq!(truth.len(), 3 * 2 * 4, "three jobs, each with one worker, four calls each");
    assert_matches_truth(&trace.lines, &truth, false);
    assert_eq!(trace.metadata["missed_libraries"], serde_json::json!([]), "nothing missed");
    let sources = sources_of(&trace);
    let pids: std::collections::BTreeSet<u64> = truth.iter().map(|l| l["pid"].as_u64().unwrap()).collect();
    for pid in pids {
        let source = sources.iter().find(|(p, _)| *p == pid).map(|(_, s)| s.as_str());
        assert!(matches!(source, Some("pattern" | "fork" | "exec-child")), "{pid}: {sources:?}");
    }
}

/// A parent that matches the pattern and has started, before the daemon, a
/// child whose command line does not; the child loads the runtime once
/// `go` exists.
const PARENT_WITH_CHILD: &str = r#"
import subprocess, sys
marker, go, truth, lib = sys.argv[1:5]
child = subprocess.Popen([sys.executable, "-c", """
import ctypes, json, os, sys, threading, time
go, truth, lib = sys.argv[1:4]
while not os.path.exists(go):
    time.sleep(0.01)
cu = ctypes.CDLL(lib)
p = ctypes.c_void_p()
r = cu.cudaMalloc(ctypes.byref(p), ctypes.c_size_t(4096))
line = {"pid": os.getpid(), "tid": threading.get_native_id(), "type": "cuda_runtime", "func": "cudaMalloc",
        "ret": r, "args": {"bytes": 4096}}
open(truth + "." + str(os.getpid()) + ".jsonl", "w").write(json.dumps(line) + "\\n")
""", go, truth, lib])
sys.exit(child.wait())
"#;

#[test]
fn children_a_matching_process_started_before_the_daemon_are_traced() {
    let tmp = tempfile::tempdir().unwrap();
    let traces = tmp.path().join("traces");
    let marker = tmp.path().join("parent-marker").display().to_string();
    let go = tmp.path().join("go");
    let truth_dir = tmp.path().join("truth");
    std::fs::create_dir_all(&truth_dir).unwrap();
    let lib = private_copy(&tmp.path().join("lib"), &nvidia_cudart());
    let script = tmp.path().join("parent.py");
    std::fs::write(&script, PARENT_WITH_CHILD).unwrap();
    let truth_prefix = truth_dir.join("truth").display().to_string();
    let mut parent = KillOnDrop(
        std::process::Command::new("python3")
            .arg(&script)
            .args([marker.as_str(), &go.display().to_string(), &truth_prefix, &lib])
            .env_remove("LD_LIBRARY_PATH")
            .spawn()
            .unwrap(),
    );
    let parent_pid = parent.0.id();
    wait_for("the child to start", Duration::from_secs(30), || {
        std::fs::read_to_string(format!("/proc/{parent_pid}/task/{parent_pid}/children"))
            .is_ok_and(|c| !c.trim().is_empty())
    });
    let (daemon, log) = start_daemon(&traces, &regex_escape(&marker));
    wait_for("the daemon to trace the parent", Duration::from_secs(60), || {
        log.lock().unwrap().contains(&format!("pid={parent_pid} "))
    });
    std::fs::write(&go, b"").unwrap();
    assert!(wait_with_deadline(&mut parent.0, Duration::from_secs(60)).success());
    let trace = stop(daemon, &traces);

    let truth = load_truth(&truth_dir);
    assert_eq!(truth.len(), 1);
    assert_matches_truth(&trace.lines, &truth, false);
    let child_pid = truth[0]["pid"].as_u64().unwrap();
    let sources = sources_of(&trace);
    assert!(sources.contains(&(parent_pid as u64, "pattern".into())), "{sources:?}");
    assert!(sources.contains(&(child_pid, "child".into())), "{sources:?}");
    assert_eq!(trace.metadata["missed_libraries"], Value::Array(vec![]), "nothing missed");
}
