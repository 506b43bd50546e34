//! Hostile traced processes against the name resolver and the traced-pid
//! map (issue 15, findings 3 and 4), each run under `cuda-tracer record`
//! with the real BPF programs: a process that truncates the file behind a
//! launch address while the tracer reads it, one that floods the resolver
//! with unknown addresses beside a well-behaved workload, and a tree of
//! processes too large for the traced-pid map. The tenants are
//! `tests/tenants/hostile_tenant.py` (python3 with ctypes, on the fixture
//! libraries, which record ground truth).

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use cuda_tracer_tests::*;
use serde_json::Value;

fn tenant() -> String {
    root().join("tests/tenants/hostile_tenant.py").display().to_string()
}

/// The python3 interpreter itself, not a wrapper script (pyenv's shims
/// fork a dozen helpers, which would take room in the traced-pid map).
fn python() -> String {
    let out = std::process::Command::new("python3").args(["-c", "import sys; print(sys.executable)"]).output();
    let out = out.expect("python3 is installed");
    String::from_utf8(out.stdout).expect("a UTF-8 path").trim().to_string()
}

fn pid_of(l: &Value) -> u64 {
    l["pid"].as_u64().expect("pid")
}

/// The pid `record` started (the tenant itself).
fn command_pid(metadata: &Value) -> u64 {
    let procs = metadata["processes"].as_array().expect("processes");
    procs.iter().find(|p| p["source"] == "command").map(pid_of).expect("the command is listed")
}

#[test]
fn a_file_truncated_while_its_symbols_are_read_leaves_the_launch_unnamed_not_a_crash() {
    let (tmp, out, truth) = scratch();
    let files = tmp.path().join("tenant");
    std::fs::create_dir_all(&files).unwrap();
    // A large ELF file, so reading its symbols takes long enough for the
    // tenant to truncate it midway: the tracer's own binary.
    let elf: PathBuf = tracer();
    let attempts = 2;
    let output = record(
        &out,
        &truth,
        &[],
        &[&python(), &tenant(), "truncate", files.to_str().unwrap(), elf.to_str().unwrap(), &attempts.to_string()],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.matches("truncated").count(), attempts, "{stdout}");
    // `record` survived and finished: no .partial left, metadata finished.
    let trace = load_trace(&out);
    assert_eq!(trace.metadata["status"], "finished");
    let launches: Vec<&Value> = trace.lines.iter().filter(|l| l["func"] == "cudaLaunchKernel").collect();
    assert_eq!(launches.len(), attempts, "every launch is in the trace");
    for l in &launches {
        assert!(l["args"].get("kernel").is_none(), "a truncated file names no kernel: {l}");
    }
    assert_matches_truth(&trace.lines, &load_truth(&truth), false);
}

#[test]
fn a_flood_of_unknown_launch_addresses_loses_no_call_of_another_process() {
    const MAPPINGS: &str = "20000";
    const LAUNCHES: &str = "100000";
    let (_tmp, out, truth) = scratch();
    let workload = workload();
    let argv =
        [&python(), &tenant(), "flood", MAPPINGS, LAUNCHES, "--", &workload, "--no-child", "--iterations", "100"];
    let (output, peak) = run_with_peak_rss(record_cmd(&out, &truth, &[], &argv), Duration::from_secs(300));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    eprintln!("{}", String::from_utf8_lossy(&output.stdout));
    let trace = load_trace(&out);
    let flooder = command_pid(&trace.metadata);
    let all_truth = load_truth(&truth);
    let (flood_truth, work_truth): (Vec<Value>, Vec<Value>) = all_truth.into_iter().partition(|l| pid_of(l) == flooder);
    let (flood_lines, work_lines): (Vec<Value>, Vec<Value>) =
        trace.lines.into_iter().partition(|l| pid_of(l) == flooder);
    assert!(flood_truth.len() >= 100_000 && work_truth.len() > 1000, "{} {}", flood_truth.len(), work_truth.len());
    // The well-behaved workload: every call, exactly.
    assert_matches_truth(&work_lines, &work_truth, false);
    // The flooder: whatever it lost is counted.
    let dropped = trace.metadata["dropped_events"].as_u64().unwrap();
    assert_eq!(flood_lines.len() as u64 + dropped, flood_truth.len() as u64, "written + counted = made");
    eprintln!("peak RSS {} MiB, {dropped} of the flooder's calls dropped", peak >> 20);
    assert!(peak < 256 << 20, "record's peak RSS was {} MiB", peak >> 20);
}

#[test]
fn a_process_the_traced_pid_map_has_no_room_for_is_counted_and_the_summary_says_so() {
    const CHILDREN: u64 = 8;
    // Room for four: the tenant and three of its children.
    const ROOM: u64 = 4;
    let (_tmp, out, truth) = scratch();
    let mut cmd = record_cmd(&out, &truth, &[], &[&python(), &tenant(), "fork", &CHILDREN.to_string()]);
    cmd.env("CUDA_TRACER_TRACED_PIDS_MAX", ROOM.to_string());
    let output = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let trace = load_trace(&out);
    let m = &trace.metadata;
    assert_eq!(m["drops"]["traced_map_full"], CHILDREN - (ROOM - 1), "{m}");
    // The children that fit are traced, call for call.
    let traced: BTreeSet<u64> = trace.lines.iter().map(pid_of).collect();
    assert_eq!(traced.len() as u64, ROOM - 1, "{traced:?}");
    let truth: Vec<Value> = load_truth(&truth).into_iter().filter(|l| traced.contains(&pid_of(l))).collect();
    assert_matches_truth(&trace.lines, &truth, false);
    // The summary does not claim completeness.
    let untraced = CHILDREN - (ROOM - 1);
    assert!(stderr.contains("dropped: unknown (0 counted, plus the calls of"), "{stderr}");
    assert!(stderr.contains(&format!("{untraced} process(es) the traced-pid map had no room for")), "{stderr}");
    assert!(stderr.contains(&format!("map inserts refused (traced processes {untraced},")), "{stderr}");
}
