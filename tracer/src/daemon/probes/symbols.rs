//! Finds the file offsets of traced CUDA entry points in a library's ELF
//! symbol tables (`.dynsym` and `.symtab`), matching versioned dynamic
//! symbols by their bare name.

use std::{collections::BTreeSet, path::Path};

use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};
use tracer_common::funcs::{self, FuncSpec, Layer};

/// Why a library could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SymbolError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} is not an ELF shared library: {source}")]
    Parse { path: String, source: object::Error },
    #[error("{path} exports none of the traced CUDA functions (is it really libcuda/libcudart?)")]
    NoSymbols { path: String },
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

/// Resolves every function of `layer` for which `selected` is true.
pub fn resolve(path: &Path, layer: Layer, selected: impl Fn(&FuncSpec) -> bool) -> Result<LibrarySymbols, SymbolError> {
    let shown = || path.display().to_string();
    let data = std::fs::read(path).map_err(|source| SymbolError::Read { path: shown(), source })?;
    let file = object::File::parse(&*data).map_err(|source| SymbolError::Parse { path: shown(), source })?;

    let mut offsets: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); funcs::FUNCS.len()];
    let symbols = file.dynamic_symbols().chain(file.symbols());
    for sym in symbols {
        if sym.kind() != SymbolKind::Text || sym.is_undefined() || sym.address() == 0 {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        let bare = name.split('@').next().unwrap_or(name);
        let Some((id, spec)) = funcs::by_name(bare) else {
            continue;
        };
        if spec.layer != layer || !selected(spec) {
            continue;
        }
        if let Some(off) = file_offset(&file, sym.address()) {
            offsets[id as usize].insert(off);
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
        return Err(SymbolError::NoSymbols { path: shown() });
    }
    Ok(out)
}

/// Virtual address to file offset through the loadable segment holding it.
fn file_offset(file: &object::File<'_>, addr: u64) -> Option<u64> {
    file.segments().find_map(|seg| {
        let (start, size) = (seg.address(), seg.size());
        if addr < start || addr >= start + size {
            return None;
        }
        let (file_start, file_size) = seg.file_range();
        let off = addr - start;
        (off < file_size).then_some(file_start + off)
    })
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
        let err = resolve(&p, Layer::Driver, |_| true).unwrap_err();
        assert!(err.to_string().contains("not an ELF"), "{err}");
    }

    #[test]
    fn library_without_cuda_symbols_is_rejected() {
        // The test binary itself is an ELF file without CUDA exports.
        let exe = std::env::current_exe().unwrap();
        let err = resolve(&exe, Layer::Driver, |_| true).unwrap_err();
        assert!(matches!(err, SymbolError::NoSymbols { .. }), "{err}");
    }
}
