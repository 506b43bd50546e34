//! Kernel names on the runtime path: `cudaLaunchKernel`'s `func` is a host
//! stub's address; `/proc/PID/maps` turns it into a file offset, and that
//! file's `.symtab`/`.dynsym` (PyTorch's kernel stubs are local symbols)
//! into a demangled name. Symbol tables are indexed once per file.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};
use procfs::process::{MMapPath, Process};

/// A mapped file range of one process.
#[derive(Clone, Debug)]
struct Mapping {
    start: u64,
    end: u64,
    offset: u64,
    path: PathBuf,
}

/// Function symbols of one file by file offset.
#[derive(Debug, Default)]
struct SymbolIndex {
    /// (start offset, end offset, raw name), sorted by start.
    ranges: Vec<(u64, u64, String)>,
}

impl SymbolIndex {
    fn load(path: &Path) -> Option<Self> {
        let file = std::fs::File::open(path).ok()?;
        // SAFETY: read-only map of a library file; a concurrent truncation
        // could fault, which shared-library files are not subject to.
        let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
        let elf = object::File::parse(&*map).ok()?;
        let segments: Vec<(u64, u64, u64, u64)> = elf
            .segments()
            .map(|s| {
                let (off, size) = s.file_range();
                (s.address(), s.size(), off, size)
            })
            .collect();
        let to_offset = |addr: u64| {
            segments.iter().find_map(|&(va, vsize, off, fsize)| {
                (addr >= va && addr < va + vsize && addr - va < fsize).then_some(off + (addr - va))
            })
        };
        let mut ranges: Vec<(u64, u64, String)> = elf
            .symbols()
            .chain(elf.dynamic_symbols())
            .filter(|s| s.kind() == SymbolKind::Text && !s.is_undefined() && s.address() != 0)
            .filter_map(|s| {
                let start = to_offset(s.address())?;
                let name = s.name().ok()?.split('@').next()?.to_string();
                Some((start, start + s.size().max(1), name))
            })
            .collect();
        ranges.sort();
        ranges.dedup_by(|a, b| a.0 == b.0);
        Some(Self { ranges })
    }

    fn lookup(&self, offset: u64) -> Option<&str> {
        let i = self.ranges.partition_point(|r| r.0 <= offset).checked_sub(1)?;
        let (start, end, name) = &self.ranges[i];
        (offset >= *start && offset < *end).then_some(name.as_str())
    }
}

pub use super::demangle::demangle;

/// Resolves stub addresses to kernel names, caching per process and file.
#[derive(Default)]
pub struct StubResolver {
    maps: HashMap<u32, Vec<Mapping>>,
    files: HashMap<(u64, u64), Option<Arc<SymbolIndex>>>,
    names: HashMap<(u32, u64), Option<Arc<str>>>,
    /// Mappings copied from the parent at fork, used once the child's own are gone.
    inherited: HashMap<u32, Vec<Mapping>>,
}

impl StubResolver {
    /// The demangled name of the function at `addr` in process `pid`.
    pub fn resolve(&mut self, pid: u32, addr: u64) -> Option<Arc<str>> {
        if let Some(hit) = self.names.get(&(pid, addr)) {
            return hit.clone();
        }
        let name = self.lookup(pid, addr).map(|raw| Arc::from(demangle(&raw)));
        if name.is_none() {
            tracing::debug!(pid, addr = format_args!("{addr:#x}"), "no symbol names this launch address");
        }
        self.names.insert((pid, addr), name.clone());
        name
    }

    /// A forked child starts with its parent's mappings: if it exits before
    /// its launches are resolved, the parent's table still names its stubs.
    pub fn fork(&mut self, child: u32, parent: u32) {
        let maps = self.maps.entry(parent).or_insert_with(|| read_maps(parent)).clone();
        self.inherited.insert(child, maps);
    }

    /// Drops what is cached for an exited process.
    pub fn forget(&mut self, pid: u32) {
        self.maps.remove(&pid);
        self.inherited.remove(&pid);
        self.names.retain(|(p, _), _| *p != pid);
    }

    fn lookup(&mut self, pid: u32, addr: u64) -> Option<String> {
        let mapping = match self.find(pid, addr) {
            Some(m) => m,
            None => {
                // Mapped since we last read maps (a dlopen): read them again.
                self.maps.insert(pid, read_maps(pid));
                self.find(pid, addr)?
            }
        };
        let opened = Path::new("/proc").join(pid.to_string()).join("root").join(mapping.path.strip_prefix("/").ok()?);
        let meta = std::fs::metadata(&opened).ok()?;
        let index = self
            .files
            .entry((meta.dev(), meta.ino()))
            .or_insert_with(|| SymbolIndex::load(&opened).map(Arc::new))
            .clone()?;
        index.lookup(addr - mapping.start + mapping.offset).map(str::to_string)
    }

    fn find(&mut self, pid: u32, addr: u64) -> Option<Mapping> {
        let inherited = &self.inherited;
        let maps = self.maps.entry(pid).or_insert_with(|| {
            let own = read_maps(pid);
            if own.is_empty() {
                inherited.get(&pid).cloned().unwrap_or_default()
            } else {
                own
            }
        });
        maps.iter().find(|m| addr >= m.start && addr < m.end).cloned()
    }
}

fn read_maps(pid: u32) -> Vec<Mapping> {
    let Ok(maps) = Process::new(pid as i32).and_then(|p| p.maps()) else { return Vec::new() };
    maps.into_iter()
        .filter_map(|m| match m.pathname {
            MMapPath::Path(path) => Some(Mapping { start: m.address.0, end: m.address.1, offset: m.offset, path }),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    #[no_mangle]
    extern "C" fn cuda_tracer_test_stub_function() -> u32 {
        std::hint::black_box(7)
    }

    #[test]
    fn resolves_a_function_of_this_process() {
        let mut r = StubResolver::default();
        let addr = cuda_tracer_test_stub_function as *const () as usize as u64;
        let name = r.resolve(std::process::id(), addr).expect("resolved through /proc/self/maps and .symtab");
        assert_eq!(&*name, "cuda_tracer_test_stub_function");
        assert!(r.resolve(std::process::id(), 8).is_none(), "unmapped address");
    }

    #[test]
    fn demangles_cpp_names() {
        assert_eq!(demangle("_Z16attention_kernelPfS_i"), "attention_kernel(float*, float*, int)");
        assert_eq!(demangle("plain_c_name"), "plain_c_name");
    }
}
