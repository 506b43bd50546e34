//! The disk budget: at `--max-local-bytes` the default policy pauses writing
//! and counts what it skips (nothing deleted, nothing silently lost);
//! `delete-oldest` removes the oldest closed files and records them.

use cuda_tracer_tests::*;

fn trace_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("trace_"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

const CAP: u64 = 200_000;
const SLACK: u64 = 400_000; // what one scan interval of writes can add past the cap

/// Records a busy workload with the disk budget `CAP` and `policy` (and
/// 1 s rotations) for at least 3 s however fast the machine (1500 steps of a
/// 2 ms sleep), so there are closed files to delete; returns the session dir, what record printed, and the
/// truth of the calls.
fn record_capped(policy: &[&str]) -> (tempfile::TempDir, std::path::PathBuf, std::process::Output, std::path::PathBuf) {
    let (tmp, out, truth) = scratch();
    let workload = workload();
    let argv = [workload.as_str(), "--no-child", "--threads", "2", "--iterations", "1500", "--step-delay-us", "2000"];
    let cap = CAP.to_string();
    let mut flags = vec!["--max-local-bytes", &cap];
    flags.extend(policy);
    flags.extend(["--scan-interval-ms", "50", "--rotate-secs", "1"]);
    let output = record(&out, &truth, &flags, &argv);
    (tmp, out, output, truth)
}

#[test]
fn pause_counts_every_call_it_does_not_write() {
    let (_tmp, out, output, truth) = record_capped(&[]);
    let trace = load_trace(&out);
    let counts = &trace.metadata["counts"];
    let paused = counts["dropped_disk_budget"].as_u64().unwrap();
    assert!(paused > 0, "the budget was reached");
    assert_eq!(trace.lines.len() as u64 + paused, counts["calls"].as_u64().unwrap(), "written + counted = captured");
    assert_eq!(load_truth(&truth).len() as u64, counts["calls"].as_u64().unwrap(), "every call captured");
    assert_eq!(trace.metadata["dropped_events"].as_u64().unwrap(), paused);
    assert!(trace.metadata["deleted_for_disk_budget"].as_array().unwrap().is_empty(), "pause deletes nothing");
    assert!(trace_bytes(&out) <= CAP + SLACK, "{} bytes", trace_bytes(&out));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("paused by the disk budget: {paused}")), "{stderr}");
}

#[test]
fn delete_oldest_records_what_it_deleted() {
    let (_tmp, out, _, _) = record_capped(&["--on-disk-full", "delete-oldest"]);
    let trace = load_trace(&out);
    let deleted = trace.metadata["deleted_for_disk_budget"].as_array().unwrap();
    assert!(!deleted.is_empty(), "old files were deleted");
    assert!(deleted
        .iter()
        .all(|d| d["path"].as_str().unwrap().contains("trace_00001_") || d["bytes"].as_u64().unwrap() > 0));
    assert_eq!(trace.metadata["counts"]["dropped_disk_budget"], 0, "nothing paused");
    // What is left is the newest part of the run, intact: the newest file is
    // never deleted, so after the final pass only it may stand above the cap.
    let newest = std::fs::metadata(trace.files.last().expect("the newest file stays")).unwrap().len();
    assert!(trace_bytes(&out) <= CAP + newest, "{} bytes", trace_bytes(&out));
}
