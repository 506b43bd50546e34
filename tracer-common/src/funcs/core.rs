//! The core rows of the function table: launches, device memory, the basic
//! copies, synchronization, graph capture and replay, kernel lookup.

use super::Fmt::*;
use super::Layer::*;
use super::Role::*;
use super::{a, deref, f, stack, string, ArgSpec, FuncSpec};

pub(super) const NONE: &[ArgSpec] = &[];
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
pub(super) const CU_LAUNCH: &[ArgSpec] =
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
pub(super) const STREAM: &[ArgSpec] = &[a("stream", Hex, 0)];
const EVENT_RECORD: &[ArgSpec] = &[a("event", Hex, 0), a("stream", Hex, 1)];
pub(super) const EVENT: &[ArgSpec] = &[a("event", Hex, 0)];
const BEGIN_CAPTURE: &[ArgSpec] = &[a("stream", Hex, 0), a("mode", U32, 1)];
const END_CAPTURE: &[ArgSpec] = &[a("stream", Hex, 0), a("graph", Out, 1)];
const INSTANTIATE: &[ArgSpec] = &[a("graph", Hex, 1), a("exec", Out, 0), a("flags", U64, 2)];
pub(super) const GRAPH_LAUNCH: &[ArgSpec] = &[a("exec", Hex, 0), a("stream", Hex, 1)];
const MEMCPY: &[ArgSpec] = &[a("dst", Hex, 0), a("src", Hex, 1), a("bytes", U64, 2), a("kind", MemcpyKind, 3)];
const MEMCPY_ASYNC: &[ArgSpec] =
    &[a("dst", Hex, 0), a("src", Hex, 1), a("bytes", U64, 2), a("kind", MemcpyKind, 3), a("stream", Hex, 4)];
pub(super) const CUDA_LAUNCH: &[ArgSpec] =
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

/// The first rows of the table: the functions traced since the first release.
/// Their ids never change, so they stay first.
pub(super) const ROWS: &[FuncSpec] = &[
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
