//! A process's executable file mappings (`/proc/PID/maps`) and the one way
//! the name resolver opens the file behind one: `/proc/PID/map_files/<range>`,
//! the mapped inode itself, so no path the process controls is resolved.
//! A mapping's file name is only reported (a call's `caller`), never opened.

use std::{fs::File, os::unix::fs::MetadataExt, sync::Arc};

use procfs::process::{MMPermissions, MMapPath, Process};

/// An executable mapping of a file in one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    /// The mapped file's inode, as the kernel lists it.
    pub inode: u64,
    /// The file's name, the last part of the path the maps list
    /// (`libcublasLt.so.12`); shared by the mappings of one read.
    pub file: Arc<str>,
}

/// The executable file mappings of one process, sorted by start.
#[derive(Debug, Default)]
pub struct Maps {
    pub mappings: Vec<Mapping>,
}

impl Maps {
    /// Reads `/proc/PID/maps`; a process gone or unreadable has none.
    pub fn read(pid: u32) -> Self {
        let Ok(maps) = Process::new(pid as i32).and_then(|p| p.maps()) else { return Self::default() };
        let mut mappings: Vec<Mapping> = maps
            .into_iter()
            .filter(|m| m.perms.contains(MMPermissions::EXECUTE) && matches!(m.pathname, MMapPath::Path(_)))
            .map(|m| {
                let file = match &m.pathname {
                    MMapPath::Path(path) => file_name(path),
                    _ => Arc::from(""),
                };
                Mapping { start: m.address.0, end: m.address.1, offset: m.offset, inode: m.inode, file }
            })
            .collect();
        mappings.sort_by_key(|m| m.start);
        Self { mappings }
    }

    /// The mapping holding `addr`.
    pub fn find(&self, addr: u64) -> Option<&Mapping> {
        let i = self.mappings.partition_point(|m| m.start <= addr).checked_sub(1)?;
        let m = &self.mappings[i];
        (addr < m.end).then_some(m)
    }
}

/// The last component of `path`, lossily as text (the whole path if it has none).
fn file_name(path: &std::path::Path) -> Arc<str> {
    let name = path.file_name().map_or_else(|| path.as_os_str().to_string_lossy(), |n| n.to_string_lossy());
    Arc::from(name)
}

/// The path of `mapping` in `pid`'s `map_files`.
fn map_file(pid: u32, mapping: &Mapping) -> String {
    format!("/proc/{pid}/map_files/{:x}-{:x}", mapping.start, mapping.end)
}

/// Whether `pid` still maps `mapping`'s inode at the same range (an `exec`
/// replaces every mapping; maps read before it would name the wrong file).
pub fn still_mapped(pid: u32, mapping: &Mapping) -> bool {
    std::fs::metadata(map_file(pid, mapping)).is_ok_and(|meta| meta.ino() == mapping.inode)
}

/// Shared read-only maps (a forked child starts with its parent's).
pub type SharedMaps = Arc<Maps>;

/// Opens the file `pid` maps at `mapping`, read-only, as the regular file
/// it is; `None` if the process or the mapping is gone (or it is no
/// regular file, or not the inode the maps listed).
pub fn open_mapped(pid: u32, mapping: &Mapping) -> Option<File> {
    let file = File::open(map_file(pid, mapping)).ok()?;
    let meta = file.metadata().ok()?;
    (meta.file_type().is_file() && meta.ino() == mapping.inode).then_some(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_opens_this_test_binary_by_its_mapping() {
        let maps = Maps::read(std::process::id());
        let here = finds_and_opens_this_test_binary_by_its_mapping as *const () as usize as u64;
        let mapping = maps.find(here).expect("this function's code is mapped");
        assert!(maps.find(8).is_none(), "unmapped address");
        let file = open_mapped(std::process::id(), mapping).expect("map_files opens the mapped inode");
        let exe_path = std::env::current_exe().unwrap();
        let exe = std::fs::metadata(&exe_path).unwrap();
        assert_eq!(file.metadata().unwrap().ino(), exe.ino());
        assert_eq!(*mapping.file, *exe_path.file_name().unwrap().to_string_lossy());
        assert!(still_mapped(std::process::id(), mapping));
        let moved = Mapping { start: mapping.start + 4096, ..mapping.clone() };
        assert!(!still_mapped(std::process::id(), &moved), "no mapping at that range");
    }
}
