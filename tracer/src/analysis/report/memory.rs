//! Device memory: bytes allocated over time per process (from successful
//! allocations and frees), peak, allocations never freed, and copy volume
//! and estimated bandwidth by direction.
//!
//! A runtime allocation reaches the driver as a second allocation of the
//! same pointer: a live allocation is keyed by (pid, pointer) and counted
//! once, however many layers saw it, and released when every layer that
//! allocated it has freed it.

use std::collections::BTreeMap;

use serde::Serialize;
use tracer_common::funcs::{Layer, Role};

use super::table::{self, fixed, Csv, FastMap, Fixed};
use crate::analysis::trace::{Call, CopyKind};

#[derive(Debug, Serialize, PartialEq)]
pub struct ProcessMemory {
    pub pid: u32,
    pub allocations: u64,
    pub frees: u64,
    /// Frees of pointers allocated before tracing began (or by an untraced path).
    pub unmatched_frees: u64,
    pub failed_allocations: u64,
    pub peak_bytes: u64,
    pub peak_at_sec: f64,
    pub final_bytes: u64,
    /// (seconds since the trace started, bytes in use after the change).
    /// Not in report.json (one pair per allocation and free is megabytes of
    /// JSON): memory_timeline.csv has it.
    #[serde(skip)]
    pub timeline: Vec<(f64, u64)>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Leak {
    pub pid: u32,
    pub dptr: String,
    pub bytes: u64,
    pub first_seen_sec: f64,
    /// The outermost call that allocated it.
    pub func: &'static str,
}

/// Successful copies of one layer in one direction.
#[derive(Debug, Serialize, PartialEq)]
pub struct CopyRow {
    #[serde(rename = "type")]
    pub layer: &'static str,
    pub direction: &'static str,
    pub calls: u64,
    pub bytes: u64,
    pub total_call_ms: f64,
    /// bytes / time inside the copy calls: for async copies the call returns
    /// before the copy ends, so this is an upper bound.
    pub call_bandwidth_gbps: f64,
}

#[derive(Debug, Serialize, Default)]
pub struct Memory {
    pub processes: Vec<ProcessMemory>,
    /// Largest first.
    pub leaks: Vec<Leak>,
    pub copies: Vec<CopyRow>,
}

struct Live {
    bytes: u64,
    first_ms: f64,
    func: &'static str,
    /// Bit 0: the driver allocated it, bit 1: the runtime.
    layers: u8,
}

fn layer_bit(c: &Call) -> u8 {
    if c.layer() == Layer::Runtime {
        2
    } else {
        1
    }
}

fn direction(kind: Option<CopyKind>) -> &'static str {
    match kind {
        Some(CopyKind::HtoD) => "HtoD",
        Some(CopyKind::DtoH) => "DtoH",
        Some(CopyKind::DtoD) => "DtoD",
        Some(CopyKind::HtoH) => "HtoH",
        Some(CopyKind::Default) => "Default",
        Some(CopyKind::Other) | None => "unknown",
    }
}

struct Process {
    out: ProcessMemory,
    in_use: u64,
}

impl Process {
    fn change(&mut self, ts_ms: f64, add: u64, remove: u64) {
        self.in_use = (self.in_use + add).saturating_sub(remove);
        self.out.timeline.push((ts_ms / 1000.0, self.in_use));
        if self.in_use > self.out.peak_bytes {
            self.out.peak_bytes = self.in_use;
            self.out.peak_at_sec = ts_ms / 1000.0;
        }
    }
}

/// The memory analysis as a pass that takes the calls block by block, so
/// that `report` runs three analyses in one pass over the calls.
#[derive(Default)]
pub struct MemoryPass {
    live: FastMap<(u32, u64), Live>,
    procs: BTreeMap<u32, Process>,
    copies: BTreeMap<(bool, &'static str), (u64, u64, f64)>,
}

impl MemoryPass {
    /// Adds the next calls (in entry-time order).
    pub fn add(&mut self, calls: &[Call]) {
        let Self { live, procs, copies } = self;
        for c in calls {
            let is_alloc = match c.spec().role {
                Role::Alloc => true,
                Role::Free => false,
                Role::Copy => {
                    if c.ok() {
                        let row = copies.entry((c.layer() == Layer::Runtime, direction(c.args.kind()))).or_default();
                        row.0 += 1;
                        row.1 += c.args.bytes().unwrap_or(0);
                        row.2 += c.dur_us;
                    }
                    continue;
                }
                _ => continue,
            };
            let p = procs.entry(c.pid).or_insert_with(|| Process {
                out: ProcessMemory {
                    pid: c.pid,
                    allocations: 0,
                    frees: 0,
                    unmatched_frees: 0,
                    failed_allocations: 0,
                    peak_bytes: 0,
                    peak_at_sec: 0.0,
                    final_bytes: 0,
                    timeline: Vec::new(),
                },
                in_use: 0,
            });
            if is_alloc && !c.ok() {
                p.out.failed_allocations += 1;
                continue;
            }
            let Some(dptr) = c.args.dptr().filter(|d| d.0 != 0 && c.ok()) else { continue };
            let bit = layer_bit(c);
            if is_alloc {
                let bytes = c.args.bytes().unwrap_or(0);
                match live.get_mut(&(c.pid, dptr.0)) {
                    // The same allocation seen by the other layer.
                    Some(l) if l.layers & bit == 0 => l.layers |= bit,
                    // Allocated again without a free we saw: the old one is gone.
                    Some(l) => {
                        let old = std::mem::replace(l, Live { bytes, first_ms: c.ts_ms, func: c.name(), layers: bit });
                        p.out.allocations += 1;
                        p.change(c.ts_ms, bytes, old.bytes);
                    }
                    None => {
                        live.insert((c.pid, dptr.0), Live { bytes, first_ms: c.ts_ms, func: c.name(), layers: bit });
                        p.out.allocations += 1;
                        p.change(c.ts_ms, bytes, 0);
                    }
                }
            } else {
                match live.get_mut(&(c.pid, dptr.0)) {
                    Some(l) => {
                        l.layers &= !bit;
                        if l.layers == 0 {
                            let bytes = l.bytes;
                            live.remove(&(c.pid, dptr.0));
                            p.out.frees += 1;
                            p.change(c.ts_ms, 0, bytes);
                        }
                    }
                    None => p.out.unmatched_frees += 1,
                }
            }
        }
    }

    pub fn finish(self) -> Memory {
        let Self { live, procs, copies } = self;
        let mut leaks: Vec<Leak> = live
            .into_iter()
            .map(|((pid, dptr), l)| Leak {
                pid,
                dptr: format!("{dptr:#x}"),
                bytes: l.bytes,
                first_seen_sec: l.first_ms / 1000.0,
                func: l.func,
            })
            .collect();
        leaks.sort_by(|a, b| {
            b.bytes
                .cmp(&a.bytes)
                .then(a.first_seen_sec.total_cmp(&b.first_seen_sec))
                .then((a.pid, &a.dptr).cmp(&(b.pid, &b.dptr)))
        });
        let processes = procs
            .into_values()
            .map(|mut p| {
                p.out.final_bytes = p.in_use;
                p.out
            })
            .collect();
        let copies = copies
            .into_iter()
            .map(|((runtime, direction), (calls, bytes, us))| CopyRow {
                layer: if runtime { Layer::Runtime } else { Layer::Driver }.type_name(),
                direction,
                calls,
                bytes,
                total_call_ms: us / 1000.0,
                call_bandwidth_gbps: if us > 0.0 { bytes as f64 / (us * 1000.0) } else { 0.0 },
            })
            .collect();
        Memory { processes, leaks, copies }
    }
}

/// `calls` must be sorted by entry time.
pub fn analyze(calls: &[Call]) -> Memory {
    let mut pass = MemoryPass::default();
    pass.add(calls);
    pass.finish()
}

impl Memory {
    pub fn timeline_csv(&self) -> String {
        let mut csv = Csv::new(&["timestamp_sec", "pid", "bytes_in_use"]);
        for p in &self.processes {
            for &(t, bytes) in &p.timeline {
                csv.numbers(format_args!("{},{},{bytes}", Fixed(t, 6), p.pid));
            }
        }
        csv.finish()
    }

    pub fn leaks_csv(&self) -> String {
        table::csv(&["pid", "dptr", "bytes", "first_seen_sec", "func"], &self.leaks, Leak::cells)
    }

    pub fn copies_csv(&self) -> String {
        let header = ["type", "direction", "calls", "bytes", "total_call_ms", "call_bandwidth_gbps"];
        table::csv(&header, &self.copies, CopyRow::cells)
    }

    pub fn text(&self, top: usize) -> String {
        let mut out = "== Device memory (each allocation once, whichever layers saw it)\n".to_string();
        out += &table::text_of(
            &["pid", "allocs", "frees", "failed", "peak_bytes", "peak_at_s", "final_bytes"],
            &self.processes,
            |p| {
                vec![
                    p.pid.to_string(),
                    p.allocations.to_string(),
                    p.frees.to_string(),
                    p.failed_allocations.to_string(),
                    p.peak_bytes.to_string(),
                    fixed(p.peak_at_sec, 3),
                    p.final_bytes.to_string(),
                ]
            },
        );
        let leaked: u64 = self.leaks.iter().map(|l| l.bytes).sum();
        out += &format!("\n== Never freed: {} allocations, {leaked} bytes (largest {top})\n", self.leaks.len());
        out += &table::text_of(
            &["pid", "dptr", "bytes", "first_seen_s", "func"],
            self.leaks.iter().take(top),
            Leak::cells,
        );
        out += "\n== Copies (a runtime copy reaches the driver too: read one type; bandwidth from call time)\n";
        out += &table::text_of(
            &["type", "direction", "calls", "bytes", "total_call_ms", "GB/s"],
            &self.copies,
            CopyRow::cells,
        );
        out
    }
}

impl Leak {
    /// One row of the leak tables (CSV and text alike).
    fn cells(&self) -> Vec<String> {
        let Leak { pid, dptr, bytes, first_seen_sec, func } = self;
        vec![pid.to_string(), dptr.clone(), bytes.to_string(), fixed(*first_seen_sec, 6), (*func).into()]
    }
}

impl CopyRow {
    /// One row of the copy tables (CSV and text alike).
    fn cells(&self) -> Vec<String> {
        vec![
            self.layer.into(),
            self.direction.into(),
            self.calls.to_string(),
            self.bytes.to_string(),
            fixed(self.total_call_ms, 3),
            fixed(self.call_bandwidth_gbps, 3),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        analysis::report::functions::tests::call,
        analysis::trace::{Args, Hex},
    };

    fn alloc(bytes: u64, dptr: u64) -> Args {
        let mut a = Args::default();
        a.set_bytes(Some(bytes)).unwrap();
        a.set_dptr(Some(Hex(dptr))).unwrap();
        a
    }

    fn free(dptr: u64) -> Args {
        let mut a = Args::default();
        a.set_dptr(Some(Hex(dptr))).unwrap();
        a
    }

    fn copy(bytes: u64, kind: CopyKind) -> Args {
        let mut a = Args::default();
        a.set_bytes(Some(bytes)).unwrap();
        a.set_kind(Some(kind));
        a
    }

    #[test]
    fn counts_each_allocation_once_across_layers() {
        let calls = vec![
            call(1000.0, 1, "cudaMalloc", 10.0, 0, alloc(100, 0xa0)),
            call(1000.001, 1, "cuMemAlloc_v2", 5.0, 0, alloc(100, 0xa0)),
            call(1500.0, 1, "cuMemAlloc_v2", 5.0, 0, alloc(50, 0xb0)),
            call(1600.0, 1, "cudaMalloc", 5.0, 2, {
                let mut a = Args::default();
                a.set_bytes(Some(1 << 40)).unwrap();
                a
            }),
            call(2000.0, 1, "cudaFree", 5.0, 0, free(0xa0)),
            call(2000.001, 1, "cuMemFree_v2", 5.0, 0, free(0xa0)),
            call(2100.0, 1, "cudaFree", 5.0, 0, free(0)),
            call(2200.0, 1, "cuMemFree_v2", 5.0, 0, free(0xf0)),
            call(3000.0, 1, "cudaMemcpy", 2.0, 0, copy(4000, CopyKind::HtoD)),
            call(3000.001, 1, "cuMemcpyHtoD_v2", 1.0, 0, copy(4000, CopyKind::HtoD)),
            call(3100.0, 1, "cudaMemcpyAsync", 1.0, 0, copy(64, CopyKind::DtoH)),
            call(3200.0, 1, "cudaMemcpyAsync", 1.0, 1, copy(64, CopyKind::DtoH)),
        ];
        let m = analyze(&calls);
        let p = &m.processes[0];
        assert_eq!((p.allocations, p.frees, p.unmatched_frees, p.failed_allocations), (2, 1, 1, 1));
        assert_eq!((p.peak_bytes, p.peak_at_sec, p.final_bytes), (150, 1.5, 50));
        assert_eq!(p.timeline, [(1.0, 100), (1.5, 150), (2.000001, 50)]);
        assert_eq!(
            m.leaks,
            [Leak { pid: 1, dptr: "0xb0".into(), bytes: 50, first_seen_sec: 1.5, func: "cuMemAlloc_v2" }]
        );
        let c: Vec<(&str, &str, u64, u64)> =
            m.copies.iter().map(|r| (r.layer, r.direction, r.calls, r.bytes)).collect();
        assert_eq!(
            c,
            [("cuda_api", "HtoD", 1, 4000), ("cuda_runtime", "DtoH", 1, 64), ("cuda_runtime", "HtoD", 1, 4000)]
        );
        // 4000 bytes in 2 us = 2 GB/s.
        assert_eq!(m.copies[2].call_bandwidth_gbps, 2.0);
        assert!(m.leaks_csv().contains("\n1,0xb0,50,1.500000,cuMemAlloc_v2\n"));
    }
}
