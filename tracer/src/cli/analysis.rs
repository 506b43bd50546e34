//! The arguments of `report` and `export`, and their conversion into the
//! analysis modules' configurations.

use std::path::PathBuf;

use clap::{builder::PossibleValue, Args, Subcommand, ValueEnum};

use crate::analysis::{
    export::{ChromeConfig, ExportConfig},
    report::{ReportConfig, ReportFormat},
};

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

impl ValueEnum for ReportFormat {
    fn value_variants<'a>() -> &'a [Self] {
        &[Self::Text, Self::Json, Self::Csv]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(match self {
            Self::Text => "text",
            Self::Json => "json",
            Self::Csv => "csv",
        }))
    }
}

impl From<ReportArgs> for ReportConfig {
    fn from(a: ReportArgs) -> Self {
        Self { inputs: a.inputs, out: a.out, format: a.format }
    }
}

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

impl From<ExportArgs> for ExportConfig {
    fn from(a: ExportArgs) -> Self {
        let ExportFormat::Chrome(c) = a.format;
        ExportConfig::Chrome(ChromeConfig { inputs: c.inputs, output: c.output, steps: c.steps, time: c.time })
    }
}
