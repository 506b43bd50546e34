//! The fixture workload traced by `cuda-tracer record`: the trace equals the
//! workload's own ground truth, call for call.

use cuda_tracer_tests::*;
use serde_json::Value;

#[test]
fn trace_equals_ground_truth() {
    let (tmp, out, truth) = scratch();

    // A second, untraced copy of the workload maps the same libraries at the
    // same time: the in-kernel pid filter must keep its calls out.
    let other_truth = tmp.path().join("other-truth");
    std::fs::create_dir_all(&other_truth).unwrap();
    let mut other = std::process::Command::new(workload())
        .args(["--iterations", "200", "--step-delay-us", "500"])
        .env("CUDA_FIXTURE_TRUTH_DIR", &other_truth)
        .env("LD_LIBRARY_PATH", fixtures())
        .spawn()
        .unwrap();

    let output = record(&out, &truth, &[], &[&workload()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(other.wait().unwrap().success());

    let trace = load_trace(&out);
    let truth = load_truth(&truth);
    assert!(truth.len() > 1000, "workload made {} calls", truth.len());
    assert_eq!(trace.lines.len(), truth.len(), "every call is traced once");
    assert_matches_truth(&trace.lines, &truth, false);
    for l in &trace.lines {
        assert_line_schema(l);
    }

    let other_pids: Vec<Value> = load_truth(&other_truth).iter().map(|l| l["pid"].clone()).collect();
    assert!(trace.lines.iter().all(|l| !other_pids.contains(&l["pid"])), "an untraced process leaked into the trace");

    // Both processes of the workload: the parent and its forked child.
    let pids: std::collections::BTreeSet<u64> = truth.iter().map(|l| l["pid"].as_u64().unwrap()).collect();
    assert_eq!(pids.len(), 2, "parent and child made calls");
    let m = &trace.metadata;
    assert_eq!(m["status"], "finished");
    assert_eq!(m["mode"], "record");
    assert_eq!(m["dropped_events"], 0);
    assert_eq!(m["drops"]["ringbuf_full"], 0);
    assert_eq!(m["drops"]["return_without_entry"], 0);
    assert_eq!(m["counts"]["calls"], truth.len() as u64);
    assert_eq!(m["counts"]["decode_errors"], 0);
    let meta_pids: Vec<u64> = m["processes"].as_array().unwrap().iter().map(|p| p["pid"].as_u64().unwrap()).collect();
    for pid in &pids {
        assert!(meta_pids.contains(pid), "metadata lists process {pid}");
    }
    let libs: Vec<&str> = m["libraries"].as_array().unwrap().iter().map(|l| l["path"].as_str().unwrap()).collect();
    assert!(libs.iter().any(|p| p.ends_with("libcuda.so.1")), "{libs:?}");
    assert!(libs.iter().any(|p| p.ends_with("libcudart.so.12")), "{libs:?}");
    let files: Vec<&str> = m["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(files.len(), trace.files.len());
    assert!(m["start_boot_ns"].as_u64().unwrap() > 0 && m["start_wall_clock"].is_string());

    // The summary names the functions and says nothing was dropped.
    assert!(stderr.contains("cudaLaunchKernel") && stderr.contains("dropped: 0"), "{stderr}");
}

#[test]
fn function_groups_limit_what_is_traced() {
    let (_tmp, out, truth) = scratch();
    record(&out, &truth, &["--functions", "launch"], &[&workload(), "--no-child", "--iterations", "3"]);
    let trace = load_trace(&out);
    let launches: Vec<Value> =
        load_truth(&truth).into_iter().filter(|l| l["func"].as_str().unwrap().contains("LaunchKernel")).collect();
    assert!(!launches.is_empty());
    assert!(trace.lines.iter().all(|l| l["func"].as_str().unwrap().contains("LaunchKernel")));
    assert_matches_truth(&trace.lines, &launches, false);
    assert_eq!(trace.metadata["function_groups"], serde_json::json!(["launch"]));
}

#[test]
fn libraries_found_through_run_paths_are_attached_before_the_command_runs() {
    // No LD_LIBRARY_PATH: the workload finds libcudart through its RUNPATH
    // ($ORIGIN), and libcudart dlopens the driver next to itself.
    let (_tmp, out, truth) = scratch();
    std::fs::create_dir_all(&truth).unwrap();
    let status = tracer_cmd()
        .args(["record", "-o"])
        .arg(&out)
        .args(["--", &workload(), "--no-child", "--iterations", "3"])
        .env("CUDA_FIXTURE_TRUTH_DIR", &truth)
        .env_remove("LD_LIBRARY_PATH")
        .status()
        .unwrap();
    assert!(status.success());
    let trace = load_trace(&out);
    assert_matches_truth(&trace.lines, &load_truth(&truth), false);
    assert_eq!(trace.metadata["late_libraries"], serde_json::json!([]));
}

#[test]
fn a_library_mapped_before_it_is_attached_is_reported_late() {
    // A runtime at a path no search could predict, loaded by dlopen: the scan
    // attaches it after the fact and the metadata says so.
    let tmp = tempfile::tempdir().unwrap();
    let (out, truth_dir, late_dir) = (tmp.path().join("trace"), tmp.path().join("truth"), tmp.path().join("late"));
    std::fs::create_dir_all(&truth_dir).unwrap();
    std::fs::create_dir_all(&late_dir).unwrap();
    let lib = late_dir.join("libcudart.so.12");
    std::fs::copy(fixtures().join("libcudart.so.12"), &lib).unwrap();
    let go = tmp.path().join("go");
    let mut cmd = tracer_cmd();
    cmd.args(["record", "--scan-interval-ms", "50", "-o"])
        .arg(&out)
        .arg("--")
        .arg(fixtures().join("real-runtime-client"))
        .arg(&lib)
        .arg(truth_dir.join("truth.client.jsonl"))
        .env("REAL_CLIENT_WAIT_FILE", &go)
        // Without the load watch, as on a kernel that cannot hold a loader:
        // with it, this dlopen is attached before it returns (load_watch.rs).
        .env("CUDA_TRACER_LOAD_WATCH", "0")
        .env_remove("LD_LIBRARY_PATH");
    let (mut tracer, log) = spawn_with_log(cmd);
    // The client makes its calls once the tracer reports the late attach.
    wait_for("the late attach", std::time::Duration::from_secs(90), || {
        log.lock().unwrap().contains("attached a library the process had already mapped")
    });
    std::fs::write(&go, b"").unwrap();
    assert!(wait_with_deadline(&mut tracer.0, std::time::Duration::from_secs(60)).success());
    let trace = load_trace(&out);
    let truth = load_truth(&truth_dir);
    assert!(truth.iter().all(|l| l["ret"] == 35), "no driver next to the copied runtime");
    assert_matches_truth(&trace.lines, &truth, false);
    let late = trace.metadata["late_libraries"].as_array().unwrap();
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!(late[0]["path"], lib.display().to_string());
}

#[test]
fn a_tiny_ring_buffer_loses_calls_but_counts_every_one() {
    let (_tmp, out, truth) = scratch();
    // One page of ring for four busy threads: it overflows.
    record(&out, &truth, &["--ringbuf-bytes", "4096"], &[&workload(), "--no-child", "--iterations", "200"]);
    let trace = load_trace(&out);
    let made = load_truth(&truth).len() as u64;
    let m = &trace.metadata;
    let lost = m["drops"]["ringbuf_full"].as_u64().unwrap();
    assert!(lost > 0, "the ring overflowed");
    assert_eq!(trace.lines.len() as u64 + lost, made, "written + counted as lost = calls made");
    let by_function: u64 = m["dropped_by_function"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(by_function, lost, "per-function counts add up");
    assert_eq!(m["dropped_events"].as_u64().unwrap(), lost);
}
