//! Kernel launches: top kernels by launches and by launch-call time, launch
//! rate per second and process, and the grid/block shapes each kernel ran
//! with. Rows keep the layer: a runtime launch reaches the driver as a
//! second launch line of the same kernel.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use tracer_common::funcs::{Layer, Role};

use super::table::{self, fixed, FastMap};
use crate::analysis::trace::Call;

#[derive(Debug, Serialize, PartialEq)]
pub struct KernelRow {
    pub kernel: String,
    #[serde(rename = "type")]
    pub layer: &'static str,
    pub launches: u64,
    /// Failed launch calls, included in `launches`.
    pub errors: u64,
    /// Time spent in the launch calls (host side), not on the GPU.
    pub total_call_ms: f64,
    pub mean_call_us: f64,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct ShapeRow {
    pub kernel: String,
    #[serde(rename = "type")]
    pub layer: &'static str,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_mem: u64,
    pub launches: u64,
}

/// Launches of one process in one layer during one second of the trace.
#[derive(Debug, Serialize, PartialEq)]
pub struct RateRow {
    /// Start of the bucket, seconds since the trace started.
    pub second: u64,
    pub pid: u32,
    #[serde(rename = "type")]
    pub layer: &'static str,
    pub launches: u64,
}

#[derive(Debug, Serialize, Default)]
pub struct Kernels {
    /// Sorted by launches, most first.
    pub kernels: Vec<KernelRow>,
    pub shapes: Vec<ShapeRow>,
    pub launch_rate: Vec<RateRow>,
}

/// A launch's kernel: its name, else the launch handle.
pub fn kernel_name(c: &Call) -> String {
    match (c.args.kernel(), c.args.f()) {
        (Some(name), _) => name.to_string(),
        (None, Some(handle)) => handle.to_string(),
        (None, None) => "?".to_string(),
    }
}

/// (address of the shared name, launch handle, runtime layer)
type KernelKey = (usize, u64, bool);
/// (kernel name, runtime layer, grid, block, shared memory)
type ShapeKey = (String, bool, [u32; 3], [u32; 3], u64);

#[derive(Default)]
struct Acc {
    launches: u64,
    errors: u64,
    total_us: f64,
}

/// The kernel analysis as a pass that takes the calls block by block.
/// Launches are keyed by the name's allocation first (names are shared per
/// chunk) and merged by text at the end: hashing long template names per
/// launch is slow.
#[derive(Default)]
pub struct KernelsPass {
    by_kernel: FastMap<KernelKey, (String, Acc)>,
    shapes: FastMap<(KernelKey, [u32; 3], [u32; 3], u64), u64>,
    rate: FastMap<(u64, u32, bool), u64>,
}

impl KernelsPass {
    /// Adds the next calls (in entry-time order).
    pub fn add(&mut self, calls: &[Call]) {
        let Self { by_kernel, shapes, rate } = self;
        for c in calls.iter().filter(|c| c.spec().role == Role::Launch) {
            let runtime = c.layer() == Layer::Runtime;
            // One table lookup for the kernel, grid and block.
            let launch = c.args.launch();
            let key = (launch.kernel.map_or(0, |k| k.as_ptr() as usize), c.args.f().map_or(0, |f| f.0), runtime);
            let (_, acc) = by_kernel.entry(key).or_insert_with(|| (kernel_name(c), Acc::default()));
            acc.launches += 1;
            acc.errors += u64::from(!c.ok());
            acc.total_us += c.dur_us;
            *rate.entry(((c.ts_ms / 1000.0).max(0.0) as u64, c.pid, runtime)).or_default() += 1;
            if let (Some(grid), Some(block)) = (launch.grid, launch.block) {
                *shapes.entry((key, grid, block, c.args.shared_mem().unwrap_or(0))).or_default() += 1;
            }
        }
    }

    pub fn finish(self) -> Kernels {
        let Self { by_kernel, shapes, rate } = self;
        let layer = |runtime: bool| if runtime { Layer::Runtime } else { Layer::Driver }.type_name();
        let mut merged_shapes: HashMap<ShapeKey, u64> = HashMap::new();
        for ((key, grid, block, shared_mem), n) in shapes {
            *merged_shapes.entry((by_kernel[&key].0.clone(), key.2, grid, block, shared_mem)).or_default() += n;
        }
        // Merged in name order (the map's order follows allocation addresses,
        // which differ run to run): float sums then add up the same way, and
        // report.json is the same bytes for the same trace.
        let mut by_name: Vec<(KernelKey, (String, Acc))> = by_kernel.into_iter().collect();
        by_name.sort_by(|a, b| (&a.1 .0, a.0 .1, a.0 .2).cmp(&(&b.1 .0, b.0 .1, b.0 .2)));
        let mut merged: BTreeMap<(String, bool), Acc> = BTreeMap::new();
        for ((_, _, runtime), (name, acc)) in by_name {
            let m = merged.entry((name, runtime)).or_default();
            m.launches += acc.launches;
            m.errors += acc.errors;
            m.total_us += acc.total_us;
        }
        let mut kernels: Vec<KernelRow> = merged
            .into_iter()
            .map(|((kernel, runtime), acc)| KernelRow {
                kernel,
                layer: layer(runtime),
                launches: acc.launches,
                errors: acc.errors,
                total_call_ms: acc.total_us / 1000.0,
                mean_call_us: acc.total_us / acc.launches as f64,
            })
            .collect();
        kernels
            .sort_by(|a, b| b.launches.cmp(&a.launches).then_with(|| (a.layer, &a.kernel).cmp(&(b.layer, &b.kernel))));
        let mut shapes: Vec<ShapeRow> = merged_shapes
            .into_iter()
            .map(|((kernel, runtime, grid, block, shared_mem), launches)| ShapeRow {
                kernel,
                layer: layer(runtime),
                grid,
                block,
                shared_mem,
                launches,
            })
            .collect();
        shapes.sort_by(|a, b| {
            (&a.kernel, a.layer, std::cmp::Reverse(a.launches), a.grid, a.block, a.shared_mem).cmp(&(
                &b.kernel,
                b.layer,
                std::cmp::Reverse(b.launches),
                b.grid,
                b.block,
                b.shared_mem,
            ))
        });
        let mut launch_rate: Vec<RateRow> = rate
            .into_iter()
            .map(|((second, pid, runtime), launches)| RateRow { second, pid, layer: layer(runtime), launches })
            .collect();
        launch_rate.sort_by_key(|r| (r.second, r.pid, r.layer));
        Kernels { kernels, shapes, launch_rate }
    }
}

pub fn analyze(calls: &[Call]) -> Kernels {
    let mut pass = KernelsPass::default();
    pass.add(calls);
    pass.finish()
}

impl KernelRow {
    /// One row of the kernel tables: the CSV's has the errors, and the mean
    /// call time with three decimals, not two.
    fn cells(&self, csv: bool) -> Vec<String> {
        let mut cells = vec![self.kernel.clone(), self.layer.into(), self.launches.to_string()];
        cells.extend(csv.then(|| self.errors.to_string()));
        cells.extend([fixed(self.total_call_ms, 3), fixed(self.mean_call_us, if csv { 3 } else { 2 })]);
        cells
    }
}

fn dim(d: [u32; 3]) -> String {
    format!("{}x{}x{}", d[0], d[1], d[2])
}

impl Kernels {
    pub fn kernels_csv(&self) -> String {
        let header = ["kernel", "type", "launches", "errors", "total_call_ms", "mean_call_us"];
        table::csv(&header, &self.kernels, |r| r.cells(true))
    }

    pub fn shapes_csv(&self) -> String {
        let header = ["kernel", "type", "grid", "block", "shared_mem", "launches"];
        table::csv(&header, &self.shapes, |r| {
            vec![
                r.kernel.clone(),
                r.layer.into(),
                dim(r.grid),
                dim(r.block),
                r.shared_mem.to_string(),
                r.launches.to_string(),
            ]
        })
    }

    pub fn rate_csv(&self) -> String {
        table::csv(&["second", "pid", "type", "launches"], &self.launch_rate, |r| {
            vec![r.second.to_string(), r.pid.to_string(), r.layer.into(), r.launches.to_string()]
        })
    }

    pub fn text(&self, top: usize) -> String {
        let row = |r: &KernelRow| r.cells(false);
        let header = ["kernel", "type", "launches", "total_call_ms", "mean_call_us"];
        let mut out = format!("== Top {top} kernels by launches\n");
        out += &table::text_of(&header, self.kernels.iter().take(top), row);
        let mut by_time: Vec<&KernelRow> = self.kernels.iter().collect();
        by_time.sort_by(|a, b| b.total_call_ms.total_cmp(&a.total_call_ms));
        out += &format!("\n== Top {top} kernels by launch-call time\n");
        out += &table::text_of(&header, by_time.into_iter().take(top), row);
        let mut peak: BTreeMap<(u32, &str), u64> = BTreeMap::new();
        for r in &self.launch_rate {
            let p = peak.entry((r.pid, r.layer)).or_default();
            *p = (*p).max(r.launches);
        }
        if !peak.is_empty() {
            out += "\npeak launches per second: ";
            out +=
                &peak.iter().map(|((pid, layer), n)| format!("pid {pid} {layer} {n}")).collect::<Vec<_>>().join(", ");
            out += "\n";
        }
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

    fn launch(kernel: Option<&str>, f: u64, grid: u32) -> Args {
        let mut a = Args::default();
        a.set_kernel(kernel);
        a.set_f(Some(Hex(f))).unwrap();
        a.set_grid(Some([grid, 1, 1]));
        a.set_block(Some([256, 1, 1]));
        a.set_shared_mem(Some(0)).unwrap();
        a
    }

    #[test]
    fn groups_launches_by_kernel_shape_and_second() {
        let gemm = "void gemm<128, float>(float const*, int)";
        let calls = vec![
            call(100.0, 1, "cudaLaunchKernel", 10.0, 0, launch(Some(gemm), 0x10, 64)),
            call(100.001, 1, "cuLaunchKernel", 1.0, 0, launch(Some(gemm), 0x50, 64)),
            call(900.0, 1, "cudaLaunchKernel", 30.0, 0, launch(Some(gemm), 0x10, 128)),
            call(1200.0, 1, "cuLaunchKernel", 2.0, 0, launch(None, 0x77, 8)),
            call(1300.0, 1, "cuLaunchKernel", 2.0, 1, launch(None, 0x77, 8)),
            call(1400.0, 1, "cudaMalloc", 2.0, 0, Args::default()),
        ];
        let k = analyze(&calls);
        let rows: Vec<(&str, &str, u64, u64)> =
            k.kernels.iter().map(|r| (r.kernel.as_str(), r.layer, r.launches, r.errors)).collect();
        assert_eq!(rows, [("0x77", "cuda_api", 2, 1), (gemm, "cuda_runtime", 2, 0), (gemm, "cuda_api", 1, 0)]);
        let rt = &k.kernels[1];
        assert!((rt.total_call_ms - 0.04).abs() < 1e-12 && (rt.mean_call_us - 20.0).abs() < 1e-12);
        let shapes: Vec<(&str, &str, [u32; 3], u64)> =
            k.shapes.iter().map(|s| (s.kernel.as_str(), s.layer, s.grid, s.launches)).collect();
        assert_eq!(
            shapes,
            [
                ("0x77", "cuda_api", [8, 1, 1], 2),
                (gemm, "cuda_api", [64, 1, 1], 1),
                (gemm, "cuda_runtime", [64, 1, 1], 1),
                (gemm, "cuda_runtime", [128, 1, 1], 1),
            ]
        );
        let rate: Vec<(u64, &str, u64)> = k.launch_rate.iter().map(|r| (r.second, r.layer, r.launches)).collect();
        assert_eq!(rate, [(0, "cuda_api", 1), (0, "cuda_runtime", 2), (1, "cuda_api", 2)]);
        assert!(k
            .kernels_csv()
            .contains("\n\"void gemm<128, float>(float const*, int)\",cuda_runtime,2,0,0.040,20.000\n"));
        assert!(k.shapes_csv().contains(",cuda_api,8x1x1,256x1x1,0,2\n"));
    }
}
