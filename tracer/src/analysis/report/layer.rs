//! Which calls count: the outermost call of each thread, so a runtime call
//! and the driver call it makes while it runs count once.
//!
//! A runtime call such as `cudaGraphLaunch` reaches `cuGraphLaunch` inside
//! it, on the same thread, within the runtime call's time span. Counting
//! only the outermost call keeps the runtime form when both are traced,
//! keeps direct driver use (Triton, cuBLAS, NCCL) that no runtime call
//! wraps, and still works when only one library was traced.

use tracer_common::funcs::Layer;

use super::table::FastMap;
use crate::analysis::trace::Call;

/// Tells, call by call in entry-time order, whether a driver call was made
/// by a runtime call running on the same thread (its entry lies inside that
/// runtime call's span). The one rule for "nested" in every report table.
#[derive(Default)]
pub struct Nesting {
    /// Per (pid, tid): when the runtime calls seen on that thread end.
    runtime_until: FastMap<(u32, u32), f64>,
}

impl Nesting {
    pub fn is_nested(&mut self, c: &Call) -> bool {
        let until = self.runtime_until.entry((c.pid, c.tid)).or_insert(f64::NEG_INFINITY);
        match c.layer() {
            Layer::Runtime => {
                *until = until.max(c.end_ms());
                false
            }
            Layer::Driver => c.ts_ms <= *until,
            // NCCL's own calls are a layer of their own; the driver launches
            // inside a collective count as direct driver use.
            Layer::Nccl => false,
        }
    }
}

/// `keep[i]` is false for a driver call nested in a runtime call of the
/// same thread. `calls` must be sorted by entry time (as `trace::read` gives).
///
/// In parallel: each part of the calls is judged on its own, then the few
/// driver calls at a part's start that a runtime call of an earlier part
/// still covers are corrected (a part's state is only, per thread, when its
/// runtime calls end).
pub fn outermost(calls: &[Call]) -> Vec<bool> {
    use rayon::prelude::*;
    let part = calls.len() / (2 * rayon::current_num_threads()) + 1;
    let mut keep = vec![true; calls.len()];
    let states: Vec<FastMap<(u32, u32), f64>> = keep
        .par_chunks_mut(part)
        .zip(calls.par_chunks(part))
        .map(|(keep, calls)| {
            let mut nesting = Nesting::default();
            for (k, c) in keep.iter_mut().zip(calls) {
                *k = !nesting.is_nested(c);
            }
            nesting.runtime_until
        })
        .collect();
    // What the parts before each part leave running, per thread.
    let mut before: Vec<FastMap<(u32, u32), f64>> = Vec::with_capacity(states.len());
    let mut running: FastMap<(u32, u32), f64> = FastMap::default();
    for state in states {
        before.push(running.clone());
        for (thread, until) in state {
            let r = running.entry(thread).or_insert(f64::NEG_INFINITY);
            *r = r.max(until);
        }
    }
    keep.par_chunks_mut(part).zip(calls.par_chunks(part)).zip(before).for_each(|((keep, calls), before)| {
        let latest = before.values().copied().fold(f64::NEG_INFINITY, f64::max);
        for (k, c) in keep.iter_mut().zip(calls).take_while(|(_, c)| c.ts_ms <= latest) {
            if c.layer() == Layer::Driver && before.get(&(c.pid, c.tid)).is_some_and(|&until| c.ts_ms <= until) {
                *k = false;
            }
        }
    });
    keep
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::analysis::trace::Hex;
    use tracer_common::funcs;

    /// A successful call of `func` at `ts_ms` lasting `dur_us` on thread 1 of pid 1.
    pub(crate) fn call(ts_ms: f64, func: &str, dur_us: f64) -> Call {
        let (id, _) = funcs::by_name(func).unwrap_or_else(|| panic!("unknown function {func}"));
        Call { ts_ms, pid: 1, tid: 1, func: id, dur_us, ret: 0, error: None, args: Default::default() }
    }

    pub(crate) fn hex(v: u64) -> Option<Hex> {
        Some(Hex(v))
    }

    #[test]
    fn a_driver_call_inside_a_runtime_call_is_not_counted_again() {
        let calls = [
            call(1.0, "cudaGraphLaunch", 10.0),
            call(1.002, "cuGraphLaunch", 2.0),
            // Direct driver use after the runtime call returned.
            call(1.02, "cuLaunchKernel", 2.0),
            // Another thread's driver call during the runtime call.
            Call { tid: 2, ..call(1.003, "cuLaunchKernel", 2.0) },
        ];
        assert_eq!(outermost(&calls), [true, false, true, true]);
    }

    #[test]
    fn parts_judged_apart_agree_with_one_pass() {
        // Three threads; every 7th call a long runtime call whose span covers
        // many later calls, across the parts' boundaries.
        let calls: Vec<Call> = (0..5000u32)
            .map(|i| {
                let (ts, tid) = (f64::from(i) * 0.001, 1 + i % 3);
                let c = if i % 7 == 0 { call(ts, "cudaGraphLaunch", 400.0) } else { call(ts, "cuLaunchKernel", 0.5) };
                Call { tid, ..c }
            })
            .collect();
        let mut nesting = Nesting::default();
        let one_pass: Vec<bool> = calls.iter().map(|c| !nesting.is_nested(c)).collect();
        assert_eq!(outermost(&calls), one_pass);
        assert!(one_pass.iter().filter(|k| !**k).count() > 4000, "most driver calls are nested");
    }
}
