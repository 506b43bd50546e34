//! Per-file counts of the calls read, by layer, taken while each call is
//! parsed (the only moment a call is known to come from its file): what
//! the report's per-node and per-pod breakdowns add up.

use serde::Serialize;
use tracer_common::funcs::{Layer, Role};

use super::Call;

/// The calls of one layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LayerCounts {
    pub calls: u64,
    /// Failed calls, included in `calls`.
    pub errors: u64,
    /// Time inside the calls, nanoseconds: an integer, so the sum is the
    /// same in any order (a Parquet file holds its calls in another order
    /// than its JSONL twin).
    pub call_ns: u64,
    /// Kernel launch calls (as in the kernels table).
    pub launches: u64,
    /// Successful copy calls and the bytes they copied (as in the copies table).
    pub copies: u64,
    pub copy_bytes: u64,
}

impl LayerCounts {
    fn add(&mut self, c: &Call) {
        self.calls += 1;
        self.errors += u64::from(!c.ok());
        self.call_ns += (c.dur_us * 1000.0).round().max(0.0) as u64;
        match c.spec().role {
            Role::Launch => self.launches += 1,
            Role::Copy if c.ok() => {
                self.copies += 1;
                self.copy_bytes += c.args.bytes().unwrap_or(0);
            }
            _ => {}
        }
    }

    pub fn merge(&mut self, o: &LayerCounts) {
        self.calls += o.calls;
        self.errors += o.errors;
        self.call_ns += o.call_ns;
        self.launches += o.launches;
        self.copies += o.copies;
        self.copy_bytes += o.copy_bytes;
    }
}

/// The calls of one file (or chunk), per layer in [`Layer::ALL`] order.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Tally(pub [LayerCounts; 3]);

impl Tally {
    pub fn add(&mut self, c: &Call) {
        let i = Layer::ALL.iter().position(|&l| l == c.layer()).unwrap_or(0);
        self.0[i].add(c);
    }

    pub fn merge(&mut self, o: &Tally) {
        for (a, b) in self.0.iter_mut().zip(&o.0) {
            a.merge(b);
        }
    }
}
