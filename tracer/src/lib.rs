//! cuda-tracer: eBPF tracing of CUDA driver and runtime calls.
//!
//! Pipeline: [`loader`] loads the BPF object, [`discover`] finds processes and
//! libraries, [`attach`] (with [`symbols`]) places the probes, [`reader`]
//! drains the ring buffer through [`pipeline`] (decode, [`stats`], [`sink`]
//! with [`format`]), and [`session`] wires them and keeps [`metadata`].

pub mod annotate;
pub mod attach;
pub mod bench_pipeline;
pub mod btf;
pub mod budget;
pub mod check;
pub mod cli;
pub mod clock;
pub mod delivery;
pub mod discover;
pub mod errors;
pub mod exit;
pub mod export;
pub mod format;
pub mod kvcache;
pub mod loader;
pub mod metadata;
pub mod metrics;
pub mod pipeline;
pub mod prompt;
pub mod reader;
pub mod record;
pub mod report;
pub mod session;
pub mod sink;
pub mod stats;
pub mod stubs;
pub mod symbols;
pub mod trace;
pub mod upload;
pub mod webhook;
