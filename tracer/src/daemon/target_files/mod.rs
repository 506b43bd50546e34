//! Files a traced process names, read safely: opened inside the process's
//! own root ([`root`]) and parsed within size limits through that one
//! descriptor ([`elf`]). Anything that reads a tenant's libraries (the
//! attacher, `check`, a kernel-name resolver) goes through here.

pub mod elf;
pub mod root;

pub use elf::{ElfError, ElfImage, ElfLimits};
pub use root::{OpenError, TargetFile, TargetRoot, MAX_LIBRARY_BYTES};
