//! The webhook against hostile tenants and clients (issue 15): its patch
//! carries Secret references, never values, and a literal secret in its
//! settings stops it at startup; the injected sidecar has exactly the
//! manifests' security context; a pod that brings a volume named like ours
//! is denied; oversized and pathological reviews sent four at a time leave
//! its memory bounded; slow handshakes, heads and bodies, silent or
//! trickled a byte at a time, are dropped.

use std::{
    io::Read as _,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment},
    core::v1::{Pod, SecurityContext},
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{admit, client::Webhook, patch_of, review, vllm_pod, NAMESPACE};

#[test]
fn the_patch_names_secrets_and_never_carries_their_values() {
    let webhook = Webhook::start(&[
        "--aws-secret",
        "aws-credentials",
        "--sidecar-secret-env",
        "AWS_SECRET_ACCESS_KEY=aws-credentials:AWS_SECRET_ACCESS_KEY,HF_TOKEN=hf-token:token",
        "--sidecar-env",
        "TRACE_INTERVAL=30",
    ]);
    let response = admit(&webhook, &review("uid-secret", NAMESPACE, "CREATE", &vllm_pod()));
    let mut patched = vllm_pod();
    json_patch::patch(&mut patched, &patch_of(&response)).expect("patch applies");
    let pod: Pod = serde_json::from_value(patched).expect("Pod");
    let sidecar = &pod.spec.as_ref().expect("spec").containers[1];
    for (var, secret, key) in
        [("AWS_SECRET_ACCESS_KEY", "aws-credentials", "AWS_SECRET_ACCESS_KEY"), ("HF_TOKEN", "hf-token", "token")]
    {
        let env = sidecar.env.iter().flatten().find(|e| e.name == var).unwrap_or_else(|| panic!("{var} missing"));
        assert_eq!(env.value, None, "{var} carries a value");
        let selector = env.value_from.as_ref().and_then(|f| f.secret_key_ref.as_ref()).expect("secretKeyRef");
        assert_eq!((selector.name.as_str(), selector.key.as_str()), (secret, key));
    }
    let from = sidecar.env_from.as_ref().expect("envFrom");
    assert_eq!(from[0].secret_ref.as_ref().expect("secretRef").name, "aws-credentials");
    // Every literal value in the sidecar's env is a plain setting.
    for env in sidecar.env.iter().flatten().filter(|e| e.value.is_some()) {
        let name = env.name.to_uppercase();
        assert!(!["SECRET", "TOKEN", "PASSWORD", "KEY"].iter().any(|p| name.contains(p)), "{env:?}");
    }
}

#[test]
fn a_literal_secret_in_the_settings_stops_startup_without_echoing_it() {
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    for (var, value) in [
        ("SIDECAR_ENV", format!("TRACE_INTERVAL=30,AWS_SECRET_ACCESS_KEY={secret}")),
        ("SIDECAR_ENV", format!("HF_TOKEN={secret}")),
        ("S3_ENDPOINT", format!("https://admin:{secret}@minio:9000")),
    ] {
        let out = cuda_tracer_tests::tracer_cmd()
            .args(["webhook", "--addr", "127.0.0.1:0", "--tls-cert", "/nonexistent", "--tls-key", "/nonexistent"])
            .env(var, &value)
            .output()
            .expect("run webhook");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{var}={value}: started");
        assert!(stderr.contains("--sidecar-secret-env VAR=SECRET:KEY"), "{var}: {stderr}");
        assert!(!stderr.contains(secret), "the error echoes the secret: {stderr}");
    }
}

/// The tracer container's security context in a manifest.
fn manifest_security_context(path: &str) -> SecurityContext {
    let text = std::fs::read_to_string(cuda_tracer_tests::root().join(path)).expect(path);
    let spec = if path.contains("daemonset") {
        serde_yaml_ng::from_str::<DaemonSet>(&text).expect("DaemonSet").spec.template.spec
    } else {
        serde_yaml_ng::from_str::<Deployment>(&text).expect("Deployment").spec.template.spec
    };
    let spec = spec.expect("pod spec");
    let tracer = spec.containers.iter().find(|c| c.name == "ebpf-tracer").expect("ebpf-tracer container");
    tracer.security_context.clone().expect("securityContext")
}

#[test]
fn the_injected_sidecar_has_the_manifests_security_context() {
    let webhook = Webhook::start(&[]);
    let response = admit(&webhook, &review("uid-sc", NAMESPACE, "CREATE", &vllm_pod()));
    let mut patched = vllm_pod();
    json_patch::patch(&mut patched, &patch_of(&response)).expect("patch applies");
    let pod: Pod = serde_json::from_value(patched).expect("Pod");
    let injected = pod.spec.expect("spec").containers[1].security_context.clone().expect("securityContext");
    let daemonset = manifest_security_context("k8s/daemonset/03-daemonset.yaml");
    assert_eq!(injected, daemonset, "the webhook's sidecar differs from the DaemonSet's tracer");
    // The sidecar Deployment's is the same without SYS_PTRACE: its vLLM
    // container drops ALL, while a pod the webhook injects into may hold
    // capabilities (tests/k8s_node_capabilities.rs shows both on a node).
    let mut without_ptrace = injected.clone();
    let added = without_ptrace.capabilities.as_mut().and_then(|c| c.add.as_mut()).expect("added capabilities");
    added.retain(|c| c != "SYS_PTRACE");
    assert_eq!(added.len(), 2, "the injected sidecar adds SYS_PTRACE: {added:?}");
    assert_eq!(
        manifest_security_context("k8s/03-vllm-deployment.yaml"),
        without_ptrace,
        "the sidecar Deployment's tracer"
    );
    let caps = injected.capabilities.expect("capabilities");
    assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
    assert!(!caps.add.unwrap_or_default().iter().any(|c| c == "SYS_RESOURCE"));
}

#[test]
fn a_pod_with_a_volume_named_like_ours_is_denied() {
    let webhook = Webhook::start(&[]);
    let mut pod = vllm_pod();
    pod["spec"]["volumes"]
        .as_array_mut()
        .expect("volumes")
        .push(json!({"name": "cuda-tracer-traces", "hostPath": {"path": "/"}}));
    let response = admit(&webhook, &review("uid-clash", NAMESPACE, "CREATE", &pod));
    assert_eq!(
        (response["uid"].as_str(), response["allowed"].as_bool()),
        (Some("uid-clash"), Some(false)),
        "{response}"
    );
    assert!(response.get("patch").is_none(), "{response}");
    let message = response["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("\"cuda-tracer-traces\"") && message.contains("rename that volume"), "{response}");
    webhook.log_line(&["uid=uid-clash ", "decision=\"deny\""]);
}

/// Peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let mut status = String::new();
    std::fs::File::open(format!("/proc/{pid}/status")).and_then(|mut f| f.read_to_string(&mut status)).expect("status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib << 10
}

/// Posts every body at once from its own thread; returns the statuses.
fn concurrently(webhook: &Webhook, bodies: &[Vec<u8>]) -> Vec<u16> {
    std::thread::scope(|s| {
        let handles: Vec<_> = bodies.iter().map(|b| s.spawn(move || webhook.request("POST", "/mutate", b).0)).collect();
        handles.into_iter().map(|h| h.join().expect("client thread")).collect()
    })
}

/// Reviews just under the 3 MiB limit made of what costs a parser most:
/// tiny labels, containers, and command words.
fn pathological_reviews() -> Vec<Vec<u8>> {
    let fill = |item: &dyn Fn(usize) -> Value| -> Vec<Value> { (0..200_000).map(item).collect() };
    let mut labels = vllm_pod();
    let many: serde_json::Map<String, Value> = (0..250_000).map(|i| (format!("{i:x}"), json!(""))).collect();
    labels["metadata"]["labels"].as_object_mut().expect("labels").extend(many);
    let mut containers = vllm_pod();
    containers["spec"]["containers"].as_array_mut().expect("containers").extend(fill(&|_| json!({"name": ""})));
    let mut words = vllm_pod();
    words["spec"]["containers"][0]["command"] = Value::Array(vec![json!(""); 900_000]);
    let mut numbers = vllm_pod();
    numbers["metadata"]["annotations"]["x"] = json!("");
    numbers["spec"]["x-unknown"] = Value::Array((0..1_400_000).map(|_| json!(0)).collect());
    [labels, containers, words, numbers]
        .iter()
        .enumerate()
        .map(|(i, pod)| {
            let body = review(&format!("uid-big-{i}"), NAMESPACE, "CREATE", pod);
            assert!(body.len() > 2 << 20 && body.len() < 3 << 20, "review {i} is {} bytes", body.len());
            body
        })
        .collect()
}

/// The Deployment's memory limit is 128 MiB (k8s/webhook/deployment.yaml).
/// Over its idle peak (31 MiB measured, debug build), the bound allows four
/// 3 MiB bodies in memory at once (12 MiB) plus TLS and HTTP buffers, about
/// twice the 13 MiB measured; a parse into `serde_json::Value`, as before,
/// took over 100 MiB for one of these reviews.
const HEADROOM: u64 = 24 << 20;

#[test]
fn oversized_and_pathological_reviews_four_at_once_keep_memory_bounded() {
    let webhook = Webhook::start(&[]);
    let pid = webhook.child.0.id();
    assert_eq!(webhook.request("GET", "/healthz", b"").0, 200);
    let idle = peak_rss(pid);

    let mut huge = vllm_pod();
    huge["metadata"]["annotations"]["padding"] = json!("x".repeat((3 << 20) + (512 << 10)));
    let oversized: Vec<Vec<u8>> =
        (0..4).map(|i| review(&format!("uid-over-{i}"), NAMESPACE, "CREATE", &huge)).collect();
    for round in 0..2 {
        assert_eq!(concurrently(&webhook, &oversized), [413; 4], "round {round}");
    }
    let statuses = concurrently(&webhook, &pathological_reviews());
    assert_eq!(statuses, [200; 4], "pathological reviews are answered:\n{}", webhook.log());
    let peak = peak_rss(pid);
    eprintln!("webhook VmHWM: idle {} KiB, after the floods {} KiB", idle >> 10, peak >> 10);
    assert!(peak < idle + HEADROOM, "peak {} KiB over idle {} KiB + {} KiB", peak >> 10, idle >> 10, HEADROOM >> 10);
    assert!(peak < 96 << 20, "peak {} KiB near the 128 MiB limit", peak >> 10);
    // Still serving.
    let response = admit(&webhook, &review("uid-after", NAMESPACE, "CREATE", &vllm_pod()));
    assert!(response.get("patch").is_some(), "{response}");
}

/// Seconds until the server closes `stream` (EOF or reset), reading and
/// keeping whatever it answers first; bounded by `limit`.
async fn closed_after(
    mut stream: impl tokio::io::AsyncRead + Unpin,
    limit: Duration,
) -> Result<(Duration, String), String> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), stream.read(&mut buf)).await {
            Err(_) => return Err(format!("still open after {limit:?}; got {:?}", String::from_utf8_lossy(&got))),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok((start.elapsed(), String::from_utf8_lossy(&got).into_owned())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn slow_handshakes_heads_and_bodies_are_dropped_within_the_timeout() {
    let webhook = Webhook::start(&["--client-timeout-secs", "2"]);
    let (port, ca) = (webhook.port, webhook.certs.join("ca.crt"));
    let limit = Duration::from_secs(8);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        // TCP only, no ClientHello.
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        let (after, _) = closed_after(tcp, limit).await.expect("silent TCP client");
        assert!(after >= Duration::from_millis(1500), "closed before the timeout: {after:?}");

        // Half a request head, then nothing.
        let mut tls = super::client::tls_connect(port, &ca).await.expect("tls");
        tls.write_all(b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.expect("write");
        tls.flush().await.expect("flush");
        let (after, _) = closed_after(&mut tls, limit).await.expect("slow-header client");
        assert!(after >= Duration::from_millis(1500), "closed before the timeout: {after:?}");

        // A whole head, a tenth of the body, then nothing.
        let mut tls = super::client::tls_connect(port, &ca).await.expect("tls");
        let head = "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
        tls.write_all(head.as_bytes()).await.expect("write");
        tls.write_all(&[b' '; 100]).await.expect("write");
        tls.flush().await.expect("flush");
        let (after, answer) = closed_after(&mut tls, limit).await.expect("slow-body client");
        assert!(after >= Duration::from_millis(1500), "closed before the timeout: {after:?}");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("did not arrive within 2s"), "{answer}");

        // An idle keep-alive connection is closed too.
        let tls = super::client::tls_connect(port, &ca).await.expect("tls");
        closed_after(tls, limit).await.expect("idle client");

        // A header that never ends, a byte at a time: the timeout is for the whole head.
        trickle(port, &ca, b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", limit)
            .await
            .expect("trickled head");
        // A whole head, then the body a byte at a time.
        let head = b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n";
        let answer = trickle(port, &ca, head, limit).await.expect("trickled body");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    });
    assert_eq!(webhook.request("GET", "/healthz", b""), (200, "ok".to_string()));
    webhook.log_line(&["TLS handshake timed out"]);
}

/// Sends `prefix` at once, then one byte every 200 ms until the
/// server closes the connection; returns what it answered, bounded by `limit`.
async fn trickle(port: u16, ca: &std::path::Path, prefix: &[u8], limit: Duration) -> Result<String, String> {
    let tls = super::client::tls_connect(port, ca).await?;
    let (read, mut write) = tokio::io::split(tls);
    write.write_all(prefix).await.map_err(|e| e.to_string())?;
    let dripping = tokio::spawn(async move {
        while write.write_all(b"a").await.is_ok() && write.flush().await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let closed = closed_after(read, limit).await;
    dripping.abort();
    closed.map(|(_, answer)| answer)
}
