//! `cuda-tracer webhook` over real HTTPS with certificates from
//! gen-certs.sh: AdmissionReviews of a real vLLM pod spec are answered with
//! a JSON patch that, applied by the json-patch crate, yields the injected
//! pod; everything else is allowed unchanged; bad requests get a 4xx with a
//! message and the server keeps serving; SIGTERM stops it cleanly.

#[path = "webhook_client.rs"]
mod client;
#[path = "webhook_hostile.rs"]
mod hostile;

use std::time::Duration;

use client::{gen_certs, Webhook};
use cuda_tracer_tests::{signal, vllm_pod, wait_for, wait_with_deadline};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

const NAMESPACE: &str = "downstream-llm-d";

/// An AdmissionReview v1 as the API server sends it for a pod CREATE.
fn review(uid: &str, namespace: &str, operation: &str, pod: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    }))
    .expect("serialize review")
}

/// Posts a review; returns the response part of the answer.
fn admit(webhook: &Webhook, body: &[u8]) -> Value {
    let (status, text) = webhook.request("POST", "/mutate", body);
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).expect("answer is JSON");
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1", "{answer}");
    assert_eq!(answer["kind"], "AdmissionReview", "{answer}");
    answer["response"].clone()
}

/// The JSON patch of a response (kube-core sends the bytes as a JSON array).
fn patch_of(response: &Value) -> json_patch::Patch {
    assert_eq!(response["patchType"], "JSONPatch", "{response}");
    let bytes: Vec<u8> = serde_json::from_value(response["patch"].clone()).expect("patch bytes");
    serde_json::from_slice(&bytes).expect("patch is a JSON patch")
}

fn assert_unchanged(response: &Value, uid: &str) {
    assert_eq!(response["uid"], uid, "{response}");
    assert_eq!(response["allowed"], true, "{response}");
    assert!(response.get("patch").is_none(), "unexpected patch: {response}");
}

fn env_value<'a>(pod: &'a Pod, container: &str, name: &str) -> Option<&'a k8s_openapi::api::core::v1::EnvVar> {
    let c = pod.spec.as_ref()?.containers.iter().find(|c| c.name == container)?;
    c.env.as_ref()?.iter().find(|e| e.name == name)
}

#[test]
fn labelled_vllm_pod_gets_the_sidecar_host_pid_and_volume() {
    let webhook = Webhook::start(&[
        "--tracer-image",
        "registry.local/cuda-tracer:0.1",
        "--s3-bucket",
        "traces",
        "--s3-endpoint",
        "http://minio.storage:9000",
        "--s3-path-style",
    ]);
    let original = vllm_pod();
    let response = admit(&webhook, &review("uid-inject", NAMESPACE, "CREATE", &original));
    assert_eq!(response["uid"], "uid-inject");
    assert_eq!(response["allowed"], true);

    let mut patched = original.clone();
    json_patch::patch(&mut patched, &patch_of(&response)).expect("patch applies to the pod");
    let pod: Pod = serde_json::from_value(patched).expect("patched pod is a Pod");
    let before: Pod = serde_json::from_value(original).expect("original is a Pod");
    let (spec, old) = (pod.spec.as_ref().expect("spec"), before.spec.as_ref().expect("spec"));

    assert_eq!(spec.host_pid, Some(true));
    let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["vllm", "ebpf-tracer"]);
    assert_eq!(spec.containers[0], old.containers[0], "the vLLM container is untouched");

    let sidecar = &spec.containers[1];
    assert_eq!(sidecar.image.as_deref(), Some("registry.local/cuda-tracer:0.1"));
    assert_eq!(sidecar.command, Some(vec!["cuda-tracer".to_string(), "run".to_string()]));
    let value = |name| env_value(&pod, "ebpf-tracer", name).and_then(|e| e.value.as_deref());
    // The default: vLLM's entry points only (README "Which processes run traces").
    let vllm_entry_points =
        r"^VLLM::|^(\S*/)?vllm( |$)|^(\S*/)?python[0-9.]*( -\S+)* ((\S*/)?vllm|-m ?vllm(\.\S+)?)( |$)";
    assert_eq!(value("TARGET_PROCESS"), Some(vllm_entry_points));
    assert_eq!(value("TRACE_DIR"), Some("/traces"));
    assert_eq!(value("S3_BUCKET"), Some("traces"));
    assert_eq!(value("S3_PREFIX"), Some("k3s-vllm/"));
    assert_eq!(value("S3_ENDPOINT"), Some("http://minio.storage:9000"));
    assert_eq!(value("S3_PATH_STYLE"), Some("true"));
    assert_eq!(value("VLLM_METRICS_URL"), Some("http://127.0.0.1:8000/metrics"));
    for (name, field) in
        [("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace"), ("NODE_NAME", "spec.nodeName")]
    {
        let var = env_value(&pod, "ebpf-tracer", name).unwrap_or_else(|| panic!("{name} missing"));
        let field_ref = var.value_from.as_ref().and_then(|f| f.field_ref.as_ref()).expect("fieldRef");
        assert_eq!(field_ref.field_path, field, "{name}");
    }
    let caps = sidecar.security_context.as_ref().and_then(|s| s.capabilities.as_ref()).expect("capabilities");
    let added = caps.add.as_ref().expect("added capabilities");
    assert_eq!(added, &["BPF", "PERFMON", "SYS_PTRACE"], "the sidecar's added capabilities, exactly");
    assert_ne!(sidecar.security_context.as_ref().and_then(|s| s.privileged), Some(true));
    let mount = &sidecar.volume_mounts.as_ref().expect("mounts")[0];
    assert_eq!((mount.name.as_str(), mount.mount_path.as_str()), ("cuda-tracer-traces", "/traces"));

    let volumes = spec.volumes.as_ref().expect("volumes");
    assert_eq!(volumes.len(), old.volumes.as_ref().expect("volumes").len() + 1);
    assert_eq!(&volumes[..3], &old.volumes.as_ref().expect("volumes")[..], "existing volumes kept in order");
    let traces = volumes.iter().find(|v| v.name == "cuda-tracer-traces").expect("traces volume");
    assert!(traces.empty_dir.is_some(), "{traces:?}");
    let annotations = pod.metadata.annotations.as_ref().expect("annotations");
    assert_eq!(annotations["cuda-tracer/injected"], "registry.local/cuda-tracer:0.1");

    webhook.log_line(&["uid=uid-inject ", "decision=\"inject\"", "generate_name=\"vllm-llama-2-7b-6d9f7c8b5d-\""]);
}

#[test]
fn pod_without_volumes_gets_a_volumes_array_and_a_pvc_when_configured() {
    let webhook = Webhook::start(&["--traces-pvc", "vllm-traces"]);
    let mut original = vllm_pod();
    let spec = original["spec"].as_object_mut().expect("spec");
    spec.remove("volumes");
    spec["containers"][0].as_object_mut().expect("container").remove("volumeMounts");
    original["metadata"].as_object_mut().expect("metadata").remove("annotations");
    let response = admit(&webhook, &review("uid-novol", NAMESPACE, "CREATE", &original));
    let mut patched = original;
    json_patch::patch(&mut patched, &patch_of(&response)).expect("patch applies");
    let pod: Pod = serde_json::from_value(patched).expect("Pod");
    let volumes = pod.spec.expect("spec").volumes.expect("volumes added");
    assert_eq!(volumes.len(), 1);
    let claim = volumes[0].persistent_volume_claim.as_ref().expect("PVC volume");
    assert_eq!(claim.claim_name, "vllm-traces");
}

#[test]
fn other_pods_are_allowed_unchanged_and_injection_happens_once() {
    let webhook = Webhook::start(&[]);
    let pod = vllm_pod();
    assert_unchanged(&admit(&webhook, &review("uid-ns", "default", "CREATE", &pod)), "uid-ns");

    let mut other_label = pod.clone();
    other_label["metadata"]["labels"]["llm-d.ai/inferenceServing"] = json!("false");
    assert_unchanged(&admit(&webhook, &review("uid-label", NAMESPACE, "CREATE", &other_label)), "uid-label");
    let mut no_label = pod.clone();
    no_label["metadata"]["labels"].as_object_mut().expect("labels").remove("llm-d.ai/inferenceServing");
    assert_unchanged(&admit(&webhook, &review("uid-nolabel", NAMESPACE, "CREATE", &no_label)), "uid-nolabel");
    assert_unchanged(&admit(&webhook, &review("uid-update", NAMESPACE, "UPDATE", &pod)), "uid-update");

    // Inject once, then send the injected pod again: no second sidecar.
    let first = admit(&webhook, &review("uid-first", NAMESPACE, "CREATE", &pod));
    let mut injected = pod;
    json_patch::patch(&mut injected, &patch_of(&first)).expect("patch applies");
    assert_unchanged(&admit(&webhook, &review("uid-again", NAMESPACE, "CREATE", &injected)), "uid-again");

    for (uid, reason) in [
        ("uid-ns", r#"namespace "default" is not the target"#),
        ("uid-label", r#"label llm-d.ai/inferenceServing="false", not "true""#),
        ("uid-nolabel", "no label llm-d.ai/inferenceServing"),
        ("uid-update", "is not CREATE"),
        ("uid-again", "already traced"),
    ] {
        webhook.log_line(&[&format!("uid={uid} "), "decision=\"skip\"", reason]);
    }
}

/// Sends a request expected to fail; returns the message of the answer.
fn rejected(webhook: &Webhook, method: &str, path: &str, body: &[u8], status: u16) -> String {
    let (got, text) = webhook.request(method, path, body);
    assert_eq!(got, status, "{method} {path}: {text}");
    serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["response"]["status"]["message"].as_str().map(String::from))
        .unwrap_or(text)
}

#[test]
fn bad_requests_get_a_clear_4xx_and_the_server_keeps_serving() {
    let webhook = Webhook::start(&[]);
    let m = rejected(&webhook, "POST", "/mutate", b"{\"apiVersion\": ", 400);
    assert!(m.contains("not an AdmissionReview in JSON"), "{m}");
    let m = rejected(&webhook, "POST", "/mutate", b"", 400);
    assert!(m.contains("empty body"), "{m}");
    let m = rejected(&webhook, "POST", "/mutate", &serde_json::to_vec(&vllm_pod()).expect("json"), 400);
    assert!(m.contains("expected apiVersion admission.k8s.io/v1 kind AdmissionReview"), "{m}");

    let mut deployment =
        review("uid-deploy", NAMESPACE, "CREATE", &json!({"apiVersion": "apps/v1", "kind": "Deployment"}));
    let mut v: Value = serde_json::from_slice(&deployment).expect("json");
    v["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    deployment = serde_json::to_vec(&v).expect("json");
    let m = rejected(&webhook, "POST", "/mutate", &deployment, 400);
    assert!(m.contains("mutates Pods only, got apps/v1 Deployment"), "{m}");

    // A valid review padded past the default 3 MiB limit.
    let mut huge = vllm_pod();
    huge["metadata"]["annotations"] = json!({"padding": "x".repeat(4 << 20)});
    let m = rejected(&webhook, "POST", "/mutate", &review("uid-huge", NAMESPACE, "CREATE", &huge), 413);
    assert!(m.contains("over the 3145728-byte limit"), "{m}");

    let (status, _) = webhook.request("GET", "/mutate", b"");
    assert_eq!(status, 405);
    let (status, text) = webhook.request("GET", "/nope", b"");
    assert_eq!(status, 404);
    assert!(text.contains("POST /mutate"), "{text}");

    assert_eq!(webhook.request("GET", "/healthz", b""), (200, "ok".to_string()));
    assert_eq!(webhook.request("GET", "/readyz", b"").0, 200);
    let response = admit(&webhook, &review("uid-after", NAMESPACE, "CREATE", &vllm_pod()));
    assert!(response.get("patch").is_some(), "still injecting after bad requests: {response}");
}

#[test]
fn renewed_certificate_is_served_without_a_restart_and_sigterm_stops_cleanly() {
    let mut webhook = Webhook::start(&["--cert-reload-secs", "1"]);
    let old_ca = webhook.certs.join("old-ca.crt");
    std::fs::copy(webhook.certs.join("ca.crt"), &old_ca).expect("keep the old CA");
    gen_certs(&webhook.certs, &["--new-ca"]);
    let new_ca = webhook.certs.join("ca.crt");
    wait_for("the webhook to serve the renewed certificate", Duration::from_secs(30), || {
        webhook.request_with_ca(&new_ca, "GET", "/healthz", b"").is_ok()
    });
    let err = webhook.request_with_ca(&old_ca, "GET", "/healthz", b"").expect_err("old CA no longer matches");
    assert!(err.contains("TLS handshake"), "{err}");
    webhook.log_line(&["serving certificate reloaded"]);

    signal(&webhook.child.0, libc::SIGTERM);
    let status = wait_with_deadline(&mut webhook.child.0, Duration::from_secs(30));
    assert!(status.success(), "exit after SIGTERM: {status}\n{}", webhook.log());
}

#[test]
fn unusable_certificate_files_stop_startup_with_the_file_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.crt");
    let out = cuda_tracer_tests::tracer_cmd()
        .args(["webhook", "--addr", "127.0.0.1:0", "--tls-cert"])
        .arg(&missing)
        .arg("--tls-key")
        .arg(dir.path().join("missing.key"))
        .output()
        .expect("run webhook");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("cannot read {}", missing.display())), "{stderr}");

    // A key that does not belong to the certificate.
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    gen_certs(&a, &[]);
    gen_certs(&b, &[]);
    let out = cuda_tracer_tests::tracer_cmd()
        .args(["webhook", "--addr", "127.0.0.1:0", "--tls-cert"])
        .arg(a.join("tls.crt"))
        .arg("--tls-key")
        .arg(b.join("tls.key"))
        .output()
        .expect("run webhook");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot serve together"), "{stderr}");
}

#[test]
fn scripts_pass_shellcheck_and_fail_clearly_without_a_cluster() {
    let dir = cuda_tracer_tests::root().join("k8s/webhook");
    let scripts = ["gen-certs.sh", "patch-ca-bundle.sh", "install.sh", "uninstall.sh"].map(|s| dir.join(s));
    for script in &scripts {
        let out = std::process::Command::new("bash").arg("-n").arg(script).output().expect("bash -n");
        assert!(out.status.success(), "bash -n {}: {}", script.display(), String::from_utf8_lossy(&out.stderr));
    }
    let out = cuda_tracer_tests::scripts::shellcheck().args(&scripts).output().expect("shellcheck");
    assert!(out.status.success(), "shellcheck:\n{}", String::from_utf8_lossy(&out.stdout));

    // No cluster: a kubeconfig that points nowhere (or no kubectl at all).
    let tmp = tempfile::tempdir().expect("tempdir");
    let kubeconfig = tmp.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n\
         contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\nusers: [{name: u, user: {}}]\n",
    )
    .expect("kubeconfig");
    for script in ["install.sh", "uninstall.sh"] {
        let out = std::process::Command::new("bash")
            .arg(dir.join(script))
            .env("KUBECONFIG", &kubeconfig)
            .env("CERT_DIR", tmp.path().join("certs"))
            .output()
            .expect("run script");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{script} succeeded without a cluster");
        assert!(
            stderr.contains(&format!("{script}: no cluster answers")) || stderr.contains("kubectl is not installed"),
            "{script}: {stderr}"
        );
    }
    let out = std::process::Command::new("bash")
        .arg(dir.join("patch-ca-bundle.sh"))
        .args(["--ca", "/nonexistent/ca.crt"])
        .output()
        .expect("run patch-ca-bundle.sh");
    assert!(String::from_utf8_lossy(&out.stderr).contains("run k8s/webhook/gen-certs.sh first"));
}
