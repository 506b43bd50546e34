//! Loads the embedded BPF object, sets its globals, loads its programs and
//! attaches the process-tree tracepoints.

use crate::format::counts::Drops;
use aya::{
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{ProgramError, RawTracePoint, UProbe},
    Ebpf, EbpfError, EbpfLoader,
};
use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};

use crate::daemon::privileges;
use crate::daemon::probes::{
    bpf_sys::{self, BpfSysError, Site},
    multi_load::{self, MultiPrograms},
};

use tracer_common::abi::drop_slot;

/// The BPF object built by `build.rs`, embedded so the binary never reads an
/// object file from a fixed path.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

/// Why the BPF side could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("loading the BPF object failed: {0} (run `cuda-tracer check` to see which prerequisite is missing; tracing needs root or CAP_BPF+CAP_PERFMON){hint}", hint = privileges::lacking_hint(&privileges::LOAD))]
    Object(#[from] EbpfError),
    #[error("BPF program {name} is missing from the embedded object (stale build? run `cargo clean -p cuda-tracer`)")]
    MissingProgram { name: &'static str },
    #[error("BPF program {name}: {source}{hint}", hint = privileges::lacking_hint(&privileges::LOAD))]
    Program { name: &'static str, source: ProgramError },
    #[error("reading kernel BTF: {0}")]
    Btf(#[from] aya::BtfError),
    #[error("BPF map {name}: {source}")]
    Map { name: &'static str, source: aya::maps::MapError },
}

/// Options fixed at load time.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ringbuf_bytes: u32,
    /// Offset of `tgid` in `task_struct`; `None` disables fork following.
    pub task_tgid_offset: Option<u32>,
    /// The daemon matches a pattern: the load watch reports every exec and
    /// holds the library opens of processes not yet matched.
    pub match_exec: bool,
}

/// The uprobe programs: call entry/return and the benchmarks' empty pair.
const UPROBE_PROGRAMS: [&str; 4] = ["call_entry", "call_return", "empty_entry", "empty_return"];

/// The loaded programs and the maps userspace works with.
pub struct Probes {
    ebpf: Ebpf,
    /// Whether children of traced processes are followed in the kernel.
    pub follows_forks: bool,
    match_exec: bool,
    /// The uprobe programs loaded again for uprobe_multi links; `Err` says
    /// why not (the per-probe perf-event path is used then).
    multi: Result<MultiPrograms, String>,
    /// The uprobe_multi links made: closing one detaches all its probes.
    multi_links: Vec<OwnedFd>,
}

impl Probes {
    pub fn load(opts: &LoadOptions) -> Result<Self, LoadError> {
        let offset = opts.task_tgid_offset.unwrap_or(0);
        let wakeup_bytes = u64::from(opts.ringbuf_bytes / 4);
        let match_exec = u32::from(opts.match_exec);
        let mut loader = EbpfLoader::new();
        if let Some(n) = traced_pids_max() {
            loader.map_max_entries("TRACED", n);
        }
        let mut ebpf = loader
            .override_global("TASK_TGID_OFFSET", &offset, true)
            .override_global("WAKEUP_BYTES", &wakeup_bytes, true)
            .override_global("TRACER_TGID", &std::process::id(), true)
            .override_global("MATCH_EXEC", &match_exec, true)
            .map_max_entries("EVENTS", opts.ringbuf_bytes)
            .load(BPF_OBJECT)?;
        for name in UPROBE_PROGRAMS {
            uprobe(&mut ebpf, name)?.load().map_err(|source| LoadError::Program { name, source })?;
        }
        let multi = multi_load::load(&ebpf, BPF_OBJECT, &UPROBE_PROGRAMS).map_err(|e| {
            tracing::info!(error = %e, "uprobe_multi programs not loaded: attaching one perf-event uprobe per function");
            e.to_string()
        });
        let mut follows_forks = false;
        if opts.task_tgid_offset.is_some() {
            for (name, tp) in [("proc_fork", "sched_process_fork"), ("proc_exit", "sched_process_exit")] {
                attach_raw_tracepoint(&mut ebpf, name, tp)?;
            }
            follows_forks = true;
        }
        Ok(Self { ebpf, follows_forks, match_exec: opts.match_exec, multi, multi_links: Vec::new() })
    }

    /// Why uprobe_multi links cannot be made (`None`: they can be tried).
    pub fn multi_unavailable(&self) -> Option<&str> {
        self.multi.as_ref().err().map(String::as_str)
    }

    /// Attaches program `name` at every offset of the file at `path` (each
    /// with its cookie) in one uprobe_multi link, kept until these probes go.
    pub fn attach_multi(
        &mut self,
        name: &'static str,
        path: &std::ffi::CStr,
        offsets: &[u64],
        cookies: &[u64],
        site: Site,
    ) -> Result<(), BpfSysError> {
        let multi = self.multi.as_ref().map_err(|why| BpfSysError::Failed {
            what: "creating a uprobe_multi link",
            source: std::io::Error::other(why.clone()),
        })?;
        let prog = multi.get(name).ok_or_else(|| BpfSysError::Failed {
            what: "creating a uprobe_multi link",
            source: std::io::Error::other(format!("program {name} not loaded")),
        })?;
        let link = bpf_sys::attach_uprobe_multi(prog, path, offsets, cookies, site)?;
        self.multi_links.push(link);
        Ok(())
    }

    /// Refuses uprobe_multi from now on (the kernel refused a link).
    pub fn give_up_multi(&mut self, why: String) {
        self.multi = Err(why);
    }

    /// The entry or return program, for attaching.
    pub fn uprobe(&mut self, name: &'static str) -> Result<&mut UProbe, LoadError> {
        uprobe(&mut self.ebpf, name)
    }

    /// Moves the ring buffer out, for the reader task.
    pub fn take_ring_buffer(&mut self) -> Result<RingBuf<MapData>, LoadError> {
        let map = self.ebpf.take_map("EVENTS").ok_or(LoadError::MissingProgram { name: "EVENTS" })?;
        RingBuf::try_from(map).map_err(|source| LoadError::Map { name: "EVENTS", source })
    }

    fn traced(&mut self) -> Result<BpfHashMap<&mut MapData, u32, u32>, LoadError> {
        let map = self.ebpf.map_mut("TRACED").ok_or(LoadError::MissingProgram { name: "TRACED" })?;
        BpfHashMap::try_from(map).map_err(|source| LoadError::Map { name: "TRACED", source })
    }

    /// Adds a process to the in-kernel filter.
    pub fn trace_pid(&mut self, pid: u32) -> Result<(), LoadError> {
        self.traced()?.insert(pid, 0, 0).map_err(|source| LoadError::Map { name: "TRACED", source })
    }

    /// Removes a process from the in-kernel filter (absent is fine).
    pub fn untrace_pid(&mut self, pid: u32) -> Result<(), LoadError> {
        match self.traced()?.remove(&pid) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(LoadError::Map { name: "TRACED", source }),
        }
    }

    /// Empties the in-kernel filter: probes stay attached but record nothing.
    pub fn untrace_all(&mut self) {
        for pid in self.traced_pids().unwrap_or_default() {
            let _ = self.untrace_pid(pid);
        }
    }

    /// The processes the kernel side traces now (fork-followed ones included).
    pub fn traced_pids(&mut self) -> Result<Vec<u32>, LoadError> {
        Ok(self.traced()?.keys().filter_map(Result::ok).collect())
    }

    /// Attaches the `sys_enter`/`sys_exit` programs that notice (and hold)
    /// a traced process opening a CUDA library, and hands over their maps.
    pub fn watch_library_loads(&mut self) -> Result<LoadWatchMaps, LoadError> {
        // fexit costs nothing to other syscalls; the tracepoints run on every
        // syscall of every process, but need no BTF function support.
        let hook = match attach_open_fexit(&mut self.ebpf) {
            Ok(()) => "fexit:do_sys_openat2",
            Err(e) => {
                tracing::info!(error = %e, "fexit on do_sys_openat2 unavailable: watching opens with raw syscall tracepoints");
                for (name, tp) in [("open_enter", "sys_enter"), ("open_exit", "sys_exit")] {
                    attach_raw_tracepoint(&mut self.ebpf, name, tp)?;
                }
                "raw_tracepoint:sys_enter+sys_exit"
            }
        };
        let pending = if self.match_exec && self.follows_forks {
            attach_raw_tracepoint(&mut self.ebpf, "proc_exec", "sched_process_exec")?;
            let map = self.ebpf.take_map("PENDING").ok_or(LoadError::MissingProgram { name: "PENDING" })?;
            Some(BpfHashMap::try_from(map).map_err(|source| LoadError::Map { name: "PENDING", source })?)
        } else {
            None
        };
        let held = self.ebpf.map("HELD").ok_or(LoadError::MissingProgram { name: "HELD" })?;
        let held_fd = match held {
            aya::maps::Map::HashMap(data) => data.fd().as_fd().as_raw_fd(),
            _ => return Err(LoadError::MissingProgram { name: "HELD" }),
        };
        let ring = self.ebpf.take_map("LIB_EVENTS").ok_or(LoadError::MissingProgram { name: "LIB_EVENTS" })?;
        let ring = RingBuf::try_from(ring).map_err(|source| LoadError::Map { name: "LIB_EVENTS", source })?;
        let ctl = match self.ebpf.take_map("HOLD_CTL") {
            Some(aya::maps::Map::Array(data)) => data,
            _ => return Err(LoadError::MissingProgram { name: "HOLD_CTL" }),
        };
        Ok(LoadWatchMaps { ring, ctl, held_fd, hook, pending })
    }

    /// Sums of the per-CPU drop counters.
    pub fn drops(&self) -> Result<Drops, LoadError> {
        let map = self.ebpf.map("DROPS").ok_or(LoadError::MissingProgram { name: "DROPS" })?;
        let array =
            PerCpuArray::<&MapData, u64>::try_from(map).map_err(|source| LoadError::Map { name: "DROPS", source })?;
        let sum = |slot: u32| -> Result<u64, LoadError> {
            let values = array.get(&slot, 0).map_err(|source| LoadError::Map { name: "DROPS", source })?;
            Ok(values.iter().sum())
        };
        Ok(Drops {
            ringbuf_full: sum(drop_slot::RINGBUF_FULL)?,
            entry_map_full: sum(drop_slot::ENTRY_MAP_FULL)?,
            return_without_entry: sum(drop_slot::RETURN_WITHOUT_ENTRY)?,
            proc_events_lost: sum(drop_slot::PROC_RINGBUF_FULL)?,
            traced_map_full: sum(drop_slot::TRACED_MAP_FULL)?,
            name_map_full: sum(drop_slot::NAME_MAP_FULL)?,
            hold_map_full: sum(drop_slot::HOLD_MAP_FULL)?,
        })
    }

    /// Calls lost to a full ring buffer, per function name (non-zero only).
    pub fn drops_by_function(&self) -> Result<std::collections::BTreeMap<&'static str, u64>, LoadError> {
        let map = self.ebpf.map("DROPS_BY_FUNC").ok_or(LoadError::MissingProgram { name: "DROPS_BY_FUNC" })?;
        let array = PerCpuArray::<&MapData, u64>::try_from(map)
            .map_err(|source| LoadError::Map { name: "DROPS_BY_FUNC", source })?;
        let mut out = std::collections::BTreeMap::new();
        let named = tracer_common::funcs::FUNCS.iter().enumerate().map(|(id, spec)| (id as u32, spec.name));
        // Every name-only function's drops are in the one shared slot.
        let other = (drop_slot::FUNC_OTHER, tracer_common::funcs::extra::DROPS_NAME);
        for (slot, name) in named.chain([other]) {
            let values = array.get(&slot, 0).map_err(|source| LoadError::Map { name: "DROPS_BY_FUNC", source })?;
            let n: u64 = values.iter().sum();
            if n > 0 {
                // Rows of one name (one per runtime version) add up.
                *out.entry(name).or_insert(0) += n;
            }
        }
        Ok(out)
    }
}

/// `CUDA_TRACER_TRACED_PIDS_MAX`: a smaller traced-pid map, so a test can
/// fill it with a few processes and see the failed inserts counted.
fn traced_pids_max() -> Option<u32> {
    let n = std::env::var("CUDA_TRACER_TRACED_PIDS_MAX").ok()?.parse().ok()?;
    tracing::warn!(max = n, "traced-pid map size set by CUDA_TRACER_TRACED_PIDS_MAX (a test setting)");
    Some(n)
}

fn attach_open_fexit(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    const NAME: &str = "openat2_return";
    let btf = aya::Btf::from_sys_fs()?;
    let prog: &mut aya::programs::FExit = ebpf
        .program_mut(NAME)
        .ok_or(LoadError::MissingProgram { name: NAME })?
        .try_into()
        .map_err(|source| LoadError::Program { name: NAME, source })?;
    prog.load("do_sys_openat2", &btf).map_err(|source| LoadError::Program { name: NAME, source })?;
    prog.attach().map_err(|source| LoadError::Program { name: NAME, source })?;
    Ok(())
}

fn attach_raw_tracepoint(ebpf: &mut Ebpf, name: &'static str, tp: &str) -> Result<(), LoadError> {
    let prog: &mut RawTracePoint = ebpf
        .program_mut(name)
        .ok_or(LoadError::MissingProgram { name })?
        .try_into()
        .map_err(|source| LoadError::Program { name, source })?;
    prog.load().map_err(|source| LoadError::Program { name, source })?;
    prog.attach(tp).map_err(|source| LoadError::Program { name, source })?;
    Ok(())
}

fn uprobe<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut UProbe, LoadError> {
    ebpf.program_mut(name)
        .ok_or(LoadError::MissingProgram { name })?
        .try_into()
        .map_err(|source| LoadError::Program { name, source })
}

/// The load watch's maps, owned by userspace's load watch.
pub struct LoadWatchMaps {
    /// `LibOpenEvent`s.
    pub ring: RingBuf<MapData>,
    /// The `HOLD_CTL` array (heartbeat, counters).
    pub ctl: MapData,
    /// The `HELD` map's fd, valid while these `Probes` live.
    pub held_fd: std::os::fd::RawFd,
    /// Which kernel hook notices the opens.
    pub hook: &'static str,
    /// `PENDING`, when execs are matched: userspace removes a process once
    /// it has decided whether to trace it.
    pub pending: Option<BpfHashMap<MapData, u32, u64>>,
}
