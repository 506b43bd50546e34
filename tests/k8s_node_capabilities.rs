//! Least privilege on a real node: the shipped sidecar Deployment runs on one
//! node first as shipped, then with each capability it adds to the tracer
//! container removed in turn (everything else as shipped, seccomp
//! `RuntimeDefault` included), then with `SYS_ADMIN` added (what
//! k8s/README.md tells users of kernels before 6.6 to do), then with the
//! vLLM container holding the runtime's default capabilities instead of
//! none (as pods the DaemonSet and the webhook trace may): the tracer then
//! needs `SYS_PTRACE`, which the DaemonSet and the webhook's sidecar add.
//! For each: does the tracer find the vLLM stand-in in the other container,
//! attach and trace every call of its ground truth; and where it cannot, do
//! its log and `cuda-tracer check` (run in the tracer container when it
//! stays up) name the missing capability and the fix. Prints the table.

use std::{path::Path, time::Duration};

use cuda_tracer_tests::{
    assert_matches_truth, load_trace, load_truth, node::KubeNode, node_images, node_pods::*, session_dir,
    wait_attached, wait_for,
};
use serde_json::{json, Value};

const NAMESPACE: &str = "vllm-tracing";
const TRACER: &str = "ebpf-tracer";

/// The name the tracer's log and `check` must say when it lacks `cap`.
fn missing_capability_says(cap: &str) -> &'static str {
    match cap {
        "BPF" => "CAP_BPF",
        "PERFMON" => "CAP_PERFMON",
        "SYS_PTRACE" => "CAP_SYS_PTRACE",
        other => panic!("no expectation for the manifest's capability {other}: is it needed? add it here"),
    }
}

/// One deployment: the tracer container's added capabilities, whether the
/// vLLM container keeps the runtime's default capabilities (instead of
/// dropping ALL as shipped), and the capability the tracer must say it
/// lacks (`None`: it traces every call).
struct Scenario {
    label: String,
    caps: Vec<String>,
    vllm_default_caps: bool,
    lacks: Option<&'static str>,
}

/// One deployment of the sidecar with `caps` and what came of it.
struct Outcome {
    label: String,
    /// The tracer container kept running (false: it exited and restarted).
    stayed_up: bool,
    traced: usize,
    truth: usize,
    /// The tracer's log, and `check --pid` run in its container (when up).
    log: String,
    check: String,
    /// metadata.json's `missed_libraries` of the sessions it wrote.
    missed: String,
}

impl Outcome {
    /// What `check` or the log says is missing, first.
    fn why(&self) -> String {
        let said = self.check.lines().chain(self.log.lines()).find_map(|l| {
            let at = l.find("[FAIL] CAP_").map(|i| i + "[FAIL] ".len()).or_else(|| l.find("lacks CAP_"))?;
            Some(l[at..].chars().take(90).collect())
        });
        said.unwrap_or_default()
    }
}

/// The shipped manifests with the tracer container's added capabilities
/// replaced by `caps`, and a short grace period for the pod (the stand-in
/// is PID 1 of its container and ignores SIGTERM; the tracer finishes its
/// session within a second of it).
fn manifests_with(node: &KubeNode, traces: &Path, truth: &Path, scenario: &Scenario) -> Value {
    let mut manifests = sidecar_manifests(node, traces, truth);
    let items = manifests["items"].as_array_mut().unwrap();
    let deploy = items.iter_mut().find(|d| d["kind"] == "Deployment").unwrap();
    let spec = &mut deploy["spec"]["template"]["spec"];
    spec["terminationGracePeriodSeconds"] = json!(10);
    let containers = spec["containers"].as_array_mut().unwrap();
    let tracer = containers.iter_mut().find(|c| c["name"] == TRACER).unwrap();
    tracer["securityContext"]["capabilities"]["add"] = json!(scenario.caps);
    if scenario.vllm_default_caps {
        let vllm = containers.iter_mut().find(|c| c["name"] == "vllm").unwrap();
        vllm["securityContext"].as_object_mut().unwrap().remove("capabilities");
    }
    manifests
}

/// The shipped tracer container's added capabilities.
fn shipped_caps(node: &KubeNode, scratch: &Path) -> Vec<String> {
    let manifests = sidecar_manifests(node, scratch, scratch);
    let deploy = manifests["items"].as_array().unwrap().iter().find(|d| d["kind"] == "Deployment").unwrap();
    let containers = deploy["spec"]["template"]["spec"]["containers"].as_array().unwrap();
    let tracer = containers.iter().find(|c| c["name"] == TRACER).unwrap();
    let added = tracer["securityContext"]["capabilities"]["add"].as_array().unwrap();
    added.iter().map(|c| c.as_str().unwrap().to_string()).collect()
}

/// The pod's tracer container status once the vLLM container runs and the
/// tracer either runs or has exited at least once: (pod, tracer up).
fn settled_pod(node: &KubeNode) -> (String, bool) {
    let start = std::time::Instant::now();
    loop {
        let pods = node.cluster().get_json(NAMESPACE, "pods");
        if let Some(pod) = pods["items"].as_array().and_then(|p| p.first()) {
            let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let statuses = pod["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
            let status = |c: &str| statuses.iter().find(|s| s["name"] == c).cloned().unwrap_or_default();
            let (vllm, tracer) = (status("vllm"), status(TRACER));
            let exited = tracer["restartCount"].as_u64().unwrap_or(0) > 0 || tracer["state"]["terminated"].is_object();
            if vllm["state"]["running"].is_object() && (exited || tracer["state"]["running"].is_object()) {
                // A tracer that cannot load exits within a second of starting.
                std::thread::sleep(Duration::from_secs(2));
                let again = node.cluster().get_json(NAMESPACE, "pods");
                let tracer = again["items"][0]["status"]["containerStatuses"]
                    .as_array()
                    .and_then(|s| s.iter().find(|s| s["name"] == TRACER).cloned())
                    .unwrap_or_default();
                let up = tracer["restartCount"] == 0 && tracer["state"]["running"].is_object();
                return (name, up);
            }
        }
        assert!(start.elapsed() < POD_DEADLINE, "the sidecar pod did not start: {pods}\n{}", node.logs());
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The stand-in's pid (the pod shares the host's pid namespace).
fn standin_pid() -> u32 {
    let procs = std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok());
    let pids: Vec<u32> = procs
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default().starts_with(b"/usr/local/bin/vllm\0")
        })
        .collect();
    assert_eq!(pids.len(), 1, "one stand-in process: {pids:?}");
    pids[0]
}

fn kubectl_text(node: &KubeNode, args: &[&str]) -> (bool, String) {
    let out = node.cluster().kubectl_output(args);
    (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
}

/// Every line any session under `traces` wrote for `pids` (also sessions
/// of a tracer that exited), and their metadata's missed libraries.
fn traced_lines(traces: &Path, pids: &[u64]) -> (usize, String) {
    let (mut count, mut missed) = (0, String::new());
    for session in std::fs::read_dir(traces).unwrap().filter_map(|e| e.ok().map(|e| e.path())) {
        for file in std::fs::read_dir(&session).unwrap().filter_map(|e| e.ok().map(|e| e.path())) {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            if name.starts_with("trace_") && name.ends_with(".jsonl") {
                let pid_of = |l: &str| serde_json::from_str::<Value>(l).ok().and_then(|v| v["pid"].as_u64());
                count += text.lines().filter(|l| pid_of(l).is_some_and(|p| pids.contains(&p))).count();
            } else if name == "metadata.json" {
                let meta: Value = serde_json::from_str(&text).unwrap_or_default();
                missed += &meta["missed_libraries"].to_string();
            }
        }
    }
    (count, missed)
}

/// The log of a tracer container that exited: its last run's, once the
/// kubelet has it (the container may be restarting meanwhile).
fn exited_tracer_log(node: &KubeNode, pod: &str) -> String {
    let start = std::time::Instant::now();
    loop {
        for previous in [true, false] {
            let mut args = vec!["logs", "-n", NAMESPACE, pod, "-c", TRACER];
            args.extend(previous.then_some("--previous"));
            let (ok, text) = kubectl_text(node, &args);
            if ok && text.contains("error:") {
                return text;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no log of the exited tracer in {pod}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Deploys the sidecar as `scenario` says, runs the stand-in's calls,
/// deletes the Deployment and reads what the tracer wrote.
fn deploy_with(node: &KubeNode, scenario: &Scenario, expected_calls: usize) -> Outcome {
    let label = scenario.label.as_str();
    let dir = node.dir().join(label);
    let (traces, truth) = (shared_dir(dir.join("traces")), shared_dir(dir.join("truth")));
    let manifests = manifests_with(node, &traces, &truth, scenario);
    node.cluster().apply_json(&manifests);
    let (pod, stayed_up) = settled_pod(node);
    let pid = standin_pid().to_string();
    let (mut log, mut check) = (String::new(), String::new());
    if stayed_up {
        assert_confined_as_shipped(&manifests);
        let libs = ["libcudart.so.12", "libcuda.so.1"];
        // Attached to both libraries, or said why not.
        let start = std::time::Instant::now();
        // The manifest's LOG_FORMAT is JSON: `"message":"attached"` per library.
        while !(log.matches("\"attached\"").count() >= libs.len() || log.contains("CAP_")) {
            assert!(start.elapsed() < Duration::from_secs(60), "{label}: neither attached nor said why:\n{log}");
            std::thread::sleep(Duration::from_millis(500));
            log = kubectl_text(node, &["logs", "-n", NAMESPACE, &pod, "-c", TRACER]).1;
        }
        let args = ["exec", "-n", NAMESPACE, &pod, "-c", TRACER, "--", "cuda-tracer", "check", "--pid", &pid];
        check = kubectl_text(node, &args).1;
        if !log.contains("CAP_") {
            wait_attached("the sidecar's metadata to list both libraries", &traces, &libs);
        }
    } else {
        log = exited_tracer_log(node, &pod);
    }
    std::fs::write(truth.join("go"), b"").unwrap();
    wait_for("the stand-in's calls", Duration::from_secs(60), || load_truth(&truth).len() >= expected_calls);
    if stayed_up {
        log = kubectl_text(node, &["logs", "-n", NAMESPACE, &pod, "-c", TRACER]).1;
    }
    node.cluster().kubectl(&["delete", "deployment", "-n", NAMESPACE, "vllm"]);
    wait_for("the pod to be gone", Duration::from_secs(90), || {
        !node.cluster().kubectl_output(&["get", "pod", "-n", NAMESPACE, &pod]).status.success()
    });
    let truth_calls = load_truth(&truth);
    let pids: Vec<u64> = truth_calls.iter().filter_map(|c| c["pid"].as_u64()).collect();
    let (traced, missed) = traced_lines(&traces, &pids);
    if stayed_up && traced > 0 {
        // Traced: call for call, as the shipped sidecar test does.
        let trace = load_trace(&session_dir(&traces).expect("a session"));
        let lines: Vec<Value> =
            trace.lines.into_iter().filter(|l| l["pid"].as_u64().is_some_and(|p| pids.contains(&p))).collect();
        assert_matches_truth(&lines, &truth_calls, false);
    }
    Outcome { label: label.to_string(), stayed_up, traced, truth: truth_calls.len(), log, check, missed }
}

/// The deployments: as shipped, with SYS_ADMIN added, without each added
/// capability, and with a vLLM container that holds capabilities (without
/// and with SYS_PTRACE added, if the sidecar does not add it).
fn scenarios(shipped: &[String]) -> Vec<Scenario> {
    let with = |extra: &str| -> Vec<String> { shipped.iter().cloned().chain([extra.to_string()]).collect() };
    let scenario =
        |label: String, caps: Vec<String>, vllm_default_caps, lacks| Scenario { label, caps, vllm_default_caps, lacks };
    let mut all = vec![
        scenario("as-shipped".into(), shipped.to_vec(), false, None),
        scenario("plus-SYS_ADMIN".into(), with("SYS_ADMIN"), false, None),
    ];
    for cap in shipped {
        let fewer: Vec<String> = shipped.iter().filter(|c| *c != cap).cloned().collect();
        all.push(scenario(format!("without-{cap}"), fewer, false, Some(missing_capability_says(cap))));
    }
    if !shipped.iter().any(|c| c == "SYS_PTRACE") {
        all.push(scenario("vllm-caps".into(), shipped.to_vec(), true, Some("CAP_SYS_PTRACE")));
        all.push(scenario("vllm-caps+SYS_PTRACE".into(), with("SYS_PTRACE"), true, None));
    }
    all
}

#[test]
fn each_added_capability_is_needed_and_the_tracer_says_which_is_missing() {
    let node = KubeNode::start();
    let images = node.dir().join("images");
    node.import_image(&node_images::tracer_image(&images));
    node.import_image(&node_images::standin_image(&images));
    let expected_calls = reference_call_count(node.dir());
    let scenarios = scenarios(&shipped_caps(&node, node.dir()));
    let outcomes: Vec<Outcome> = scenarios.iter().map(|s| deploy_with(&node, s, expected_calls)).collect();
    drop(node);

    eprintln!("\n{:<22} {:<8} {:>13}  why", "deployment", "tracer", "calls traced");
    for o in &outcomes {
        let up = if o.stayed_up { "up" } else { "exited" };
        eprintln!("{:<22} {:<8} {:>6} / {:<4}  {}", o.label, up, o.traced, o.truth, o.why());
    }
    for (o, scenario) in outcomes.iter().zip(&scenarios) {
        let Some(says) = scenario.lacks else {
            assert!(
                o.stayed_up && o.traced == o.truth,
                "{}: traced {} of {} calls\n{}",
                o.label,
                o.traced,
                o.truth,
                o.log
            );
            assert!(!o.check.contains("[FAIL]"), "{}: check inside the pod:\n{}", o.label, o.check);
            continue;
        };
        assert_eq!(o.traced, 0, "{}: the stand-in's calls traced, though it lacks {says}\n{}", o.label, o.log);
        let told = format!("{}\n{}\n{}", o.log, o.check, o.missed);
        assert!(told.contains(says), "{}: nothing says {says} is missing:\n{told}", o.label);
        assert!(told.contains("securityContext.capabilities.add"), "{}: no fix given:\n{told}", o.label);
        if o.stayed_up {
            assert!(
                o.check.contains(&format!("[FAIL] {says}")),
                "{}: check does not fail on {says}:\n{}",
                o.label,
                o.check
            );
        }
    }
}
