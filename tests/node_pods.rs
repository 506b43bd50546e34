//! Pods on the test node: the shipped sidecar manifests with what the node
//! cannot provide replaced, waiting for pods, and what the tracer processes
//! in a pod really hold (capabilities, no_new_privs, seccomp).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::{json, Value};

use crate::{fixtures, load_truth, node::KubeNode, node_config, node_images, workload};

/// The stand-in's workload arguments, the same on the node and in the
/// reference run (it holds until `/truth/go` exists, then stays alive).
pub const WORKLOAD_ARGS: &[&str] = &["--iterations", "5", "--no-child"];
/// How long a pod may take to reach Running (about 3 s here).
pub const POD_DEADLINE: Duration = Duration::from_secs(120);

pub fn pod_phase(node: &KubeNode, namespace: &str, name: &str) -> String {
    let out = node.cluster().kubectl_output(&["get", "pod", "-n", namespace, name, "-o=jsonpath={.status.phase}"]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn wait_for_phase(node: &KubeNode, namespace: &str, name: &str, phase: &str) {
    let start = std::time::Instant::now();
    while pod_phase(node, namespace, name) != phase {
        if start.elapsed() > POD_DEADLINE {
            let described = node.cluster().kubectl_output(&["describe", "pod", "-n", namespace, name]);
            panic!(
                "pod {namespace}/{name} not {phase} after {POD_DEADLINE:?}:\n{}\n{}",
                String::from_utf8_lossy(&described.stdout),
                node.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The number of calls the stand-in makes with [`WORKLOAD_ARGS`], from a
/// reference run on the host.
pub fn reference_call_count(tmp: &Path) -> usize {
    let truth = tmp.join("reference-truth");
    std::fs::create_dir_all(&truth).unwrap();
    let status = Command::new(workload())
        .args(WORKLOAD_ARGS)
        .env("CUDA_FIXTURE_TRUTH_DIR", &truth)
        .env("LD_LIBRARY_PATH", fixtures())
        .status()
        .unwrap();
    assert!(status.success());
    load_truth(&truth).len()
}

/// The shipped sidecar manifests with what this node cannot provide
/// replaced, and nothing about the tracer container changed:
/// - the vLLM container runs the stand-in (image, command, no GPU or 4-CPU
///   request, no HTTP probes: it serves no API) with its truth volume;
/// - the PersistentVolumeClaims' volumes become a hostPath the test reads
///   (`traces`) and an emptyDir (`model-cache`): no storage provisioner here.
pub fn sidecar_manifests(node: &KubeNode, traces: &Path, truth: &Path) -> Value {
    let yaml = node.cluster().kubectl(&["kustomize", &crate::root().join("k8s").display().to_string()]);
    let mut items: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("kustomize output is YAML"))
        .collect();
    let deploy = items.iter_mut().find(|d| d["kind"] == "Deployment").expect("the vLLM Deployment");
    let spec = &mut deploy["spec"]["template"]["spec"];
    let vllm = spec["containers"].as_array_mut().unwrap().iter_mut().find(|c| c["name"] == "vllm").unwrap();
    vllm["image"] = json!(node_images::STANDIN_IMAGE);
    vllm["command"] = json!(["/usr/local/bin/vllm"]);
    let mut args: Vec<&str> = WORKLOAD_ARGS.to_vec();
    args.extend(["--wait-for-file", "/truth/go", "--linger-ms", "600000"]);
    vllm["args"] = json!(args);
    let obj = vllm.as_object_mut().unwrap();
    for key in ["resources", "startupProbe", "readinessProbe", "livenessProbe"] {
        obj.remove(key);
    }
    vllm["env"].as_array_mut().unwrap().push(json!({"name": "CUDA_FIXTURE_TRUTH_DIR", "value": "/truth"}));
    vllm["volumeMounts"].as_array_mut().unwrap().push(json!({"name": "truth", "mountPath": "/truth"}));
    for volume in spec["volumes"].as_array_mut().unwrap() {
        match volume["name"].as_str().unwrap() {
            "traces" => *volume = json!({"name": "traces", "hostPath": {"path": traces, "type": "Directory"}}),
            "model-cache" => *volume = json!({"name": "model-cache", "emptyDir": {}}),
            _ => {}
        }
    }
    spec["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "truth", "hostPath": {"path": truth, "type": "Directory"}}));
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// The name of the vLLM pod once both its containers run.
pub fn running_vllm_pod(node: &KubeNode) -> String {
    let mut name = String::new();
    let start = std::time::Instant::now();
    loop {
        let pods = node.cluster().get_json("vllm-tracing", "pods");
        if let Some(pod) = pods["items"].as_array().and_then(|p| p.first()) {
            name = pod["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let statuses = pod["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
            if statuses.len() == 2 && statuses.iter().all(|s| s["state"]["running"].is_object()) {
                return name;
            }
        }
        if start.elapsed() > POD_DEADLINE {
            let described = node.cluster().kubectl_output(&["describe", "pods", "-n", "vllm-tracing"]);
            panic!("pod {name} not running: {}\n{}", String::from_utf8_lossy(&described.stdout), node.logs());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The sidecar's tracer processes (`cuda-tracer run` in a cgroup of the
/// node: the supervisor and its worker).
pub fn sidecar_pids() -> Vec<u32> {
    let procs = std::fs::read_dir("/proc").unwrap();
    let pids: Vec<u32> = procs.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    let ours = |pid: &u32| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        cmdline == b"cuda-tracer\0run\0" && cgroup.contains(&format!("/{}/", node_config::CGROUP_ROOT))
    };
    let found: Vec<u32> = pids.into_iter().filter(ours).collect();
    assert!(!found.is_empty(), "no sidecar tracer process in the node's cgroups");
    found
}

/// A capability's bit in /proc/PID/status (capability.h).
pub fn capability_bit(name: &str) -> u32 {
    match name {
        "SYS_PTRACE" => 19,
        "SYS_ADMIN" => 21,
        "PERFMON" => 38,
        "BPF" => 39,
        other => panic!("capability {other} is not one the manifest is expected to add"),
    }
}

/// The manifest's tracer container really ran as shipped: exactly its
/// added capabilities, no_new_privs, and the seccomp mode it asks for.
pub fn assert_confined_as_shipped(manifests: &Value) {
    let deploy = manifests["items"].as_array().unwrap().iter().find(|d| d["kind"] == "Deployment").unwrap();
    let containers = deploy["spec"]["template"]["spec"]["containers"].as_array().unwrap();
    let tracer = containers.iter().find(|c| c["name"] == "ebpf-tracer").unwrap();
    let added = tracer["securityContext"]["capabilities"]["add"].as_array().unwrap();
    let want = added.iter().fold(0u64, |acc, c| acc | 1 << capability_bit(c.as_str().unwrap()));
    // Kubernetes runs a container without a seccompProfile unconfined (the
    // kubelet's SeccompDefault is off); RuntimeDefault is containerd's filter.
    let profile = &tracer["securityContext"]["seccompProfile"]["type"];
    let pod_profile = &deploy["spec"]["template"]["spec"]["securityContext"]["seccompProfile"]["type"];
    let runtime_default = profile == "RuntimeDefault" || (profile.is_null() && pod_profile == "RuntimeDefault");
    let seccomp = if runtime_default { "2" } else { "0" };
    for pid in sidecar_pids() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| {
            let line = status.lines().find_map(|l| l.strip_prefix(name));
            line.unwrap_or_else(|| panic!("{name} in {status}")).trim().to_string()
        };
        assert_eq!(u64::from_str_radix(&field("CapEff:"), 16).unwrap(), want, "CapEff of tracer {pid}");
        assert_eq!(u64::from_str_radix(&field("CapBnd:"), 16).unwrap(), want, "bounding set of tracer {pid}");
        assert_eq!(field("NoNewPrivs:"), "1", "allowPrivilegeEscalation: false (tracer {pid})");
        assert_eq!(field("Seccomp:"), seccomp, "seccomp mode of tracer {pid} (2: a filter)");
    }
}

/// A host directory the pod's containers (root, no capabilities) write.
pub fn shared_dir(path: PathBuf) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    path
}
