//! Unit tests of step segmentation on hand-made call lists.

use super::*;
use crate::analysis::report::layer::tests::{call, hex};

/// A small DtoH copy, an event record and its sync, starting at `ts`.
fn step_end(ts: f64, event: u64) -> Vec<Call> {
    let mut copy = call(ts, "cudaMemcpyAsync", 5.0);
    copy.args.set_kind(Some(CopyKind::DtoH));
    copy.args.set_bytes(Some(64)).unwrap();
    let mut record = call(ts + 0.01, "cudaEventRecord", 2.0);
    record.args.set_event(hex(event)).unwrap();
    let mut sync = call(ts + 0.02, "cudaEventSynchronize", 1000.0);
    sync.args.set_event(hex(event)).unwrap();
    vec![copy, record, sync]
}

fn replay(ts: f64, exec: u64) -> Call {
    let mut c = call(ts, "cudaGraphLaunch", 10.0);
    c.args.set_exec(hex(exec)).unwrap();
    c
}

fn decode(ts: f64) -> Vec<Call> {
    let mut v = vec![replay(ts, 0x10), call(ts + 0.1, "cudaLaunchKernel", 3.0)];
    v.extend(step_end(ts + 0.2, 0xe0));
    v
}

fn prefill(ts: f64) -> Vec<Call> {
    let mut v = vec![
        replay(ts, 0x20),
        call(ts + 0.1, "cudaLaunchKernel", 3.0),
        replay(ts + 0.2, 0x21),
        call(ts + 0.3, "cudaLaunchKernel", 3.0),
        replay(ts + 0.4, 0x22),
    ];
    v.extend(step_end(ts + 0.5, 0xe0));
    v
}

#[test]
fn decode_and_prefill_steps_with_their_counts_and_times() {
    let mut calls = prefill(10.0);
    calls.extend(decode(20.0));
    let steps = segment(&calls);
    assert_eq!(steps.len(), 2);
    let (p, d) = (&steps[0], &steps[1]);
    assert_eq!((p.index, p.phase, p.num_launches, p.graph_replays), (0, Phase::Prefill, 2, 3));
    assert_eq!((d.index, d.phase, d.num_launches, d.graph_replays), (1, Phase::Decode, 1, 1));
    assert_eq!(d.start_ms, 20.0);
    // Ends when the sync returns: 20.22 ms + 1000 us.
    assert!((d.end_ms - 21.22).abs() < 1e-9, "{}", d.end_ms);
}

#[test]
fn nested_driver_calls_are_not_counted_twice() {
    let mut calls = decode(5.0);
    let mut nested = call(5.001, "cuGraphLaunch", 2.0);
    nested.args.set_exec(hex(0x10)).unwrap();
    calls.insert(1, nested);
    calls.insert(3, call(5.101, "cuLaunchKernel", 1.0));
    let steps = segment(&calls);
    assert_eq!((steps[0].num_launches, steps[0].graph_replays, steps[0].phase), (1, 1, Phase::Decode));
}

#[test]
fn warm_up_capture_and_device_sync_are_not_a_step() {
    let mut calls = vec![
        call(1.0, "cudaLaunchKernel", 1.0), // profile run
        call(1.1, "cudaDeviceSynchronize", 1.0),
        call(2.0, "cudaStreamBeginCapture", 1.0),
        call(2.1, "cudaLaunchKernel", 1.0),
        call(2.2, "cudaStreamEndCapture", 1.0),
        call(2.3, "cudaGraphInstantiateWithFlags", 1.0),
    ];
    calls.extend(decode(3.0));
    let steps = segment(&calls);
    assert_eq!(steps.len(), 1);
    assert_eq!((steps[0].num_launches, steps[0].start_ms), (1, 3.0));
}

#[test]
fn async_scheduling_next_steps_launches_before_this_steps_sync() {
    // Step 0 records event A; step 1's work is queued; only then A is synced.
    let mut calls = vec![replay(1.0, 0x10)];
    let mut end0 = step_end(1.1, 0xa);
    let sync0 = end0.pop().unwrap();
    calls.extend(end0);
    calls.push(replay(2.0, 0x10));
    calls.push(call(2.05, "cudaLaunchKernel", 1.0));
    calls.push(Call { ts_ms: 2.06, ..sync0 });
    let mut end1 = step_end(2.1, 0xb);
    let sync1 = end1.pop().unwrap();
    calls.extend(end1);
    // The sync of step 1 comes from another thread (vLLM's output thread).
    calls.push(Call { ts_ms: 3.0, tid: 7, ..sync1 });
    let steps = segment(&calls);
    assert_eq!(steps.len(), 2);
    assert_eq!((steps[0].num_launches, steps[0].graph_replays), (0, 1));
    assert_eq!((steps[1].num_launches, steps[1].graph_replays), (1, 1));
    assert!((steps[0].end_ms - 3.06).abs() < 1e-9, "step 0 ends at its own event's sync: {}", steps[0].end_ms);
    assert_eq!(steps[1].start_ms, 2.0);
    assert!((steps[1].end_ms - 4.0).abs() < 1e-9);
}

#[test]
fn a_free_between_steps_does_not_start_the_next_one() {
    let mut calls = decode(1.0);
    calls.push(call(1.5, "cudaFree", 1.0));
    calls.extend(decode(2.0));
    let steps = segment(&calls);
    assert_eq!(steps[1].start_ms, 2.0);
}

#[test]
fn a_step_never_synchronized_is_counted_not_reported() {
    let mut calls = decode(1.0);
    calls.pop();
    let seg = segment_calls(&calls, &layer::outermost(&calls));
    assert!(seg.steps.is_empty());
    assert_eq!(seg.unsynced, 1);
}

#[test]
fn a_large_copy_or_a_record_without_copy_does_not_end_a_step() {
    let mut calls = vec![replay(1.0, 0x10)];
    let mut big = call(1.1, "cudaMemcpyAsync", 1.0);
    big.args.set_kind(Some(CopyKind::DtoH));
    big.args.set_bytes(Some(SMALL_COPY_BYTES + 1)).unwrap();
    calls.push(big);
    let mut record = call(1.2, "cudaEventRecord", 1.0);
    record.args.set_event(hex(0xc)).unwrap();
    calls.push(record);
    calls.push(replay(1.3, 0x11));
    calls.extend(step_end(1.4, 0xe));
    let steps = segment(&calls);
    assert_eq!(steps.len(), 1);
    assert_eq!((steps[0].graph_replays, steps[0].phase), (2, Phase::Prefill));
}

#[test]
fn processes_are_numbered_separately() {
    let mut calls = decode(1.0);
    calls.extend(decode(2.0).into_iter().map(|c| Call { pid: 2, tid: 2, ..c }));
    calls.extend(prefill(3.0));
    calls.sort_by(|a, b| a.ts_ms.total_cmp(&b.ts_ms));
    let steps = segment(&calls);
    let keys: Vec<(u32, u64)> = steps.iter().map(|s| (s.pid, s.index)).collect();
    assert_eq!(keys, [(1, 0), (1, 1), (2, 0)]);
}

#[test]
fn summary_has_the_seeds_shape() {
    let dir = tempfile::tempdir().unwrap();
    let mut calls = prefill(1.0);
    calls.extend(decode(10.0));
    calls.extend(decode(20.0));
    let summary = write(&calls, dir.path()).unwrap();
    assert_eq!(summary.steps, 3);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("summary.json")).unwrap()).unwrap();
    let keys = ["count", "mean_ms", "min_ms", "max_ms", "p50_ms", "p95_ms", "p99_ms"];
    for phase in ["prefill", "decode"] {
        let obj = json[phase].as_object().unwrap();
        assert_eq!(obj.keys().map(String::as_str).collect::<std::collections::BTreeSet<_>>(), keys.into());
    }
    assert_eq!(json["decode"]["count"], 2);
    let csv = std::fs::read_to_string(dir.path().join("forward_pass_timing.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], FORWARD_PASS_COLUMNS);
    assert_eq!(lines.len(), 4);
    assert!(lines[2].starts_with("0.010000,decode,,,"), "{}", lines[2]);
    assert_eq!(lines[2].split(',').nth(6), Some("1"), "num_launches: {}", lines[2]);
    assert_eq!(lines[2].split(',').nth(7), Some("1"), "graph_replays: {}", lines[2]);
}

#[test]
fn a_step_counts_its_nccl_transfers() {
    let all_reduce = |ts: f64, bytes: u64, ret: i32| {
        let mut c = call(ts, "ncclAllReduce", 20.0);
        c.args.set_bytes(Some(bytes)).unwrap();
        c.ret = ret;
        c
    };
    let mut calls = vec![call(1.0, "cudaLaunchKernel", 3.0), all_reduce(1.1, 4096, 0), all_reduce(1.2, 64, 0)];
    // A failed call moved nothing and is not the step's.
    calls.push(all_reduce(1.3, 1 << 20, 4));
    calls.extend(step_end(1.4, 0xe0));
    calls.extend(decode(5.0));
    let steps = segment(&calls);
    assert_eq!(steps.len(), 2);
    assert_eq!((steps[0].nccl.collectives, steps[0].nccl.bytes), (2, 4160));
    assert!((steps[0].nccl.call_ms - 0.04).abs() < 1e-12, "{}", steps[0].nccl.call_ms);
    assert_eq!(steps[1].nccl, StepNccl::default());
    let dir = tempfile::tempdir().unwrap();
    write_steps(&steps, 0, dir.path()).unwrap();
    let csv = std::fs::read_to_string(dir.path().join("forward_pass_timing.csv")).unwrap();
    assert!(csv.lines().nth(1).unwrap().ends_with(",1,0,1,0,2,4160,0.040"), "{csv}");
}
