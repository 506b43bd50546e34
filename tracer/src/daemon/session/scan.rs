//! The session's view of the machine: which processes are traced, which
//! libraries are attached, and the scan that keeps both current.

use std::{collections::BTreeSet, path::Path};

use super::Session;
use crate::{
    daemon::config::Target,
    daemon::probes::discover::{self, ProcessInfo},
    format::metadata::{LateLibrary, MissedLibrary, ProcessRecord},
};

impl Session {
    /// Whether `pid` is a traced process that has not exited.
    pub(super) fn is_live(&self, pid: u32) -> bool {
        self.processes.get(&pid).is_some_and(|r| r.exited_ms.is_none())
    }
    pub(super) fn add_process(&mut self, pid: u32, source: &'static str, fallback_ppid: u32) {
        if self.is_live(pid) {
            return;
        }
        // A reused pid is a new process: keep the old one's record apart.
        if let Some(old) = self.processes.remove(&pid) {
            self.past_processes.push(old);
        }
        let info = ProcessInfo::read(pid).unwrap_or(ProcessInfo {
            pid,
            ppid: fallback_ppid,
            comm: String::new(),
            cmdline: String::new(),
            argv: Vec::new(),
        });
        tracing::info!(pid, ppid = info.ppid, comm = %info.comm, source, "tracing process");
        let first_seen_ms = self.now_ms();
        self.processes.insert(
            pid,
            ProcessRecord {
                pid,
                ppid: info.ppid,
                comm: info.comm,
                cmdline: stored_cmdline(&info.argv, self.cfg.redact_cmdlines),
                source: source.into(),
                first_seen_ms,
                exited_ms: None,
            },
        );
    }
    pub(super) fn try_attach(&mut self, opened: &std::path::Path, shown: &str) {
        if self.failed_libs.contains_key(opened) || self.attacher.is_attached(opened) {
            return;
        }
        match self.attacher.attach(&mut self.probes, opened, shown) {
            Ok(Some(_)) => {
                for sibling in discover::sibling_libraries(opened) {
                    let sibling_shown = Path::new(shown).with_file_name(sibling.file_name().unwrap_or_default());
                    if !self.failed_libs.contains_key(&sibling) && !self.attacher.is_attached(&sibling) {
                        if let Err(e) =
                            self.attacher.attach(&mut self.probes, &sibling, &sibling_shown.display().to_string())
                        {
                            tracing::debug!(library = %sibling.display(), error = %e, "sibling not attached");
                            self.failed_libs.insert(sibling, e.to_string());
                        }
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(library = %shown, error = %e, "library not attached");
                self.failed_libs.insert(opened.to_path_buf(), e.to_string());
            }
        }
    }
    /// Picks up new matching processes, children the kernel did not report,
    /// and libraries mapped since the last scan.
    pub(in crate::daemon) fn scan(&mut self) {
        if self.attacher.stopping() {
            return;
        }
        let me = std::process::id();
        if let Target::Daemon { pattern: Some(re), .. } = &self.cfg.target {
            for info in discover::matching_processes(re, me) {
                if !self.is_live(info.pid) && self.probes.trace_pid(info.pid).is_ok() {
                    self.add_process(info.pid, "pattern", info.ppid);
                }
            }
        }
        if !self.probes.follows_forks {
            // No BTF, so no fork hook: children of traced processes are found
            // here, and their calls before this scan are not traced.
            for info in discover::all_processes() {
                if self.is_live(info.ppid) && !self.is_live(info.pid) && self.probes.trace_pid(info.pid).is_ok() {
                    self.add_process(info.pid, "scan-child", info.ppid);
                }
            }
        }
        let traced: BTreeSet<u32> = self.probes.traced_pids().unwrap_or_default().into_iter().collect();
        for pid in &traced {
            if !self.is_live(*pid) {
                self.add_process(*pid, "fork", 0);
            }
            if !self.search_path_done.contains(pid) {
                // Not readable yet (mid-exec): the next scan asks again.
                if let Some(libs) = discover::process_search_path_libraries(*pid) {
                    self.search_path_done.insert(*pid);
                    for lib in libs {
                        self.try_attach(&lib.opened, &lib.shown);
                    }
                }
            }
            match discover::cuda_libraries(*pid) {
                Ok(libs) => {
                    for lib in libs {
                        self.attach_mapped(*pid, lib);
                    }
                }
                Err(e) => tracing::debug!(pid, error = %e, "maps not readable"),
            }
        }
        self.scan_exits();
        self.update_metrics();
    }
    /// Attaches a library `pid` has mapped already; either way its calls
    /// before now are missing, and that is stated.
    fn attach_mapped(&mut self, pid: u32, lib: discover::MappedLibrary) {
        // A process that exited after its maps were read can no longer be
        // stat'ed through; its inode still tells whether we had the file.
        if self.attacher.is_attached(&lib.opened) || self.attacher.is_attached_inode(lib.inode) {
            return;
        }
        if !self.failed_libs.contains_key(&lib.opened) {
            self.try_attach(&lib.opened, &lib.shown);
        }
        let at_ms = self.now_ms();
        if self.attacher.is_attached(&lib.opened) {
            // Mapped before its probes existed: its earlier calls are not in the trace.
            tracing::warn!(pid, library = %lib.shown, "attached a library the process had already mapped; its calls before now are not traced (use --lib or LD_LIBRARY_PATH to attach it up front)");
            self.late_libraries.push(LateLibrary { pid, path: lib.shown.clone(), attached_ms: at_ms });
            self.note_miss(MissedLibrary { pid, path: lib.shown, reason: "late".into(), error: None, at_ms });
        } else {
            let error = self.failed_libs.get(&lib.opened).cloned();
            self.note_miss(MissedLibrary { pid, path: lib.shown, reason: "attach_failed".into(), error, at_ms });
        }
    }
    pub(super) fn update_metrics(&self) {
        let Some(m) = &self.metrics else { return };
        m.traced_processes.set(self.processes.values().filter(|r| r.exited_ms.is_none()).count() as i64);
        m.set_drops(&self.probes.drops().unwrap_or_default());
        for (func, n) in self.probes.drops_by_function().unwrap_or_default() {
            m.set_dropped_calls(func, n);
        }
    }
    /// Marks processes that are gone, refreshes command lines changed by exec.
    pub(in crate::daemon) fn scan_exits(&mut self) {
        let (now, redact) = (self.now_ms(), self.cfg.redact_cmdlines);
        for rec in self.processes.values_mut().filter(|r| r.exited_ms.is_none()) {
            match ProcessInfo::read(rec.pid) {
                Ok(info) => {
                    rec.cmdline = stored_cmdline(&info.argv, redact);
                    rec.comm = info.comm;
                }
                Err(_) => rec.exited_ms = Some(now),
            }
        }
    }
}

/// A command line as metadata.json stores it: secret values redacted
/// unless the session keeps them (`--keep-cmdline-secrets`).
pub(super) fn stored_cmdline(argv: &[String], redact: bool) -> String {
    if redact {
        crate::secrets::redact_argv(argv).join(" ")
    } else {
        argv.join(" ")
    }
}
