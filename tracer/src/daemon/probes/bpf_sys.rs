//! The two `bpf(2)` commands aya 0.14 does not offer: loading a uprobe
//! program with `expected_attach_type = BPF_TRACE_UPROBE_MULTI`, and
//! creating a uprobe_multi link (many offsets of one file in one link,
//! kernel ≥ 6.6), each a typed call over the raw syscall.

use std::{
    ffi::CStr,
    os::fd::{AsFd, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
};

use aya_obj::generated::bpf_insn;

const _: () = assert!(std::mem::size_of::<bpf_insn>() == 8);

/// `enum bpf_cmd` values used here.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
/// `BPF_PROG_TYPE_KPROBE`: uprobes are kprobe-type programs.
const BPF_PROG_TYPE_KPROBE: u32 = 2;
/// `BPF_TRACE_UPROBE_MULTI` in `enum bpf_attach_type`.
pub const BPF_TRACE_UPROBE_MULTI: u32 = 48;
/// `BPF_F_UPROBE_MULTI_RETURN`: the link's probes fire at return.
const BPF_F_UPROBE_MULTI_RETURN: u32 = 1;
/// Most offsets one link may take (the kernel's `MAX_UPROBE_MULTI_CNT`).
pub const MAX_OFFSETS: usize = 1 << 20;

/// Why a `bpf(2)` call failed.
#[derive(Debug, thiserror::Error)]
pub enum BpfSysError {
    /// The kernel does not know the command, attach type or program shape
    /// (before 6.6, or built without uprobe_multi): use perf-event uprobes.
    #[error("{what}: the kernel does not support uprobe_multi ({source})")]
    Unsupported { what: &'static str, source: std::io::Error },
    #[error("{what}: {source}")]
    Failed { what: &'static str, source: std::io::Error },
    #[error("{what}: {count} offsets, more than one link takes")]
    TooMany { what: &'static str, count: usize },
}

impl BpfSysError {
    fn from_errno(what: &'static str) -> Self {
        let source = std::io::Error::last_os_error();
        match source.raw_os_error() {
            Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS | libc::E2BIG) => Self::Unsupported { what, source },
            _ => Self::Failed { what, source },
        }
    }

    /// Whether the per-probe perf-event path should be used instead.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Self::Unsupported { .. })
    }
}

/// The `BPF_PROG_LOAD` part of `union bpf_attr` (up to `expected_attach_type`).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}
const _: () = assert!(std::mem::size_of::<ProgLoadAttr>() == 72);

/// The `BPF_LINK_CREATE` part of `union bpf_attr`, uprobe_multi variant.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    path: u64,
    offsets: u64,
    ref_ctr_offsets: u64,
    cookies: u64,
    cnt: u32,
    multi_flags: u32,
    pid: u32,
    _pad: u32,
}
const _: () = assert!(std::mem::size_of::<LinkCreateAttr>() == 64);

/// One `bpf(2)` call returning a new descriptor.
///
/// # Safety
/// `attr` must be the attribute struct of `cmd`, every pointer in it valid
/// for the kernel to read (or write, for a log buffer) during the call.
unsafe fn bpf_fd<T>(cmd: libc::c_long, attr: &mut T, what: &'static str) -> Result<OwnedFd, BpfSysError> {
    // SAFETY: the caller guarantees `attr` is `cmd`'s attribute struct with
    // valid pointers; the size passed is the struct's own (the kernel zero-
    // fills the rest of its `bpf_attr`).
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), std::mem::size_of::<T>()) };
    if ret < 0 {
        return Err(BpfSysError::from_errno(what));
    }
    let fd = i32::try_from(ret).map_err(|_| BpfSysError::Failed {
        what,
        source: std::io::Error::other(format!("bpf returned {ret}, not a descriptor")),
    })?;
    // SAFETY: a successful BPF_PROG_LOAD/BPF_LINK_CREATE returns a new
    // descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Loads `insns` (relocated) as a uprobe program that uprobe_multi links accept.
pub fn load_uprobe_multi(name: &str, insns: &[bpf_insn], license: &CStr) -> Result<OwnedFd, BpfSysError> {
    let what = "loading a uprobe_multi program";
    let mut prog_name = [0u8; 16];
    for (dst, src) in prog_name.iter_mut().zip(name.bytes().take(15)) {
        *dst = src;
    }
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_KPROBE,
        insn_cnt: u32::try_from(insns.len()).map_err(|_| BpfSysError::TooMany { what, count: insns.len() })?,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name,
        expected_attach_type: BPF_TRACE_UPROBE_MULTI,
        ..Default::default()
    };
    // SAFETY: `attr` is BPF_PROG_LOAD's struct; `insns` and `license` are
    // borrowed for the whole call; no log buffer is passed.
    unsafe { bpf_fd(BPF_PROG_LOAD, &mut attr, what) }
}

/// Which end of the functions a link's probes fire at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    Entry,
    Return,
}

/// Attaches `prog` (loaded by [`load_uprobe_multi`]) at every offset of the
/// file at `path`, with one cookie per offset, for every process. The
/// returned link detaches all of them when closed.
pub fn attach_uprobe_multi(
    prog: BorrowedFd<'_>,
    path: &CStr,
    offsets: &[u64],
    cookies: &[u64],
    site: Site,
) -> Result<OwnedFd, BpfSysError> {
    let what = "creating a uprobe_multi link";
    if offsets.len() != cookies.len() || offsets.is_empty() || offsets.len() > MAX_OFFSETS {
        return Err(BpfSysError::TooMany { what, count: offsets.len() });
    }
    let mut attr = LinkCreateAttr {
        prog_fd: u32::try_from(prog.as_fd().as_raw_fd()).unwrap_or(u32::MAX),
        attach_type: BPF_TRACE_UPROBE_MULTI,
        path: path.as_ptr() as u64,
        offsets: offsets.as_ptr() as u64,
        cookies: cookies.as_ptr() as u64,
        cnt: offsets.len() as u32,
        multi_flags: if site == Site::Return { BPF_F_UPROBE_MULTI_RETURN } else { 0 },
        ..Default::default()
    };
    // SAFETY: `attr` is BPF_LINK_CREATE's struct; `path`, `offsets` and
    // `cookies` (of `cnt` elements each) are borrowed for the whole call.
    unsafe { bpf_fd(BPF_LINK_CREATE, &mut attr, what) }
}
