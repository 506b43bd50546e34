//! Reads `task_struct.tgid`'s offset from the running kernel's BTF, so the
//! fork tracepoint can read a child's process id without CO-RE.

use std::path::Path;

/// Why the offset could not be found.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading kernel BTF at {path}: {source} (needs CONFIG_DEBUG_INFO_BTF=y; without it children of traced processes are found by the /proc scan only)")]
    Read { path: String, source: btf_rs::Error },
    #[error("kernel BTF has no struct task_struct with a tgid member")]
    NoTgid,
}

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Byte offset of `tgid` in `struct task_struct`.
pub fn task_tgid_offset(path: &Path) -> Result<u32, BtfError> {
    let offset = find_tgid(path);
    // Parsing vmlinux BTF allocates ~26 MiB that glibc keeps after it is
    // freed; give it back, or it stays in the daemon's RSS for good.
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap pages to the OS.
    unsafe {
        libc::malloc_trim(0);
    }
    offset
}

fn find_tgid(path: &Path) -> Result<u32, BtfError> {
    let btf =
        btf_rs::Btf::from_file(path).map_err(|source| BtfError::Read { path: path.display().to_string(), source })?;
    let types = btf.resolve_types_by_name("task_struct").map_err(|_| BtfError::NoTgid)?;
    for ty in types {
        let btf_rs::Type::Struct(st) = ty else {
            continue;
        };
        for member in &st.members {
            if btf.resolve_name(member).ok().as_deref() == Some("tgid") {
                return Ok(member.bit_offset() / 8);
            }
        }
    }
    Err(BtfError::NoTgid)
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_tgid_in_the_running_kernel() {
        let path = std::path::Path::new(super::VMLINUX_BTF);
        let off = super::task_tgid_offset(path).expect("tgid offset");
        assert!(off > 0 && off < 16 * 1024, "implausible offset {off}");
    }
}
