//! Releasing processes the kernel holds at a CUDA library open, on every
//! path: after the attach, at shutdown, and — through a watchdog process —
//! when the tracer is killed outright; the same watchdog marks the session
//! `killed` in its metadata.json.
//!
//! The kernel side stops a process only while the heartbeat in `HOLD_CTL`
//! is fresh, and records each stopped process in `HELD`. The watchdog is
//! forked at start with nothing but those two maps, the session dir and a
//! pidfd of the tracer; when the pidfd says the tracer is gone (SIGKILL
//! included), it zeroes the heartbeat, sends SIGCONT to every process in
//! `HELD`, patches a session still `running` to `killed`, and exits. It uses
//! raw system calls on stack memory only: after a fork of a multi-threaded
//! process, only async-signal-safe work is allowed.

use std::os::fd::RawFd;

use tracer_common::abi::hold_slot;

/// Why the watchdog could not be started.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error("pidfd_open of the tracer failed: {0} (needs Linux 5.3+)")]
    Pidfd(std::io::Error),
    #[error("forking the hold watchdog failed: {0}")]
    Fork(std::io::Error),
}

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

/// The map-element part of `union bpf_attr`.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// One `bpf(2)` map call; true on success. Async-signal-safe.
fn map_call(cmd: libc::c_long, fd: RawFd, key: *const u8, value: *mut u8) -> bool {
    let attr = MapElemAttr { map_fd: fd as u32, _pad: 0, key: key as u64, value: value as u64, flags: 0 };
    // SAFETY: `attr` and the buffers it points to live across the call and
    // have the sizes the map was created with (u32 keys, u64 values).
    unsafe { libc::syscall(libc::SYS_bpf, cmd, &attr as *const MapElemAttr, std::mem::size_of::<MapElemAttr>()) == 0 }
}

/// Writes `value` into slot `slot` of the `HOLD_CTL` array.
pub fn set_ctl(ctl_fd: RawFd, slot: u32, value: u64) {
    let mut v = value;
    map_call(BPF_MAP_UPDATE_ELEM, ctl_fd, (&slot as *const u32).cast(), (&mut v as *mut u64).cast());
}

/// Reads slot `slot` of the `HOLD_CTL` array (0 when unreadable).
pub fn get_ctl(ctl_fd: RawFd, slot: u32) -> u64 {
    let mut v = 0u64;
    map_call(BPF_MAP_LOOKUP_ELEM, ctl_fd, (&slot as *const u32).cast(), (&mut v as *mut u64).cast());
    v
}

/// Lets `pid` run again and forgets its hold. Async-signal-safe.
pub fn release(held_fd: RawFd, pid: u32) {
    map_call(BPF_MAP_DELETE_ELEM, held_fd, (&pid as *const u32).cast(), std::ptr::null_mut());
    // SAFETY: kill has no memory preconditions; a pid that is gone is fine.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
}

/// Releases every process in `HELD`; returns how many. Async-signal-safe.
pub fn release_all(held_fd: RawFd) -> usize {
    let mut released = 0;
    // Deleting the key we stand on restarts the walk from the first key.
    for _ in 0..65_536 {
        let mut first = 0u32;
        if !map_call(BPF_MAP_GET_NEXT_KEY, held_fd, std::ptr::null(), (&mut first as *mut u32).cast()) {
            break;
        }
        release(held_fd, first);
        released += 1;
    }
    released
}

/// What the watchdog does once the tracer is gone.
#[derive(Clone, Copy, Debug, Default)]
pub struct WatchdogJobs {
    /// `HELD` and `HOLD_CTL`: release every held process.
    pub holds: Option<(RawFd, RawFd)>,
    /// The session dir: mark its metadata.json `killed` if it still says `running`.
    pub session_dir: Option<RawFd>,
}

/// Forks the watchdog that does `jobs` once this process is gone. It keeps
/// only the descriptors `jobs` names and a pidfd of the tracer.
pub fn spawn_watchdog(jobs: WatchdogJobs) -> Result<(), HoldError> {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    // SAFETY: pidfd_open takes a pid and flags, returns a new fd or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, me, 0) } as RawFd;
    if pidfd < 0 {
        return Err(HoldError::Pidfd(std::io::Error::last_os_error()));
    }
    // SAFETY: the child runs only async-signal-safe code (close, sigaction,
    // poll, bpf, kill, usleep, _exit) and never returns.
    match unsafe { libc::fork() } {
        -1 => {
            // SAFETY: closing the pidfd we opened above.
            unsafe { libc::close(pidfd) };
            Err(HoldError::Fork(std::io::Error::last_os_error()))
        }
        0 => watchdog(jobs, pidfd),
        _ => {
            // SAFETY: the child has its own copy; ours is not needed.
            unsafe { libc::close(pidfd) };
            Ok(())
        }
    }
}

fn watchdog(jobs: WatchdogJobs, pidfd: RawFd) -> ! {
    let (held_fd, ctl_fd) = jobs.holds.unwrap_or((-1, -1));
    close_all_but([held_fd, ctl_fd, pidfd, jobs.session_dir.unwrap_or(-1)]);
    // SAFETY: only async-signal-safe calls on fds and memory we own.
    unsafe {
        // A Ctrl-C or SIGTERM meant for the tracer must not end the one
        // process that cleans up after it.
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
            libc::signal(sig, libc::SIG_IGN);
        }
        let mut pfd = libc::pollfd { fd: pidfd, events: libc::POLLIN, revents: 0 };
        while libc::poll(&mut pfd, 1, -1) <= 0 {}
        if jobs.holds.is_some() {
            // No new holds, then release: twice, for a hold that had passed
            // the heartbeat check while the first walk ran.
            set_ctl(ctl_fd, hold_slot::HEARTBEAT_NS, 0);
            release_all(held_fd);
            libc::usleep(50_000);
            release_all(held_fd);
        }
        if let Some(dir) = jobs.session_dir {
            // A tracer that ended on its own wrote its final status: no-op then.
            crate::format::metadata_store::mark_ended(dir, crate::format::metadata_store::EndMark::Killed);
        }
        libc::_exit(0)
    }
}

/// Closes every descriptor but `keep` (negative entries are none).
/// Async-signal-safe.
fn close_all_but(mut keep: [RawFd; 4]) {
    keep.sort_unstable();
    let mut from = 0;
    for fd in keep.into_iter().filter(|fd| *fd >= 0) {
        if fd > from {
            // SAFETY: close_range only closes descriptors of this process.
            unsafe { libc::syscall(libc::SYS_close_range, from as u32, (fd - 1) as u32, 0) };
        }
        from = fd + 1;
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, from as u32, u32::MAX, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_calls_on_a_bad_fd_fail_quietly() {
        assert_eq!(get_ctl(-1, 0), 0);
        assert_eq!(release_all(-1), 0);
    }
}
