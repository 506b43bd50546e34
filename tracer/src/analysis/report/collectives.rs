//! NCCL collectives and point-to-point transfers: calls, errors, bytes and
//! call time per process, communicator and op (`AllReduce`, `Send`, …).
//!
//! `bytes` adds up the successful calls' buffers (count × datatype size, as
//! the trace writes them): a failed call moved nothing. The call time is the
//! host side of the call, which enqueues the work on the stream; the
//! transfer itself runs on the GPU afterwards.

use std::collections::BTreeMap;

use serde::Serialize;
use tracer_common::funcs::Role;

use super::table::{self, fixed};
use crate::analysis::trace::{Call, Hex};

/// One (process, communicator, op).
#[derive(Debug, Serialize, PartialEq)]
pub struct CollectiveRow {
    pub pid: u32,
    /// The `ncclComm_t` handle, `"?"` when the line has none.
    pub comm: String,
    /// The function without its `nccl` prefix: `AllReduce`, `Send`, ….
    pub op: &'static str,
    pub calls: u64,
    /// Failed calls, included in `calls`.
    pub errors: u64,
    pub bytes: u64,
    pub total_call_ms: f64,
    pub mean_call_us: f64,
}

/// The collectives table and its totals.
#[derive(Debug, Serialize, Default, PartialEq)]
pub struct Collectives {
    /// Sorted by process, communicator and op.
    pub rows: Vec<CollectiveRow>,
    pub calls: u64,
    pub bytes: u64,
    pub total_call_ms: f64,
}

/// Whether a call is a collective or point-to-point transfer.
pub fn is_transfer(c: &Call) -> bool {
    matches!(c.spec().role, Role::Collective | Role::P2p)
}

/// The bytes a transfer moved: its buffer when it succeeded, else none.
pub fn moved_bytes(c: &Call) -> u64 {
    if c.ok() {
        c.args.bytes().unwrap_or(0)
    } else {
        0
    }
}

#[derive(Default)]
struct Acc {
    calls: u64,
    errors: u64,
    bytes: u64,
    total_us: f64,
}

/// Collects the transfers of `calls` (any order).
pub fn analyze(calls: &[Call]) -> Collectives {
    let mut by_key: BTreeMap<(u32, Option<Hex>, &'static str), Acc> = BTreeMap::new();
    for c in calls.iter().filter(|c| is_transfer(c)) {
        let op = c.name().strip_prefix("nccl").unwrap_or(c.name());
        let acc = by_key.entry((c.pid, c.args.comm(), op)).or_default();
        acc.calls += 1;
        acc.errors += u64::from(!c.ok());
        acc.bytes += moved_bytes(c);
        acc.total_us += c.dur_us;
    }
    let mut out = Collectives::default();
    for ((pid, comm, op), acc) in by_key {
        out.calls += acc.calls;
        out.bytes += acc.bytes;
        out.total_call_ms += acc.total_us / 1000.0;
        out.rows.push(CollectiveRow {
            pid,
            comm: comm.map_or_else(|| "?".to_string(), |h| h.to_string()),
            op,
            calls: acc.calls,
            errors: acc.errors,
            bytes: acc.bytes,
            total_call_ms: acc.total_us / 1000.0,
            mean_call_us: acc.total_us / acc.calls as f64,
        });
    }
    out
}

const HEADER: [&str; 8] = ["pid", "comm", "op", "calls", "errors", "bytes", "total_call_ms", "mean_call_us"];

impl CollectiveRow {
    fn cells(&self) -> Vec<String> {
        let mut cells = vec![self.pid.to_string(), self.comm.clone(), self.op.to_string()];
        cells.extend([self.calls, self.errors, self.bytes].map(|n| n.to_string()));
        cells.extend([self.total_call_ms, self.mean_call_us].map(|v| fixed(v, 3)));
        cells
    }
}

impl Collectives {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// collectives.csv.
    pub fn csv(&self) -> String {
        table::csv(&HEADER, &self.rows, CollectiveRow::cells)
    }

    pub fn text(&self) -> String {
        let mut out = format!(
            "== NCCL collectives: {} calls, {} bytes, {:.3} ms in the calls\n",
            self.calls, self.bytes, self.total_call_ms
        );
        out += &table::text_of(&HEADER, &self.rows, CollectiveRow::cells);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{report::functions::tests::call, trace::Args};

    fn transfer(comm: u64, bytes: u64) -> Args {
        let mut a = Args::default();
        a.set_comm(Some(Hex(comm))).unwrap();
        a.set_bytes(Some(bytes)).unwrap();
        a
    }

    #[test]
    fn rows_per_process_communicator_and_op() {
        let mut other_process = call(5.0, 1, "ncclAllReduce", 1.0, 0, transfer(0xc1, 8));
        other_process.pid = 2;
        let calls = vec![
            call(1.0, 1, "ncclAllReduce", 10.0, 0, transfer(0xc1, 4096)),
            call(2.0, 1, "ncclAllReduce", 30.0, 0, transfer(0xc1, 4096)),
            call(3.0, 1, "ncclAllReduce", 5.0, 4, transfer(0xc1, 4096)),
            call(4.0, 1, "ncclSend", 2.0, 0, transfer(0xc2, 64)),
            other_process,
            call(6.0, 1, "ncclGroupStart", 1.0, 0, Args::default()),
            call(7.0, 1, "cudaMalloc", 1.0, 0, Args::default()),
        ];
        let c = analyze(&calls);
        let rows: Vec<(u32, &str, &str, u64, u64, u64)> =
            c.rows.iter().map(|r| (r.pid, r.comm.as_str(), r.op, r.calls, r.errors, r.bytes)).collect();
        assert_eq!(
            rows,
            [(1, "0xc1", "AllReduce", 3, 1, 8192), (1, "0xc2", "Send", 1, 0, 64), (2, "0xc1", "AllReduce", 1, 0, 8)]
        );
        assert_eq!((c.calls, c.bytes), (5, 8264));
        assert!((c.rows[0].total_call_ms - 0.045).abs() < 1e-12);
        assert!(c.csv().starts_with(
            "pid,comm,op,calls,errors,bytes,total_call_ms,mean_call_us\n1,0xc1,AllReduce,3,1,8192,0.045,15.000\n"
        ));
        assert!(analyze(&calls[5..]).is_empty());
    }
}
