//! Bytes live over time per process: ranges that calls open (allocate, map,
//! pin) and close (free, unmap, unpin), each counted once however many
//! layers saw it, with peak, timeline and the ranges never closed.
//!
//! A runtime allocation reaches the driver as a second allocation of the
//! same pointer: a live range is keyed by (pid, pointer) and counted once,
//! and closed when every layer that opened it has closed it.

use std::collections::BTreeMap;

use serde::Serialize;
use tracer_common::funcs::Layer;

use super::table::FastMap;
use crate::analysis::trace::Call;

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
    /// JSON): the timeline CSV has it.
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

struct Live {
    bytes: u64,
    first_ms: f64,
    func: &'static str,
    /// Bit 0: the driver opened it, bit 1: the runtime.
    layers: u8,
}

fn layer_bit(c: &Call) -> u8 {
    if c.layer() == Layer::Runtime {
        2
    } else {
        1
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

/// The live ranges of one kind of memory.
#[derive(Default)]
pub struct LiveRanges {
    live: FastMap<(u32, u64), Live>,
    procs: BTreeMap<u32, Process>,
}

fn process(procs: &mut BTreeMap<u32, Process>, pid: u32) -> &mut Process {
    procs.entry(pid).or_insert_with(|| Process {
        out: ProcessMemory {
            pid,
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
    })
}

impl LiveRanges {
    /// A call that opens a range: `ptr` (none: the call failed or gave none)
    /// of `bytes`.
    pub fn open(&mut self, c: &Call, ptr: Option<u64>, bytes: u64) {
        let bit = layer_bit(c);
        let Self { live, procs } = self;
        let p = process(procs, c.pid);
        if !c.ok() {
            p.out.failed_allocations += 1;
            return;
        }
        let Some(ptr) = ptr.filter(|&p| p != 0) else { return };
        let new = Live { bytes, first_ms: c.ts_ms, func: c.name(), layers: bit };
        match live.get_mut(&(c.pid, ptr)) {
            // The same range seen by the other layer.
            Some(l) if l.layers & bit == 0 => l.layers |= bit,
            // Opened again without a close we saw: the old one is gone.
            Some(l) => {
                let old = std::mem::replace(l, new);
                p.out.allocations += 1;
                p.change(c.ts_ms, bytes, old.bytes);
            }
            None => {
                live.insert((c.pid, ptr), new);
                p.out.allocations += 1;
                p.change(c.ts_ms, bytes, 0);
            }
        }
    }

    /// A call that closes the range at `ptr`.
    pub fn close(&mut self, c: &Call, ptr: Option<u64>) {
        let bit = layer_bit(c);
        let Self { live, procs } = self;
        let p = process(procs, c.pid);
        let Some(ptr) = ptr.filter(|&p| p != 0 && c.ok()) else { return };
        match live.get_mut(&(c.pid, ptr)) {
            Some(l) => {
                l.layers &= !bit;
                if l.layers == 0 {
                    let bytes = l.bytes;
                    live.remove(&(c.pid, ptr));
                    p.out.frees += 1;
                    p.change(c.ts_ms, 0, bytes);
                }
            }
            None => p.out.unmatched_frees += 1,
        }
    }

    /// Per process (by pid) and the ranges never closed, largest first.
    pub fn finish(self) -> (Vec<ProcessMemory>, Vec<Leak>) {
        let Self { live, procs } = self;
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
        (processes, leaks)
    }
}
