//! Hostile inputs to the analysis side (issue 15, findings 7 and 9): a FIFO
//! named like a trace file or `metadata.json`, a file of newlines, non-finite
//! and overflowing times, a huge argument, and out-of-range flags. Each is
//! refused or skipped with a message naming it, promptly, in bounded memory.

use std::{path::Path, process::Output, time::Duration};

use cuda_tracer_tests::*;

const DEADLINE: Duration = Duration::from_secs(30);

fn line(ts: &str, dur_us: &str, args: &str) -> String {
    format!(
        r#"{{"ts":{ts},"pid":1,"tid":1,"type":"cuda_api","func":"cuInit","phase":"entry","dur_us":{dur_us},"ret":0,"args":{args}}}"#
    )
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo {}", path.display());
}

/// Runs the tracer to its end within [`DEADLINE`] (killed and failed
/// otherwise), returning its output and its peak RSS in bytes (`wait4`).
fn run_bounded(args: &[&std::ffi::OsStr]) -> (Output, u64) {
    let mut cmd = tracer_cmd();
    cmd.args(args);
    run_with_peak_rss(cmd, DEADLINE)
}

fn report(dir: &Path) -> (Output, u64) {
    let out = dir.join("report-out");
    run_bounded(&["report".as_ref(), dir.as_os_str(), "--out".as_ref(), out.as_os_str()])
}

#[test]
fn a_fifo_named_like_a_trace_file_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let session = tmp.path().join("session");
    std::fs::create_dir(&session).unwrap();
    std::fs::write(session.join("trace_00000_x.jsonl"), line("1.5", "2", "{}") + "\n").unwrap();
    mkfifo(&session.join("trace_00001_x.jsonl"));
    let (out, _) = report(&session);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("trace_00001_x.jsonl") && stderr.contains("not a regular file"), "{stderr}");
    // The export refuses it the same way.
    let json = tmp.path().join("trace.json");
    let (out, _) =
        run_bounded(&["export".as_ref(), "chrome".as_ref(), session.as_os_str(), "-o".as_ref(), json.as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("trace_00001_x.jsonl"), "{stderr}");
}

#[test]
fn a_fifo_metadata_json_is_skipped_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("trace_00001_x.jsonl"), line("1.5", "2", "{}") + "\n").unwrap();
    mkfifo(&tmp.path().join("metadata.json"));
    let (out, _) = report(tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("metadata.json") && stderr.contains("not a regular file"), "{stderr}");
}

#[test]
fn newlines_take_memory_in_proportion_to_the_input() {
    const INPUT: usize = 30 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let mut body = "\n".repeat(INPUT);
    body += &line("1.5", "2", "{}");
    std::fs::write(tmp.path().join("trace_00001_x.jsonl"), body).unwrap();
    let (out, peak) = report(tmp.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("1 calls") || stdout.contains("0 lines skipped"), "{stdout}");
    eprintln!("peak RSS {} MiB for {} MiB of newlines", peak >> 20, INPUT >> 20);
    // Before: 1.9 GB (one 64-byte slot per newline).
    assert!(peak < 4 * INPUT as u64, "peak RSS {peak} bytes for {INPUT} bytes of input");
}

#[test]
fn non_finite_and_overflowing_times_are_bad_lines_and_the_export_stays_json() {
    let tmp = tempfile::tempdir().unwrap();
    let lines = [
        line("1.5", "2", "{}"),
        line("NaN", "2", "{}"),
        line("1.5e308", "2", "{}"),
        line("2.5", "1.5e308", "{}"),
        line("2.5", "inf", "{}"),
        line("-1e300", "2", "{}"),
        line("1e999", "2", "{}"),
        line("3.5", "2", "{}"),
    ];
    std::fs::write(tmp.path().join("trace_00001_x.jsonl"), lines.join("\n")).unwrap();
    let (out, _) = report(tmp.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("6 lines skipped"), "{stdout}");
    for n in 2..=7 {
        assert!(stdout.contains(&format!("trace_00001_x.jsonl:{n}")), "line {n}: {stdout}");
    }
    let json = tmp.path().join("trace.json");
    let (out, _) =
        run_bounded(&["export".as_ref(), "chrome".as_ref(), tmp.path().as_os_str(), "-o".as_ref(), json.as_os_str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&json).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).expect("the export is JSON");
    let calls = doc["traceEvents"].as_array().unwrap().iter().filter(|e| e["args"]["call"] == "cuInit").count();
    assert_eq!(calls, 2, "{text}");
}

#[test]
fn a_huge_argument_is_cut_with_a_marker_in_the_export() {
    const ARG: usize = 10 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let args = format!(r#"{{"flags":0,"blob":"{}","list":[{}1]}}"#, "A".repeat(ARG), "1,".repeat(4096));
    let body = [line("1.5", "2", &args), line("2.5", "2", "{\"flags\":7}")].join("\n");
    std::fs::write(tmp.path().join("trace_00001_x.jsonl"), body).unwrap();
    let json = tmp.path().join("trace.json");
    let (out, _) =
        run_bounded(&["export".as_ref(), "chrome".as_ref(), tmp.path().as_os_str(), "-o".as_ref(), json.as_os_str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&json).unwrap();
    assert!(text.len() < 64 << 10, "export is {} bytes", text.len());
    let doc: serde_json::Value = serde_json::from_str(&text).expect("the export is JSON");
    let events = doc["traceEvents"].as_array().unwrap();
    let big = events.iter().find(|e| e["ts"] == 1500.0).expect("the big call is exported");
    let blob = big["args"]["blob"].as_str().unwrap();
    assert!(blob.starts_with("AAAA") && blob.ends_with(&format!("[truncated: {ARG} bytes]")), "{}", &blob[4000..]);
    assert!(big["args"]["list"].as_str().unwrap().starts_with("[truncated"), "{big}");
    assert_eq!(big["args"]["flags"], 0);
    let small = events.iter().find(|e| e["ts"] == 2500.0).expect("the small call is exported");
    assert_eq!(small["args"]["flags"], 7);
    let (out, _) = report(tmp.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn out_of_range_flags_are_refused_by_the_parser() {
    let cases: &[&[&str]] = &[
        &["record", "--rotate-secs", "18446744073709551615", "--", "true"],
        &["record", "--rotate-secs", "0", "--", "true"],
        &["run", "--scan-interval-ms", "5"],
        &["run", "--scan-interval-ms", "18446744073709551615"],
        &["run", "--ringbuf-bytes", "2147483648"],
        &["run", "--upload-interval-secs", "18446744073709551615"],
        &["run", "--metrics-interval", "0"],
        &["run", "--max-local-bytes", "0"],
        &["upload", "/tmp", "--upload-deadline-secs", "18446744073709551615"],
    ];
    for args in cases {
        let out = tracer_cmd().args(*args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let flag = args.iter().find(|a| a.starts_with("--") && a.len() > 2).unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag) && !stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_synced_tree_is_read_at_depth_without_following_its_symlinks() {
    let tmp = tempfile::tempdir().unwrap();
    let (outside, traces) = (tmp.path().join("outside"), tmp.path().join("traces"));
    let session = traces.join("vllm-pod-1/20261203T100000Z-7");
    std::fs::create_dir_all(&session).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(session.join("trace_00001_x.jsonl"), line("1.5", "2", "{}") + "\n").unwrap();
    let five = (0..5).map(|i| line(&format!("{i}"), "2", "{}") + "\n").collect::<String>();
    std::fs::write(outside.join("trace_00001_x.jsonl"), &five).unwrap();
    // A linked trace file, a linked session dir and a linked pod dir, all outside.
    std::os::unix::fs::symlink(outside.join("trace_00001_x.jsonl"), session.join("trace_00002_x.jsonl")).unwrap();
    std::os::unix::fs::symlink(&outside, traces.join("vllm-pod-1/20261203T110000Z-8")).unwrap();
    std::os::unix::fs::symlink(&outside, traces.join("vllm-pod-2")).unwrap();
    let out_dir = tmp.path().join("report-out");
    let (out, _) = run_bounded(&[
        "report".as_ref(),
        traces.as_os_str(),
        "--out".as_ref(),
        out_dir.as_os_str(),
        "--format".as_ref(),
        "json".as_ref(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["inputs"]["calls"], 1, "only the session's own file: {stderr}");
    assert_eq!(json["inputs"]["files"].as_array().unwrap().len(), 1);
    assert!(stderr.matches("skipping a symlink").count() >= 3, "each link is said: {stderr}");

    // A tree deeper than the walk goes is an error that says what to pass.
    let mut deep = tmp.path().join("deep");
    for i in 0..17 {
        deep.push(format!("d{i}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("trace_00001_x.jsonl"), line("1.5", "2", "{}") + "\n").unwrap();
    let (out, _) = report(&tmp.path().join("deep"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("more than 16 directory levels"), "{stderr}");
}
