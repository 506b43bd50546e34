//! Notices a traced process opening a CUDA library and holds it there: an
//! fexit program on `do_sys_openat2` or, where fexit cannot load, raw
//! `sys_enter`/`sys_exit` tracepoints (no tracefs, no kprobes) that remember
//! the file name of an `open`/`openat`/`openat2`; at a successful return
//! whose name looks like `libcuda.so*`/`libcudart.so*`/`libnccl.so*` queue a
//! [`LibOpenEvent`] and stop the process with SIGSTOP until userspace has
//! attached the probes to that file and sends SIGCONT.
//!
//! While the daemon matches a pattern (`MATCH_EXEC`), a process that calls
//! `execve` and is not traced yet is "pending" until userspace has compared
//! its new command line with the pattern: its exec is reported, and its CUDA
//! library opens are held like a traced process's, so a short job that
//! matches is traced from its first call.

use aya_ebpf::{
    bindings::{pt_regs, BPF_ANY, BPF_RB_FORCE_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_buf,
        bpf_probe_read_user_str_bytes, generated::bpf_send_signal_thread,
    },
    macros::{fexit, map, raw_tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{FExitContext, RawTracePointContext},
};
use tracer_common::abi::{
    drop_slot, hold_slot, lib_open_flags, EventHeader, LibOpenEvent, NameBuf, EXEC_KIND, HOLD_HEARTBEAT_FRESH_NS,
    LIB_OPEN_EVENT_SIZE, LIB_OPEN_KIND, NAME_MAX,
};

const SYS_OPEN: u64 = 2;
const SYS_OPENAT: u64 = 257;
const SYS_OPENAT2: u64 = 437;
const SIGSTOP: u32 = 19;

/// The tracer's own process id, set by userspace before load: the tracer is
/// in the traced set for the instant it spawns `record`'s command, and must
/// never stop itself.
#[no_mangle]
static TRACER_TGID: u32 = 0;

/// Non-zero when the daemon matches a pattern: execs are reported and the
/// exec'ing processes pending until userspace decides. Set before load.
#[no_mangle]
static MATCH_EXEC: u32 = 0;

/// Processes that exec'd (or were forked by a pending process) and that
/// userspace has not yet matched against the pattern, with the exec's time.
/// LRU: a flood of execs evicts the oldest; an evicted process is no longer
/// held at a library open, and the /proc scan finds it, late, and says so.
#[map]
static PENDING: LruHashMap<u32, u64> = LruHashMap::with_max_entries(16_384, 0);

/// File-name pointer of an open in flight, per thread (LRU: a thread that
/// dies inside the syscall cannot fill it).
#[map]
static OPEN_NAMES: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4_096, 0);

/// Library opens for userspace; woken at once (a process waits on it).
#[map]
static LIB_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Room to read a file name before deciding to queue it.
#[map]
static LIB_NAME_SCRATCH: PerCpuArray<NameBuf> = PerCpuArray::with_max_entries(1, 0);

/// Heartbeat and counters, see `hold_slot`.
#[map]
static HOLD_CTL: Array<u64> = Array::with_max_entries(hold_slot::COUNT, 0);

/// Processes stopped by a hold and not yet released, with the hold's start:
/// the watchdog sends SIGCONT to every one of them if the tracer dies.
#[map]
static HELD: HashMap<u32, u64> = HashMap::with_max_entries(16_384, 0);

/// `sys_enter(regs, id)`: remembers the name pointer of a traced open.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn open_enter(ctx: RawTracePointContext) -> i32 {
    let id: u64 = ctx.arg(1);
    if id != SYS_OPENAT && id != SYS_OPENAT2 && id != SYS_OPEN {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_watched((pid_tgid >> 32) as u32) {
        return 0;
    }
    let regs: *const pt_regs = ctx.arg(0);
    // open(path, ...) has the name first; openat/openat2(dirfd, path, ...) second.
    // SAFETY: bpf_probe_read_kernel validates the kernel address.
    let name = unsafe {
        if id == SYS_OPEN {
            bpf_probe_read_kernel(core::ptr::addr_of!((*regs).rdi))
        } else {
            bpf_probe_read_kernel(core::ptr::addr_of!((*regs).rsi))
        }
    };
    if let Ok(ptr) = name {
        if OPEN_NAMES.insert(pid_tgid, ptr, BPF_ANY as u64).is_err() {
            crate::count_drop(drop_slot::HOLD_MAP_FULL);
        }
    }
    0
}

/// `sys_exit(regs, ret)`: a remembered open that returned a descriptor for a
/// CUDA library is queued and, while the tracer is alive, held.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn open_exit(ctx: RawTracePointContext) -> i32 {
    // Every syscall of every process passes here: rule out all but opens
    // with one read, before any map lookup.
    let regs: *const pt_regs = ctx.arg(0);
    // SAFETY: bpf_probe_read_kernel validates the kernel address.
    let id = unsafe { bpf_probe_read_kernel(core::ptr::addr_of!((*regs).orig_rax)) }.unwrap_or(0);
    if id != SYS_OPENAT && id != SYS_OPENAT2 && id != SYS_OPEN {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(ptr) = (unsafe { OPEN_NAMES.get(pid_tgid) }).copied() else {
        return 0;
    };
    let _ = OPEN_NAMES.remove(pid_tgid);
    on_opened(pid_tgid, ptr, ctx.arg(1));
    0
}

/// `do_sys_openat2(dfd, filename, how)` returned (`open`, `openat` and
/// `openat2` all end here): the same as the two tracepoints, without a cost
/// to every other syscall. Used where fexit loads; the tracepoints otherwise.
#[fexit(function = "do_sys_openat2")]
pub fn openat2_return(ctx: FExitContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_watched((pid_tgid >> 32) as u32) {
        return 0;
    }
    let name: u64 = ctx.arg(1);
    // fexit sees the return value after the three arguments.
    let ret: i64 = ctx.arg(3);
    on_opened(pid_tgid, name, ret);
    0
}

/// A traced thread's open of `name_ptr` returned `ret`: a descriptor for a
/// CUDA library is queued and, while the tracer is alive, held.
#[inline(always)]
fn on_opened(pid_tgid: u64, name_ptr: u64, ret: i64) {
    if ret < 0 {
        return;
    }
    let Some(buf) = LIB_NAME_SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: a per-CPU scratch slot nobody else uses during this program.
    let buf = unsafe { &mut *buf };
    // SAFETY: bpf_probe_read_user_str_bytes validates the user address.
    let len = match unsafe { bpf_probe_read_user_str_bytes(name_ptr as *const u8, &mut buf.bytes) } {
        Ok(s) => s.len(),
        Err(_) => return,
    };
    if !names_cuda_library(&buf.bytes, len) {
        return;
    }
    let Some(mut entry) = LIB_EVENTS.reserve::<LibOpenEvent>(0) else {
        // Not held: the /proc scan finds the library, late, and says so.
        count_lost();
        return;
    };
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let pid = (pid_tgid >> 32) as u32;
    // SAFETY: a global written by userspace before load.
    let tracer = unsafe { core::ptr::read_volatile(&TRACER_TGID) };
    let mut flags = if crate::is_traced(pid) { 0 } else { lib_open_flags::PENDING };
    if pid != tracer && heartbeat_fresh(now) && hold_entry(pid, now) {
        // Delivered on the way back to user mode: no instruction after this
        // open runs before userspace sends SIGCONT.
        // SAFETY: the helper signals the current thread only.
        if unsafe { bpf_send_signal_thread(SIGSTOP) } == 0 {
            flags |= lib_open_flags::HELD;
        } else {
            let _ = HELD.remove(pid);
        }
    }
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points to the reserved record; every field is written.
    unsafe {
        (*ev).header = EventHeader { kind: LIB_OPEN_KIND, size: LIB_OPEN_EVENT_SIZE as u32 };
        (*ev).ts_ns = now;
        (*ev).pid = pid;
        (*ev).tid = pid_tgid as u32;
        (*ev).fd = ret as i32;
        (*ev).flags = flags;
        (*ev).name.len = (len + 1).min(NAME_MAX) as u32;
        (*ev).name._pad = 0;
        if bpf_probe_read_kernel_buf(buf.bytes.as_ptr(), &mut (*ev).name.bytes).is_err() {
            (*ev).name.len = 0;
        }
    }
    entry.submit(BPF_RB_FORCE_WAKEUP as u64);
}

/// `sched_process_exec(task, old_pid, bprm)`, run by the process after its
/// new image is in place: while the daemon matches a pattern, an untraced
/// process becomes pending and its exec is reported.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn proc_exec(_ctx: RawTracePointContext) -> i32 {
    if !matching_execs() {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    // SAFETY: a global written by userspace before load.
    let tracer = unsafe { core::ptr::read_volatile(&TRACER_TGID) };
    if pid == tracer || crate::is_traced(pid) {
        return 0;
    }
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let _ = PENDING.insert(pid, now, BPF_ANY as u64);
    let Some(mut entry) = LIB_EVENTS.reserve::<LibOpenEvent>(0) else {
        // The process stays pending: its first library open is held and
        // decided then.
        count_lost();
        return 0;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points to the reserved record; every field is written.
    unsafe {
        (*ev).header = EventHeader { kind: EXEC_KIND, size: LIB_OPEN_EVENT_SIZE as u32 };
        (*ev).ts_ns = now;
        (*ev).pid = pid;
        (*ev).tid = pid_tgid as u32;
        (*ev).fd = -1;
        (*ev).flags = 0;
        (*ev).name.len = 0;
        (*ev).name._pad = 0;
    }
    entry.submit(BPF_RB_FORCE_WAKEUP as u64);
    0
}

#[inline(always)]
fn matching_execs() -> bool {
    // SAFETY: a global written by userspace before load.
    unsafe { core::ptr::read_volatile(&MATCH_EXEC) != 0 }
}

/// Whether `tgid` is undecided: it exec'd while the daemon matches a pattern.
#[inline(always)]
pub fn is_pending(tgid: u32) -> bool {
    // SAFETY: read-only lookup of a plain value.
    matching_execs() && unsafe { PENDING.get(tgid) }.is_some()
}

/// A pending process forked `child`: the child is pending too (its parent
/// may yet match, and then the child is traced).
#[inline(always)]
pub fn fork_pending(child: u32) {
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let _ = PENDING.insert(child, now, BPF_ANY as u64);
}

/// A process's leader exited: it is no longer pending.
#[inline(always)]
pub fn forget_pending(tgid: u32) {
    if matching_execs() {
        let _ = PENDING.remove(tgid);
    }
}

/// Whether library opens of `tgid` are watched: traced or pending.
#[inline(always)]
fn is_watched(tgid: u32) -> bool {
    crate::is_traced(tgid) || is_pending(tgid)
}

/// Records `pid` as held; a full map is counted and the process not held.
#[inline(always)]
fn hold_entry(pid: u32, now: u64) -> bool {
    if HELD.insert(pid, now, BPF_ANY as u64).is_ok() {
        return true;
    }
    crate::count_drop(drop_slot::HOLD_MAP_FULL);
    false
}

#[inline(always)]
fn heartbeat_fresh(now: u64) -> bool {
    match HOLD_CTL.get(hold_slot::HEARTBEAT_NS) {
        Some(&beat) => beat != 0 && now.wrapping_sub(beat) < HOLD_HEARTBEAT_FRESH_NS,
        None => false,
    }
}

#[inline(always)]
fn count_lost() {
    if let Some(p) = HOLD_CTL.get_ptr_mut(hold_slot::EVENTS_LOST) {
        // SAFETY: a map value; a lost increment between CPUs only undercounts
        // a rare event (the /proc scan still finds the library, late).
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn byte_at(bytes: &[u8; NAME_MAX], i: usize) -> u8 {
    bytes[i & (NAME_MAX - 1)]
}

/// How far back from the end the final `/` is searched: the whole name
/// read (the verifier accepts the bounded loop on the kernels we run on).
const BASENAME_MAX: usize = NAME_MAX;

/// Whether the last path component of `bytes[..len]` starts with
/// `libcuda.so`, `libcudart.so`, `libcudart-` or `libnccl.so`. A path longer than the
/// [`NAME_MAX`] bytes read is cut, and its last component not seen: the
/// /proc scan then finds the library, late, and says so.
#[inline(always)]
fn names_cuda_library(bytes: &[u8; NAME_MAX], len: usize) -> bool {
    let mut start = usize::MAX;
    let mut k = 0;
    while k < BASENAME_MAX {
        if k >= len {
            start = 0;
            break;
        }
        if byte_at(bytes, len - 1 - k) == b'/' {
            start = len - k;
            break;
        }
        k += 1;
    }
    if start == usize::MAX {
        return false;
    }
    let at = |k: usize| byte_at(bytes, start + k);
    if at(0) != b'l' || at(1) != b'i' || at(2) != b'b' {
        return false;
    }
    let nccl = at(3) == b'n' && at(4) == b'c' && at(5) == b'c' && at(6) == b'l';
    if nccl && at(7) == b'.' && at(8) == b's' && at(9) == b'o' {
        return true;
    }
    let stem = at(3) == b'c' && at(4) == b'u' && at(5) == b'd';
    if !stem || at(6) != b'a' {
        return false;
    }
    let driver = at(7) == b'.' && at(8) == b's' && at(9) == b'o';
    let runtime =
        at(7) == b'r' && at(8) == b't' && (at(9) == b'-' || (at(9) == b'.' && at(10) == b's' && at(11) == b'o'));
    driver || runtime
}
