//! Launches by calling library: who launched the kernels. The driver's
//! launches (`cuLaunchKernel*`) are the complete set: cuBLAS, cuBLASLt,
//! cuDNN, NCCL and extension modules that link the runtime statically reach
//! only the driver, and every runtime launch reaches it too. Each driver
//! launch is put on the library that made it: the `caller` of the runtime
//! launch around it on its thread (entry inside that call's span), or, with
//! none around it, its own `caller`, a library that called the driver
//! itself ("without a runtime call").

use serde::Serialize;
use tracer_common::funcs::{Layer, Role};

use super::table::{self, fixed, FastMap};
use crate::analysis::trace::Call;

/// What a library's launches are reported as when the trace does not say
/// who made them (a process gone before its maps were read, an older trace).
pub const UNKNOWN: &str = "unknown";

#[derive(Debug, Serialize, PartialEq)]
pub struct CallerRow {
    /// The file that made the launches (`libcublasLt.so.12`, `libtorch_cuda.so`), or [`UNKNOWN`].
    pub library: String,
    /// Driver launches it made, through the runtime or not.
    pub launches: u64,
    /// Of those, the driver launches with no runtime launch around them on
    /// their thread: the library called the driver itself.
    pub without_runtime: u64,
    /// Distinct kernels launched (by name, else by launch handle).
    pub kernels: u64,
    /// Host time in those driver launch calls.
    pub call_ms: f64,
}

#[derive(Debug, Serialize, Default)]
pub struct Callers {
    /// Every driver launch: the complete set of kernel launches.
    pub launches: u64,
    /// Per calling library, most launches first.
    pub libraries: Vec<CallerRow>,
}

#[derive(Default)]
struct Acc {
    launches: u64,
    without_runtime: u64,
    /// (interned name's address, or 0 and the handle).
    kernels: std::collections::HashSet<(usize, u64)>,
    /// Summed in integer nanoseconds: the same total whatever the order.
    call_ns: u64,
}

/// The runtime launch a thread is in, while it runs.
struct InFlight {
    end_ms: f64,
    caller: Option<&'static str>,
}

/// One pass over the calls in entry-time order.
pub fn analyze(calls: &[Call]) -> Callers {
    let mut running: FastMap<(u32, u32), InFlight> = FastMap::default();
    let mut by_library: FastMap<Option<&'static str>, Acc> = FastMap::default();
    for c in calls.iter().filter(|c| c.spec().role == Role::Launch) {
        let thread = (c.pid, c.tid);
        if c.layer() == Layer::Runtime {
            running.insert(thread, InFlight { end_ms: c.end_ms(), caller: c.args.caller() });
            continue;
        }
        let around = running.get(&thread).filter(|r| c.ts_ms <= r.end_ms);
        // Through the runtime, the library is whoever called the runtime;
        // the driver line's own caller is the runtime library then.
        let library = around.and_then(|r| r.caller).or(c.args.caller());
        let acc = by_library.entry(library).or_default();
        acc.launches += 1;
        acc.without_runtime += u64::from(around.is_none());
        let kernel = match c.args.kernel() {
            Some(name) => (name.as_ptr() as usize, 0),
            None => (0, c.args.f().map_or(0, |f| f.0)),
        };
        acc.kernels.insert(kernel);
        acc.call_ns += (c.dur_us.max(0.0) * 1000.0).round() as u64;
    }
    let mut libraries: Vec<CallerRow> = by_library
        .into_iter()
        .map(|(library, acc)| CallerRow {
            library: library.unwrap_or(UNKNOWN).to_string(),
            launches: acc.launches,
            without_runtime: acc.without_runtime,
            kernels: acc.kernels.len() as u64,
            call_ms: acc.call_ns as f64 / 1e6,
        })
        .collect();
    libraries.sort_by(|a, b| b.launches.cmp(&a.launches).then_with(|| a.library.cmp(&b.library)));
    Callers { launches: libraries.iter().map(|r| r.launches).sum(), libraries }
}

const HEADER: [&str; 5] = ["library", "launches", "without_runtime", "kernels", "call_ms"];

impl CallerRow {
    fn cells(&self) -> Vec<String> {
        let counts = [self.launches, self.without_runtime, self.kernels].map(|n| n.to_string());
        std::iter::once(self.library.clone()).chain(counts).chain([fixed(self.call_ms, 3)]).collect()
    }
}

impl Callers {
    pub fn csv(&self) -> String {
        table::csv(&HEADER, &self.libraries, CallerRow::cells)
    }

    pub fn text(&self) -> String {
        let mut out = format!(
            "== Launches by calling library: {} kernel launches, counted in the driver layer (the complete set: \
             cuBLAS, cuDNN, NCCL and statically linked extensions launch only there)\n",
            self.launches
        );
        out += &table::text_of(&HEADER, &self.libraries, CallerRow::cells);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        analysis::report::functions::tests::call,
        analysis::trace::{Args, Hex},
    };

    fn launch(kernel: &str, f: u64, caller: Option<&str>) -> Args {
        let mut a = Args::default();
        a.set_kernel(Some(kernel));
        a.set_f(Some(Hex(f))).unwrap();
        a.set_caller(caller);
        a
    }

    #[test]
    fn driver_launches_go_to_the_runtime_caller_or_their_own() {
        let rt = |ts, tid| call(ts, tid, "cudaLaunchKernel", 10.0, 0, launch("gemm", 0x10, Some("libtorch_cuda.so")));
        let nested = |ts, tid| call(ts, tid, "cuLaunchKernel", 2.0, 0, launch("gemm", 0x50, Some("libcudart.so.12")));
        let blas =
            |ts, tid, k: &str| call(ts, tid, "cuLaunchKernel", 3.0, 0, launch(k, 0x60, Some("libcublasLt.so.12")));
        let calls = vec![
            rt(1.0, 1),
            nested(1.002, 1),
            // Another thread's direct launch while thread 1 is in the runtime.
            blas(1.003, 2, "sgemm"),
            // Thread 1 again, after its runtime launch returned.
            blas(1.02, 1, "sgemv"),
            blas(1.03, 1, "sgemv"),
            call(1.04, 3, "cuLaunchKernelEx", 4.0, 400, launch("x", 0x70, None)),
            call(1.05, 3, "cudaMalloc", 4.0, 0, Args::default()),
        ];
        let c = analyze(&calls);
        let rows: Vec<(&str, u64, u64, u64)> =
            c.libraries.iter().map(|r| (r.library.as_str(), r.launches, r.without_runtime, r.kernels)).collect();
        assert_eq!(rows, [("libcublasLt.so.12", 3, 3, 2), ("libtorch_cuda.so", 1, 0, 1), (UNKNOWN, 1, 1, 1)]);
        assert_eq!(c.launches, 5);
        assert_eq!(c.libraries[0].call_ms, 0.009);
        assert!(c.csv().contains("\nlibtorch_cuda.so,1,0,1,0.002\n"), "{}", c.csv());
        assert!(c.text().contains("5 kernel launches, counted in the driver layer"));
    }

    #[test]
    fn a_nested_launch_whose_runtime_caller_is_unknown_keeps_its_own() {
        let calls = vec![
            call(1.0, 1, "cudaLaunchKernel", 10.0, 0, launch("k", 0x10, None)),
            call(1.002, 1, "cuLaunchKernel", 2.0, 0, launch("k", 0x50, Some("libcudart.so.12"))),
        ];
        let c = analyze(&calls);
        assert_eq!((c.libraries[0].library.as_str(), c.libraries[0].without_runtime), ("libcudart.so.12", 0));
    }
}
