//! Child processes in tests: killed when a test ends, their logs collected,
//! waited for with a deadline, reaped with their peak RSS; the file locks
//! that keep two tests' daemons apart.

use std::{
    process::{Child, Command, Output},
    time::{Duration, Instant},
};

/// A child process killed when the test ends, also when it fails.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` with its stderr collected into a shared log, for tests that
/// wait on what the tracer says.
pub fn spawn_with_log(mut cmd: Command) -> (KillOnDrop, std::sync::Arc<std::sync::Mutex<String>>) {
    use std::io::{BufRead, BufReader};
    let mut child = cmd.stderr(std::process::Stdio::piped()).spawn().expect("spawn");
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let stderr = child.stderr.take().expect("piped stderr");
    let sink = std::sync::Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().expect("log lock").push_str(&(line + "\n"));
        }
    });
    (KillOnDrop(child), log)
}

/// Sends a signal to a child process.
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0, "kill({}, {sig})", child.id());
}

/// An exclusive `flock` on `path` (created if missing), held while the
/// returned file (or a clone of it) is open; blocks while another holds it.
pub fn exclusive_lock(path: &std::path::Path) -> std::fs::File {
    use std::os::fd::AsRawFd as _;
    let lock = std::fs::File::create(path).unwrap_or_else(|e| panic!("lock file {}: {e}", path.display()));
    // SAFETY: flock on a descriptor we own, open for the call.
    let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock {}", path.display());
    lock
}

/// Waits for a child with a deadline, killing it if the deadline passes.
pub fn wait_with_deadline(child: &mut Child, deadline: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            panic!("process {} did not exit within {deadline:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `cmd` to its end within `deadline` (killed and failed otherwise),
/// returning its output and its peak RSS in bytes (`wait4`).
pub fn run_with_peak_rss(mut cmd: Command, deadline: Duration) -> (Output, u64) {
    use std::process::Stdio;
    // Reaped by `wait4` below, which also gives its peak RSS.
    #[allow(clippy::zombie_processes)]
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let pid = child.id() as libc::pid_t;
    // Drain the pipes on threads so a chatty child cannot block on them.
    let (mut stdout, mut stderr) = (child.stdout.expect("piped"), child.stderr.expect("piped"));
    let out = std::thread::spawn(move || drain(&mut stdout));
    let err = std::thread::spawn(move || drain(&mut stderr));
    let (status, peak) = reap_with_peak_rss(pid, deadline);
    let output =
        Output { status, stdout: out.join().expect("stdout reader"), stderr: err.join().expect("stderr reader") };
    (output, peak)
}

/// Reaps `pid` with `wait4` once it exits within `deadline` (killed and
/// failed otherwise): its exit status and its peak RSS in bytes (`ru_maxrss`).
fn reap_with_peak_rss(pid: libc::pid_t, deadline: Duration) -> (std::process::ExitStatus, u64) {
    use std::os::unix::process::ExitStatusExt;
    let start = Instant::now();
    // SAFETY: rusage is plain integers, for which all zeroes are valid.
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    loop {
        // SAFETY: plain out-pointers to live locals.
        let rc = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(rc >= 0, "wait4: {}", std::io::Error::last_os_error());
        if rc == pid {
            return (std::process::ExitStatus::from_raw(status), usage.ru_maxrss as u64 * 1024);
        }
        if start.elapsed() > deadline {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("process {pid} did not exit within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn drain(from: &mut impl std::io::Read) -> Vec<u8> {
    let mut bytes = Vec::new();
    from.read_to_end(&mut bytes).expect("read a child's pipe");
    bytes
}

/// Polls until `cond` holds, or panics with `what` after `deadline`.
pub fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `child` to exit within `deadline` (killed and failed
/// otherwise), reaping it with `wait4`: its exit status and its peak RSS in
/// bytes (`ru_maxrss`).
pub fn exit_and_peak_rss(child: KillOnDrop, deadline: Duration) -> (std::process::ExitStatus, u64) {
    let pid = child.0.id() as libc::pid_t;
    // Reaped here: the handle must not kill or wait for a pid that is gone.
    std::mem::forget(child);
    reap_with_peak_rss(pid, deadline)
}
