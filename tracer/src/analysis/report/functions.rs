//! Per-function call statistics (calls, errors by name, duration
//! percentiles) and per-process/per-thread totals, each split by layer.
//!
//! A runtime call usually makes a driver call: both are lines of their own.
//! Rows keep the layer (`type`), and `nested` counts the driver calls made
//! inside a runtime call on the same thread, so readers can count one layer
//! or subtract the nested calls instead of counting twice.

use std::collections::BTreeMap;

use serde::Serialize;
use tracer_common::funcs::{self, Layer};

use super::table::{self, fixed, FastMap};
use crate::analysis::trace::Call;

#[derive(Debug, Serialize, PartialEq)]
pub struct FunctionRow {
    pub func: &'static str,
    /// `cuda_api` (driver) or `cuda_runtime`.
    #[serde(rename = "type")]
    pub layer: &'static str,
    pub group: &'static str,
    pub calls: u64,
    /// Driver calls made while a runtime call of the same thread was running.
    pub nested: u64,
    pub errors: u64,
    pub errors_by_name: BTreeMap<String, u64>,
    pub total_ms: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p95_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

/// Calls of one process or thread in one layer.
#[derive(Debug, Serialize, PartialEq)]
pub struct ThreadRow {
    pub pid: u32,
    /// `None` in the per-process rows.
    pub tid: Option<u32>,
    #[serde(rename = "type")]
    pub layer: &'static str,
    pub calls: u64,
    pub nested: u64,
    pub errors: u64,
    pub total_ms: f64,
}

#[derive(Debug, Serialize, Default)]
pub struct Functions {
    /// Sorted by calls, most first.
    pub functions: Vec<FunctionRow>,
    pub processes: Vec<ThreadRow>,
    pub threads: Vec<ThreadRow>,
    /// Runtime calls plus driver calls not made inside a runtime call: each
    /// CUDA operation once.
    pub distinct_calls: u64,
}

#[derive(Default)]
struct Acc {
    calls: u64,
    nested: u64,
    errors: u64,
    total_us: f64,
}

impl Acc {
    fn add(&mut self, c: &Call, nested: bool) {
        self.calls += 1;
        self.nested += u64::from(nested);
        self.errors += u64::from(!c.ok());
        self.total_us += c.dur_us;
    }

    fn row(&self, pid: u32, tid: Option<u32>, layer: Layer) -> ThreadRow {
        ThreadRow {
            pid,
            tid,
            layer: layer.type_name(),
            calls: self.calls,
            nested: self.nested,
            errors: self.errors,
            total_ms: self.total_us / 1000.0,
        }
    }
}

/// The per-function analysis as a pass that takes the calls block by block.
pub struct FunctionsPass {
    /// Indexed by function id: table rows first, then name-only functions
    /// (grown as their ids appear).
    by_func: Vec<(Acc, Vec<f64>, BTreeMap<String, u64>)>,
    by_thread: FastMap<(u32, u32, Layer), Acc>,
}

impl Default for FunctionsPass {
    fn default() -> Self {
        FunctionsPass {
            by_func: (0..funcs::FUNCS.len()).map(|_| Default::default()).collect(),
            by_thread: FastMap::default(),
        }
    }
}

impl FunctionsPass {
    /// Adds the next calls (in entry-time order) with their `outer` flags
    /// (false: a driver call nested in a runtime call, see `layer`).
    pub fn add(&mut self, calls: &[Call], outer: &[bool]) {
        let Self { by_func, by_thread } = self;
        for (c, &outer) in calls.iter().zip(outer) {
            let layer = c.layer();
            let nested = !outer;
            let id = usize::from(c.func);
            if id >= by_func.len() {
                by_func.resize_with(id + 1, Default::default);
            }
            let (acc, durations, errors) = &mut by_func[id];
            acc.add(c, nested);
            durations.push(c.dur_us);
            if let Some(name) = c.error_name().filter(|_| !c.ok()) {
                *errors.entry(name.to_string()).or_default() += 1;
            } else if !c.ok() {
                *errors.entry(format!("ret {}", c.ret)).or_default() += 1;
            }
            by_thread.entry((c.pid, c.tid, layer)).or_default().add(c, nested);
        }
    }

    pub fn finish(self) -> Functions {
        let Self { by_func, by_thread } = self;
        let mut out = Functions::default();
        for (id, (acc, mut durations, errors_by_name)) in by_func.into_iter().enumerate() {
            if acc.calls == 0 {
                continue;
            }
            let Some(spec) = funcs::by_id(id as u32) else { continue };
            let max = durations.iter().copied().fold(0.0, f64::max);
            out.functions.push(FunctionRow {
                func: spec.name,
                layer: spec.layer.type_name(),
                group: spec.group.name(),
                calls: acc.calls,
                nested: acc.nested,
                errors: acc.errors,
                errors_by_name,
                total_ms: acc.total_us / 1000.0,
                mean_us: acc.total_us / acc.calls as f64,
                p50_us: table::percentile(&mut durations, 50.0).unwrap_or(0.0),
                p95_us: table::percentile(&mut durations, 95.0).unwrap_or(0.0),
                p99_us: table::percentile(&mut durations, 99.0).unwrap_or(0.0),
                max_us: max,
            });
            out.distinct_calls += acc.calls - acc.nested;
        }
        out.functions.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.func.cmp(b.func)));
        let mut by_process: BTreeMap<(u32, Layer), Acc> = BTreeMap::new();
        for (&(pid, tid, layer), acc) in &by_thread {
            out.threads.push(acc.row(pid, Some(tid), layer));
            let p = by_process.entry((pid, layer)).or_default();
            p.calls += acc.calls;
            p.nested += acc.nested;
            p.errors += acc.errors;
            p.total_us += acc.total_us;
        }
        out.threads.sort_by_key(|r| (r.pid, r.tid, r.layer));
        out.processes = by_process.iter().map(|(&(pid, layer), acc)| acc.row(pid, None, layer)).collect();
        out
    }
}

/// `calls` must be sorted by entry time (as [`crate::analysis::trace::read`] gives them).
pub fn analyze(calls: &[Call]) -> Functions {
    analyze_outer(calls, &super::layer::outermost(calls))
}

/// [`analyze`] with the calls' [`super::layer::outermost`] flags.
pub fn analyze_outer(calls: &[Call], outer: &[bool]) -> Functions {
    let mut pass = FunctionsPass::default();
    pass.add(calls, outer);
    pass.finish()
}

fn errors_text(errors: &BTreeMap<String, u64>) -> String {
    errors.iter().map(|(name, n)| format!("{name}:{n}")).collect::<Vec<_>>().join(" ")
}

impl FunctionRow {
    /// One row of the function tables: the CSV's has the group and the
    /// errors by name, and call times with three decimals, not two.
    fn cells(&self, csv: bool) -> Vec<String> {
        let mut cells = vec![self.func.into(), self.layer.into()];
        cells.extend(csv.then(|| self.group.into()));
        cells.extend([self.calls.to_string(), self.nested.to_string(), self.errors.to_string()]);
        cells.extend(csv.then(|| errors_text(&self.errors_by_name)));
        cells.push(fixed(self.total_ms, 3));
        let decimals = if csv { 3 } else { 2 };
        cells.extend([self.mean_us, self.p50_us, self.p95_us, self.p99_us, self.max_us].map(|us| fixed(us, decimals)));
        cells
    }
}

impl Functions {
    pub fn functions_csv(&self) -> String {
        let header = [
            "func",
            "type",
            "group",
            "calls",
            "nested",
            "errors",
            "errors_by_name",
            "total_ms",
            "mean_us",
            "p50_us",
            "p95_us",
            "p99_us",
            "max_us",
        ];
        table::csv(&header, &self.functions, |r| r.cells(true))
    }

    /// `by_thread`: one row per thread; else one per process.
    pub fn threads_csv(&self, by_thread: bool) -> String {
        let header: &[&str] = if by_thread { &["pid", "tid"] } else { &["pid"] };
        let rows = if by_thread { &self.threads } else { &self.processes };
        table::csv(&[header, &["type", "calls", "nested", "errors", "total_ms"]].concat(), rows, |r| {
            let mut fields = vec![r.pid.to_string()];
            fields.extend(r.tid.filter(|_| by_thread).map(|t| t.to_string()));
            fields.extend([
                r.layer.into(),
                r.calls.to_string(),
                r.nested.to_string(),
                r.errors.to_string(),
                fixed(r.total_ms, 3),
            ]);
            fields
        })
    }

    pub fn text(&self) -> String {
        let mut out = format!(
            "== Functions ({} distinct calls: runtime calls + driver calls not made inside a runtime call)\n",
            self.distinct_calls
        );
        let header = [
            "func", "type", "calls", "nested", "errors", "total_ms", "mean_us", "p50_us", "p95_us", "p99_us", "max_us",
        ];
        out += &table::text_of(&header, &self.functions, |r| r.cells(false));
        let errors: Vec<String> = self
            .functions
            .iter()
            .filter(|r| r.errors > 0)
            .map(|r| format!("  {}: {}", r.func, errors_text(&r.errors_by_name)))
            .collect();
        if !errors.is_empty() {
            out += &format!("errors by name:\n{}\n", errors.join("\n"));
        }
        out += "\n== Processes\n";
        out += &table::text_of(&["pid", "type", "calls", "nested", "total_ms"], &self.processes, |r| {
            vec![r.pid.to_string(), r.layer.into(), r.calls.to_string(), r.nested.to_string(), fixed(r.total_ms, 3)]
        });
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::analysis::trace::Args;

    pub fn call(ts_ms: f64, tid: u32, func: &str, dur_us: f64, ret: i32, args: Args) -> Call {
        let (func, _) = funcs::by_name(func).expect("known function");
        let error =
            (ret != 0).then(|| crate::analysis::trace::ErrorName::new(&format!("E{ret}")).expect("few error names"));
        Call { ts_ms, pid: 1, tid, func, dur_us, ret, error, args }
    }

    #[test]
    fn counts_errors_percentiles_and_nesting() {
        let mut calls = Vec::new();
        // 10 runtime launches of 1..=10 us, each with a driver launch inside.
        for i in 0..10 {
            let t = f64::from(i);
            calls.push(call(t, 2, "cudaLaunchKernel", f64::from(i + 1), 0, Args::default()));
            calls.push(call(t + 0.0001, 2, "cuLaunchKernel", 0.05, 0, Args::default()));
        }
        // A driver launch on its own (Triton) and two failures.
        calls.push(call(20.0, 2, "cuLaunchKernel", 0.05, 0, Args::default()));
        calls.push(call(21.0, 3, "cudaMalloc", 4.0, 2, Args::default()));
        calls.push(call(22.0, 3, "cudaMalloc", 6.0, 2, Args::default()));
        let f = analyze(&calls);
        let rt = f.functions.iter().find(|r| r.func == "cudaLaunchKernel").unwrap();
        assert_eq!((rt.calls, rt.nested, rt.errors), (10, 0, 0));
        // numpy.percentile(range(1, 11), [50, 95, 99])
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(rt.p50_us, 5.5) && close(rt.p95_us, 9.55) && close(rt.p99_us, 9.91), "{rt:?}");
        assert_eq!(rt.max_us, 10.0);
        assert!((rt.mean_us - 5.5).abs() < 1e-9 && (rt.total_ms - 0.055).abs() < 1e-12);
        let drv = f.functions.iter().find(|r| r.func == "cuLaunchKernel").unwrap();
        assert_eq!((drv.calls, drv.nested, drv.layer), (11, 10, "cuda_api"));
        let malloc = f.functions.iter().find(|r| r.func == "cudaMalloc").unwrap();
        assert_eq!(malloc.errors_by_name, BTreeMap::from([("E2".to_string(), 2)]));
        assert_eq!(f.distinct_calls, 10 + 1 + 2);
        assert_eq!(f.functions[0].func, "cuLaunchKernel");
        assert_eq!(f.threads.len(), 3);
        let p: Vec<(&str, u64, u64)> = f.processes.iter().map(|r| (r.layer, r.calls, r.nested)).collect();
        assert_eq!(p, [("cuda_api", 11, 10), ("cuda_runtime", 12, 0)]);
        assert!(f.functions_csv().starts_with("func,type,group,calls"));
        assert!(f.threads_csv(true).contains("\n1,2,cuda_api,11,10,0,"));
    }
}
