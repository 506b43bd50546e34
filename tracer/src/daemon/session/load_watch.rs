//! The session's side of the load watch: attach on each library open the
//! kernel reports, and one place that states every library missed.

use tokio::sync::mpsc;

use super::Session;
use crate::{
    daemon::probes::{
        hold::{self, WatchdogJobs},
        load_watch::{LibOpen, LoadWatch, LoadWatchPump, WatchEvent},
    },
    format::metadata::MissedLibrary,
};

impl Session {
    /// Starts the load watch; on failure the /proc scan is all there is.
    /// `CUDA_TRACER_LOAD_WATCH=0` turns it off (never hold a process; the
    /// scan then finds libraries, late, and says so). The pump is the
    /// daemon's to run as a task; the receiver gets the opens it forwards.
    pub(in crate::daemon) fn start_load_watch(
        &mut self,
    ) -> Option<(LoadWatchPump, mpsc::UnboundedReceiver<WatchEvent>)> {
        let session_dir = self.end_guard.dir_fd();
        if std::env::var_os("CUDA_TRACER_LOAD_WATCH").is_some_and(|v| v == "0") {
            tracing::info!("load watch off (CUDA_TRACER_LOAD_WATCH=0): libraries are found by the /proc scan");
            spawn_session_watchdog(session_dir);
            return None;
        }
        match LoadWatch::start(&mut self.probes, Some(session_dir)) {
            Ok((watch, pump, rx)) => {
                self.load_watch = Some(watch);
                Some((pump, rx))
            }
            Err(e) => {
                tracing::warn!(error = %e, "library opens are not watched: libraries are found by the /proc scan, late");
                spawn_session_watchdog(session_dir);
                None
            }
        }
    }

    /// What the load watch reported: an exec to decide about, or a library
    /// open to attach (a pending process's only once it is decided traced).
    pub(in crate::daemon) fn on_watch_event(&mut self, event: WatchEvent) {
        match event {
            WatchEvent::Exec { pid } => {
                self.decide_pending(pid);
            }
            WatchEvent::Open(open) if open.pending && !self.decide_pending(open.pid) => {
                if let Some(watch) = self.load_watch.as_mut() {
                    watch.pass(&open);
                }
            }
            WatchEvent::Open(open) => self.on_library_open(open),
        }
    }

    /// Decides about a process the kernel keeps pending; returns whether it
    /// is traced now. Either way the kernel stops holding it as pending.
    fn decide_pending(&mut self, pid: u32) -> bool {
        let traced = self.is_live(pid) || self.match_new_process(pid);
        if let Some(watch) = self.load_watch.as_mut() {
            watch.settle(pid);
        }
        traced
    }

    /// A traced process opened a CUDA library (and may be held).
    fn on_library_open(&mut self, open: LibOpen) {
        let Some(watch) = self.load_watch.as_mut() else { return };
        if let Some(miss) = watch.on_open(open, &mut self.attacher, &mut self.probes, &self.clock) {
            self.note_miss(miss);
        }
    }

    /// Records a library whose calls are (partly) not traced, once per
    /// process, path and reason.
    pub(super) fn note_miss(&mut self, miss: MissedLibrary) {
        if self.is_missed(miss.pid, &miss.path, &miss.reason) {
            return;
        }
        if let Some(m) = &self.metrics {
            m.library_missed(&miss.reason);
        }
        self.missed_libraries.push(miss);
    }

    /// Whether `path` of `pid` is recorded as missed for `reason`.
    pub(super) fn is_missed(&self, pid: u32, path: &str, reason: &str) -> bool {
        self.missed_libraries.iter().any(|m| m.pid == pid && m.path == path && m.reason == reason)
    }

    /// Stops holding and releases every held process (after the pump stopped).
    pub(in crate::daemon) fn stop_load_watch(&mut self) {
        if let Some(watch) = self.load_watch.as_mut() {
            let released = watch.shutdown();
            if released > 0 {
                tracing::info!(released, "released processes held at a library open");
            }
        }
    }
}

/// Without the load watch, a watchdog that only marks the session `killed`
/// if the tracer is.
fn spawn_session_watchdog(session_dir: std::os::fd::RawFd) {
    if let Err(e) = hold::spawn_watchdog(WatchdogJobs { holds: None, session_dir: Some(session_dir) }) {
        tracing::warn!(error = %e, "no watchdog: a killed tracer leaves metadata.json saying `running`");
    }
}

/// The load watch's next report, or never when the load watch is off.
pub(in crate::daemon) async fn next_watch_event(
    rx: &mut Option<mpsc::UnboundedReceiver<WatchEvent>>,
) -> Option<WatchEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
