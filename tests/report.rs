//! `cuda-tracer report` on a recorded fixture workload: per-function counts,
//! copy volume and the leak list equal what the workload's ground truth
//! implies; bad lines are skipped and named; bad inputs are clear errors.

use std::{collections::BTreeMap, path::Path, process::Output};

use cuda_tracer_tests::*;
use serde_json::Value;

fn report(inputs: &[&Path], out: &Path, format: &str) -> Output {
    tracer_cmd()
        .arg("report")
        .args(inputs)
        .arg("--out")
        .arg(out)
        .args(["--format", format])
        .output()
        .expect("run report")
}

fn json_stdout(output: &Output) -> Value {
    assert!(output.status.success(), "report failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("--format json prints JSON")
}

/// (type, func) -> calls, from the ground truth.
fn truth_counts(truth: &[Value]) -> BTreeMap<(String, String), u64> {
    let mut counts = BTreeMap::new();
    for l in truth {
        let key = (l["type"].as_str().unwrap().to_string(), l["func"].as_str().unwrap().to_string());
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// The rows of a report table as (row[key.0], row[key.1]) -> row[value].
fn table(rows: &Value, key: (&str, &str), value: &str) -> BTreeMap<(String, String), u64> {
    let text = |r: &Value, k: &str| r[k].as_str().unwrap().to_string();
    let rows = rows.as_array().unwrap().iter();
    rows.map(|r| ((text(r, key.0), text(r, key.1)), r[value].as_u64().unwrap())).collect()
}

fn report_counts(report: &Value) -> BTreeMap<(String, String), u64> {
    table(&report["functions"]["functions"], ("type", "func"), "calls")
}

/// (type, direction) -> bytes of the successful copies in the truth.
fn truth_copies(truth: &[Value]) -> BTreeMap<(String, String), u64> {
    let mut copies = BTreeMap::new();
    for l in truth.iter().filter(|l| l["ret"] == 0 && l["args"]["kind"].is_string()) {
        let key = (l["type"].as_str().unwrap().to_string(), l["args"]["kind"].as_str().unwrap().to_string());
        *copies.entry(key).or_default() += l["args"]["bytes"].as_u64().unwrap();
    }
    copies
}

/// Pointers allocated and not freed, per layer, from the truth: what the
/// leak list must hold.
fn truth_leaks(truth: &[Value]) -> Vec<(u64, String)> {
    let mut live: BTreeMap<(u64, String, String), i64> = BTreeMap::new();
    for l in truth.iter().filter(|l| l["ret"] == 0) {
        let func = l["func"].as_str().unwrap();
        let Some(dptr) = l["args"]["dptr"].as_str() else { continue };
        let key = (l["pid"].as_u64().unwrap(), dptr.to_string(), l["type"].as_str().unwrap().to_string());
        if func.contains("Alloc") || func.contains("Malloc") {
            *live.entry(key).or_default() += 1;
        } else if func.contains("Free") && dptr != "0x0" {
            *live.entry(key).or_default() -= 1;
        }
    }
    let mut leaks: Vec<(u64, String)> =
        live.into_iter().filter(|(_, n)| *n > 0).map(|((pid, dptr, _), _)| (pid, dptr)).collect();
    leaks.dedup();
    leaks
}

#[test]
fn report_equals_the_ground_truth_and_names_bad_lines() {
    let (tmp, trace, truth_dir) = scratch();
    record(&trace, &truth_dir, &[], &[&workload(), "--iterations", "50"]);
    let truth = load_truth(&truth_dir);
    let out = tmp.path().join("report");

    let json = json_stdout(&report(&[&trace], &out, "json"));
    assert_eq!(report_counts(&json), truth_counts(&truth), "calls per function");
    assert_eq!(json["inputs"]["calls"].as_u64().unwrap(), truth.len() as u64);
    assert_eq!(json["inputs"]["skipped_lines"], 0);

    let copies = table(&json["memory"]["copies"], ("type", "direction"), "bytes");
    assert!(!copies.is_empty());
    assert_eq!(copies, truth_copies(&truth), "copy volume by layer and direction");

    let mut leaks: Vec<(u64, String)> = json["memory"]["leaks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["pid"].as_u64().unwrap(), l["dptr"].as_str().unwrap().to_string()))
        .collect();
    leaks.sort();
    assert_eq!(leaks, truth_leaks(&truth), "allocations never freed");
    let processes = json["memory"]["processes"].as_array().unwrap();
    assert!(processes.iter().all(|p| p["peak_bytes"].as_u64().unwrap() > 0 && p["final_bytes"] == 0), "{processes:?}");
    let failed: u64 = processes.iter().map(|p| p["failed_allocations"].as_u64().unwrap()).sum();
    let is_alloc = |f: &str| f.contains("Alloc") || f.contains("Malloc");
    let truth_failed = truth.iter().filter(|l| l["ret"] != 0 && is_alloc(l["func"].as_str().unwrap())).count();
    assert_eq!(failed, truth_failed as u64);

    for name in [
        "functions.csv",
        "functions_by_process.csv",
        "functions_by_thread.csv",
        "kernels.csv",
        "kernel_shapes.csv",
        "launch_rate.csv",
        "memory_timeline.csv",
        "memory_leaks.csv",
        "copies.csv",
        "report.json",
        "report.txt",
    ] {
        assert!(out.join(name).is_file(), "{name} written");
    }
    let launches = truth.iter().filter(|l| l["func"].as_str().unwrap().contains("LaunchKernel")).count() as u64;
    let kernel_launches: u64 =
        json["kernels"]["kernels"].as_array().unwrap().iter().map(|k| k["launches"].as_u64().unwrap()).sum();
    assert_eq!(kernel_launches, launches);
    let first_json = std::fs::read(out.join("report.json")).unwrap();
    let text = String::from_utf8(report(&[&trace], &out, "text").stdout).unwrap();
    assert!(text.contains("cudaLaunchKernel") && text.contains("== Device memory"), "{text}");
    assert!(std::fs::read(out.join("report.json")).unwrap() == first_json, "report.json is the same bytes run to run");

    // A copy of the trace with a corrupt line and a truncated last line.
    let copy = tmp.path().join("corrupt");
    std::fs::create_dir_all(&copy).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(&trace).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for f in &files {
        std::fs::copy(f, copy.join(f.file_name().unwrap())).unwrap();
    }
    let last = files.iter().rfind(|f| f.extension().is_some_and(|e| e == "jsonl")).unwrap();
    let last_copy = copy.join(last.file_name().unwrap());
    let text = std::fs::read_to_string(&last_copy).unwrap();
    let n = text.lines().count();
    let first = text.lines().next().unwrap();
    std::fs::write(&last_copy, format!("{text}{{\"ts\":1,\"pid\":oops}}\n{}", &first[..first.len() / 2])).unwrap();
    let output = report(&[&copy], &tmp.path().join("report2"), "json");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let json = json_stdout(&output);
    assert_eq!(json["inputs"]["skipped_lines"], 2);
    assert_eq!(report_counts(&json), truth_counts(&truth), "bad lines cost nothing else");
    for line in [n + 1, n + 2] {
        let at = format!("{}:{line}:", last_copy.display());
        assert!(stderr.contains(&at), "warning names {at}: {stderr}");
        assert!(json["inputs"]["skipped"].as_array().unwrap().iter().any(|s| s.as_str().unwrap().starts_with(&at)));
    }
    assert!(stderr.contains("2 lines could not be read"), "{stderr}");
}

#[test]
fn bad_inputs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let notes = tmp.path().join("notes.txt");
    std::fs::write(&notes, "hello\n").unwrap();
    let not_trace = tmp.path().join("other.jsonl");
    std::fs::write(&not_trace, "{\"hello\":1}\n{\"world\":2}\n").unwrap();
    for (input, message) in [
        (&empty, "no trace files"),
        (&notes, "not a trace file"),
        (&not_trace, "no line of the 2 in the inputs is a trace line"),
        (&tmp.path().join("missing"), "No such file"),
    ] {
        let output = report(&[input], &out, "text");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{} is refused", input.display());
        assert!(stderr.contains(message), "{}: {stderr}", input.display());
        assert!(stderr.contains(&input.display().to_string()), "names the input: {stderr}");
    }
}
