//! The other two ways on a real node: the shipped DaemonSet traces the vLLM
//! stand-in running in another pod, and the admission webhook installed by
//! `./deploy.sh webhook` injects the sidecar into a labelled stand-in pod
//! whose trace reaches S3, while an unlabelled pod runs untouched; both
//! traces match the stand-in's ground truth call for call.

use std::time::{Duration, Instant};

use cuda_tracer_tests::{
    assert_matches_truth, load_trace, load_truth, node_config, node_pods::*, node_ways::*, s3::S3Server, session_dir,
};
use serde_json::{json, Value};

const LIBS: [&str; 2] = ["libcudart.so.12", "libcuda.so.1"];

/// The shipped DaemonSet (`kubectl kustomize k8s/daemonset`) on a node
/// labelled as a GPU node, traces to a hostPath the test reads; the
/// stand-in runs in a pod of its own, in its own pid namespace.
#[test]
fn the_shipped_daemonset_traces_the_standin_in_another_pod() {
    let (node, expected_calls) = node_with_images();
    let (traces, truth) = (shared_dir(node.dir().join("traces")), shared_dir(node.dir().join("truth")));

    // What infrastructure/k3s-install.sh (or NVIDIA's feature discovery) does on a GPU node.
    node.cluster().kubectl(&["label", "node", node_config::NODE_NAME, "nvidia.com/gpu.present=true"]);
    let started = Instant::now();
    node.cluster().apply_json(&daemonset_manifests(&node, &traces));
    let tracer_pod = running_pod(&node, "vllm-tracing", "app=cuda-tracer", 1);
    node.cluster().apply_json(&standin_pod("vllm-standin", "default", json!({"app": "vllm-standin"}), &truth));
    let standin = running_pod(&node, "default", "app=vllm-standin", 1);
    let standin_pid = host_pid_of(&pod_uid(&node, "default", &standin));
    wait_logged_attach(&node, "vllm-tracing", &tracer_pod, "ebpf-tracer", &LIBS);
    eprintln!("DaemonSet test: attached {:.1?} after apply", started.elapsed());

    std::fs::write(truth.join("go"), b"").unwrap();
    wait_on_node(&node, "the stand-in's calls", Duration::from_secs(60), || load_truth(&truth).len() >= expected_calls);
    // SIGTERM: the tracer finishes its session.
    node.cluster().kubectl(&["delete", "daemonset", "-n", "vllm-tracing", "cuda-tracer"]);
    wait_on_node(&node, "the DaemonSet's pod to be gone", Duration::from_secs(90), || {
        !node.cluster().kubectl_output(&["get", "pod", "-n", "vllm-tracing", &tracer_pod]).status.success()
    });
    eprintln!("DaemonSet test: its pod gone {:.1?} after apply", started.elapsed());

    let truth_calls = load_truth(&truth);
    assert_eq!(truth_calls.len(), expected_calls, "the stand-in made its calls once");
    let trace = load_trace(&session_dir(&traces).expect("a session in the DaemonSet's hostPath"));
    let lines: Vec<Value> = trace.lines.into_iter().filter(|l| l["pid"].as_u64() == Some(standin_pid.host)).collect();
    let truth_on_host = truth_in_host_pids(&truth_calls, standin_pid, &lines);
    assert_matches_truth(&lines, &truth_on_host, false);
}

/// `./deploy.sh webhook` on the node, then a labelled and an unlabelled
/// stand-in pod created together: only the labelled one gets the sidecar,
/// and its trace reaches S3 (SeaweedFS on the node IP); `./deploy.sh
/// teardown` removes the webhook.
#[test]
fn the_webhook_injects_the_sidecar_and_the_pods_trace_reaches_s3() {
    let s3 = S3Server::start_for_pods();
    s3.create_bucket(WEBHOOK_BUCKET);
    let (node, expected_calls) = node_with_images();
    let (truth, plain_truth) = (shared_dir(node.dir().join("truth")), shared_dir(node.dir().join("plain-truth")));
    prepare_target_namespace(&node);
    let started = Instant::now();
    deploy_sh(&node, "webhook");
    eprintln!("webhook test: ./deploy.sh webhook took {:.1?}", started.elapsed());

    let labels = json!({WEBHOOK_LABEL_KEY: "true", "app": "traced"});
    let both = json!({"apiVersion": "v1", "kind": "List", "items": [
        standin_pod("traced", WEBHOOK_TARGET_NAMESPACE, labels, &truth),
        standin_pod("plain", WEBHOOK_TARGET_NAMESPACE, json!({"app": "plain"}), &plain_truth),
    ]});
    let created = node.cluster().create_json(&both, &[]);
    assert!(created.status.success(), "create the two pods: {}", String::from_utf8_lossy(&created.stderr));
    let stored = |name: &str| node.cluster().get_json(WEBHOOK_TARGET_NAMESPACE, &format!("pod/{name}"));
    assert_injected(&stored("traced"));
    assert_untouched(&stored("plain"));
    running_pod(&node, WEBHOOK_TARGET_NAMESPACE, "app=traced", 2);
    running_pod(&node, WEBHOOK_TARGET_NAMESPACE, "app=plain", 1);
    wait_logged_attach(&node, WEBHOOK_TARGET_NAMESPACE, "traced", "ebpf-tracer", &LIBS);
    eprintln!("webhook test: the sidecar attached {:.1?} after install", started.elapsed());
    std::fs::write(truth.join("go"), b"").unwrap();
    std::fs::write(plain_truth.join("go"), b"").unwrap();
    wait_on_node(&node, "both stand-ins' calls", Duration::from_secs(60), || {
        load_truth(&truth).len() >= expected_calls && load_truth(&plain_truth).len() >= expected_calls
    });
    // SIGTERM to the pod's containers: the sidecar's last upload round, with
    // Kubernetes' default 30 s to finish it.
    node.cluster().kubectl(&[
        "delete",
        "pod",
        "-n",
        WEBHOOK_TARGET_NAMESPACE,
        "traced",
        "--wait=false",
        "--grace-period=30",
    ]);
    wait_on_node(&node, "the traced pod to be gone", Duration::from_secs(90), || {
        !node.cluster().kubectl_output(&["get", "pod", "-n", WEBHOOK_TARGET_NAMESPACE, "traced"]).status.success()
    });
    eprintln!("webhook test: the traced pod gone {:.1?} after install", started.elapsed());

    let truth_calls = load_truth(&truth);
    assert_eq!(truth_calls.len(), expected_calls, "the traced stand-in made its calls once");
    let objects = s3.objects(WEBHOOK_BUCKET, "");
    let keys: Vec<&String> = objects.keys().collect();
    let ours = format!("{WEBHOOK_PREFIX}traced/");
    assert!(keys.iter().all(|k| k.starts_with(&ours)), "only the traced pod uploads (no sidecar in `plain`): {keys:?}");
    assert!(keys.iter().any(|k| k.ends_with("/metadata.json")), "the session's metadata.json is uploaded: {keys:?}");
    // With hostPID the sidecar sees every vLLM-named process on the node,
    // the unlabelled pod's too (docs/WEBHOOK.md, "Known limits"): keep the
    // traced stand-in's calls (hostPID: its truth has host pids).
    let standin_pids: Vec<u64> = truth_calls.iter().filter_map(|c| c["pid"].as_u64()).collect();
    let lines: Vec<Value> = uploaded_trace_lines(&objects)
        .into_iter()
        .filter(|l| l["pid"].as_u64().is_some_and(|p| standin_pids.contains(&p)))
        .collect();
    assert_matches_truth(&lines, &truth_calls, false);
    assert_eq!(pod_phase(&node, WEBHOOK_TARGET_NAMESPACE, "plain"), "Running", "the unlabelled pod runs on");

    let teardown = Instant::now();
    deploy_sh(&node, "teardown");
    eprintln!("webhook test: ./deploy.sh teardown took {:.1?}", teardown.elapsed());
    let gone = node.cluster().kubectl_output(&["get", "mutatingwebhookconfiguration", "cuda-tracer-webhook"]);
    assert!(!gone.status.success(), "teardown removes the MutatingWebhookConfiguration");
    let ns = node.cluster().kubectl_output(&["get", "namespace", "cuda-tracer-system"]);
    assert!(!ns.status.success(), "teardown removes the webhook's namespace");
    assert!(!node.dir().join("webhook-certs/ca.key").exists(), "teardown removes the certificates");
}
