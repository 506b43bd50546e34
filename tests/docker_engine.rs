//! A Docker engine of the test's own, for the image built the way README
//! shows users (`docker build`): Debian's dockerd 20.10 (package docker.io,
//! which `cargo xtask setup` installs without starting its service) on a
//! socket in a temporary directory. It makes no bridge and no iptables
//! rules, so the host's network (and a test node's) is left alone; builds
//! use the host's network (`BUILD_NETWORK=host` in deploy.sh). Its image
//! store and BuildKit cache live in setup's cache, so a second run reuses
//! the release build's cache mounts.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// Debian's engine and its client: the same version (BuildKit built in),
/// not whatever other `docker` client comes first on `PATH`.
const DOCKERD: &str = "/usr/sbin/dockerd";
const DOCKER_CLIENT: &str = "/usr/bin/docker";
/// The label on the stand-in base images: the buildah image they came from.
const FROM_LABEL: &str = "cuda-tracer.from";

/// A running dockerd; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct DockerEngine {
    daemon: Child,
    dir: tempfile::TempDir,
    /// Held while the engine runs: one dockerd per data root.
    _lock: File,
}

/// The engine's persistent data root (images, BuildKit's cache).
fn data_root() -> PathBuf {
    crate::setup_cache().join("docker")
}

impl DockerEngine {
    pub fn start() -> Self {
        assert!(
            Path::new(DOCKERD).exists() && Path::new(DOCKER_CLIENT).exists(),
            "Debian's Docker engine is missing: run `cargo xtask setup` (it installs docker.io)"
        );
        let root = data_root();
        std::fs::create_dir_all(&root).expect("docker data root");
        // One engine per data root: a second one waits here until the first stops.
        let lock = crate::exclusive_lock(&crate::setup_cache().join("docker.lock"));
        // Short paths: containerd's sockets live below the exec root.
        let dir = tempfile::Builder::new().prefix("ctd").tempdir_in("/tmp").expect("engine dir");
        let log = File::create(dir.path().join("dockerd.log")).expect("dockerd log");
        let daemon = Command::new(DOCKERD)
            .arg("--data-root")
            .arg(&root)
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("dockerd.pid"))
            .arg("--host")
            .arg(socket_uri(dir.path()))
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let engine = DockerEngine { daemon, dir, _lock: lock };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !engine.docker(&["version"]).status.success() {
            assert!(Instant::now() < deadline, "dockerd did not answer in 60 s:\n{}", engine.log());
            std::thread::sleep(Duration::from_millis(300));
        }
        engine
    }

    /// What `./deploy.sh build` takes to build with this engine: its
    /// socket, Debian's client first on `PATH`, the host's network for RUN
    /// steps (the engine has no bridge).
    pub fn deploy_settings(&self) -> Vec<(&'static str, String)> {
        let bin = self.dir.path().join("bin");
        if !bin.join("docker").exists() {
            std::fs::create_dir_all(&bin).expect("client dir");
            std::os::unix::fs::symlink(DOCKER_CLIENT, bin.join("docker")).expect("client link");
        }
        let path = std::env::var("PATH").unwrap_or_default();
        vec![
            ("CONTAINER_RUNTIME", "docker".to_string()),
            ("DOCKER_HOST", self.host()),
            ("PATH", format!("{}:{path}", bin.display())),
            ("BUILD_NETWORK", "host".to_string()),
        ]
    }

    /// `DOCKER_HOST` for this engine.
    pub fn host(&self) -> String {
        socket_uri(self.dir.path())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// Debian's client against this engine, BuildKit on.
    pub fn client(&self) -> Command {
        let mut cmd = Command::new(DOCKER_CLIENT);
        cmd.env("DOCKER_HOST", self.host()).env("DOCKER_BUILDKIT", "1");
        cmd
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        self.client().args(args).output().expect("run docker")
    }

    /// `docker args`, asserted to succeed; its stdout.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(out.status.success(), "docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Makes `name` in this engine from setup's buildah image `base`, plus
    /// `extra` files (host path → path in the image), unless it already
    /// came from the same buildah image (warm runs skip the copy).
    pub fn stand_in(&self, name: &str, base: &str, extra: &[(&Path, &str)]) {
        let base_id = buildah_image_id(base);
        let format = format!("{{{{index .Config.Labels \"{FROM_LABEL}\"}}}}");
        let current = self.docker(&["image", "inspect", "--format", &format, name]);
        if current.status.success() && String::from_utf8_lossy(&current.stdout).trim() == base_id {
            return;
        }
        let work = tempfile::tempdir().expect("stand-in dir");
        let archive = work.path().join("base.tar");
        let target = format!("docker-archive:{}:{base}", archive.display());
        let pushed = crate::image_build::buildah(&["push", "--quiet", base, &target]);
        assert!(pushed.status.success(), "buildah push {base}: {}", String::from_utf8_lossy(&pushed.stderr));
        self.docker_ok(&["load", "--quiet", "--input", &archive.display().to_string()]);
        std::fs::remove_file(&archive).expect("remove the archive");
        let mut dockerfile = format!("FROM {base}\nLABEL {FROM_LABEL}={base_id}\n");
        for (i, (host, in_image)) in extra.iter().enumerate() {
            std::fs::copy(host, work.path().join(format!("extra{i}"))).expect("copy into the stand-in's context");
            dockerfile.push_str(&format!("COPY extra{i} {in_image}\n"));
        }
        std::fs::write(work.path().join("Dockerfile"), dockerfile).expect("stand-in Dockerfile");
        self.docker_ok(&["build", "--quiet", "--tag", name, &work.path().display().to_string()]);
    }
}

/// The engine's API socket in its run directory `dir`, as a `DOCKER_HOST` URI.
fn socket_uri(dir: &Path) -> String {
    format!("unix://{}", dir.join("docker.sock").display())
}

/// The ID of an image in setup's buildah storage.
fn buildah_image_id(image: &str) -> String {
    let out = crate::image_build::buildah(&["images", "--no-trunc", "--format", "{{.ID}}", image]);
    assert!(out.status.success(), "buildah images {image}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Drop for DockerEngine {
    fn drop(&mut self) {
        // Not yet reaped, so the pid is still ours even if it has exited.
        crate::signal(&self.daemon, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if matches!(self.daemon.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("dockerd did not stop in 30 s: killing it");
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}
