//! Finds what to trace in /proc: processes matching the target pattern, and
//! the CUDA libraries each one maps, opened through /proc/PID/root so a
//! hostPID sidecar reaches a container's own files.

use std::{
    collections::BTreeSet,
    ffi::OsStr,
    path::{Path, PathBuf},
};

use procfs::process::{MMapPath, Process};
use regex::Regex;
use serde::Serialize;

use crate::daemon::probes::symbols::layer_of;

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
    all_processes()
        .into_iter()
        .filter(|info| info.pid != exclude)
        .filter(|info| pattern.is_match(&info.cmdline) || pattern.is_match(&info.comm))
        .collect()
}

/// A CUDA library mapped by a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedLibrary {
    /// Path inside the process's mount namespace.
    pub shown: String,
    /// The same file reached from the tracer's namespace.
    pub opened: PathBuf,
    /// Its inode as /proc/PID/maps shows it (0 when not from maps).
    pub inode: u64,
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
        let opened =
            Path::new("/proc").join(pid.to_string()).join("root").join(path.strip_prefix("/").unwrap_or(&path));
        libs.push(MappedLibrary { shown: path.display().to_string(), opened, inode: map.inode });
    }
    Ok(libs)
}

/// CUDA libraries a new program would find through the loader's search path
/// (`LD_LIBRARY_PATH`, the ld.so cache, standard directories). Attaching to
/// them before the program starts makes a late `dlopen` lossless: a uprobe
/// on a file fires in every process that maps it later.
pub fn search_path_libraries(ld_library_path: Option<&OsStr>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = ld_library_path.map(|p| std::env::split_paths(p).collect()).unwrap_or_default();
    dirs.extend(STANDARD_DIRS.map(PathBuf::from));
    let mut found: Vec<PathBuf> = ld_cache_libraries();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        found.extend(entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| layer_of(p).is_some()));
    }
    let mut unique = BTreeSet::new();
    found
        .into_iter()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .filter(|p| p.is_file() && layer_of(p).is_some() && unique.insert(p.clone()))
        .collect()
}

/// Standard library directories, where container runtimes mount libcuda.
const STANDARD_DIRS: [&str; 5] =
    ["/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/cuda/lib64"];

/// CUDA libraries process `pid` would find if it `dlopen`ed one now: its own
/// `LD_LIBRARY_PATH` and the standard directories, seen through its root
/// (a container's files). Attached when the process is first seen, so a
/// later `dlopen` is traced from its first call. `None` while the
/// environment cannot be read yet (a process in the middle of `exec` shows
/// an empty one): ask again later.
pub fn process_search_path_libraries(pid: u32) -> Option<Vec<MappedLibrary>> {
    let root = Path::new("/proc").join(pid.to_string()).join("root");
    let environ = std::fs::read(Path::new("/proc").join(pid.to_string()).join("environ")).ok()?;
    if environ.is_empty() {
        return None;
    }
    let ld_path = environ
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"LD_LIBRARY_PATH="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    let dirs =
        ld_path.split(':').filter(|d| d.starts_with('/')).map(str::to_string).chain(STANDARD_DIRS.map(String::from));
    let mut seen = BTreeSet::new();
    let mut libs = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(root.join(dir.trim_start_matches('/'))) else { continue };
        // Real files before symlinks: the attacher keeps the first name it
        // sees for an inode, and `libcuda.so.535.104.05` says more than `libcuda.so`.
        let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| (e.file_type().is_ok_and(|t| t.is_symlink()), e.file_name()));
        for entry in entries {
            let name = entry.file_name();
            let shown = Path::new(&dir).join(&name);
            if layer_of(&shown).is_none() || !entry.path().is_file() || !seen.insert(shown.clone()) {
                continue;
            }
            libs.push(MappedLibrary { shown: shown.display().to_string(), opened: entry.path(), inode: 0 });
        }
    }
    Some(libs)
}

/// CUDA libraries in the `DT_RUNPATH`/`DT_RPATH` directories of the
/// executable `program` (found through `PATH` when it has no slash), with
/// `$ORIGIN` expanded. PyTorch reaches the pip wheel's libcudart this way,
/// and the loader would find it before any scan could.
pub fn runpath_libraries(program: &str) -> Vec<PathBuf> {
    let Some(exe) = find_program(program) else { return Vec::new() };
    let origin = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let Ok(data) = std::fs::read(&exe) else { return Vec::new() };
    let mut libs = Vec::new();
    for dir in elf_runpaths(&data) {
        let dir = PathBuf::from(
            dir.replace("$ORIGIN", &origin.display().to_string()).replace("${ORIGIN}", &origin.display().to_string()),
        );
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        libs.extend(entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| layer_of(p).is_some() && p.is_file()));
    }
    libs
}

/// The other CUDA libraries in `lib`'s directory: a runtime `dlopen`s the
/// driver next to itself through its own `$ORIGIN` run path.
pub fn sibling_libraries(lib: &Path) -> Vec<PathBuf> {
    let Some(dir) = lib.parent() else { return Vec::new() };
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p != lib && layer_of(p).is_some() && p.is_file())
        .collect()
}

fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

/// The run-path directory lists of an ELF file, split at `:`.
fn elf_runpaths(data: &[u8]) -> Vec<String> {
    use object::{
        elf,
        read::elf::{Dyn as _, ElfFile64},
        Endianness,
    };
    let Ok(file) = ElfFile64::<Endianness>::parse(data) else { return Vec::new() };
    let endian = file.endian();
    let sections = file.elf_section_table();
    let Ok(Some((dyns, link))) = sections.dynamic(endian, data) else { return Vec::new() };
    let Ok(strings) = sections.strings(endian, data, link) else { return Vec::new() };
    dyns.iter()
        .filter(|d| matches!(d.d_tag(endian) as u32, elf::DT_RUNPATH | elf::DT_RPATH))
        .filter_map(|d| d.string(endian, strings).ok())
        .flat_map(|s| String::from_utf8_lossy(s).split(':').map(str::to_string).collect::<Vec<_>>())
        .filter(|d| !d.is_empty())
        .collect()
}

/// CUDA entries of the ld.so cache, from `ldconfig -p`.
fn ld_cache_libraries() -> Vec<PathBuf> {
    let Ok(out) = std::process::Command::new("ldconfig").arg("-p").output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split("=> ").nth(1))
        .map(|p| PathBuf::from(p.trim()))
        .filter(|p| layer_of(p).is_some())
        .collect()
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

    #[test]
    fn a_process_search_path_is_read_from_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("libcuda.so.1"), b"x").unwrap();
        let mut child =
            std::process::Command::new("sleep").arg("5").env("LD_LIBRARY_PATH", dir.path()).spawn().unwrap();
        // Until the exec completes, /proc shows the forked copy of this
        // test's environment, or an empty one.
        let environ = format!("/proc/{}/environ", child.id());
        let start = std::time::Instant::now();
        let needle = b"LD_LIBRARY_PATH=".as_slice();
        while !std::fs::read(&environ).is_ok_and(|e| e.windows(needle.len()).any(|w| w == needle)) {
            assert!(start.elapsed() < std::time::Duration::from_secs(10), "sleep never started");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let libs = process_search_path_libraries(child.id()).expect("environment readable");
        child.kill().unwrap();
        let _ = child.wait();
        let want = dir.path().join("libcuda.so.1").display().to_string();
        assert!(libs.iter().any(|l| l.shown == want), "{libs:?}");
    }

    #[test]
    fn run_paths_of_an_executable_are_read() {
        // This test binary has no CUDA run path; the parser must cope with that.
        let exe = std::env::current_exe().unwrap();
        assert!(runpath_libraries(&exe.display().to_string()).is_empty());
        assert!(runpath_libraries("no-such-program-anywhere").is_empty());
    }

    #[test]
    fn search_path_finds_libraries_in_ld_library_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("libcudart.so.12"), b"x").unwrap();
        std::fs::write(dir.path().join("libother.so"), b"x").unwrap();
        let libs = search_path_libraries(Some(dir.path().as_os_str()));
        assert!(libs.iter().any(|p| p.ends_with("libcudart.so.12")));
        assert!(!libs.iter().any(|p| p.ends_with("libother.so")));
    }
}
