//! Developer tasks: `setup` (toolchain, bpf-linker, test prerequisites),
//! `demo` (trace the bundled workload), `test` (fmt, clippy, all tests,
//! a short fuzz run), `fuzz` (the cargo-fuzz targets in `fuzz/`), `e2e kubernetes` (the tests on a real node), `bench` (overhead, loss and `report` speed, written to docs/BENCHMARKS.md).

mod bench;
mod bench_attach;
mod bench_doc;
mod bench_fleet;
mod bench_load;
mod bench_method;
mod bench_proc;
mod bench_report;
mod bench_tables;
mod fuzz;
mod paths;
mod setup;
mod setup_images;
mod setup_kube;
mod setup_spark;
mod suites;

use std::process::Command;

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Make this machine ready: nightly rust-src, bpf-linker, fixtures, test packages.
    Setup {
        /// Only what building the tracer needs (nightly with rust-src, bpf-linker):
        /// the sidecar image's build stage runs this.
        #[arg(long)]
        tracer_only: bool,
    },
    /// Install the build chain only (no test servers), build, and trace the bundled fixture
    /// workload with `cuda-tracer record`.
    Demo,
    /// Set up, then fmt check, clippy -D warnings, every test (BPF tests need root), and each fuzz target briefly.
    Test {
        /// Extra arguments for `cargo test`, after `--`.
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Build the fuzz targets (nightly, cached per machine) and run each over its corpus.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        secs: u64,
        /// Run only this target (ring_record, trace_line, parquet_file, admission_review, metrics_page).
        #[arg(long)]
        target: Option<String>,
    },
    /// Set up, build, then measure overhead and loss; writes docs/BENCHMARKS.md (needs root).
    Bench {
        /// Small sizes (about a minute), to check the harness, not to quote.
        #[arg(long)]
        quick: bool,
        /// Run one table alone: `report` (table 5, `report` vs jq; no BPF, no root),
        /// `attach` (table 6, attach/detach of every exported function; root) or
        /// `fleet` (tables 7 and 8: a synthetic fleet as JSONL and Parquet, the
        /// top-kernels query by engine, the pipeline's cost per `--format`; no root).
        #[arg(long, value_parser = ["report", "attach", "fleet"])]
        only: Option<String>,
    },
    /// Set up, then run one end-to-end suite. `kubernetes`: bring a real
    /// single-node cluster up (etcd, control plane, kubelet, containerd),
    /// run every test on it (tests/k8s_node*.rs) and tear it down (needs root).
    E2e {
        #[arg(value_parser = ["kubernetes"])]
        suite: String,
        /// Extra arguments for `cargo test`, after `--`.
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
}

fn main() -> Result<()> {
    forget_cargo_run_env();
    match Cli::parse().task {
        Task::Setup { tracer_only: false } => setup::run(),
        Task::Setup { tracer_only: true } => setup::tracer_chain().map(drop),
        Task::Demo => demo(),
        Task::Test { cargo_args } => test(&cargo_args),
        Task::Fuzz { secs, target } => fuzz::run(secs, target.as_deref()),
        Task::Bench { only: Some(table), .. } if table == "attach" => bench_attach::run_only(),
        Task::Bench { quick, only: Some(table) } if table == "fleet" => bench_fleet::run_only(quick),
        Task::Bench { quick, only: Some(_) } => bench_report::run_only(quick),
        Task::Bench { quick, only: None } => bench::run(quick),
        Task::E2e { suite: _, cargo_args } => e2e_kubernetes(&cargo_args),
    }
}

/// Drops the variables `cargo xtask` (a `cargo run`) set for this process,
/// before any nested cargo inherits them: ring's build script tracks
/// CARGO_MANIFEST_DIR, so a nested build that sees xtask's would rebuild
/// ring, rustls and everything above them, and so would the next plain build.
fn forget_cargo_run_env() {
    let set_for_the_run = |name: &str| {
        name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_")
            || ["CARGO_MANIFEST_DIR", "CARGO_MANIFEST_PATH", "CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE"]
                .contains(&name)
    };
    for (name, _) in std::env::vars_os() {
        if set_for_the_run(&name.to_string_lossy()) {
            // Still one thread: nothing else reads the environment yet.
            std::env::remove_var(&name);
        }
    }
}

/// Runs a command, failing with its command line when it fails.
pub fn exec(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{what} loads BPF programs and needs root: run `sudo -E env PATH=$PATH cargo xtask {what}`");
    }
    Ok(())
}

fn demo() -> Result<()> {
    setup::build_chain()?;
    require_root("demo")?;
    let root = paths::root();
    exec(Command::new("cargo").current_dir(&root).args(["build", "--release", "-p", "cuda-tracer"]))?;
    let tracer = paths::target_dir().join("release/cuda-tracer");
    let out = paths::target_dir().join("demo").join(format!("session-{}", std::process::id()));
    let workload = paths::fixtures_dir().join("cuda-workload");
    // The fixture's vLLM-like engine loop: graph capture at warm-up, then
    // prefill and decode steps, so the report has steps and graphs to show.
    let loop_args = ["--vllm-loop", "--vllm-steps", "300"];
    println!("== tracing {} {} with {}", workload.display(), loop_args.join(" "), tracer.display());
    exec(Command::new(&tracer).args(["record", "-o"]).arg(&out).arg("--").arg(&workload).args(loop_args))?;
    let mut files: Vec<_> = std::fs::read_dir(&out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    if let Some(first) = files.first() {
        println!("\n== first lines of {}", first.display());
        let text = std::fs::read_to_string(first)?;
        for line in text.lines().take(5) {
            println!("{line}");
        }
    }
    let report = out.with_extension("report");
    println!("\n== cuda-tracer report {} --out {}", out.display(), report.display());
    exec(Command::new(&tracer).arg("report").arg(&out).arg("--out").arg(&report))?;
    let chrome = report.join("trace.json");
    exec(Command::new(&tracer).args(["export", "chrome"]).arg(&out).arg("-o").arg(&chrome))?;
    println!("\n== plots: {}/{{memory,launch_rate,step_latency}}.svg", report.display());
    println!("== open {} in https://ui.perfetto.dev", chrome.display());
    println!("== try: jq -r .func {}/trace_*.jsonl | sort | uniq -c | sort -rn", out.display());
    Ok(())
}

fn test(cargo_args: &[String]) -> Result<()> {
    setup::run()?;
    require_root("test")?;
    let root = paths::root();
    exec(Command::new("cargo").current_dir(&root).args(["fmt", "--all", "--", "--check"]))
        .context("formatting differs: run `cargo fmt --all`")?;
    // The fuzz crate is a workspace of its own.
    exec(Command::new("cargo").current_dir(&root).args(["fmt", "--manifest-path", "fuzz/Cargo.toml", "--", "--check"]))
        .context("formatting differs in fuzz/: run `cargo fmt --manifest-path fuzz/Cargo.toml`")?;
    // Host crates (default members); the BPF crate only builds for its own
    // target, with nightly.
    exec(Command::new("cargo").current_dir(&root).args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    exec(Command::new("cargo").current_dir(root.join("tracer-ebpf")).args([
        "+nightly",
        "clippy",
        "--release",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The end-to-end tests run the binary; plain `cargo test` builds it only
    // for packages with integration tests of their own.
    exec(Command::new("cargo").current_dir(&root).args(["build", "-p", "cuda-tracer"]))?;
    for mut cmd in suites::all_but_node(&root)? {
        exec(with_test_env(cmd.args(cargo_args)))?;
    }
    // The real-node suites, as README's `cargo xtask e2e kubernetes`.
    run_node_suites(&root, cargo_args)?;
    // Each fuzz target over its committed corpus and what this machine
    // found before; a longer run is `cargo xtask fuzz --secs N`.
    fuzz::run(fuzz::TEST_SECS, None)
}

/// The places of setup's test prerequisites, as the tests read them.
fn with_test_env(cmd: &mut Command) -> &mut Command {
    cmd.env("CUDA_TRACER_FIXTURES", paths::fixtures_dir())
        .env("CUDA_TRACER_NVIDIA_CUDART", paths::nvidia_cudart())
        .env("CUDA_TRACER_NVIDIA_CUDART13", paths::nvidia_cudart13())
        .env("CUDA_TRACER_CUDA_INCLUDE12", paths::cuda_include12())
        .env("CUDA_TRACER_CUDA_INCLUDE13", paths::cuda_include13())
        .env("CUDA_TRACER_NCCL", paths::nvidia_nccl())
        .env("CUDA_TRACER_TORCH_SITE", paths::torch_site())
        .env("CUDA_TRACER_TEST_SCAN_FLOOR_MS", "60000")
        .env("CUDA_TRACER_WEED", paths::weed())
        .env("CUDA_TRACER_K8S_TOOLS", paths::k8s_tools())
        .env("CUDA_TRACER_PANDAS", paths::pandas())
        .env("CUDA_TRACER_DUCKDB", paths::duckdb())
        .env("CUDA_TRACER_PYSPARK", paths::pyspark())
        .env("JAVA_HOME", setup_spark::java_home())
        .env("CUDA_TRACER_KUBE_APISERVER", paths::kube_apiserver())
        .env("CUDA_TRACER_KUBELET", paths::kube_bin("kubelet"))
        .env("CUDA_TRACER_KUBE_SCHEDULER", paths::kube_bin("kube-scheduler"))
        .env("CUDA_TRACER_KUBE_CONTROLLER_MANAGER", paths::kube_bin("kube-controller-manager"))
        .env("CUDA_TRACER_KUBE_PAUSE", paths::kube_pause())
        .env("CUDA_TRACER_CONTAINERD", paths::containerd())
        .env("CUDA_TRACER_BUILDAH", paths::buildah_dir())
        .env("CUDA_TRACER_ETCD", paths::etcd())
        .env("CUDA_TRACER_KUBECTL", paths::kubectl())
}

/// `cargo xtask e2e kubernetes`: every real-node suite (tests/k8s_node*;
/// each brings its node up and tears it down, one node at a time).
fn e2e_kubernetes(cargo_args: &[String]) -> Result<()> {
    setup::run()?;
    require_root("e2e kubernetes")?;
    run_node_suites(&paths::root(), cargo_args)
}

fn run_node_suites(root: &std::path::Path, cargo_args: &[String]) -> Result<()> {
    exec(Command::new("cargo").current_dir(root).args(["build", "-p", "cuda-tracer"]))?;
    exec(with_test_env(suites::node(root)?.args(cargo_args)))
}
