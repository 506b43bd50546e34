//! Rows for the memory families: memset, 2D/3D/peer/batch copies, virtual
//! memory (`cuMemCreate`/`cuMemMap`/...) and pinned host memory.
//!
//! Signatures are CUDA 12's. Where CUDA 13 changed one behind the same name
//! (`cudaMemcpyBatchAsync` lost `failIdx`, so its stream moved a word) each
//! runtime major has its row; the driver's 13 form has its own name
//! (`cuMemcpyBatchAsync_v2`) and its own row.

use super::Fmt::*;
use super::Layer::*;
use super::Role::*;
use super::{a, deref_from, f, only_major, stack, ArgSpec, FuncSpec};

const MEMSET_D: &[ArgSpec] = &[a("dst", Hex, 0), a("value", U32, 1), a("count", U64, 2)];
const MEMSET_D_ASYNC: &[ArgSpec] = &[a("dst", Hex, 0), a("value", U32, 1), a("count", U64, 2), a("stream", Hex, 3)];
const MEMSET: &[ArgSpec] = &[a("dst", Hex, 0), a("value", U32, 1), a("bytes", U64, 2)];
const MEMSET_ASYNC: &[ArgSpec] = &[a("dst", Hex, 0), a("value", U32, 1), a("bytes", U64, 2), a("stream", Hex, 3)];
const CU_MEMCPY: &[ArgSpec] = &[a("dst", Hex, 0), a("src", Hex, 1), a("bytes", U64, 2)];
const CU_MEMCPY_ASYNC: &[ArgSpec] = &[a("dst", Hex, 0), a("src", Hex, 1), a("bytes", U64, 2), a("stream", Hex, 3)];
// CUDA_MEMCPY2D copied from word 10 (byte 80): dstHost, dstDevice, dstArray,
// dstPitch, WidthInBytes, Height. The memory types (bytes 16 and 72) are
// outside the window: a driver 2D copy has no direction.
const CU_MEMCPY_2D: &[ArgSpec] = &[a("bytes", Product(2), 10)];
const CU_MEMCPY_2D_ASYNC: &[ArgSpec] = &[a("bytes", Product(2), 10), a("stream", Hex, 1)];
// CUDA_MEMCPY3D copied from word 19 (byte 152): reserved1, dstPitch,
// dstHeight, WidthInBytes, Height, Depth.
const CU_MEMCPY_3D: &[ArgSpec] = &[a("bytes", Product(3), 9)];
const CU_MEMCPY_3D_ASYNC: &[ArgSpec] = &[a("bytes", Product(3), 9), a("stream", Hex, 1)];
// Peer copies: (dst, dst context or device, src, src context or device, bytes[, stream]).
const PEER_ENDS_CTX: [ArgSpec; 4] = [a("dst", Hex, 0), a("dst_ctx", Hex, 1), a("src", Hex, 2), a("src_ctx", Hex, 3)];
const PEER_ENDS_DEV: [ArgSpec; 4] =
    [a("dst", Hex, 0), a("dst_device", U32, 1), a("src", Hex, 2), a("src_device", U32, 3)];
const PEER_BYTES: [ArgSpec; 2] = [a("bytes", U64, 4), a("kind", Const("DtoD"), 0)];
const CU_PEER: [ArgSpec; 6] = cat(PEER_ENDS_CTX, PEER_BYTES);
const CU_PEER_ASYNC: [ArgSpec; 7] = cat(CU_PEER, [a("stream", Hex, 5)]);
const PEER: [ArgSpec; 6] = cat(PEER_ENDS_DEV, PEER_BYTES);
const PEER_ASYNC: [ArgSpec; 7] = cat(PEER, [a("stream", Hex, 5)]);
// (dsts, srcs, sizes, count, attrs, attrsIdxs, numAttrs, failIdx, stream):
// the sizes are an array, so a batch has a count, not bytes.
const BATCH_12: &[ArgSpec] = &[a("count", U64, 3), a("stream", Hex, 8)];
// CUDA 13 dropped failIdx.
const BATCH_13: &[ArgSpec] = &[a("count", U64, 3), a("stream", Hex, 7)];
const PITCHED: [ArgSpec; 4] = [a("dst", Hex, 0), a("dpitch", U64, 1), a("src", Hex, 2), a("spitch", U64, 3)];
const MEMCPY_2D: [ArgSpec; 6] = cat(PITCHED, [a("bytes", Product(2), 4), a("kind", MemcpyKind, 6)]);
const MEMCPY_2D_ASYNC: [ArgSpec; 7] = cat(MEMCPY_2D, [a("stream", Hex, 7)]);
// cudaMemcpy3DParms copied from word 14 (byte 112): dstPtr.xsize,
// dstPtr.ysize, extent.width, height, depth, kind.
const MEMCPY_3D: &[ArgSpec] = &[a("bytes", Product(3), 8), a("kind", MemcpyKind, 11)];
const MEMCPY_3D_ASYNC: &[ArgSpec] = &[a("bytes", Product(3), 8), a("kind", MemcpyKind, 11), a("stream", Hex, 1)];
const RESERVE: &[ArgSpec] =
    &[a("dptr", Out, 0), a("bytes", U64, 1), a("alignment", U64, 2), a("addr", Hex, 3), a("flags", U64, 4)];
const RANGE: &[ArgSpec] = &[a("dptr", Hex, 0), a("bytes", U64, 1)];
const CREATE: &[ArgSpec] = &[a("handle", Out, 0), a("bytes", U64, 1), a("prop", Hex, 2), a("flags", U64, 3)];
const RELEASE: &[ArgSpec] = &[a("handle", Hex, 0)];
const MAP: &[ArgSpec] =
    &[a("dptr", Hex, 0), a("bytes", U64, 1), a("offset", U64, 2), a("handle", Hex, 3), a("flags", U64, 4)];
const SET_ACCESS: &[ArgSpec] = &[a("dptr", Hex, 0), a("bytes", U64, 1), a("desc", Hex, 2), a("count", U64, 3)];
const HOST_ALLOC: &[ArgSpec] = &[a("ptr", Out, 0), a("bytes", U64, 1), a("flags", U32, 2)];
const HOST_MALLOC: &[ArgSpec] = &[a("ptr", Out, 0), a("bytes", U64, 1)];
// The pre-3.2 cuMemAllocHost takes an `unsigned int` size.
const HOST_MALLOC_V1: &[ArgSpec] = &[a("ptr", Out, 0), a("bytes", U32, 1)];
const HOST_REGISTER: &[ArgSpec] = &[a("ptr", Hex, 0), a("bytes", U64, 1), a("flags", U32, 2)];
const HOST_FREE: &[ArgSpec] = &[a("ptr", Hex, 0)];

/// `x` then `y` (`M` must be `N + K`: checked at compile time).
const fn cat<const N: usize, const K: usize, const M: usize>(x: [ArgSpec; N], y: [ArgSpec; K]) -> [ArgSpec; M] {
    assert!(N + K == M, "cat: M must be N + K");
    let mut out = [a("", U64, 0); M];
    let mut i = 0;
    while i < M {
        out[i] = if i < N { x[i] } else { y[i - N] };
        i += 1;
    }
    out
}

pub(super) const ROWS: &[FuncSpec] = &[
    // Driver memset (`_v2_ptds`: per-thread default stream).
    f("cuMemsetD8_v2", Driver, Memset, 0, MEMSET_D),
    f("cuMemsetD8_v2_ptds", Driver, Memset, 0, MEMSET_D),
    f("cuMemsetD16_v2", Driver, Memset, 0, MEMSET_D),
    f("cuMemsetD16_v2_ptds", Driver, Memset, 0, MEMSET_D),
    f("cuMemsetD32_v2", Driver, Memset, 0, MEMSET_D),
    f("cuMemsetD32_v2_ptds", Driver, Memset, 0, MEMSET_D),
    f("cuMemsetD8Async", Driver, Memset, 0, MEMSET_D_ASYNC),
    f("cuMemsetD8Async_ptsz", Driver, Memset, 0, MEMSET_D_ASYNC),
    f("cuMemsetD16Async", Driver, Memset, 0, MEMSET_D_ASYNC),
    f("cuMemsetD16Async_ptsz", Driver, Memset, 0, MEMSET_D_ASYNC),
    f("cuMemsetD32Async", Driver, Memset, 0, MEMSET_D_ASYNC),
    f("cuMemsetD32Async_ptsz", Driver, Memset, 0, MEMSET_D_ASYNC),
    // Driver copies.
    f("cuMemcpy", Driver, Copy, 0, CU_MEMCPY),
    f("cuMemcpy_ptds", Driver, Copy, 0, CU_MEMCPY),
    f("cuMemcpyAsync", Driver, Copy, 0, CU_MEMCPY_ASYNC),
    f("cuMemcpyAsync_ptsz", Driver, Copy, 0, CU_MEMCPY_ASYNC),
    deref_from(1, 10, f("cuMemcpy2D_v2", Driver, Copy, 0, CU_MEMCPY_2D)),
    deref_from(1, 10, f("cuMemcpy2D_v2_ptds", Driver, Copy, 0, CU_MEMCPY_2D)),
    deref_from(1, 10, f("cuMemcpy2DAsync_v2", Driver, Copy, 0, CU_MEMCPY_2D_ASYNC)),
    deref_from(1, 10, f("cuMemcpy2DAsync_v2_ptsz", Driver, Copy, 0, CU_MEMCPY_2D_ASYNC)),
    deref_from(1, 19, f("cuMemcpy3D_v2", Driver, Copy, 0, CU_MEMCPY_3D)),
    deref_from(1, 19, f("cuMemcpy3D_v2_ptds", Driver, Copy, 0, CU_MEMCPY_3D)),
    deref_from(1, 19, f("cuMemcpy3DAsync_v2", Driver, Copy, 0, CU_MEMCPY_3D_ASYNC)),
    deref_from(1, 19, f("cuMemcpy3DAsync_v2_ptsz", Driver, Copy, 0, CU_MEMCPY_3D_ASYNC)),
    f("cuMemcpyPeer", Driver, Copy, 0, &CU_PEER),
    f("cuMemcpyPeer_ptds", Driver, Copy, 0, &CU_PEER),
    f("cuMemcpyPeerAsync", Driver, Copy, 0, &CU_PEER_ASYNC),
    f("cuMemcpyPeerAsync_ptsz", Driver, Copy, 0, &CU_PEER_ASYNC),
    stack(f("cuMemcpyBatchAsync", Driver, Copy, 0, BATCH_12)),
    stack(f("cuMemcpyBatchAsync_ptsz", Driver, Copy, 0, BATCH_12)),
    stack(f("cuMemcpyBatchAsync_v2", Driver, Copy, 0, BATCH_13)),
    stack(f("cuMemcpyBatchAsync_v2_ptsz", Driver, Copy, 0, BATCH_13)),
    // Driver virtual memory: a mapping is live from cuMemMap to cuMemUnmap.
    f("cuMemAddressReserve", Driver, VirtualMemory, 1, RESERVE),
    f("cuMemAddressFree", Driver, VirtualMemory, 0, RANGE),
    f("cuMemCreate", Driver, VirtualMemory, 1, CREATE),
    f("cuMemRelease", Driver, VirtualMemory, 0, RELEASE),
    f("cuMemMap", Driver, Map, 0, MAP),
    f("cuMemUnmap", Driver, Unmap, 0, RANGE),
    f("cuMemSetAccess", Driver, VirtualMemory, 0, SET_ACCESS),
    // Driver pinned host memory.
    f("cuMemHostAlloc", Driver, HostAlloc, 1, HOST_ALLOC),
    f("cuMemAllocHost_v2", Driver, HostAlloc, 1, HOST_MALLOC),
    f("cuMemAllocHost", Driver, HostAlloc, 1, HOST_MALLOC_V1),
    f("cuMemFreeHost", Driver, HostFree, 0, HOST_FREE),
    f("cuMemHostRegister_v2", Driver, HostAlloc, 0, HOST_REGISTER),
    f("cuMemHostRegister", Driver, HostAlloc, 0, HOST_REGISTER),
    f("cuMemHostUnregister", Driver, HostFree, 0, HOST_FREE),
    // Runtime memset and copies.
    f("cudaMemset", Runtime, Memset, 0, MEMSET),
    f("cudaMemset_ptds", Runtime, Memset, 0, MEMSET),
    f("cudaMemsetAsync", Runtime, Memset, 0, MEMSET_ASYNC),
    f("cudaMemsetAsync_ptsz", Runtime, Memset, 0, MEMSET_ASYNC),
    stack(f("cudaMemcpy2D", Runtime, Copy, 0, &MEMCPY_2D)),
    stack(f("cudaMemcpy2D_ptds", Runtime, Copy, 0, &MEMCPY_2D)),
    stack(f("cudaMemcpy2DAsync", Runtime, Copy, 0, &MEMCPY_2D_ASYNC)),
    stack(f("cudaMemcpy2DAsync_ptsz", Runtime, Copy, 0, &MEMCPY_2D_ASYNC)),
    deref_from(1, 14, f("cudaMemcpy3D", Runtime, Copy, 0, MEMCPY_3D)),
    deref_from(1, 14, f("cudaMemcpy3D_ptds", Runtime, Copy, 0, MEMCPY_3D)),
    deref_from(1, 14, f("cudaMemcpy3DAsync", Runtime, Copy, 0, MEMCPY_3D_ASYNC)),
    deref_from(1, 14, f("cudaMemcpy3DAsync_ptsz", Runtime, Copy, 0, MEMCPY_3D_ASYNC)),
    f("cudaMemcpyPeer", Runtime, Copy, 0, &PEER),
    f("cudaMemcpyPeerAsync", Runtime, Copy, 0, &PEER_ASYNC),
    // CUDA 13 dropped `failIdx`: the stream moved a word (checked by the
    // header test), so each runtime major gets its row.
    only_major(12, stack(f("cudaMemcpyBatchAsync", Runtime, Copy, 0, BATCH_12))),
    only_major(12, stack(f("cudaMemcpyBatchAsync_ptsz", Runtime, Copy, 0, BATCH_12))),
    only_major(13, stack(f("cudaMemcpyBatchAsync", Runtime, Copy, 0, BATCH_13))),
    only_major(13, stack(f("cudaMemcpyBatchAsync_ptsz", Runtime, Copy, 0, BATCH_13))),
    // Runtime pinned host memory.
    f("cudaHostAlloc", Runtime, HostAlloc, 1, HOST_ALLOC),
    f("cudaMallocHost", Runtime, HostAlloc, 1, HOST_MALLOC),
    f("cudaFreeHost", Runtime, HostFree, 0, HOST_FREE),
    f("cudaHostRegister", Runtime, HostAlloc, 0, HOST_REGISTER),
    f("cudaHostUnregister", Runtime, HostFree, 0, HOST_FREE),
];
