//! Container images for the test node, made without a registry or builder:
//! a one-layer docker-archive tar (what `ctr images import` reads) holding
//! the given files plus the shared libraries `ldd` says they load.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::node_config::PAUSE_IMAGE;

/// The sidecar image the manifests name (`cuda-tracer:latest`).
pub const TRACER_IMAGE: &str = "cuda-tracer:latest";
/// The vLLM stand-in: the fixture workload as `vllm`, the fixture runtime
/// where a vLLM image's pip wheel keeps it, the fixture driver where the
/// NVIDIA container runtime mounts the real one.
pub const STANDIN_IMAGE: &str = "cuda-tracer-vllm-standin:test";
/// The stand-in's runtime directory (`nvidia-cuda-runtime-cu12`'s layout).
pub const STANDIN_CUDART_DIR: &str = "/usr/local/lib/python3.11/dist-packages/nvidia/cuda_runtime/lib";

/// One image: its tag, files (host source → path in the image), the files
/// to strip of debug info (as the Dockerfile does), empty directories,
/// entrypoint and environment.
struct ImageSpec<'a> {
    tag: &'a str,
    files: Vec<(PathBuf, String)>,
    strip: &'a [&'a str],
    dirs: &'a [&'a str],
    entrypoint: &'a [&'a str],
    env: &'a [&'a str],
}

/// The pod sandbox image: setup's static pause binary.
pub fn pause_image(dir: &Path) -> PathBuf {
    let pause = crate::from_setup(
        "CUDA_TRACER_KUBE_PAUSE",
        crate::setup_cache().join("kube/pause"),
        " (it builds the pause binary with the Kubernetes binaries)",
    );
    build(
        dir,
        &ImageSpec {
            tag: PAUSE_IMAGE,
            files: vec![(pause, "/pause".into())],
            strip: &[],
            dirs: &[],
            entrypoint: &["/pause"],
            env: &[],
        },
    )
}

/// The sidecar: this build's `cuda-tracer` (its BPF object is embedded)
/// with the Dockerfile's entrypoint and environment, and the CA bundle its
/// `ca-certificates` package installs (the S3 client wants root
/// certificates even for an http:// endpoint).
pub fn tracer_image(dir: &Path) -> PathBuf {
    const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
    build(
        dir,
        &ImageSpec {
            tag: TRACER_IMAGE,
            files: vec![(crate::tracer(), "/usr/local/bin/cuda-tracer".into()), (CA_BUNDLE.into(), CA_BUNDLE.into())],
            strip: &["/usr/local/bin/cuda-tracer"],
            dirs: &["/traces", "/tmp"],
            entrypoint: &["cuda-tracer", "run"],
            env: &["PATH=/usr/local/bin:/usr/bin:/bin", "TRACE_DIR=/traces", "METRICS_ADDR=0.0.0.0:9464"],
        },
    )
}

/// The vLLM stand-in (see [`STANDIN_IMAGE`]).
pub fn standin_image(dir: &Path) -> PathBuf {
    let fixtures = crate::fixtures();
    let ld_path = format!("LD_LIBRARY_PATH={STANDIN_CUDART_DIR}");
    build(
        dir,
        &ImageSpec {
            tag: STANDIN_IMAGE,
            files: vec![
                (fixtures.join("cuda-workload"), "/usr/local/bin/vllm".into()),
                (fixtures.join("libcudart.so.12"), format!("{STANDIN_CUDART_DIR}/libcudart.so.12")),
                (fixtures.join("libcuda.so.1"), "/usr/lib/x86_64-linux-gnu/libcuda.so.1".into()),
            ],
            strip: &[],
            dirs: &["/tmp", "/truth"],
            entrypoint: &["/usr/local/bin/vllm"],
            env: &["PATH=/usr/local/bin:/usr/bin:/bin", &ld_path],
        },
    )
}

/// The system libraries `bin` loads (`ldd`), each at its own path.
fn system_libraries(bin: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(bin).output().expect("run ldd");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')).map(PathBuf::from))
        .filter(|p| p.starts_with("/lib") || p.starts_with("/usr/lib") || p.starts_with("/lib64"))
        .collect()
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Writes the image's rootfs, layer, config and manifest under `dir` and
/// packs them as `dir/<name>.tar`.
fn build(dir: &Path, spec: &ImageSpec) -> PathBuf {
    let name: String = spec.tag.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let work = dir.join(&name);
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(&rootfs).expect("image rootfs");
    let mut files = spec.files.clone();
    for (src, _) in &spec.files {
        files.extend(system_libraries(src).into_iter().map(|lib| (lib.clone(), lib.display().to_string())));
    }
    for (src, dest) in &files {
        let target = rootfs.join(dest.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().expect("a parent")).expect("image dir");
        // fs::copy follows links: the image gets the library itself.
        std::fs::copy(src, &target).unwrap_or_else(|e| panic!("copy {} into the image: {e}", src.display()));
    }
    for path in spec.strip {
        run_ok(Command::new("strip").arg("--strip-debug").arg(rootfs.join(path.trim_start_matches('/'))));
    }
    for d in spec.dirs {
        std::fs::create_dir_all(rootfs.join(d.trim_start_matches('/'))).expect("image dir");
    }
    let layer = work.join("layer.tar");
    run_ok(
        Command::new("tar")
            .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
            .arg(&rootfs)
            .arg("-cf")
            .arg(&layer)
            .arg("."),
    );
    let sum = Command::new("sha256sum").arg(&layer).output().expect("run sha256sum");
    let digest = String::from_utf8_lossy(&sum.stdout).split_whitespace().next().expect("a digest").to_string();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": spec.entrypoint, "Env": spec.env, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{digest}")]},
    });
    std::fs::write(work.join("config.json"), config.to_string()).expect("image config");
    let manifest = serde_json::json!([{"Config": "config.json", "RepoTags": [spec.tag], "Layers": ["layer.tar"]}]);
    std::fs::write(work.join("manifest.json"), manifest.to_string()).expect("image manifest");
    let archive = dir.join(format!("{name}.tar"));
    run_ok(Command::new("tar").arg("-C").arg(&work).arg("-cf").arg(&archive).args([
        "manifest.json",
        "config.json",
        "layer.tar",
    ]));
    archive
}
