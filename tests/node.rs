//! A real single-node Kubernetes cluster for the end-to-end tests: etcd and
//! kube-apiserver ([`KubeCluster`]), kube-controller-manager, kube-scheduler,
//! a kubelet and Debian's containerd, all state under one private directory,
//! the node IP on a veth /32. Dropping it deletes every pod, stops the
//! processes and restores the host (links, netns, mounts, cgroups, sysctls,
//! the directories the kubelet and libcni create), also after a panic.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use crate::{
    free_port,
    kube::{output_with_deadline, spawn_logged, KubeCluster},
    node_config::*,
    node_host::HostState,
    KillOnDrop,
};

/// How long the node may take to report Ready (about 25 s here).
const READY_DEADLINE: Duration = Duration::from_secs(120);
/// How long the kubelet may take to stop every pod at teardown.
const DRAIN_DEADLINE: Duration = Duration::from_secs(90);

/// A Kubernetes binary built by `cargo xtask setup` (env var, else the cache).
fn kube_binary(var: &str, name: &str) -> PathBuf {
    crate::from_setup(
        var,
        crate::setup_cache().join("kube").join(name),
        " (it builds the Kubernetes binaries once per machine and installs containerd, runc and the CNI plugins)",
    )
}

/// Debian's `containerd` or its sibling `ctr` (apt, by setup).
fn runtime_binary(name: &str) -> PathBuf {
    crate::from_setup("CUDA_TRACER_CONTAINERD", "/usr/bin/containerd".into(), " (it installs Debian's containerd)")
        .with_file_name(name)
}

/// The running node. Fields drop in teardown order (see [`Drop`]).
pub struct KubeNode {
    kubelet: Option<KillOnDrop>,
    scheduler: Option<KillOnDrop>,
    controller_manager: Option<KillOnDrop>,
    containerd: Option<KillOnDrop>,
    host: Option<HostState>,
    pub cluster: Option<KubeCluster>,
    dir: tempfile::TempDir,
}

impl KubeNode {
    /// Brings the whole node up and waits until it is Ready and the
    /// `default` ServiceAccount exists.
    pub fn start() -> Self {
        Self::start_holding(crate::node_host::machine_lock())
    }

    /// [`KubeNode::start`] with the machine-wide node lock already taken
    /// ([`crate::node_host::machine_lock`]): a test that keeps a clone of it
    /// holds the machine past the node's teardown.
    pub fn start_holding(lock: std::fs::File) -> Self {
        let started = Instant::now();
        let host = HostState::take(lock);
        let dir = tempfile::Builder::new().prefix("cuda-tracer-node.").tempdir().expect("node dir");
        let mut node = Self {
            kubelet: None,
            scheduler: None,
            controller_manager: None,
            containerd: None,
            host: Some(host),
            cluster: None,
            dir,
        };
        node.host.as_mut().expect("host state").set_up_network();
        node.start_containerd();
        node.import_image(&crate::node_images::pause_image(&node.dir.path().join("images")));
        node.cluster = Some(KubeCluster::start_with(&[
            "--kubelet-preferred-address-types=InternalIP",
            // Webhook calls go to a Service's endpoint (the pod IP on the
            // node's bridge) instead of its cluster IP: no kube-proxy here.
            "--enable-aggregator-routing=true",
            &format!("--advertise-address={NODE_IP}"),
        ]));
        node.start_control_loops();
        node.start_kubelet();
        node.wait_ready();
        eprintln!("node: Ready {:.1?} after start (lock wait included)", started.elapsed());
        node
    }

    /// The node's private directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The control plane (kubectl and friends).
    pub fn cluster(&self) -> &KubeCluster {
        self.cluster.as_ref().expect("cluster is up")
    }

    /// containerd's socket (`ctr --address`, deploy.sh's `CONTAINERD_ADDRESS`).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd/containerd.sock")
    }

    fn start_containerd(&mut self) {
        let d = self.dir.path().join("containerd");
        std::fs::create_dir_all(d.join("net.d")).expect("containerd dir");
        std::fs::write(d.join("config.toml"), containerd_toml(&d)).expect("containerd config");
        std::fs::write(d.join("net.d/10-cuda-tracer.conflist"), cni_conflist(&d)).expect("CNI config");
        let mut cmd = Command::new(runtime_binary("containerd"));
        cmd.arg("--config").arg(d.join("config.toml"));
        self.containerd = Some(spawn_logged(&mut cmd, &d.join("containerd.log")));
        let sock = self.socket();
        self.wait_until("containerd", Duration::from_secs(60), &d.join("containerd.log"), |n| {
            sock.exists() && n.ctr(&["version"]).status.success()
        });
    }

    /// Runs `ctr` against this node's containerd, in the CRI namespace.
    pub fn ctr(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(runtime_binary("ctr"));
        cmd.arg("--address").arg(self.socket()).args(["-n", "k8s.io"]).args(args);
        output_with_deadline(cmd, Duration::from_secs(120))
    }

    /// `ctr images import` of a docker-archive tar.
    pub fn import_image(&self, archive: &Path) {
        let out = self.ctr(&["images", "import", &archive.display().to_string()]);
        assert!(
            out.status.success(),
            "ctr images import {}: {}{}",
            archive.display(),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }

    fn start_control_loops(&mut self) {
        let cluster = self.cluster.as_ref().expect("cluster");
        let (kubeconfig, d) = (cluster.kubeconfig().to_path_buf(), cluster.scratch_dir().to_path_buf());
        let mut cm = Command::new(kube_binary("CUDA_TRACER_KUBE_CONTROLLER_MANAGER", "kube-controller-manager"));
        cm.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--service-account-private-key-file={}", d.join("sa.key").display()))
            .args(["--leader-elect=false", "--port=0", "--bind-address=127.0.0.1", "--v=1"])
            .arg(format!("--secure-port={}", free_port()));
        self.controller_manager = Some(spawn_logged(&mut cm, &self.dir.path().join("controller-manager.log")));
        let mut sched = Command::new(kube_binary("CUDA_TRACER_KUBE_SCHEDULER", "kube-scheduler"));
        sched
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(["--leader-elect=false", "--port=0", "--bind-address=127.0.0.1", "--v=1"])
            .arg(format!("--secure-port={}", free_port()));
        self.scheduler = Some(spawn_logged(&mut sched, &self.dir.path().join("scheduler.log")));
    }

    fn start_kubelet(&mut self) {
        let d = self.dir.path().join("kubelet");
        std::fs::create_dir_all(&d).expect("kubelet dir");
        std::fs::write(d.join("config.yaml"), kubelet_yaml(free_port(), free_port())).expect("kubelet config");
        let kubeconfig = self.cluster().kubeconfig().to_path_buf();
        let mut cmd = Command::new(kube_binary("CUDA_TRACER_KUBELET", "kubelet"));
        cmd.arg(format!("--config={}", d.join("config.yaml").display()))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(["--container-runtime=remote", "--runtime-request-timeout=5m"])
            .arg(format!("--container-runtime-endpoint=unix://{}", self.socket().display()))
            .arg(format!("--root-dir={}", d.join("root").display()))
            .arg(format!("--cert-dir={}", d.join("pki").display()))
            .arg(format!("--volume-plugin-dir={}", d.join("volume-plugins").display()))
            .arg(format!("--node-ip={NODE_IP}"))
            .arg(format!("--hostname-override={NODE_NAME}"))
            .arg(format!("--pod-infra-container-image={PAUSE_IMAGE}"))
            .arg("--v=1");
        self.kubelet = Some(spawn_logged(&mut cmd, &self.dir.path().join("kubelet.log")));
    }

    /// Waits for the node's Ready condition and the `default` ServiceAccount.
    fn wait_ready(&mut self) {
        let log = self.dir.path().join("kubelet.log");
        self.wait_until("the node to be Ready", READY_DEADLINE, &log, |n| {
            let jsonpath = r#"-o=jsonpath={.status.conditions[?(@.type=="Ready")].status}"#;
            let out = n.cluster().kubectl_output(&["get", "node", NODE_NAME, jsonpath]);
            String::from_utf8_lossy(&out.stdout).trim() == "True"
                && n.cluster().kubectl_output(&["get", "serviceaccount", "default"]).status.success()
        });
    }

    /// Polls `cond` until it holds, failing with `log`'s tail (and any node
    /// process that exited) after `deadline`.
    fn wait_until(&mut self, what: &str, deadline: Duration, log: &Path, cond: impl Fn(&Self) -> bool) {
        let start = Instant::now();
        while !cond(self) {
            let mut exited = None;
            for (name, child) in [
                ("containerd", &mut self.containerd),
                ("kubelet", &mut self.kubelet),
                ("kube-scheduler", &mut self.scheduler),
                ("kube-controller-manager", &mut self.controller_manager),
            ] {
                if let Some(status) = child.as_mut().and_then(|c| c.0.try_wait().ok().flatten()) {
                    exited = Some((name, status));
                }
            }
            if let Some((name, status)) = exited {
                panic!("{name} exited ({status}) while waiting for {what}:\n{}", self.logs());
            }
            assert!(start.elapsed() < deadline, "timed out ({deadline:?}) waiting for {what}:\n{}", {
                crate::kube::log_tail(log, 40)
            });
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The tail of every node log, for failure messages.
    pub fn logs(&self) -> String {
        ["containerd/containerd.log", "kubelet.log", "scheduler.log", "controller-manager.log"]
            .iter()
            .map(|name| format!("--- {name}:\n{}\n", crate::kube::log_tail(&self.dir.path().join(name), 25)))
            .collect()
    }

    /// Deletes every workload and pod, then waits until the kubelet has
    /// stopped every sandbox (so CNI DEL ran and volumes are unmounted).
    fn drain(&self) {
        let Some(cluster) = self.cluster.as_ref() else { return };
        let _ = cluster.kubectl_output(&["delete", "deployments,daemonsets,replicasets,jobs", "--all", "-A"]);
        let _ = cluster.kubectl_output(&["delete", "pods", "--all", "-A", "--wait=false"]);
        let start = Instant::now();
        while start.elapsed() < DRAIN_DEADLINE {
            let pods = cluster.kubectl_output(&["get", "pods", "-A", "-o", "name"]);
            let tasks = self.ctr(&["tasks", "list"]);
            // Exited containers stay until the kubelet's garbage collection;
            // what matters is that nothing runs (sandboxes stopped, CNI DEL done).
            let running = String::from_utf8_lossy(&tasks.stdout).lines().skip(1).any(|l| !l.contains("STOPPED"));
            if pods.status.success() && pods.stdout.is_empty() && tasks.status.success() && !running {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        eprintln!("node teardown: containers still present after {DRAIN_DEADLINE:?}; cleaning up by force");
    }
}

impl Drop for KubeNode {
    fn drop(&mut self) {
        let started = Instant::now();
        if self.kubelet.is_some() {
            self.drain();
        }
        self.kubelet = None;
        self.scheduler = None;
        self.controller_manager = None;
        self.containerd = None;
        self.cluster = None;
        if let Some(mut host) = self.host.take() {
            host.restore(self.dir.path(), &self.socket());
        }
        eprintln!("node: torn down in {:.1?}", started.elapsed());
    }
}
