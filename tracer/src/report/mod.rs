//! `cuda-tracer report`: per-function, kernel, memory, CUDA-graph, step and
//! KV-cache answers from trace files, as text/JSON/CSV plus plots.

pub mod graphs;
pub mod layer;
pub mod plots;
pub mod steps;

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
    #[error("writing the report into {path}: {source} (is the --out directory writable?)")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Reads the inputs and writes the report.
pub fn run(args: &ReportArgs) -> Result<(), ReportError> {
    let loaded = crate::trace::read(&crate::trace::discover(&args.inputs)?)?;
    let write_err = |source| ReportError::Write { path: args.out.clone(), source };
    std::fs::create_dir_all(&args.out).map_err(write_err)?;
    let steps = steps::write(&loaded.calls, &args.out).map_err(write_err)?;
    let graphs = graphs::write(&loaded.calls, &args.out).map_err(write_err)?;
    match args.format {
        ReportFormat::Json => {
            println!("{}", serde_json::json!({"steps": steps, "graphs": graphs, "skipped_lines": loaded.skipped_total}))
        }
        ReportFormat::Text | ReportFormat::Csv => {
            println!("steps: {} ({} unsynced); graphs: {:?}", steps.steps, steps.unsynced, graphs);
        }
    }
    Ok(())
}
