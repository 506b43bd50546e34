//! Finds the file offsets of traced CUDA entry points in a library's ELF
//! symbol tables (`.dynsym` and `.symtab`), matching versioned dynamic
//! symbols by their bare name.

use std::{collections::BTreeSet, fs::File, path::Path};

use object::{
    elf,
    read::elf::{Dyn as _, SectionTable, Sym as _},
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
    #[error("{path} exports none of the traced CUDA functions (is it really libcuda/libcudart/libnccl?)")]
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
    /// Of `found`, how many are name-only (exported, no table row).
    pub name_only: usize,
    /// Exported functions not probed: past [`NAME_ONLY_MAX`], or no id left.
    pub not_probed: usize,
}

/// Most name-only functions probed per library. A real libcuda exports
/// about 600 functions, NVIDIA's libcudart 12.9 435 and 13.x 458.
pub const NAME_ONLY_MAX: usize = 2048;

/// Which layer a library is, from its file name.
pub fn layer_of(path: &Path) -> Option<Layer> {
    let name = path.file_name()?.to_str()?;
    if name.starts_with("libcudart.so") || name.starts_with("libcudart-") {
        Some(Layer::Runtime)
    } else if name.starts_with("libcuda.so") {
        Some(Layer::Driver)
    } else if name.starts_with("libnccl.so") {
        Some(Layer::Nccl)
    } else {
        None
    }
}

/// Resolves every function of `layer` for which `selected` is true, in the
/// library open as `file` (`shown`: its name in errors), and with
/// `name_only` every other exported function too. Only the headers,
/// `.dynsym`, `.symtab` and their string tables are read, through `file`,
/// within [`ElfLimits::CUDA_LIBRARY`].
pub fn resolve(
    file: &File,
    shown: &str,
    layer: Layer,
    selected: impl Fn(&FuncSpec) -> bool,
    name_only: bool,
) -> Result<LibrarySymbols, SymbolError> {
    let tables = [elf::SHT_DYNSYM, elf::SHT_SYMTAB];
    let read = [elf::SHT_DYNSYM, elf::SHT_SYMTAB, elf::SHT_DYNAMIC];
    let image = ElfImage::read(file, &read, ElfLimits::CUDA_LIBRARY).map_err(|e| SymbolError::from_elf(shown, e))?;
    let (_, endian) = image.header().map_err(|e| SymbolError::from_elf(shown, e))?;
    let sections = image.sections().map_err(|e| SymbolError::from_elf(shown, e))?;
    let major = match layer {
        Layer::Runtime => soname(&sections, image.data(), endian)
            .and_then(|n| runtime_major(&n))
            .or_else(|| runtime_major(Path::new(shown).file_name().and_then(|n| n.to_str()).unwrap_or_default())),
        _ => None,
    };
    let applies = |spec: &FuncSpec| spec.layer == layer && spec.applies_to(major) && selected(spec);

    let mut offsets: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); funcs::FUNCS.len()];
    for table in tables {
        for (name, address) in functions(&sections, image.data(), endian, table) {
            let bare = name.split(|&b| b == b'@').next().unwrap_or(name);
            let by_name = |n| funcs::for_library(n, layer, major);
            let Some((id, spec)) = std::str::from_utf8(bare).ok().and_then(by_name) else { continue };
            if !applies(spec) {
                continue;
            }
            if let Some(off) = image.file_offset(address) {
                offsets[id as usize].insert(off);
            }
        }
    }

    let mut out = LibrarySymbols::default();
    for (id, spec) in funcs::FUNCS.iter().enumerate() {
        if !applies(spec) {
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
    if name_only {
        let exports = functions(&sections, image.data(), endian, elf::SHT_DYNSYM);
        add_name_only(&mut out, exports, layer, |address| image.file_offset(address));
    }
    Ok(out)
}

/// The library's `DT_SONAME` (none when it has no dynamic section or name).
fn soname<'a>(
    sections: &SectionTable<'a, Header, &'a Parts>,
    data: &'a Parts,
    endian: object::Endianness,
) -> Option<String> {
    let (dyns, link) = sections.dynamic(endian, data).ok()??;
    let strings = sections.strings(endian, data, link).ok()?;
    let entry = dyns.iter().find(|d| d.d_tag(endian) as u32 == elf::DT_SONAME)?;
    let name = strings.get(u32::try_from(entry.d_val(endian)).ok()?).ok()?;
    Some(String::from_utf8_lossy(name).into_owned())
}

/// The major version in a runtime's name: `libcudart.so.13[.0.96]` is 13.
pub fn runtime_major(name: &str) -> Option<u8> {
    let version = name.strip_prefix("libcudart.so.")?;
    version.split('.').next()?.parse().ok()
}

/// Adds every exported function without a table row to `found`, with an
/// id from the name-only registry. One name per code address: an alias of
/// a probed function would report each call twice.
fn add_name_only(
    out: &mut LibrarySymbols,
    exports: Vec<(&[u8], u64)>,
    layer: Layer,
    file_offset: impl Fn(u64) -> Option<u64>,
) {
    let mut taken: BTreeSet<u64> = out.found.iter().flat_map(|f| f.offsets.iter().copied()).collect();
    let mut by_name: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for (name, address) in exports {
        let bare = name.split(|&b| b == b'@').next().unwrap_or(name);
        let Ok(bare) = std::str::from_utf8(bare) else { continue };
        if funcs::by_name(bare).is_some() {
            continue;
        }
        if let Some(off) = file_offset(address) {
            by_name.entry(bare).or_insert(off);
        }
    }
    for (name, off) in by_name {
        if !taken.insert(off) {
            continue;
        }
        let spec_id = (out.name_only < NAME_ONLY_MAX).then(|| funcs::extra::intern(name, layer)).flatten();
        let Some((id, spec)) = spec_id.and_then(|id| Some((id, funcs::by_id(u32::from(id))?))) else {
            out.not_probed += 1;
            continue;
        };
        if spec.name != name {
            // The registry is full: this name would be traced as another.
            out.not_probed += 1;
            continue;
        }
        out.found.push(Resolved { func_id: id, name: spec.name, offsets: vec![off] });
        out.name_only += 1;
    }
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
        assert_eq!(layer_of(Path::new("/site/nvidia/nccl/lib/libnccl.so.2")), Some(Layer::Nccl));
        assert_eq!(layer_of(Path::new("libnccl-net.so")), None, "NCCL's network plugins export no traced function");
        assert_eq!(layer_of(Path::new("/x/libcudnn.so.9")), None);
        assert_eq!(layer_of(Path::new("/x/libc.so.6")), None);
    }

    #[test]
    fn runtime_major_versions_from_names() {
        assert_eq!(runtime_major("libcudart.so.12"), Some(12));
        assert_eq!(runtime_major("libcudart.so.13.0.96"), Some(13));
        assert_eq!(runtime_major("libcudart.so"), None);
        assert_eq!(runtime_major("libcuda.so.1"), None);
    }

    #[test]
    fn real_runtimes_get_the_rows_of_their_major_version() {
        for (var, major) in [("CUDA_TRACER_NVIDIA_CUDART", 12), ("CUDA_TRACER_NVIDIA_CUDART13", 13)] {
            let Some(path) = std::env::var_os(var) else {
                eprintln!("SKIPPED: {var} is not set (cargo xtask setup installs NVIDIA's runtime)");
                continue;
            };
            // Shown under a name that says nothing: the major comes from DT_SONAME.
            let syms = resolve(&File::open(path).unwrap(), "runtime", Layer::Runtime, |_| true, false).unwrap();
            for name in ["cudaMemAdvise", "cudaStreamGetCaptureInfo"] {
                let row = syms.found.iter().find(|r| r.name == name).unwrap_or_else(|| panic!("{name}"));
                assert_eq!(funcs::FUNCS[row.func_id as usize].runtime_major, Some(major), "{name} in {var}");
            }
            let v2 = syms.found.iter().any(|r| r.name == "cudaMemAdvise_v2");
            assert_eq!(v2, major == 12, "cudaMemAdvise_v2 is exported by 12 only");
        }
    }

    #[test]
    fn non_elf_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("libcuda.so.1");
        std::fs::write(&p, b"not an elf").unwrap();
        let err = resolve(&File::open(&p).unwrap(), "libcuda.so.1", Layer::Driver, |_| true, false).unwrap_err();
        assert!(err.to_string().contains("not an ELF"), "{err}");
    }

    #[test]
    fn library_without_cuda_symbols_is_rejected() {
        // An ELF file without CUDA exports (this test binary's own string
        // table is now larger than a library's may be: the Parquet crates).
        let exe = std::path::Path::new("/bin/true");
        let err = resolve(&File::open(exe).unwrap(), "exe", Layer::Driver, |_| true, false).unwrap_err();
        assert!(matches!(err, SymbolError::NoSymbols { .. }), "{err}");
    }
}
