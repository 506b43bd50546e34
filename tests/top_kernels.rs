//! `cuda-tracer top-kernels` (issue 19's fleet query without a query
//! engine): over the Parquet files and over their JSONL twins it gives
//! report's kernels table added up per kernel, for every node or the ones
//! asked for; a damaged Parquet file is skipped and named, the rest still
//! counted; a time range outside the trace leaves nothing.

use std::{collections::BTreeMap, path::Path, path::PathBuf};

use cuda_tracer_tests::{
    lake::{json_stdout, report, same},
    *,
};
use serde_json::Value;

/// Records the workload with both formats as `node`/`pod`; returns the
/// session dir.
fn record_as(root: &Path, session: &str, node: &str, pod: &str, iterations: &str) -> PathBuf {
    let dir = root.join("traces").join(session);
    let truth = root.join("truth").join(session);
    let argv = [workload(), "--iterations".into(), iterations.into()];
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut cmd = record_cmd(&dir, &truth, &["--format", "both"], &argv);
    let out = cmd.env("NODE_NAME", node).env("POD_NAME", pod).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    dir
}

fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_str().unwrap().ends_with(suffix))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *{suffix} in {}", dir.display());
    files
}

/// `top-kernels` over `inputs` with `extra` flags, as JSON.
fn top_kernels(inputs: &[PathBuf], extra: &[&str]) -> Value {
    let out = tracer_cmd().arg("top-kernels").args(inputs).args(["--format", "json"]).args(extra).output().unwrap();
    json_stdout(&out)
}

/// report's kernels table added up per kernel: (launches, call ms).
fn report_per_kernel(rep: &Value) -> BTreeMap<String, (u64, f64)> {
    let mut per_kernel: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    for r in rep["kernels"]["kernels"].as_array().unwrap() {
        let e = per_kernel.entry(r["kernel"].as_str().unwrap().to_string()).or_default();
        e.0 += r["launches"].as_u64().unwrap();
        e.1 += r["total_call_ms"].as_f64().unwrap();
    }
    per_kernel
}

fn assert_same_as_report(answer: &Value, per_kernel: &BTreeMap<String, (u64, f64)>, what: &str) {
    let rows = answer["kernels"].as_array().unwrap();
    assert_eq!(rows.len(), per_kernel.len(), "{what}: every kernel: {rows:?}");
    for r in rows {
        let (launches, ms) = per_kernel[r["kernel"].as_str().unwrap()];
        assert_eq!(r["launches"].as_u64(), Some(launches), "{what}: {r}");
        assert!(same(&r["total_call_ms"], &ms.into()), "{what}: {r} vs {ms}");
    }
    let launches: Vec<u64> = rows.iter().map(|r| r["launches"].as_u64().unwrap()).collect();
    assert!(launches.windows(2).all(|w| w[0] >= w[1]), "{what}: most launched first: {launches:?}");
    assert_eq!(answer["launches"].as_u64(), Some(launches.iter().sum()), "{what}");
}

#[test]
fn parquet_and_jsonl_give_reports_kernels_per_node_and_damage_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let a = record_as(tmp.path(), "session-a", "node-1", "pod-a", "20");
    let b = record_as(tmp.path(), "session-b", "node-2", "pod-b", "7");
    let all = report_per_kernel(&json_stdout(&report(&tmp.path().join("traces"), &tmp.path().join("r-all"))));
    assert!(all.len() >= 3, "{all:?}");
    let many = ["--limit", "1000"];

    let parquet: Vec<PathBuf> = [&a, &b].iter().flat_map(|d| files_ending(d, ".parquet")).collect();
    let jsonl: Vec<PathBuf> = [&a, &b].iter().flat_map(|d| files_ending(d, ".jsonl")).collect();
    assert_same_as_report(&top_kernels(&parquet, &many), &all, "over Parquet");
    assert_same_as_report(&top_kernels(&jsonl, &many), &all, "over JSONL");

    // One node: the dirs' metadata names it; report agrees.
    let traces = [tmp.path().join("traces")];
    let node2 = tracer_cmd()
        .arg("report")
        .arg(&traces[0])
        .args(["--node", "node-2", "--format", "json", "--out"])
        .arg(tmp.path().join("r-2"))
        .output()
        .unwrap();
    let only2 = report_per_kernel(&json_stdout(&node2));
    assert_same_as_report(&top_kernels(&traces, &["--limit", "1000", "--node", "node-2"]), &only2, "--node");
    let launches2: u64 = only2.values().map(|v| v.0).sum();
    assert!(launches2 < all.values().map(|v| v.0).sum(), "node-2 is a part");

    // The top N, most launched first.
    let top2 = top_kernels(&parquet, &["--limit", "2"]);
    let full = top_kernels(&parquet, &many);
    assert_eq!(top2["kernels"].as_array().unwrap()[..], full["kernels"].as_array().unwrap()[..2]);

    // A truncated copy is skipped and named; the other files still count.
    let damaged = tmp.path().join("trace_99999_damaged.parquet");
    std::fs::copy(&parquet[0], &damaged).unwrap();
    let len = std::fs::metadata(&damaged).unwrap().len();
    std::fs::File::options().write(true).open(&damaged).unwrap().set_len(len / 2).unwrap();
    let mut with_damage = parquet.clone();
    with_damage.push(damaged.clone());
    let answer = top_kernels(&with_damage, &many);
    assert_same_as_report(&answer, &all, "with a damaged file");
    assert_eq!(answer["skipped_files"], serde_json::json!([damaged]), "{answer}");

    // A range before the trace: nothing, in both formats.
    for files in [&parquet, &jsonl] {
        let none = top_kernels(files, &["--until", "2000-01-01T00:00:00Z"]);
        assert_eq!(none["launches"], 0, "{none}");
    }
}
