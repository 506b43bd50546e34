//! Finds the file offsets of traced CUDA entry points in a library's ELF
//! symbol tables (`.dynsym` and `.symtab`), matching versioned dynamic
//! symbols by their bare name.

use std::{collections::BTreeSet, fs::File, path::Path};

use object::{
    elf,
    read::elf::{SectionTable, Sym as _},
};
use tracer_common::funcs::{self, FuncSpec, Layer};

use crate::daemon::target_files::{
    elf::{Header, Parts},
    ElfError, ElfImage, ElfLimits,
};

/// Why a library could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SymbolError {
    #[error("{path} is not an ELF shared library: {source}")]
    Parse { path: String, source: ElfError },
    #[error("{path}: {source}")]
    Read { path: String, source: ElfError },
    #[error("{path} exports none of the traced CUDA functions (is it really libcuda/libcudart?)")]
    NoSymbols { path: String },
}

impl SymbolError {
    fn from_elf(path: &str, source: ElfError) -> Self {
        match source {
            ElfError::NotElf(_) | ElfError::Invalid(_) => Self::Parse { path: path.to_string(), source },
            source => Self::Read { path: path.to_string(), source },
        }
    }
}

/// One function found in the library.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub func_id: u16,
    pub name: &'static str,
    /// File offsets to attach to: usually one; several when differently
    /// versioned symbols of the same name have different code.
    pub offsets: Vec<u64>,
}

/// The traced functions of one library.
#[derive(Clone, Debug, Default)]
pub struct LibrarySymbols {
    pub found: Vec<Resolved>,
    /// Selected functions the library does not export (not an error).
    pub missing: Vec<&'static str>,
}

/// Which layer a library is, from its file name.
pub fn layer_of(path: &Path) -> Option<Layer> {
    let name = path.file_name()?.to_str()?;
    if name.starts_with("libcudart.so") || name.starts_with("libcudart-") {
        Some(Layer::Runtime)
    } else if name.starts_with("libcuda.so") {
        Some(Layer::Driver)
    } else {
        None
    }
}

/// Resolves every function of `layer` for which `selected` is true, in the
/// library open as `file` (`shown`: its name in errors). Only the headers,
/// `.dynsym`, `.symtab` and their string tables are read, through `file`,
/// within [`ElfLimits::CUDA_LIBRARY`].
pub fn resolve(
    file: &File,
    shown: &str,
    layer: Layer,
    selected: impl Fn(&FuncSpec) -> bool,
) -> Result<LibrarySymbols, SymbolError> {
    let tables = [elf::SHT_DYNSYM, elf::SHT_SYMTAB];
    let image = ElfImage::read(file, &tables, ElfLimits::CUDA_LIBRARY).map_err(|e| SymbolError::from_elf(shown, e))?;
    let (_, endian) = image.header().map_err(|e| SymbolError::from_elf(shown, e))?;
    let sections = image.sections().map_err(|e| SymbolError::from_elf(shown, e))?;

    let mut offsets: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); funcs::FUNCS.len()];
    for table in tables {
        for (name, address) in functions(&sections, image.data(), endian, table) {
            let bare = name.split(|&b| b == b'@').next().unwrap_or(name);
            let Some((id, spec)) = std::str::from_utf8(bare).ok().and_then(funcs::by_name) else { continue };
            if spec.layer != layer || !selected(spec) {
                continue;
            }
            if let Some(off) = image.file_offset(address) {
                offsets[id as usize].insert(off);
            }
        }
    }

    let mut out = LibrarySymbols::default();
    for (id, spec) in funcs::FUNCS.iter().enumerate() {
        if spec.layer != layer || !selected(spec) {
            continue;
        }
        let offs = &offsets[id];
        if offs.is_empty() {
            out.missing.push(spec.name);
        } else {
            out.found.push(Resolved { func_id: id as u16, name: spec.name, offsets: offs.iter().copied().collect() });
        }
    }
    if out.found.is_empty() {
        return Err(SymbolError::NoSymbols { path: shown.to_string() });
    }
    Ok(out)
}

/// `(name, address)` of every defined function in the symbol table of type
/// `table` (none when the file has no such table or it is unreadable).
fn functions<'a>(
    sections: &SectionTable<'a, Header, &'a Parts>,
    data: &'a Parts,
    endian: object::Endianness,
    table: u32,
) -> Vec<(&'a [u8], u64)> {
    let Ok(symbols) = sections.symbols(endian, data, table) else { return Vec::new() };
    let strings = symbols.strings();
    symbols
        .symbols()
        .iter()
        .filter(|s| matches!(s.st_type(), elf::STT_FUNC | elf::STT_GNU_IFUNC))
        .filter(|s| s.st_shndx(endian) != elf::SHN_UNDEF && s.st_value(endian) != 0)
        .filter_map(|s| Some((s.name(endian, strings).ok()?, s.st_value(endian))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_from_names() {
        assert_eq!(layer_of(Path::new("/x/libcuda.so.1")), Some(Layer::Driver));
        assert_eq!(layer_of(Path::new("libcudart.so.12")), Some(Layer::Runtime));
        assert_eq!(layer_of(Path::new("/x/libcudnn.so.9")), None);
        assert_eq!(layer_of(Path::new("/x/libc.so.6")), None);
    }

    #[test]
    fn non_elf_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("libcuda.so.1");
        std::fs::write(&p, b"not an elf").unwrap();
        let err = resolve(&File::open(&p).unwrap(), "libcuda.so.1", Layer::Driver, |_| true).unwrap_err();
        assert!(err.to_string().contains("not an ELF"), "{err}");
    }

    #[test]
    fn library_without_cuda_symbols_is_rejected() {
        // An ELF file without CUDA exports (this test binary's own string
        // table is now larger than a library's may be: the Parquet crates).
        let exe = std::path::Path::new("/bin/true");
        let err = resolve(&File::open(exe).unwrap(), "exe", Layer::Driver, |_| true).unwrap_err();
        assert!(matches!(err, SymbolError::NoSymbols { .. }), "{err}");
    }
}
