//! The kernel side's userspace half: loading the BPF object, finding target
//! processes and their CUDA libraries, and attaching the uprobes.

pub mod attach;
pub mod bpf_sys;
pub mod btf;
pub mod discover;
pub mod exit;
pub mod hold;
pub mod libraries;
pub mod load_watch;
pub mod loader;
pub mod multi_load;
pub mod spawn;
pub mod symbols;
