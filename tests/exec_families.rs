//! Streams and events, cooperative and host-function launches, graph
//! maintenance, module loading, device/context calls and the high-rate
//! group: off by default, each launch named with the module its kernel came
//! from, and NVIDIA's real runtimes 12 and 13 traced with their arguments.

use cuda_tracer_tests::*;
use serde_json::{json, Value};
use tracer_common::funcs::{self, Group};

fn group_of(line: &Value) -> Group {
    funcs::by_name(line["func"].as_str().unwrap()).expect("a traced function").1.group
}

#[test]
fn the_default_leaves_out_high_rate_calls_and_launches_name_their_module() {
    let (_tmp, out, truth_dir) = scratch();
    record(&out, &truth_dir, &[], &[&workload(), "--graphs", "--no-child", "--iterations", "1"]);
    let trace = load_trace(&out);
    let truth = load_truth(&truth_dir);
    // The workload made high-rate calls; the default traced none of them.
    let high_rate = |l: &&Value| group_of(l) == Group::HighRate;
    assert!(truth.iter().filter(high_rate).count() >= 9, "the workload calls the high-rate group");
    assert_eq!(trace.lines.iter().filter(high_rate).count(), 0, "off by default");
    // Everything else the workload made is traced, call for call.
    let rest: Vec<Value> = truth.iter().filter(|l| group_of(l) != Group::HighRate).cloned().collect();
    assert_matches_truth(&trace.lines, &rest, false);

    let launch = |func: &str, kernel: &str| {
        trace
            .lines
            .iter()
            .find(|l| l["func"] == func && l["args"]["kernel"] == kernel)
            .unwrap_or_else(|| panic!("no {func} of {kernel}"))
            .clone()
    };
    // From a file: its name; from a fatbin image: its address and the size its header says.
    assert_eq!(launch("cuLaunchKernel", "families_file()")["args"]["module"], "families.cubin");
    let data = launch("cuLaunchCooperativeKernel", "families_data()");
    let load = trace.lines.iter().find(|l| l["func"] == "cuModuleLoadData").unwrap();
    assert_eq!(load["args"]["image_bytes"], 4096, "{load}");
    let image = load["args"]["image"].as_str().unwrap();
    assert_eq!(data["args"]["module"], format!("data@{image} (4096 bytes)"));
    assert_eq!(data["args"]["grid"], json!([2, 2, 1]));
    // From a library, through a kernel handle.
    assert_eq!(launch("cuLaunchCooperativeKernel_ptsz", "families_lib()")["args"]["module"], "libfamilies.fatbin");
    // Kernels of modules the trace never saw loaded name none.
    let early = trace.lines.iter().find(|l| l["args"]["kernel"] == "early_kernel()").unwrap();
    assert!(early["args"].get("module").is_none(), "{early}");

    // Both out-pointers of a memory-info call.
    let info = trace.lines.iter().find(|l| l["func"] == "cudaMemGetInfo" && l["ret"] == 0).unwrap();
    assert_eq!(info["args"], json!({"free": 79u64 << 30, "total": 80u64 << 30}));
}

/// Python calling `lib` (NVIDIA's runtime) through ctypes: each call's name
/// and return value, one JSON line each, in `truth`.
const PY_REAL_RUNTIME_CALLS: &str = r#"
import ctypes, json, sys
truth = open(sys.argv[1], "w")
class dim3(ctypes.Structure):
    _fields_ = [("x", ctypes.c_uint), ("y", ctypes.c_uint), ("z", ctypes.c_uint)]
HOST_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
host_fn = HOST_FN(lambda data: None)
for path in sys.argv[2:]:
    rt = ctypes.CDLL(path)
    h, a, b = ctypes.c_void_p(), ctypes.c_size_t(), ctypes.c_size_t()
    n = ctypes.c_int()
    calls = [
        ("cudaStreamCreateWithPriority", lambda: rt.cudaStreamCreateWithPriority(ctypes.byref(h), 1, -3)),
        ("cudaEventCreateWithFlags", lambda: rt.cudaEventCreateWithFlags(ctypes.byref(h), 2)),
        ("cudaStreamWaitEvent", lambda: rt.cudaStreamWaitEvent(ctypes.c_void_p(0x1234), ctypes.c_void_p(0x5678), 0)),
        ("cudaLaunchHostFunc", lambda: rt.cudaLaunchHostFunc(ctypes.c_void_p(0x2000), host_fn, ctypes.c_void_p(0x99))),
        ("cudaLaunchCooperativeKernel", lambda: rt.cudaLaunchCooperativeKernel(
            ctypes.c_void_p(0x1000), dim3(2, 1, 1), dim3(64, 1, 1), None, ctypes.c_size_t(256), ctypes.c_void_p(0x2000))),
        ("cudaGraphUpload", lambda: rt.cudaGraphUpload(ctypes.c_void_p(0x3000), ctypes.c_void_p(0x2000))),
        ("cudaSetDevice", lambda: rt.cudaSetDevice(1)),
        ("cudaGetDeviceCount", lambda: rt.cudaGetDeviceCount(ctypes.byref(n))),
        ("cudaMemGetInfo", lambda: rt.cudaMemGetInfo(ctypes.byref(a), ctypes.byref(b))),
        ("cudaGetLastError", lambda: rt.cudaGetLastError()),
    ]
    for name, call in calls:
        truth.write(json.dumps({"func": name, "ret": call()}) + "\n")
"#;

#[test]
fn real_runtimes_12_and_13_trace_the_families_with_their_arguments_and_errors() {
    let (tmp, out, _) = scratch();
    let (lib12, lib13) = (nvidia_cudart().display().to_string(), nvidia_cudart13().display().to_string());
    let script = tmp.path().join("calls.py");
    std::fs::write(&script, PY_REAL_RUNTIME_CALLS).unwrap();
    let truth = tmp.path().join("truth.jsonl");
    let output = tracer_cmd()
        .args(["record", "--functions", "default,highrate", "--lib", &lib12, "--lib", &lib13, "-o"])
        .arg(&out)
        .arg("--")
        .arg("python3")
        .arg(&script)
        .arg(&truth)
        .args([&lib12, &lib13])
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let made: Vec<Value> =
        std::fs::read_to_string(&truth).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(made.len(), 20, "ten calls per library");
    let trace = load_trace(&out);
    let traced: Vec<&Value> = trace.lines.iter().filter(|l| l["type"] == "cuda_runtime").collect();
    let names = |v: &[&Value]| v.iter().map(|l| (l["func"].clone(), l["ret"].clone())).collect::<Vec<_>>();
    assert_eq!(names(&traced), names(&made.iter().collect::<Vec<_>>()), "every call, in order, with its return");
    // Without a driver the runtime fails them all.
    assert!(traced.iter().all(|l| l["ret"] == 35 && l["error"] == "cudaErrorInsufficientDriver"), "{traced:?}");
    let want = [
        json!({"flags": 1, "priority": -3}),
        json!({"flags": 2}),
        json!({"stream": "0x1234", "event": "0x5678", "flags": 0}),
        json!({"stream": "0x2000", "user_data": "0x99"}),
        json!({"func": "0x1000", "grid": [2, 1, 1], "block": [64, 1, 1], "shared_mem": 256, "stream": "0x2000"}),
        json!({"exec": "0x3000", "stream": "0x2000"}),
        json!({"device": 1}),
        json!({}),
        json!({}),
        json!({}),
    ];
    for (i, l) in traced.iter().enumerate() {
        let mut args = l["args"].clone();
        // The host function's address is ctypes' trampoline.
        if let Some(fn_ptr) = args.as_object_mut().unwrap().remove("fn") {
            assert!(fn_ptr.as_str().is_some_and(|p| p.starts_with("0x") && p != "0x0"), "{l}");
        }
        assert_eq!(args, want[i % want.len()], "{l}");
    }
}
