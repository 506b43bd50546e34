//! The tracer daemon (`run`) and its one-command form (`record`): probes in
//! the kernel, ring-buffer ingest, and the outputs that keep what it saw.

pub mod ingest;
pub mod output;
pub mod probes;
pub mod session;
