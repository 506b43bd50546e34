//! `cuda-tracer export chrome` on a trace of the fixture workload: the JSON is
//! valid Trace Event Format, every call of the window is one event, kernels
//! are named, steps and memory counters are there, bad windows say why.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use cuda_tracer_tests::*;
use serde_json::Value;

const MIB: u64 = 1 << 20;

fn export(trace_dir: &Path, out: &Path, window: &[&str]) -> std::process::Output {
    tracer_cmd().args(["export", "chrome"]).arg(trace_dir).arg("-o").arg(out).args(window).output().unwrap()
}

fn export_ok(trace_dir: &Path, out: &Path, window: &[&str]) -> Vec<Value> {
    let output = export(trace_dir, out, window);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "export failed: {stderr}");
    assert!(stderr.contains("ui.perfetto.dev"), "{stderr}");
    validate(&serde_json::from_slice(&std::fs::read(out).unwrap()).expect("the export is one JSON document"))
}

/// Checks the Trace Event Format rules and returns the events.
fn validate(doc: &Value) -> Vec<Value> {
    assert_eq!(doc["displayTimeUnit"], "ms");
    let events = doc["traceEvents"].as_array().expect("traceEvents array").clone();
    let (mut processes, mut threads, mut used) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let mut counter_ts: BTreeMap<(u64, String), f64> = BTreeMap::new();
    for e in &events {
        let ph = e["ph"].as_str().unwrap_or_else(|| panic!("no ph: {e}"));
        let ts = e["ts"].as_f64().unwrap_or_else(|| panic!("no ts: {e}"));
        let (pid, tid) = (e["pid"].as_u64().expect("pid"), e["tid"].as_u64().expect("tid"));
        let name = e["name"].as_str().unwrap_or_else(|| panic!("no name: {e}"));
        match ph {
            "M" if name == "process_name" => drop(processes.insert(pid)),
            "M" if name == "thread_name" => drop(threads.insert((pid, tid))),
            "M" => {}
            "X" => {
                assert!(e["dur"].as_f64().unwrap_or(-1.0) >= 0.0, "X event without a duration >= 0: {e}");
                used.insert((pid, tid));
            }
            "C" => {
                let last = counter_ts.insert((pid, name.to_string()), ts).unwrap_or(f64::MIN);
                assert!(ts >= last, "counter {name} of {pid} goes back in time: {e}");
                assert!(e["args"].as_object().is_some_and(|a| a.values().all(Value::is_number)), "{e}");
            }
            other => panic!("unexpected phase {other}: {e}"),
        }
    }
    for (pid, tid) in &used {
        assert!(processes.contains(pid), "no process_name for {pid}");
        assert!(threads.contains(&(*pid, *tid)), "no thread_name for {pid}/{tid}");
    }
    events
}

fn calls(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| e["ph"] == "X" && e["cat"] != "step").collect()
}

fn steps(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| e["ph"] == "X" && e["cat"] == "step").collect()
}

#[test]
fn chrome_export_of_the_fixture_workload() {
    let (tmp, out, truth_dir) = scratch();
    record(&out, &truth_dir, &[], &[&workload(), "--iterations", "40"]);
    let trace = load_trace(&out);
    let truth = load_truth(&truth_dir);
    let json = tmp.path().join("trace.json");

    // Whole trace: one event per call, counted per function like the truth.
    let events = export_ok(&out, &json, &[]);
    let got = calls(&events);
    assert_eq!(got.len(), truth.len(), "one event per call");
    let count = |names: Vec<&str>| {
        names.into_iter().fold(BTreeMap::new(), |mut m, n| {
            *m.entry(n.to_string()).or_insert(0) += 1;
            m
        })
    };
    assert_eq!(
        count(got.iter().map(|e| e["args"]["call"].as_str().unwrap()).collect()),
        count(truth.iter().map(|l| l["func"].as_str().unwrap()).collect())
    );
    // Launches carry the kernel name as the event name; failed calls their error.
    let want_names = trace
        .lines
        .iter()
        .filter(|l| l["func"].as_str().unwrap().contains("LaunchKernel"))
        .map(|l| l["args"]["kernel"].as_str().unwrap_or(l["func"].as_str().unwrap()));
    let got_names = got.iter().filter(|e| e["cat"] == "launch").map(|e| e["name"].as_str().unwrap());
    assert_eq!(count(got_names.collect()), count(want_names.collect()));
    assert!(got.iter().any(|e| e["name"] == "gemm_kernel" || e["name"].as_str().unwrap().contains("gemm")));
    let errors = got.iter().filter(|e| e["args"]["error"].is_string()).count();
    assert_eq!(errors, trace.lines.iter().filter(|l| l["ret"] != 0).count());
    assert!(got.iter().any(|e| e["args"]["error"] == "cudaErrorMemoryAllocation"));
    for e in &got {
        let cat = e["cat"].as_str().unwrap();
        assert!(["launch", "memory", "memcpy", "sync", "graph", "module"].contains(&cat), "{e}");
    }

    // Memory: the workload's 64 MiB of weights are the first allocation and
    // everything is freed by the end.
    let first_call = trace.lines.iter().min_by(|a, b| a["ts"].as_f64().unwrap().total_cmp(&b["ts"].as_f64().unwrap()));
    let parent = first_call.unwrap()["pid"].as_u64().unwrap();
    let memory: Vec<u64> = events
        .iter()
        .filter(|e| e["ph"] == "C" && e["pid"] == parent)
        .map(|e| e["args"]["bytes"].as_u64().unwrap())
        .collect();
    assert_eq!(memory.first(), Some(&0), "the counter starts at the window's start");
    assert_eq!(memory.get(1), Some(&(64 * MIB)), "{memory:?}");
    assert!(memory.iter().max().unwrap() >= &(64 * MIB));
    assert_eq!(memory.last(), Some(&0), "all device memory was freed");

    // Steps: one per event synchronize of the serving loop at least.
    let all_steps = steps(&events);
    assert!(all_steps.len() >= 40, "{} steps", all_steps.len());
    assert!(all_steps
        .iter()
        .all(|s| s["name"].as_str().unwrap().starts_with("prefill #")
            || s["name"].as_str().unwrap().starts_with("decode #")));

    // --steps 10..20: the steps 10-19 and exactly the calls that start between
    // the first one's start and the last one's end.
    let windowed = export_ok(&out, &json, &["--steps", "10..20"]);
    let chosen = steps(&windowed);
    let indices: BTreeSet<u64> = chosen.iter().map(|s| s["args"]["index"].as_u64().unwrap()).collect();
    assert_eq!(indices, (10..20).collect());
    let from = chosen.iter().map(|s| s["ts"].as_f64().unwrap()).fold(f64::MAX, f64::min);
    let to = chosen.iter().map(|s| s["ts"].as_f64().unwrap() + s["dur"].as_f64().unwrap()).fold(0.0, f64::max);
    let in_steps = calls(&windowed);
    assert!(!in_steps.is_empty() && in_steps.len() < got.len());
    let expected = got.iter().filter(|e| (from..=to).contains(&e["ts"].as_f64().unwrap())).count();
    assert_eq!(in_steps.len(), expected, "calls in steps 10..20 ({from}..{to} us)");

    // --time: exactly the trace lines that start in the window.
    let ts: Vec<f64> = trace.lines.iter().map(|l| l["ts"].as_f64().unwrap()).collect();
    let (first, last) = (ts.iter().copied().fold(f64::MAX, f64::min), ts.iter().copied().fold(0.0, f64::max));
    let (start, end) = (first + (last - first) / 3.0, first + 2.0 * (last - first) / 3.0);
    let range = format!("{start}..{end}");
    let (start, end): (f64, f64) = (start.to_string().parse().unwrap(), end.to_string().parse().unwrap());
    let windowed = export_ok(&out, &json, &["--time", &range]);
    let in_time = calls(&windowed);
    assert_eq!(in_time.len(), ts.iter().filter(|&&t| t >= start && t < end).count());
    for e in &in_time {
        let t = e["ts"].as_f64().unwrap();
        assert!(t >= start * 1000.0 - 0.001 && t < end * 1000.0 + 0.001, "{e} outside {range}");
    }
    let counters: Vec<f64> = windowed.iter().filter(|e| e["ph"] == "C").map(|e| e["ts"].as_f64().unwrap()).collect();
    assert!(counters.iter().all(|t| *t >= start * 1000.0 - 0.001 && *t <= end * 1000.0 + 0.001));
}

#[test]
fn bad_windows_name_the_problem_and_the_fix() {
    let (tmp, out, truth_dir) = scratch();
    record(&out, &truth_dir, &[], &[&workload(), "--no-child", "--threads", "1", "--iterations", "5"]);
    let json = tmp.path().join("trace.json");
    for (window, expected) in [
        (["--steps", "100-150"], "ranges use `..`"),
        (["--steps", "a..b"], "not a step index"),
        (["--time", "9..3"], "range is empty"),
        (["--steps", "100..150"], "pick a range inside"),
        (["--time", "900000000..900000001"], "no calls start in the window"),
    ] {
        let output = export(&out, &json, &window);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{window:?} was accepted");
        assert!(stderr.contains(expected), "{window:?}: {stderr}");
    }
    let output = export(&out, &json, &["--steps", "1..2", "--time", "1..2"]);
    assert!(!output.status.success(), "--steps and --time together");
    let output = export(&tmp.path().join("nowhere"), &json, &[]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("nowhere"));
}
