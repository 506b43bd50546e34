//! The DaemonSet and the webhook on the test node: the shipped DaemonSet
//! with what the node cannot provide replaced, a stand-in pod of its own,
//! `deploy.sh webhook`/`teardown` against the node, what the webhook must
//! and must not change in a pod, and a stand-in's pids seen from the host.

use std::{
    collections::BTreeMap,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use crate::{kube::output_with_deadline, node::KubeNode, node_config, node_images, node_pods::*, s3};

/// The webhook's defaults (k8s/webhook/mutatingwebhook.yaml, install.sh).
pub const WEBHOOK_TARGET_NAMESPACE: &str = "downstream-llm-d";
pub const WEBHOOK_LABEL_KEY: &str = "llm-d.ai/inferenceServing";
/// Where the injected sidecars upload (SeaweedFS on the node IP).
pub const WEBHOOK_BUCKET: &str = "traces";
pub const WEBHOOK_PREFIX: &str = "node-test/";
/// How long a tracer may take to attach once its target runs (under 1 s here).
const ATTACH_DEADLINE: Duration = Duration::from_secs(90);
/// How long `deploy.sh webhook` may take (its rollout waits up to 180 s).
const DEPLOY_SH_DEADLINE: Duration = Duration::from_secs(300);

/// Polls `cond` every 250 ms; after `deadline` fails naming `what`, with the
/// node's logs.
pub fn wait_on_node(node: &KubeNode, what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < deadline, "timed out ({deadline:?}) waiting for {what}:\n{}", node.logs());
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A node with the tracer and stand-in images imported, and the number of
/// calls the stand-in makes (a reference run on the host).
pub fn node_with_images() -> (KubeNode, usize) {
    let node = KubeNode::start();
    let images = node.dir().join("images");
    node.import_image(&node_images::tracer_image(&images));
    node.import_image(&node_images::standin_image(&images));
    let expected_calls = reference_call_count(node.dir());
    (node, expected_calls)
}

/// The shipped DaemonSet (`kubectl kustomize k8s/daemonset`) with only its
/// `traces` hostPath moved under the node's directory (`traces`, which the
/// test reads and teardown removes) instead of `/var/lib/cuda-tracer/traces`
/// on the host. The tracer container, its ConfigMap (uploads off: no
/// `S3_BUCKET`) and its node selector stay as shipped.
pub fn daemonset_manifests(node: &KubeNode, traces: &Path) -> Value {
    let yaml = node.cluster().kubectl(&["kustomize", &crate::root().join("k8s/daemonset").display().to_string()]);
    let mut items: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("kustomize output is YAML"))
        .collect();
    let daemonset = items.iter_mut().find(|d| d["kind"] == "DaemonSet").expect("the DaemonSet");
    let volumes = daemonset["spec"]["template"]["spec"]["volumes"].as_array_mut().expect("volumes");
    let volume = volumes.iter_mut().find(|v| v["name"] == "traces").expect("the traces volume");
    *volume = json!({"name": "traces", "hostPath": {"path": traces, "type": "Directory"}});
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// A pod of its own running the vLLM stand-in (container `vllm`, held
/// until `/truth/go`, its ground truth in the hostPath `truth`).
pub fn standin_pod(name: &str, namespace: &str, labels: Value, truth: &Path) -> Value {
    let mut args: Vec<&str> = WORKLOAD_ARGS.to_vec();
    args.extend(["--wait-for-file", "/truth/go", "--linger-ms", "600000"]);
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            // Without hostPID the stand-in is PID 1 of its container and
            // ignores SIGTERM: a short grace keeps the node's teardown short.
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "vllm", "image": node_images::STANDIN_IMAGE, "imagePullPolicy": "Never",
                "args": args,
                "env": [{"name": "CUDA_FIXTURE_TRUTH_DIR", "value": "/truth"}],
                "volumeMounts": [{"name": "truth", "mountPath": "/truth"}],
            }],
            "volumes": [{"name": "truth", "hostPath": {"path": truth, "type": "Directory"}}],
        },
    })
}

/// The name of the pod matching `selector` once its `containers`
/// containers all run.
pub fn running_pod(node: &KubeNode, namespace: &str, selector: &str, containers: usize) -> String {
    let mut name = String::new();
    let start = Instant::now();
    loop {
        let text = node.cluster().kubectl(&["get", "pods", "-n", namespace, "-l", selector, "-o", "json"]);
        let pods: Value = serde_json::from_str(&text).expect("kubectl get pods: JSON");
        if let Some(pod) = pods["items"].as_array().and_then(|p| p.first()) {
            name = pod["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let statuses = pod["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
            if statuses.len() == containers && statuses.iter().all(|s| s["state"]["running"].is_object()) {
                return name;
            }
        }
        if start.elapsed() > POD_DEADLINE {
            let described = node.cluster().kubectl_output(&["describe", "pods", "-n", namespace, "-l", selector]);
            panic!(
                "pod {name} ({selector}) not running after {POD_DEADLINE:?}:\n{}\n{}",
                String::from_utf8_lossy(&described.stdout),
                node.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

pub fn pod_uid(node: &KubeNode, namespace: &str, name: &str) -> String {
    let pod = node.cluster().get_json(namespace, &format!("pod/{name}"));
    pod["metadata"]["uid"].as_str().expect("a pod uid").to_string()
}

/// A container's log tail and the node's logs, for failure messages.
pub fn pod_log(node: &KubeNode, namespace: &str, pod: &str, container: &str) -> String {
    let log = node.cluster().kubectl_output(&["logs", "-n", namespace, pod, "-c", container, "--tail=40"]);
    format!("{}{}\n{}", String::from_utf8_lossy(&log.stdout), String::from_utf8_lossy(&log.stderr), node.logs())
}

/// Waits until the tracer in `pod`'s `container` logs that it attached to
/// each of `libs` (metadata.json names a library only from the next file
/// closed on, and a held stand-in writes none); fails with its log.
pub fn wait_logged_attach(node: &KubeNode, namespace: &str, pod: &str, container: &str, libs: &[&str]) {
    let start = Instant::now();
    loop {
        let out = node.cluster().kubectl_output(&["logs", "-n", namespace, pod, "-c", container]);
        let log = String::from_utf8_lossy(&out.stdout);
        // LOG_FORMAT json (the DaemonSet's ConfigMap) or the default text.
        let attached: Vec<&str> =
            log.lines().filter(|l| l.contains(r#""message":"attached""#) || l.contains(": attached path=")).collect();
        if libs.iter().all(|lib| attached.iter().any(|l| l.contains(&format!("/{lib}")))) {
            return;
        }
        assert!(
            start.elapsed() < ATTACH_DEADLINE,
            "the tracer in {namespace}/{pod} did not attach to {libs:?} within {ATTACH_DEADLINE:?}; its log:\n{}",
            pod_log(node, namespace, pod, container)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A process's pid on the host and in its container's pid namespace.
#[derive(Clone, Copy, Debug)]
pub struct NsPid {
    pub host: u64,
    pub ns: u64,
}

/// The stand-in process of the pod with `uid` (its cgroup names the pod),
/// from /proc/PID/status's `NSpid`.
pub fn host_pid_of(uid: &str) -> NsPid {
    let pids: Vec<u64> =
        std::fs::read_dir("/proc").expect("/proc").filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    let found: Vec<NsPid> = pids
        .into_iter()
        .filter(|pid| {
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cgroup.contains(&format!("/pod{uid}/")) && cmdline.starts_with(b"/usr/local/bin/vllm\0")
        })
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let ns = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?.split_whitespace().last()?.parse().ok()?;
            Some(NsPid { host: pid, ns })
        })
        .collect();
    assert_eq!(found.len(), 1, "one stand-in process in pod {uid}: {found:?}");
    found[0]
}

/// The truth of a stand-in in its own pid namespace, with the host's pid
/// and tids the tracer records. Threads are matched in creation order:
/// both namespaces hand out increasing ids, so the k-th thread the truth
/// names (pid namespace) is the k-th the trace names (host).
pub fn truth_in_host_pids(truth: &[Value], pid: NsPid, trace: &[Value]) -> Vec<Value> {
    assert!(truth.iter().all(|c| c["pid"].as_u64() == Some(pid.ns)), "the truth is the stand-in's (ns pid {})", pid.ns);
    let tids = |lines: &[Value]| {
        let mut t: Vec<u64> = lines.iter().filter_map(|l| l["tid"].as_u64()).collect();
        t.sort_unstable();
        t.dedup();
        t
    };
    let (ns_tids, host_tids) = (tids(truth), tids(trace));
    assert_eq!(ns_tids.len(), host_tids.len(), "threads with calls: truth {ns_tids:?}, trace {host_tids:?}");
    assert_eq!((ns_tids[0], host_tids[0]), (pid.ns, pid.host), "the main thread first");
    let to_host: BTreeMap<u64, u64> = ns_tids.into_iter().zip(host_tids).collect();
    truth
        .iter()
        .map(|c| {
            let mut c = c.clone();
            c["pid"] = json!(pid.host);
            c["tid"] = json!(to_host[&c["tid"].as_u64().expect("tid")]);
            c
        })
        .collect()
}

/// The webhook's target namespace as the node needs it: the
/// `kubernetes.io/metadata.name` label that the webhook's namespaceSelector
/// matches (Kubernetes 1.21+ sets it on every namespace; 1.20 does not),
/// the privileged Pod Security level install.sh asks for, and the S3
/// credentials Secret the sidecar reads.
pub fn prepare_target_namespace(node: &KubeNode) {
    let ns = WEBHOOK_TARGET_NAMESPACE;
    node.cluster().apply_json(&json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": {
            "kubernetes.io/metadata.name": ns,
            "pod-security.kubernetes.io/enforce": "privileged",
        }},
    }));
    node.cluster().apply_json(&json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "aws-credentials", "namespace": ns},
        "stringData": {"AWS_ACCESS_KEY_ID": s3::ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": s3::SECRET_KEY},
    }));
    wait_on_node(node, "the target namespace's default ServiceAccount", Duration::from_secs(60), || {
        node.cluster().kubectl_output(&["get", "serviceaccount", "-n", ns, "default"]).status.success()
    });
}

/// `./deploy.sh <verb>` against the node (kubectl on PATH, the node's
/// kubeconfig), with the webhook's settings for it: the imported image,
/// uploads to SeaweedFS on the node IP, certificates under the node's dir.
pub fn deploy_sh(node: &KubeNode, verb: &str) {
    let kubectl_dir = crate::kube::kubectl().parent().expect("kubectl's directory").to_path_buf();
    let path = format!("{}:{}", kubectl_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut cmd = Command::new(crate::root().join("deploy.sh"));
    cmd.arg(verb)
        .current_dir(node.dir())
        .env("PATH", path)
        .env("KUBECONFIG", node.cluster().kubeconfig())
        .env("CERT_DIR", node.dir().join("webhook-certs"))
        .env("TRACER_IMAGE", node_images::TRACER_IMAGE)
        .env("TARGET_NAMESPACE", WEBHOOK_TARGET_NAMESPACE)
        .env("S3_BUCKET", WEBHOOK_BUCKET)
        .env("S3_PREFIX", WEBHOOK_PREFIX)
        .env("S3_ENDPOINT", format!("http://{}:8333", node_config::NODE_IP))
        .env("S3_REGION", "us-east-1")
        .env("S3_PATH_STYLE", "true")
        .env("AWS_CREDENTIALS_SECRET", "aws-credentials");
    let out = output_with_deadline(cmd, DEPLOY_SH_DEADLINE);
    assert!(
        out.status.success(),
        "./deploy.sh {verb} failed ({}):\n{}{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        node.logs()
    );
}

fn container_names(pod: &Value) -> Vec<&str> {
    let containers = pod["spec"]["containers"].as_array().expect("containers");
    containers.iter().filter_map(|c| c["name"].as_str()).collect()
}

/// The pod as stored has the webhook's sidecar, as the webhook builds it
/// from install.sh's settings, and the rest of what it injects.
pub fn assert_injected(pod: &Value) {
    assert_eq!(container_names(pod), ["vllm", "ebpf-tracer"], "the sidecar is injected: {pod}");
    let sidecar = &pod["spec"]["containers"][1];
    assert_eq!(sidecar["image"], node_images::TRACER_IMAGE);
    assert_eq!(sidecar["command"], json!(["cuda-tracer", "run"]));
    let caps = &sidecar["securityContext"]["capabilities"];
    assert_eq!(caps["drop"], json!(["ALL"]), "{sidecar}");
    // The DaemonSet's set (tests/k8s_node_capabilities.rs shows each is
    // needed): the pods it injects into may keep capabilities.
    assert_eq!(caps["add"], json!(["BPF", "PERFMON", "SYS_PTRACE"]), "{sidecar}");
    let env: BTreeMap<&str, &Value> =
        sidecar["env"].as_array().expect("env").iter().map(|e| (e["name"].as_str().unwrap_or_default(), e)).collect();
    assert_eq!(env["S3_BUCKET"]["value"], WEBHOOK_BUCKET);
    assert_eq!(env["S3_ENDPOINT"]["value"], format!("http://{}:8333", node_config::NODE_IP));
    assert_eq!(sidecar["envFrom"][0]["secretRef"]["name"], "aws-credentials");
    assert_eq!(pod["spec"]["hostPID"], true);
    assert_eq!(pod["metadata"]["annotations"]["cuda-tracer/injected"], node_images::TRACER_IMAGE);
    let volumes = pod["spec"]["volumes"].as_array().expect("volumes");
    assert!(volumes.iter().any(|v| v["name"] == "cuda-tracer-traces" && v["emptyDir"].is_object()), "{volumes:?}");
}

/// The pod as stored is the pod as created: no sidecar, no hostPID, no
/// annotation, no traces volume.
pub fn assert_untouched(pod: &Value) {
    assert_eq!(container_names(pod), ["vllm"], "an unlabelled pod gets no sidecar: {pod}");
    assert!(pod["spec"]["hostPID"].is_null() || pod["spec"]["hostPID"] == false, "{pod}");
    assert!(pod["metadata"]["annotations"]["cuda-tracer/injected"].is_null(), "{pod}");
    assert_eq!(pod["spec"]["volumes"].as_array().map(Vec::len), Some(1), "only its own truth volume: {pod}");
}

/// Every line of the uploaded trace files (`…/trace_*.jsonl`), in key order.
pub fn uploaded_trace_lines(objects: &BTreeMap<String, Vec<u8>>) -> Vec<Value> {
    let is_trace = |key: &str| key.rsplit('/').next().is_some_and(|f| f.starts_with("trace_") && f.ends_with(".jsonl"));
    let mut lines = Vec::new();
    for (key, bytes) in objects.iter().filter(|(k, _)| is_trace(k)) {
        let text = std::str::from_utf8(bytes).unwrap_or_else(|e| panic!("{key}: {e}"));
        for l in text.lines() {
            lines.push(serde_json::from_str(l).unwrap_or_else(|e| panic!("{key}: {e}: {l}")));
        }
    }
    assert!(!lines.is_empty(), "no trace file uploaded: {:?}", objects.keys().collect::<Vec<_>>());
    lines
}
