//! The tracer's capability sets are enough, for real, and what is left out
//! is missed with a clear word: the tracer runs as root with exactly the
//! capabilities a manifest adds (bounding set cut with setpriv,
//! no_new_privs as under allowPrivilegeEscalation: false). With the
//! DaemonSet's set (the webhook's sidecar has the same) it traces a process
//! that has every capability, as vLLM in another pod may; with the sidecar
//! Deployment's (no SYS_PTRACE) a process holding none, as the shipped vLLM
//! container (it drops ALL); without SYS_PTRACE a process with capabilities
//! is out of reach, and without BPF or PERFMON nothing loads: `check` and
//! the daemon name the capability and the fix.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use cuda_tracer_tests::{
    assert_matches_truth, fixtures, held_workload, load_trace, load_truth, session_dir, signal, tracer, wait_attached,
    wait_with_deadline, workload, KillOnDrop,
};
use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment},
    core::v1::PodSpec,
};

use crate::k8s_support::*;

/// The capabilities the manifests in `dir` add to the tracer container.
fn manifest_caps(dir: &str) -> Vec<String> {
    let docs = parse_docs(&format!("kustomize {dir}"), &kustomize(&root().join(dir)));
    let spec: PodSpec = match docs.iter().find(|d| d.kind == "Deployment") {
        Some(d) => d.typed::<Deployment>().spec.template.spec.expect("pod spec"),
        None => {
            let ds = docs.iter().find(|d| d.kind == "DaemonSet").expect("a Deployment or DaemonSet");
            ds.typed::<DaemonSet>().spec.template.spec.expect("pod spec")
        }
    };
    let sc = container(&spec, "ebpf-tracer").security_context.clone().expect("securityContext");
    sc.capabilities.and_then(|c| c.add).expect("added capabilities")
}

/// The sidecar Deployment's added capabilities.
fn sidecar_caps() -> Vec<String> {
    manifest_caps("k8s")
}

/// The DaemonSet's (and the webhook's sidecar's, tests/webhook_hostile.rs).
fn daemonset_caps() -> Vec<String> {
    manifest_caps("k8s/daemonset")
}

/// `setpriv` running `program` as root with only `caps` (as a container's
/// process gets them), no_new_privs set.
fn with_caps(caps: &[String], program: impl AsRef<std::ffi::OsStr>) -> Command {
    let keep: Vec<String> = caps.iter().map(|c| format!("+{}", c.to_lowercase())).collect();
    let mut cmd = Command::new("setpriv");
    let bounding = if keep.is_empty() { "-all".to_string() } else { format!("-all,{}", keep.join(",")) };
    cmd.arg(format!("--bounding-set={bounding}")).args(["--inh-caps=-all", "--no-new-privs", "--"]).arg(program);
    cmd
}

fn cap_eff(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim().to_string();
    u64::from_str_radix(&hex, 16).unwrap()
}

fn cap_bits(caps: &[String]) -> u64 {
    const BITS: [(&str, u32); 4] = [("BPF", 39), ("PERFMON", 38), ("SYS_PTRACE", 19), ("SYS_ADMIN", 21)];
    caps.iter().fold(0u64, |acc, c| {
        let bit = BITS.iter().find(|(n, _)| n == c).unwrap_or_else(|| panic!("unknown capability {c}")).1;
        acc | 1 << bit
    })
}

/// Runs the daemon with `caps` against `target` (held until `go`), and
/// checks the trace against the target's ground truth.
fn traces_with(caps: &[String], tmp: &Path, mut target: KillOnDrop, truth: &Path, go: &Path, extra: &[&str]) {
    let traces = tmp.join("traces");
    let pid = target.0.id().to_string();
    let mut daemon = KillOnDrop(
        with_caps(caps, tracer())
            .args(["run", "--no-upload", "--pid", &pid, "--target-process", "^no-such-process$"])
            .args(extra)
            .args(["--scan-interval-ms", "100", "--trace-dir"])
            .arg(&traces)
            .spawn()
            .unwrap(),
    );
    wait_attached("the capability-limited daemon to attach", &traces, &["libcudart.so.12", "libcuda.so.1"]);
    // setpriv exec'd the tracer: same pid, and it holds exactly the manifest's capabilities.
    assert_eq!(cap_eff(daemon.0.id()), cap_bits(caps), "CapEff of the tracer");
    std::fs::write(go, b"").unwrap();
    assert!(wait_with_deadline(&mut target.0, Duration::from_secs(60)).success());
    signal(&daemon.0, libc::SIGTERM);
    assert!(wait_with_deadline(&mut daemon.0, Duration::from_secs(90)).success());
    let trace = load_trace(&session_dir(&traces).unwrap());
    assert_matches_truth(&trace.lines, &load_truth(truth), false);
}

#[test]
fn tracer_with_only_the_daemonset_capabilities_traces_a_fully_privileged_process() {
    let caps = daemonset_caps();
    let tmp = tempfile::tempdir().unwrap();
    let (target, truth, go) = held_workload(tmp.path(), &["--iterations", "5"]);
    let all = cap_bits(&["BPF", "PERFMON", "SYS_PTRACE", "SYS_ADMIN"].map(String::from));
    assert_eq!(cap_eff(target.0.id()) & all, all, "the target has all capabilities");
    traces_with(&caps, tmp.path(), target, &truth, &go, &[]);
}

#[test]
fn tracer_with_only_the_sidecar_capabilities_traces_a_process_that_dropped_all() {
    let caps = sidecar_caps();
    assert!(!caps.iter().any(|c| c == "SYS_PTRACE"), "the sidecar adds SYS_PTRACE: {caps:?}");
    let tmp = tempfile::tempdir().unwrap();
    let (truth, go) = (tmp.path().join("truth"), tmp.path().join("go"));
    std::fs::create_dir_all(&truth).unwrap();
    // As the shipped vLLM container: root, no capability at all.
    let target = KillOnDrop(
        with_caps(&[], workload())
            .args(["--iterations", "5", "--wait-for-file"])
            .arg(&go)
            .env("CUDA_FIXTURE_TRUTH_DIR", &truth)
            .env("LD_LIBRARY_PATH", fixtures())
            .spawn()
            .unwrap(),
    );
    wait_for_cap_eff(target.0.id(), 0);
    traces_with(&caps, tmp.path(), target, &truth, &go, &[]);
}

/// Waits until setpriv has exec'd into the workload (its capabilities cut).
fn wait_for_cap_eff(pid: u32, want: u64) {
    cuda_tracer_tests::wait_for("setpriv to exec the workload", Duration::from_secs(10), || cap_eff(pid) == want);
}

/// `check` (with `--pid` of `target` when given) run with `caps`: its
/// output, after asserting it failed.
fn failing_check(caps: &[String], target: Option<u32>) -> String {
    let pid = target.map(|p| p.to_string());
    let out = with_caps(caps, tracer()).arg("check").args(pid.iter().flat_map(|p| ["--pid", p])).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    text
}

#[test]
fn without_sys_ptrace_a_process_with_capabilities_is_out_of_reach() {
    let caps: Vec<String> = daemonset_caps().into_iter().filter(|c| c != "SYS_PTRACE").collect();
    let mut target = KillOnDrop(
        Command::new(workload())
            .args(["--iterations", "1", "--wait-for-file", "/nonexistent/never"])
            .env("LD_LIBRARY_PATH", fixtures())
            .spawn()
            .unwrap(),
    );
    let pid = target.0.id();
    let text = failing_check(&caps, Some(pid));
    assert!(text.contains("[ ok ] BPF programs load"), "{text}");
    // Another process's root (its container's files) needs CAP_SYS_PTRACE.
    assert!(text.contains(&format!("[FAIL] reading /proc/{pid}/root/")), "{text}");
    assert!(text.contains("Permission denied"), "{text}");
    // And check says so: which capability, why, and where to add it.
    assert!(text.contains(&format!("[FAIL] CAP_SYS_PTRACE missing: process {pid} holds CAP_CHOWN")), "{text}");
    assert!(text.contains("fix: add SYS_PTRACE to the tracer container's securityContext.capabilities.add"), "{text}");
    signal(&target.0, libc::SIGKILL);
    let _ = target.0.wait();
}

#[test]
fn without_bpf_or_perfmon_check_and_the_daemon_name_the_capability() {
    for (dropped, says) in [("BPF", "CAP_BPF"), ("PERFMON", "CAP_PERFMON")] {
        let caps: Vec<String> = sidecar_caps().into_iter().filter(|c| c != dropped).collect();
        let fix = format!("add {dropped} to the tracer container's securityContext.capabilities.add");
        let text = failing_check(&caps, None);
        assert!(text.contains(&format!("[FAIL] {says} missing: it ")), "{text}");
        assert!(text.contains("[FAIL] BPF programs do not load"), "{text}");
        assert!(text.contains(&format!("fix: {fix}")), "{text}");
        let tmp = tempfile::tempdir().unwrap();
        let out = with_caps(&caps, tracer())
            .args(["run", "--no-upload", "--target-process", "^no-such-process$", "--trace-dir"])
            .arg(tmp.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "the daemon ran without {dropped}: {stderr}");
        assert!(stderr.contains(&format!("the tracer lacks {says} (")) && stderr.contains(&fix), "{stderr}");
    }
}

/// Whether this kernel refuses perf-event uprobes without CAP_SYS_ADMIN for
/// certain: mainline 6.16 took the 2025 fix (stable kernels before that
/// may or may not have it).
fn kernel_has_the_uprobe_fix() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (6, 16)
}

#[test]
fn perf_event_uprobes_need_sys_admin_and_the_daemon_says_so() {
    if !kernel_has_the_uprobe_fix() {
        eprintln!("skipped: kernel before 6.16, which may lack the 2025 uprobe fix");
        return;
    }
    // The DaemonSet's set, perf-event uprobes forced (as on kernels before
    // 6.6, which have no uprobe_multi): the kernel refuses them.
    let caps = daemonset_caps();
    let tmp = tempfile::tempdir().unwrap();
    let (target, _truth, _go) = held_workload(tmp.path(), &["--iterations", "1"]);
    let log = tmp.path().join("daemon.log");
    let mut daemon = KillOnDrop(
        with_caps(&caps, tracer())
            .args(["run", "--no-upload", "--per-probe-uprobes", "--pid", &target.0.id().to_string()])
            .args(["--target-process", "^no-such-process$", "--trace-dir"])
            .arg(tmp.path().join("traces"))
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let said = || std::fs::read_to_string(&log).unwrap_or_default();
    cuda_tracer_tests::wait_for("the daemon to say why it cannot attach", Duration::from_secs(60), || {
        said().contains("library not attached")
    });
    let text = said();
    assert!(
        text.contains("perf_event_open") && text.contains("the tracer lacks CAP_SYS_ADMIN (opens perf-event uprobes"),
        "{text}"
    );
    assert!(text.contains("add SYS_ADMIN to the tracer container's securityContext.capabilities.add"), "{text}");
    signal(&daemon.0, libc::SIGTERM);
    assert!(wait_with_deadline(&mut daemon.0, Duration::from_secs(90)).success());
    drop(target);

    // With SYS_ADMIN added, as k8s/README.md says for those kernels: traced.
    let with_admin: Vec<String> = caps.into_iter().chain(["SYS_ADMIN".to_string()]).collect();
    let tmp = tempfile::tempdir().unwrap();
    let (target, truth, go) = held_workload(tmp.path(), &["--iterations", "2"]);
    traces_with(&with_admin, tmp.path(), target, &truth, &go, &["--per-probe-uprobes"]);
}
