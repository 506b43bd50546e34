//! The sidecar on a real node: the shipped sidecar Deployment (`kubectl
//! kustomize k8s`) runs on a single-node cluster with containerd, the vLLM
//! container replaced by the fixture stand-in; the tracer container runs as
//! shipped (image, capabilities, seccomp, read-only root, hostPID), finds the
//! stand-in in the other container, attaches, and the trace it writes to the
//! pod's trace volume matches the stand-in's ground truth, call for call.

use std::path::Path;

use cuda_tracer_tests::{node::KubeNode, node_config, node_images, node_pods::*, node_sidecar::*};
use serde_json::json;

/// Held by each test for its whole run: the teardown test compares the host
/// before and after its node, with no other node of this binary in between
/// (the node's own lock only covers the node's lifetime).
static ONE_NODE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_node_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_NODE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the node may change on the host, as text (see node_host.rs).
fn host_state() -> Vec<String> {
    let mut state: Vec<String> = node_config::HOST_SYSCTLS
        .iter()
        .map(|s| format!("{s}={}", std::fs::read_to_string(Path::new("/proc/sys").join(s)).unwrap_or_default()))
        .collect();
    state.extend(node_config::HOST_DIRS.iter().map(|d| format!("{d} exists: {}", Path::new(d).exists())));
    for link in [node_config::VETH_HOST, node_config::VETH_PEER, node_config::BRIDGE] {
        state.push(format!("link {link}: {}", Path::new("/sys/class/net").join(link).exists()));
    }
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().filter_map(|e| e.ok()) {
        let cgroup = hierarchy.path().join(node_config::CGROUP_ROOT);
        state.push(format!("{}: {}", cgroup.display(), cgroup.exists()));
    }
    state
}

/// A pod runs to completion from a locally imported image, another is
/// still running when the node goes: teardown stops it and leaves the host
/// as it was (links, cgroups, sysctls, directories, mounts).
#[test]
fn pods_run_on_the_node_and_teardown_restores_the_host() {
    let _alone = one_node_at_a_time();
    // The host is compared with no other node on the machine in between.
    let lock = cuda_tracer_tests::node_host::machine_lock();
    let _held_past_teardown = lock.try_clone().unwrap();
    let before = host_state();
    let node = KubeNode::start_holding(lock);
    node.import_image(&node_images::standin_image(&node.dir().join("images")));
    let pod = |name: &str, args: &[&str]| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                // The workload is PID 1 of its container, which ignores SIGTERM.
                "terminationGracePeriodSeconds": 2,
                "containers": [{
                    "name": "workload", "image": node_images::STANDIN_IMAGE, "imagePullPolicy": "Never",
                    "args": args,
                }],
            },
        })
    };
    node.cluster().apply_json(&pod("plain", &["--iterations", "1", "--no-child"]));
    node.cluster().apply_json(&pod("held", &["--iterations", "1", "--wait-for-file", "/never"]));
    wait_for_phase(&node, "default", "plain", "Succeeded");
    wait_for_phase(&node, "default", "held", "Running");
    let dir = node.dir().display().to_string();
    drop(node);
    assert_eq!(host_state(), before, "the host after teardown");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(&dir), "mounts left under {dir}:\n{mountinfo}");
}

#[test]
fn the_shipped_sidecar_traces_the_vllm_standin_in_the_other_container() {
    let _alone = one_node_at_a_time();
    let node = KubeNode::start();
    let images = node.dir().join("images");
    node.import_image(&node_images::tracer_image(&images));
    node.import_image(&node_images::standin_image(&images));
    assert_sidecar_traces_the_standin(&node);
}
