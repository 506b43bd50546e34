//! The test node's configuration files: containerd's, the CNI network's and
//! the kubelet's, each keeping the node's state under one private directory
//! (facts and fixes from notes/test-infra.md, "A real node").

use std::path::Path;

/// The node's name (the kubelet's `--hostname-override`).
pub const NODE_NAME: &str = "cuda-tracer-node";
/// The node IP: a private /32 on one end of [`VETH_HOST`] (the node IP
/// cannot be loopback, and this kernel has no `dummy` module).
pub const NODE_IP: &str = "10.217.1.1";
/// The veth pair carrying the node IP (names at most 15 bytes).
pub const VETH_HOST: &str = "ctn-node0";
pub const VETH_PEER: &str = "ctn-node1";
/// The CNI bridge and the pods' subnet behind it.
pub const BRIDGE: &str = "ctn-br0";
pub const POD_SUBNET: &str = "10.217.0.0/24";
/// The CNI network's name (also the prefix of libcni's cache files).
pub const CNI_NETWORK: &str = "cuda-tracer-node";
/// The pods' cgroup parent in every cgroup v1 hierarchy.
pub const CGROUP_ROOT: &str = "cuda-tracer-node";
/// The sandbox image, built from Kubernetes' pause.c (no registry here).
pub const PAUSE_IMAGE: &str = "localhost/cuda-tracer/pause:3.4";

/// containerd 1.6: root, state, socket, runc state, netns and the opt
/// plugin's directory all under `dir`; CNI config and IPAM data too.
pub fn containerd_toml(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # root here lacks CAP_SYS_RESOURCE: without this every sandbox fails with
  # "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/net.d"
"#
    )
}

/// A bridge network without masquerading or port mapping (neither touches
/// the host's iptables); host-local IPAM keeps its leases under `dir`.
pub fn cni_conflist(dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": CNI_NETWORK,
        "plugins": [{
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "subnet": POD_SUBNET,
                "dataDir": dir.join("cni-ipam"),
                "routes": [{"dst": "0.0.0.0/0"}]
            }
        }]
    })
    .to_string()
}

/// The kubelet's configuration: cgroupfs under [`CGROUP_ROOT`], no host
/// iptables chains, no read-only port, no eviction on this shared disk,
/// anonymous access for the apiserver's logs/exec (test-only).
pub fn kubelet_yaml(port: u16, healthz_port: u16) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {NODE_IP}
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz_port}
cgroupDriver: cgroupfs
cgroupRoot: /{CGROUP_ROOT}
failSwapOn: false
resolvConf: ""
makeIPTablesUtilChains: false
staticPodPath: ""
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1Mi"
  imagefs.available: "1Mi"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
"#
    )
}

/// The sysctls the kubelet and the CNI bridge set on the host, restored at
/// teardown (the kubelet's kernel tunables; the bridge's `isGateway`).
pub const HOST_SYSCTLS: &[&str] = &[
    "net/ipv4/ip_forward",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

/// Host paths the kubelet or libcni create when missing (container logs,
/// libcni's result cache, the shims' sockets, the kubelet's device-plugin
/// socket and volume plugin directory): removed at teardown if new.
pub const HOST_DIRS: &[&str] = &[
    "/var/log/pods",
    "/var/log/containers",
    "/var/lib/cni",
    "/run/containerd",
    "/var/lib/kubelet",
    "/usr/libexec/kubernetes",
];
