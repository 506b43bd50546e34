//! `cuda-tracer export`: trace files to other tools' formats (Chrome Trace
//! Event JSON for Perfetto UI and chrome://tracing).

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(subcommand)]
    pub format: ExportFormat,
}

#[derive(Debug, Subcommand)]
pub enum ExportFormat {
    /// Chrome Trace Event JSON (opens in ui.perfetto.dev and chrome://tracing).
    Chrome(ChromeArgs),
}

#[derive(Debug, Args)]
pub struct ChromeArgs {
    /// Trace dirs, session dirs or trace_*.jsonl files.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output file.
    #[arg(short = 'o', long = "output", default_value = "trace.json")]
    pub output: PathBuf,
    /// Window of model steps, e.g. `100..150`.
    #[arg(long, conflicts_with = "time")]
    pub steps: Option<String>,
    /// Window of session time in milliseconds, e.g. `2000..4500`.
    #[arg(long)]
    pub time: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Read(#[from] crate::trace::ReadError),
    #[error("export is not implemented yet")]
    Unimplemented,
}

/// Writes the export the arguments ask for.
pub fn run(args: &ExportArgs) -> Result<(), ExportError> {
    let _ = args;
    Err(ExportError::Unimplemented)
}
