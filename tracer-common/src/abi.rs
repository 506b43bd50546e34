//! `#[repr(C)]` records written by the BPF programs and read by userspace.

/// Number of raw argument words kept per call: six registers plus up to six
/// stack words (`cuLaunchKernel` has eleven arguments).
pub const MAX_ARGS: usize = 12;
/// Register arguments on x86-64 System V.
pub const REG_ARGS: usize = 6;
/// Stack argument words the entry probe copies when a function has any.
pub const STACK_ARGS: usize = MAX_ARGS - REG_ARGS;

/// Discriminant in [`EventHeader::kind`].
pub mod kind {
    /// A completed CUDA call: [`super::CallEvent`].
    pub const CALL: u32 = 1;
    /// A traced process forked or exited: [`super::ProcEvent`].
    pub const PROC: u32 = 2;
    /// A completed call with a string argument read at entry: [`super::CallNameEvent`].
    pub const CALL_NAME: u32 = 3;
}

/// Bytes kept of a string argument (kernel or symbol name), NUL included.
pub const NAME_MAX: usize = 256;

/// A string argument read at entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameBuf {
    /// Bytes read, NUL included (0: the read failed).
    pub len: u32,
    pub _pad: u32,
    pub bytes: [u8; NAME_MAX],
}

impl Default for NameBuf {
    fn default() -> Self {
        Self { len: 0, _pad: 0, bytes: [0; NAME_MAX] }
    }
}

/// A completed call of a function with a string argument
/// (`cuModuleGetFunction`'s kernel name, `cuGetProcAddress`'s symbol).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallNameEvent {
    pub call: CallEvent,
    pub name: NameBuf,
}

/// First field of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// One of [`kind`].
    pub kind: u32,
    /// Size of the whole record in bytes, header included.
    pub size: u32,
}

/// Bits of [`CallEvent::flags`].
pub mod call_flags {
    /// [`super::CallEvent::out`] holds the value read from the out-pointer.
    pub const OUT_VALID: u32 = 1;
    /// The stack argument words could not be read.
    pub const STACK_UNREAD: u32 = 2;
    /// Word [`super::OUT2_WORD`] holds the value read from the second out-pointer.
    pub const OUT2_VALID: u32 = 4;
}

/// The argument word where the return probe stores the value read through
/// a second out-pointer (`cuMemGetInfo`'s total): the first stack-word slot,
/// unused by functions without stack or struct words.
pub const OUT2_WORD: usize = REG_ARGS;

/// One completed call, emitted by the return probe.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallEvent {
    pub header: EventHeader,
    /// `bpf_ktime_get_boot_ns()` at entry.
    pub entry_ns: u64,
    /// Return time minus entry time.
    pub dur_ns: u64,
    /// Thread group id (the process id users see).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Index into [`crate::funcs::FUNCS`].
    pub func_id: u32,
    /// [`call_flags`] bits.
    pub flags: u32,
    /// Raw return register (`rax`).
    pub ret: u64,
    /// Value read at return through the out-pointer argument, if the function has one.
    pub out: u64,
    /// Raw argument words at entry: rdi, rsi, rdx, rcx, r8, r9, then stack words.
    pub args: [u64; MAX_ARGS],
    /// The return address read at entry (`*(u64 *)rsp` at the first
    /// instruction): an address in the code that made the call, which
    /// userspace maps to its file (the trace's `caller`). 0 if unread.
    pub caller: u64,
}

/// Process lifecycle operations in [`ProcEvent::op`].
pub mod proc_op {
    /// A traced process forked a child process, now traced too.
    pub const FORK: u32 = 1;
    /// A traced process (its thread-group leader) exited.
    pub const EXIT: u32 = 2;
}

/// A traced process forked or exited.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcEvent {
    pub header: EventHeader,
    /// `bpf_ktime_get_boot_ns()` when it happened.
    pub ts_ns: u64,
    /// The child (fork) or the exiting process.
    pub pid: u32,
    /// The parent (fork); 0 for exit.
    pub ppid: u32,
    /// One of [`proc_op`].
    pub op: u32,
    pub _pad: u32,
}

/// Key of the entry map: one in-flight call per thread and function, so a
/// runtime call and the driver call nested inside it do not overwrite each
/// other, and a stale entry (call in flight when the probes were attached)
/// is replaced by the next call of the same function.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryKey {
    pub pid_tgid: u64,
    pub func_id: u32,
    pub _pad: u32,
}

/// What the entry probe keeps until the return probe fires.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryState {
    pub entry_ns: u64,
    pub flags: u32,
    pub _pad: u32,
    pub args: [u64; MAX_ARGS],
    /// [`CallEvent::caller`].
    pub caller: u64,
}

/// Slots of the per-CPU drop counter map.
pub mod drop_slot {
    /// `bpf_ringbuf_reserve` failed: the ring buffer was full.
    pub const RINGBUF_FULL: u32 = 0;
    /// The entry map refused an insert.
    pub const ENTRY_MAP_FULL: u32 = 1;
    /// A return probe fired with no stored entry (call began before attach,
    /// or its entry was evicted).
    pub const RETURN_WITHOUT_ENTRY: u32 = 2;
    /// A process event (fork/exit) was lost because the ring buffer was full.
    pub const PROC_RINGBUF_FULL: u32 = 3;
    /// A traced process's new child could not be added to the traced set
    /// (the map was full): none of the child's calls are seen.
    pub const TRACED_MAP_FULL: u32 = 4;
    /// A call's string argument (a kernel or symbol name) could not be
    /// saved: the call is recorded without it.
    pub const NAME_MAP_FULL: u32 = 5;
    /// A library open could not be remembered or held (a map was full):
    /// the library is found by the /proc scan instead, late.
    pub const HOLD_MAP_FULL: u32 = 6;
    /// Number of slots.
    pub const COUNT: u32 = 7;
    /// Slots of the per-function drop map (at least the number of functions).
    pub const FUNC_SLOTS: u32 = 512;
    /// The per-function drop slot of every function without a row in the
    /// table (name-only probes): their drops are counted together here.
    pub const FUNC_OTHER: u32 = FUNC_SLOTS - 1;
}

/// The BPF attach cookie: which function a probe serves and how to read its
/// arguments, so one program serves every symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cookie {
    pub func_id: u16,
    /// Stack words to copy at entry (0 or [`STACK_ARGS`]).
    pub stack_words: u8,
    /// 1-based index of an argument that points to a value to read at return; 0 = none.
    pub out_arg: u8,
    /// 1-based index of an argument pointing to a struct whose first
    /// [`STACK_ARGS`] words are copied at entry into the stack-word slots
    /// (launch-config structs); 0 = none.
    pub deref_arg: u8,
    /// 1-based index of a `const char*` argument copied at entry; 0 = none.
    pub str_arg: u8,
    /// Where in the `deref_arg` struct the copy starts, in 8-byte words
    /// (a copy descriptor's sizes lie past its first [`STACK_ARGS`] words).
    pub deref_at: u8,
    /// 1-based index of a second out-pointer argument read at return; 0 = none.
    pub out2_arg: u8,
}

impl Cookie {
    pub const fn encode(self) -> u64 {
        (self.func_id as u64)
            | ((self.stack_words as u64) << 16)
            | ((self.out_arg as u64) << 24)
            | ((self.deref_arg as u64) << 32)
            | ((self.str_arg as u64) << 40)
            | ((self.deref_at as u64) << 48)
            | ((self.out2_arg as u64) << 56)
    }

    pub const fn decode(raw: u64) -> Self {
        Self {
            func_id: raw as u16,
            stack_words: (raw >> 16) as u8,
            out_arg: (raw >> 24) as u8,
            deref_arg: (raw >> 32) as u8,
            str_arg: (raw >> 40) as u8,
            deref_at: (raw >> 48) as u8,
            out2_arg: (raw >> 56) as u8,
        }
    }
}

/// Fixed size of each record type, checked by the decoder before any cast.
pub const CALL_EVENT_SIZE: usize = core::mem::size_of::<CallEvent>();
pub const PROC_EVENT_SIZE: usize = core::mem::size_of::<ProcEvent>();
pub const CALL_NAME_EVENT_SIZE: usize = core::mem::size_of::<CallNameEvent>();

// No implicit padding anywhere: the sums of the field sizes equal the sizes.
const _: () = assert!(core::mem::size_of::<EventHeader>() == 8);
const _: () = assert!(CALL_EVENT_SIZE == 8 + 8 + 8 + 4 * 4 + 8 + 8 + 8 * MAX_ARGS + 8);
const _: () = assert!(PROC_EVENT_SIZE == 8 + 8 + 4 * 4);
const _: () = assert!(core::mem::size_of::<EntryKey>() == 16);
const _: () = assert!(core::mem::size_of::<NameBuf>() == 8 + NAME_MAX);
const _: () = assert!(CALL_NAME_EVENT_SIZE == CALL_EVENT_SIZE + 8 + NAME_MAX);
const _: () = assert!(core::mem::size_of::<EntryState>() == 16 + 8 * MAX_ARGS + 8);

/// Kind of [`LibOpenEvent`] in the load-watch ring buffer (its own ring,
/// so these never mix with calls; the value differs from [`kind`]'s anyway).
pub const LIB_OPEN_KIND: u32 = 16;

/// Kind of an exec report in the load-watch ring: a [`LibOpenEvent`] with
/// `fd` -1 and no name, sent when a process that is neither traced nor the
/// tracer calls `execve` while the daemon matches a pattern. The process is
/// "pending" (its CUDA library opens are held) until userspace decides.
pub const EXEC_KIND: u32 = 17;

/// Bits of [`LibOpenEvent::flags`].
pub mod lib_open_flags {
    /// The kernel sent the process SIGSTOP: userspace must send SIGCONT.
    pub const HELD: u32 = 1;
    /// The process was pending (not yet matched against the pattern) when it
    /// opened the library: userspace decides whether to trace it first.
    pub const PENDING: u32 = 2;
}

/// A traced process opened (`open`/`openat`/`openat2`, fd valid) a file
/// whose name looks like a CUDA library; sent at syscall exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LibOpenEvent {
    pub header: EventHeader,
    /// `bpf_ktime_get_boot_ns()` at syscall exit (the start of a hold).
    pub ts_ns: u64,
    /// Thread group id.
    pub pid: u32,
    /// The thread that opened it.
    pub tid: u32,
    /// The new file descriptor in `pid`.
    pub fd: i32,
    /// [`lib_open_flags`] bits.
    pub flags: u32,
    /// The name as the process passed it (may be relative, may be cut at [`NAME_MAX`]).
    pub name: NameBuf,
}

pub const LIB_OPEN_EVENT_SIZE: usize = core::mem::size_of::<LibOpenEvent>();
const _: () = assert!(LIB_OPEN_EVENT_SIZE == 8 + 8 + 4 * 4 + 8 + NAME_MAX);

/// Slots of the `HOLD_CTL` array map (u64 each).
pub mod hold_slot {
    /// Boot-clock ns of userspace's last heartbeat: the kernel holds a
    /// loading thread only while this is fresh (a dead tracer holds nothing).
    pub const HEARTBEAT_NS: u32 = 0;
    /// Opens of CUDA libraries whose event could not be queued (ring full).
    pub const EVENTS_LOST: u32 = 1;
    /// Number of slots.
    pub const COUNT: u32 = 2;
}

/// How old the heartbeat may be for the kernel to still hold a thread.
pub const HOLD_HEARTBEAT_FRESH_NS: u64 = 2_000_000_000;
