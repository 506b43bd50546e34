//! `--functions exported`: every exported function of the CUDA libraries is
//! traced, those without a table row name-only (name, type, duration,
//! return code), attached with uprobe_multi links where the kernel has
//! them and with one perf-event uprobe per function where it has not (or
//! when forced); `report` and `export chrome` read the name-only lines.

use cuda_tracer_tests::*;
use serde_json::Value;

/// The workload with every exported function probed; `extra` flags added.
fn record_exported(extra: &[&str]) -> (tempfile::TempDir, Trace, Vec<Value>, Vec<Value>) {
    let (tmp, out, truth) = scratch();
    let mut flags = vec!["--functions", "exported"];
    flags.extend_from_slice(extra);
    record(&out, &truth, &flags, &[&workload(), "--no-child", "--iterations", "20"]);
    let trace = load_trace(&out);
    (tmp, trace, load_truth(&truth), load_kernel_truth(&truth))
}

/// Lines of functions the table decodes, and the name-only ones.
fn split(trace: &Trace) -> (Vec<Value>, Vec<Value>) {
    trace.lines.iter().cloned().partition(|l| !l["func"].as_str().unwrap().starts_with("__cuda"))
}

fn check_exported_trace(trace: &Trace, truth: &[Value], kernels: &[Value], mode: &str) {
    let (decoded, name_only) = split(trace);
    // Every call with a table row is traced as without `exported`.
    assert_eq!(decoded.len(), truth.len(), "every call is traced once");
    assert_matches_truth(&decoded, truth, false);
    // __cudaRegisterFunction has no row: one name-only line per registration.
    let registered: Vec<&Value> = name_only.iter().filter(|l| l["func"] == "__cudaRegisterFunction").collect();
    let registrations = kernels.iter().filter(|k| k["stub"].is_string()).count();
    assert!(registrations > 0, "the workload registers kernels: {kernels:?}");
    assert_eq!(registered.len(), registrations, "{name_only:?}");
    for l in &name_only {
        assert_line_schema(l);
        assert_eq!(l["type"], "cuda_runtime", "{l}");
        assert_eq!(l["args"], serde_json::json!({}), "name-only: {l}");
        assert!(l["ret"].is_i64() && l["dur_us"].is_f64(), "{l}");
    }
    let m = &trace.metadata;
    assert_eq!(m["dropped_events"], 0);
    assert!(m["function_groups"].as_array().unwrap().iter().any(|g| g == "exported"), "{m}");
    let libs = m["libraries"].as_array().unwrap();
    let rt = libs.iter().find(|l| l["path"].as_str().unwrap().ends_with("libcudart.so.12")).unwrap();
    assert_eq!(rt["attach"], mode, "{rt}");
    assert!(rt["name_only"].as_u64().unwrap() >= 3, "{rt}");
    assert!(rt["functions"].as_array().unwrap().iter().any(|f| f == "__cudaRegisterFunction"), "{rt}");
    for lib in libs {
        assert_eq!(lib["attach"], mode, "{lib}");
    }
}

#[test]
fn every_exported_function_is_traced_with_uprobe_multi_links() {
    let (tmp, trace, truth, kernels) = record_exported(&[]);
    // This kernel (>= 6.6) has uprobe_multi links.
    check_exported_trace(&trace, &truth, &kernels, "uprobe_multi");

    // The readers take the name-only lines.
    let session = tmp.path().join("trace");
    let out = tracer_cmd()
        .arg("report")
        .arg(&session)
        .arg("--out")
        .arg(tmp.path().join("report"))
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["inputs"]["skipped_lines"], 0);
    let rows = json["functions"]["functions"].as_array().unwrap();
    let row = rows.iter().find(|r| r["func"] == "__cudaRegisterFunction").unwrap_or_else(|| panic!("{rows:?}"));
    let registrations = kernels.iter().filter(|k| k["stub"].is_string()).count() as u64;
    assert_eq!(
        (&row["type"], &row["group"], row["calls"].as_u64()),
        (&Value::from("cuda_runtime"), &Value::from("exported"), Some(registrations)),
        "{row}"
    );

    let chrome = tmp.path().join("trace.json");
    let out = tracer_cmd().args(["export", "chrome"]).arg(&session).arg("-o").arg(&chrome).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let exported: Value = serde_json::from_slice(&std::fs::read(&chrome).unwrap()).unwrap();
    let events = exported["traceEvents"].as_array().unwrap();
    assert!(events.iter().any(|e| e["name"] == "__cudaRegisterFunction"), "name-only calls are exported");
}

#[test]
fn forced_per_probe_uprobes_still_trace_everything() {
    let (_tmp, trace, truth, kernels) = record_exported(&["--per-probe-uprobes"]);
    check_exported_trace(&trace, &truth, &kernels, "perf_event");
}

#[test]
fn default_selection_attaches_with_uprobe_multi_and_traces_no_name_only_function() {
    let (_tmp, out, truth) = scratch();
    record(&out, &truth, &[], &[&workload(), "--no-child", "--iterations", "5"]);
    let trace = load_trace(&out);
    assert_matches_truth(&trace.lines, &load_truth(&truth), false);
    assert!(trace.lines.iter().all(|l| !l["func"].as_str().unwrap().starts_with("__cuda")));
    for lib in trace.metadata["libraries"].as_array().unwrap() {
        assert_eq!((&lib["attach"], &lib["name_only"]), (&Value::from("uprobe_multi"), &Value::from(0)), "{lib}");
    }
}

/// NVIDIA's real libcudart 12 through ctypes, without a GPU: functions
/// without a table row are in the trace with the error they returned.
#[test]
fn real_runtime_name_only_calls_carry_their_error() {
    let (_tmp, out, _truth) = scratch();
    let lib = nvidia_cudart().display().to_string();
    let script = "import ctypes, sys\n\
        rt = ctypes.CDLL(sys.argv[1])\n\
        n = ctypes.c_int(0)\n\
        print(rt.cudaGetDeviceCount(ctypes.byref(n)), rt.cudaDriverGetVersion(ctypes.byref(n)))\n";
    let output = tracer_cmd()
        .args(["record", "-o"])
        .arg(&out)
        .args(["--functions", "exported", "--lib", &lib, "--", "python3", "-c", script, &lib])
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed = String::from_utf8_lossy(&output.stdout);
    let trace = load_trace(&out);
    let line = |name: &str| {
        trace.lines.iter().find(|l| l["func"] == name).unwrap_or_else(|| panic!("{name} traced: {:?}", trace.lines))
    };
    let count = line("cudaGetDeviceCount");
    // Without a driver the device count fails (35); the script printed it.
    assert_eq!(count["ret"], 35, "{count}");
    assert_eq!(count["error"], "cudaErrorInsufficientDriver", "{count}");
    assert!(printed.starts_with("35 "), "{printed}");
    let version = line("cudaDriverGetVersion");
    assert_eq!(version["type"], "cuda_runtime");
    assert_eq!(version["ret"].to_string(), printed.split_whitespace().nth(1).unwrap(), "{version} vs {printed}");
    let real = trace.metadata["libraries"].as_array().unwrap().iter().find(|l| l["path"] == lib.as_str()).unwrap();
    assert!(real["name_only"].as_u64().unwrap() > 300, "{real}");
    assert_eq!(real["not_probed"], 0, "{real}");
}
