//! NVIDIA's real libcudart.so.12 (PyPI wheel) on a machine without a GPU:
//! calls fail with 35 (cudaErrorInsufficientDriver) and the trace shows them
//! with that return value and their arguments.

use cuda_tracer_tests::*;

#[test]
fn real_runtime_calls_are_traced_with_their_error() {
    let (_tmp, out, truth_dir) = scratch();
    let lib = nvidia_cudart();
    std::fs::create_dir_all(&truth_dir).unwrap();
    let truth_file = truth_dir.join("truth.jsonl");
    let client = fixtures().join("real-runtime-client");
    let lib_arg = lib.display().to_string();
    // No LD_LIBRARY_PATH: the runtime must find no driver at all (with the
    // fixture dir on the path it would load the fake libcuda.so.1).
    let output = tracer_cmd()
        .args(["record", "-o"])
        .arg(&out)
        .args(["--lib", &lib_arg, "--"])
        .arg(&client)
        .arg(&lib)
        .arg(&truth_file)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let truth = load_truth(&truth_dir);
    assert_eq!(truth.len(), 5);
    assert!(truth.iter().all(|l| l["ret"] == 35), "without a driver every call returns 35: {truth:?}");
    let trace = load_trace(&out);
    assert_matches_truth(&trace.lines, &truth, false);
    for l in &trace.lines {
        assert_eq!(l["error"], "cudaErrorInsufficientDriver", "{l}");
    }
    let libs = trace.metadata["libraries"].as_array().unwrap();
    let real = libs.iter().find(|l| l["path"] == lib_arg.as_str()).expect("the real library is attached");
    assert_eq!(real["type"], "cuda_runtime");
    // The real library exports every runtime entry point we trace.
    assert!(real["functions"].as_array().unwrap().len() >= 20, "{real}");
}
