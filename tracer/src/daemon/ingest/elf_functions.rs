//! The function symbols of one ELF file, by file offset, read through one
//! open descriptor with bounded reads: the headers through `object`'s
//! `ReadCache`, the symbol and string tables by `pread` into memory with a
//! size limit. Never `mmap`: a tenant can truncate a file it mapped, and a
//! read past the new end is then a short read (an error), not a SIGBUS.

use std::{fs::File, os::unix::fs::FileExt};

use object::{
    elf,
    read::elf::{FileHeader, ProgramHeader, SectionHeader, Sym},
    read::{ReadCache, StringTable},
    Endianness,
};

/// Largest symbol table, and largest string table, read from one file.
/// Real CUDA libraries fit well within it (libtorch_cuda, over 1 GB, has
/// tables of a few tens of MB); a planted file cannot make us allocate more.
pub const MAX_TABLE_BYTES: u64 = 128 << 20;

/// Most section or program headers read from one file (the ELF limit
/// without extended numbering).
const MAX_HEADERS: usize = 0xffff;

/// Why a file gave no symbols.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("not an ELF file this tracer reads: {0}")]
    Parse(&'static str),
    #[error("not an ELF file this tracer reads: {0}")]
    Object(#[from] object::Error),
    #[error("{what} is {size} bytes, over the {MAX_TABLE_BYTES}-byte limit")]
    TooLarge { what: &'static str, size: u64 },
    #[error("reading the file: {0}")]
    Io(#[from] std::io::Error),
}

/// One function: `[start, end)` in file offsets, and its raw name.
pub type FunctionSymbol = (u64, u64, String);

/// Every defined function symbol of `file` (`.symtab` and `.dynsym`), by
/// file offset, sorted by start and with one symbol per start.
pub fn function_symbols(file: &File) -> Result<Vec<FunctionSymbol>, ElfError> {
    let cache = ReadCache::new(file);
    let mut ranges = match object::FileKind::parse(&cache)? {
        object::FileKind::Elf64 => read_functions::<elf::FileHeader64<Endianness>>(file, &cache)?,
        object::FileKind::Elf32 => read_functions::<elf::FileHeader32<Endianness>>(file, &cache)?,
        _ => return Err(ElfError::Parse("not ELF")),
    };
    ranges.sort();
    ranges.dedup_by(|a, b| a.0 == b.0);
    Ok(ranges)
}

fn read_functions<Elf: FileHeader<Endian = Endianness>>(
    file: &File,
    cache: &ReadCache<&File>,
) -> Result<Vec<FunctionSymbol>, ElfError> {
    let header = Elf::parse(cache)?;
    let endian = header.endian()?;
    if header.phnum(endian, cache)? > MAX_HEADERS || header.shnum(endian, cache)? > MAX_HEADERS {
        return Err(ElfError::Parse("too many headers"));
    }
    // (virtual address, memory size, file offset, file size) of each loaded segment.
    let segments: Vec<(u64, u64, u64, u64)> = header
        .program_headers(endian, cache)?
        .iter()
        .filter(|p| p.p_type(endian) == elf::PT_LOAD)
        .map(|p| {
            (p.p_vaddr(endian).into(), p.p_memsz(endian).into(), p.p_offset(endian).into(), p.p_filesz(endian).into())
        })
        .collect();
    let to_offset = |addr: u64| {
        segments.iter().find_map(|&(va, vsize, off, fsize)| {
            let rel = addr.checked_sub(va)?;
            (rel < vsize && rel < fsize).then(|| off.checked_add(rel)).flatten()
        })
    };
    let sections = header.section_headers(endian, cache)?;
    let mut out = Vec::new();
    for section in sections.iter().filter(|s| matches!(s.sh_type(endian), elf::SHT_SYMTAB | elf::SHT_DYNSYM)) {
        let strings = sections.get(section.sh_link(endian) as usize).ok_or(ElfError::Parse("bad string table link"))?;
        let symbols = read_table(file, section.file_range(endian), "a symbol table")?;
        let names = read_table(file, strings.file_range(endian), "a string table")?;
        let names = object::pod::bytes_of_slice(&names);
        let strtab = StringTable::new(names, 0, names.len() as u64);
        let table = object::pod::bytes_of_slice(&symbols);
        let count = table.len() / std::mem::size_of::<Elf::Sym>();
        let (syms, _) = object::pod::slice_from_bytes::<Elf::Sym>(table, count)
            .map_err(|()| ElfError::Parse("misaligned symbol table"))?;
        out.extend(syms.iter().filter_map(|s| {
            let kind = s.st_type();
            let value: u64 = s.st_value(endian).into();
            if !(kind == elf::STT_FUNC || kind == elf::STT_GNU_IFUNC) || s.is_undefined(endian) || value == 0 {
                return None;
            }
            let start = to_offset(value)?;
            let raw = strtab.get(s.st_name(endian)).ok()?;
            let name = String::from_utf8_lossy(raw);
            let name = name.split('@').next()?.to_string();
            let size: u64 = s.st_size(endian).into();
            Some((start, start.saturating_add(size.max(1)), name))
        }));
    }
    Ok(out)
}

/// Reads `range` (offset, size) of `file` into 8-byte-aligned memory, so
/// symbol records can be viewed in place; `None` (a `SHT_NOBITS` section)
/// reads nothing. Refused over [`MAX_TABLE_BYTES`]; a file shorter than the
/// range (truncated, even now) is an error.
fn read_table(file: &File, range: Option<(u64, u64)>, what: &'static str) -> Result<Vec<u64>, ElfError> {
    let Some((offset, size)) = range else { return Ok(Vec::new()) };
    if size > MAX_TABLE_BYTES {
        return Err(ElfError::TooLarge { what, size });
    }
    let size = size as usize;
    let mut words = vec![0u64; size.div_ceil(8)];
    let bytes = object::pod::bytes_of_slice_mut(&mut words);
    file.read_exact_at(&mut bytes[..size], offset)?;
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_of_this_test_binary() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy");
        std::fs::copy(std::env::current_exe().unwrap(), &path).unwrap();
        (dir, path)
    }

    #[test]
    fn reads_the_functions_of_an_elf_file() {
        let (_dir, path) = copy_of_this_test_binary();
        let symbols = function_symbols(&File::open(&path).unwrap()).unwrap();
        assert!(symbols.iter().any(|(_, _, n)| n.contains("reads_the_functions_of_an_elf_file")));
        assert!(symbols.windows(2).all(|w| w[0].0 < w[1].0), "sorted, one per start");
    }

    #[test]
    fn a_file_truncated_while_open_is_an_error_not_a_crash() {
        let (_dir, path) = copy_of_this_test_binary();
        let file = File::open(&path).unwrap();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(4096).unwrap();
        assert!(function_symbols(&file).is_err());
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
        assert!(function_symbols(&file).is_err());
    }

    #[test]
    fn a_table_over_the_limit_is_refused_before_it_is_read() {
        let (_dir, path) = copy_of_this_test_binary();
        let file = File::open(&path).unwrap();
        let err = read_table(&file, Some((0, MAX_TABLE_BYTES + 1)), "a symbol table").unwrap_err();
        assert!(matches!(err, ElfError::TooLarge { .. }), "{err}");
    }
}
