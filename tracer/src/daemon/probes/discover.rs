//! Finds what to trace in /proc: processes matching the target pattern, and
//! the CUDA libraries each one maps, each opened as the very file mapped
//! (`/proc/PID/map_files`), so a hostPID sidecar reaches a container's own
//! files and no path is resolved in the tracer's namespace.

use std::collections::BTreeSet;

use procfs::process::{MMapPath, Process};
use regex::Regex;
use serde::Serialize;

use crate::daemon::{
    probes::symbols::layer_of,
    target_files::{root::open_mapped, OpenError, TargetFile},
};

/// Why /proc could not tell us what we need.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("process {pid} does not exist (or is not visible: a sidecar needs hostPID: true)")]
    NoProcess { pid: u32 },
    #[error("reading /proc/{pid}: {source}")]
    Proc { pid: u32, source: procfs::ProcError },
}

/// What the trace's metadata says about a process.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    pub cmdline: String,
    /// The command line word by word, for redaction before it is stored.
    #[serde(skip)]
    pub argv: Vec<String>,
}

impl ProcessInfo {
    pub fn read(pid: u32) -> Result<Self, DiscoverError> {
        let proc = open(pid)?;
        let map = |source| match source {
            procfs::ProcError::NotFound(_) => DiscoverError::NoProcess { pid },
            source => DiscoverError::Proc { pid, source },
        };
        let stat = proc.stat().map_err(map)?;
        let argv = proc.cmdline().unwrap_or_default();
        Ok(Self { pid, ppid: stat.ppid.max(0) as u32, comm: stat.comm, cmdline: argv.join(" "), argv })
    }
}

fn open(pid: u32) -> Result<Process, DiscoverError> {
    Process::new(pid as i32).map_err(|source| match source {
        procfs::ProcError::NotFound(_) => DiscoverError::NoProcess { pid },
        source => DiscoverError::Proc { pid, source },
    })
}

/// Every process visible in /proc.
pub fn all_processes() -> Vec<ProcessInfo> {
    let Ok(all) = procfs::process::all_processes() else { return Vec::new() };
    all.filter_map(Result::ok).filter_map(|p| ProcessInfo::read(p.pid() as u32).ok()).collect()
}

/// Processes whose command line or name matches `pattern`, except `exclude`
/// (the tracer itself).
pub fn matching_processes(pattern: &Regex, exclude: u32) -> Vec<ProcessInfo> {
    all_processes().into_iter().filter(|info| info.pid != exclude).filter(|info| matches(pattern, info)).collect()
}

/// Whether a process's command line or name matches the target pattern.
pub fn matches(pattern: &Regex, info: &ProcessInfo) -> bool {
    pattern.is_match(&info.cmdline) || pattern.is_match(&info.comm)
}

/// The live descendants of `pid` (children of any of its threads, then
/// theirs), at most `max`.
pub fn descendants(pid: u32, max: usize) -> Vec<u32> {
    let mut found = Vec::new();
    let mut seen = BTreeSet::from([pid]);
    let mut queue = std::collections::VecDeque::from([pid]);
    while let Some(parent) = queue.pop_front() {
        let Ok(tasks) =
            open(parent).and_then(|p| p.tasks().map_err(|source| DiscoverError::Proc { pid: parent, source }))
        else {
            continue;
        };
        for child in tasks.filter_map(Result::ok).filter_map(|t| t.children().ok()).flatten() {
            if found.len() >= max {
                return found;
            }
            if seen.insert(child) {
                found.push(child);
                queue.push_back(child);
            }
        }
    }
    found
}

/// A CUDA library mapped by a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedLibrary {
    /// Path inside the process's mount namespace, as its maps show it.
    pub shown: String,
    /// One mapping of it (`start..end`), through which it is opened.
    pub range: (u64, u64),
    /// Its inode as /proc/PID/maps shows it.
    pub inode: u64,
}

impl MappedLibrary {
    /// Opens the very file process `pid` mapped (see [`open_mapped`]).
    pub fn open(&self, pid: u32) -> Result<TargetFile, OpenError> {
        open_mapped(pid, self.range.0, self.range.1, &self.shown, self.inode)
    }
}

/// The CUDA driver and runtime libraries `pid` has mapped now.
pub fn cuda_libraries(pid: u32) -> Result<Vec<MappedLibrary>, DiscoverError> {
    let maps = open(pid)?.maps().map_err(|source| DiscoverError::Proc { pid, source })?;
    let mut seen = BTreeSet::new();
    let mut libs = Vec::new();
    for map in maps {
        let MMapPath::Path(path) = map.pathname else {
            continue;
        };
        if layer_of(&path).is_none() || !seen.insert(path.clone()) {
            continue;
        }
        libs.push(MappedLibrary { shown: path.display().to_string(), range: map.address, inode: map.inode });
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        let info = ProcessInfo::read(me).unwrap();
        assert_eq!(info.pid, me);
        assert!(!info.comm.is_empty());
    }

    #[test]
    fn missing_pid_is_named() {
        let err = ProcessInfo::read(u32::MAX - 1).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn pattern_matches_cmdline_and_excludes_self() {
        let me = std::process::id();
        let re = Regex::new(&regex::escape(&ProcessInfo::read(me).unwrap().comm)).unwrap();
        assert!(matching_processes(&re, me).iter().all(|p| p.pid != me));
    }
}
