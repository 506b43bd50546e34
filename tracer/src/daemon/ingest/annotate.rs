//! What one record does not carry by itself: the kernel name behind a launch
//! handle or stub, the module it was loaded from, the size a free released,
//! the error's name and the file the call came from (its `caller`, on every
//! line: see README). Kept per
//! process for the whole session, so a name looked up long before a launch
//! (or in an earlier file) still names it. The name tables are LRUs with a
//! fixed size: a process making up handles cannot grow them without bound.

use std::{collections::HashMap, sync::Arc};

use lru::LruCache;

pub use crate::format::line::{Annotations, JsonStr};

use tracer_common::{
    abi::{call_flags, CallEvent},
    funcs::{self, Fmt, FuncSpec, Layer, Role},
};

use crate::daemon::ingest::kernel_names::{capacity, demangle, StubResolver};

/// Kernel handles named per process (real programs have thousands).
const MAX_HANDLES: usize = 64 * 1024;
/// Loaded modules and libraries named per process.
const MAX_MODULES: usize = 4 * 1024;
/// Distinct runtime kernel names kept in their JSON form.
const MAX_STUB_NAMES: usize = 16 * 1024;

struct ProcState {
    /// CUfunction / CUkernel handle -> demangled name.
    handles: LruCache<u64, JsonStr>,
    /// CUmodule / CUlibrary handle, then CUfunction / CUkernel handle -> the module's name.
    modules: LruCache<u64, JsonStr>,
    kernel_modules: LruCache<u64, JsonStr>,
    /// Live allocations per layer: device pointer -> bytes.
    allocs: [HashMap<u64, u64>; Layer::ALL.len()],
    /// Live pinned host memory per layer: host pointer -> bytes.
    pinned: [HashMap<u64, u64>; Layer::ALL.len()],
}

impl Default for ProcState {
    fn default() -> Self {
        Self {
            handles: LruCache::new(capacity(MAX_HANDLES)),
            modules: LruCache::new(capacity(MAX_MODULES)),
            kernel_modules: LruCache::new(capacity(MAX_HANDLES)),
            allocs: Default::default(),
            pinned: Default::default(),
        }
    }
}

/// Per-session annotation state.
pub struct Annotator {
    procs: HashMap<u32, ProcState>,
    stubs: StubResolver,
    stub_names: LruCache<Arc<str>, JsonStr>,
}

impl Default for Annotator {
    fn default() -> Self {
        Self {
            procs: HashMap::new(),
            stubs: StubResolver::default(),
            stub_names: LruCache::new(capacity(MAX_STUB_NAMES)),
        }
    }
}

fn layer_index(layer: Layer) -> usize {
    match layer {
        Layer::Driver => 0,
        Layer::Runtime => 1,
        Layer::Nccl => 2,
    }
}

/// The size argument of an allocation (its `bytes`, read as the row says:
/// the pre-3.2 `cuMemAllocHost` passes an `unsigned int`).
fn alloc_bytes(spec: &FuncSpec, ev: &CallEvent) -> u64 {
    let Some(arg) = spec.args.iter().find(|a| a.name == "bytes") else { return 0 };
    let word = ev.args.get(usize::from(arg.word)).copied().unwrap_or_default();
    if arg.fmt == Fmt::U32 {
        u64::from(word as u32)
    } else {
        word
    }
}

/// Frees `ptr` from `live` and says how many bytes it held (a failed free
/// leaves it live but still says).
fn release(live: &mut HashMap<u64, u64>, ptr: u64, ok: bool) -> Option<u64> {
    if ok {
        live.remove(&ptr)
    } else {
        live.get(&ptr).copied()
    }
}

/// A launch's kernel handle: its first argument (word 0, or word 1 in the
/// `Ex` forms, whose first word points to the launch config).
fn launch_handle(spec: &FuncSpec, ev: &CallEvent) -> u64 {
    spec.args.first().and_then(|handle| ev.args.get(usize::from(handle.word))).copied().unwrap_or_default()
}

/// How launches name a loaded module: the file's name for a load from a
/// file, else `data@0x…` with the image's size when its header says it.
fn module_name(spec: &FuncSpec, ev: &CallEvent, name: Option<&[u8]>) -> String {
    if let Some(path) = name.filter(|_| spec.str_arg != 0) {
        let path = String::from_utf8_lossy(path);
        return path.rsplit('/').next().unwrap_or_default().to_string();
    }
    let image = ev.args.get(usize::from(spec.deref_arg.saturating_sub(1))).copied().unwrap_or_default();
    let header = ev.args.get(tracer_common::abi::REG_ARGS..).unwrap_or_default();
    match funcs::image_bytes(header).filter(|_| ev.flags & call_flags::STACK_UNREAD == 0) {
        Some(bytes) => format!("data@{image:#x} ({bytes} bytes)"),
        None => format!("data@{image:#x}"),
    }
}

impl Annotator {
    /// Updates the tables with `ev` and returns what its line should add.
    pub fn observe(&mut self, ev: &CallEvent, name: Option<&[u8]>) -> Annotations {
        let Some(spec) = funcs::by_id(ev.func_id) else { return Annotations::default() };
        let ret = ev.ret as u32 as i32;
        let ok = ret == 0;
        let out = (ev.flags & call_flags::OUT_VALID != 0).then_some(ev.out);
        let mut ann = Annotations {
            error: if ok { None } else { crate::daemon::ingest::error_names::name(spec.layer, ret) },
            caller: self.stubs.caller(ev.pid, ev.caller),
            ..Default::default()
        };
        let proc = self.procs.entry(ev.pid).or_default();
        match spec.role {
            // A lookup by name: the probe copied the name.
            Role::ModuleLookup if spec.str_arg != 0 => {
                if let (true, Some(handle), Some(name)) = (ok, out, name) {
                    let raw = String::from_utf8_lossy(name);
                    proc.handles.put(handle, JsonStr::new(&demangle(&raw)));
                    if let Some(module) = proc.modules.get(&ev.args[1]).cloned() {
                        proc.kernel_modules.put(handle, module);
                    }
                }
            }
            // A function handle from a kernel handle (`cuKernelGetFunction`).
            Role::ModuleLookup => {
                if let (true, Some(f)) = (ok, out) {
                    if let Some(n) = proc.handles.get(&ev.args[1]).cloned() {
                        proc.handles.put(f, n);
                    }
                    if let Some(module) = proc.kernel_modules.get(&ev.args[1]).cloned() {
                        proc.kernel_modules.put(f, module);
                    }
                }
            }
            Role::ModuleLoad => {
                if let (true, Some(handle)) = (ok, out) {
                    proc.modules.put(handle, JsonStr::new(&module_name(spec, ev, name)));
                }
            }
            Role::ModuleUnload if ok => {
                proc.modules.pop(&ev.args[0]);
            }
            Role::Launch => {
                let handle = launch_handle(spec, ev);
                ann.module = proc.kernel_modules.get(&handle).cloned();
                ann.kernel = proc.handles.get(&handle).cloned();
                if ann.kernel.is_none() && spec.layer == Layer::Runtime {
                    ann.kernel = self
                        .stubs
                        .resolve(ev.pid, handle)
                        .map(|raw| self.stub_names.get_or_insert(raw.clone(), || JsonStr::new(&raw)).clone());
                }
            }
            Role::Alloc => {
                if let (true, Some(ptr)) = (ok, out) {
                    proc.allocs[layer_index(spec.layer)].insert(ptr, alloc_bytes(spec, ev));
                }
            }
            Role::Free => ann.freed_bytes = release(&mut proc.allocs[layer_index(spec.layer)], ev.args[0], ok),
            // Allocated (pointer through the out-pointer) or registered (the first argument).
            Role::HostAlloc => {
                let ptr = if spec.out_arg != 0 { out } else { Some(ev.args[0]) };
                if let (true, Some(ptr)) = (ok, ptr) {
                    proc.pinned[layer_index(spec.layer)].insert(ptr, alloc_bytes(spec, ev));
                }
            }
            Role::HostFree => ann.freed_bytes = release(&mut proc.pinned[layer_index(spec.layer)], ev.args[0], ok),
            _ => {}
        }
        ann
    }

    /// A traced process forked `child`.
    pub fn fork(&mut self, child: u32, parent: u32) {
        self.stubs.fork(child, parent);
    }

    /// Forgets an exited process (its handles and pointers may be reused).
    pub fn forget(&mut self, pid: u32) {
        self.procs.remove(&pid);
        self.stubs.forget(pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(name: &str, args: &[u64], out: Option<u64>, ret: u64) -> CallEvent {
        let mut e = CallEvent { func_id: funcs::by_name(name).unwrap().0 as u32, pid: 9, ret, ..Default::default() };
        e.args[..args.len()].copy_from_slice(args);
        if let Some(o) = out {
            e.out = o;
            e.flags = call_flags::OUT_VALID;
        }
        e
    }

    #[test]
    fn driver_handles_name_later_launches() {
        let mut a = Annotator::default();
        a.observe(&ev("cuModuleGetFunction", &[0x10, 0x7000, 0x20], Some(0x5010), 0), Some(b"_Z11gemm_kernelv"));
        let ann = a.observe(&ev("cuLaunchKernel", &[0x5010, 1, 1, 1, 1, 1, 1, 0, 0], None, 0), None);
        assert_eq!(ann.kernel, Some(JsonStr::new("gemm_kernel()")));
        // The library path: kernel handle -> function handle -> launch (Ex: handle in word 1).
        a.observe(&ev("cuLibraryGetKernel", &[0x10, 0x8000, 0x20], Some(0x6000), 0), Some(b"lib_kernel"));
        a.observe(&ev("cuKernelGetFunction", &[0x10, 0x6000], Some(0x6010), 0), None);
        let ann = a.observe(&ev("cuLaunchKernelEx", &[0x30, 0x6010], None, 0), None);
        assert_eq!(ann.kernel, Some(JsonStr::new("lib_kernel")));
    }

    #[test]
    fn launches_name_the_module_their_kernel_came_from() {
        let mut a = Annotator::default();
        a.observe(&ev("cuModuleLoad", &[0x10, 0x20], Some(0x7000), 0), Some(b"/opt/kernels/gemm.cubin"));
        a.observe(&ev("cuModuleGetFunction", &[0x10, 0x7000, 0x30], Some(0x5010), 0), Some(b"gemm"));
        let launch = a.observe(&ev("cuLaunchKernel", &[0x5010], None, 0), None);
        assert_eq!(launch.module, Some(JsonStr::new("gemm.cubin")));
        // A fatbin image: its header says its size; the library path goes through a kernel handle.
        let mut load = ev("cuLibraryLoadData", &[0x10, 0x9000], Some(0x8000), 0);
        load.args[6] = 0xba55_ed50 | (16 << 48);
        load.args[7] = 4080;
        a.observe(&load, None);
        a.observe(&ev("cuLibraryGetKernel", &[0x10, 0x8000, 0x20], Some(0x6000), 0), Some(b"k"));
        a.observe(&ev("cuKernelGetFunction", &[0x10, 0x6000], Some(0x6010), 0), None);
        let launch = a.observe(&ev("cuLaunchCooperativeKernel", &[0x6010], None, 0), None);
        assert_eq!(launch.module, Some(JsonStr::new("data@0x9000 (4096 bytes)")));
        // A handle from no load we saw names no module.
        a.observe(&ev("cuModuleGetFunction", &[0x10, 0x4000, 0x30], Some(0x5020), 0), Some(b"other"));
        assert_eq!(a.observe(&ev("cuLaunchKernel", &[0x5020], None, 0), None).module, None);
    }

    #[test]
    fn frees_report_the_allocated_size_per_layer() {
        let mut a = Annotator::default();
        a.observe(&ev("cudaMalloc", &[0x10, 4096], Some(0xd000), 0), None);
        a.observe(&ev("cuMemAlloc_v2", &[0x10, 4096], Some(0xd000), 0), None);
        let rt = a.observe(&ev("cudaFree", &[0xd000], None, 0), None);
        assert_eq!(rt.freed_bytes, Some(4096));
        let again = a.observe(&ev("cudaFree", &[0xd000], None, 1), None);
        assert_eq!((again.freed_bytes, again.error), (None, Some("cudaErrorInvalidValue")));
        assert_eq!(a.observe(&ev("cuMemFree_v2", &[0xd000], None, 0), None).freed_bytes, Some(4096));
    }

    #[test]
    fn pinned_host_frees_report_the_size_allocated_or_registered() {
        let mut a = Annotator::default();
        a.observe(&ev("cudaHostAlloc", &[0x10, 8192, 0], Some(0xa000), 0), None);
        a.observe(&ev("cuMemHostRegister_v2", &[0xb000, 4096, 1], None, 0), None);
        // The pre-3.2 form's size is an `unsigned int`: the upper half is not the size.
        a.observe(&ev("cuMemAllocHost", &[0x10, (7 << 32) | 512], Some(0xc000), 0), None);
        a.observe(&ev("cudaMalloc", &[0x10, 64], Some(0xb000), 0), None);
        assert_eq!(a.observe(&ev("cudaFreeHost", &[0xa000], None, 0), None).freed_bytes, Some(8192));
        assert_eq!(a.observe(&ev("cuMemHostUnregister", &[0xb000], None, 0), None).freed_bytes, Some(4096));
        assert_eq!(a.observe(&ev("cuMemFreeHost", &[0xc000], None, 0), None).freed_bytes, Some(512));
        assert_eq!(a.observe(&ev("cudaFree", &[0xb000], None, 0), None).freed_bytes, Some(64), "device apart");
    }

    #[test]
    fn every_call_names_its_caller_when_a_file_maps_the_address() {
        let mut a = Annotator::default();
        let mut e = ev("cuInit", &[0], None, 0);
        e.pid = std::process::id();
        e.caller = every_call_names_its_caller_when_a_file_maps_the_address as *const () as usize as u64 + 1;
        let exe = std::env::current_exe().unwrap();
        let want = JsonStr::new(&exe.file_name().unwrap().to_string_lossy());
        assert_eq!(a.observe(&e, None).caller, Some(want));
        e.caller = 0;
        assert_eq!(a.observe(&e, None).caller, None, "no return address read");
    }

    #[test]
    fn json_names_are_escaped() {
        assert_eq!(&*JsonStr::new("a\"b\\c").0, r#""a\"b\\c""#);
    }
}
