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
use crate::trace::Call;

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
        }
    }
}

/// `keep[i]` is false for a driver call nested in a runtime call of the
/// same thread. `calls` must be sorted by entry time (as `trace::read` gives).
pub fn outermost(calls: &[Call]) -> Vec<bool> {
    let mut nesting = Nesting::default();
    calls.iter().map(|c| !nesting.is_nested(c)).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::trace::Hex;
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
}
