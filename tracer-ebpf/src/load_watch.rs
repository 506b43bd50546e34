//! Notices a traced process opening a CUDA library and holds it there:
//! raw `sys_enter`/`sys_exit` tracepoints (no tracefs, no kprobes) remember
//! the file name of an `open`/`openat`/`openat2`, and at a successful exit
//! whose name looks like `libcuda.so*`/`libcudart.so*` queue a
//! [`LibOpenEvent`] and stop the process with SIGSTOP until userspace has
//! attached the probes to that file and sends SIGCONT.

use aya_ebpf::{
    bindings::{pt_regs, BPF_ANY, BPF_RB_FORCE_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns, bpf_probe_read_kernel, bpf_probe_read_user_str_bytes,
        generated::bpf_send_signal_thread,
    },
    macros::{map, raw_tracepoint},
    maps::{Array, HashMap, LruHashMap, RingBuf},
    programs::RawTracePointContext,
};
use tracer_common::abi::{
    hold_slot, lib_open_flags, EventHeader, LibOpenEvent, HOLD_HEARTBEAT_FRESH_NS, LIB_OPEN_EVENT_SIZE, LIB_OPEN_KIND,
    NAME_MAX,
};

const SYS_OPEN: u64 = 2;
const SYS_OPENAT: u64 = 257;
const SYS_OPENAT2: u64 = 437;
const SIGSTOP: u32 = 19;

/// File-name pointer of an open in flight, per thread (LRU: a thread that
/// dies inside the syscall cannot fill it).
#[map]
static OPEN_NAMES: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4_096, 0);

/// Library opens for userspace; woken at once (a process waits on it).
#[map]
static LIB_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

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
    if !crate::is_traced((pid_tgid >> 32) as u32) {
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
        let _ = OPEN_NAMES.insert(pid_tgid, ptr, BPF_ANY as u64);
    }
    0
}

/// `sys_exit(regs, ret)`: a remembered open that returned a descriptor for a
/// CUDA library is queued and, while the tracer is alive, held.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn open_exit(ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(ptr) = (unsafe { OPEN_NAMES.get(pid_tgid) }).copied() else {
        return 0;
    };
    let _ = OPEN_NAMES.remove(pid_tgid);
    let ret: i64 = ctx.arg(1);
    if ret < 0 {
        return 0;
    }
    let Some(mut entry) = LIB_EVENTS.reserve::<LibOpenEvent>(0) else {
        count_lost();
        return 0;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points to the reserved record; the name is written first,
    // then every other field before submit.
    unsafe {
        let bytes = &mut (*ev).name.bytes;
        let len = match bpf_probe_read_user_str_bytes(ptr as *const u8, bytes) {
            Ok(s) => s.len(),
            Err(_) => {
                entry.discard(0);
                return 0;
            }
        };
        if !names_cuda_library(bytes, len) {
            entry.discard(0);
            return 0;
        }
        let now = bpf_ktime_get_boot_ns();
        let pid = (pid_tgid >> 32) as u32;
        let mut flags = 0;
        if heartbeat_fresh(now) && HELD.insert(pid, now, BPF_ANY as u64).is_ok() {
            // Delivered on the way back to user mode: no instruction after
            // this open runs before userspace sends SIGCONT.
            if bpf_send_signal_thread(SIGSTOP) == 0 {
                flags |= lib_open_flags::HELD;
            } else {
                let _ = HELD.remove(pid);
            }
        }
        (*ev).header = EventHeader { kind: LIB_OPEN_KIND, size: LIB_OPEN_EVENT_SIZE as u32 };
        (*ev).ts_ns = now;
        (*ev).pid = pid;
        (*ev).tid = pid_tgid as u32;
        (*ev).fd = ret as i32;
        (*ev).flags = flags;
        (*ev).name.len = (len + 1).min(NAME_MAX) as u32;
        (*ev).name._pad = 0;
    }
    entry.submit(BPF_RB_FORCE_WAKEUP as u64);
    0
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

/// Longest file name (last path component) recognised as a CUDA library.
const BASENAME_MAX: usize = 48;

/// Whether the last path component of `bytes[..len]` starts with
/// `libcuda.so`, `libcudart.so` or `libcudart-`. Only the last
/// [`BASENAME_MAX`] bytes are searched for the final `/`: a loop over the
/// whole name with data-dependent branches is too much for the verifier.
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
    let stem = at(0) == b'l' && at(1) == b'i' && at(2) == b'b' && at(3) == b'c' && at(4) == b'u' && at(5) == b'd';
    if !stem || at(6) != b'a' {
        return false;
    }
    let driver = at(7) == b'.' && at(8) == b's' && at(9) == b'o';
    let runtime =
        at(7) == b'r' && at(8) == b't' && (at(9) == b'-' || (at(9) == b'.' && at(10) == b's' && at(11) == b'o'));
    driver || runtime
}
