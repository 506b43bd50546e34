//! `cuda-tracer report`: per-function, kernel, memory, CUDA-graph, step and
//! KV-cache answers from trace files, as text/JSON/CSV plus plots.

pub mod plots;

use std::path::PathBuf;

use clap::{Args, ValueEnum};

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Trace dirs, session dirs or trace_*.jsonl files.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Directory for the report files (CSV, JSON, plots).
    #[arg(long, default_value = "report")]
    pub out: PathBuf,
    /// What is printed on stdout.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
    Csv,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Read(#[from] crate::trace::ReadError),
    #[error("report is not implemented yet")]
    Unimplemented,
}

/// Reads the inputs and writes the report.
pub fn run(args: &ReportArgs) -> Result<(), ReportError> {
    let _ = args;
    Err(ReportError::Unimplemented)
}
