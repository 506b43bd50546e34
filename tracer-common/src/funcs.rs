//! The table of traced CUDA entry points: names, layer, role, how the probes
//! read their arguments and how userspace decodes them.
//!
//! A function's id is its index in [`FUNCS`]; ids travel in BPF cookies and
//! ring-buffer records, so the table is the single source of truth for both
//! sides. Names are the bare exported names; versioned dynamic symbols
//! (`cudaLaunchKernel@@libcudart.so.12`) match their bare name.

/// Which library exports the function; also the `type` field of a trace line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    /// `libcuda.so.1`: `type` = `cuda_api`.
    Driver,
    /// `libcudart.so.*`: `type` = `cuda_runtime`.
    Runtime,
}

impl Layer {
    /// The seed's `type` value.
    pub const fn type_name(self) -> &'static str {
        match self {
            Layer::Driver => "cuda_api",
            Layer::Runtime => "cuda_runtime",
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
}

impl Group {
    pub const ALL: [Group; 6] = [Group::Launch, Group::Memory, Group::Memcpy, Group::Sync, Group::Graph, Group::Module];

    pub const fn name(self) -> &'static str {
        match self {
            Group::Launch => "launch",
            Group::Memory => "memory",
            Group::Memcpy => "memcpy",
            Group::Sync => "sync",
            Group::Graph => "graph",
            Group::Module => "module",
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
    /// Nothing the analyses look at (driver setup: `cuInit`, `cuGetProcAddress`).
    /// Kept last: the tests check that [`Role::ALL`] lists every role.
    Other,
}

impl Role {
    /// Every role, in declaration order.
    pub const ALL: [Role; 14] = [
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
}

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
    pub args: &'static [ArgSpec],
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
        }
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

const fn a(name: &'static str, fmt: Fmt, word: u8) -> ArgSpec {
    ArgSpec { name, fmt, word }
}

const fn f(name: &'static str, layer: Layer, role: Role, out_arg: u8, args: &'static [ArgSpec]) -> FuncSpec {
    FuncSpec { name, layer, role, group: role.group(), stack: false, out_arg, deref_arg: 0, str_arg: 0, args }
}

/// Reads the struct that argument `arg` (1-based) points to at entry.
const fn deref(arg: u8, spec: FuncSpec) -> FuncSpec {
    FuncSpec { deref_arg: arg, ..spec }
}

/// Reads the string argument `arg` (1-based) at entry.
const fn string(arg: u8, spec: FuncSpec) -> FuncSpec {
    FuncSpec { str_arg: arg, ..spec }
}

const fn stack(spec: FuncSpec) -> FuncSpec {
    FuncSpec { stack: true, ..spec }
}

use Fmt::*;
use Layer::*;
use Role::*;

const NONE: &[ArgSpec] = &[];
const INIT: &[ArgSpec] = &[a("flags", U32, 0)];
const PROC_ADDR: &[ArgSpec] = &[a("symbol", Str, 0), a("version", U32, 2), a("flags", U64, 3)];
const ALLOC: &[ArgSpec] = &[a("bytes", U64, 1), a("dptr", Out, 0)];
const ALLOC_MANAGED: &[ArgSpec] = &[a("bytes", U64, 1), a("dptr", Out, 0), a("flags", U32, 2)];
const ALLOC_ASYNC: &[ArgSpec] = &[a("bytes", U64, 1), a("dptr", Out, 0), a("stream", Hex, 2)];
const ALLOC_POOL: &[ArgSpec] = &[a("bytes", U64, 1), a("dptr", Out, 0), a("pool", Hex, 2), a("stream", Hex, 3)];
const FREE: &[ArgSpec] = &[a("dptr", Hex, 0)];
const FREE_ASYNC: &[ArgSpec] = &[a("dptr", Hex, 0), a("stream", Hex, 1)];
const HTOD: &[ArgSpec] = &[a("dst", Hex, 0), a("src", Hex, 1), a("bytes", U64, 2), a("kind", Const("HtoD"), 0)];
const DTOH: &[ArgSpec] = &[a("dst", Hex, 0), a("src", Hex, 1), a("bytes", U64, 2), a("kind", Const("DtoH"), 0)];
const DTOD: &[ArgSpec] = &[a("dst", Hex, 0), a("src", Hex, 1), a("bytes", U64, 2), a("kind", Const("DtoD"), 0)];
const HTOD_ASYNC: &[ArgSpec] =
    &[a("dst", Hex, 0), a("src", Hex, 1), a("bytes", U64, 2), a("kind", Const("HtoD"), 0), a("stream", Hex, 3)];
const DTOH_ASYNC: &[ArgSpec] =
    &[a("dst", Hex, 0), a("src", Hex, 1), a("bytes", U64, 2), a("kind", Const("DtoH"), 0), a("stream", Hex, 3)];
const CU_LAUNCH: &[ArgSpec] =
    &[a("f", Hex, 0), a("grid", Dim3Words, 1), a("block", Dim3Words, 4), a("shared_mem", U32, 7), a("stream", Hex, 8)];
// CUlaunchConfig copied into words 6..: gridDimX..Z, blockDimX..Z,
// sharedMemBytes as 32-bit fields 12..18, hStream at byte 32 (word 10).
const CU_LAUNCH_EX: &[ArgSpec] = &[
    a("f", Hex, 1),
    a("grid", Dim3U32, 12),
    a("block", Dim3U32, 15),
    a("shared_mem", U32At, 18),
    a("stream", Hex, 10),
];
const MODULE_GET_FUNCTION: &[ArgSpec] = &[a("module", Hex, 1), a("name", Str, 0), a("f", Out, 0)];
const LIBRARY_GET_KERNEL: &[ArgSpec] = &[a("library", Hex, 1), a("name", Str, 0), a("kernel", Out, 0)];
const KERNEL_GET_FUNCTION: &[ArgSpec] = &[a("kernel", Hex, 1), a("f", Out, 0)];
const STREAM: &[ArgSpec] = &[a("stream", Hex, 0)];
const EVENT_RECORD: &[ArgSpec] = &[a("event", Hex, 0), a("stream", Hex, 1)];
const EVENT: &[ArgSpec] = &[a("event", Hex, 0)];
const BEGIN_CAPTURE: &[ArgSpec] = &[a("stream", Hex, 0), a("mode", U32, 1)];
const END_CAPTURE: &[ArgSpec] = &[a("stream", Hex, 0), a("graph", Out, 1)];
const INSTANTIATE: &[ArgSpec] = &[a("graph", Hex, 1), a("exec", Out, 0), a("flags", U64, 2)];
const GRAPH_LAUNCH: &[ArgSpec] = &[a("exec", Hex, 0), a("stream", Hex, 1)];
const MEMCPY: &[ArgSpec] = &[a("dst", Hex, 0), a("src", Hex, 1), a("bytes", U64, 2), a("kind", MemcpyKind, 3)];
const MEMCPY_ASYNC: &[ArgSpec] =
    &[a("dst", Hex, 0), a("src", Hex, 1), a("bytes", U64, 2), a("kind", MemcpyKind, 3), a("stream", Hex, 4)];
const CUDA_LAUNCH: &[ArgSpec] =
    &[a("func", Hex, 0), a("grid", Dim3Regs, 1), a("block", Dim3Regs, 3), a("shared_mem", U64, 6), a("stream", Hex, 7)];
// cudaLaunchConfig_t copied into words 6..: gridDim, blockDim as 32-bit
// fields 12..17, dynamicSmemBytes at byte 24 (word 9), stream at byte 32.
const CUDA_LAUNCH_EX: &[ArgSpec] = &[
    a("func", Hex, 1),
    a("grid", Dim3U32, 12),
    a("block", Dim3U32, 15),
    a("shared_mem", U64, 9),
    a("stream", Hex, 10),
];

/// Every traced entry point; the index is the function id.
pub const FUNCS: &[FuncSpec] = &[
    // Driver API (libcuda.so.1).
    f("cuInit", Driver, Other, 0, INIT),
    string(1, f("cuGetProcAddress_v2", Driver, Other, 0, PROC_ADDR)),
    f("cuMemAlloc_v2", Driver, Alloc, 1, ALLOC),
    f("cuMemAlloc", Driver, Alloc, 1, ALLOC),
    f("cuMemAllocManaged", Driver, Alloc, 1, ALLOC_MANAGED),
    f("cuMemAllocAsync", Driver, Alloc, 1, ALLOC_ASYNC),
    f("cuMemAllocAsync_ptsz", Driver, Alloc, 1, ALLOC_ASYNC),
    f("cuMemAllocFromPoolAsync", Driver, Alloc, 1, ALLOC_POOL),
    f("cuMemAllocFromPoolAsync_ptsz", Driver, Alloc, 1, ALLOC_POOL),
    f("cuMemFree_v2", Driver, Free, 0, FREE),
    f("cuMemFreeAsync", Driver, Free, 0, FREE_ASYNC),
    f("cuMemFreeAsync_ptsz", Driver, Free, 0, FREE_ASYNC),
    f("cuMemcpyHtoD_v2", Driver, Copy, 0, HTOD),
    f("cuMemcpyDtoH_v2", Driver, Copy, 0, DTOH),
    f("cuMemcpyDtoD_v2", Driver, Copy, 0, DTOD),
    f("cuMemcpyHtoDAsync_v2", Driver, Copy, 0, HTOD_ASYNC),
    f("cuMemcpyHtoDAsync_v2_ptsz", Driver, Copy, 0, HTOD_ASYNC),
    f("cuMemcpyDtoHAsync_v2", Driver, Copy, 0, DTOH_ASYNC),
    f("cuMemcpyDtoHAsync_v2_ptsz", Driver, Copy, 0, DTOH_ASYNC),
    stack(f("cuLaunchKernel", Driver, Launch, 0, CU_LAUNCH)),
    stack(f("cuLaunchKernel_ptsz", Driver, Launch, 0, CU_LAUNCH)),
    deref(1, f("cuLaunchKernelEx", Driver, Launch, 0, CU_LAUNCH_EX)),
    deref(1, f("cuLaunchKernelEx_ptsz", Driver, Launch, 0, CU_LAUNCH_EX)),
    string(3, f("cuModuleGetFunction", Driver, ModuleLookup, 1, MODULE_GET_FUNCTION)),
    string(3, f("cuLibraryGetKernel", Driver, ModuleLookup, 1, LIBRARY_GET_KERNEL)),
    f("cuKernelGetFunction", Driver, ModuleLookup, 1, KERNEL_GET_FUNCTION),
    f("cuStreamSynchronize", Driver, StreamSync, 0, STREAM),
    f("cuStreamSynchronize_ptsz", Driver, StreamSync, 0, STREAM),
    f("cuCtxSynchronize", Driver, DeviceSync, 0, NONE),
    f("cuEventRecord", Driver, EventRecord, 0, EVENT_RECORD),
    f("cuEventRecord_ptsz", Driver, EventRecord, 0, EVENT_RECORD),
    f("cuEventSynchronize", Driver, EventSync, 0, EVENT),
    f("cuStreamBeginCapture_v2", Driver, CaptureBegin, 0, BEGIN_CAPTURE),
    f("cuStreamBeginCapture_v2_ptsz", Driver, CaptureBegin, 0, BEGIN_CAPTURE),
    f("cuStreamEndCapture", Driver, CaptureEnd, 2, END_CAPTURE),
    f("cuStreamEndCapture_ptsz", Driver, CaptureEnd, 2, END_CAPTURE),
    f("cuGraphInstantiateWithFlags", Driver, GraphInstantiate, 1, INSTANTIATE),
    f("cuGraphLaunch", Driver, GraphLaunch, 0, GRAPH_LAUNCH),
    f("cuGraphLaunch_ptsz", Driver, GraphLaunch, 0, GRAPH_LAUNCH),
    // Runtime API (libcudart.so.*).
    f("cudaMalloc", Runtime, Alloc, 1, ALLOC),
    f("cudaFree", Runtime, Free, 0, FREE),
    f("cudaMallocAsync", Runtime, Alloc, 1, ALLOC_ASYNC),
    f("cudaMallocAsync_ptsz", Runtime, Alloc, 1, ALLOC_ASYNC),
    f("cudaFreeAsync", Runtime, Free, 0, FREE_ASYNC),
    f("cudaFreeAsync_ptsz", Runtime, Free, 0, FREE_ASYNC),
    f("cudaMemcpy", Runtime, Copy, 0, MEMCPY),
    f("cudaMemcpy_ptds", Runtime, Copy, 0, MEMCPY),
    f("cudaMemcpyAsync", Runtime, Copy, 0, MEMCPY_ASYNC),
    f("cudaMemcpyAsync_ptsz", Runtime, Copy, 0, MEMCPY_ASYNC),
    stack(f("cudaLaunchKernel", Runtime, Launch, 0, CUDA_LAUNCH)),
    stack(f("cudaLaunchKernel_ptsz", Runtime, Launch, 0, CUDA_LAUNCH)),
    deref(1, f("cudaLaunchKernelExC", Runtime, Launch, 0, CUDA_LAUNCH_EX)),
    deref(1, f("cudaLaunchKernelExC_ptsz", Runtime, Launch, 0, CUDA_LAUNCH_EX)),
    f("cudaGraphLaunch", Runtime, GraphLaunch, 0, GRAPH_LAUNCH),
    f("cudaGraphLaunch_ptsz", Runtime, GraphLaunch, 0, GRAPH_LAUNCH),
    f("cudaGraphInstantiate", Runtime, GraphInstantiate, 1, INSTANTIATE),
    f("cudaGraphInstantiateWithFlags", Runtime, GraphInstantiate, 1, INSTANTIATE),
    f("cudaStreamBeginCapture", Runtime, CaptureBegin, 0, BEGIN_CAPTURE),
    f("cudaStreamBeginCapture_ptsz", Runtime, CaptureBegin, 0, BEGIN_CAPTURE),
    f("cudaStreamEndCapture", Runtime, CaptureEnd, 2, END_CAPTURE),
    f("cudaStreamEndCapture_ptsz", Runtime, CaptureEnd, 2, END_CAPTURE),
    f("cudaStreamSynchronize", Runtime, StreamSync, 0, STREAM),
    f("cudaStreamSynchronize_ptsz", Runtime, StreamSync, 0, STREAM),
    f("cudaDeviceSynchronize", Runtime, DeviceSync, 0, NONE),
    f("cudaEventRecord", Runtime, EventRecord, 0, EVENT_RECORD),
    f("cudaEventRecord_ptsz", Runtime, EventRecord, 0, EVENT_RECORD),
    f("cudaEventSynchronize", Runtime, EventSync, 0, EVENT),
];

/// Looks a function up by its bare exported name.
pub fn by_name(name: &str) -> Option<(u16, &'static FuncSpec)> {
    FUNCS.iter().enumerate().find(|(_, s)| s.name == name).map(|(i, s)| (i as u16, s))
}

/// Looks a function up by id, as carried in a record.
pub fn by_id(id: u32) -> Option<&'static FuncSpec> {
    FUNCS.get(id as usize)
}

// Ids must fit the cookie's 16 bits and argument words the record.
const _: () = assert!(FUNCS.len() < u16::MAX as usize);
const _: () = assert!(FUNCS.len() <= crate::abi::drop_slot::FUNC_SLOTS as usize);

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
    fn every_role_has_a_function() {
        for role in Role::ALL {
            assert!(FUNCS.iter().any(|f| f.role == role), "no function has role {role:?}");
        }
    }

    /// The name rules the analyses used before roles (annotate, report
    /// steps/graphs/memory): every function's role must say the same.
    fn role_by_name_rules(f: &FuncSpec) -> Role {
        let n = f.name;
        match f.group {
            Group::Memory if f.out_arg != 0 => Role::Alloc,
            Group::Memory => Role::Free,
            Group::Launch => Role::Launch,
            Group::Memcpy => Role::Copy,
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
            _ => Role::Other,
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
