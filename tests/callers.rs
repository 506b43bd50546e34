//! Who launched it: `cuda-callers` launches through the runtime and through
//! `libfakeblas.so`, a "cuBLAS-like" library that calls the driver itself
//! (no libcudart). Each line's `caller` names the file that made the call,
//! and the report's per-library table counts each library's launches as
//! the fixtures' ground truth says.

use std::collections::{BTreeMap, BTreeSet};

use cuda_tracer_tests::*;
use serde_json::Value;

const ITERATIONS: u64 = 20;

/// The launch handles (`f`) of the fixture's kernels by name, per process.
fn handles(truth_dir: &std::path::Path) -> BTreeMap<(u64, String), String> {
    let kernels = load_kernel_truth(truth_dir);
    let named = kernels.iter().filter_map(|k| Some((k["pid"].as_u64()?, k["f"].as_str()?, k["name"].as_str()?)));
    named.map(|(pid, f, name)| ((pid, f.to_string()), name.to_string())).collect()
}

fn is_driver_launch(l: &Value) -> bool {
    l["type"] == "cuda_api" && l["func"].as_str().unwrap().starts_with("cuLaunchKernel")
}

#[test]
fn each_launch_names_its_library_and_the_report_counts_them() {
    let (tmp, out, truth_dir) = scratch();
    let program = fixtures().join("cuda-callers").display().to_string();
    // --linger-ms: callers are named from the live process's maps.
    let iterations = ITERATIONS.to_string();
    record(&out, &truth_dir, &[], &[&program, "--iterations", &iterations, "--linger-ms", "300"]);
    let trace = load_trace(&out);
    let truth = load_truth(&truth_dir);
    assert_matches_truth(&trace.lines, &truth, false);

    // Ground truth: the fake BLAS launches only its own kernels (fakeblas_*),
    // the runtime only the program's stub.
    let names = handles(&truth_dir);
    let kernel_of = |l: &Value| {
        let key = (l["pid"].as_u64().unwrap(), l["args"]["f"].as_str().unwrap().to_string());
        names.get(&key).cloned().unwrap_or_else(|| panic!("no truth name for {l}"))
    };
    let truth_launches: Vec<String> = truth.iter().filter(|l| is_driver_launch(l)).map(kernel_of).collect();
    let blas_truth = truth_launches.iter().filter(|k| k.starts_with("fakeblas_")).count() as u64;
    let runtime_truth = truth_launches.len() as u64 - blas_truth;
    assert_eq!((blas_truth, runtime_truth), (3 * ITERATIONS, 2 * ITERATIONS), "the program's own count");

    // Every line says who called: the BLAS library's driver calls name it,
    // the runtime's nested driver calls name libcudart, the program's
    // runtime calls name the program.
    let mut callers: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for l in &trace.lines {
        let caller = l["caller"].as_str().unwrap_or_else(|| panic!("no caller on {l}")).to_string();
        let origin = if is_driver_launch(l) { kernel_of(l) } else { l["func"].as_str().unwrap().to_string() };
        callers.entry((l["type"].as_str().unwrap().to_string(), origin)).or_default().insert(caller);
    }
    let one = |layer: &str, origin: &str| {
        let set = &callers[&(layer.to_string(), origin.to_string())];
        assert_eq!(set.len(), 1, "{layer} {origin}: {set:?}");
        set.iter().next().unwrap().clone()
    };
    for kernel in ["fakeblas_gemm_kernel", "fakeblas_gemv_kernel"] {
        assert_eq!(one("cuda_api", kernel), "libfakeblas.so", "a direct launch names the library that made it");
    }
    assert_eq!(one("cuda_api", "_Z13caller_kernelv"), "libcudart.so.12", "a runtime launch's driver call");
    assert_eq!(one("cuda_runtime", "cudaLaunchKernel"), "cuda-callers", "the runtime call names the program");
    let both = BTreeSet::from(["libcudart.so.12".to_string(), "libfakeblas.so".to_string()]);
    assert_eq!(callers[&("cuda_api".into(), "cuModuleGetFunction".into())], both, "each looks its kernels up");
    assert_eq!(one("cuda_api", "cuGetProcAddress_v2"), "libcudart.so.12");

    // The report: one row per library, the driver layer's launches split
    // as the truth says.
    let report_dir = tmp.path().join("report");
    let output = tracer_cmd()
        .arg("report")
        .arg(&out)
        .arg("--out")
        .arg(&report_dir)
        .args(["--format", "json"])
        .output()
        .expect("run report");
    assert!(output.status.success(), "report failed: {}", String::from_utf8_lossy(&output.stderr));
    let json: Value = serde_json::from_slice(&output.stdout).expect("--format json prints JSON");
    let rows: Vec<(&str, u64, u64, u64)> = json["callers"]["libraries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let n = |key: &str| r[key].as_u64().unwrap();
            (r["library"].as_str().unwrap(), n("launches"), n("without_runtime"), n("kernels"))
        })
        .collect();
    assert_eq!(
        rows,
        [("libfakeblas.so", blas_truth, blas_truth, 2), ("cuda-callers", runtime_truth, 0, 1)],
        "launches, launched without a runtime call, kernels"
    );
    assert_eq!(json["callers"]["launches"], truth_launches.len() as u64, "the driver layer is the complete set");
    let csv = std::fs::read_to_string(report_dir.join("launches_by_library.csv")).unwrap();
    assert!(csv.starts_with("library,launches,without_runtime,kernels,call_ms\n"), "{csv}");
    let text = std::fs::read_to_string(report_dir.join("report.txt")).unwrap();
    assert!(text.contains("kernel launches, counted in the driver layer (the complete set"), "{text}");
}
