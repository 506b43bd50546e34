//! BPF programs: one uprobe/uretprobe pair serving every traced CUDA symbol
//! (the attach cookie says which function and how to read its arguments),
//! plus fork/exit tracepoints that keep the traced-process set in step with
//! process trees, and the load watch that holds a process opening a CUDA
//! library until its probes are attached (`load_watch`).
#![no_std]
#![no_main]

mod load_watch;

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_buf,
        bpf_probe_read_user, bpf_probe_read_user_str_bytes, generated::bpf_get_attach_cookie,
    },
    macros::{map, raw_tracepoint, uprobe, uretprobe},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{ProbeContext, RawTracePointContext, RetProbeContext},
    EbpfContext,
};
use tracer_common::abi::{
    call_flags, drop_slot, kind, proc_op, CallEvent, CallNameEvent, Cookie, EntryKey, EntryState, EventHeader, NameBuf,
    ProcEvent, CALL_EVENT_SIZE, CALL_NAME_EVENT_SIZE, MAX_ARGS, NAME_MAX, OUT2_WORD, PROC_EVENT_SIZE, REG_ARGS,
    STACK_ARGS,
};

/// Completed calls and process events for userspace. Userspace may resize it
/// before load (`--ringbuf-bytes`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// Calls in flight. LRU so a process that dies mid-call cannot fill it.
#[map]
static ENTRIES: LruHashMap<EntryKey, EntryState> = LruHashMap::with_max_entries(65_536, 0);

/// String arguments of calls in flight (kernel and symbol names), keyed like
/// ENTRIES; only functions with a string argument use it.
#[map]
static NAMES: LruHashMap<EntryKey, NameBuf> = LruHashMap::with_max_entries(8_192, 0);

/// Room to build a NameBuf: too large for the 512-byte BPF stack.
#[map]
static NAME_SCRATCH: PerCpuArray<NameBuf> = PerCpuArray::with_max_entries(1, 0);

/// Traced thread-group ids: the in-kernel pid filter.
#[map]
static TRACED: HashMap<u32, u32> = HashMap::with_max_entries(16_384, 0);

/// Per-CPU counts of what could not be recorded (slots in `drop_slot`).
#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(drop_slot::COUNT, 0);

/// Per-CPU counts of calls lost to a full ring buffer, by function id.
#[map]
static DROPS_BY_FUNC: PerCpuArray<u64> = PerCpuArray::with_max_entries(drop_slot::FUNC_SLOTS, 0);

/// Byte offset of `tgid` in `struct task_struct`, read from the kernel's BTF
/// by userspace; 0 disables fork following.
#[no_mangle]
static TASK_TGID_OFFSET: u32 = 0;

/// Wake userspace only once this many bytes wait in the ring buffer; below
/// it the reader's timer collects them. One wakeup per event would cost a
/// context switch per CUDA call. Set by userspace (a quarter of the ring).
#[no_mangle]
static WAKEUP_BYTES: u64 = 0;

#[inline(always)]
fn submit_flags() -> u64 {
    // SAFETY: a global written by userspace before load.
    let threshold = unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) };
    if threshold != 0 && EVENTS.query(BPF_RB_AVAIL_DATA as u64) < threshold {
        BPF_RB_NO_WAKEUP as u64
    } else {
        BPF_RB_FORCE_WAKEUP as u64
    }
}

#[inline(always)]
pub(crate) fn count_drop(slot: u32) {
    if let Some(p) = DROPS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn count_call_drop(func_id: u32) {
    count_drop(drop_slot::RINGBUF_FULL);
    // Functions without a table row (name-only probes) share the last slot.
    let slot = if (func_id as usize) < FUNCS_LEN { func_id } else { drop_slot::FUNC_OTHER };
    if let Some(p) = DROPS_BY_FUNC.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn is_traced(tgid: u32) -> bool {
    // SAFETY: read-only lookup of a plain value.
    unsafe { TRACED.get(tgid) }.is_some()
}

#[uprobe]
pub fn call_entry(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_traced((pid_tgid >> 32) as u32) {
        return 0;
    }
    // SAFETY: the helper only reads the link's cookie.
    let cookie = Cookie::decode(unsafe { bpf_get_attach_cookie(ctx.as_ptr()) });
    // SAFETY: ctx.regs points to the probe's pt_regs for the program's duration.
    let regs = unsafe { &*ctx.regs };
    let mut state = EntryState {
        entry_ns: unsafe { bpf_ktime_get_boot_ns() },
        flags: 0,
        _pad: 0,
        args: [regs.rdi, regs.rsi, regs.rdx, regs.rcx, regs.r8, regs.r9, 0, 0, 0, 0, 0, 0],
        caller: 0,
    };
    // At the first instruction rsp points to the return address (which says
    // who called); stack arguments start one word above it. One read each
    // call: the return address alone, or with the stack words.
    if cookie.stack_words != 0 {
        let src = regs.rsp as *const [u64; 1 + STACK_ARGS];
        // SAFETY: bpf_probe_read_user validates the user address.
        match unsafe { bpf_probe_read_user(src) } {
            Ok(words) => {
                state.caller = words[0];
                state.args[REG_ARGS..].copy_from_slice(&words[1..]);
            }
            Err(_) => state.flags |= call_flags::STACK_UNREAD,
        }
    } else {
        // SAFETY: bpf_probe_read_user validates the user address.
        state.caller = unsafe { bpf_probe_read_user(regs.rsp as *const u64) }.unwrap_or(0);
    }
    if cookie.deref_arg != 0 {
        // A launch-config or copy-descriptor struct: STACK_ARGS of its words,
        // from word `deref_at`, go where stack words would.
        if let Some(ptr) = state.args.get((cookie.deref_arg - 1) as usize) {
            let src = ptr.wrapping_add(cookie.deref_at as u64 * 8) as *const [u64; STACK_ARGS];
            // SAFETY: bpf_probe_read_user validates the user address.
            match unsafe { bpf_probe_read_user(src) } {
                Ok(words) => state.args[REG_ARGS..].copy_from_slice(&words),
                Err(_) => state.flags |= call_flags::STACK_UNREAD,
            }
        }
    }
    let key = EntryKey { pid_tgid, func_id: cookie.func_id as u32, _pad: 0 };
    if cookie.str_arg != 0 {
        if let Some(ptr) = state.args.get((cookie.str_arg - 1) as usize) {
            save_name(&key, *ptr);
        }
    }
    if ENTRIES.insert(key, state, BPF_ANY as u64).is_err() {
        count_drop(drop_slot::ENTRY_MAP_FULL);
    }
    0
}

/// Copies the string at user address `ptr` into NAMES under `key`.
#[inline(always)]
fn save_name(key: &EntryKey, ptr: u64) {
    let Some(buf) = NAME_SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: a per-CPU scratch slot nobody else uses during this program.
    let buf = unsafe { &mut *buf };
    // SAFETY: bpf_probe_read_user_str_bytes validates the user address.
    buf.len = match unsafe { bpf_probe_read_user_str_bytes(ptr as *const u8, &mut buf.bytes) } {
        Ok(s) => (s.len() + 1).min(NAME_MAX) as u32,
        Err(_) => 0,
    };
    // By reference: by value would copy 264 bytes onto the 512-byte BPF stack.
    #[allow(clippy::needless_borrows_for_generic_args)]
    if NAMES.insert(key, &*buf, BPF_ANY as u64).is_err() {
        count_drop(drop_slot::NAME_MAP_FULL);
    }
}

#[uretprobe]
pub fn call_return(ctx: RetProbeContext) -> u32 {
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the helper only reads the link's cookie.
    let cookie = Cookie::decode(unsafe { bpf_get_attach_cookie(ctx.as_ptr()) });
    let key = EntryKey { pid_tgid, func_id: cookie.func_id as u32, _pad: 0 };
    // SAFETY: the value is copied out before the entry is removed.
    let state = match unsafe { ENTRIES.get(key) } {
        Some(s) => *s,
        None => {
            if is_traced((pid_tgid >> 32) as u32) {
                count_drop(drop_slot::RETURN_WITHOUT_ENTRY);
            }
            return 0;
        }
    };
    let _ = ENTRIES.remove(key);

    let mut flags = state.flags;
    let mut out = 0u64;
    if cookie.out_arg != 0 {
        if let Some(ptr) = state.args.get((cookie.out_arg - 1) as usize) {
            // SAFETY: bpf_probe_read_user validates the user address.
            if let Ok(v) = unsafe { bpf_probe_read_user(*ptr as *const u64) } {
                out = v;
                flags |= call_flags::OUT_VALID;
            }
        }
    }
    let mut args = state.args;
    if cookie.out2_arg != 0 {
        if let Some(ptr) = state.args.get((cookie.out2_arg - 1) as usize) {
            // SAFETY: bpf_probe_read_user validates the user address.
            if let Ok(v) = unsafe { bpf_probe_read_user(*ptr as *const u64) } {
                args[OUT2_WORD] = v;
                flags |= call_flags::OUT2_VALID;
            }
        }
    }
    // SAFETY: ctx.regs points to the probe's pt_regs.
    let ret = unsafe { (*ctx.regs).rax };

    let call = CallEvent {
        header: EventHeader { kind: kind::CALL, size: CALL_EVENT_SIZE as u32 },
        entry_ns: state.entry_ns,
        dur_ns: now.wrapping_sub(state.entry_ns),
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        func_id: cookie.func_id as u32,
        flags,
        ret,
        out,
        args,
        caller: state.caller,
    };
    if cookie.str_arg != 0 {
        emit_call_with_name(call, &key);
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<CallEvent>(0) else {
        count_call_drop(cookie.func_id as u32);
        return 0;
    };
    entry.write(call);
    entry.submit(submit_flags());
    0
}

/// Emits a call whose string argument was saved at entry.
#[inline(always)]
fn emit_call_with_name(mut call: CallEvent, key: &EntryKey) {
    let Some(mut entry) = EVENTS.reserve::<CallNameEvent>(0) else {
        count_call_drop(call.func_id);
        let _ = NAMES.remove(key);
        return;
    };
    call.header = EventHeader { kind: kind::CALL_NAME, size: CALL_NAME_EVENT_SIZE as u32 };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points to the reserved record; every byte is written below.
    unsafe {
        (*ev).call = call;
        (*ev).name.len = 0;
        (*ev).name._pad = 0;
        match NAMES.get(key) {
            Some(saved) => {
                if bpf_probe_read_kernel_buf(saved.bytes.as_ptr(), &mut (*ev).name.bytes).is_ok() {
                    (*ev).name.len = saved.len;
                }
            }
            None => (*ev).name.bytes[0] = 0,
        }
    }
    let _ = NAMES.remove(key);
    entry.submit(submit_flags());
}

fn emit_proc(pid: u32, ppid: u32, op: u32) {
    let Some(mut entry) = EVENTS.reserve::<ProcEvent>(0) else {
        count_drop(drop_slot::PROC_RINGBUF_FULL);
        return;
    };
    entry.write(ProcEvent {
        header: EventHeader { kind: kind::PROC, size: PROC_EVENT_SIZE as u32 },
        ts_ns: unsafe { bpf_ktime_get_boot_ns() },
        pid,
        ppid,
        op,
        _pad: 0,
    });
    entry.submit(0);
}

/// `sched_process_fork(parent, child)`, run by the parent: a traced process's
/// new child process is traced before it runs its first instruction.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn proc_fork(ctx: RawTracePointContext) -> i32 {
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    let traced = is_traced(parent);
    if !traced && !load_watch::is_pending(parent) {
        return 0;
    }
    // SAFETY: a global written by userspace before load.
    let offset = unsafe { core::ptr::read_volatile(&TASK_TGID_OFFSET) };
    if offset == 0 {
        return 0;
    }
    let child: u64 = ctx.arg(1);
    // SAFETY: bpf_probe_read_kernel validates the kernel address.
    let Ok(child_tgid) = (unsafe { bpf_probe_read_kernel((child + offset as u64) as *const u32) }) else {
        return 0;
    };
    // A new thread shares the parent's tgid: nothing to add.
    if child_tgid == parent || child_tgid == 0 {
        return 0;
    }
    if !traced {
        load_watch::fork_pending(child_tgid);
        return 0;
    }
    if TRACED.insert(child_tgid, parent, BPF_ANY as u64).is_err() {
        // The child runs untraced: counted, and no fork notice is sent.
        count_drop(drop_slot::TRACED_MAP_FULL);
        return 0;
    }
    emit_proc(child_tgid, parent, proc_op::FORK);
    0
}

/// `sched_process_exit`, run by the exiting thread: when a traced process's
/// leader exits, stop tracing its tgid so a reused pid starts clean.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn proc_exit(_ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid != pid_tgid as u32 {
        return 0;
    }
    load_watch::forget_pending(tgid);
    if !is_traced(tgid) {
        return 0;
    }
    let _ = TRACED.remove(tgid);
    emit_proc(tgid, 0, proc_op::EXIT);
    0
}

/// The cheapest possible probe pair, for the benchmark's "physical limit".
#[uprobe]
pub fn empty_entry(_ctx: ProbeContext) -> u32 {
    0
}

#[uretprobe]
pub fn empty_return(_ctx: RetProbeContext) -> u32 {
    0
}

const _: () = assert!(MAX_ARGS == REG_ARGS + STACK_ARGS);

/// Ids below this have a table row (and their own drop slot).
const FUNCS_LEN: usize = tracer_common::funcs::FUNCS.len();

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
