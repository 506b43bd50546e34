//! The decoded arguments the analyses use, packed: a presence mask and plain
//! values instead of a dozen `Option`s, so a call needs no heap allocation and
//! millions of them fit in cache-friendly memory. Other keys are ignored (the
//! Chrome export copies a line's raw args instead).

use std::sync::Arc;

use serde::{Deserialize, Deserializer};

use super::{CopyKind, Hex};

/// Bits of [`Args::present`].
mod bit {
    pub const BYTES: u16 = 1 << 0;
    pub const DPTR: u16 = 1 << 1;
    pub const STREAM: u16 = 1 << 2;
    pub const EVENT: u16 = 1 << 3;
    pub const GRAPH: u16 = 1 << 4;
    pub const EXEC: u16 = 1 << 5;
    pub const F: u16 = 1 << 6;
    pub const SHARED_MEM: u16 = 1 << 7;
    pub const KIND: u16 = 1 << 8;
    pub const GRID: u16 = 1 << 9;
    pub const BLOCK: u16 = 1 << 10;
}

/// `kernel` is the demangled name on launches and a handle on
/// `cuLibraryGetKernel` (both are strings in the trace).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Args {
    bytes: u64,
    dptr: u64,
    stream: u64,
    event: u64,
    graph: u64,
    exec: u64,
    f: u64,
    shared_mem: u64,
    /// Shared: a trace names the same few kernels millions of times.
    kernel: Option<Arc<str>>,
    grid: [u32; 3],
    block: [u32; 3],
    present: u16,
    kind: CopyKind,
}

/// A getter and a setter (`None` clears) per packed field.
macro_rules! packed {
    ($($get:ident, $set:ident, $bit:ident, $ty:ty, $to:expr, $from:expr;)*) => {
        impl Args {
            $(
                pub fn $get(&self) -> Option<$ty> {
                    (self.present & bit::$bit != 0).then(|| $to(self.$get))
                }
                pub fn $set(&mut self, value: Option<$ty>) {
                    match value {
                        Some(v) => {
                            self.$get = $from(v);
                            self.present |= bit::$bit;
                        }
                        None => self.present &= !bit::$bit,
                    }
                }
            )*
        }
    };
}

fn same<T>(v: T) -> T {
    v
}

packed! {
    bytes, set_bytes, BYTES, u64, same, same;
    dptr, set_dptr, DPTR, Hex, Hex, |h: Hex| h.0;
    stream, set_stream, STREAM, Hex, Hex, |h: Hex| h.0;
    event, set_event, EVENT, Hex, Hex, |h: Hex| h.0;
    graph, set_graph, GRAPH, Hex, Hex, |h: Hex| h.0;
    exec, set_exec, EXEC, Hex, Hex, |h: Hex| h.0;
    f, set_f, F, Hex, Hex, |h: Hex| h.0;
    shared_mem, set_shared_mem, SHARED_MEM, u64, same, same;
    kind, set_kind, KIND, CopyKind, same, same;
    grid, set_grid, GRID, [u32; 3], same, same;
    block, set_block, BLOCK, [u32; 3], same, same;
}

impl Args {
    pub fn kernel(&self) -> Option<&Arc<str>> {
        self.kernel.as_ref()
    }
    pub fn set_kernel(&mut self, kernel: Option<Arc<str>>) {
        self.kernel = kernel;
    }
}

/// What serde reads (the slow path for lines the fast parser declines).
#[derive(Default, Deserialize)]
#[serde(default)]
struct Raw {
    bytes: Option<u64>,
    dptr: Option<Hex>,
    kind: Option<CopyKind>,
    stream: Option<Hex>,
    event: Option<Hex>,
    graph: Option<Hex>,
    exec: Option<Hex>,
    kernel: Option<Box<str>>,
    grid: Option<[u32; 3]>,
    block: Option<[u32; 3]>,
    shared_mem: Option<u64>,
    /// Launch handle: `f` (driver) or `func` (runtime).
    #[serde(alias = "func")]
    f: Option<Hex>,
}

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = Raw::deserialize(d)?;
        let mut a = Args::default();
        a.set_bytes(r.bytes);
        a.set_dptr(r.dptr);
        a.set_kind(r.kind);
        a.set_stream(r.stream);
        a.set_event(r.event);
        a.set_graph(r.graph);
        a.set_exec(r.exec);
        a.set_kernel(r.kernel.map(Arc::from));
        a.set_grid(r.grid);
        a.set_block(r.block);
        a.set_shared_mem(r.shared_mem);
        a.set_f(r.f);
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_and_clear() {
        let mut a = Args::default();
        assert_eq!(a.stream(), None);
        a.set_stream(Some(Hex(0)));
        assert_eq!(a.stream(), Some(Hex(0)), "the default stream 0x0 is a value, not absence");
        a.set_stream(None);
        assert_eq!(a.stream(), None);
        a.set_kind(Some(CopyKind::DtoH));
        a.set_grid(Some([1, 2, 3]));
        assert_eq!((a.kind(), a.grid(), a.block()), (Some(CopyKind::DtoH), Some([1, 2, 3]), None));
    }

    #[test]
    fn small_enough_to_move_millions() {
        assert!(std::mem::size_of::<Args>() <= 112, "{}", std::mem::size_of::<Args>());
    }
}
