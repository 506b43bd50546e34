//! What each traced function does, as the analyses need to know it.

use super::Group;

/// What a function does, as the analyses need to know it: the annotator,
/// the memory, step and graph analyses decide by role, never by name, so a
/// new function is one row of [`super::FUNCS`].
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
