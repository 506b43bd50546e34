//! `cargo xtask fuzz`: builds the cargo-fuzz targets in `fuzz/` with nightly
//! into a per-machine cache, and runs each over its committed corpus.

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context as _, Result};

use crate::{exec, paths};

/// The cargo-fuzz release setup installs (into the machine's cache).
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The fuzz targets, each with `fuzz/corpus/<name>/` as its seed corpus.
pub const TARGETS: [&str; 5] = ["ring_record", "trace_line", "parquet_file", "admission_review", "metrics_page"];

/// Seconds each target runs under `cargo xtask test`.
pub const TEST_SECS: u64 = 20;

/// Longest one input may take before libFuzzer calls it a hang.
const INPUT_TIMEOUT_SECS: u64 = 10;

/// Installs cargo-fuzz into the setup cache unless that release is there.
pub fn install() -> Result<()> {
    let binary = paths::cargo_fuzz_root().join("bin/cargo-fuzz");
    let installed = Command::new(&binary)
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION));
    if installed {
        return Ok(());
    }
    println!("setup: installing cargo-fuzz {CARGO_FUZZ_VERSION} into {}", paths::cargo_fuzz_root().display());
    exec(
        Command::new("cargo")
            .args(["install", "cargo-fuzz", "--locked", "--force", "--version", CARGO_FUZZ_VERSION, "--root"])
            .arg(paths::cargo_fuzz_root()),
    )
}

/// `cargo +nightly fuzz <task>` with the cached cargo-fuzz first on PATH,
/// and the build options every call repeats (any change rebuilds the
/// whole dependency tree): optimised with debug assertions and overflow
/// checks, no sanitizer (the fuzzed code is safe Rust but for the ring
/// decoder's reads, whose bounds are debug assertions), 16 codegen units
/// (cargo-fuzz's default of 1 triples a cold build on two cores), and the
/// per-machine target dir.
fn cargo_fuzz(task: &str) -> Result<Command> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(
        std::iter::once(paths::cargo_fuzz_root().join("bin")).chain(std::env::split_paths(&path)),
    )?;
    let mut cmd = Command::new("cargo");
    cmd.current_dir(paths::root())
        .env("PATH", path)
        .args(["+nightly", "fuzz", task, "-O", "-a", "--sanitizer", "none", "--codegen-units", "16", "--target-dir"])
        .arg(paths::fuzz_target_dir());
    Ok(cmd)
}

/// Builds every target, then runs `only` (or each target in turn) for
/// `secs` seconds over its committed corpus and the machine's own.
pub fn run(secs: u64, only: Option<&str>) -> Result<()> {
    if let Some(name) = only.filter(|name| !TARGETS.contains(name)) {
        bail!("no fuzz target {name:?}: the targets are {}", TARGETS.join(", "));
    }
    crate::setup::fuzz_prerequisites()?;
    exec(&mut cargo_fuzz("build")?).context("building the fuzz targets")?;
    for target in TARGETS.iter().filter(|t| only.is_none_or(|o| o == **t)) {
        run_one(target, secs)?;
    }
    Ok(())
}

fn run_one(target: &str, secs: u64) -> Result<()> {
    // New inputs go to the machine's corpus, crashes to its artifacts dir:
    // the committed corpus is only read.
    let found = paths::cache_dir().join("fuzz-corpus").join(target);
    let artifacts = paths::cache_dir().join("fuzz-artifacts").join(target);
    std::fs::create_dir_all(&found)?;
    std::fs::create_dir_all(&artifacts)?;
    let seeds = corpus(target);
    println!("== fuzzing {target} for {secs}s (corpus {} and {})", seeds.display(), found.display());
    let mut cmd = cargo_fuzz("run")?;
    cmd.arg(target).arg(&found).arg(&seeds).arg("--").args([
        format!("-max_total_time={secs}"),
        format!("-timeout={INPUT_TIMEOUT_SECS}"),
        format!("-artifact_prefix={}/", artifacts.display()),
        "-print_final_stats=1".into(),
    ]);
    exec(&mut cmd).with_context(|| {
        format!(
            "fuzz target {target} failed: the input is in {} (reproduce with `cargo +nightly fuzz run {target} \
             <input>` in fuzz/; add it to {} with the fix)",
            artifacts.display(),
            seeds.display()
        )
    })
}

/// A target's committed seed corpus.
fn corpus(target: &str) -> PathBuf {
    paths::root().join("fuzz/corpus").join(target)
}
