//! Kernel names on the runtime path: `cudaLaunchKernel`'s `func` is a host
//! stub's address; `/proc/PID/maps` turns it into a file offset, and that
//! file's `.symtab`/`.dynsym` (PyTorch's kernel stubs are local symbols)
//! into a demangled name. Every cache is bounded, answers (found or not) are
//! cached, and the work one process can cause is metered (`WorkBudget`):
//! a process sending unknown addresses gets its own launches unnamed, and
//! never holds up the reader for everyone else. The same per-process maps
//! and budgets name the library each call came from ([`super::callers`]).

use std::{
    num::NonZeroUsize,
    os::unix::fs::MetadataExt,
    sync::Arc,
    time::{Duration, Instant},
};

use lru::LruCache;

use crate::format::line::JsonStr;

use crate::daemon::ingest::{
    elf_functions::{function_symbols, FunctionSymbol},
    proc_maps::{open_mapped, Mapping, Maps, SharedMaps},
    work_budget::{WorkBudget, ALL_PROCESSES, PER_PROCESS},
};

/// Processes whose maps and budget are kept (least recently used go first).
const MAX_PROCESSES: usize = 512;
/// Executable file mappings kept per process (real ones have hundreds).
const MAX_MAPPINGS: usize = 4096;
/// Addresses whose answer is kept, over all processes (stubs, and callers apart).
pub(super) const MAX_NAMES: usize = 64 * 1024;
/// Files whose symbol index is kept, and their total size in bytes.
const MAX_FILES: usize = 256;
const MAX_INDEX_BYTES: usize = 256 << 20;

/// Function symbols of one file by file offset.
#[derive(Debug, Default)]
struct SymbolIndex {
    /// (start offset, end offset, raw name), sorted by start.
    ranges: Vec<FunctionSymbol>,
}

impl SymbolIndex {
    fn lookup(&self, offset: u64) -> Option<&str> {
        let i = self.ranges.partition_point(|r| r.0 <= offset).checked_sub(1)?;
        let (start, end, name) = &self.ranges[i];
        (offset >= *start && offset < *end).then_some(name.as_str())
    }

    /// Bytes it holds, for the cache's bound.
    fn weight(&self) -> usize {
        self.ranges.iter().map(|r| std::mem::size_of::<FunctionSymbol>() + r.2.len()).sum()
    }
}

pub use super::demangle::demangle;

/// One process's mappings and allowance.
pub(super) struct ProcState {
    /// Read once at first need; `None` until then.
    pub(super) maps: Option<SharedMaps>,
    /// Mappings copied from the parent at fork, used once the child's own
    /// are gone, and the parent whose `/proc` they can be opened through.
    inherited: Option<(SharedMaps, u32)>,
    budget: WorkBudget,
    /// Tells this process's cached answers from those of an earlier
    /// process with the same pid, which then age out of the LRU.
    pub(super) epoch: u64,
}

/// A file's identity: the same inode with other contents is another file.
type FileKey = (u64, u64, u64, i64, i64);

/// What one lookup came to.
enum Answer {
    Named(Arc<str>),
    /// Nothing names it (unmapped after a fresh read, no symbol): cached.
    Unnamed,
    /// Not looked into: the process's budget, or everyone's, is spent. Not cached, so a
    /// later launch of the same address can still be named.
    Deferred,
}

/// Resolves stub addresses to kernel names, caching per process and file.
pub struct StubResolver {
    procs: LruCache<u32, ProcState>,
    /// (pid, epoch, address) -> name, or `None` when nothing names it.
    names: LruCache<(u32, u64, u64), Option<Arc<str>>>,
    /// (pid, epoch, return address) -> the calling file's name as JSON, or
    /// `None` when no file maps it ([`super::callers`]).
    pub(super) callers: LruCache<(u32, u64, u64), Option<JsonStr>>,
    epochs: u64,
    files: LruCache<FileKey, Option<Arc<SymbolIndex>>>,
    index_bytes: usize,
    /// Resolver work of all processes together.
    all: WorkBudget,
    /// Lookups skipped because a budget was spent.
    pub deferred: u64,
}

/// An LRU capacity: `n`, or 1 for 0.
pub fn capacity(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

impl Default for StubResolver {
    fn default() -> Self {
        Self {
            procs: LruCache::new(capacity(MAX_PROCESSES)),
            names: LruCache::new(capacity(MAX_NAMES)),
            callers: LruCache::new(capacity(MAX_NAMES)),
            files: LruCache::new(capacity(MAX_FILES)),
            index_bytes: 0,
            all: WorkBudget::new(ALL_PROCESSES, Instant::now()),
            epochs: 0,
            deferred: 0,
        }
    }
}

/// Runs `work`, returning its result and how long it took.
fn timed<T>(work: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = work();
    (out, start.elapsed())
}

pub(super) fn read_maps(pid: u32) -> Maps {
    let mut maps = Maps::read(pid);
    maps.mappings.truncate(MAX_MAPPINGS);
    maps
}

impl StubResolver {
    /// The demangled name of the function at `addr` in process `pid`.
    pub fn resolve(&mut self, pid: u32, addr: u64) -> Option<Arc<str>> {
        let key = (pid, self.state(pid, Instant::now()).epoch, addr);
        if let Some(hit) = self.names.get(&key) {
            return hit.clone();
        }
        match self.lookup(pid, addr) {
            Answer::Named(name) => {
                self.names.put(key, Some(Arc::clone(&name)));
                Some(name)
            }
            Answer::Unnamed => {
                tracing::debug!(pid, addr = format_args!("{addr:#x}"), "no symbol names this launch address");
                self.names.put(key, None);
                None
            }
            Answer::Deferred => {
                self.deferred += 1;
                if self.deferred.is_power_of_two() {
                    tracing::info!(
                        pid,
                        deferred = self.deferred,
                        "kernel names left unresolved: a process's (or all processes') share of resolver work is spent"
                    );
                }
                None
            }
        }
    }

    /// A forked child starts with its parent's mappings: if it exits before
    /// its launches are resolved, the parent's table still names its stubs.
    /// Reading the parent's maps here is charged to the parent.
    pub fn fork(&mut self, child: u32, parent: u32) {
        let now = Instant::now();
        if self.state(parent, now).maps.is_none() && self.may_work(parent, now) {
            let maps = self.charged(parent, now, || read_maps(parent));
            self.state(parent, now).maps = Some(Arc::new(maps));
        }
        let Some(maps) = self.state(parent, now).maps.clone() else { return };
        self.state(child, now).inherited = Some((maps, parent));
    }

    /// Drops what is cached for an exited process.
    pub fn forget(&mut self, pid: u32) {
        // Its answers age out of the LRU: a reused pid gets a new epoch.
        self.procs.pop(&pid);
    }

    /// `pid`'s state, made fresh (a new epoch) if there is none.
    pub(super) fn state(&mut self, pid: u32, now: Instant) -> &mut ProcState {
        let epochs = &mut self.epochs;
        self.procs.get_or_insert_mut(pid, || {
            *epochs += 1;
            ProcState { maps: None, inherited: None, budget: WorkBudget::new(PER_PROCESS, now), epoch: *epochs }
        })
    }

    /// Whether `pid`, and all processes together, may cause work now.
    pub(super) fn may_work(&mut self, pid: u32, now: Instant) -> bool {
        let everyone = self.all.allows(now);
        self.state(pid, now).budget.allows(now) && everyone
    }

    /// Runs `work` for `pid`, charging its time to `pid` and to everyone.
    pub(super) fn charged<T>(&mut self, pid: u32, now: Instant, work: impl FnOnce() -> T) -> T {
        let (out, took) = timed(work);
        self.all.spend(took);
        self.state(pid, now).budget.spend(took);
        out
    }

    fn lookup(&mut self, pid: u32, addr: u64) -> Answer {
        let now = Instant::now();
        let Some((mapping, through)) = self.find_mapping(pid, addr, now) else { return Answer::Unnamed };
        let Some(mapping) = mapping else { return Answer::Deferred };
        let Some(file) = open_mapped(pid, &mapping).or_else(|| {
            // The child is gone: its parent may still map the same file there.
            through
                .and_then(|parent| open_mapped(parent, &mapping))
                .filter(|f| f.metadata().is_ok_and(|m| m.ino() == mapping.inode))
        }) else {
            return Answer::Unnamed;
        };
        let Ok(meta) = file.metadata() else { return Answer::Unnamed };
        let key = (meta.dev(), meta.ino(), meta.size(), meta.mtime(), meta.mtime_nsec());
        let index = match self.files.get(&key) {
            Some(cached) => cached.clone(),
            None => {
                if !self.may_work(pid, now) {
                    return Answer::Deferred;
                }
                let symbols = self.charged(pid, now, || function_symbols(&file));
                let index = match symbols {
                    Ok(ranges) => Some(Arc::new(SymbolIndex { ranges })),
                    Err(e) => {
                        tracing::debug!(pid, error = %e, "no symbols read from a mapped file");
                        None
                    }
                };
                self.cache_index(key, index.clone());
                index
            }
        };
        let Some(index) = index else { return Answer::Unnamed };
        let offset = addr - mapping.start + mapping.offset;
        match index.lookup(offset) {
            Some(raw) => Answer::Named(Arc::from(demangle(raw))),
            None => Answer::Unnamed,
        }
    }

    /// The mapping holding `addr` and, for inherited mappings, the parent
    /// to open it through. `None`: unmapped, even after a fresh read of the
    /// maps; `Some((None, _))`: not in the maps we have, and the budgets
    /// allow no fresh read now.
    fn find_mapping(&mut self, pid: u32, addr: u64, now: Instant) -> Option<(Option<Mapping>, Option<u32>)> {
        if let Some(m) = self.state(pid, now).maps.as_ref().and_then(|maps| maps.find(addr).cloned()) {
            return Some((Some(m), None));
        }
        // First need, or mapped since we last read them (a dlopen): read again.
        if !self.may_work(pid, now) {
            return Some((None, None));
        }
        let maps = self.charged(pid, now, || read_maps(pid));
        let p = self.state(pid, now);
        let found = if maps.mappings.is_empty() {
            p.inherited.as_ref().and_then(|(maps, parent)| Some((maps.find(addr)?.clone(), *parent)))
        } else {
            maps.find(addr).map(|m| (m.clone(), pid))
        };
        p.maps = Some(Arc::new(maps));
        let (m, through) = found?;
        Some((Some(m), (through != pid).then_some(through)))
    }

    /// Keeps `index`, evicting the least recently used files while the
    /// total is over [`MAX_INDEX_BYTES`].
    fn cache_index(&mut self, key: FileKey, index: Option<Arc<SymbolIndex>>) {
        let weight = |i: &Option<Arc<SymbolIndex>>| i.as_ref().map_or(0, |i| i.weight());
        self.index_bytes += weight(&index);
        if let Some((_, old)) = self.files.push(key, index) {
            self.index_bytes -= weight(&old);
        }
        while self.index_bytes > MAX_INDEX_BYTES && self.files.len() > 1 {
            let Some((_, old)) = self.files.pop_lru() else { break };
            self.index_bytes -= weight(&old);
        }
    }
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
    fn unknown_addresses_are_answered_from_the_cache_or_deferred_and_bounded() {
        let mut r = StubResolver::default();
        let pid = std::process::id();
        let addr = cuda_tracer_test_stub_function as *const () as usize as u64;
        assert!(r.resolve(pid, addr).is_some());
        // A flood of distinct unmapped addresses: each is a miss, but maps
        // are re-read only while the process's budget lasts.
        for i in 0..(MAX_NAMES as u64 + 10) {
            assert!(r.resolve(pid, 0x10 + i * 16).is_none());
        }
        assert!(r.deferred > 0, "re-reads stopped once the budget was spent");
        assert!(r.names.len() <= MAX_NAMES);
        // What was resolved before is still named, from the caches.
        r.names.clear();
        assert_eq!(r.resolve(pid, addr).as_deref(), Some("cuda_tracer_test_stub_function"));
    }

    #[test]
    fn demangles_cpp_names() {
        assert_eq!(demangle("_Z16attention_kernelPfS_i"), "attention_kernel(float*, float*, int)");
        assert_eq!(demangle("plain_c_name"), "plain_c_name");
    }
}
