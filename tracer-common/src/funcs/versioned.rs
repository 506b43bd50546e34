//! Rows whose signature depends on the version behind the exported name:
//! the driver's versioned entry points (`cuCtxCreate_v2`…`_v4`,
//! `cuMemAdvise[_v2]`, `cuStreamGetCaptureInfo[_v2|_v3]`), each name one
//! signature, and the runtime names CUDA 13 gave a new signature, one row
//! per `libcudart` major version (the attacher picks the library's).
//!
//! The header test (`tracer-common/tests/headers.rs`) checks every row
//! against NVIDIA's 12.9 and 13.x headers.

use super::Fmt::*;
use super::Layer::*;
use super::Role::*;
use super::{a, f, only_major, ArgSpec, FuncSpec};

// cuCtxCreate[_v2](CUcontext *pctx, unsigned int flags, CUdevice dev)
const CTX_CREATE_V2: &[ArgSpec] = &[a("ctx", Out, 0), a("flags", U32, 1), a("device", U32, 2)];
// cuMemAdvise(ptr, count, advice, CUdevice device) and cudaMemAdvise of
// CUDA 12 (…, int device).
const ADVISE_DEVICE: &[ArgSpec] = &[a("dptr", Hex, 0), a("bytes", U64, 1), a("advice", U32, 2), a("device", U32, 3)];
// cuMemAdvise_v2, cudaMemAdvise_v2 and CUDA 13's cudaMemAdvise: the fourth
// argument is a `{type, id}` location struct passed by value in one
// register (32-bit halves 6 and 7).
const ADVISE_LOCATION: &[ArgSpec] = &[
    a("dptr", Hex, 0),
    a("bytes", U64, 1),
    a("advice", U32, 2),
    a("location_type", U32At, 6),
    a("location_id", U32At, 7),
];
// Every GetCaptureInfo variant starts (stream, *status, unsigned long long *id, …):
// the id is the one out-value all of them have.
const CAPTURE_INFO: &[ArgSpec] = &[a("stream", Hex, 0), a("id", Out, 0)];

const fn capture_info(name: &'static str, layer: super::Layer) -> FuncSpec {
    f(name, layer, CaptureQuery, 3, CAPTURE_INFO)
}

pub(super) const ROWS: &[FuncSpec] = &[
    // Driver: each versioned name has one signature (`cuCtxCreate_v2`…`_v4`
    // and `cuStreamGetCaptureInfo_v2/_v3` are rows of exec.rs).
    f("cuCtxCreate", Driver, ContextCreate, 1, CTX_CREATE_V2),
    f("cuMemAdvise", Driver, Other, 0, ADVISE_DEVICE),
    f("cuMemAdvise_v2", Driver, Other, 0, ADVISE_LOCATION),
    capture_info("cuStreamGetCaptureInfo", Driver),
    capture_info("cuStreamGetCaptureInfo_ptsz", Driver),
    // Runtime 12: the base names keep their first signature; the `_vN`
    // names (gone in 13) carry the new ones.
    only_major(12, f("cudaMemAdvise", Runtime, Other, 0, ADVISE_DEVICE)),
    only_major(12, f("cudaMemAdvise_v2", Runtime, Other, 0, ADVISE_LOCATION)),
    only_major(12, capture_info("cudaStreamGetCaptureInfo", Runtime)),
    only_major(12, capture_info("cudaStreamGetCaptureInfo_ptsz", Runtime)),
    only_major(12, capture_info("cudaStreamGetCaptureInfo_v2", Runtime)),
    only_major(12, capture_info("cudaStreamGetCaptureInfo_v2_ptsz", Runtime)),
    only_major(12, capture_info("cudaStreamGetCaptureInfo_v3", Runtime)),
    only_major(12, capture_info("cudaStreamGetCaptureInfo_v3_ptsz", Runtime)),
    // Runtime 13: the base names have the `_v2`/`_v3` signatures.
    only_major(13, f("cudaMemAdvise", Runtime, Other, 0, ADVISE_LOCATION)),
    only_major(13, capture_info("cudaStreamGetCaptureInfo", Runtime)),
    only_major(13, capture_info("cudaStreamGetCaptureInfo_ptsz", Runtime)),
];
