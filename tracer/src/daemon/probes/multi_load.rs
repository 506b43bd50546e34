//! Loads the uprobe programs a second time, as uprobe_multi programs: aya
//! 0.14 loads uprobes without an expected attach type, which the kernel's
//! uprobe_multi links refuse. The same object is parsed with aya's own
//! parser (aya-obj) and relocated against the maps aya already created
//! (so both copies share every map, globals included), then loaded with
//! [`bpf_sys::load_uprobe_multi`].

use std::{
    collections::{HashMap, HashSet},
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd, RawFd},
};

use aya::{maps::Map, Ebpf};

use crate::daemon::probes::bpf_sys::{self, BpfSysError};

/// Why the uprobe_multi copies could not be loaded (the perf-event path
/// is used then).
#[derive(Debug, thiserror::Error)]
pub enum MultiLoadError {
    #[error("parsing the BPF object: {0}")]
    Parse(#[from] aya_obj::ParseError),
    #[error("relocating the BPF object: {0}")]
    Relocate(#[from] aya_obj::relocation::EbpfRelocationError),
    #[error("relocating the BPF object's BTF: {0}")]
    Btf(String),
    #[error("BPF program {0} is missing from the object")]
    MissingProgram(&'static str),
    #[error(transparent)]
    Sys(#[from] BpfSysError),
}

/// The uprobe_multi copies of the uprobe programs, by name.
pub struct MultiPrograms {
    progs: HashMap<&'static str, OwnedFd>,
}

impl MultiPrograms {
    /// The program `name`, if it was loaded.
    pub fn get(&self, name: &str) -> Option<BorrowedFd<'_>> {
        self.progs.get(name).map(|fd| fd.as_fd())
    }
}

/// Loads `names` from `object` as uprobe_multi programs, using the maps of
/// `ebpf` (loaded from the same `object`).
pub fn load(ebpf: &Ebpf, object: &[u8], names: &[&'static str]) -> Result<MultiPrograms, MultiLoadError> {
    let mut obj = aya_obj::Object::parse(object)?;
    if obj.has_btf_relocations() {
        let btf = aya::Btf::from_sys_fs().map_err(|e| MultiLoadError::Btf(e.to_string()))?;
        obj.relocate_btf(&btf).map_err(|e| MultiLoadError::Btf(e.to_string()))?;
    }
    let fds: HashMap<&str, RawFd> = ebpf.maps().filter_map(|(name, map)| Some((name, map_fd(map)?))).collect();
    let defs = obj.maps.clone();
    let text_sections: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
    let maps = defs.iter().filter_map(|(name, def)| Some((name.as_str(), *fds.get(name.as_str())?, def)));
    obj.relocate_maps(maps, &text_sections)?;
    obj.relocate_calls(&text_sections)?;
    let mut progs = HashMap::new();
    for &name in names {
        let prog = obj.programs.get(name).ok_or(MultiLoadError::MissingProgram(name))?;
        let function = obj.functions.get(&prog.function_key()).ok_or(MultiLoadError::MissingProgram(name))?;
        let fd = bpf_sys::load_uprobe_multi(name, &function.instructions, &prog.license)?;
        progs.insert(name, fd);
    }
    Ok(MultiPrograms { progs })
}

/// The descriptor of a map aya created.
fn map_fd(map: &Map) -> Option<RawFd> {
    let data = match map {
        Map::Array(d)
        | Map::ArrayOfMaps(d)
        | Map::BloomFilter(d)
        | Map::CgroupArray(d)
        | Map::CgroupStorage(d)
        | Map::CgrpStorage(d)
        | Map::CpuMap(d)
        | Map::DevMap(d)
        | Map::DevMapHash(d)
        | Map::HashMap(d)
        | Map::HashOfMaps(d)
        | Map::InodeStorage(d)
        | Map::LpmTrie(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuCgroupStorage(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d)
        | Map::PerfEventArray(d)
        | Map::ProgramArray(d)
        | Map::Queue(d)
        | Map::ReusePortSockArray(d)
        | Map::RingBuf(d)
        | Map::SockHash(d)
        | Map::SockMap(d)
        | Map::SkStorage(d)
        | Map::Stack(d)
        | Map::StackTraceMap(d)
        | Map::Unsupported(d)
        | Map::XskMap(d) => d,
    };
    Some(data.fd().as_fd().as_raw_fd())
}
