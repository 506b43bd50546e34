//! The table of traced CUDA entry points: names, layer, role, how the probes
//! read their arguments and how userspace decodes them.
//!
//! A function's id is its index in [`FUNCS`]; ids travel in BPF cookies and
//! ring-buffer records, so the table is the single source of truth for both
//! sides. Names are the bare exported names; versioned dynamic symbols
//! (`cudaLaunchKernel@@libcudart.so.12`) match their bare name.

/// Which library exports the function; also the `type` field of a trace line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layer {
    /// `libcuda.so.1`: `type` = `cuda_api`.
    Driver,
    /// `libcudart.so.*`: `type` = `cuda_runtime`.
    Runtime,
    /// `libnccl.so.*`: `type` = `nccl`.
    Nccl,
}

impl Layer {
    /// Every layer (the readers find a layer by its `type`).
    pub const ALL: [Layer; 3] = [Layer::Driver, Layer::Runtime, Layer::Nccl];

    /// The layer whose `type` value is `name`.
    pub fn from_type_name(name: &[u8]) -> Option<Layer> {
        Self::ALL.into_iter().find(|l| l.type_name().as_bytes() == name)
    }

    /// The seed's `type` value.
    pub const fn type_name(self) -> &'static str {
        match self {
            Layer::Driver => "cuda_api",
            Layer::Runtime => "cuda_runtime",
            Layer::Nccl => "nccl",
        }
    }
}

/// Groups users select with `--functions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Launch,
    Memory,
    Memcpy,
    Sync,
    Graph,
    Module,
    Memset,
    Vmm,
    HostMem,
    /// Every exported function without a row (`--functions exported`):
    /// traced name-only. Not in [`Group::ALL`], which lists the groups of rows.
    Exported,
    /// NCCL collectives, point-to-point, groups and communicators.
    Nccl,
    /// Stream and event lifetimes, waits and queries.
    Stream,
    /// Devices and contexts: create, retain, make current, count, memory info.
    Device,
    /// State PyTorch reads around every operation: off unless named.
    HighRate,
}

impl Group {
    pub const ALL: [Group; 13] = [
        Group::Launch,
        Group::Memory,
        Group::Memcpy,
        Group::Sync,
        Group::Graph,
        Group::Module,
        Group::Memset,
        Group::Vmm,
        Group::HostMem,
        Group::Nccl,
        Group::Stream,
        Group::Device,
        Group::HighRate,
    ];

    /// Whether `--functions` selects it unnamed (README "Function groups" says why `highrate` is not).
    pub const fn on_by_default(self) -> bool {
        !matches!(self, Group::HighRate)
    }

    pub const fn name(self) -> &'static str {
        match self {
            Group::Launch => "launch",
            Group::Memory => "memory",
            Group::Memcpy => "memcpy",
            Group::Sync => "sync",
            Group::Graph => "graph",
            Group::Module => "module",
            Group::Memset => "memset",
            Group::Vmm => "vmm",
            Group::HostMem => "hostmem",
            Group::Exported => "exported",
            Group::Nccl => "nccl",
            Group::Stream => "stream",
            Group::Device => "device",
            Group::HighRate => "highrate",
        }
    }
}

pub use role::Role;

/// How one decoded argument is formed from the raw words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fmt {
    /// Word as an unsigned 64-bit integer.
    U64,
    /// Low 32 bits of the word (C `unsigned int`/`int` args leave the upper half undefined).
    U32,
    /// Word as a hex string (pointers and handles).
    Hex,
    /// `dim3` passed by value in two registers: word = x | y << 32, next word = z.
    Dim3Regs,
    /// Three consecutive `unsigned int` words x, y, z.
    Dim3Words,
    /// `cudaMemcpyKind` in the low 32 bits.
    MemcpyKind,
    /// The value read through an out-pointer at return, as hex; absent when the call failed.
    Out,
    /// A fixed string (the copy direction a driver function's name implies).
    Const(&'static str),
    /// The string argument read at entry (the cookie's `str_arg`).
    Str,
    /// Three consecutive `unsigned int`s; `word` is an index in 32-bit units
    /// (fields of a launch-config struct copied into the stack-word slots).
    Dim3U32,
    /// One `unsigned int`; `word` is an index in 32-bit units.
    U32At,
    /// The product of this many consecutive words from `word` (a 2D or 3D
    /// copy's width x height [x depth]).
    Product(u8),
    /// `ncclDataType_t` in the low 32 bits, by name (`float32`, …).
    NcclType,
    /// `ncclRedOp_t` in the low 32 bits, by name (`sum`, …).
    NcclOp,
    /// Bytes of an NCCL buffer: the count at `word` times the size of the
    /// `ncclDataType_t` at the word given here.
    NcclBytes(u8),
    /// The `int` read through an out-pointer at return (the low 32 bits of
    /// the word read); absent when the call failed.
    OutI32,
    /// Low 32 bits of the word as a signed `int` (device ordinals, priorities).
    I32,
    /// Like [`Fmt::Out`], as an unsigned integer, a `float`.
    OutU64,
    OutF32,
    /// Read through the second out-pointer into [`crate::abi::OUT2_WORD`]; like `OutU64`.
    Out2U64,
    /// The size a module image's fatbin header (copied from `deref_arg`) says; absent when unknown.
    ImageBytes,
}

impl Fmt {
    /// Whether the value is read at return and so only shown for a call
    /// that succeeded.
    pub const fn is_out(self) -> bool {
        matches!(self, Fmt::Out | Fmt::OutI32 | Fmt::OutU64 | Fmt::OutF32 | Fmt::Out2U64)
    }
}

pub use exec::image_bytes;

/// One named argument in a trace line's `args`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgSpec {
    pub name: &'static str,
    pub fmt: Fmt,
    /// Index into the raw argument words.
    pub word: u8,
}

/// One traced entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FuncSpec {
    pub name: &'static str,
    pub layer: Layer,
    pub role: Role,
    /// Always `role.group()`: kept as a field for the readers that select by group.
    pub group: Group,
    /// Whether arguments live on the stack (more than six words).
    pub stack: bool,
    /// 1-based index of the out-pointer argument read at return; 0 = none.
    pub out_arg: u8,
    /// 1-based index of a struct-pointer argument copied at entry; 0 = none.
    pub deref_arg: u8,
    /// 1-based index of a string argument copied at entry; 0 = none.
    pub str_arg: u8,
    /// The word of the `deref_arg` struct where the copy starts.
    pub deref_at: u8,
    /// 1-based index of a second out-pointer argument read at return into
    /// word [`crate::abi::OUT2_WORD`]; 0 = none. Only for functions whose
    /// stack-word slots are free (no `stack`, no `deref_arg`).
    pub out2_arg: u8,
    pub args: &'static [ArgSpec],
    /// The runtime major version (`libcudart.so.12`: 12) whose signature
    /// this row decodes; `None`: every version. CUDA 13 folded the runtime's
    /// `_v2`/`_v3` variants into the base names with their new signatures,
    /// so one exported name can need a row per major version.
    pub runtime_major: Option<u8>,
}

impl FuncSpec {
    /// The BPF cookie of this function's probes.
    pub const fn cookie(&self, func_id: u16) -> crate::abi::Cookie {
        crate::abi::Cookie {
            func_id,
            stack_words: if self.stack { crate::abi::STACK_ARGS as u8 } else { 0 },
            out_arg: self.out_arg,
            deref_arg: self.deref_arg,
            str_arg: self.str_arg,
            deref_at: self.deref_at,
            out2_arg: self.out2_arg,
        }
    }

    /// Whether this row decodes the function in a library of runtime major
    /// version `major` (`None`: unknown; only rows for every version do).
    pub fn applies_to(&self, major: Option<u8>) -> bool {
        self.runtime_major.is_none() || self.runtime_major == major
    }

    /// The copy direction the function's name implies (`cuMemcpyDtoH_v2`:
    /// `"DtoH"`), as its `kind` argument writes it; `None` when the
    /// direction is an argument or the function copies nothing.
    pub fn fixed_copy_kind(&self) -> Option<&'static str> {
        self.args.iter().find_map(|a| match a.fmt {
            Fmt::Const(kind) => Some(kind),
            _ => None,
        })
    }
}

pub(super) const fn a(name: &'static str, fmt: Fmt, word: u8) -> ArgSpec {
    ArgSpec { name, fmt, word }
}

pub(super) const fn f(name: &'static str, layer: Layer, role: Role, out_arg: u8, args: &'static [ArgSpec]) -> FuncSpec {
    FuncSpec {
        name,
        layer,
        role,
        group: role.group(),
        stack: false,
        out_arg,
        deref_arg: 0,
        str_arg: 0,
        deref_at: 0,
        out2_arg: 0,
        args,
        runtime_major: None,
    }
}

/// The row applies only to runtime libraries of major version `major`.
pub(super) const fn only_major(major: u8, spec: FuncSpec) -> FuncSpec {
    FuncSpec { runtime_major: Some(major), ..spec }
}

/// Reads a second out-pointer, argument `arg` (1-based), at return.
pub(super) const fn out2(arg: u8, spec: FuncSpec) -> FuncSpec {
    FuncSpec { out2_arg: arg, ..spec }
}

/// Reads the struct that argument `arg` (1-based) points to at entry.
pub(super) const fn deref(arg: u8, spec: FuncSpec) -> FuncSpec {
    FuncSpec { deref_arg: arg, ..spec }
}

/// Reads words `at..` of the struct that argument `arg` (1-based) points to at entry.
pub(super) const fn deref_from(arg: u8, at: u8, spec: FuncSpec) -> FuncSpec {
    FuncSpec { deref_arg: arg, deref_at: at, ..spec }
}

/// Reads the string argument `arg` (1-based) at entry.
pub(super) const fn string(arg: u8, spec: FuncSpec) -> FuncSpec {
    FuncSpec { str_arg: arg, ..spec }
}

pub(super) const fn stack(spec: FuncSpec) -> FuncSpec {
    FuncSpec { stack: true, ..spec }
}

mod core;
mod exec;
#[cfg(feature = "user")]
pub mod extra;
mod memory;
pub mod nccl;
mod role;
mod versioned;

/// The table's parts, in id order. Ids are indexes into the whole table and
/// are only meaningful within one build (the trace carries names, not ids).
const PARTS: [&[FuncSpec]; 5] = [core::ROWS, memory::ROWS, exec::ROWS, nccl::ROWS, versioned::ROWS];

const COUNT: usize = {
    let mut n = 0;
    let mut p = 0;
    while p < PARTS.len() {
        n += PARTS[p].len();
        p += 1;
    }
    n
};

/// The parts laid end to end (a const fn: slices cannot be concatenated in
/// a const item otherwise).
const fn concat() -> [FuncSpec; COUNT] {
    const BLANK: FuncSpec = f("", Layer::Driver, Role::Other, 0, &[]);
    let mut table = [BLANK; COUNT];
    let mut i = 0;
    let mut p = 0;
    while p < PARTS.len() {
        let mut j = 0;
        while j < PARTS[p].len() {
            table[i] = PARTS[p][j];
            i += 1;
            j += 1;
        }
        p += 1;
    }
    table
}

const TABLE: [FuncSpec; COUNT] = concat();

/// Every traced entry point; the index is the function id.
pub const FUNCS: &[FuncSpec] = &TABLE;

/// The row that decodes `name` as exported by a `layer` library of runtime
/// major version `major` (`None`: unknown, only rows valid for every
/// version apply).
pub fn for_library(name: &str, layer: Layer, major: Option<u8>) -> Option<(u16, &'static FuncSpec)> {
    FUNCS
        .iter()
        .enumerate()
        .find(|(_, s)| s.name == name && s.layer == layer && s.applies_to(major))
        .map(|(i, s)| (i as u16, s))
}

/// Looks a function up by its bare exported name: its first row (rows of
/// one name differ only in how they decode arguments, a test checks).
pub fn by_name(name: &str) -> Option<(u16, &'static FuncSpec)> {
    FUNCS.iter().enumerate().find(|(_, s)| s.name == name).map(|(i, s)| (i as u16, s))
}

/// Looks a function up by id, as carried in a record: a row of [`FUNCS`]
/// or (userspace) a name-only function of [`extra`]'s registry.
pub fn by_id(id: u32) -> Option<&'static FuncSpec> {
    match FUNCS.get(id as usize) {
        Some(spec) => Some(spec),
        #[cfg(feature = "user")]
        None => extra::by_id(id),
        #[cfg(not(feature = "user"))]
        None => None,
    }
}

// Ids must fit the cookie's 16 bits and argument words the record.
const _: () = assert!(FUNCS.len() < u16::MAX as usize);
// The last drop slot counts every function without a row.
const _: () = assert!(FUNCS.len() <= crate::abi::drop_slot::FUNC_OTHER as usize);

#[cfg(test)]
mod tests;
