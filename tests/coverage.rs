//! Complete CUDA coverage: every traced entry point the fixtures export,
//! kernel names on both launch paths, a three-level process tree with an
//! exec, restarted workers, and a stripped runtime library.

use std::collections::{BTreeMap, BTreeSet};

use cuda_tracer_tests::*;
use serde_json::Value;

fn demangle(raw: &str) -> String {
    cpp_demangle::Symbol::new(raw).ok().and_then(|s| s.demangle().ok()).unwrap_or_else(|| raw.to_string())
}

#[test]
fn every_function_process_tree_restarts_and_kernel_names() {
    let (_tmp, out, truth_dir) = scratch();
    // --linger-ms: runtime-path names are read from the live process's maps,
    // like a serving process's; a toy process could exit before that.
    // `all`: the high-rate group is off by default and the workload calls it.
    record(
        &out,
        &truth_dir,
        &["--functions", "all"],
        &[&workload(), "--graphs", "--kernel-libs", "--tree", "--restart", "2", "--linger-ms", "300"],
    );
    let trace = load_trace(&out);
    let truth = load_truth(&truth_dir);
    assert_matches_truth(&trace.lines, &truth, false);
    assert_eq!(trace.metadata["dropped_events"], 0);

    // Every function in the table appears, with its arguments decoded.
    let traced: BTreeSet<&str> = trace.lines.iter().map(|l| l["func"].as_str().unwrap()).collect();
    // NCCL's rows are traced against their own fixture's truth in tests/nccl.rs.
    let missing: Vec<&str> = tracer_common::funcs::FUNCS
        .iter()
        .filter(|f| f.layer != tracer_common::funcs::Layer::Nccl)
        .map(|f| f.name)
        .filter(|n| !traced.contains(n))
        .collect();
    assert!(missing.is_empty(), "never traced: {missing:?}");

    // Processes: parent, its child, tree child A, grandchild B (exec'd), two restarts.
    let pids: BTreeSet<u64> = truth.iter().map(|l| l["pid"].as_u64().unwrap()).collect();
    assert_eq!(pids.len(), 6, "{pids:?}");
    let leaf_exec = trace.lines.iter().filter(|l| l["func"] == "cuInit").count();
    assert!(leaf_exec >= 2, "the exec'd leaf initialised its own runtime");

    // Kernel names. Driver launches: from the handle tables, in every process.
    let kernels = load_kernel_truth(&truth_dir);
    let mut handle_names: BTreeMap<(u64, String), BTreeSet<String>> = BTreeMap::new();
    let mut stub_names: BTreeMap<(u64, String), (String, bool)> = BTreeMap::new();
    for k in &kernels {
        let pid = k["pid"].as_u64().unwrap();
        let name = demangle(k["name"].as_str().unwrap());
        for key in ["f", "kernel"] {
            if let Some(h) = k[key].as_str() {
                handle_names.entry((pid, h.to_string())).or_default().insert(name.clone());
            }
        }
        if let Some(stub) = k["stub"].as_str() {
            stub_names.insert((pid, stub.to_string()), (name, k["stripped"] == true));
        }
    }
    let parent = trace.lines[0]["pid"].as_u64().unwrap();
    let (mut driver_named, mut runtime_named, mut stripped_unnamed) = (0, 0, 0);
    for l in trace.lines.iter().filter(|l| l["func"].as_str().unwrap().contains("LaunchKernel") && l["ret"] == 0) {
        let pid = l["pid"].as_u64().unwrap();
        let kernel = l["args"]["kernel"].as_str();
        if l["type"] == "cuda_api" {
            let handle = l["args"]["f"].as_str().unwrap().to_string();
            let want = handle_names.get(&(pid, handle)).unwrap_or_else(|| panic!("no truth name for {l}"));
            assert!(kernel.is_some_and(|k| want.contains(k)), "driver launch {l}: want one of {want:?}");
            driver_named += 1;
        } else if pid == parent {
            // Runtime launches of the long-lived parent: from the stub's symbol.
            let stub = l["args"]["func"].as_str().unwrap().to_string();
            let Some((name, stripped)) = stub_names.get(&(pid, stub)) else { continue };
            if *stripped {
                assert_eq!(kernel, None, "a stripped library has no symbol to name {l}");
                stripped_unnamed += 1;
            } else {
                assert_eq!(kernel, Some(name.as_str()), "runtime launch {l}");
                runtime_named += 1;
            }
        }
    }
    assert!(
        driver_named > 200 && runtime_named > 200 && stripped_unnamed == 2,
        "{driver_named} {runtime_named} {stripped_unnamed}"
    );
    let mangled = trace.lines.iter().filter_map(|l| l["args"]["kernel"].as_str()).collect::<BTreeSet<_>>();
    assert!(mangled.contains("attention_kernel(float*, float*, int)"), "{mangled:?}");
    assert!(mangled.contains("vllm::rms_norm_kernel(float*, float const*, int)"), "{mangled:?}");

    // Frees carry the size they released; failed calls their error name.
    let frees: Vec<&Value> = trace.lines.iter().filter(|l| l["func"] == "cudaFree" && l["ret"] == 0).collect();
    assert!(frees.iter().all(|l| l["args"]["bytes"].as_u64().is_some_and(|b| b > 0)), "freed sizes");
    let err = trace.lines.iter().find(|l| l["func"] == "cuLaunchKernel" && l["ret"] == 400).unwrap();
    assert_eq!(err["error"], "CUDA_ERROR_INVALID_HANDLE");
}

#[test]
fn a_stripped_runtime_library_is_traced() {
    let (_tmp, out, truth_dir) = scratch();
    std::fs::create_dir_all(&truth_dir).unwrap();
    let stripped = fixtures().join("stripped");
    let status = tracer_cmd()
        .args(["record", "-o"])
        .arg(&out)
        .args(["--", &workload(), "--no-child", "--iterations", "3"])
        .env("CUDA_FIXTURE_TRUTH_DIR", &truth_dir)
        .env("LD_LIBRARY_PATH", &stripped)
        .status()
        .unwrap();
    assert!(status.success());
    let trace = load_trace(&out);
    assert_matches_truth(&trace.lines, &load_truth(&truth_dir), false);
    let libs = trace.metadata["libraries"].as_array().unwrap();
    assert!(
        libs.iter().any(|l| l["path"].as_str().unwrap().contains("stripped") && l["type"] == "cuda_runtime"),
        "{libs:?}"
    );
}
