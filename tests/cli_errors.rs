//! Bad input gets a one-line error that names the problem, and a non-zero exit.

use cuda_tracer_tests::*;

fn fails_with(args: &[&str], needle: &str) {
    let out = tracer_cmd().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(stderr.contains(needle), "{args:?}: expected `{needle}` in:\n{stderr}");
}

#[test]
fn missing_command_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("t").display().to_string();
    fails_with(&["record", "-o", &out, "--", "/no/such/program"], "cannot start `/no/such/program`");
    // The cause is said once, not once per layer of the error chain.
    let stderr = tracer_cmd().args(["record", "-o", &out, "--", "/no/such/program"]).output().unwrap().stderr;
    let stderr = String::from_utf8_lossy(&stderr);
    assert_eq!(stderr.matches("No such file or directory").count(), 1, "{stderr}");
}

#[test]
fn missing_pid_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().display().to_string();
    fails_with(&["run", "--no-upload", "--trace-dir", &dir, "--pid", "999999999"], "process 999999999 does not exist");
}

#[test]
fn unusable_trace_dir_is_named() {
    fails_with(&["run", "--no-upload", "--trace-dir", "/proc/cuda-tracer-test", "--pid", "1"], "not usable");
}

#[test]
fn library_without_cuda_symbols_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("t").display().to_string();
    // An ELF shared library named like the driver but exporting nothing we trace.
    let fake = tmp.path().join("libcuda.so.1");
    std::fs::copy(fixtures().join("cuda-workload"), &fake).unwrap();
    let fake = fake.display().to_string();
    fails_with(&["record", "-o", &out, "--lib", &fake, "--", "/bin/true"], "exports none of the traced CUDA functions");
    fails_with(
        &["record", "-o", &out, "--lib", "/etc/hostname", "--", "/bin/true"],
        "not a CUDA driver or runtime library",
    );
}

#[test]
fn invalid_flags_are_named() {
    fails_with(&["run", "--functions", "bogus"], "unknown function group `bogus`");
    fails_with(&["run", "--target-process", "("], "is not a valid regex");
    fails_with(&["record", "--rotate-secs", "0", "--", "true"], "rotate-secs");
}

#[test]
fn check_passes_here_and_reports_a_missing_pid() {
    let ok = tracer_cmd().arg("check").output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));
    let out = tracer_cmd().args(["check", "--pid", "999999999"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && stdout.contains("[FAIL]") && stdout.contains("hostPID"), "{stdout}");
}

#[test]
fn upload_without_a_bucket_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().display().to_string();
    let out = tracer_cmd().args(["run", "--trace-dir", &dir, "--pid", "1"]).env_remove("S3_BUCKET").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("S3_BUCKET") && stderr.contains("--no-upload"), "{stderr}");
}
