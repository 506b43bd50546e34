//! The GPU check script (tests/gpu/run.sh, docs/GPU_CHECK.md) without a
//! GPU: its Python files compile, the comparison counts a made-up trace
//! right, `--help` works, and `--dry-run` prints every run it would make.
//! (shellcheck covers the script with every other one, in k8s_scripts.)

use std::process::Command;

use cuda_tracer_tests::*;

/// `python3 -c PY_COMPILE_TO OUTDIR FILE...`: py_compile each FILE into OUTDIR.
const PY_COMPILE_TO: &str = "import os, py_compile, sys
for f in sys.argv[2:]:
    py_compile.compile(f, cfile=os.path.join(sys.argv[1], os.path.basename(f) + 'c'), doraise=True)";

fn gpu_dir() -> std::path::PathBuf {
    root().join("tests/gpu")
}

fn run_sh(args: &[&str]) -> std::process::Output {
    Command::new("bash").arg(gpu_dir().join("run.sh")).args(args).output().expect("bash runs")
}

#[test]
fn python_files_compile_and_the_comparison_self_test_passes() {
    let dir = gpu_dir();
    // py_compile, with the byte code written to a scratch directory (not
    // a __pycache__ in the work tree).
    let scratch = tempfile::tempdir().unwrap();
    let compile = Command::new("python3")
        .args(["-c", PY_COMPILE_TO])
        .arg(scratch.path())
        .arg(dir.join("workloads.py"))
        .arg(dir.join("compare.py"))
        .output()
        .unwrap();
    assert!(compile.status.success(), "{}", String::from_utf8_lossy(&compile.stderr));
    let selftest = Command::new("python3").arg(dir.join("compare.py")).arg("--self-test").output().unwrap();
    assert!(selftest.status.success(), "{}", String::from_utf8_lossy(&selftest.stderr));
    assert!(String::from_utf8_lossy(&selftest.stdout).contains("self-test: ok"));
}

#[test]
fn help_and_bad_arguments() {
    let help = run_sh(&["--help"]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("--dry-run") && text.contains("--tracer"), "{text}");
    let bad = run_sh(&["--iters", "0"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--iters"));
    let bad = run_sh(&["--workloads", "eager,bogus"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bogus"));
}

#[test]
fn dry_run_prints_three_runs_per_workload() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("gpu");
    let run = run_sh(&["--dry-run", "--iters", "3", "--out", out.to_str().unwrap(), "--tracer", "/opt/cuda-tracer"]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let commands: Vec<&str> = stdout.lines().filter(|l| l.starts_with("+ ")).collect();
    assert_eq!(commands.len(), 9, "{stdout}");
    for workload in ["eager", "decoder", "nccl"] {
        let mine: Vec<&&str> = commands.iter().filter(|c| c.contains(&format!("workloads.py {workload} "))).collect();
        assert_eq!(mine.len(), 3, "{workload}: {mine:?}");
        assert!(!mine[0].contains("record"), "the first run is untraced: {}", mine[0]);
        assert!(mine[1].contains("/opt/cuda-tracer record") && !mine[1].contains("--profile"), "{}", mine[1]);
        assert!(mine[2].contains("/opt/cuda-tracer record") && mine[2].contains("--profile"), "{}", mine[2]);
    }
    assert!(out.join("report.md").is_file());
}
