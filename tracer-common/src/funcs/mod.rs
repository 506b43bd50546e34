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

/// What a function does, as the analyses need to know it: the annotator,
/// the memory, step and graph analyses decide by role, never by name, so a
/// new function is one row of [`FUNCS`].
///
/// Synchronization is four roles, not one, because step segmentation treats
/// each differently: a device-wide sync ends whatever was pending, an event
/// record closes a step, the event's sync ends it, a stream sync is neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// Allocates device memory; the pointer comes back through the out-pointer.
    Alloc,
    /// Frees a device pointer.
    Free,
    /// Launches one kernel; its first argument is the function handle.
    Launch,
    /// Copies memory; `kind` says the direction.
    Copy,
    /// Waits for one stream.
    StreamSync,
    /// Waits for the whole device or context.
    DeviceSync,
    /// Records an event on a stream.
    EventRecord,
    /// Waits for an event.
    EventSync,
    /// Starts capturing a stream into a graph.
    CaptureBegin,
    /// Ends a capture; the graph comes back through the out-pointer.
    CaptureEnd,
    /// Makes an executable graph of a graph.
    GraphInstantiate,
    /// Replays an executable graph.
    GraphLaunch,
    /// Finds a kernel's handle: by name (the probe copies the name,
    /// `str_arg` is set) or from another handle.
    ModuleLookup,
    /// Fills device memory with a value.
    Memset,
    /// Virtual memory bookkeeping the analyses do not count: address
    /// ranges reserved and freed, physical handles created and released,
    /// access set. The bytes count when mapped ([`Role::Map`]).
    VirtualMemory,
    /// Maps physical memory at a device address (`cuMemMap`): mapped device
    /// memory, live until unmapped.
    Map,
    /// Unmaps a mapped range (`cuMemUnmap`).
    Unmap,
    /// Allocates or registers (page-locks) host memory: the pointer comes
    /// back through the out-pointer or, when the row has none, is the first
    /// argument; the size is the second.
    HostAlloc,
    /// Frees or unregisters pinned host memory.
    HostFree,
    /// An NCCL collective (`ncclAllReduce`, …): count, datatype, communicator, stream.
    Collective,
    /// An NCCL point-to-point transfer (`ncclSend`, `ncclRecv`).
    P2p,
    /// Opens or closes an NCCL group (`ncclGroupStart`/`ncclGroupEnd`).
    NcclGroup,
    /// Creates NCCL communicators, or queries what creating one needs
    /// (`ncclGetVersion`, `ncclGetUniqueId`).
    CommInit,
    /// Destroys or aborts an NCCL communicator.
    CommEnd,
    // Streams and events: a create's handle comes back through the
    // out-pointer; a wait is on the device (the host goes on); a query
    // asks whether the work is done without waiting.
    StreamCreate,
    StreamDestroy,
    EventCreate,
    EventDestroy,
    StreamWaitEvent,
    Query,
    EventElapsed,
    /// Queues a host function on a stream.
    HostFunc,
    // Graph maintenance: update an executable graph in place, upload it
    // ahead of its launch, destroy either kind, read a stream's capture status.
    GraphUpdate,
    GraphUpload,
    GraphDestroy,
    GraphExecDestroy,
    CaptureQuery,
    /// Loads a module or library (handle through the out-pointer; the file
    /// name or the image says which): its kernels' launches are attributed to it.
    ModuleLoad,
    ModuleUnload,
    // Devices and contexts: create or retain (handle through the
    // out-pointer), destroy or release, make current, count, free/total memory.
    ContextCreate,
    ContextRelease,
    SetCurrent,
    DeviceCount,
    MemInfo,
    /// Reads state PyTorch reads around every operation (current device or
    /// context, last error, capture status): the `highrate` group.
    StateRead,
    /// Nothing the analyses look at (driver setup: `cuInit`, `cuGetProcAddress`).
    /// Kept last: the tests check that [`Role::ALL`] lists every role.
    Other,
}

impl Role {
    /// Every role, in declaration order.
    pub const ALL: [Role; 46] = [
        Role::Alloc,
        Role::Free,
        Role::Launch,
        Role::Copy,
        Role::StreamSync,
        Role::DeviceSync,
        Role::EventRecord,
        Role::EventSync,
        Role::CaptureBegin,
        Role::CaptureEnd,
        Role::GraphInstantiate,
        Role::GraphLaunch,
        Role::ModuleLookup,
        Role::Memset,
        Role::VirtualMemory,
        Role::Map,
        Role::Unmap,
        Role::HostAlloc,
        Role::HostFree,
        Role::Collective,
        Role::P2p,
        Role::NcclGroup,
        Role::CommInit,
        Role::CommEnd,
        Role::StreamCreate,
        Role::StreamDestroy,
        Role::EventCreate,
        Role::EventDestroy,
        Role::StreamWaitEvent,
        Role::Query,
        Role::EventElapsed,
        Role::HostFunc,
        Role::GraphUpdate,
        Role::GraphUpload,
        Role::GraphDestroy,
        Role::GraphExecDestroy,
        Role::CaptureQuery,
        Role::ModuleLoad,
        Role::ModuleUnload,
        Role::ContextCreate,
        Role::ContextRelease,
        Role::SetCurrent,
        Role::DeviceCount,
        Role::MemInfo,
        Role::StateRead,
        Role::Other,
    ];

    /// The `--functions` group that selects functions of this role (the
    /// setup functions of [`Role::Other`] go with `module`).
    pub const fn group(self) -> Group {
        match self {
            Role::Alloc | Role::Free => Group::Memory,
            Role::Launch => Group::Launch,
            Role::Copy => Group::Memcpy,
            Role::StreamSync | Role::DeviceSync | Role::EventRecord | Role::EventSync => Group::Sync,
            Role::CaptureBegin | Role::CaptureEnd | Role::GraphInstantiate | Role::GraphLaunch => Group::Graph,
            Role::ModuleLookup | Role::Other => Group::Module,
            Role::Memset => Group::Memset,
            Role::VirtualMemory | Role::Map | Role::Unmap => Group::Vmm,
            Role::HostAlloc | Role::HostFree => Group::HostMem,
            Role::Collective | Role::P2p | Role::NcclGroup | Role::CommInit | Role::CommEnd => Group::Nccl,
            Role::StreamCreate
            | Role::StreamDestroy
            | Role::EventCreate
            | Role::EventDestroy
            | Role::StreamWaitEvent
            | Role::Query
            | Role::EventElapsed => Group::Stream,
            Role::HostFunc => Group::Launch,
            Role::GraphUpdate
            | Role::GraphUpload
            | Role::GraphDestroy
            | Role::GraphExecDestroy
            | Role::CaptureQuery => Group::Graph,
            Role::ModuleLoad | Role::ModuleUnload => Group::Module,
            Role::ContextCreate | Role::ContextRelease | Role::SetCurrent | Role::DeviceCount | Role::MemInfo => {
                Group::Device
            }
            Role::StateRead => Group::HighRate,
        }
    }
}

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
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_role_once_in_order() {
        for (i, role) in Role::ALL.iter().enumerate() {
            assert_eq!(*role as usize, i, "{role:?}");
        }
        assert_eq!(Role::Other as usize, Role::ALL.len() - 1, "Other is declared last");
    }

    #[test]
    fn a_library_gets_the_rows_of_its_runtime_major_version() {
        let major = |name, layer, m| for_library(name, layer, m).map(|(_, s)| s.runtime_major);
        assert_eq!(major("cudaMemAdvise", Layer::Runtime, Some(12)), Some(Some(12)));
        assert_eq!(major("cudaMemAdvise", Layer::Runtime, Some(13)), Some(Some(13)));
        // An unknown version gets only the rows valid for every version.
        assert_eq!(major("cudaMemAdvise", Layer::Runtime, None), None);
        assert_eq!(major("cudaMalloc", Layer::Runtime, None), Some(None));
        assert_eq!(major("cudaMemAdvise_v2", Layer::Runtime, Some(13)), None, "gone in 13");
        assert_eq!(major("cuMemAdvise", Layer::Driver, None), Some(None));
        assert_eq!(major("cuMemAdvise", Layer::Runtime, Some(12)), None, "a driver name in a runtime");
    }

    #[test]
    fn every_role_has_a_function() {
        for role in Role::ALL {
            assert!(FUNCS.iter().any(|f| f.role == role), "no function has role {role:?}");
        }
    }

    /// The name rules the analyses used before roles (annotate, report
    /// steps/graphs/memory): every function's role must say the same.
    fn role_by_name_rules(f: &FuncSpec) -> Role {
        let n = f.name;
        if let Some(role) = exec::role_by_name(n) {
            return role;
        }
        match f.group {
            Group::Memory if f.out_arg != 0 => Role::Alloc,
            Group::Memory => Role::Free,
            Group::Launch => Role::Launch,
            Group::Memcpy => Role::Copy,
            Group::Memset => Role::Memset,
            Group::Vmm if n == "cuMemMap" => Role::Map,
            Group::Vmm if n == "cuMemUnmap" => Role::Unmap,
            Group::Vmm => Role::VirtualMemory,
            Group::HostMem if n.contains("Free") || n.contains("Unregister") => Role::HostFree,
            Group::HostMem => Role::HostAlloc,
            _ if n.contains("BeginCapture") => Role::CaptureBegin,
            _ if n.contains("EndCapture") => Role::CaptureEnd,
            _ if n.contains("GraphInstantiate") => Role::GraphInstantiate,
            _ if n.starts_with("cudaGraphLaunch") || n.starts_with("cuGraphLaunch") => Role::GraphLaunch,
            _ if n == "cudaDeviceSynchronize" || n == "cuCtxSynchronize" => Role::DeviceSync,
            _ if n.starts_with("cudaEventRecord") || n.starts_with("cuEventRecord") => Role::EventRecord,
            _ if n == "cudaEventSynchronize" || n == "cuEventSynchronize" => Role::EventSync,
            Group::Sync => Role::StreamSync,
            _ if matches!(n, "cuModuleGetFunction" | "cuLibraryGetKernel" | "cuKernelGetFunction") => {
                Role::ModuleLookup
            }
            Group::Nccl => nccl_role_by_name(n),
            _ => Role::Other,
        }
    }

    fn nccl_role_by_name(n: &str) -> Role {
        match n {
            "ncclSend" | "ncclRecv" => Role::P2p,
            "ncclGroupStart" | "ncclGroupEnd" => Role::NcclGroup,
            "ncclCommDestroy" | "ncclCommAbort" => Role::CommEnd,
            _ if n.starts_with("ncclCommInit") || n.starts_with("ncclGet") => Role::CommInit,
            _ => Role::Collective,
        }
    }

    #[test]
    fn nccl_functions_are_the_nccl_layer_and_group() {
        for f in FUNCS {
            assert_eq!(f.layer == Layer::Nccl, f.group == Group::Nccl, "{}", f.name);
            assert_eq!(f.layer == Layer::Nccl, f.name.starts_with("nccl"), "{}", f.name);
        }
    }

    #[test]
    fn every_function_has_the_role_its_name_rules_gave() {
        for f in FUNCS {
            assert_eq!(f.role, role_by_name_rules(f), "{}", f.name);
            assert_eq!(f.group, f.role.group(), "{}", f.name);
        }
    }

    #[test]
    fn roles_carry_what_their_readers_take_from_the_row() {
        for f in FUNCS {
            match f.role {
                // The annotator reads the kernel handle at the first argument's word.
                Role::Launch => {
                    let handle = f.args[0];
                    assert!(matches!((handle.name, handle.fmt), ("f" | "func", Fmt::Hex)), "{}", f.name);
                }
                // A lookup by name is one whose probe copies the name.
                Role::ModuleLookup => assert_eq!(
                    f.str_arg != 0,
                    matches!(f.name, "cuModuleGetFunction" | "cuLibraryGetKernel"),
                    "{}",
                    f.name
                ),
                _ => {}
            }
            // Steps took a driver copy's direction from its name.
            assert_eq!(f.fixed_copy_kind() == Some("DtoH"), f.name.starts_with("cuMemcpyDtoH"), "{}", f.name);
        }
    }
}
