//! Unit tests of graph capture/replay tracking on hand-made call lists.

use super::*;
use crate::analysis::report::layer::tests::{call, hex};
use crate::analysis::trace::CopyKind;

fn on_stream(mut c: Call, stream: u64) -> Call {
    c.args.set_stream(hex(stream)).unwrap();
    c
}

/// Capture of `kernels` launches on `stream` into `graph`, instantiated as `exec`.
fn capture(ts: f64, stream: u64, kernels: usize, graph: u64, exec: u64) -> Vec<Call> {
    let mut v = vec![on_stream(call(ts, "cudaStreamBeginCapture", 1.0), stream)];
    for k in 0..kernels {
        v.push(on_stream(call(ts + 0.01 * (k + 1) as f64, "cudaLaunchKernel", 1.0), stream));
    }
    let mut end = on_stream(call(ts + 0.5, "cudaStreamEndCapture", 1000.0), stream);
    end.args.set_graph(hex(graph)).unwrap();
    v.push(end);
    let mut inst = call(ts + 2.0, "cudaGraphInstantiateWithFlags", 1.0);
    inst.args.set_graph(hex(graph)).unwrap();
    inst.args.set_exec(hex(exec)).unwrap();
    v.push(inst);
    v
}

fn replay(ts: f64, exec: u64, dur_us: f64) -> Call {
    let mut c = on_stream(call(ts, "cudaGraphLaunch", dur_us), 0x1);
    c.args.set_exec(hex(exec)).unwrap();
    c
}

fn step_end(ts: f64) -> Vec<Call> {
    let mut copy = call(ts, "cudaMemcpyAsync", 1.0);
    copy.args.set_kind(Some(CopyKind::DtoH));
    let mut record = call(ts + 0.01, "cudaEventRecord", 1.0);
    record.args.set_event(hex(0xe)).unwrap();
    let mut sync = call(ts + 0.02, "cudaEventSynchronize", 1.0);
    sync.args.set_event(hex(0xe)).unwrap();
    vec![copy, record, sync]
}

#[test]
fn captures_instantiations_and_replays_per_exec() {
    let mut calls = capture(1.0, 0x5, 3, 0x100, 0x200);
    // A launch on another stream during a capture is not captured.
    calls.insert(2, on_stream(call(1.015, "cudaLaunchKernel", 1.0), 0x6));
    calls.extend(capture(4.0, 0x5, 1, 0x101, 0x201));
    let mut nested = call(10.001, "cuGraphLaunch", 1.0);
    nested.args.set_exec(hex(0x200)).unwrap();
    calls.extend([replay(10.0, 0x200, 20.0), nested, replay(11.0, 0x200, 40.0), replay(12.0, 0x999, 5.0)]);
    let g = collect(&calls, &layer::outermost(&calls));
    assert_eq!(g.captures, 2);
    assert_eq!(g.execs.len(), 3);
    let e = &g.execs[0];
    assert_eq!((e.exec, e.graph), (Hex(0x200), Some(Hex(0x100))));
    let cap = e.capture.as_ref().unwrap();
    assert_eq!((cap.stream, cap.kernels, cap.start_ms), (Hex(0x5), 3, 1.0));
    assert!((cap.end_ms - 2.5).abs() < 1e-9);
    assert_eq!(e.replays.len(), 2, "the nested driver launch is the same replay");
    assert_eq!(g.execs[1].replays.len(), 0);
    let unknown = &g.execs[2];
    assert_eq!((unknown.exec, unknown.graph, unknown.instantiate_ms), (Hex(0x999), None, None));
}

#[test]
fn csv_files_have_the_documented_columns_and_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut calls = capture(1.0, 0x5, 2, 0x100, 0x200);
    calls.extend(capture(3.0, 0x5, 1, 0x101, 0x201));
    calls.push(replay(10.0, 0x200, 20.0));
    calls.extend(step_end(10.1)); // decode step 0
    calls.push(replay(11.0, 0x201, 20.0));
    calls.push(replay(11.1, 0x201, 20.0));
    calls.extend(step_end(11.2)); // prefill step 1
    let summary = write(&calls, dir.path()).unwrap();
    assert_eq!(
        summary,
        GraphsSummary { captures: 2, execs: 2, replays: 3, execs_without_instantiation: 0, unclosed_captures: 0 }
    );
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    let captures = read("cuda_graph_captures.csv");
    let lines: Vec<&str> = captures.lines().collect();
    assert_eq!(lines[0], CAPTURES_COLUMNS);
    assert_eq!(lines[1], "FULL,,,,,0.001000,1,0x200,0x100,0x5,1.500,2,0.003000,1");
    assert!(lines[2].starts_with("PIECEWISE,"), "{}", lines[2]);
    let usage = read("cuda_graph_usage.csv");
    let lines: Vec<&str> = usage.lines().collect();
    assert_eq!(lines[0], USAGE_COLUMNS);
    assert_eq!(lines[2], "PIECEWISE,,,,,2,1,0x201,0x101,20.000,20.000,0.011000,0.011100");
    let timeline = read("cuda_graph_timeline.csv");
    let lines: Vec<&str> = timeline.lines().collect();
    assert_eq!(lines[0], TIMELINE_COLUMNS);
    assert_eq!(lines[1], "0.010000,1,1,0x200,0x100,0x1,0,20.000,FULL");
    assert_eq!(lines[3], "0.011100,1,1,0x201,0x101,0x1,1,20.000,PIECEWISE");
}
