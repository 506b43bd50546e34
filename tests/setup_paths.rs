//! Where `cargo xtask setup` installed what the tests use: its cache, and
//! NVIDIA's and PyTorch's wheels in it (each overridable by the variable
//! `cargo xtask test` sets).

use std::path::PathBuf;

/// `cargo xtask setup`'s cache (`~/.cache/cuda-tracer`).
pub fn setup_cache() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| "/root".into());
    home.join(".cache/cuda-tracer")
}

/// A file `cargo xtask setup` installs: from `var` (as `cargo xtask test`
/// sets it), else `default`; missing means setup was not run (`hint` says
/// what it installs).
pub fn from_setup(var: &str, default: PathBuf, hint: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or(default);
    assert!(path.exists(), "{} is missing ({var}): run `cargo xtask setup`{hint}", path.display());
    path
}

/// NVIDIA's libcudart.so.12 from the PyPI wheel, installed by `cargo xtask setup`.
pub fn nvidia_cudart() -> PathBuf {
    let default = setup_cache().join("pypi/nvidia/cuda_runtime/lib/libcudart.so.12");
    from_setup("CUDA_TRACER_NVIDIA_CUDART", default, "")
}

/// NVIDIA's libcudart.so.13 from the PyPI wheel `nvidia-cuda-runtime` 13.x
/// (layout `nvidia/cu13/lib`), installed by `cargo xtask setup`.
pub fn nvidia_cudart13() -> PathBuf {
    let default = setup_cache().join("pypi-cu13/nvidia/cu13/lib/libcudart.so.13");
    from_setup("CUDA_TRACER_NVIDIA_CUDART13", default, "")
}

/// NVIDIA's libnccl.so.2 from the PyPI wheel `nvidia-nccl-cu12`, installed
/// by `cargo xtask setup`.
pub fn nvidia_nccl() -> PathBuf {
    let default = setup_cache().join("pypi-nccl/nvidia/nccl/lib/libnccl.so.2");
    from_setup("CUDA_TRACER_NCCL", default, "")
}

/// PyTorch 2.15 with its CUDA 13 wheels (a directory for PYTHONPATH),
/// installed by `cargo xtask setup`.
pub fn torch_site() -> PathBuf {
    let site = from_setup("CUDA_TRACER_TORCH_SITE", setup_cache().join("torch-cu13"), "");
    let stamp = site.join("installed.stamp");
    assert!(
        stamp.exists(),
        "{} is missing: the PyTorch install is incomplete, run `cargo xtask setup`",
        stamp.display()
    );
    site
}
