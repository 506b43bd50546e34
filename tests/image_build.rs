//! The sidecar image as `./deploy.sh build` makes it on this machine:
//! buildah on setup's storage (`CUDA_TRACER_BUILDAH`), from the Debian base
//! images `cargo xtask setup` makes (no registry).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use crate::root;

/// The base images setup makes (xtask/src/setup_images.rs).
pub const BUILDER_BASE: &str = "localhost/cuda-tracer-base-builder:bookworm";
pub const RUNTIME_BASE: &str = "localhost/cuda-tracer-base-runtime:bookworm";
/// The host's CA bundle: the build's crate downloads trust what the host trusts.
pub const HOST_CA_CERTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// setup's buildah storage and cache mounts (`CUDA_TRACER_BUILDAH`, else the cache).
pub fn buildah_dir() -> PathBuf {
    std::env::var_os("CUDA_TRACER_BUILDAH").map(PathBuf::from).unwrap_or_else(|| crate::setup_cache().join("buildah"))
}

/// `cmd` on setup's buildah storage.
pub fn on_setup_storage(cmd: &mut Command) -> &mut Command {
    let dir = buildah_dir();
    cmd.env("CONTAINERS_STORAGE_CONF", dir.join("storage.conf")).env("TMPDIR", dir.join("tmp"))
}

pub fn buildah(args: &[&str]) -> std::process::Output {
    on_setup_storage(Command::new("buildah").args(args)).output().expect("run buildah (apt-get install buildah)")
}

pub fn require_base_images() {
    for image in [BUILDER_BASE, RUNTIME_BASE] {
        // No buildah at all reads the same: setup installs it.
        let inspect = on_setup_storage(Command::new("buildah").args(["inspect", "--type", "image", image])).output();
        assert!(
            inspect.is_ok_and(|o| o.status.success()),
            "the base image {image} is missing from {}: run `cargo xtask setup` (it makes the sidecar's \
             Debian base images with mmdebstrap and buildah)",
            buildah_dir().display()
        );
    }
}

/// The settings `./deploy.sh build` (and `all`) takes to build with
/// buildah on setup's storage and base images.
pub fn build_settings() -> Vec<(&'static str, String)> {
    let dir = buildah_dir();
    let mut settings = vec![
        ("CONTAINERS_STORAGE_CONF", dir.join("storage.conf").display().to_string()),
        ("TMPDIR", dir.join("tmp").display().to_string()),
        ("CONTAINER_RUNTIME", "buildah".to_string()),
        ("BUILDER_IMAGE", BUILDER_BASE.to_string()),
        ("RUNTIME_IMAGE", RUNTIME_BASE.to_string()),
    ];
    if Path::new(HOST_CA_CERTS).exists() {
        settings.push(("BUILD_CA_CERTS", HOST_CA_CERTS.to_string()));
    }
    settings
}

/// `./deploy.sh build` with buildah and the offline base images; returns how long it took.
pub fn deploy_build(cluster: &[(&str, &Path)]) -> Duration {
    deploy_build_with(&build_settings(), cluster)
}

/// `./deploy.sh build` with the builder `settings` (none inherited from
/// the test's environment); returns how long it took.
pub fn deploy_build_with(settings: &[(&str, String)], cluster: &[(&str, &Path)]) -> Duration {
    let mut cmd = Command::new("bash");
    cmd.arg(root().join("deploy.sh")).arg("build");
    for inherited in ["CONTAINER_RUNTIME", "BUILDER_IMAGE", "RUNTIME_IMAGE", "BUILD_CA_CERTS", "BUILD_NETWORK"] {
        cmd.env_remove(inherited);
    }
    cmd.envs(settings.iter().map(|(k, v)| (k, v))).envs(cluster.iter().copied());
    let started = Instant::now();
    let out = cmd.output().expect("run deploy.sh");
    let tail = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes).into_owned();
        text[text.len().saturating_sub(6000)..].to_string()
    };
    assert!(out.status.success(), "deploy.sh build failed:\n{}\n{}", tail(&out.stdout), tail(&out.stderr));
    started.elapsed()
}
