//! Against a real kube-apiserver (tests/kube.rs): every manifest under k8s/
//! is accepted and stored, and the apiserver itself calls `cuda-tracer
//! webhook` on Pod CREATE and stores the pod with the injected tracer.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use cuda_tracer_tests::{
    free_port, is_kustomization,
    kube::{webhook_certs, KubeCluster},
    root, spawn_with_log, tracer_cmd, yaml_files,
};
use serde_json::{json, Value};

/// The manifests to apply: `k8s/`, or `CUDA_TRACER_K8S_DIR` while developing.
fn manifest_root() -> PathBuf {
    std::env::var_os("CUDA_TRACER_K8S_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("k8s"))
}

fn declares_namespace(path: &Path) -> bool {
    std::fs::read_to_string(path).unwrap_or_default().lines().any(|l| l.trim_end() == "kind: Namespace")
}

/// `kubectl apply -f`/`-k` `target` (schema-checked by kubectl, validated and
/// admitted by the server), then reads every object back;
/// the error text when either fails.
fn apply_and_read_back(cluster: &KubeCluster, flag: &str, target: &Path) -> Result<String, String> {
    let target = target.display().to_string();
    let apply = ["apply", "--validate=true", flag, &target];
    let out = cluster.kubectl_output(&apply);
    if !out.status.success() {
        return Err(format!("apply {flag} {target}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let get = cluster.kubectl_output(&["get", flag, &target, "-o", "name"]);
    if !get.status.success() {
        return Err(format!("read back {flag} {target}: {}", String::from_utf8_lossy(&get.stderr)));
    }
    Ok(String::from_utf8_lossy(&get.stdout).into_owned())
}

#[test]
fn every_manifest_is_accepted_and_stored_by_a_real_apiserver() {
    let dir = manifest_root();
    let files = yaml_files(&dir);
    if files.is_empty() {
        eprintln!("no manifests under {}: nothing to apply (the k8s/ manifests have not landed)", dir.display());
        return;
    }
    let cluster = KubeCluster::start();
    // Namespaces first, so objects in them can be created.
    let (namespaces, rest): (Vec<_>, Vec<_>) =
        files.iter().filter(|p| !is_kustomization(p)).partition(|p| declares_namespace(p));
    let mut failures = Vec::new();
    let mut stored = 0;
    for file in namespaces.iter().chain(&rest) {
        match apply_and_read_back(&cluster, "-f", file) {
            Ok(names) => stored += names.lines().count(),
            Err(e) => failures.push(e),
        }
    }
    // A kustomization must render and its output must be accepted too.
    let kustomizations: Vec<_> = files.iter().filter(|p| is_kustomization(p)).collect();
    for kustomization in &kustomizations {
        let kdir = kustomization.parent().expect("file has a directory");
        if let Err(e) = apply_and_read_back(&cluster, "-k", kdir) {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "manifests rejected (by kubectl against the server's OpenAPI schema, or by the apiserver):\n{}",
        failures.join("\n")
    );
    let manifests = files.len() - kustomizations.len();
    assert!(stored > 0, "no object was stored from {manifests} manifest files");
    eprintln!(
        "{stored} objects from {manifests} manifest files stored, {} kustomizations applied",
        kustomizations.len()
    );
}

const TARGET_NAMESPACE: &str = "downstream-llm-d";
const TARGET_LABEL: &str = "llm-d.ai/inferenceServing";
const TRACER_IMAGE: &str = "registry.example.com/cuda-tracer:e2e";
const SIDECAR: &str = "ebpf-tracer";

/// A vLLM OpenAI server pod as users write it; `labelled` adds the label the
/// webhook selects on. No ServiceAccount token: nothing here issues one.
fn vllm_pod(name: &str, namespace: &str, labelled: bool) -> Value {
    let mut labels = json!({"app": "vllm"});
    if labelled {
        labels[TARGET_LABEL] = json!("true");
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "vllm",
                "image": "vllm/vllm-openai:v0.6.3",
                "command": ["python3", "-m", "vllm.entrypoints.openai.api_server"],
                "args": ["--model", "facebook/opt-125m", "--port", "8000"],
                "ports": [{"name": "http", "containerPort": 8000}],
                "resources": {
                    "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
                    "limits": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}
                },
                "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}]
            }],
            "volumes": [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}]
        }
    })
}

fn webhook_config(port: u16, ca_pem: &[u8]) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "cuda-tracer-e2e"},
        "webhooks": [{
            "name": "inject.cuda-tracer.test",
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/mutate"), "caBundle": BASE64.encode(ca_pem)},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            // Fail, not the production Ignore: a broken webhook must fail this test.
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10
        }]
    })
}

fn container_names(pod: &Value) -> Vec<String> {
    pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .map(String::from)
        .collect()
}

/// The injected pod: the vLLM container as it was, plus the tracer sidecar
/// with hostPID, its volume and the downward-API env.
fn assert_injected(pod: &Value, original: &Value) {
    let names = container_names(pod);
    assert_eq!(names.iter().filter(|n| *n == SIDECAR).count(), 1, "one {SIDECAR} sidecar: {names:?}\n{pod:#}");
    let vllm = &pod["spec"]["containers"][0];
    let want = &original["spec"]["containers"][0];
    for field in ["name", "image", "command", "args", "volumeMounts"] {
        assert_eq!(vllm[field], want[field], "vLLM container's {field} changed:\n{pod:#}");
    }
    assert_eq!(pod["spec"]["hostPID"], true, "hostPID not set:\n{pod:#}");
    let sidecar = pod["spec"]["containers"].as_array().unwrap().iter().find(|c| c["name"] == SIDECAR).unwrap();
    assert_eq!(sidecar["image"], TRACER_IMAGE, "sidecar image is not TRACER_IMAGE:\n{sidecar:#}");
    let volumes: Vec<&str> =
        pod["spec"]["volumes"].as_array().into_iter().flatten().filter_map(|v| v["name"].as_str()).collect();
    assert!(volumes.contains(&"shm"), "the pod's own volume was dropped: {volumes:?}");
    assert!(volumes.len() > 1, "no traces volume added: {volumes:?}");
    let mounts: Vec<&str> =
        sidecar["volumeMounts"].as_array().into_iter().flatten().filter_map(|m| m["name"].as_str()).collect();
    assert!(!mounts.is_empty(), "sidecar mounts no traces volume:\n{sidecar:#}");
    for m in &mounts {
        assert!(volumes.contains(m), "sidecar mounts {m}, which is not a pod volume: {volumes:?}");
    }
    let env = sidecar["env"].as_array().cloned().unwrap_or_default();
    let field_of =
        |name: &str| env.iter().find(|e| e["name"] == name).map(|e| e["valueFrom"]["fieldRef"]["fieldPath"].clone());
    assert_eq!(field_of("POD_NAME"), Some(json!("metadata.name")), "POD_NAME from the downward API:\n{sidecar:#}");
    assert_eq!(field_of("NODE_NAME"), Some(json!("spec.nodeName")), "NODE_NAME from the downward API:\n{sidecar:#}");
}

/// Stored as sent: no sidecar, no hostPID, the same volumes.
fn assert_unchanged(pod: &Value, original: &Value) {
    assert_eq!(container_names(pod), ["vllm"], "pod was mutated:\n{pod:#}");
    assert_ne!(pod["spec"]["hostPID"], true, "pod was given hostPID:\n{pod:#}");
    assert_eq!(pod["spec"]["volumes"], original["spec"]["volumes"], "pod volumes changed:\n{pod:#}");
}

/// Waits for the webhook's TLS port to accept connections.
fn wait_listening(port: u16, webhook: &mut cuda_tracer_tests::KillOnDrop, log: &std::sync::Mutex<String>) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = webhook.0.try_wait() {
            panic!("cuda-tracer webhook exited ({status}):\n{}", log.lock().unwrap());
        }
        assert!(start.elapsed() < Duration::from_secs(60), "webhook not listening:\n{}", log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn apiserver_calls_the_webhook_and_stores_the_injected_pod() {
    let cluster = KubeCluster::start();
    let (ca, cert, key) = webhook_certs(cluster.scratch_dir());
    let port = free_port();
    let mut cmd = tracer_cmd();
    cmd.args(["webhook", "--addr", &format!("127.0.0.1:{port}"), "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("TRACER_IMAGE", TRACER_IMAGE)
        .env("RUST_LOG", "info");
    // The defaults are what this test checks (downstream-llm-d, llm-d.ai/inferenceServing=true).
    for var in ["TARGET_NAMESPACE", "TARGET_LABEL_KEY", "TARGET_LABEL_VALUE", "SIDECAR_ENV"] {
        cmd.env_remove(var);
    }
    let (mut webhook, log) = spawn_with_log(cmd);
    wait_listening(port, &mut webhook, &log);

    for ns in [TARGET_NAMESPACE, "other-team"] {
        cluster.apply_json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
        let sa =
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}});
        cluster.apply_json(&sa);
    }
    cluster.apply_json(&webhook_config(port, &std::fs::read(&ca).expect("read CA")));

    // The apiserver picks up a new webhook configuration within a moment:
    // dry-run the labelled pod until it comes back mutated. An error is a
    // webhook failure (failurePolicy Fail) and ends the test at once.
    let labelled = vllm_pod("vllm-0", TARGET_NAMESPACE, true);
    let start = Instant::now();
    loop {
        let out = cluster.create_json(&labelled, &["--dry-run=server"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "dry-run create failed: {stderr}\nwebhook log:\n{}", log.lock().unwrap());
        let pod: Value = serde_json::from_slice(&out.stdout).expect("dry-run output is JSON");
        if container_names(&pod).iter().any(|n| n == SIDECAR) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the apiserver did not apply the webhook's patch:\n{pod:#}\nwebhook log:\n{}\napiserver log:\n{}",
            log.lock().unwrap(),
            cluster.apiserver_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let out = cluster.create_json(&labelled, &[]);
    assert!(out.status.success(), "create labelled pod: {}", String::from_utf8_lossy(&out.stderr));
    assert_injected(&cluster.get_json(TARGET_NAMESPACE, "pod/vllm-0"), &labelled);

    let unlabelled = vllm_pod("vllm-plain", TARGET_NAMESPACE, false);
    let elsewhere = vllm_pod("vllm-0", "other-team", true);
    for (pod, ns, kind_name) in
        [(&unlabelled, TARGET_NAMESPACE, "pod/vllm-plain"), (&elsewhere, "other-team", "pod/vllm-0")]
    {
        let out = cluster.create_json(pod, &[]);
        assert!(out.status.success(), "create {ns}/{kind_name}: {}", String::from_utf8_lossy(&out.stderr));
        assert_unchanged(&cluster.get_json(ns, kind_name), pod);
    }
}

/// `deploy.sh webhook` (k8s/webhook/install.sh) reads the target
/// namespace's Pod Security labels from a real apiserver: a namespace that
/// enforces `restricted` would reject every injected pod, so the install
/// stops before changing anything and names the label to set.
#[test]
fn webhook_install_stops_where_pod_security_would_reject_the_sidecar() {
    let cluster = KubeCluster::start();
    let labels = json!({"pod-security.kubernetes.io/enforce": "restricted"});
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": TARGET_NAMESPACE, "labels": labels}});
    cluster.apply_json(&ns);
    let kubectl_dir = cuda_tracer_tests::kube::kubectl().parent().expect("kubectl's dir").to_path_buf();
    let path = std::env::join_paths(
        std::iter::once(kubectl_dir).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .expect("PATH");
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(root().join("deploy.sh"))
        .arg("webhook")
        .env("PATH", path)
        .env("KUBECONFIG", cluster.kubeconfig())
        .env("KUBECACHEDIR", cluster.scratch_dir().join("kubecache"))
        .env("CERT_DIR", cluster.scratch_dir().join("certs"))
        .env("TARGET_NAMESPACE", TARGET_NAMESPACE);
    let out = cuda_tracer_tests::kube::output_with_deadline(cmd, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "installed into a restricted namespace: {stderr}");
    for want in [
        "enforces Pod Security level 'restricted'",
        "kubectl label namespace downstream-llm-d pod-security.kubernetes.io/enforce=privileged --overwrite",
    ] {
        assert!(stderr.contains(want), "{want:?} not in {stderr}");
    }
    let webhook_ns = cluster.kubectl_output(&["get", "namespace", "cuda-tracer-system"]);
    assert!(!webhook_ns.status.success(), "the install changed the cluster before stopping");
}
