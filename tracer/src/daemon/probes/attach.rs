//! Attaches the entry/return probe pair to every selected function of a CUDA
//! library, once per library file (uprobes bind to the inode, so one attach
//! covers every process and container mapping that file).

use std::{collections::HashMap, os::fd::AsRawFd as _, path::Path};

use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope};
use tracer_common::funcs::{self, FuncSpec, Group, Layer};

use crate::{
    daemon::probes::loader::{LoadError, Probes},
    daemon::probes::symbols::{self, SymbolError},
    daemon::target_files::{OpenError, TargetFile},
};

/// Why a library could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("{path} is not a CUDA driver or runtime library (expected libcuda.so* or libcudart.so*)")]
    NotCuda { path: String },
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Symbols(#[from] SymbolError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("attaching {path} interrupted: the tracer is stopping")]
    Interrupted { path: String },
    #[error("attaching to {function} in {path}: {source} (run `cuda-tracer check`)")]
    Probe { function: &'static str, path: String, source: aya::programs::ProgramError },
}

/// Which function groups to trace (`--functions`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection(Vec<Group>);

impl Selection {
    pub fn all() -> Self {
        Self(Group::ALL.to_vec())
    }

    /// Every group that is on by default (`highrate` is not).
    pub fn default_groups() -> Self {
        Self(Group::ALL.into_iter().filter(|g| g.on_by_default()).collect())
    }

    pub fn contains(&self, spec: &FuncSpec) -> bool {
        self.0.contains(&spec.group)
    }

    pub fn groups(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.iter().map(|g| g.name())
    }
}

impl std::str::FromStr for Selection {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut groups = Vec::new();
        for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            if word == "all" {
                return Ok(Self::all());
            }
            let named = if word == "default" {
                Self::default_groups().0
            } else {
                let g = Group::ALL.iter().find(|g| g.name() == word).ok_or_else(|| {
                    let names: Vec<_> = Group::ALL.iter().map(|g| g.name()).collect();
                    format!("unknown function group `{word}`; choose from {}, default, all", names.join(", "))
                })?;
                vec![*g]
            };
            for g in named {
                if !groups.contains(&g) {
                    groups.push(g);
                }
            }
        }
        if groups.is_empty() {
            return Err("no function group given; use `all` or a list like launch,memory".into());
        }
        Ok(Self(groups))
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
    attached: HashMap<(u64, u64), AttachedLibrary>,
}

impl Attacher {
    /// `empty_probes` attaches programs that do nothing, at the same points:
    /// the benchmark's physical limit of a uprobe + uretprobe pair.
    pub fn new(
        selection: Selection,
        empty_probes: bool,
        stopping: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Self {
        let programs = if empty_probes { ["empty_return", "empty_entry"] } else { ["call_return", "call_entry"] };
        Self { selection, stopping, programs, attached: HashMap::new() }
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
    /// Returns whether this call attached it (false: it was already).
    pub fn attach_file(&mut self, probes: &mut Probes, lib: &TargetFile) -> Result<bool, AttachError> {
        let shown = lib.shown.as_str();
        let layer = symbols::layer_of(Path::new(shown))
            .or_else(|| symbols::layer_of(&lib.source))
            .ok_or_else(|| AttachError::NotCuda { path: shown.to_string() })?;
        let key = lib.key();
        if self.attached.contains_key(&key) {
            return Ok(false);
        }
        let resolved = symbols::resolve(&lib.file, shown, layer, |s| self.selection.contains(s))?;
        let own = format!("/proc/self/fd/{}", lib.file.as_raw_fd());
        let mut count = 0;
        for func in &resolved.found {
            if self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(AttachError::Interrupted { path: shown.to_string() });
            }
            let spec = &funcs::FUNCS[func.func_id as usize];
            let cookie = spec.cookie(func.func_id).encode();
            for &offset in &func.offsets {
                // Return probe first: a call entered between the two attaches
                // is then counted as "return without entry" instead of vanishing.
                for prog in self.programs {
                    let point = UProbeAttachPoint {
                        location: UProbeAttachLocation::AbsoluteOffset(offset),
                        cookie: Some(cookie),
                    };
                    probes.uprobe(prog)?.attach(point, &own, UProbeScope::AllProcesses).map_err(|source| {
                        AttachError::Probe { function: func.name, path: shown.to_string(), source }
                    })?;
                    count += 1;
                }
            }
        }
        let lib = AttachedLibrary {
            path: shown.to_string(),
            opened: lib.source.clone(),
            layer: layer_name(layer).into(),
            dev: key.0,
            inode: key.1,
            functions: resolved.found.iter().map(|f| f.name.into()).collect(),
            missing: resolved.missing.into_iter().map(Into::into).collect(),
            probes: count,
        };
        tracing::info!(path = %lib.path, functions = lib.functions.len(), missing = lib.missing.len(), probes = count, "attached");
        self.attached.insert(key, lib);
        Ok(true)
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
