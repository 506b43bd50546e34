//! Device memory in use per process over time, for the Chrome counter: the
//! report's memory timeline ([`crate::analysis::report::memory`]), so `export chrome`
//! and `report` (memory_timeline.csv, memory.svg) agree sample for sample.

use crate::{analysis::report, analysis::trace::Call};

/// Bytes in use in `pid` just after the call at `ts_ms` (its entry time, so
/// samples are in the calls' time order).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MemorySample {
    pub pid: u32,
    pub ts_ms: f64,
    pub bytes_in_use: u64,
}

/// One sample per change of a process's device memory, in time order
/// (`calls` sorted by time). Each allocation counts once, whichever layers
/// saw it (a `cudaMalloc` and the `cuMemAlloc` it makes are one allocation).
pub fn device_memory(calls: &[Call]) -> Vec<MemorySample> {
    let memory = report::memory::analyze(calls);
    let mut samples: Vec<MemorySample> = memory
        .processes
        .iter()
        .flat_map(|p| {
            p.timeline.iter().map(|&(sec, bytes)| MemorySample { pid: p.pid, ts_ms: sec * 1000.0, bytes_in_use: bytes })
        })
        .collect();
    // Stable: each process's samples keep their order.
    samples.sort_by(|a, b| a.ts_ms.total_cmp(&b.ts_ms));
    samples
}

/// The samples as one `(seconds, bytes)` series per process, for plots.
pub fn series_by_pid(samples: &[MemorySample]) -> Vec<(u32, Vec<(f64, f64)>)> {
    let mut by_pid: std::collections::BTreeMap<u32, Vec<(f64, f64)>> = Default::default();
    for s in samples {
        by_pid.entry(s.pid).or_default().push((s.ts_ms / 1000.0, s.bytes_in_use as f64));
    }
    by_pid.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::trace::parse_line;

    fn call(ts: f64, pid: u32, func: &str, args: &str) -> Call {
        let line = format!(r#"{{"ts":{ts},"pid":{pid},"tid":{pid},"func":"{func}","dur_us":1,"ret":0,"args":{args}}}"#);
        parse_line(line.as_bytes()).unwrap()
    }

    #[test]
    fn counts_each_allocation_once_and_matches_the_report() {
        let calls = [
            // pid 1: a runtime call wrapping a driver call: one allocation,
            // at the runtime call's entry; freed when both layers freed it.
            call(1.0, 1, "cudaMalloc", r#"{"bytes":100,"dptr":"0x10"}"#),
            call(1.1, 1, "cuMemAlloc_v2", r#"{"bytes":100,"dptr":"0x10"}"#),
            // pid 2: runtime only; the free has no bytes, found by pointer.
            call(2.0, 2, "cudaMalloc", r#"{"bytes":50,"dptr":"0x20"}"#),
            call(3.0, 1, "cudaFree", r#"{"dptr":"0x10"}"#),
            call(3.1, 1, "cuMemFree_v2", r#"{"dptr":"0x10"}"#),
            call(4.0, 2, "cudaFree", r#"{"dptr":"0x20"}"#),
        ];
        let s = device_memory(&calls);
        let got: Vec<(u32, u64)> = s.iter().map(|s| (s.pid, s.bytes_in_use)).collect();
        assert_eq!(got, [(1, 100), (2, 50), (1, 0), (2, 0)]);
        let series = series_by_pid(&s);
        assert_eq!(series[0], (1, vec![(0.001, 100.0), (0.0031, 0.0)]));
        let report = report::memory::analyze(&calls);
        let timeline: Vec<(f64, f64)> = report.processes[0].timeline.iter().map(|&(t, b)| (t, b as f64)).collect();
        assert_eq!(series[0].1, timeline, "the Chrome counter is the report's timeline");
    }
}
