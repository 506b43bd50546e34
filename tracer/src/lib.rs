//! cuda-tracer: eBPF tracing of CUDA driver and runtime calls.
//!
//! The crate is split the way data flows:
//! - [`daemon`]: the tracer itself. [`daemon::probes`] loads the BPF object,
//!   finds processes and libraries and places the uprobes;
//!   [`daemon::ingest`] drains the ring buffer, decodes and annotates each
//!   record; [`daemon::output`] writes trace files, counts, keeps the disk
//!   budget, uploads and serves `/metrics`; [`daemon::run()`] owns a session
//!   and every task around it, supervised ([`daemon::supervise`]).
//! - [`format`]: the on-disk contract between the daemon and every reader:
//!   file names, the JSONL line, the KV-cache CSV and `metadata.json`.
//! - [`analysis`]: reading traces back ([`analysis::trace`]) and answering
//!   from them ([`analysis::report`], [`analysis::export`],
//!   [`analysis::kvcache`]), locally or straight from S3 ([`analysis::remote`]).
//! - [`s3`]: the S3 client the upload and `report s3://…` build the same
//!   way, and what a failed request means.
//! - [`http_serve`]: the bounded HTTP/1.1 server (connection cap, head
//!   timeout, connection lifetime) the webhook and the metrics server share.
//! - [`kube`]: the Kubernetes-side tools: the admission webhook and the
//!   OpenAI-compatible prompt client of `deploy.sh test`.

pub mod analysis;
pub mod check;
pub mod cli;
pub mod clock;
pub mod daemon;
pub mod format;
pub mod http_serve;
pub mod kube;
pub mod s3;
pub mod secrets;
