//! The memory families: memset, 2D/3D/peer/batch copies, virtual memory and
//! pinned host memory are traced with their arguments as the fixtures'
//! ground truth records them, and `report` counts their bytes: copies by
//! direction, mapped device memory (in the device timeline and leak list)
//! and pinned host memory apart. NVIDIA's real runtimes 12 and 13, called
//! through ctypes without a GPU, show each call with its error.

use std::{collections::BTreeMap, path::Path};

use cuda_tracer_tests::*;
use serde_json::Value;
use tracer_common::funcs::{self, Role};

fn role(l: &Value) -> Option<Role> {
    funcs::by_name(l["func"].as_str().unwrap()).map(|(_, s)| s.role)
}

/// Per pid, what the truth says of the ranges `open` opens and `close`
/// closes (keyed by the `key` argument; a range's size is its `bytes` when
/// opened): (opened, closed, failed opens, peak, final, never closed).
#[derive(Debug, Default, PartialEq)]
struct Ranges {
    opened: u64,
    closed: u64,
    failed: u64,
    peak: u64,
    last: u64,
    live: BTreeMap<String, u64>,
}

fn truth_ranges(truth: &[Value], open: Role, close: Role, key: &str) -> BTreeMap<u64, Ranges> {
    let mut by_pid: BTreeMap<u64, Ranges> = BTreeMap::new();
    for l in truth {
        let Some(r) = role(l).filter(|r| *r == open || *r == close) else { continue };
        let p = by_pid.entry(l["pid"].as_u64().unwrap()).or_default();
        let ptr = l["args"][key].as_str().map(str::to_string);
        match (r == open, l["ret"] == 0, ptr) {
            (true, false, _) => p.failed += 1,
            (true, true, Some(ptr)) => {
                let bytes = l["args"]["bytes"].as_u64().unwrap();
                p.opened += 1;
                p.live.insert(ptr, bytes);
            }
            (false, true, Some(ptr)) if p.live.remove(&ptr).is_some() => p.closed += 1,
            _ => {}
        }
        p.last = p.live.values().sum();
        p.peak = p.peak.max(p.last);
    }
    by_pid
}

/// The report's rows of one per-process table, as [`Ranges`] (without the live set).
fn report_ranges(rows: &Value) -> BTreeMap<u64, (u64, u64, u64, u64, u64)> {
    let n = |r: &Value, k: &str| r[k].as_u64().unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let v = (n(r, "allocations"), n(r, "frees"), n(r, "failed_allocations"), n(r, "peak_bytes"));
            (n(r, "pid"), (v.0, v.1, v.2, v.3, n(r, "final_bytes")))
        })
        .collect()
}

fn summary(ranges: &BTreeMap<u64, Ranges>) -> BTreeMap<u64, (u64, u64, u64, u64, u64)> {
    ranges.iter().map(|(pid, r)| (*pid, (r.opened, r.closed, r.failed, r.peak, r.last))).collect()
}

/// (pid, pointer, bytes) of a leak list.
fn leaks(rows: &Value, key: &str) -> Vec<(u64, String, u64)> {
    let mut v: Vec<_> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["pid"].as_u64().unwrap(), l[key].as_str().unwrap().to_string(), l["bytes"].as_u64().unwrap()))
        .collect();
    v.sort();
    v
}

fn truth_leaks(ranges: &BTreeMap<u64, Ranges>) -> Vec<(u64, String, u64)> {
    let mut v: Vec<_> = ranges.iter().flat_map(|(pid, r)| r.live.iter().map(|(p, b)| (*pid, p.clone(), *b))).collect();
    v.sort();
    v
}

#[test]
fn memory_families_match_the_truth_and_the_report_counts_their_bytes() {
    let (tmp, trace, truth_dir) = scratch();
    // `all`: the --graphs step also makes high-rate calls, off by default.
    record(
        &trace,
        &truth_dir,
        &["--functions", "all"],
        &[&workload(), "--graphs", "--no-child", "--threads", "1", "--iterations", "2"],
    );
    let truth = load_truth(&truth_dir);
    let lines = load_trace(&trace).lines;
    assert_matches_truth(&lines, &truth, false);
    for func in ["cuMemcpy2DAsync_v2", "cudaMemcpy3D", "cuMemMap", "cudaHostRegister", "cuMemsetD16Async_ptsz"] {
        assert!(lines.iter().any(|l| l["func"] == func), "{func} traced");
    }

    let out = tmp.path().join("report");
    let output = tracer_cmd().arg("report").arg(&trace).arg("--out").arg(&out).args(["--format", "json"]).output();
    let output = output.expect("run report");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    let memory = &json["memory"];

    // Mapped device memory: cuMemMap until cuMemUnmap, and among the device leaks.
    let mapped = truth_ranges(&truth, Role::Map, Role::Unmap, "dptr");
    assert_eq!(report_ranges(&memory["mapped"]), summary(&mapped), "mapped device memory");
    let (_, m) = mapped.iter().next().unwrap();
    assert_eq!((m.peak, m.last, m.failed), (6 << 20, 2 << 20, 1), "{m:?}");
    let device_leaks = leaks(&memory["leaks"], "dptr");
    for leak in truth_leaks(&mapped) {
        assert!(device_leaks.contains(&leak), "mapping never unmapped {leak:?} in {device_leaks:?}");
    }
    let device = report_ranges(&memory["processes"]);
    assert!(device.values().all(|d| d.3 >= 6 << 20), "mapped bytes count in device memory: {device:?}");

    // Pinned host memory: apart from the device bytes.
    let pinned = truth_ranges(&truth, Role::HostAlloc, Role::HostFree, "ptr");
    assert_eq!(report_ranges(&memory["pinned_host"]), summary(&pinned), "pinned host memory");
    let (_, h) = pinned.iter().next().unwrap();
    assert_eq!((h.last, h.failed), ((1 << 20) + 8192, 1), "{h:?}");
    assert_eq!(leaks(&memory["pinned_host_leaks"], "dptr"), truth_leaks(&pinned), "pinned never freed");
    let csv = std::fs::read_to_string(out.join("pinned_host_timeline.csv")).unwrap();
    assert!(csv.trim_end().ends_with(&format!(",{}", h.last)), "{csv}");
    assert!(out.join("pinned_host_leaks.csv").is_file());

    // Copy volume by layer and direction, the new copies included.
    let mut want: BTreeMap<(String, String), u64> = BTreeMap::new();
    for l in truth.iter().filter(|l| l["ret"] == 0 && role(l) == Some(Role::Copy)) {
        let direction = l["args"]["kind"].as_str().unwrap_or("unknown").to_string();
        *want.entry((l["type"].as_str().unwrap().to_string(), direction)).or_default() +=
            l["args"]["bytes"].as_u64().unwrap_or(0);
    }
    let text = |r: &Value, k: &str| r[k].as_str().unwrap().to_string();
    let got: BTreeMap<(String, String), u64> = memory["copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| ((text(r, "type"), text(r, "direction")), r["bytes"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, want, "copy bytes by layer and direction");

    let report_txt = std::fs::read_to_string(out.join("report.txt")).unwrap();
    assert!(report_txt.contains("== Mapped device memory") && report_txt.contains("== Pinned host memory"));
}

/// Calls the memory families of the real runtime named by argv[1] through
/// ctypes and writes each call to argv[2].<pid>.jsonl as the tracer should
/// write it (no driver: each returns 35, so no out-pointer is written).
const PY_MEMORY_CALLS: &str = r#"
import ctypes, json, os, struct, sys, threading
cu = ctypes.CDLL(sys.argv[1])
tid = threading.get_native_id()
lines = []
def rec(func, ret, args):
    lines.append({"pid": os.getpid(), "tid": tid, "type": "cuda_runtime", "func": func, "ret": ret, "args": args})
p = ctypes.c_void_p()
rec("cudaMallocHost", cu.cudaMallocHost(ctypes.byref(p), ctypes.c_size_t(4096)), {"bytes": 4096})
rec("cudaHostAlloc", cu.cudaHostAlloc(ctypes.byref(p), ctypes.c_size_t(8192), ctypes.c_uint(1)), {"bytes": 8192, "flags": 1})
buf = ctypes.create_string_buffer(65536)
addr = ctypes.addressof(buf)
rec("cudaHostRegister", cu.cudaHostRegister(ctypes.c_void_p(addr), ctypes.c_size_t(65536), ctypes.c_uint(2)),
    {"ptr": hex(addr), "bytes": 65536, "flags": 2})
rec("cudaMemset", cu.cudaMemset(ctypes.c_void_p(0x7000), ctypes.c_int(7), ctypes.c_size_t(256)),
    {"dst": "0x7000", "value": 7, "bytes": 256})
rec("cudaMemsetAsync", cu.cudaMemsetAsync(ctypes.c_void_p(0x7000), ctypes.c_int(1), ctypes.c_size_t(512), ctypes.c_void_p(0x30)),
    {"dst": "0x7000", "value": 1, "bytes": 512, "stream": "0x30"})
rec("cudaMemcpy2D", cu.cudaMemcpy2D(ctypes.c_void_p(0x7000), ctypes.c_size_t(512), ctypes.c_void_p(addr), ctypes.c_size_t(256),
    ctypes.c_size_t(256), ctypes.c_size_t(4), ctypes.c_int(1)),
    {"dst": "0x7000", "dpitch": 512, "src": hex(addr), "spitch": 256, "bytes": 1024, "kind": "HtoD"})
parms = ctypes.create_string_buffer(160)
struct.pack_into("QQQi", parms, 128, 64, 2, 3, 2)
rec("cudaMemcpy3D", cu.cudaMemcpy3D(parms), {"bytes": 384, "kind": "DtoH"})
rec("cudaMemcpyPeer", cu.cudaMemcpyPeer(ctypes.c_void_p(0x7000), ctypes.c_int(1), ctypes.c_void_p(0x8000), ctypes.c_int(0),
    ctypes.c_size_t(4096)), {"dst": "0x7000", "dst_device": 1, "src": "0x8000", "src_device": 0, "bytes": 4096, "kind": "DtoD"})
rec("cudaFreeHost", cu.cudaFreeHost(ctypes.c_void_p(addr)), {"ptr": hex(addr)})
with open("%s.%d.jsonl" % (sys.argv[2], os.getpid()), "w") as f:
    for l in lines:
        f.write(json.dumps(l) + "\n")
"#;

fn real_runtime_memory_calls(lib: &Path) {
    let (tmp, out, truth_dir) = scratch();
    std::fs::create_dir_all(&truth_dir).unwrap();
    let script = tmp.path().join("calls.py");
    std::fs::write(&script, PY_MEMORY_CALLS).unwrap();
    let lib_arg = lib.display().to_string();
    let output = tracer_cmd()
        .args(["record", "-o"])
        .arg(&out)
        .args(["--lib", &lib_arg, "--", "python3"])
        .arg(&script)
        .arg(lib)
        .arg(truth_dir.join("truth"))
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let truth = load_truth(&truth_dir);
    assert_eq!(truth.len(), 9, "{truth:?}");
    assert!(truth.iter().all(|l| l["ret"] == 35), "without a driver every call returns 35: {truth:?}");
    let trace = load_trace(&out);
    assert_matches_truth(&trace.lines, &truth, false);
    assert!(trace.lines.iter().all(|l| l["error"] == "cudaErrorInsufficientDriver"), "{:?}", trace.lines);
}

#[test]
fn real_runtime_12_memory_families_are_traced_with_their_error() {
    real_runtime_memory_calls(&nvidia_cudart());
}

#[test]
fn real_runtime_13_memory_families_are_traced_with_their_error() {
    real_runtime_memory_calls(&nvidia_cudart13());
}
