//! Device memory: bytes allocated or mapped over time per process (from
//! successful allocations and frees, `cuMemMap` and `cuMemUnmap`), peak,
//! allocations never freed, copy volume and estimated bandwidth by
//! direction; mapped device memory on its own too; and pinned host memory
//! in a timeline of its own, never in the device bytes.

use std::collections::BTreeMap;

use serde::Serialize;
use tracer_common::funcs::{Layer, Role};

pub use super::live_ranges::{Leak, ProcessMemory};
use super::{
    live_ranges::LiveRanges,
    table::{self, fixed, Csv, Fixed},
};
use crate::analysis::trace::{Call, CopyKind};

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
    /// Allocated and mapped device memory.
    pub processes: Vec<ProcessMemory>,
    /// Largest first; mappings never unmapped among them (`func` `cuMemMap`).
    pub leaks: Vec<Leak>,
    pub copies: Vec<CopyRow>,
    /// Mapped device memory alone (`cuMemMap` until `cuMemUnmap`): a part of
    /// `processes`.
    pub mapped: Vec<ProcessMemory>,
    /// Pinned host memory (allocated or registered), apart from device memory.
    pub pinned_host: Vec<ProcessMemory>,
    /// Pinned host memory never freed or unregistered, largest first.
    pub pinned_host_leaks: Vec<Leak>,
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

/// The memory analysis as a pass that takes the calls block by block, so
/// that `report` runs three analyses in one pass over the calls.
#[derive(Default)]
pub struct MemoryPass {
    device: LiveRanges,
    mapped: LiveRanges,
    pinned: LiveRanges,
    copies: BTreeMap<(bool, &'static str), (u64, u64, f64)>,
}

impl MemoryPass {
    /// Adds the next calls (in entry-time order).
    pub fn add(&mut self, calls: &[Call]) {
        for c in calls {
            let bytes = || c.args.bytes().unwrap_or(0);
            let dptr = || c.args.dptr().map(|d| d.0);
            let ptr = || c.args.ptr().map(|p| p.0);
            match c.spec().role {
                Role::Alloc => self.device.open(c, dptr(), bytes()),
                Role::Free => self.device.close(c, dptr()),
                Role::Map => {
                    self.device.open(c, dptr(), bytes());
                    self.mapped.open(c, dptr(), bytes());
                }
                Role::Unmap => {
                    self.device.close(c, dptr());
                    self.mapped.close(c, dptr());
                }
                Role::HostAlloc => self.pinned.open(c, ptr(), bytes()),
                Role::HostFree => self.pinned.close(c, ptr()),
                Role::Copy if c.ok() => {
                    let row = self.copies.entry((c.layer() == Layer::Runtime, direction(c.args.kind()))).or_default();
                    row.0 += 1;
                    row.1 += bytes();
                    row.2 += c.dur_us;
                }
                _ => {}
            }
        }
    }

    pub fn finish(self) -> Memory {
        let Self { device, mapped, pinned, copies } = self;
        let (processes, leaks) = device.finish();
        let (mapped, _) = mapped.finish();
        let (pinned_host, pinned_host_leaks) = pinned.finish();
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
        Memory { processes, leaks, copies, mapped, pinned_host, pinned_host_leaks }
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
        timeline_csv(&self.processes)
    }

    pub fn leaks_csv(&self) -> String {
        table::csv(&["pid", "dptr", "bytes", "first_seen_sec", "func"], &self.leaks, Leak::cells)
    }

    /// Pinned host memory in use over time, like [`Memory::timeline_csv`].
    pub fn pinned_host_timeline_csv(&self) -> String {
        timeline_csv(&self.pinned_host)
    }

    pub fn pinned_host_leaks_csv(&self) -> String {
        table::csv(&["pid", "ptr", "bytes", "first_seen_sec", "func"], &self.pinned_host_leaks, Leak::cells)
    }

    pub fn copies_csv(&self) -> String {
        let header = ["type", "direction", "calls", "bytes", "total_call_ms", "call_bandwidth_gbps"];
        table::csv(&header, &self.copies, CopyRow::cells)
    }

    pub fn text(&self, top: usize) -> String {
        let mut out = "== Device memory (each allocation once, whichever layers saw it)\n".to_string();
        out += &processes_text(&self.processes);
        let leaked: u64 = self.leaks.iter().map(|l| l.bytes).sum();
        out += &format!("\n== Never freed: {} allocations, {leaked} bytes (largest {top})\n", self.leaks.len());
        out += &table::text_of(
            &["pid", "dptr", "bytes", "first_seen_s", "func"],
            self.leaks.iter().take(top),
            Leak::cells,
        );
        if !self.mapped.is_empty() {
            out += "\n== Mapped device memory (cuMemMap until cuMemUnmap; part of device memory above)\n";
            out += &processes_text(&self.mapped);
        }
        if !self.pinned_host.is_empty() {
            out += "\n== Pinned host memory (allocated or registered; not in device memory)\n";
            out += &processes_text(&self.pinned_host);
            let leaked: u64 = self.pinned_host_leaks.iter().map(|l| l.bytes).sum();
            let n = self.pinned_host_leaks.len();
            out += &format!("\n== Pinned host memory never freed: {n} ranges, {leaked} bytes (largest {top})\n");
            out += &table::text_of(
                &["pid", "ptr", "bytes", "first_seen_s", "func"],
                self.pinned_host_leaks.iter().take(top),
                Leak::cells,
            );
        }
        out += "\n== Copies (a runtime copy reaches the driver too: read one type; bandwidth from call time)\n";
        out += &table::text_of(
            &["type", "direction", "calls", "bytes", "total_call_ms", "GB/s"],
            &self.copies,
            CopyRow::cells,
        );
        out
    }
}

fn timeline_csv(processes: &[ProcessMemory]) -> String {
    let mut csv = Csv::new(&["timestamp_sec", "pid", "bytes_in_use"]);
    for p in processes {
        for &(t, bytes) in &p.timeline {
            csv.numbers(format_args!("{},{},{bytes}", Fixed(t, 6), p.pid));
        }
    }
    csv.finish()
}

fn processes_text(processes: &[ProcessMemory]) -> String {
    table::text_of(&["pid", "allocs", "frees", "failed", "peak_bytes", "peak_at_s", "final_bytes"], processes, |p| {
        vec![
            p.pid.to_string(),
            p.allocations.to_string(),
            p.frees.to_string(),
            p.failed_allocations.to_string(),
            p.peak_bytes.to_string(),
            fixed(p.peak_at_sec, 3),
            p.final_bytes.to_string(),
        ]
    })
}

impl Leak {
    /// One row of the leak tables (CSV and text alike).
    pub(super) fn cells(&self) -> Vec<String> {
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

    fn with_ptr(bytes: Option<u64>, ptr: u64) -> Args {
        let mut a = Args::default();
        a.set_bytes(bytes).unwrap();
        a.set_ptr(Some(Hex(ptr))).unwrap();
        a
    }

    #[test]
    fn mappings_count_as_device_memory_and_pinned_host_apart() {
        let calls = vec![
            call(1000.0, 1, "cudaMalloc", 1.0, 0, alloc(100, 0xa0)),
            call(1100.0, 1, "cuMemCreate", 1.0, 0, alloc(4096, 0x1)),
            call(1200.0, 1, "cuMemMap", 1.0, 0, alloc(4096, 0xb000)),
            call(1300.0, 1, "cuMemMap", 1.0, 0, alloc(2048, 0xc000)),
            call(1400.0, 1, "cudaHostAlloc", 1.0, 0, with_ptr(Some(512), 0x5000)),
            call(1401.0, 1, "cuMemHostAlloc", 1.0, 0, with_ptr(Some(512), 0x5000)),
            call(1500.0, 1, "cudaHostRegister", 1.0, 0, with_ptr(Some(256), 0x6000)),
            call(2000.0, 1, "cuMemUnmap", 1.0, 0, alloc(4096, 0xb000)),
            call(2100.0, 1, "cudaFreeHost", 1.0, 0, with_ptr(None, 0x5000)),
            call(2101.0, 1, "cuMemFreeHost", 1.0, 0, with_ptr(None, 0x5000)),
        ];
        let m = analyze(&calls);
        let d = &m.processes[0];
        assert_eq!(
            (d.allocations, d.frees, d.peak_bytes, d.final_bytes),
            (3, 1, 6244, 2148),
            "cuMemCreate is not mapped"
        );
        let mapped = &m.mapped[0];
        assert_eq!((mapped.allocations, mapped.frees, mapped.peak_bytes, mapped.final_bytes), (2, 1, 6144, 2048));
        let funcs: Vec<&str> = m.leaks.iter().map(|l| l.func).collect();
        assert_eq!(funcs, ["cuMemMap", "cudaMalloc"]);
        let h = &m.pinned_host[0];
        assert_eq!((h.allocations, h.frees, h.peak_bytes, h.final_bytes), (2, 1, 768, 256), "once across layers");
        assert_eq!(h.timeline, [(1.4, 512), (1.5, 768), (2.101, 256)]);
        assert_eq!(m.pinned_host_leaks[0].func, "cudaHostRegister");
        assert!(m.pinned_host_leaks_csv().contains("\n1,0x6000,256,1.500000,cudaHostRegister\n"));
        assert!(m.pinned_host_timeline_csv().ends_with("2.101000,1,256\n"));
        let text = m.text(10);
        assert!(text.contains("== Mapped device memory") && text.contains("== Pinned host memory"), "{text}");
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
