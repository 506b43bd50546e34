//! Device memory in use per process over time, from the allocation and free
//! calls (one layer per process, so a `cudaMalloc` and the `cuMemAlloc` it
//! makes count once).

use std::collections::{HashMap, HashSet};

use tracer_common::funcs::{Group, Layer};

use crate::trace::Call;

/// Bytes in use in `pid` just after the call at `ts_ms` (its entry time, so
/// samples are in the calls' time order).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MemorySample {
    pub pid: u32,
    pub ts_ms: f64,
    pub bytes_in_use: u64,
}

/// One sample per successful allocation or free, in time order (`calls`
/// sorted by time). A process whose driver calls are traced is counted at the
/// driver layer, otherwise at the runtime layer.
pub fn device_memory(calls: &[Call]) -> Vec<MemorySample> {
    let driver_pids: HashSet<u32> =
        calls.iter().filter(|c| c.group() == Group::Memory && c.layer() == Layer::Driver).map(|c| c.pid).collect();
    let mut in_use: HashMap<u32, u64> = HashMap::new();
    // Sizes by pointer, for a free that does not carry its bytes.
    let mut sizes: HashMap<(u32, u64), u64> = HashMap::new();
    let mut samples = Vec::new();
    for call in calls.iter().filter(|c| c.group() == Group::Memory && c.ok()) {
        let counted_layer = if driver_pids.contains(&call.pid) { Layer::Driver } else { Layer::Runtime };
        if call.layer() != counted_layer {
            continue;
        }
        let total = in_use.entry(call.pid).or_default();
        let ptr = call.args.dptr().map(|p| p.0);
        if call.name().contains("Free") {
            let known = ptr.and_then(|p| sizes.remove(&(call.pid, p)));
            let Some(bytes) = call.args.bytes().or(known) else { continue };
            *total = total.saturating_sub(bytes);
        } else {
            let Some(bytes) = call.args.bytes() else { continue };
            if let Some(p) = ptr {
                sizes.insert((call.pid, p), bytes);
            }
            *total += bytes;
        }
        samples.push(MemorySample { pid: call.pid, ts_ms: call.ts_ms, bytes_in_use: *total });
    }
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
    use crate::trace::parse_line;

    fn call(ts: f64, pid: u32, func: &str, args: &str) -> Call {
        let line = format!(r#"{{"ts":{ts},"pid":{pid},"tid":{pid},"func":"{func}","dur_us":1,"ret":0,"args":{args}}}"#);
        parse_line(line.as_bytes()).unwrap()
    }

    #[test]
    fn counts_one_layer_per_process_and_frees_by_pointer() {
        let calls = [
            // pid 1: runtime call wrapping a driver call: counted once (driver).
            call(1.0, 1, "cudaMalloc", r#"{"bytes":100,"dptr":"0x10"}"#),
            call(1.1, 1, "cuMemAlloc_v2", r#"{"bytes":100,"dptr":"0x10"}"#),
            // pid 2: runtime only; the free has no bytes, found by pointer.
            call(2.0, 2, "cudaMalloc", r#"{"bytes":50,"dptr":"0x20"}"#),
            call(3.0, 1, "cuMemFree_v2", r#"{"bytes":100,"dptr":"0x10"}"#),
            call(4.0, 2, "cudaFree", r#"{"dptr":"0x20"}"#),
        ];
        let s = device_memory(&calls);
        let got: Vec<(u32, u64)> = s.iter().map(|s| (s.pid, s.bytes_in_use)).collect();
        assert_eq!(got, [(1, 100), (2, 50), (1, 0), (2, 0)]);
        let series = series_by_pid(&s);
        assert_eq!(series[0], (1, vec![(0.0011, 100.0), (0.003, 0.0)]));
    }
}
