//! `cuda-tracer report` on a traced vLLM-like engine loop (`cuda-workload
//! --vllm-loop`): graph captures, replays per exec, steps and their phase
//! split equal the workload's own ground truth, and the CSV headers are the
//! documented ones.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use cuda_tracer_tests::*;
use serde_json::Value;

const CAPTURES: &str = "runtime_mode,num_tokens,num_reqs,uniform,has_lora,capture_time_sec,\
pid,exec,graph,capture_stream,capture_duration_ms,kernels_captured,instantiate_time_sec,replay_count";
const USAGE: &str = "runtime_mode,num_tokens,num_reqs,uniform,has_lora,replay_count,\
pid,exec,graph,mean_launch_us,p99_launch_us,first_replay_sec,last_replay_sec";
const TIMELINE: &str = "timestamp_sec,pid,tid,exec,graph,stream,step,launch_us,runtime_mode";
const FORWARD: &str = "timestamp_sec,phase,batch_size,num_tokens,duration_ms,\
throughput_tokens_per_sec,num_launches,graph_replays,pid,step,nccl_calls,nccl_bytes,nccl_call_ms";

/// A CSV file as its header and rows of named fields.
struct Csv {
    header: String,
    rows: Vec<BTreeMap<String, String>>,
}

fn read_csv(path: &Path) -> Csv {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header = lines.next().expect("header").to_string();
    let names: Vec<&str> = header.split(',').collect();
    let rows = lines
        .map(|l| {
            let fields: Vec<&str> = l.split(',').collect();
            assert_eq!(fields.len(), names.len(), "{}: {l}", path.display());
            names.iter().zip(fields).map(|(n, f)| (n.to_string(), f.to_string())).collect()
        })
        .collect();
    Csv { header, rows }
}

/// Every line of the workload's `<prefix>.<pid>.jsonl` truth files.
fn workload_truth(dir: &Path, prefix: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with(&format!("{prefix}.")) {
            for l in std::fs::read_to_string(&path).unwrap().lines() {
                out.push(serde_json::from_str(l).unwrap());
            }
        }
    }
    out
}

/// Records the loop with `args`, reports it; (scratch, report dir, truth dir, stdout JSON).
fn record_and_report(args: &[&str]) -> (tempfile::TempDir, PathBuf, PathBuf, Value) {
    let (tmp, trace, truth) = scratch();
    let mut argv = vec![workload(), "--vllm-loop".to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    record(&trace, &truth, &[], &argv);
    let report = tmp.path().join("report");
    let out =
        tracer_cmd().arg("report").arg(&trace).arg("--out").arg(&report).args(["--format", "json"]).output().unwrap();
    assert!(out.status.success(), "report failed: {}", String::from_utf8_lossy(&out.stderr));
    let json = serde_json::from_slice(&out.stdout).expect("report --format json prints JSON");
    (tmp, report, truth, json)
}

fn assert_report_equals_truth(report: &Path, truth: &Path, json: &Value) {
    let steps_truth = workload_truth(truth, "steps");
    let graphs_truth = workload_truth(truth, "graphs");
    assert!(!steps_truth.is_empty() && !graphs_truth.is_empty(), "the workload wrote its truth");
    let pid = load_truth(truth)[0]["pid"].as_u64().unwrap().to_string();

    // Graphs: one capture row and one usage row per instantiated exec.
    let captures = read_csv(&report.join("cuda_graph_captures.csv"));
    let usage = read_csv(&report.join("cuda_graph_usage.csv"));
    let timeline = read_csv(&report.join("cuda_graph_timeline.csv"));
    assert_eq!(
        (captures.header.as_str(), usage.header.as_str(), timeline.header.as_str()),
        (CAPTURES, USAGE, TIMELINE)
    );
    assert_eq!(captures.rows.len(), graphs_truth.len(), "one row per instantiated graph");
    assert_eq!(usage.rows.len(), graphs_truth.len());
    let mut total_replays = 0;
    for g in &graphs_truth {
        let exec = g["exec"].as_str().unwrap();
        let replays = g["replays"].as_u64().unwrap();
        total_replays += replays;
        let cap = captures.rows.iter().find(|r| r["exec"] == exec).unwrap_or_else(|| panic!("no capture row for {g}"));
        assert_eq!(cap["graph"], g["graph"].as_str().unwrap(), "{g}");
        assert_eq!(cap["capture_stream"], g["stream"].as_str().unwrap(), "{g}");
        assert_eq!(cap["kernels_captured"], g["kernels"].to_string(), "{g}");
        assert_eq!(cap["replay_count"], replays.to_string(), "{g}");
        assert_eq!(cap["pid"], pid);
        // The mode is inferred from the steps that replayed it.
        let mode = if replays == 0 { "" } else { g["mode"].as_str().unwrap() };
        assert_eq!(cap["runtime_mode"], mode, "{g}");
        for seed_only in ["num_tokens", "num_reqs", "uniform", "has_lora"] {
            assert_eq!(cap[seed_only], "", "{seed_only} cannot be derived");
        }
        assert!(!cap["capture_time_sec"].is_empty() && !cap["capture_duration_ms"].is_empty());
        let use_row = usage.rows.iter().find(|r| r["exec"] == exec).unwrap();
        assert_eq!(use_row["replay_count"], replays.to_string(), "{g}");
        assert_eq!(use_row["mean_launch_us"].is_empty(), replays == 0);
        let in_timeline = timeline.rows.iter().filter(|r| r["exec"] == exec).count() as u64;
        assert_eq!(in_timeline, replays, "{g}");
    }
    assert_eq!(timeline.rows.len() as u64, total_replays);
    assert_eq!(json["graphs"]["captures"], graphs_truth.len());
    assert_eq!(json["graphs"]["replays"], total_replays);
    assert_eq!(json["graphs"]["execs_without_instantiation"], 0);

    // Steps: every step, in order, with its phase and counts.
    let forward = read_csv(&report.join("forward_pass_timing.csv"));
    assert_eq!(forward.header, FORWARD);
    assert_eq!(forward.rows.len(), steps_truth.len(), "step count");
    for (row, want) in forward.rows.iter().zip(&steps_truth) {
        assert_eq!(row["step"], want["index"].to_string());
        assert_eq!(row["pid"], pid);
        assert_eq!(row["phase"], want["phase"].as_str().unwrap(), "step {want}");
        assert_eq!(row["num_launches"], want["num_launches"].to_string(), "step {want}");
        assert_eq!(row["graph_replays"], want["graph_replays"].to_string(), "step {want}");
        assert!(row["duration_ms"].parse::<f64>().unwrap() >= 0.0);
    }
    // Every replay happened inside a step, and the timeline says which.
    for r in &timeline.rows {
        let step: usize = r["step"].parse().unwrap_or_else(|_| panic!("replay outside a step: {r:?}"));
        assert_eq!(r["runtime_mode"], if forward.rows[step]["phase"] == "decode" { "FULL" } else { "PIECEWISE" });
    }

    // summary.json: the seed's shape, counts per phase from the truth.
    let summary: Value = serde_json::from_slice(&std::fs::read(report.join("summary.json")).unwrap()).unwrap();
    for phase in ["prefill", "decode"] {
        let want = steps_truth.iter().filter(|s| s["phase"] == phase).count();
        assert_eq!(summary[phase]["count"], want, "{phase}");
        let keys: Vec<&String> = summary[phase].as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 7, "{keys:?}");
        let s = &summary[phase];
        let (min, p50, max) =
            (s["min_ms"].as_f64().unwrap(), s["p50_ms"].as_f64().unwrap(), s["max_ms"].as_f64().unwrap());
        assert!(min <= p50 && p50 <= max, "{s}");
    }
    assert_eq!(json["steps"]["steps"], steps_truth.len());
    assert_eq!(json["steps"]["unsynced"], 0);
}

#[test]
fn engine_loop_graphs_and_steps_equal_ground_truth() {
    let (_tmp, report, truth, json) = record_and_report(&["--vllm-steps", "24"]);
    assert_report_equals_truth(&report, &truth, &json);
}

#[test]
fn async_scheduling_keeps_every_step_and_its_counts() {
    // Step n+1 is queued before step n's event is synchronized.
    let (_tmp, report, truth, json) = record_and_report(&[
        "--vllm-async",
        "--vllm-steps",
        "17",
        "--vllm-pattern",
        "PPDDD",
        "--vllm-sizes",
        "2",
        "--vllm-layers",
        "3",
    ]);
    assert_report_equals_truth(&report, &truth, &json);
}

#[test]
fn documented_columns_are_the_written_ones() {
    // This crate's own checkout (harness::root() may name another one when
    // a target dir is shared between checkouts).
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/STEPS.md")).unwrap();
    for header in [CAPTURES, USAGE, TIMELINE, FORWARD] {
        assert!(doc.contains(header), "docs/STEPS.md does not show `{header}`");
    }
}
