//! The load watch: a traced process that opens a CUDA library from any
//! path is held at the open until the probes are attached, so even a
//! short-lived worker is traced from its first call; a library that cannot
//! be attached is stated; a held process is never left stopped.

use std::{path::Path, time::Duration};

use cuda_tracer_tests::*;
use serde_json::Value;

/// `multiprocessing` spawn workers, one per library path given, each
/// `ctypes.CDLL`ing it by absolute path and calling cudaMalloc/cudaFree;
/// each call goes to the truth file as the tracer should write it.
const SPAWN_WORKERS_MAIN: &str = r#"
import multiprocessing as mp, sys

if __name__ == "__main__":
    mp.set_start_method("spawn")
    truth = sys.argv[1]
    workers = [mp.Process(target=calls, args=(lib, truth, 3, 4096)) for lib in sys.argv[2:]]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
        assert w.exitcode == 0, w.exitcode
"#;

fn record_python(out: &Path, script: &Path, args: &[&str]) -> std::process::Output {
    let output = tracer_cmd()
        .args(["record", "--scan-interval-ms", "60000", "-o"])
        .arg(out)
        .arg("--")
        .arg("python3")
        .arg(script)
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    output
}

fn missed(trace: &Trace) -> &Vec<Value> {
    trace.metadata["missed_libraries"].as_array().expect("missed_libraries")
}

#[test]
fn spawned_workers_loading_real_runtimes_12_and_13_by_absolute_path_are_traced_call_for_call() {
    let (tmp, out, truth_dir) = scratch();
    std::fs::create_dir_all(&truth_dir).unwrap();
    let lib12 = private_copy(&tmp.path().join("wheel12/lib"), &nvidia_cudart());
    let lib13 = private_copy(&tmp.path().join("wheel13/nvidia/cu13/lib"), &nvidia_cudart13());
    let script = tmp.path().join("workers.py");
    std::fs::write(&script, format!("{PY_RECORDED_CALLS}{SPAWN_WORKERS_MAIN}")).unwrap();
    let truth_prefix = truth_dir.join("truth").display().to_string();
    let output = record_python(&out, &script, &[&truth_prefix, &lib12, &lib13]);

    let trace = load_trace(&out);
    let truth = load_truth(&truth_dir);
    assert_eq!(truth.len(), 12, "two workers, six calls each");
    assert!(truth.iter().all(|l| l["ret"] == 35), "no driver: every call returns 35: {truth:?}");
    assert_matches_truth(&trace.lines, &truth, false);
    for l in &trace.lines {
        assert_eq!(l["error"], "cudaErrorInsufficientDriver", "{l}");
    }
    assert_eq!(missed(&trace), &Vec::<Value>::new(), "nothing missed");
    assert_eq!(trace.metadata["late_libraries"], serde_json::json!([]));
    let holds = trace.metadata["library_holds"].as_array().unwrap();
    for lib in [&lib12, &lib13] {
        let hold = holds.iter().find(|h| h["path"] == lib.as_str()).unwrap_or_else(|| panic!("{lib}: {holds:?}"));
        assert_eq!(hold["outcome"], "attached", "{hold}");
        assert!(hold["held_ms"].as_f64().unwrap() > 0.0, "{hold}");
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("dropped: 0 ") && !stderr.contains("warning:"), "{stderr}");
}

#[test]
fn a_library_that_cannot_be_attached_is_stated_and_the_rest_is_traced() {
    let (tmp, out, _) = scratch();
    let bad_dir = tmp.path().join("bad");
    std::fs::create_dir_all(&bad_dir).unwrap();
    let bad = bad_dir.join("libcudart.so.12");
    std::fs::write(&bad, b"not an ELF file\n").unwrap();
    let good = private_copy(&tmp.path().join("good"), &nvidia_cudart());
    let script = tmp.path().join("bad.py");
    std::fs::write(
        &script,
        "import ctypes, sys\ntry:\n    ctypes.CDLL(sys.argv[1])\nexcept OSError:\n    pass\n\
         cu = ctypes.CDLL(sys.argv[2])\np = ctypes.c_void_p()\nassert cu.cudaMalloc(ctypes.byref(p), 64) == 35\n",
    )
    .unwrap();
    let output = record_python(&out, &script, &[&bad.display().to_string(), &good]);

    let trace = load_trace(&out);
    let funcs: Vec<&str> = trace.lines.iter().map(|l| l["func"].as_str().unwrap()).collect();
    assert_eq!(funcs, ["cudaMalloc"], "the good library is traced");
    let missed = missed(&trace);
    assert_eq!(missed.len(), 1, "{missed:?}");
    assert_eq!(missed[0]["path"], bad.display().to_string());
    assert_eq!(missed[0]["reason"], "attach_failed");
    assert!(missed[0]["error"].as_str().unwrap().contains("not an ELF"), "{}", missed[0]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("dropped: 0 "), "never 'dropped: 0' with a library untraced: {stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("warning:") && last.contains(&bad.display().to_string()), "{stderr}");
}

#[test]
fn a_fixture_runtime_dlopened_from_an_unknown_path_is_traced_with_the_scan_slowed_to_a_minute() {
    // The same client that `a_library_mapped_before_it_is_attached_is_reported_late`
    // loads late: with the load watch it is attached before dlopen returns.
    let (tmp, out, truth_dir) = scratch();
    std::fs::create_dir_all(&truth_dir).unwrap();
    let lib = private_copy(&tmp.path().join("unknown"), &fixtures().join("libcudart.so.12"));
    let status = tracer_cmd()
        .args(["record", "--scan-interval-ms", "60000", "-o"])
        .arg(&out)
        .arg("--")
        .arg(fixtures().join("real-runtime-client"))
        .arg(&lib)
        .arg(truth_dir.join("truth.client.jsonl"))
        .env_remove("LD_LIBRARY_PATH")
        .status()
        .unwrap();
    assert!(status.success());
    let trace = load_trace(&out);
    let truth = load_truth(&truth_dir);
    assert_eq!(truth.len(), 5);
    assert_matches_truth(&trace.lines, &truth, false);
    assert_eq!(missed(&trace), &Vec::<Value>::new());
}

#[test]
fn the_fixture_workload_is_traced_call_for_call_with_the_scan_slowed_to_a_minute() {
    let (_tmp, out, truth) = scratch();
    record(&out, &truth, &["--scan-interval-ms", "60000"], &[&workload(), "--iterations", "20"]);
    let trace = load_trace(&out);
    let truth = load_truth(&truth);
    assert!(!truth.is_empty());
    assert_matches_truth(&trace.lines, &truth, false);
    assert_eq!(missed(&trace), &Vec::<Value>::new());
}

/// The state letter of `/proc/PID/stat` (`T`: stopped).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Writes its pid, waits for the go file, loads the library, writes done.
const HELD_LOADER: &str = "import ctypes, os, sys, time\nopen(sys.argv[1], 'w').write(str(os.getpid()))\n\
     while not os.path.exists(sys.argv[2]):\n    time.sleep(0.01)\n\
     ctypes.CDLL(sys.argv[4])\nopen(sys.argv[3], 'w').write('done')\n";

/// Starts `record -- python3 <loader>`, freezes the tracer with SIGSTOP and
/// lets the loader open the library: the kernel holds it (the tracer's last
/// heartbeat is still fresh) and the frozen tracer cannot release it.
/// Returns the tracer and the file the loader writes once it runs on.
fn hold_a_loader_with_the_tracer_frozen(dir: &Path) -> (KillOnDrop, std::path::PathBuf) {
    let (pid_file, go, done) = (dir.join("pid"), dir.join("go"), dir.join("done"));
    let lib = private_copy(&dir.join("lib"), &nvidia_cudart());
    let script = dir.join("held.py");
    std::fs::write(&script, HELD_LOADER).unwrap();
    let mut cmd = tracer_cmd();
    cmd.args(["record", "--scan-interval-ms", "60000", "-o"])
        .arg(dir.join("trace"))
        .arg("--")
        .arg("python3")
        .arg(&script)
        .args([&pid_file, &go, &done])
        .arg(&lib)
        .env_remove("LD_LIBRARY_PATH");
    let (tracer, _log) = spawn_with_log(cmd);
    wait_for("the traced workload", Duration::from_secs(60), || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| !s.is_empty())
    });
    let pid: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    signal(&tracer.0, libc::SIGSTOP);
    std::fs::write(&go, b"").unwrap();
    wait_for("the loader to be held", Duration::from_secs(10), || proc_state(pid) == Some('T'));
    (tracer, done)
}

#[test]
fn a_process_held_when_the_tracer_is_killed_is_released() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut tracer, done) = hold_a_loader_with_the_tracer_frozen(tmp.path());
    signal(&tracer.0, libc::SIGKILL);
    let _ = tracer.0.wait();
    // The watchdog releases it.
    wait_for("the held process to finish", Duration::from_secs(20), || done.exists());
}

#[test]
fn a_process_held_when_the_tracer_stops_is_released() {
    // Whether the tracer first attaches or first shuts down, the process runs on.
    let tmp = tempfile::tempdir().unwrap();
    let (mut tracer, done) = hold_a_loader_with_the_tracer_frozen(tmp.path());
    signal(&tracer.0, libc::SIGTERM);
    signal(&tracer.0, libc::SIGCONT);
    wait_for("the held process to finish", Duration::from_secs(60), || done.exists());
    assert!(wait_with_deadline(&mut tracer.0, Duration::from_secs(90)).success());
}

#[test]
fn a_real_pytorch_has_its_cuda_13_runtime_attached_before_its_first_call() {
    // torch 2.15 loads nvidia/cu13/lib/libcudart.so.13 through
    // libtorch_cuda.so's RUNPATH: no search path names it.
    let site = torch_site();
    let (_tmp, out, _) = scratch();
    let output = tracer_cmd()
        .args(["record", "--scan-interval-ms", "60000", "-o"])
        .arg(&out)
        .args(["--", "python3", "-c", "import torch; print(torch.cuda.is_available())"])
        .env("PYTHONPATH", &site)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let trace = load_trace(&out);
    let runtime = site.join("nvidia/cu13/lib/libcudart.so.13").display().to_string();
    let holds = trace.metadata["library_holds"].as_array().unwrap();
    let first = holds.iter().find(|h| h["path"] == runtime.as_str()).unwrap_or_else(|| panic!("{runtime}: {holds:?}"));
    // Attached while the loading thread was held at the open: before it ran
    // one instruction of the library.
    assert_eq!(first["outcome"], "attached", "{first}");
    assert_eq!(missed(&trace), &Vec::<Value>::new(), "nothing missed");
    assert_eq!(trace.metadata["late_libraries"], serde_json::json!([]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.lines().any(|l| l.starts_with("warning:")), "{stderr}");
}

#[test]
fn a_runtime_with_a_long_hashed_file_name_is_held_and_traced() {
    // Wheels that vendor the runtime rename it `libcudart-<hash>.so.N`; a
    // 100-byte last component once went unrecognised (only 48 were searched).
    let (tmp, out, _) = scratch();
    let long = format!("libcudart-{}.so.12", "0123456789abcdef".repeat(6));
    let dir = tmp.path().join("vendored");
    std::fs::create_dir_all(&dir).unwrap();
    let lib = dir.join(&long);
    std::fs::copy(nvidia_cudart(), &lib).unwrap();
    let script = tmp.path().join("long.py");
    std::fs::write(&script, PY_ONE_MALLOC).unwrap();
    record_python(&out, &script, &[&lib.display().to_string()]);
    let trace = load_trace(&out);
    let funcs: Vec<&str> = trace.lines.iter().map(|l| l["func"].as_str().unwrap()).collect();
    assert_eq!(funcs, ["cudaMalloc"]);
    let holds = trace.metadata["library_holds"].as_array().unwrap();
    assert!(holds.iter().any(|h| h["path"] == lib.display().to_string() && h["outcome"] == "attached"), "{holds:?}");
    assert_eq!(missed(&trace), &Vec::<Value>::new());
}
