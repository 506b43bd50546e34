//! The decoded arguments the analyses use, packed: the eight handle and size
//! fields share three 64-bit slots (no CUDA call has two fields of one slot,
//! a test checks every traced function), so a call needs no heap allocation
//! and millions of them stay small. Other keys are ignored (the Chrome
//! export copies a line's raw args instead).

use serde::{de, Deserialize, Deserializer};

use super::{
    intern::{self, Launch},
    schema::arg,
    CopyKind, Hex,
};

/// The packed fields: (presence bit, slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Stream,
    Bytes,
    Graph,
    F,
    Dptr,
    Event,
    Exec,
    SharedMem,
    Ptr,
    /// An NCCL communicator.
    Comm,
}

impl Field {
    const ALL: [Field; 10] = [
        Field::Stream,
        Field::Bytes,
        Field::Graph,
        Field::F,
        Field::Dptr,
        Field::Event,
        Field::Exec,
        Field::SharedMem,
        Field::Ptr,
        Field::Comm,
    ];

    const fn bit(self) -> u16 {
        1 << self as u16
    }

    /// Fields that share a slot never meet in one call: a stream is slot 0;
    /// sizes, graphs and launch handles slot 1; pointers (device and pinned
    /// host), events, execs, shared memory and NCCL communicators slot 2.
    const fn slot(self) -> usize {
        match self {
            Field::Stream => 0,
            Field::Bytes | Field::Graph | Field::F => 1,
            Field::Dptr | Field::Event | Field::Exec | Field::SharedMem | Field::Ptr | Field::Comm => 2,
        }
    }

    /// Its key in a line's `args`.
    fn key(self) -> &'static [u8] {
        match self {
            Field::Stream => arg::STREAM,
            Field::Bytes => arg::BYTES,
            Field::Graph => arg::GRAPH,
            Field::F => arg::F,
            Field::Dptr => arg::DPTR,
            Field::Event => arg::EVENT,
            Field::Exec => arg::EXEC,
            Field::SharedMem => arg::SHARED_MEM,
            Field::Ptr => arg::PTR,
            Field::Comm => arg::COMM,
        }
    }

    fn name(self) -> &'static str {
        std::str::from_utf8(self.key()).unwrap_or("?")
    }
}

/// Presence bits of the fields of each slot.
const SLOT_BITS: [u16; 3] = [slot_bits(0), slot_bits(1), slot_bits(2)];

const fn slot_bits(slot: usize) -> u16 {
    let (mut bits, mut i) = (0, 0);
    while i < Field::ALL.len() {
        if Field::ALL[i].slot() == slot {
            bits |= Field::ALL[i].bit();
        }
        i += 1;
    }
    bits
}

/// Above every field's bit.
const KIND: u16 = 1 << 15;
const _: () = assert!(Field::ALL.len() < 15);

/// `kernel` is the demangled name on launches and a handle on
/// `cuLibraryGetKernel` (both are strings in the trace); it is interned with
/// the launch's grid and block (see [`intern`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Args {
    slots: [u64; 3],
    /// A [`Launch`] id: 0 for none.
    launch: u32,
    present: u16,
    kind: CopyKind,
}

/// Two args of one call that share a slot: no traced CUDA function has them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("args {0:?} and {1:?} together: no traced CUDA call has both (is this line from a newer tracer?)")]
pub struct SlotTaken(&'static str, &'static str);

impl Args {
    fn get(&self, field: Field) -> Option<u64> {
        (self.present & field.bit() != 0).then(|| self.slots[field.slot()])
    }

    /// Stores (or with `None` clears) a field; refuses one whose slot holds
    /// another field.
    fn set(&mut self, field: Field, value: Option<u64>) -> Result<(), SlotTaken> {
        let Some(v) = value else {
            self.present &= !field.bit();
            return Ok(());
        };
        let others = SLOT_BITS[field.slot()] & !field.bit() & self.present;
        if others != 0 {
            // `ALL` is in declaration order: index = bit position.
            return Err(SlotTaken(Field::ALL[others.trailing_zeros() as usize].name(), field.name()));
        }
        self.slots[field.slot()] = v;
        self.present |= field.bit();
        Ok(())
    }
}

/// A getter and a setter per packed field.
macro_rules! packed {
    ($($get:ident, $set:ident, $field:ident, $ty:ty, $to:expr, $from:expr;)*) => {
        impl Args {
            $(
                pub fn $get(&self) -> Option<$ty> {
                    self.get(Field::$field).map($to)
                }
                pub fn $set(&mut self, value: Option<$ty>) -> Result<(), SlotTaken> {
                    self.set(Field::$field, value.map($from))
                }
            )*
        }
    };
}

packed! {
    bytes, set_bytes, Bytes, u64, |v| v, |v| v;
    dptr, set_dptr, Dptr, Hex, Hex, |h: Hex| h.0;
    stream, set_stream, Stream, Hex, Hex, |h: Hex| h.0;
    event, set_event, Event, Hex, Hex, |h: Hex| h.0;
    graph, set_graph, Graph, Hex, Hex, |h: Hex| h.0;
    exec, set_exec, Exec, Hex, Hex, |h: Hex| h.0;
    f, set_f, F, Hex, Hex, |h: Hex| h.0;
    shared_mem, set_shared_mem, SharedMem, u64, |v| v, |v| v;
    ptr, set_ptr, Ptr, Hex, Hex, |h: Hex| h.0;
    comm, set_comm, Comm, Hex, Hex, |h: Hex| h.0;
}

impl Args {
    pub fn kind(&self) -> Option<CopyKind> {
        (self.present & KIND != 0).then_some(self.kind)
    }
    pub fn set_kind(&mut self, kind: Option<CopyKind>) {
        self.kind = kind.unwrap_or_default();
        self.present = if kind.is_some() { self.present | KIND } else { self.present & !KIND };
    }
    pub fn launch(&self) -> Launch {
        Launch::by_id(self.launch)
    }
    pub fn set_launch(&mut self, launch: Launch) {
        self.launch = launch.id();
    }
    /// [`Args::set_launch`] with the id of an interned launch.
    pub(super) fn set_launch_id(&mut self, id: u32) {
        self.launch = id;
    }
    pub fn kernel(&self) -> Option<&'static str> {
        self.launch().kernel
    }
    pub fn grid(&self) -> Option<[u32; 3]> {
        self.launch().grid
    }
    pub fn block(&self) -> Option<[u32; 3]> {
        self.launch().block
    }
    pub fn set_kernel(&mut self, kernel: Option<&str>) {
        self.set_launch(Launch { kernel: kernel.map(intern::name), ..self.launch() });
    }
    pub fn set_grid(&mut self, grid: Option<[u32; 3]>) {
        self.set_launch(Launch { grid, ..self.launch() });
    }
    pub fn set_block(&mut self, block: Option<[u32; 3]>) {
        self.set_launch(Launch { block, ..self.launch() });
    }
    /// The line's `caller` (kept here, interned with the launch fields:
    /// [`super::Call`] has no room left in its cache line).
    pub fn caller(&self) -> Option<&'static str> {
        self.launch().caller
    }
    pub fn set_caller(&mut self, caller: Option<&str>) {
        self.set_launch(Launch { caller: caller.map(intern::name), ..self.launch() });
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
    ptr: Option<Hex>,
    comm: Option<Hex>,
    /// Launch handle: `f` (driver) or `func` (runtime).
    #[serde(alias = "func")]
    f: Option<Hex>,
}

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = Raw::deserialize(d)?;
        let mut a = Args::default();
        let taken = |e: SlotTaken| de::Error::custom(e);
        a.set_stream(r.stream).map_err(taken)?;
        a.set_bytes(r.bytes).map_err(taken)?;
        a.set_graph(r.graph).map_err(taken)?;
        a.set_f(r.f).map_err(taken)?;
        a.set_dptr(r.dptr).map_err(taken)?;
        a.set_event(r.event).map_err(taken)?;
        a.set_exec(r.exec).map_err(taken)?;
        a.set_shared_mem(r.shared_mem).map_err(taken)?;
        a.set_ptr(r.ptr).map_err(taken)?;
        a.set_comm(r.comm).map_err(taken)?;
        a.set_kind(r.kind);
        let kernel = r.kernel.as_deref().map(intern::name);
        a.set_launch(Launch { kernel, grid: r.grid, block: r.block, caller: None });
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::funcs::FUNCS;

    use super::*;

    #[test]
    fn set_get_and_clear() {
        let mut a = Args::default();
        assert_eq!(a.stream(), None);
        a.set_stream(Some(Hex(0))).unwrap();
        assert_eq!(a.stream(), Some(Hex(0)), "the default stream 0x0 is a value, not absence");
        a.set_stream(None).unwrap();
        assert_eq!(a.stream(), None);
        a.set_kind(Some(CopyKind::DtoH));
        a.set_grid(Some([1, 2, 3]));
        assert_eq!((a.kind(), a.grid(), a.block()), (Some(CopyKind::DtoH), Some([1, 2, 3]), None));
        a.set_bytes(Some(64)).unwrap();
        assert_eq!(a.set_f(Some(Hex(1))), Err(SlotTaken("bytes", "f")), "one slot, two fields");
        assert_eq!((a.bytes(), a.f()), (Some(64), None));
        a.set_bytes(Some(65)).unwrap();
        assert_eq!(a.bytes(), Some(65), "a field replaces itself");
    }

    #[test]
    fn no_traced_function_has_two_fields_of_one_slot() {
        for spec in FUNCS {
            let mut a = Args::default();
            for arg in spec.args {
                let field =
                    Field::ALL.into_iter().find(|f| f.name() == arg.name || (arg.name == "func" && *f == Field::F));
                if let Some(field) = field {
                    a.set(field, Some(1)).unwrap_or_else(|e| panic!("{}: {e}", spec.name));
                }
            }
        }
    }

    #[test]
    fn small_enough_to_move_millions() {
        assert_eq!(std::mem::size_of::<Args>(), 32);
    }
}
