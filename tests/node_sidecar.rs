//! The sidecar on the test node, whatever built its image: the shipped
//! sidecar Deployment with the vLLM stand-in runs, the tracer attaches with
//! the manifest's confinement, and its trace matches the stand-in's ground
//! truth call for call (`k8s_node.rs`, `k8s_node_image.rs`).

use std::time::Duration;

use serde_json::Value;

use crate::{
    assert_matches_truth, load_trace, load_truth, node::KubeNode, node_pods::*, session_dir, wait_attached, wait_for,
};

/// With `cuda-tracer:latest` and the stand-in's image in the node's
/// containerd: applies [`sidecar_manifests`], waits until the tracer
/// attached, checks its confinement, lets the stand-in run, deletes the
/// Deployment (SIGTERM) and compares the finished session with the truth.
pub fn assert_sidecar_traces_the_standin(node: &KubeNode) {
    let (traces, truth) = (shared_dir(node.dir().join("traces")), shared_dir(node.dir().join("truth")));
    let expected_calls = reference_call_count(node.dir());

    let manifests = sidecar_manifests(node, &traces, &truth);
    node.cluster().apply_json(&manifests);
    let started = std::time::Instant::now();
    let pod = running_vllm_pod(node);
    eprintln!("sidecar test: pod running {:.1?} after apply", started.elapsed());
    let libs = ["libcudart.so.12", "libcuda.so.1"];
    if std::panic::catch_unwind(|| wait_attached("the sidecar to attach", &traces, &libs)).is_err() {
        let log =
            node.cluster().kubectl_output(&["logs", "-n", "vllm-tracing", &pod, "-c", "ebpf-tracer", "--tail=40"]);
        panic!("the sidecar did not attach; its log:\n{}\n{}", String::from_utf8_lossy(&log.stdout), node.logs());
    }
    eprintln!("sidecar test: attached {:.1?} after apply", started.elapsed());
    assert_confined_as_shipped(&manifests);

    std::fs::write(truth.join("go"), b"").unwrap();
    wait_for("the stand-in's calls", Duration::from_secs(60), || load_truth(&truth).len() >= expected_calls);
    // SIGTERM to both containers; the tracer finishes its session.
    node.cluster().kubectl(&["delete", "deployment", "-n", "vllm-tracing", "vllm"]);
    wait_for("the pod to be gone", Duration::from_secs(90), || {
        !node.cluster().kubectl_output(&["get", "pod", "-n", "vllm-tracing", &pod]).status.success()
    });
    eprintln!("sidecar test: pod gone {:.1?} after apply", started.elapsed());

    let truth_calls = load_truth(&truth);
    assert_eq!(truth_calls.len(), expected_calls, "the stand-in made its calls once");
    let standin_pids: Vec<u64> = truth_calls.iter().filter_map(|c| c["pid"].as_u64()).collect();
    let trace = load_trace(&session_dir(&traces).expect("a session under the pod's trace volume"));
    // With hostPID the sidecar sees the whole host: keep the stand-in's calls
    // (another vLLM-named process on the machine would be traced too).
    let lines: Vec<Value> =
        trace.lines.into_iter().filter(|l| l["pid"].as_u64().is_some_and(|p| standin_pids.contains(&p))).collect();
    assert_matches_truth(&lines, &truth_calls, false);
}
