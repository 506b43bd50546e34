//! Attaches the entry/return probe pair to every selected function of a CUDA
//! library, once per library file (uprobes bind to the inode, so one attach
//! covers every process and container mapping that file).

use std::{collections::HashMap, os::fd::AsRawFd as _, path::Path};

use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope};
use tracer_common::funcs::{self, FuncSpec, Group, Layer};

use crate::{
    daemon::privileges,
    daemon::probes::bpf_sys::{BpfSysError, Site},
    daemon::probes::loader::{LoadError, Probes},
    daemon::probes::symbols::{self, SymbolError},
    daemon::target_files::{OpenError, TargetFile},
};

/// Why a library could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(
        "{path} is not a CUDA driver or runtime library or NCCL (expected libcuda.so*, libcudart.so* or libnccl.so*)"
    )]
    NotCuda { path: String },
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Symbols(#[from] SymbolError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("attaching {path} interrupted: the tracer is stopping")]
    Interrupted { path: String },
    #[error("attaching to {function} in {path}: {source} (run `cuda-tracer check`){hint}", hint = privileges::perf_uprobe_hint(perf_refused(source)))]
    Probe { function: &'static str, path: String, source: aya::programs::ProgramError },
    #[error("attaching {path}: {source} (run `cuda-tracer check`)")]
    Multi { path: String, source: BpfSysError },
}

/// Whether the kernel refused to open a perf-event uprobe (EACCES/EPERM):
/// kernels with the 2025 uprobe fix refuse them without CAP_SYS_ADMIN.
fn perf_refused(source: &aya::programs::ProgramError) -> bool {
    use aya::programs::ProgramError;
    let ProgramError::SyscallError(e) = source else { return false };
    e.call == "perf_event_open" && matches!(e.io_error.raw_os_error(), Some(libc::EACCES | libc::EPERM))
}

/// How a library's probes are attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkMode {
    /// One uprobe_multi link per program for the whole library (kernel ≥ 6.6).
    UprobeMulti,
    /// One perf-event uprobe per function and program (older kernels).
    PerfEvent,
}

impl LinkMode {
    /// The name metadata.json gives it (`libraries[].attach`).
    pub const fn name(self) -> &'static str {
        match self {
            LinkMode::UprobeMulti => "uprobe_multi",
            LinkMode::PerfEvent => "perf_event",
        }
    }
}

/// Every probe point of a library, in attach order: file offset, cookie,
/// and the index in `found` of the function it serves.
struct Points {
    offsets: Vec<u64>,
    cookies: Vec<u64>,
    func: Vec<usize>,
}

fn points(resolved: &symbols::LibrarySymbols) -> Points {
    let mut p = Points { offsets: Vec::new(), cookies: Vec::new(), func: Vec::new() };
    for (i, func) in resolved.found.iter().enumerate() {
        let Some(spec) = funcs::by_id(u32::from(func.func_id)) else { continue };
        let cookie = spec.cookie(func.func_id).encode();
        for &offset in &func.offsets {
            p.offsets.push(offset);
            p.cookies.push(cookie);
            p.func.push(i);
        }
    }
    p
}

/// Which function groups to trace (`--functions`), and whether every
/// other exported function is traced name-only (`exported`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    groups: Vec<Group>,
    name_only: bool,
}

impl Selection {
    pub fn all() -> Self {
        Self { groups: Group::ALL.to_vec(), name_only: false }
    }

    /// Every group that is on by default (`highrate` is not).
    pub fn default_groups() -> Self {
        Self { groups: Group::ALL.into_iter().filter(|g| g.on_by_default()).collect(), name_only: false }
    }

    pub fn contains(&self, spec: &FuncSpec) -> bool {
        self.groups.contains(&spec.group)
    }

    /// Whether exported functions without a table row are traced too.
    pub fn name_only(&self) -> bool {
        self.name_only
    }

    /// The group names, `exported` last when selected (metadata.json).
    pub fn groups(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.groups.iter().map(|g| g.name()).chain(self.name_only.then_some(Group::Exported.name()))
    }
}

impl std::str::FromStr for Selection {
    type Err = String;

    /// `all` (every group), a list of groups, and `exported`: every exported
    /// function, those without a table row name-only (alone: with every
    /// group; with groups: those groups decoded, the rest name-only).
    fn from_str(s: &str) -> Result<Self, String> {
        let mut groups = Vec::new();
        let mut name_only = false;
        for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            if word == "all" {
                groups = Group::ALL.to_vec();
                continue;
            }
            if word == Group::Exported.name() {
                name_only = true;
                continue;
            }
            let named = if word == "default" {
                Self::default_groups().groups
            } else {
                let g = Group::ALL.iter().find(|g| g.name() == word).ok_or_else(|| {
                    let names: Vec<_> = Group::ALL.iter().map(|g| g.name()).collect();
                    format!("unknown function group `{word}`; choose from {}, default, all, exported", names.join(", "))
                })?;
                vec![*g]
            };
            for g in named {
                if !groups.contains(&g) {
                    groups.push(g);
                }
            }
        }
        if groups.is_empty() && name_only {
            groups = Group::ALL.to_vec();
        }
        if groups.is_empty() {
            return Err("no function group given; use `all` or a list like launch,memory".into());
        }
        Ok(Self { groups, name_only })
    }
}

pub use crate::format::metadata::AttachedLibrary;

/// Attaches libraries and remembers which files are done.
pub struct Attacher {
    selection: Selection,
    /// Set when the tracer is stopping: attaching can take seconds when the
    /// kernel is busy removing other uprobes, and must not delay shutdown.
    stopping: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Return and entry program names.
    programs: [&'static str; 2],
    /// One perf-event uprobe per function even where uprobe_multi works
    /// (`--uprobe-links per-probe`: tests and benchmarks).
    per_probe: bool,
    attached: HashMap<(u64, u64), AttachedLibrary>,
}

impl Attacher {
    /// `empty_probes` attaches programs that do nothing, at the same points:
    /// the benchmark's physical limit of a uprobe + uretprobe pair.
    pub fn new(
        selection: Selection,
        empty_probes: bool,
        per_probe: bool,
        stopping: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Self {
        let programs = if empty_probes { ["empty_return", "empty_entry"] } else { ["call_return", "call_entry"] };
        Self { selection, stopping, programs, per_probe, attached: HashMap::new() }
    }

    /// Whether the tracer is stopping (no point starting new work).
    pub fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the file with this `(dev, inode)` is attached already.
    pub fn is_attached(&self, key: (u64, u64)) -> bool {
        self.attached.contains_key(&key)
    }

    /// Whether a file with this inode is attached: for a process that exited
    /// before its mapped file could be opened (inode from /proc/PID/maps).
    pub fn is_attached_inode(&self, inode: u64) -> bool {
        inode != 0 && self.attached.keys().any(|&(_, ino)| ino == inode)
    }

    /// Attaches every selected function of the library open as `lib`.
    /// Everything goes through that one descriptor: the symbols are read
    /// from it and the probes attach to `/proc/self/fd/N`, the very file
    /// open (the kernel follows that link to the open file, not to a path),
    /// so nothing swapped in after the open can be read or attached.
    /// Returns whether this call attached it (false: it was already, or
    /// `--functions` selects nothing of its layer, as `launch` for NCCL).
    pub fn attach_file(&mut self, probes: &mut Probes, lib: &TargetFile) -> Result<bool, AttachError> {
        let shown = lib.shown.as_str();
        let layer = symbols::layer_of(Path::new(shown))
            .or_else(|| symbols::layer_of(&lib.source))
            .ok_or_else(|| AttachError::NotCuda { path: shown.to_string() })?;
        let key = lib.key();
        let wanted = funcs::FUNCS.iter().any(|s| s.layer == layer && self.selection.contains(s));
        if self.attached.contains_key(&key) || !wanted {
            return Ok(false);
        }
        let resolved =
            symbols::resolve(&lib.file, shown, layer, |s| self.selection.contains(s), self.selection.name_only())?;
        let own = format!("/proc/self/fd/{}", lib.file.as_raw_fd());
        let points = points(&resolved);
        let started = std::time::Instant::now();
        let (mode, count) = match self.attach_multi(probes, &own, &points) {
            Some(result) => (LinkMode::UprobeMulti, result.map_err(|e| self.probe_error(e, shown))?),
            None => (LinkMode::PerfEvent, self.attach_each(probes, &own, shown, &resolved, &points)?),
        };
        let lib = AttachedLibrary {
            path: shown.to_string(),
            opened: lib.source.clone(),
            layer: layer_name(layer).into(),
            dev: key.0,
            inode: key.1,
            functions: resolved.found.iter().map(|f| f.name.into()).collect(),
            missing: resolved.missing.into_iter().map(Into::into).collect(),
            probes: count,
            attach: mode.name().into(),
            name_only: resolved.name_only,
            not_probed: resolved.not_probed,
            attach_ms: started.elapsed().as_secs_f64() * 1000.0,
        };
        tracing::info!(path = %lib.path, functions = lib.functions.len(), missing = lib.missing.len(), probes = count, attach = %lib.attach, attach_ms = lib.attach_ms, "attached");
        self.attached.insert(key, lib);
        Ok(true)
    }

    /// Attaches every point with one uprobe_multi link per program; `None`
    /// when links are not used (forced off, or the kernel lacks them: then
    /// never tried again).
    fn attach_multi(&self, probes: &mut Probes, own: &str, points: &Points) -> Option<Result<usize, BpfSysError>> {
        if self.per_probe || probes.multi_unavailable().is_some() {
            return None;
        }
        let path = std::ffi::CString::new(own).ok()?;
        // Return probes first, as in `attach_each`.
        for (prog, site) in self.programs.into_iter().zip([Site::Return, Site::Entry]) {
            if let Err(e) = probes.attach_multi(prog, &path, &points.offsets, &points.cookies, site) {
                if !e.is_unsupported() {
                    return Some(Err(e));
                }
                tracing::info!(error = %e, "uprobe_multi refused: attaching one perf-event uprobe per function");
                probes.give_up_multi(e.to_string());
                // A return link made before the refusal stays: its probes
                // only ever see returns without entry, counted, until the end.
                return None;
            }
        }
        Some(Ok(points.offsets.len() * self.programs.len()))
    }

    /// Attaches one perf-event uprobe per point and program.
    fn attach_each(
        &self,
        probes: &mut Probes,
        own: &str,
        shown: &str,
        resolved: &symbols::LibrarySymbols,
        points: &Points,
    ) -> Result<usize, AttachError> {
        let mut count = 0;
        for (i, (&offset, &cookie)) in points.offsets.iter().zip(&points.cookies).enumerate() {
            if self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(AttachError::Interrupted { path: shown.to_string() });
            }
            // Return probe first: a call entered between the two attaches
            // is then counted as "return without entry" instead of vanishing.
            for prog in self.programs {
                let point =
                    UProbeAttachPoint { location: UProbeAttachLocation::AbsoluteOffset(offset), cookie: Some(cookie) };
                probes.uprobe(prog)?.attach(point, own, UProbeScope::AllProcesses).map_err(|source| {
                    AttachError::Probe {
                        function: resolved.found[points.func[i]].name,
                        path: shown.to_string(),
                        source,
                    }
                })?;
                count += 1;
            }
        }
        Ok(count)
    }

    fn probe_error(&self, source: BpfSysError, shown: &str) -> AttachError {
        AttachError::Multi { path: shown.to_string(), source }
    }

    /// Everything attached so far.
    pub fn libraries(&self) -> Vec<AttachedLibrary> {
        let mut libs: Vec<_> = self.attached.values().cloned().collect();
        libs.sort_by(|a, b| a.path.cmp(&b.path));
        libs
    }
}

fn layer_name(layer: Layer) -> &'static str {
    layer.type_name()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_parses_groups() {
        let s: Selection = "launch, memory".parse().unwrap();
        assert_eq!(s.groups().collect::<Vec<_>>(), ["launch", "memory"]);
        assert_eq!("all".parse::<Selection>().unwrap(), Selection::all());
        let err = "launch,bogus".parse::<Selection>().unwrap_err();
        assert!(err.contains("bogus") && err.contains("memcpy"), "{err}");
        assert!("".parse::<Selection>().is_err());
        let exported: Selection = "exported".parse().unwrap();
        assert!(exported.name_only() && exported.groups().count() == Group::ALL.len() + 1);
        let some: Selection = "launch,exported".parse().unwrap();
        assert_eq!(some.groups().collect::<Vec<_>>(), ["launch", "exported"]);
        assert!(!Selection::all().name_only());
        let nccl = funcs::by_name("ncclAllReduce").unwrap().1;
        assert!(Selection::all().contains(nccl) && "nccl".parse::<Selection>().unwrap().contains(nccl));
        assert!(!"launch".parse::<Selection>().unwrap().contains(nccl));
    }

    #[test]
    fn the_default_leaves_out_only_the_high_rate_group() {
        let default: Selection = "default".parse().unwrap();
        assert_eq!(default, Selection::default_groups());
        let named: Vec<_> = default.groups().collect();
        assert!(!named.contains(&"highrate") && named.contains(&"launch") && named.contains(&"device"), "{named:?}");
        assert_eq!(named.len() + 1, Group::ALL.len());
        let with: Selection = "default,highrate".parse().unwrap();
        assert_eq!(with.groups().count(), Group::ALL.len());
        assert!("all".parse::<Selection>().unwrap().groups().any(|g| g == "highrate"));
    }
}
