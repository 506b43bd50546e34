//! Leaving the process without waiting for the kernel to remove uprobes.
//!
//! Closing a uprobe's perf event costs the kernel a full RCU grace period,
//! and removals are serialised (measured: ~0.1 s per probe in a VM, so 10+ s
//! for one library). The trace is complete before we get here; making the
//! user (or Kubernetes) wait for the removal gains nothing. So a child
//! process inherits the probe fds, waits until the tracer is gone, and exits
//! itself, paying for the removal in the background. The probes it holds
//! record nothing meanwhile: the session emptied the pid filter.

/// Exits with `code`; `probes` are released by a background child.
pub fn leave(code: u8, probes: crate::daemon::probes::loader::Probes) -> ! {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: getpid/fork have no preconditions; the child only calls
    // async-signal-safe functions (getppid, usleep, _exit) before exiting.
    unsafe {
        let parent = libc::getpid();
        if libc::fork() == 0 {
            // The parent has closed all its files once we are reparented.
            while libc::getppid() == parent {
                libc::usleep(10_000);
            }
            libc::_exit(0);
        }
    }
    std::mem::forget(probes);
    // SAFETY: _exit skips destructors; everything was flushed and closed.
    unsafe { libc::_exit(i32::from(code)) }
}
