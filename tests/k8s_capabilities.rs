//! The sidecar's capability set is enough, for real: the tracer runs as
//! root with exactly the capabilities the manifest adds (bounding set cut
//! with setpriv, no_new_privs as under allowPrivilegeEscalation: false) and
//! traces a process that has every capability, as vLLM in another container
//! would; without SYS_PTRACE it cannot open the target's libraries.

use std::{process::Command, time::Duration};

use cuda_tracer_tests::{
    assert_matches_truth, fixtures, held_workload, load_trace, load_truth, session_dir, signal, tracer, wait_attached,
    wait_with_deadline, workload, KillOnDrop,
};
use k8s_openapi::api::apps::v1::Deployment;

use crate::k8s_support::*;

/// The capabilities the sidecar manifest adds to the tracer container.
fn manifest_caps() -> Vec<String> {
    let docs = parse_docs("kustomize k8s", &kustomize(&root().join("k8s")));
    let deploy: Deployment = docs.iter().find(|d| d.kind == "Deployment").expect("the vLLM Deployment").typed();
    let spec = deploy.spec.template.spec.expect("pod spec");
    let sc = container(&spec, "ebpf-tracer").security_context.clone().expect("securityContext");
    sc.capabilities.and_then(|c| c.add).expect("added capabilities")
}

/// `setpriv` running `tracer` as root with only `caps` (as a container's
/// process gets them), no_new_privs set.
fn with_caps(caps: &[String]) -> Command {
    let keep: Vec<String> = caps.iter().map(|c| format!("+{}", c.to_lowercase())).collect();
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--bounding-set=-all,{}", keep.join(",")))
        .args(["--inh-caps=-all", "--no-new-privs", "--"])
        .arg(tracer());
    cmd
}

fn cap_eff(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim().to_string();
    u64::from_str_radix(&hex, 16).unwrap()
}

#[test]
fn tracer_with_only_the_manifest_capabilities_traces_a_fully_privileged_process() {
    let caps = manifest_caps();
    let tmp = tempfile::tempdir().unwrap();
    let traces = tmp.path().join("traces");
    let (mut target, truth, go) = held_workload(tmp.path(), &["--iterations", "5"]);
    let pid = target.0.id().to_string();
    let mut daemon = KillOnDrop(
        with_caps(&caps)
            .args(["run", "--no-upload", "--pid", &pid, "--target-process", "^no-such-process$"])
            .args(["--scan-interval-ms", "100", "--trace-dir"])
            .arg(&traces)
            .spawn()
            .unwrap(),
    );
    wait_attached("the capability-limited daemon to attach", &traces, &["libcudart.so.12", "libcuda.so.1"]);
    // setpriv exec'd the tracer: same pid, and it holds exactly the manifest's capabilities.
    const BITS: [(&str, u32); 4] = [("BPF", 39), ("PERFMON", 38), ("SYS_PTRACE", 19), ("SYS_ADMIN", 21)];
    let expected = caps.iter().fold(0u64, |acc, c| {
        let bit = BITS.iter().find(|(n, _)| n == c).unwrap_or_else(|| panic!("unknown capability {c}")).1;
        acc | 1 << bit
    });
    assert_eq!(cap_eff(daemon.0.id()), expected, "CapEff of the tracer");
    assert_eq!(cap_eff(target.0.id()) & expected, expected, "the target has all capabilities");

    std::fs::write(&go, b"").unwrap();
    assert!(wait_with_deadline(&mut target.0, Duration::from_secs(60)).success());
    signal(&daemon.0, libc::SIGTERM);
    assert!(wait_with_deadline(&mut daemon.0, Duration::from_secs(90)).success());
    let trace = load_trace(&session_dir(&traces).unwrap());
    assert_matches_truth(&trace.lines, &load_truth(&truth), false);
}

#[test]
fn without_sys_ptrace_the_target_libraries_are_out_of_reach() {
    let caps: Vec<String> = manifest_caps().into_iter().filter(|c| c != "SYS_PTRACE").collect();
    let mut target = KillOnDrop(
        Command::new(workload())
            .args(["--iterations", "1", "--wait-for-file", "/nonexistent/never"])
            .env("LD_LIBRARY_PATH", fixtures())
            .spawn()
            .unwrap(),
    );
    let pid = target.0.id().to_string();
    let out = with_caps(&caps).args(["check", "--pid", &pid]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("[ ok ] BPF programs load"), "{text}");
    // Another process's root (its container's files) needs CAP_SYS_PTRACE.
    assert!(text.contains(&format!("[FAIL] reading /proc/{pid}/root/")), "{text}");
    assert!(text.contains("Permission denied"), "{text}");
    signal(&target.0, libc::SIGKILL);
    let _ = target.0.wait();
}
