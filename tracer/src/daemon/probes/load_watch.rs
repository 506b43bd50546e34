//! Userspace half of the load watch: reads the kernel's "a traced process
//! opened a CUDA library" events, attaches the probes through our own open
//! of that very file (`/proc/PID/fd/FD`, then `/proc/self/fd/N`: no path is
//! resolved in the tracer's namespace, and the process exiting cannot make
//! the attach fail), releases the held process, and keeps the heartbeat
//! without which the kernel holds nothing. While the daemon matches a
//! pattern it also reports execs, so userspace can decide about a new
//! process before it loads CUDA.

use std::{
    collections::HashMap,
    os::fd::{AsFd as _, AsRawFd as _, RawFd},
    path::{Path, PathBuf},
    time::Duration,
};

use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf};
use tokio::{
    io::{unix::AsyncFd, Interest},
    sync::{mpsc, watch},
};
use tracer_common::abi::{hold_slot, lib_open_flags, LibOpenEvent, EXEC_KIND, LIB_OPEN_EVENT_SIZE, LIB_OPEN_KIND};

use crate::{
    clock::{self, SessionClock},
    daemon::probes::{
        attach::Attacher,
        hold::{self, WatchdogJobs},
        loader::{LoadError, Probes},
        symbols::layer_of,
    },
    daemon::target_files::TargetFile,
    format::metadata::{LibraryHold, MissedLibrary},
};

/// How often userspace proves it is alive to the kernel side.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(250);

/// One open of a CUDA library by a traced process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LibOpen {
    pub pid: u32,
    pub tid: u32,
    pub fd: i32,
    /// The kernel stopped the process: it waits for our SIGCONT.
    pub held: bool,
    /// The process was not traced but pending (exec'd, not yet matched).
    pub pending: bool,
    /// Boot-clock ns of the open's return (when the hold began).
    pub ts_ns: u64,
    /// The name the process passed to `open`.
    pub name: String,
}

/// What the load watch's ring reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// A traced or pending process opened a CUDA library.
    Open(LibOpen),
    /// An untraced process exec'd while the daemon matches a pattern: it is
    /// pending until [`LoadWatch::settle`].
    Exec { pid: u32 },
}

impl WatchEvent {
    /// Decodes a ring-buffer record (`None`: not a well-formed LibOpenEvent).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < LIB_OPEN_EVENT_SIZE {
            return None;
        }
        // SAFETY: the length is checked; read_unaligned copes with any alignment.
        let ev: LibOpenEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        match ev.header.kind {
            EXEC_KIND => return Some(Self::Exec { pid: ev.pid }),
            LIB_OPEN_KIND => {}
            _ => return None,
        }
        let len = (ev.name.len as usize).min(ev.name.bytes.len());
        let name = ev.name.bytes[..len].split(|&b| b == 0).next().unwrap_or_default();
        Some(Self::Open(LibOpen {
            pid: ev.pid,
            tid: ev.tid,
            fd: ev.fd,
            held: ev.flags & lib_open_flags::HELD != 0,
            pending: ev.flags & lib_open_flags::PENDING != 0,
            ts_ns: ev.ts_ns,
            name: String::from_utf8_lossy(name).into_owned(),
        }))
    }
}

/// The running load watch.
pub struct LoadWatch {
    /// Keeps the `HOLD_CTL` fd open for the heartbeat task and the watchdog.
    ctl: MapData,
    held_fd: RawFd,
    /// Whether the heartbeat runs (no watchdog: no holds).
    holding: bool,
    holds: Vec<LibraryHold>,
    /// Files (device, inode) whose attach failed, with the error.
    failed: HashMap<(u64, u64), String>,
    /// The kernel's undecided processes, when execs are matched.
    pending: Option<BpfHashMap<MapData, u32, u64>>,
}

impl LoadWatch {
    /// Attaches the kernel hooks and forks the watchdog (which also marks
    /// `session_dir`'s metadata.json `killed` if the tracer is killed); the returned pump
    /// (the caller's to run as a task) forwards the opens to the receiver and
    /// beats the heartbeat. Without a watchdog the kernel reports opens but
    /// holds nothing: a killed tracer must never leave a process stopped.
    pub fn start(
        probes: &mut Probes,
        session_dir: Option<RawFd>,
    ) -> Result<(Self, LoadWatchPump, mpsc::UnboundedReceiver<WatchEvent>), LoadError> {
        let maps = probes.watch_library_loads()?;
        let ctl_fd = maps.ctl.fd().as_fd().as_raw_fd();
        let holding = match hold::spawn_watchdog(WatchdogJobs { holds: Some((maps.held_fd, ctl_fd)), session_dir }) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "library opens are not held: a library's first calls may be missed");
                false
            }
        };
        let matching_execs = maps.pending.is_some();
        tracing::info!(hook = maps.hook, holding, matching_execs, "watching CUDA library opens");
        let (tx, rx) = mpsc::unbounded_channel();
        let pump = LoadWatchPump { ring: maps.ring, heartbeat_fd: holding.then_some(ctl_fd), tx };
        let watch = Self {
            ctl: maps.ctl,
            held_fd: maps.held_fd,
            holding,
            holds: Vec::new(),
            failed: HashMap::new(),
            pending: maps.pending,
        };
        Ok((watch, pump, rx))
    }

    /// Attaches the library `open` names, then releases its process.
    /// Returns the miss when the library could not be attached.
    pub fn on_open(
        &mut self,
        open: LibOpen,
        attacher: &mut Attacher,
        probes: &mut Probes,
        clock: &SessionClock,
    ) -> Option<MissedLibrary> {
        let fd_path = PathBuf::from(format!("/proc/{}/fd/{}", open.pid, open.fd));
        let shown = std::fs::read_link(&fd_path).map(|p| p.display().to_string()).unwrap_or(open.name.clone());
        let waited_ms = (clock::boot_ns().saturating_sub(open.ts_ns)) as f64 / 1e6;
        let (outcome, error) = self.attach(open.pid, &fd_path, &shown, attacher, probes);
        if open.held {
            hold::release(self.held_fd, open.pid);
        }
        let held_ms = if open.held { (clock::boot_ns().saturating_sub(open.ts_ns)) as f64 / 1e6 } else { 0.0 };
        tracing::debug!(pid = open.pid, library = %shown, waited_ms, held_ms, outcome, "library open");
        self.holds.push(LibraryHold {
            pid: open.pid,
            tid: open.tid,
            path: shown.clone(),
            held_ms,
            outcome: outcome.into(),
        });
        let error = error?;
        tracing::warn!(pid = open.pid, library = %shown, error = %error, "library not attached: its calls are not traced");
        let at_ms = clock.ms_since_start(clock::boot_ns());
        Some(MissedLibrary { pid: open.pid, path: shown, reason: "attach_failed".into(), error: Some(error), at_ms })
    }

    /// `pid` is decided (traced or not): the kernel stops treating it as
    /// pending. Absent is fine (it exited, or was evicted).
    pub fn settle(&mut self, pid: u32) {
        if let Some(pending) = self.pending.as_mut() {
            let _ = pending.remove(&pid);
        }
    }

    /// A pending process that does not match opened a library: release it,
    /// attach nothing.
    pub fn pass(&mut self, open: &LibOpen) {
        if open.held {
            hold::release(self.held_fd, open.pid);
        }
        tracing::debug!(pid = open.pid, library = %open.name, "library open by a process that is not traced");
    }

    fn attach(
        &mut self,
        pid: u32,
        fd_path: &Path,
        shown: &str,
        attacher: &mut Attacher,
        probes: &mut Probes,
    ) -> (&'static str, Option<String>) {
        if layer_of(Path::new(shown)).is_none() {
            return ("not_cuda", None);
        }
        // Our own descriptor of the file the loader opened: it stays valid
        // whatever the process does next. Non-blocking and regular files
        // only: a FIFO named like a library must not hang the load watch.
        let file = match TargetFile::open_proc_link(fd_path, shown, Some(pid)) {
            Ok(file) => file,
            Err(e) if e.is_refusal() => return ("attach_failed", Some(e.to_string())),
            Err(_) => return ("gone", None),
        };
        if let Some(error) = self.failed.get(&file.key()) {
            return ("attach_failed", Some(error.clone()));
        }
        match attacher.attach_file(probes, &file) {
            Ok(true) => ("attached", None),
            Ok(false) => ("already_attached", None),
            Err(e) => {
                let error = e.to_string();
                self.failed.insert(file.key(), error.clone());
                ("attach_failed", Some(error))
            }
        }
    }

    /// Every hold so far.
    pub fn holds(&self) -> &[LibraryHold] {
        &self.holds
    }

    /// Library opens the kernel could not report (its ring was full).
    pub fn events_lost(&self) -> u64 {
        hold::get_ctl(self.ctl.fd().as_fd().as_raw_fd(), hold_slot::EVENTS_LOST)
    }

    /// Stops holding and releases every held process (daemon shutdown,
    /// once the pump has stopped: it would beat the heartbeat again).
    pub fn shutdown(&mut self) -> usize {
        if self.holding {
            hold::set_ctl(self.ctl.fd().as_fd().as_raw_fd(), hold_slot::HEARTBEAT_NS, 0);
        }
        hold::release_all(self.held_fd)
    }
}

impl Drop for LoadWatch {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The load watch's background loop: forwards library opens as they come
/// and beats the heartbeat. Holds the `HOLD_CTL` fd of its [`LoadWatch`],
/// which must outlive it.
pub struct LoadWatchPump {
    ring: RingBuf<MapData>,
    /// `HOLD_CTL`'s fd, when holding (else no heartbeat: the kernel holds nothing).
    heartbeat_fd: Option<RawFd>,
    tx: mpsc::UnboundedSender<WatchEvent>,
}

impl LoadWatchPump {
    /// Runs until `stop` is raised. A ring that cannot be read stops the
    /// heartbeat, so the kernel holds nothing, and the /proc scan finds
    /// libraries, late; the pump then waits for the stop.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let Self { ring, heartbeat_fd, tx } = self;
        // SAFETY: the RingBuf owns its map fd for as long as the AsyncFd owns the
        // RingBuf, and as_raw_fd always returns that same fd.
        match unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) } {
            Ok(fd) => {
                tokio::select! {
                    () = forward(fd, heartbeat_fd, &tx) => {
                        tracing::warn!("library opens are no longer watched: the /proc scan finds libraries, late");
                    }
                    _ = stop.wait_for(|stop| *stop) => return,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "library opens cannot be watched: the /proc scan finds libraries, late");
            }
        }
        let _ = stop.wait_for(|stop| *stop).await;
    }
}

/// Forwards opens and beats the heartbeat until the ring fails or nobody listens.
async fn forward(
    mut fd: AsyncFd<RingBuf<MapData>>,
    heartbeat_fd: Option<RawFd>,
    tx: &mpsc::UnboundedSender<WatchEvent>,
) {
    let mut beat = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let Ok(mut guard) = guard else { return };
                while let Some(item) = guard.get_inner_mut().next() {
                    if let Some(event) = WatchEvent::decode(&item) {
                        if tx.send(event).is_err() {
                            return;
                        }
                    }
                }
                guard.clear_ready();
            }
            _ = beat.tick() => {
                if let Some(ctl) = heartbeat_fd {
                    hold::set_ctl(ctl, hold_slot::HEARTBEAT_NS, clock::boot_ns());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lib_open_event_decodes() {
        let mut ev = LibOpenEvent::default();
        ev.header.kind = LIB_OPEN_KIND;
        ev.pid = 7;
        ev.fd = 3;
        ev.flags = lib_open_flags::HELD;
        let name = b"/x/libcudart.so.13\0";
        ev.name.bytes[..name.len()].copy_from_slice(name);
        ev.name.len = name.len() as u32;
        // SAFETY: a plain-old-data struct viewed as bytes.
        let bytes =
            unsafe { std::slice::from_raw_parts((&ev as *const LibOpenEvent).cast::<u8>(), LIB_OPEN_EVENT_SIZE) };
        let Some(WatchEvent::Open(open)) = WatchEvent::decode(bytes) else { panic!("not an open") };
        assert_eq!((open.pid, open.fd, open.held, open.name.as_str()), (7, 3, true, "/x/libcudart.so.13"));
        assert!(!open.pending);
        assert!(WatchEvent::decode(&bytes[..10]).is_none());
    }

    #[test]
    fn an_exec_event_decodes() {
        let mut ev = LibOpenEvent::default();
        ev.header.kind = EXEC_KIND;
        ev.pid = 9;
        ev.fd = -1;
        // SAFETY: a plain-old-data struct viewed as bytes.
        let bytes =
            unsafe { std::slice::from_raw_parts((&ev as *const LibOpenEvent).cast::<u8>(), LIB_OPEN_EVENT_SIZE) };
        assert_eq!(WatchEvent::decode(bytes), Some(WatchEvent::Exec { pid: 9 }));
        ev.header.kind = 99;
        // SAFETY: as above.
        let bytes =
            unsafe { std::slice::from_raw_parts((&ev as *const LibOpenEvent).cast::<u8>(), LIB_OPEN_EVENT_SIZE) };
        assert!(WatchEvent::decode(bytes).is_none());
    }
}
