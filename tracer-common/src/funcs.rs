//! The table of traced CUDA entry points: names, layer, group, how the probes
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
}

const fn a(name: &'static str, fmt: Fmt, word: u8) -> ArgSpec {
    ArgSpec { name, fmt, word }
}

const fn f(name: &'static str, layer: Layer, group: Group, out_arg: u8, args: &'static [ArgSpec]) -> FuncSpec {
    FuncSpec { name, layer, group, stack: false, out_arg, deref_arg: 0, str_arg: 0, args }
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
use Group::*;
use Layer::*;

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
    f("cuInit", Driver, Module, 0, INIT),
    string(1, f("cuGetProcAddress_v2", Driver, Module, 0, PROC_ADDR)),
    f("cuMemAlloc_v2", Driver, Memory, 1, ALLOC),
    f("cuMemAlloc", Driver, Memory, 1, ALLOC),
    f("cuMemAllocManaged", Driver, Memory, 1, ALLOC_MANAGED),
    f("cuMemAllocAsync", Driver, Memory, 1, ALLOC_ASYNC),
    f("cuMemAllocAsync_ptsz", Driver, Memory, 1, ALLOC_ASYNC),
    f("cuMemAllocFromPoolAsync", Driver, Memory, 1, ALLOC_POOL),
    f("cuMemAllocFromPoolAsync_ptsz", Driver, Memory, 1, ALLOC_POOL),
    f("cuMemFree_v2", Driver, Memory, 0, FREE),
    f("cuMemFreeAsync", Driver, Memory, 0, FREE_ASYNC),
    f("cuMemFreeAsync_ptsz", Driver, Memory, 0, FREE_ASYNC),
    f("cuMemcpyHtoD_v2", Driver, Memcpy, 0, HTOD),
    f("cuMemcpyDtoH_v2", Driver, Memcpy, 0, DTOH),
    f("cuMemcpyDtoD_v2", Driver, Memcpy, 0, DTOD),
    f("cuMemcpyHtoDAsync_v2", Driver, Memcpy, 0, HTOD_ASYNC),
    f("cuMemcpyHtoDAsync_v2_ptsz", Driver, Memcpy, 0, HTOD_ASYNC),
    f("cuMemcpyDtoHAsync_v2", Driver, Memcpy, 0, DTOH_ASYNC),
    f("cuMemcpyDtoHAsync_v2_ptsz", Driver, Memcpy, 0, DTOH_ASYNC),
    stack(f("cuLaunchKernel", Driver, Launch, 0, CU_LAUNCH)),
    stack(f("cuLaunchKernel_ptsz", Driver, Launch, 0, CU_LAUNCH)),
    deref(1, f("cuLaunchKernelEx", Driver, Launch, 0, CU_LAUNCH_EX)),
    deref(1, f("cuLaunchKernelEx_ptsz", Driver, Launch, 0, CU_LAUNCH_EX)),
    string(3, f("cuModuleGetFunction", Driver, Module, 1, MODULE_GET_FUNCTION)),
    string(3, f("cuLibraryGetKernel", Driver, Module, 1, LIBRARY_GET_KERNEL)),
    f("cuKernelGetFunction", Driver, Module, 1, KERNEL_GET_FUNCTION),
    f("cuStreamSynchronize", Driver, Sync, 0, STREAM),
    f("cuStreamSynchronize_ptsz", Driver, Sync, 0, STREAM),
    f("cuCtxSynchronize", Driver, Sync, 0, NONE),
    f("cuEventRecord", Driver, Sync, 0, EVENT_RECORD),
    f("cuEventRecord_ptsz", Driver, Sync, 0, EVENT_RECORD),
    f("cuEventSynchronize", Driver, Sync, 0, EVENT),
    f("cuStreamBeginCapture_v2", Driver, Graph, 0, BEGIN_CAPTURE),
    f("cuStreamBeginCapture_v2_ptsz", Driver, Graph, 0, BEGIN_CAPTURE),
    f("cuStreamEndCapture", Driver, Graph, 2, END_CAPTURE),
    f("cuStreamEndCapture_ptsz", Driver, Graph, 2, END_CAPTURE),
    f("cuGraphInstantiateWithFlags", Driver, Graph, 1, INSTANTIATE),
    f("cuGraphLaunch", Driver, Graph, 0, GRAPH_LAUNCH),
    f("cuGraphLaunch_ptsz", Driver, Graph, 0, GRAPH_LAUNCH),
    // Runtime API (libcudart.so.*).
    f("cudaMalloc", Runtime, Memory, 1, ALLOC),
    f("cudaFree", Runtime, Memory, 0, FREE),
    f("cudaMallocAsync", Runtime, Memory, 1, ALLOC_ASYNC),
    f("cudaMallocAsync_ptsz", Runtime, Memory, 1, ALLOC_ASYNC),
    f("cudaFreeAsync", Runtime, Memory, 0, FREE_ASYNC),
    f("cudaFreeAsync_ptsz", Runtime, Memory, 0, FREE_ASYNC),
    f("cudaMemcpy", Runtime, Memcpy, 0, MEMCPY),
    f("cudaMemcpy_ptds", Runtime, Memcpy, 0, MEMCPY),
    f("cudaMemcpyAsync", Runtime, Memcpy, 0, MEMCPY_ASYNC),
    f("cudaMemcpyAsync_ptsz", Runtime, Memcpy, 0, MEMCPY_ASYNC),
    stack(f("cudaLaunchKernel", Runtime, Launch, 0, CUDA_LAUNCH)),
    stack(f("cudaLaunchKernel_ptsz", Runtime, Launch, 0, CUDA_LAUNCH)),
    deref(1, f("cudaLaunchKernelExC", Runtime, Launch, 0, CUDA_LAUNCH_EX)),
    deref(1, f("cudaLaunchKernelExC_ptsz", Runtime, Launch, 0, CUDA_LAUNCH_EX)),
    f("cudaGraphLaunch", Runtime, Graph, 0, GRAPH_LAUNCH),
    f("cudaGraphLaunch_ptsz", Runtime, Graph, 0, GRAPH_LAUNCH),
    f("cudaGraphInstantiate", Runtime, Graph, 1, INSTANTIATE),
    f("cudaGraphInstantiateWithFlags", Runtime, Graph, 1, INSTANTIATE),
    f("cudaStreamBeginCapture", Runtime, Graph, 0, BEGIN_CAPTURE),
    f("cudaStreamBeginCapture_ptsz", Runtime, Graph, 0, BEGIN_CAPTURE),
    f("cudaStreamEndCapture", Runtime, Graph, 2, END_CAPTURE),
    f("cudaStreamEndCapture_ptsz", Runtime, Graph, 2, END_CAPTURE),
    f("cudaStreamSynchronize", Runtime, Sync, 0, STREAM),
    f("cudaStreamSynchronize_ptsz", Runtime, Sync, 0, STREAM),
    f("cudaDeviceSynchronize", Runtime, Sync, 0, NONE),
    f("cudaEventRecord", Runtime, Sync, 0, EVENT_RECORD),
    f("cudaEventRecord_ptsz", Runtime, Sync, 0, EVENT_RECORD),
    f("cudaEventSynchronize", Runtime, Sync, 0, EVENT),
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
