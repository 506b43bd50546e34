//! The session's view of the machine: which processes are traced, which
//! libraries are attached, and the scan that keeps both current.

use std::collections::BTreeSet;

use super::Session;
use crate::{
    daemon::config::Target,
    daemon::probes::{
        discover::{self, ProcessInfo},
        libraries,
    },
    daemon::target_files::{OpenError, TargetFile},
    format::metadata::{LateLibrary, MissedLibrary, ProcessRecord},
};

/// How far up the process tree a new process's traced ancestor is sought.
const MAX_ANCESTORS: usize = 64;
/// Most children of one newly matched process traced at once (a fork bomb
/// must not stall the session; later children the kernel follows).
const MAX_DESCENDANTS: usize = 4_096;

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
    /// Attaches the library open as `lib`, then the CUDA libraries next to
    /// it; a failure is kept (by file) and said once.
    pub(super) fn try_attach(&mut self, lib: TargetFile) {
        if self.failed_libs.contains_key(&lib.key()) || self.attacher.is_attached(lib.key()) {
            return;
        }
        match self.attacher.attach_file(&mut self.probes, &lib) {
            Ok(true) => {
                for sibling in libraries::sibling_libraries(&lib) {
                    if self.failed_libs.contains_key(&sibling.key()) || self.attacher.is_attached(sibling.key()) {
                        continue;
                    }
                    if let Err(e) = self.attacher.attach_file(&mut self.probes, &sibling) {
                        tracing::debug!(library = %sibling.shown, error = %e, "sibling not attached");
                        self.failed_libs.insert(sibling.key(), e.to_string());
                    }
                }
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(library = %lib.shown, error = %e, "library not attached");
                self.failed_libs.insert(lib.key(), e.to_string());
            }
        }
    }
    /// Adds a process the scan found to the in-kernel filter; one that
    /// cannot be added (the map is full) is counted once.
    fn trace_found(&mut self, pid: u32) -> bool {
        match self.probes.trace_pid(pid) {
            Ok(()) => true,
            Err(e) => {
                if self.untraceable.insert(pid) {
                    tracing::warn!(pid, error = %e, "process not traced: its calls are not seen");
                }
                false
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
                if !self.is_live(info.pid) && self.trace_found(info.pid) {
                    self.add_process(info.pid, "pattern", info.ppid);
                    self.trace_descendants(info.pid);
                }
            }
        }
        if !self.probes.follows_forks {
            // No BTF, so no fork hook: children of traced processes are found
            // here, and their calls before this scan are not traced.
            for info in discover::all_processes() {
                if self.is_live(info.ppid) && !self.is_live(info.pid) && self.trace_found(info.pid) {
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
                if let Some(libs) = libraries::process_search_path_libraries(*pid) {
                    self.search_path_done.insert(*pid);
                    for lib in libs {
                        self.try_attach(lib);
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
    /// A process that exec'd (or was forked by one that had) while the
    /// daemon matches a pattern: traced, with the children it already has,
    /// when it matches or descends from a traced process. Returns whether
    /// it is traced now.
    pub(super) fn match_new_process(&mut self, pid: u32) -> bool {
        let Target::Daemon { pattern: Some(re), .. } = &self.cfg.target else { return false };
        if pid == std::process::id() {
            return false;
        }
        let Ok(info) = ProcessInfo::read(pid) else { return false };
        let source = if discover::matches(re, &info) {
            "pattern"
        } else if self.has_traced_ancestor(info.ppid) {
            "exec-child"
        } else {
            return false;
        };
        if self.probes.trace_pid(pid).is_err() {
            return false;
        }
        self.add_process(pid, source, info.ppid);
        self.trace_descendants(pid);
        true
    }
    /// Whether a live traced process is `ppid` or one of its ancestors.
    fn has_traced_ancestor(&self, mut ppid: u32) -> bool {
        for _ in 0..MAX_ANCESTORS {
            if ppid <= 1 {
                return false;
            }
            if self.is_live(ppid) {
                return true;
            }
            match ProcessInfo::read(ppid) {
                Ok(info) => ppid = info.ppid,
                Err(_) => return false,
            }
        }
        false
    }
    /// Traces the children (at any depth) a newly matched process had
    /// started before it was matched; later ones the kernel follows.
    fn trace_descendants(&mut self, pid: u32) {
        for child in discover::descendants(pid, MAX_DESCENDANTS) {
            if !self.is_live(child) && self.probes.trace_pid(child).is_ok() {
                self.add_process(child, "child", pid);
            }
        }
    }
    /// Attaches a library `pid` has mapped already, opened as the very file
    /// mapped; either way its calls before now are missing, and that is stated.
    fn attach_mapped(&mut self, pid: u32, lib: discover::MappedLibrary) {
        let at_ms = self.now_ms();
        let opened = lib.open(pid);
        let key = opened.as_ref().map(TargetFile::key).ok();
        // A process that exited after its maps were read cannot be opened
        // through; its inode still tells whether we had the file.
        if key.map_or(self.attacher.is_attached_inode(lib.inode), |k| self.attacher.is_attached(k)) {
            return;
        }
        let error = match opened {
            Ok(file) => {
                self.try_attach(file);
                key.and_then(|k| self.failed_libs.get(&k).cloned())
            }
            Err(e) => {
                // A refusal is said once per process and library (the scan
                // comes back to it); a process gone meanwhile is no news.
                let gone = matches!(&e, OpenError::Open { error, .. } if error.kind() == std::io::ErrorKind::NotFound);
                if gone || self.is_missed(pid, &lib.shown, "attach_failed") {
                    tracing::debug!(pid, library = %lib.shown, error = %e, "mapped library not opened");
                } else {
                    tracing::warn!(pid, library = %lib.shown, error = %e, "library not attached: not opened");
                }
                Some(e.to_string())
            }
        };
        if key.is_some_and(|k| self.attacher.is_attached(k)) {
            // Mapped before its probes existed: its earlier calls are not in the trace.
            tracing::warn!(pid, library = %lib.shown, "attached a library the process had already mapped; its calls before now are not traced (use --lib or LD_LIBRARY_PATH to attach it up front)");
            self.late_libraries.push(LateLibrary { pid, path: lib.shown.clone(), attached_ms: at_ms });
            self.note_miss(MissedLibrary { pid, path: lib.shown, reason: "late".into(), error: None, at_ms });
        } else {
            self.note_miss(MissedLibrary { pid, path: lib.shown, reason: "attach_failed".into(), error, at_ms });
        }
    }
    pub(super) fn update_metrics(&self) {
        let Some(m) = &self.metrics else { return };
        m.traced_processes.set(self.processes.values().filter(|r| r.exited_ms.is_none()).count() as i64);
        m.set_drops(&self.drops());
        for (func, n) in self.probes.drops_by_function().unwrap_or_default() {
            m.set_dropped_calls(func, n);
        }
    }
    /// Marks processes that are gone, refreshes command lines changed by exec.
    pub(in crate::daemon) fn scan_exits(&mut self) {
        let (now, redact) = (self.now_ms(), self.cfg.redact_cmdlines);
        for rec in self.processes.values_mut().filter(|r| r.exited_ms.is_none()) {
            match ProcessInfo::read(rec.pid) {
                // A process on its way out (its memory gone, a zombie)
                // reads with no command line: keep the one seen alive.
                Ok(info) if info.argv.is_empty() => rec.comm = info.comm,
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
