//! From ring-buffer bytes to trace lines: the reader task, the checked
//! decode pipeline, and the annotations one record cannot carry itself
//! (kernel names, freed sizes, error names, the calling library).

pub mod annotate;
pub mod callers;
pub mod demangle;
pub mod elf_functions;
pub mod error_names;
pub mod kernel_names;
pub mod pipeline;
pub mod proc_maps;
pub mod reader;
pub mod work_budget;
