//! Reading sessions back and answering from them: the trace reader, the
//! report, the exports and the KV-cache summary.

pub mod export;
pub mod inputs;
pub mod kvcache;
pub mod remote;
pub mod report;
pub mod top_kernels;
pub mod trace;
