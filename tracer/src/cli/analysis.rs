//! The arguments of `report`, `export` and `top-kernels`, and their conversion into the
//! analysis modules' configurations.

use std::path::PathBuf;

use clap::{builder::PossibleValue, Args, Subcommand, ValueEnum};

use super::{S3Endpoint, S3Timeout};
use crate::analysis::{
    export::{ChromeConfig, ExportConfig},
    remote::{StoreOptions, MAX_OBJECT_BYTES, MAX_TOTAL_BYTES},
    report::{ReportConfig, ReportFormat},
    top_kernels::TopKernelsConfig,
    trace::filter::{parse_time, TraceFilter},
};

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Trace dirs, session dirs, trace_*.jsonl / .parquet files, or s3://bucket/prefix.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Directory for the report files (CSV, JSON, plots).
    #[arg(long, default_value = "report")]
    pub out: PathBuf,
    #[command(flatten)]
    pub read: ReadArgs,
}

/// What an answering command prints, and which calls it reads from where.
#[derive(Clone, Debug, Args)]
pub struct ReadArgs {
    /// What is printed on stdout.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Which calls are read.
#[derive(Clone, Debug, Args)]
pub struct FilterArgs {
    /// Only calls entered at or after this time: RFC 3339 UTC (2026-12-03T10:00:00Z), unix seconds,
    /// or before now (-1h, -30m, -2d).
    #[arg(long, value_parser = parse_now, allow_hyphen_values = true)]
    pub since: Option<std::time::SystemTime>,
    /// Only calls entered at or before this time (the forms of --since).
    #[arg(long, value_parser = parse_now, allow_hyphen_values = true)]
    pub until: Option<std::time::SystemTime>,
    /// Only these nodes (exact names; repeat or comma-separate).
    #[arg(long = "node", value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// Only these pods (exact names; repeat or comma-separate).
    #[arg(long = "pod", value_delimiter = ',')]
    pub pods: Vec<String>,
}

fn parse_now(s: &str) -> Result<std::time::SystemTime, String> {
    parse_time(s, std::time::SystemTime::now()).map_err(|e| e.to_string())
}

/// How s3:// inputs are read: the upload's endpoint flags and credential chain.
#[derive(Clone, Debug, Args)]
pub struct StoreArgs {
    #[command(flatten)]
    pub endpoint: S3Endpoint,
    #[command(flatten)]
    pub timeout: S3Timeout,
    /// The largest object downloaded from s3:// inputs.
    #[arg(long = "max-object-bytes", default_value_t = MAX_OBJECT_BYTES, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_object_bytes: u64,
    /// The most bytes downloaded from s3:// inputs in all.
    #[arg(long = "max-download-bytes", default_value_t = MAX_TOTAL_BYTES, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_download_bytes: u64,
}

impl From<FilterArgs> for TraceFilter {
    fn from(a: FilterArgs) -> Self {
        Self { since: a.since, until: a.until, nodes: a.nodes, pods: a.pods }
    }
}

impl From<StoreArgs> for StoreOptions {
    fn from(a: StoreArgs) -> Self {
        Self {
            client: crate::s3::ClientSettings {
                endpoint: a.endpoint.endpoint,
                region: a.endpoint.region,
                path_style: a.endpoint.path_style,
                timeout: std::time::Duration::from_secs(a.timeout.timeout_secs),
            },
            max_object_bytes: a.max_object_bytes,
            max_total_bytes: a.max_download_bytes,
        }
    }
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
        let ReadArgs { format, filter, store } = a.read;
        Self { inputs: a.inputs, out: a.out, format, filter: filter.into(), store: store.into() }
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
    /// Trace dirs, session dirs, trace_*.jsonl / .parquet files, or s3://bucket/prefix.
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
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

impl From<ExportArgs> for ExportConfig {
    fn from(a: ExportArgs) -> Self {
        let ExportFormat::Chrome(c) = a.format;
        ExportConfig::Chrome(ChromeConfig {
            inputs: c.inputs,
            output: c.output,
            steps: c.steps,
            time: c.time,
            filter: c.filter.into(),
            store: c.store.into(),
        })
    }
}

#[derive(Debug, Args)]
pub struct TopKernelsArgs {
    /// Trace dirs, session dirs, trace_*.jsonl / .parquet files, or s3://bucket/prefix.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// How many kernels, most launched first.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub limit: u64,
    #[command(flatten)]
    pub read: ReadArgs,
}

impl From<&TopKernelsArgs> for TopKernelsConfig {
    fn from(a: &TopKernelsArgs) -> Self {
        Self {
            inputs: a.inputs.clone(),
            filter: a.read.filter.clone().into(),
            store: a.read.store.clone().into(),
            limit: usize::try_from(a.limit).unwrap_or(usize::MAX),
        }
    }
}
