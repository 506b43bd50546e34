//! deploy.sh against a real node: `./deploy.sh all` (build with buildah and
//! import into the node's containerd, deploy, test, verify), `test
//! --parallel`, `verify` and `destroy` run unchanged, with settings only,
//! against the single-node
//! cluster, the vLLM stand-in image as `VLLM_IMAGE` and SeaweedFS as S3.
//! `verify` passes because the sidecar found the stand-in's API server and
//! engine core, attached, wrote trace files and uploaded them; the trace in
//! the bucket then matches the engine's ground truth call for call, and
//! `destroy` leaves no namespace behind. What the node lacks is replaced
//! by the nearest real thing (docs/NODE_TESTS.md, "What differs").
//!
//! Run it under the S3 lock (fixed ports):
//! `flock /tmp/s3-port.lock cargo test -p cuda-tracer-tests --test k8s_node_deploy`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use cuda_tracer_tests::{
    assert_matches_truth, free_port, http_get, image_build,
    kube::{kubectl, output_with_deadline},
    load_truth,
    node::KubeNode,
    node_config::{NODE_IP, NODE_NAME},
    node_images,
    node_pods::{running_vllm_pod, shared_dir},
    s3::{S3Server, ACCESS_KEY, SECRET_KEY},
    KillOnDrop,
};
use serde_json::{json, Value};

const NAMESPACE: &str = "vllm-tracing";
const BUCKET: &str = "vllm-traces";
/// deploy.sh's default S3_PREFIX.
const PREFIX: &str = "k3s-vllm/";
/// The verbs that bring the sidecar up: `all` (build, deploy, test,
/// verify), the build with buildah, imported into the node's containerd.
const BRING_UP: &[&str] = &["all"];
/// How long one deploy.sh command may take (a rollout here takes ~15 s;
/// destroy waits for the tracer's final upload, at most 30 s).
const SCRIPT_DEADLINE: Duration = Duration::from_secs(300);
/// How long the sidecar may take to upload its first closed file.
const UPLOAD_DEADLINE: Duration = Duration::from_secs(90);

#[test]
fn deploy_sh_deploys_tests_verifies_and_destroys_the_traced_standin() {
    // A cold image build (a release build of the tracer) before the node
    // takes the machine-wide lock; `all` then rebuilds from its caches.
    image_build::require_base_images();
    let build = image_build::deploy_build(&[("CLUSTER_RUNTIME", Path::new("none"))]);
    eprintln!("deploy test: deploy.sh build (no import) took {build:.1?}");
    let s3 = S3Server::start_for_pods();
    s3.create_bucket(BUCKET);
    let node = KubeNode::start();
    node.import_image(&node_images::standin_image(&node.dir().join("images")));
    advertise_gpu(&node);
    let model_cache = provide_volumes(&node);
    let proxy = ServiceProxy::start(&node);
    let script = DeployScript::new(&node, &proxy);
    let started = Instant::now();

    script.run(BRING_UP);
    let pod = running_vllm_pod(&node);
    eprintln!("deploy test: {BRING_UP:?} done, pod {pod} running {:.1?} after start", started.elapsed());
    let engine = assert_titled_like_vllm();
    script.run(&["test"]);
    // 4 in flight: the engine core takes one at a time, the rest wait.
    script.run(&["test", "--parallel", "--workers", "4"]);
    wait_until(&node, "the sidecar's first upload", UPLOAD_DEADLINE, || {
        tracer_metric(&node, &pod, "cuda_tracer_files_uploaded") > 0.0
    });
    let verified = script.run(&["verify"]);
    for check in ["sidecar found vLLM", "trace files:", &format!("uploads to s3://{BUCKET}"), "all checks passed"] {
        assert!(verified.contains(check), "verify did not report {check:?}:\n{verified}");
    }
    eprintln!("deploy test: verified {:.1?} after start:\n{verified}", started.elapsed());

    script.run(&["destroy"]);
    let namespace = node.cluster().kubectl_output(&["get", "namespace", NAMESPACE]);
    assert!(!namespace.status.success(), "namespace {NAMESPACE} still there after destroy");
    assert!(String::from_utf8_lossy(&namespace.stderr).contains("NotFound"), "{namespace:?}");
    eprintln!("deploy test: destroyed {:.1?} after start", started.elapsed());

    // The truth directory sits right in the model cache's mount (HF_HOME).
    let truth_dir = Path::new(node_images::STANDIN_TRUTH_DIR).file_name().expect("a directory name");
    let truth = load_truth(&model_cache.join(truth_dir));
    assert!(!truth.is_empty(), "the stand-in's engine made no CUDA call");
    assert!(truth.iter().all(|c| c["pid"] == engine), "only the engine core ({engine}) calls CUDA");
    let objects = s3.objects(BUCKET, &format!("{PREFIX}{pod}/"));
    assert_uploaded_session(&objects, engine);
    assert_matches_truth(&trace_lines(&objects, engine), &truth, false);
}

/// What a device plugin does for the manifest's `nvidia.com/gpu: 1`: the
/// node advertises one GPU in its status (capacity and allocatable).
fn advertise_gpu(node: &KubeNode) {
    let patch = json!([
        {"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": "1"},
        {"op": "add", "path": "/status/allocatable/nvidia.com~1gpu", "value": "1"},
    ]);
    node.cluster().kubectl(&[
        "patch",
        "node",
        NODE_NAME,
        "--subresource=status",
        "--type=json",
        "-p",
        &patch.to_string(),
    ]);
}

/// The node has no storage provisioner: a hostPath PersistentVolume per
/// claim of the manifests, bound to it in advance. Returns the model
/// cache's directory (the stand-in keeps its ground truth there).
fn provide_volumes(node: &KubeNode) -> PathBuf {
    let mut model_cache = PathBuf::new();
    for (claim, size) in [("trace-storage", "10Gi"), ("model-cache", "50Gi")] {
        let dir = shared_dir(node.dir().join("volumes").join(claim));
        node.cluster().apply_json(&json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": format!("node-{claim}")},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "claimRef": {"namespace": NAMESPACE, "name": claim},
                "hostPath": {"path": dir, "type": "Directory"},
            },
        }));
        if claim == "model-cache" {
            model_cache = dir;
        }
    }
    model_cache
}

/// `kubectl proxy`: the vLLM Service reached through the API server's
/// service proxy (its endpoints, the pod), for `API_URL`: without
/// kube-proxy the NodePort routes nowhere.
struct ServiceProxy {
    _proxy: KillOnDrop,
    port: u16,
}

impl ServiceProxy {
    fn start(node: &KubeNode) -> Self {
        let port = free_port();
        let mut cmd = node.cluster().kubectl_cmd(&["proxy", &format!("--port={port}"), "--address=127.0.0.1"]);
        let log = node.dir().join("kubectl-proxy.log");
        let proxy = cuda_tracer_tests::kube::spawn_logged(&mut cmd, &log);
        wait_until(node, "kubectl proxy", Duration::from_secs(30), || {
            http_get(port, "/version").is_some_and(|(s, _)| s == 200)
        });
        Self { _proxy: proxy, port }
    }

    fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/namespaces/{NAMESPACE}/services/vllm-api:http/proxy", self.port)
    }
}

/// `./deploy.sh` with this node's kubeconfig and the settings the node
/// needs; nothing else of the script changes.
struct DeployScript<'a> {
    node: &'a KubeNode,
    env: Vec<(&'static str, String)>,
}

impl<'a> DeployScript<'a> {
    fn new(node: &'a KubeNode, proxy: &ServiceProxy) -> Self {
        let results = node.dir().join("results");
        std::fs::create_dir_all(&results).expect("results dir");
        let env = vec![
            ("KUBECONFIG", node.cluster().kubeconfig().display().to_string()),
            ("KUBECTL", kubectl().display().to_string()),
            ("KUBECACHEDIR", node.dir().join("kubecache").display().to_string()),
            ("IMAGE", node_images::TRACER_IMAGE.to_string()),
            ("VLLM_IMAGE", node_images::STANDIN_IMAGE.to_string()),
            // Two cores here: the sidecar's 500m and this fit.
            ("VLLM_CPU_REQUEST", "500m".to_string()),
            ("S3_BUCKET", BUCKET.to_string()),
            ("S3_ENDPOINT", format!("http://{NODE_IP}:8333")),
            ("S3_PATH_STYLE", "true".to_string()),
            ("S3_REGION", "us-east-1".to_string()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("AWS_DEFAULT_REGION", "us-east-1".to_string()),
            ("TRACE_INTERVAL", "1".to_string()),
            ("UPLOAD_INTERVAL", "1".to_string()),
            ("API_URL", proxy.api_url()),
            ("CUDA_TRACER", cuda_tracer_tests::tracer().display().to_string()),
            ("RESULTS_DIR", results.display().to_string()),
            ("ROLLOUT_TIMEOUT", "240s".to_string()),
            // `build` (in `all`): buildah, the node's containerd.
            ("CLUSTER_RUNTIME", "containerd".to_string()),
            ("CONTAINERD_ADDRESS", node.socket().display().to_string()),
        ];
        let mut env = env;
        env.extend(image_build::build_settings());
        Self { node, env }
    }

    /// Runs `./deploy.sh ARGS`, returning its output; panics with it (and
    /// the node's logs) when it fails or outlives [`SCRIPT_DEADLINE`].
    fn run(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("bash");
        cmd.arg(cuda_tracer_tests::root().join("deploy.sh")).args(args).current_dir(self.node.dir());
        for var in
            ["S3_PREFIX", "MODEL", "HF_TOKEN", "AWS_SESSION_TOKEN", "AWS_PROFILE", "TARGET_PROCESS", "PROFILE_STEPS"]
        {
            cmd.env_remove(var);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let started = Instant::now();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| output_with_deadline(cmd, SCRIPT_DEADLINE)));
        let out: Output =
            run.unwrap_or_else(|_| panic!("./deploy.sh {args:?} outlived {SCRIPT_DEADLINE:?}\n{}", self.node.logs()));
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            panic!("./deploy.sh {args:?} failed ({}):\n{text}\n{}", out.status, self.pod_state());
        }
        eprintln!("deploy test: ./deploy.sh {} took {:.1?}", args.join(" "), started.elapsed());
        text
    }

    /// The pods described, their containers' logs (the tracer's previous
    /// run's too) and the node's logs, for failure messages.
    fn pod_state(&self) -> String {
        let kubectl = |args: &[&str]| {
            let out = self.node.cluster().kubectl_output(args);
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
        };
        let logs = ["logs", "-n", NAMESPACE, "-l", "app=vllm", "--all-containers", "--prefix", "--tail=40"];
        format!(
            "--- pods:\n{}\n--- logs:\n{}\n--- tracer's previous run:\n{}\n{}",
            kubectl(&["describe", "pods", "-n", NAMESPACE]),
            kubectl(&logs),
            kubectl(&["logs", "-n", NAMESPACE, "-l", "app=vllm", "-c", "ebpf-tracer", "--previous", "--tail=40"]),
            self.node.logs()
        )
    }
}

/// Polls `cond` until it holds; after `deadline` panics naming `what`,
/// with the node's logs.
fn wait_until(node: &KubeNode, what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < deadline, "timed out ({deadline:?}) waiting for {what}\n{}", node.logs());
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The sum of one of the sidecar's metrics, read as verify reads them
/// (the API server's proxy to the pod's metrics port); 0 when unreachable.
fn tracer_metric(node: &KubeNode, pod: &str, name: &str) -> f64 {
    let path = format!("/api/v1/namespaces/{NAMESPACE}/pods/{pod}:9464/proxy/metrics");
    let out = node.cluster().kubectl_output(&["get", "--raw", &path]);
    let text = String::from_utf8_lossy(&out.stdout);
    let samples = text.lines().filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']));
    samples.filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// The stand-in's processes on the host (hostPID pod), titled as vLLM's:
/// the API server as started, its child the engine core retitled by
/// setproctitle. Returns the engine's pid.
fn assert_titled_like_vllm() -> u64 {
    let read = |pid: &str, file: &str| std::fs::read(format!("/proc/{pid}/{file}")).unwrap_or_default();
    let pids: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    let in_node = |pid: &str| String::from_utf8_lossy(&read(pid, "cgroup")).contains("/cuda-tracer-node/");
    let server_argv = b"python3\0-m\0vllm.entrypoints.openai.api_server\0--model=";
    let servers: Vec<&String> =
        pids.iter().filter(|p| in_node(p) && read(p, "cmdline").starts_with(server_argv)).collect();
    assert_eq!(servers.len(), 1, "one vLLM API server process in the node's pods: {servers:?}");
    let ppid = |pid: &str| {
        String::from_utf8_lossy(&read(pid, "stat"))
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().nth(1).map(str::to_string))
    };
    let engines: Vec<&String> = pids.iter().filter(|p| ppid(p).as_deref() == Some(servers[0].as_str())).collect();
    assert_eq!(engines.len(), 1, "one engine core child of the API server: {engines:?}");
    let cmdline = read(engines[0], "cmdline");
    assert!(cmdline.starts_with(b"VLLM::EngineCore\0"), "engine cmdline: {:?}", String::from_utf8_lossy(&cmdline));
    assert!(cmdline[16..].iter().all(|&b| b == 0), "setproctitle pads the old argv with NULs: {cmdline:?}");
    assert_eq!(read(engines[0], "comm"), b"VLLM::EngineCor\n", "comm: the title cut to 15 bytes");
    engines[0].parse().expect("a pid")
}

/// The session the sidecar uploaded: finished, the engine core among its
/// processes, nothing dropped, the stand-in's `/metrics` scraped.
fn assert_uploaded_session(objects: &std::collections::BTreeMap<String, Vec<u8>>, engine: u64) {
    let keys: Vec<&String> = objects.keys().collect();
    let metadata = objects
        .iter()
        .find(|(k, _)| k.ends_with("/metadata.json"))
        .unwrap_or_else(|| panic!("no metadata.json uploaded: {keys:?}"));
    let metadata: Value = serde_json::from_slice(metadata.1).expect("metadata.json is JSON");
    let processes = metadata["processes"].as_array().expect("processes");
    let process =
        processes.iter().find(|p| p["pid"] == engine).unwrap_or_else(|| panic!("engine {engine} not in {processes:?}"));
    assert!(process["cmdline"].as_str().is_some_and(|c| c.starts_with("VLLM::EngineCore")), "{process}");
    assert!(metadata["end_wall_clock"].is_string(), "the session was finished: {}", metadata["status"]);
    assert_eq!(metadata["dropped_events"], 0, "drops: {}", metadata["drops"]);
    assert!(
        metadata["kv_cache"]["scrapes"].as_u64().is_some_and(|n| n > 0),
        "vLLM metrics scraped: {}",
        metadata["kv_cache"]
    );
    let kv_rows = objects
        .iter()
        .filter(|(k, _)| Path::new(k).file_name().is_some_and(|n| n.to_string_lossy().starts_with("kv_cache_usage")))
        .map(|(_, bytes)| bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count().saturating_sub(1))
        .sum::<usize>();
    assert!(kv_rows > 0, "rows of the stand-in's KV-cache usage uploaded: {keys:?}");
}

/// The engine's calls in the uploaded trace files, in file order: with
/// hostPID the sidecar may see other vLLM-named processes on the machine.
fn trace_lines(objects: &std::collections::BTreeMap<String, Vec<u8>>, engine: u64) -> Vec<Value> {
    let files: Vec<(&String, &Vec<u8>)> = objects.iter().filter(|(k, _)| is_trace_file(k)).collect();
    assert!(!files.is_empty(), "no trace file uploaded: {:?}", objects.keys().collect::<Vec<_>>());
    files
        .iter()
        .flat_map(|(k, bytes)| {
            let text = String::from_utf8(bytes.to_vec()).unwrap_or_else(|e| panic!("{k}: {e}"));
            assert!(text.is_empty() || text.ends_with('\n'), "{k} ends mid-line");
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{k}: {e}: {l}")))
                .collect::<Vec<_>>()
        })
        .filter(|l| l["pid"] == engine)
        .collect()
}

fn is_trace_file(key: &str) -> bool {
    Path::new(key)
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("trace_") && n.ends_with(".jsonl"))
}
