//! Reads the parts of an ELF file the tracer needs (its headers and a few
//! sections: symbol tables, their strings, the dynamic section) through an
//! open descriptor with `pread`, each part size-checked before it is read.
//! Nothing reads the whole file and nothing maps it, so a sparse multi-GB
//! file costs what its headers claim, within limits, and a file truncated
//! underneath is a read error, never a SIGBUS.

use std::{fs::File, ops::Range, os::unix::fs::FileExt as _};

use object::{
    elf,
    read::{
        elf::{FileHeader, SectionHeader as _, SectionTable},
        ReadRef, StringTable,
    },
    Endianness,
};

/// The 64-bit ELF header the tracer reads (CUDA libraries are all 64-bit).
pub type Header = elf::FileHeader64<Endianness>;

/// How much of a file may be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElfLimits {
    /// One section (or header table).
    pub max_part_bytes: u64,
    /// Everything read from one file together.
    pub max_total_bytes: u64,
}

impl ElfLimits {
    /// For libcuda and libcudart: their symbol and string tables are tens of
    /// KiB (NVIDIA's libcudart 12: 4 KiB of `.dynsym`, 18 KiB of `.dynstr`),
    /// so 16 MiB a section, 48 MiB a file is far beyond any real one.
    pub const CUDA_LIBRARY: Self = Self { max_part_bytes: 16 << 20, max_total_bytes: 48 << 20 };
}

/// Why an ELF file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("reading it: {0}")]
    Read(#[source] std::io::Error),
    #[error("not a 64-bit ELF file: {0}")]
    NotElf(object::Error),
    #[error("invalid ELF data: {0}")]
    Invalid(object::Error),
    #[error("its {what} claims {bytes} bytes, more than the {limit} bytes allowed; not read")]
    TooLarge { what: String, bytes: u64, limit: u64 },
}

/// Byte ranges of one file held in memory, addressed by file offset: the
/// only data the parsers see (a read outside them fails).
#[derive(Debug, Default)]
pub struct Parts {
    file_len: u64,
    parts: Vec<(u64, Vec<u8>)>,
    total: u64,
}

impl Parts {
    fn load(&mut self, file: &File, offset: u64, bytes: u64, what: &str, limits: ElfLimits) -> Result<(), ElfError> {
        let too_large = |limit| ElfError::TooLarge { what: what.to_string(), bytes, limit };
        if bytes > limits.max_part_bytes {
            return Err(too_large(limits.max_part_bytes));
        }
        if self.total + bytes > limits.max_total_bytes {
            let what = format!("{what} with the parts read before it");
            return Err(ElfError::TooLarge { what, bytes: self.total + bytes, limit: limits.max_total_bytes });
        }
        let end = offset.checked_add(bytes).filter(|&end| end <= self.file_len);
        if end.is_none() {
            let e = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("its {what} lies past the end"));
            return Err(ElfError::Read(e));
        }
        let mut buf = vec![0; bytes as usize];
        file.read_exact_at(&mut buf, offset).map_err(ElfError::Read)?;
        self.total += bytes;
        self.parts.push((offset, buf));
        Ok(())
    }

    /// The loaded part holding `offset` and at least `min_len` bytes after
    /// it, and `offset`'s place in it.
    fn part_at(&self, offset: u64, min_len: u64) -> Option<(&[u8], usize)> {
        self.parts.iter().find_map(|(start, bytes)| {
            let rel = offset.checked_sub(*start)?;
            (rel < bytes.len() as u64 && bytes.len() as u64 - rel >= min_len)
                .then_some((bytes.as_slice(), rel as usize))
        })
    }
}

impl<'a> ReadRef<'a> for &'a Parts {
    fn len(self) -> Result<u64, ()> {
        Ok(self.file_len)
    }

    fn read_bytes_at(self, offset: u64, size: u64) -> Result<&'a [u8], ()> {
        if size == 0 {
            return Ok(&[]);
        }
        let (bytes, rel) = self.part_at(offset, size).ok_or(())?;
        let end = rel.checked_add(usize::try_from(size).map_err(|_| ())?).ok_or(())?;
        bytes.get(rel..end).ok_or(())
    }

    fn read_bytes_at_until(self, range: Range<u64>, delimiter: u8) -> Result<&'a [u8], ()> {
        let (bytes, rel) = self.part_at(range.start, 1).ok_or(())?;
        let len = usize::try_from(range.end.saturating_sub(range.start)).unwrap_or(usize::MAX);
        let tail = &bytes[rel..];
        let tail = &tail[..tail.len().min(len)];
        memchr::memchr(delimiter, tail).map(|n| &tail[..n]).ok_or(())
    }
}

/// The headers of an ELF file and the sections asked for, read.
#[derive(Debug)]
pub struct ElfImage {
    parts: Parts,
}

impl ElfImage {
    /// Reads `file`'s ELF header, program and section headers, and every
    /// section of a type in `section_types` with the string table it links
    /// to (and a symbol table's `SHT_SYMTAB_SHNDX`), within `limits`.
    pub fn read(file: &File, section_types: &[u32], limits: ElfLimits) -> Result<Self, ElfError> {
        let file_len = file.metadata().map_err(ElfError::Read)?.len();
        let mut parts = Parts { file_len, ..Parts::default() };
        let header_len = (std::mem::size_of::<Header>() as u64).min(file_len);
        parts.load(file, 0, header_len, "ELF header", limits)?;
        let (phoff, phbytes, shoff, shentsize) = {
            let header = Header::parse(&parts).map_err(ElfError::NotElf)?;
            let e = header.endian().map_err(ElfError::NotElf)?;
            let phbytes = u64::from(header.e_phnum(e)) * u64::from(header.e_phentsize(e));
            (header.e_phoff(e), phbytes, header.e_shoff(e), u64::from(header.e_shentsize(e)))
        };
        if shoff != 0 {
            // Section 0 first: it holds the section count when there are many.
            parts.load(file, shoff, shentsize, "first section header", limits)?;
            let shnum = {
                let header = Header::parse(&parts).map_err(ElfError::NotElf)?;
                header.shnum(header.endian().map_err(ElfError::NotElf)?, &parts).map_err(ElfError::Invalid)?
            };
            let bytes = (shnum as u64).saturating_mul(shentsize);
            parts.load(file, shoff, bytes, "section header table", limits)?;
        }
        if phoff != 0 {
            parts.load(file, phoff, phbytes, "program header table", limits)?;
        }
        let mut image = Self { parts };
        for (offset, bytes, what) in image.wanted_sections(section_types)? {
            image.parts.load(file, offset, bytes, &what, limits)?;
        }
        Ok(image)
    }

    /// `(offset, size, name)` of the sections to read: those of the wanted
    /// types, the string tables they link to, and symbol index tables.
    fn wanted_sections(&self, section_types: &[u32]) -> Result<Vec<(u64, u64, String)>, ElfError> {
        let (_, endian) = self.header()?;
        let sections = self.sections()?;
        let mut wanted: Vec<usize> = Vec::new();
        for (index, section) in sections.iter().enumerate() {
            let kind = section.sh_type(endian);
            if section_types.contains(&kind) {
                wanted.push(index);
                wanted.push(section.sh_link(endian) as usize);
            }
        }
        for (index, section) in sections.iter().enumerate() {
            let linked = section.sh_link(endian) as usize;
            if section.sh_type(endian) == elf::SHT_SYMTAB_SHNDX && wanted.contains(&linked) {
                wanted.push(index);
            }
        }
        wanted.sort_unstable();
        wanted.dedup();
        let mut out = Vec::new();
        for index in wanted {
            let Ok(section) = sections.section(object::SectionIndex(index)) else { continue };
            if index == 0 || section.sh_type(endian) == elf::SHT_NOBITS {
                continue;
            }
            out.push((section.sh_offset(endian), section.sh_size(endian), format!("section {index}")));
        }
        Ok(out)
    }

    /// The ELF header and the file's byte order.
    pub fn header(&self) -> Result<(&Header, Endianness), ElfError> {
        let header = Header::parse(&self.parts).map_err(ElfError::NotElf)?;
        Ok((header, header.endian().map_err(ElfError::NotElf)?))
    }

    /// The section table (without section names, which are never read).
    pub fn sections(&self) -> Result<SectionTable<'_, Header, &Parts>, ElfError> {
        let (header, endian) = self.header()?;
        let headers = header.section_headers(endian, &self.parts).map_err(ElfError::Invalid)?;
        Ok(SectionTable::new(headers, StringTable::default()))
    }

    /// The bytes read, for object's parsers.
    pub fn data(&self) -> &Parts {
        &self.parts
    }

    /// Virtual address to file offset, through the loadable segment holding it.
    pub fn file_offset(&self, addr: u64) -> Option<u64> {
        use object::read::elf::ProgramHeader as _;
        let (header, endian) = self.header().ok()?;
        header.program_headers(endian, &self.parts).ok()?.iter().find_map(|seg| {
            if seg.p_type(endian) != elf::PT_LOAD {
                return None;
            }
            let off = addr.checked_sub(seg.p_vaddr(endian))?;
            (off < seg.p_memsz(endian) && off < seg.p_filesz(endian)).then(|| seg.p_offset(endian) + off)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_asked_sections_are_read() {
        let exe = File::open(std::env::current_exe().unwrap()).unwrap();
        let image = ElfImage::read(&exe, &[elf::SHT_DYNSYM], ElfLimits::CUDA_LIBRARY).unwrap();
        // Far less than the test binary itself.
        assert!(image.parts.total < exe.metadata().unwrap().len() / 4, "{}", image.parts.total);
        let (_, endian) = image.header().unwrap();
        let symbols = image.sections().unwrap().symbols(endian, image.data(), elf::SHT_DYNSYM).unwrap();
        assert!(!symbols.is_empty());
    }

    #[test]
    fn a_section_claiming_more_than_the_limit_is_not_read() {
        let exe = File::open(std::env::current_exe().unwrap()).unwrap();
        let tiny = ElfLimits { max_part_bytes: 1 << 20, max_total_bytes: 4096 };
        let e = ElfImage::read(&exe, &[elf::SHT_SYMTAB], tiny).unwrap_err();
        assert!(matches!(e, ElfError::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains("more than the"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let zeros = dir.path().join("zeros");
        std::fs::File::create(&zeros).unwrap().set_len(3 << 30).unwrap();
        let e = ElfImage::read(&File::open(&zeros).unwrap(), &[], ElfLimits::CUDA_LIBRARY).unwrap_err();
        assert!(matches!(e, ElfError::NotElf(_)), "{e}");
    }
}
