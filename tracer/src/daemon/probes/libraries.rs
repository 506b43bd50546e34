//! Finds the CUDA libraries a program would load before it loads them: on a
//! process's search path (its `LD_LIBRARY_PATH`, the standard directories),
//! on `record`'s own search path and run paths, and next to a library
//! already attached. Each is listed and opened inside the root of the
//! process it came from ([`TargetRoot`]), never through the tracer's.

use std::{
    collections::BTreeSet,
    ffi::OsStr,
    path::{Path, PathBuf},
};

use object::{elf, read::elf::Dyn as _};

use crate::daemon::{
    probes::symbols::layer_of,
    target_files::{ElfImage, ElfLimits, TargetFile, TargetRoot},
};

/// Standard library directories, where container runtimes mount libcuda.
const STANDARD_DIRS: [&str; 5] =
    ["/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/cuda/lib64"];

/// The CUDA libraries in `dirs` (paths inside `root`), opened inside it,
/// each file once (real files before symlinks: the attacher keeps the first
/// name it sees for an inode, and `libcuda.so.535.104.05` says more than
/// `libcuda.so`). Entries that are not regular files are skipped.
fn cuda_files_in(root: &TargetRoot, dirs: impl IntoIterator<Item = PathBuf>) -> Vec<TargetFile> {
    let mut seen = BTreeSet::new();
    let mut libs = Vec::new();
    for dir in dirs {
        let mut entries = root.list(&dir);
        entries.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        for (name, _) in entries {
            let path = dir.join(&name);
            if layer_of(&path).is_none() {
                continue;
            }
            if let Ok(file) = root.open(&path) {
                if seen.insert(file.key()) {
                    libs.push(file);
                }
            }
        }
    }
    libs
}

/// CUDA libraries process `pid` would find if it `dlopen`ed one now: its own
/// `LD_LIBRARY_PATH` and the standard directories, inside its root (a
/// container's files). Attached when the process is first seen, so a later
/// `dlopen` is traced from its first call. `None` while the environment
/// cannot be read yet (a process in the middle of `exec` shows an empty
/// one): ask again later.
pub fn process_search_path_libraries(pid: u32) -> Option<Vec<TargetFile>> {
    let environ = crate::format::open::read_regular(Path::new(&format!("/proc/{pid}/environ")), MAX_ENVIRON_BYTES);
    let environ = environ.ok().filter(|e| !e.is_empty())?;
    let root = TargetRoot::of_process(pid).ok()?;
    let ld_path = environ
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"LD_LIBRARY_PATH="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    let dirs = ld_path.split(':').filter(|d| d.starts_with('/')).map(PathBuf::from);
    Some(cuda_files_in(&root, dirs.chain(STANDARD_DIRS.map(PathBuf::from))))
}

/// The most of a process's environment read (the kernel's own limit on
/// arguments and environment together is 2 MiB by default).
const MAX_ENVIRON_BYTES: u64 = 8 << 20;

/// CUDA libraries a new program would find through the tracer's own loader
/// search path (`LD_LIBRARY_PATH`, the ld.so cache, standard directories):
/// `record`'s command. Attaching to them before the program starts makes a
/// late `dlopen` lossless: a uprobe on a file fires in every process that
/// maps it later. Each is named by its real path.
pub fn search_path_libraries(ld_library_path: Option<&OsStr>) -> Vec<TargetFile> {
    let Ok(root) = TargetRoot::own() else { return Vec::new() };
    let dirs = ld_library_path.map(|p| std::env::split_paths(p).collect::<Vec<_>>()).unwrap_or_default();
    let dirs = dirs.into_iter().filter_map(|d| std::path::absolute(d).ok());
    let mut libs = cuda_files_in(&root, dirs.chain(STANDARD_DIRS.map(PathBuf::from)));
    for path in ld_cache_libraries() {
        if let Ok(file) = root.open(&path) {
            if !libs.iter().any(|l| l.key() == file.key()) {
                libs.push(file);
            }
        }
    }
    for lib in &mut libs {
        let real = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&lib.file)));
        if let Some(real) = real.ok().filter(|p| layer_of(p).is_some()) {
            lib.shown = real.display().to_string();
        }
    }
    libs
}

/// CUDA libraries in the `DT_RUNPATH`/`DT_RPATH` directories of the
/// executable `program` (found through `PATH` when it has no slash), with
/// `$ORIGIN` expanded. PyTorch reaches the pip wheel's libcudart this way,
/// and the loader would find it before any scan could. Only the program's
/// headers and dynamic section are read.
pub fn runpath_libraries(program: &str) -> Vec<TargetFile> {
    let Some(exe) = find_program(program).and_then(|p| std::path::absolute(p).ok()) else { return Vec::new() };
    let Ok(root) = TargetRoot::own() else { return Vec::new() };
    let Ok(opened) = root.open(&exe) else { return Vec::new() };
    let origin = exe.parent().map(|p| p.display().to_string()).unwrap_or_default();
    let dirs = elf_runpaths(&opened.file)
        .into_iter()
        .map(|d| PathBuf::from(d.replace("${ORIGIN}", &origin).replace("$ORIGIN", &origin)));
    cuda_files_in(&root, dirs.filter(|d| d.is_absolute()))
}

/// The other CUDA libraries in `lib`'s directory, inside the root it was
/// found in: a runtime `dlopen`s the driver next to itself through its own
/// `$ORIGIN` run path.
pub fn sibling_libraries(lib: &TargetFile) -> Vec<TargetFile> {
    let Some(dir) = Path::new(&lib.shown).parent().filter(|d| d.is_absolute()) else { return Vec::new() };
    let Ok(root) = TargetRoot::of_owner(lib.owner) else { return Vec::new() };
    cuda_files_in(&root, [dir.to_path_buf()]).into_iter().filter(|s| s.key() != lib.key()).collect()
}

fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

/// The run-path directory lists of the ELF file open as `file`, split at `:`.
fn elf_runpaths(file: &std::fs::File) -> Vec<String> {
    let Ok(image) = ElfImage::read(file, &[elf::SHT_DYNAMIC], ElfLimits::CUDA_LIBRARY) else { return Vec::new() };
    let Ok((_, endian)) = image.header() else { return Vec::new() };
    let Ok(sections) = image.sections() else { return Vec::new() };
    let Ok(Some((dyns, link))) = sections.dynamic(endian, image.data()) else { return Vec::new() };
    let Ok(strings) = sections.strings(endian, image.data(), link) else { return Vec::new() };
    dyns.iter()
        .filter(|d| matches!(d.d_tag(endian) as u32, elf::DT_RUNPATH | elf::DT_RPATH))
        .filter_map(|d| u32::try_from(d.d_val(endian)).ok().and_then(|off| strings.get(off).ok()))
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
        assert!(libs.iter().any(|l| l.shown == want && l.owner == Some(child.id())), "{libs:?}");
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
        assert!(libs.iter().any(|p| p.shown.ends_with("libcudart.so.12")));
        assert!(!libs.iter().any(|p| p.shown.ends_with("libother.so")));
    }

    #[test]
    fn siblings_are_found_next_to_a_library_and_exclude_it() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["libcudart.so.12", "libcuda.so.1", "libz.so"] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        let lib = TargetRoot::own().unwrap().open(&dir.path().join("libcudart.so.12")).unwrap();
        let siblings: Vec<_> = sibling_libraries(&lib).into_iter().map(|s| s.shown).collect();
        assert_eq!(siblings, [dir.path().join("libcuda.so.1").display().to_string()]);
    }
}
