//! Rows for streams and events, cooperative and host-function launches,
//! graph maintenance, module loading, device/context calls and the
//! high-rate state reads that are off by default.

use super::core::{CUDA_LAUNCH, CU_LAUNCH, EVENT, GRAPH_LAUNCH, NONE, STREAM};
use super::Fmt::*;
use super::Layer::*;
use super::Role::*;
use super::{a, deref, f, out2, stack, string, ArgSpec, FuncSpec};

const STREAM_CREATE: &[ArgSpec] = &[a("stream", Out, 0), a("flags", U32, 1)];
const STREAM_CREATE_PRIORITY: &[ArgSpec] = &[a("stream", Out, 0), a("flags", U32, 1), a("priority", I32, 2)];
const CUDA_STREAM_CREATE: &[ArgSpec] = &[a("stream", Out, 0)];
const EVENT_CREATE: &[ArgSpec] = &[a("event", Out, 0), a("flags", U32, 1)];
const CUDA_EVENT_CREATE: &[ArgSpec] = &[a("event", Out, 0)];
const WAIT_EVENT: &[ArgSpec] = &[a("stream", Hex, 0), a("event", Hex, 1), a("flags", U32, 2)];
const ELAPSED: &[ArgSpec] = &[a("start", Hex, 1), a("end", Hex, 2), a("ms", OutF32, 0)];
const HOST_FUNC: &[ArgSpec] = &[a("stream", Hex, 0), a("fn", Hex, 1), a("user_data", Hex, 2)];
const HOST_FUNC_V2: &[ArgSpec] =
    &[a("stream", Hex, 0), a("fn", Hex, 1), a("user_data", Hex, 2), a("sync_mode", U32, 3)];
const EXEC_UPDATE: &[ArgSpec] = &[a("exec", Hex, 0), a("graph", Hex, 1)];
const GRAPH: &[ArgSpec] = &[a("graph", Hex, 0)];
const EXEC: &[ArgSpec] = &[a("exec", Hex, 0)];
const CAPTURE_STATUS: &[ArgSpec] = &[a("stream", Hex, 0), a("status", OutI32, 0)];
// The probe copies the image's first words (deref 2) into words 6..: a
// fatbin header says its size.
const MODULE_LOAD_FILE: &[ArgSpec] = &[a("module", Out, 0), a("fname", Str, 0)];
const MODULE_LOAD_DATA: &[ArgSpec] = &[a("module", Out, 0), a("image", Hex, 1), a("image_bytes", ImageBytes, 6)];
const MODULE_LOAD_DATA_EX: &[ArgSpec] =
    &[a("module", Out, 0), a("image", Hex, 1), a("image_bytes", ImageBytes, 6), a("num_options", U32, 2)];
const MODULE: &[ArgSpec] = &[a("module", Hex, 0)];
const LIBRARY_LOAD_DATA: &[ArgSpec] = &[a("library", Out, 0), a("code", Hex, 1), a("image_bytes", ImageBytes, 6)];
const LIBRARY_LOAD_FILE: &[ArgSpec] = &[a("library", Out, 0), a("fname", Str, 0)];
const LIBRARY: &[ArgSpec] = &[a("library", Hex, 0)];
const CTX_CREATE: &[ArgSpec] = &[a("ctx", Out, 0), a("flags", U32, 1), a("device", I32, 2)];
const CTX_CREATE_V3: &[ArgSpec] = &[a("ctx", Out, 0), a("flags", U32, 3), a("device", I32, 4)];
const CTX_CREATE_V4: &[ArgSpec] = &[a("ctx", Out, 0), a("params", Hex, 1), a("flags", U32, 2), a("device", I32, 3)];
const PRIMARY_RETAIN: &[ArgSpec] = &[a("ctx", Out, 0), a("device", I32, 1)];
const DEVICE: &[ArgSpec] = &[a("device", I32, 0)];
const CTX: &[ArgSpec] = &[a("ctx", Hex, 0)];
const COUNT: &[ArgSpec] = &[a("count", OutI32, 0)];
const MEM_INFO: &[ArgSpec] = &[a("free", OutU64, 0), a("total", Out2U64, crate::abi::OUT2_WORD as u8)];
const GET_DEVICE: &[ArgSpec] = &[a("device", OutI32, 0)];
const GET_CTX: &[ArgSpec] = &[a("ctx", Out, 0)];

/// The size of a module image from its first words (as `deref_arg` copies
/// them): a fatbin (magic `0xba55ed50`) says its header size (u16 at byte
/// 6) and its payload size (u64 at byte 8). Cubins and PTX do not say it in
/// their first 48 bytes.
pub fn image_bytes(words: &[u64]) -> Option<u64> {
    const FATBIN_MAGIC: u32 = 0xba55_ed50;
    let (first, second) = (*words.first()?, *words.get(1)?);
    if first as u32 != FATBIN_MAGIC {
        return None;
    }
    second.checked_add(first >> 48)
}

pub(super) const ROWS: &[FuncSpec] = &[
    // Driver: streams and events.
    f("cuStreamCreate", Driver, StreamCreate, 1, STREAM_CREATE),
    f("cuStreamCreateWithPriority", Driver, StreamCreate, 1, STREAM_CREATE_PRIORITY),
    f("cuStreamDestroy_v2", Driver, StreamDestroy, 0, STREAM),
    f("cuEventCreate", Driver, EventCreate, 1, EVENT_CREATE),
    f("cuEventDestroy_v2", Driver, EventDestroy, 0, EVENT),
    f("cuStreamWaitEvent", Driver, StreamWaitEvent, 0, WAIT_EVENT),
    f("cuStreamWaitEvent_ptsz", Driver, StreamWaitEvent, 0, WAIT_EVENT),
    f("cuStreamQuery", Driver, Query, 0, STREAM),
    f("cuStreamQuery_ptsz", Driver, Query, 0, STREAM),
    f("cuEventQuery", Driver, Query, 0, EVENT),
    f("cuEventElapsedTime", Driver, EventElapsed, 1, ELAPSED),
    f("cuEventElapsedTime_v2", Driver, EventElapsed, 1, ELAPSED),
    // Driver: launches.
    stack(f("cuLaunchCooperativeKernel", Driver, Launch, 0, CU_LAUNCH)),
    stack(f("cuLaunchCooperativeKernel_ptsz", Driver, Launch, 0, CU_LAUNCH)),
    f("cuLaunchHostFunc", Driver, HostFunc, 0, HOST_FUNC),
    f("cuLaunchHostFunc_ptsz", Driver, HostFunc, 0, HOST_FUNC),
    f("cuLaunchHostFunc_v2", Driver, HostFunc, 0, HOST_FUNC_V2),
    f("cuLaunchHostFunc_v2_ptsz", Driver, HostFunc, 0, HOST_FUNC_V2),
    // Driver: graphs.
    f("cuGraphExecUpdate_v2", Driver, GraphUpdate, 0, EXEC_UPDATE),
    f("cuGraphUpload", Driver, GraphUpload, 0, GRAPH_LAUNCH),
    f("cuGraphUpload_ptsz", Driver, GraphUpload, 0, GRAPH_LAUNCH),
    f("cuGraphDestroy", Driver, GraphDestroy, 0, GRAPH),
    f("cuGraphExecDestroy", Driver, GraphExecDestroy, 0, EXEC),
    f("cuStreamGetCaptureInfo_v2", Driver, CaptureQuery, 2, CAPTURE_STATUS),
    f("cuStreamGetCaptureInfo_v2_ptsz", Driver, CaptureQuery, 2, CAPTURE_STATUS),
    f("cuStreamGetCaptureInfo_v3", Driver, CaptureQuery, 2, CAPTURE_STATUS),
    f("cuStreamGetCaptureInfo_v3_ptsz", Driver, CaptureQuery, 2, CAPTURE_STATUS),
    // Driver: modules and libraries.
    string(2, f("cuModuleLoad", Driver, ModuleLoad, 1, MODULE_LOAD_FILE)),
    deref(2, f("cuModuleLoadData", Driver, ModuleLoad, 1, MODULE_LOAD_DATA)),
    deref(2, f("cuModuleLoadDataEx", Driver, ModuleLoad, 1, MODULE_LOAD_DATA_EX)),
    deref(2, f("cuModuleLoadFatBinary", Driver, ModuleLoad, 1, MODULE_LOAD_DATA)),
    f("cuModuleUnload", Driver, ModuleUnload, 0, MODULE),
    // Eight arguments, but the two on the stack (library options) say
    // little: the image's first words take the stack-word slots instead.
    deref(2, f("cuLibraryLoadData", Driver, ModuleLoad, 1, LIBRARY_LOAD_DATA)),
    string(2, f("cuLibraryLoadFromFile", Driver, ModuleLoad, 1, LIBRARY_LOAD_FILE)),
    f("cuLibraryUnload", Driver, ModuleUnload, 0, LIBRARY),
    // Driver: devices and contexts.
    f("cuCtxCreate_v2", Driver, ContextCreate, 1, CTX_CREATE),
    f("cuCtxCreate_v3", Driver, ContextCreate, 1, CTX_CREATE_V3),
    f("cuCtxCreate_v4", Driver, ContextCreate, 1, CTX_CREATE_V4),
    f("cuDevicePrimaryCtxRetain", Driver, ContextCreate, 1, PRIMARY_RETAIN),
    f("cuDevicePrimaryCtxRelease_v2", Driver, ContextRelease, 0, DEVICE),
    f("cuCtxDestroy_v2", Driver, ContextRelease, 0, CTX),
    f("cuCtxSetCurrent", Driver, SetCurrent, 0, CTX),
    f("cuDeviceGetCount", Driver, DeviceCount, 1, COUNT),
    out2(2, f("cuMemGetInfo_v2", Driver, MemInfo, 1, MEM_INFO)),
    // Driver: high-rate state reads (off by default).
    f("cuCtxGetCurrent", Driver, StateRead, 1, GET_CTX),
    f("cuCtxGetDevice", Driver, StateRead, 1, GET_DEVICE),
    f("cuStreamIsCapturing", Driver, StateRead, 2, CAPTURE_STATUS),
    f("cuStreamIsCapturing_ptsz", Driver, StateRead, 2, CAPTURE_STATUS),
    // Runtime: streams and events.
    f("cudaStreamCreate", Runtime, StreamCreate, 1, CUDA_STREAM_CREATE),
    f("cudaStreamCreateWithFlags", Runtime, StreamCreate, 1, STREAM_CREATE),
    f("cudaStreamCreateWithPriority", Runtime, StreamCreate, 1, STREAM_CREATE_PRIORITY),
    f("cudaStreamDestroy", Runtime, StreamDestroy, 0, STREAM),
    f("cudaEventCreate", Runtime, EventCreate, 1, CUDA_EVENT_CREATE),
    f("cudaEventCreateWithFlags", Runtime, EventCreate, 1, EVENT_CREATE),
    f("cudaEventDestroy", Runtime, EventDestroy, 0, EVENT),
    f("cudaStreamWaitEvent", Runtime, StreamWaitEvent, 0, WAIT_EVENT),
    f("cudaStreamWaitEvent_ptsz", Runtime, StreamWaitEvent, 0, WAIT_EVENT),
    f("cudaStreamQuery", Runtime, Query, 0, STREAM),
    f("cudaStreamQuery_ptsz", Runtime, Query, 0, STREAM),
    f("cudaEventQuery", Runtime, Query, 0, EVENT),
    f("cudaEventElapsedTime", Runtime, EventElapsed, 1, ELAPSED),
    f("cudaEventElapsedTime_v2", Runtime, EventElapsed, 1, ELAPSED),
    // Runtime: launches.
    stack(f("cudaLaunchCooperativeKernel", Runtime, Launch, 0, CUDA_LAUNCH)),
    stack(f("cudaLaunchCooperativeKernel_ptsz", Runtime, Launch, 0, CUDA_LAUNCH)),
    f("cudaLaunchHostFunc", Runtime, HostFunc, 0, HOST_FUNC),
    f("cudaLaunchHostFunc_ptsz", Runtime, HostFunc, 0, HOST_FUNC),
    f("cudaLaunchHostFunc_v2", Runtime, HostFunc, 0, HOST_FUNC_V2),
    f("cudaLaunchHostFunc_v2_ptsz", Runtime, HostFunc, 0, HOST_FUNC_V2),
    // Runtime: graphs.
    f("cudaGraphExecUpdate", Runtime, GraphUpdate, 0, EXEC_UPDATE),
    f("cudaGraphUpload", Runtime, GraphUpload, 0, GRAPH_LAUNCH),
    f("cudaGraphUpload_ptsz", Runtime, GraphUpload, 0, GRAPH_LAUNCH),
    f("cudaGraphDestroy", Runtime, GraphDestroy, 0, GRAPH),
    f("cudaGraphExecDestroy", Runtime, GraphExecDestroy, 0, EXEC),
    // Runtime: devices.
    f("cudaSetDevice", Runtime, SetCurrent, 0, DEVICE),
    f("cudaGetDeviceCount", Runtime, DeviceCount, 1, COUNT),
    out2(2, f("cudaMemGetInfo", Runtime, MemInfo, 1, MEM_INFO)),
    // Runtime: high-rate state reads (off by default).
    f("cudaGetDevice", Runtime, StateRead, 1, GET_DEVICE),
    f("cudaGetLastError", Runtime, StateRead, 0, NONE),
    f("cudaPeekAtLastError", Runtime, StateRead, 0, NONE),
    f("cudaStreamIsCapturing", Runtime, StateRead, 2, CAPTURE_STATUS),
    f("cudaStreamIsCapturing_ptsz", Runtime, StateRead, 2, CAPTURE_STATUS),
];

/// The role this part's name rules give (the table's tests check every
/// row's role against them); `None` for names of the other parts.
#[cfg(test)]
pub(super) fn role_by_name(n: &str) -> Option<super::Role> {
    let has = |parts: &[&str]| parts.iter().any(|p| n.contains(p));
    Some(match () {
        _ if has(&["StreamCreate"]) => StreamCreate,
        _ if has(&["StreamDestroy"]) => StreamDestroy,
        _ if has(&["EventCreate"]) => EventCreate,
        _ if has(&["EventDestroy"]) => EventDestroy,
        _ if has(&["WaitEvent"]) => StreamWaitEvent,
        _ if has(&["StreamQuery", "EventQuery"]) => Query,
        _ if has(&["ElapsedTime"]) => EventElapsed,
        _ if has(&["HostFunc"]) => HostFunc,
        _ if has(&["GraphExecUpdate"]) => GraphUpdate,
        _ if has(&["GraphUpload"]) => GraphUpload,
        _ if has(&["GraphExecDestroy"]) => GraphExecDestroy,
        _ if has(&["GraphDestroy"]) => GraphDestroy,
        _ if has(&["GetCaptureInfo"]) => CaptureQuery,
        _ if has(&["ModuleLoad", "LibraryLoad"]) => ModuleLoad,
        _ if has(&["ModuleUnload", "LibraryUnload"]) => ModuleUnload,
        _ if has(&["CtxCreate", "PrimaryCtxRetain"]) => ContextCreate,
        _ if has(&["CtxDestroy", "PrimaryCtxRelease"]) => ContextRelease,
        _ if has(&["CtxSetCurrent", "SetDevice"]) => SetCurrent,
        _ if has(&["GetCount", "GetDeviceCount"]) => DeviceCount,
        _ if has(&["MemGetInfo"]) => MemInfo,
        _ if has(&["IsCapturing", "LastError", "CtxGetCurrent", "CtxGetDevice", "cudaGetDevice"]) => StateRead,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_bytes_come_from_a_fatbin_header() {
        // magic, version 1, header 16 bytes; payload 4080 bytes.
        assert_eq!(image_bytes(&[0xba55_ed50 | (1 << 32) | (16 << 48), 4080]), Some(4096));
        assert_eq!(image_bytes(&[0x464c_457f, 0]), None, "an ELF cubin does not say");
        assert_eq!(image_bytes(&[0xba55_ed50 | (16 << 48), u64::MAX]), None, "overflow");
        assert_eq!(image_bytes(&[]), None);
    }

    #[test]
    fn rows_read_what_their_probes_can_give() {
        for spec in ROWS {
            let words_free = !spec.stack && spec.deref_arg == 0;
            assert!(spec.out2_arg == 0 || words_free, "{}: out2 needs free stack-word slots", spec.name);
            let image = spec.args.iter().any(|a| a.fmt == ImageBytes);
            assert_eq!(image, spec.deref_arg != 0 && !spec.stack, "{}", spec.name);
            if spec.role == ModuleLoad {
                assert_eq!(spec.out_arg, 1, "{}: the handle", spec.name);
                assert!(spec.str_arg != 0 || spec.deref_arg != 0, "{}: says which image", spec.name);
            }
        }
    }
}
