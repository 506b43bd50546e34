//! `cuda-tracer report`: per-function, kernel, calling-library, memory,
//! CUDA-graph, step and KV-cache answers from trace files, as text/JSON/CSV plus plots.
//!
//! [`run`] is one straight sequence: find and read the inputs, run each
//! analysis on the time-sorted calls, write the files, print the summary.

pub mod callers;
pub mod collectives;
pub mod decimate;
pub mod functions;
pub mod graphs;
pub mod kernels;
pub mod layer;
pub mod live_ranges;
pub mod memory;
pub mod plots;
pub mod sections;
pub mod sources;
pub mod steps;
pub mod table;

use std::{
    io::IsTerminal as _,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::analysis::{
    inputs::{self, FilterCounts, Selected},
    remote::{StoreCounts, StoreOptions},
    trace::{self, filter::TraceFilter, Loaded},
};

/// What to report on and where the report goes.
#[derive(Clone, Debug)]
pub struct ReportConfig {
    /// Trace dirs, session dirs or trace_*.jsonl files.
    pub inputs: Vec<PathBuf>,
    /// Directory for the report files.
    pub out: PathBuf,
    /// What is printed on stdout.
    pub format: ReportFormat,
    /// The calls read (`--since`, `--until`, `--node`, `--pod`).
    pub filter: TraceFilter,
    /// How `s3://` inputs are read.
    pub store: StoreOptions,
}

/// The form of the summary on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    Text,
    Json,
    Csv,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Read(#[from] crate::analysis::trace::ReadError),
    #[error(transparent)]
    Select(#[from] inputs::SelectError),
    #[error("no line of the {lines} in the inputs is a trace line (first: {first}); pass cuda-tracer trace files")]
    NoTraceLines { lines: u64, first: String },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Skipped lines named one by one in warnings and in the report.
const SKIPPED_SHOWN: usize = 10;
/// Rows of the "top" tables in the text report.
const TOP: usize = 10;
/// Inputs at least this large get a progress bar (on a terminal).
const PROGRESS_BYTES: u64 = 64 << 20;

/// What was read.
#[derive(Debug, Serialize)]
pub struct Inputs {
    pub files: Vec<PathBuf>,
    pub bytes: u64,
    pub lines: u64,
    pub calls: u64,
    pub skipped_lines: u64,
    /// The first skipped lines as `file:line: reason`.
    pub skipped: Vec<String>,
    pub first_ts_sec: f64,
    pub last_ts_sec: f64,
    /// How sessions were put on one time axis, and how far apart the clocks
    /// of sessions from several machines can be.
    pub clock_alignment: crate::format::align::Alignment,
    /// What `--since`/`--until`/`--node`/`--pod` left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterCounts>,
    /// Per `s3://` input: objects listed, skipped by the filters, downloaded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stores: Vec<StoreCounts>,
}

/// Everything the report found; `report.json` is this, serialized.
#[derive(Debug, Serialize)]
pub struct Report {
    pub inputs: Inputs,
    pub functions: functions::Functions,
    pub kernels: kernels::Kernels,
    /// Kernel launches per calling library.
    pub callers: callers::Callers,
    pub memory: memory::Memory,
    /// Calls per node and per pod (`nodes`, `pods`).
    #[serde(flatten)]
    pub sources: sources::Sources,
    /// Sections filled by other analyses (CUDA graphs, steps, KV cache).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graphs: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_cache: Option<serde_json::Value>,
    /// NCCL transfers per process, communicator and op (traces with NCCL calls).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collectives: Option<serde_json::Value>,
    /// Text blocks those sections add to report.txt.
    #[serde(skip)]
    pub extra_text: Vec<String>,
}

impl Report {
    /// Runs every analysis of the calls, with the sections' passes (steps,
    /// CUDA graphs) for [`sections::add`]. Which calls are nested is needed
    /// by the function table, the steps and the graphs; the kernel and
    /// memory analyses run meanwhile, in one cache-blocked pass.
    pub fn build(loaded: &Loaded) -> (Self, sections::Passes) {
        let calls = &loaded.calls;
        let ((functions, passes), ((kernels, memory, last_end_ms), callers)) = rayon::join(
            || {
                let outer = layer::outermost(calls);
                rayon::join(|| functions::analyze_outer(calls, &outer), || sections::passes(calls, &outer))
            },
            || rayon::join(|| kernels_and_memory(calls), || callers::analyze(calls)),
        );
        let inputs = Inputs {
            files: loaded.files.clone(),
            bytes: loaded.bytes,
            lines: loaded.lines,
            calls: calls.len() as u64,
            skipped_lines: loaded.skipped_total,
            skipped: loaded.skipped.iter().take(SKIPPED_SHOWN).map(skipped_text).collect(),
            first_ts_sec: calls.first().map_or(0.0, |c| c.ts_ms / 1000.0),
            last_ts_sec: last_end_ms / 1000.0,
            clock_alignment: loaded.alignment.clone(),
            filter: None,
            stores: Vec::new(),
        };
        let report = Report {
            inputs,
            functions,
            kernels,
            callers,
            memory,
            sources: sources::Sources::default(),
            graphs: None,
            steps: None,
            kv_cache: None,
            collectives: None,
            extra_text: Vec::new(),
        };
        (report, passes)
    }

    pub fn text(&self) -> String {
        let i = &self.inputs;
        let mut out = format!(
            "cuda-tracer report: {} files, {} bytes, {} calls from {:.3} s to {:.3} s, {} lines skipped\n\n",
            i.files.len(),
            i.bytes,
            i.calls,
            i.first_ts_sec,
            i.last_ts_sec,
            i.skipped_lines
        );
        for line in &i.skipped {
            out += &format!("skipped {line}\n");
        }
        if let Some(clocks) = i.clock_alignment.text() {
            out += &clocks;
        }
        for section in [self.functions.text(), self.kernels.text(TOP), self.callers.text(), self.memory.text(TOP)] {
            out += &section;
            out += "\n";
        }
        if let Some(sources) = self.sources.text() {
            out += &sources;
            out += "\n";
        }
        for section in &self.extra_text {
            out += section;
            out += "\n";
        }
        out
    }

    /// Writes the per-call CSV files into `dir`; returns their paths.
    pub fn write_csvs(&self, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
        std::fs::create_dir_all(dir).map_err(|source| ReportError::Write { path: dir.to_path_buf(), source })?;
        // The memory timeline is megabytes of text: formatted beside the rest.
        let (timeline, (functions, threads)) = rayon::join(
            || self.memory.timeline_csv(),
            || rayon::join(|| self.functions.functions_csv(), || self.functions.threads_csv(true)),
        );
        write_files(
            dir,
            [
                ("functions.csv", functions),
                ("functions_by_process.csv", self.functions.threads_csv(false)),
                ("functions_by_thread.csv", threads),
                ("kernels.csv", self.kernels.kernels_csv()),
                ("kernel_shapes.csv", self.kernels.shapes_csv()),
                ("launch_rate.csv", self.kernels.rate_csv()),
                ("launches_by_library.csv", self.callers.csv()),
                ("memory_timeline.csv", timeline),
                ("memory_leaks.csv", self.memory.leaks_csv()),
                ("copies.csv", self.memory.copies_csv()),
                ("pinned_host_timeline.csv", self.memory.pinned_host_timeline_csv()),
                ("pinned_host_leaks.csv", self.memory.pinned_host_leaks_csv()),
                ("nodes.csv", self.sources.nodes_csv()),
                ("pods.csv", self.sources.pods_csv()),
            ],
        )
    }

    /// Writes report.json and report.txt, once every section is in.
    pub fn write_summaries(&self, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
        let json = serde_json::to_string_pretty(self).expect("the report serializes");
        write_files(dir, [("report.json", json), ("report.txt", self.text())])
    }
}

/// The kernel and memory analyses and the trace's end, in one pass over the
/// calls, block by block: each block is read from memory once and stays in
/// cache for both (at a gigabyte of calls, reading them is the cost).
fn kernels_and_memory(calls: &[crate::analysis::trace::Call]) -> (kernels::Kernels, memory::Memory, f64) {
    /// About 500 KB of calls: fits a core's L2 cache.
    const BLOCK: usize = 4096;
    let mut k = kernels::KernelsPass::default();
    let mut m = memory::MemoryPass::default();
    let mut last_end_ms = 0.0_f64;
    for block in calls.chunks(BLOCK) {
        k.add(block);
        m.add(block);
        last_end_ms = block.iter().map(|c| c.end_ms()).fold(last_end_ms, f64::max);
    }
    let (kernels, memory) = rayon::join(|| k.finish(), || m.finish());
    (kernels, memory, last_end_ms)
}

fn write_files<const N: usize>(dir: &Path, files: [(&str, String); N]) -> Result<Vec<PathBuf>, ReportError> {
    let mut written = Vec::new();
    for (name, body) in files {
        let path = dir.join(name);
        std::fs::write(&path, body).map_err(|source| ReportError::Write { path: path.clone(), source })?;
        written.push(path);
    }
    Ok(written)
}

fn skipped_text(s: &trace::Skipped) -> String {
    format!("{}:{}: {}", s.file.display(), s.line, s.reason)
}

/// Reads the selected files (the calls `filter` keeps) with a progress
/// bar on a terminal for large inputs; files are named as the objects
/// they were downloaded from.
pub fn read_inputs(selected: &Selected, filter: &TraceFilter) -> Result<Loaded, ReportError> {
    let files = &selected.files;
    let total: u64 = files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
    let bar = (std::io::stderr().is_terminal() && total >= PROGRESS_BYTES).then(|| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template("reading {bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut loaded = trace::read_filtered(files, filter, &|n| {
        if let Some(bar) = &bar {
            bar.inc(n);
        }
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    loaded.files = loaded.files.iter().map(|f| selected.shown(f)).collect();
    for s in &mut loaded.skipped {
        s.file = selected.shown(&s.file);
    }
    if loaded.calls.is_empty() && loaded.skipped_total > 0 {
        let first = loaded.skipped.first().map(skipped_text).unwrap_or_default();
        return Err(ReportError::NoTraceLines { lines: loaded.lines, first });
    }
    if loaded.skipped_total > 0 {
        tracing::warn!(
            skipped = loaded.skipped_total,
            "{} lines could not be read and were skipped (a truncated last line or corruption)",
            loaded.skipped_total
        );
        for s in loaded.skipped.iter().take(SKIPPED_SHOWN) {
            tracing::warn!("skipped {}", skipped_text(s));
        }
    }
    Ok(loaded)
}

/// Reads the inputs and writes the report.
pub fn run(args: &ReportConfig) -> Result<(), ReportError> {
    let started = std::time::Instant::now();
    args.filter.check().map_err(inputs::SelectError::from)?;
    let selected = inputs::select(&args.inputs, &args.filter, &args.store)?;
    let loaded = read_inputs(&selected, &args.filter)?;
    tracing::debug!(secs = started.elapsed().as_secs_f64(), calls = loaded.calls.len(), "read");
    let (mut report, passes) = Report::build(&loaded);
    report.sources = sources::Sources::of(&selected.identities, &loaded.tallies);
    report.inputs.filter = selected.filter_counts(&args.filter, &loaded);
    report.inputs.stores = selected.store_counts();
    // The sections read the inputs' KV-cache CSVs: local paths only.
    let args = &ReportConfig { inputs: selected.local_inputs.clone(), ..args.clone() };
    tracing::debug!(secs = started.elapsed().as_secs_f64(), "analysed");
    std::fs::create_dir_all(&args.out).map_err(|source| ReportError::Write { path: args.out.clone(), source })?;
    let mut written = sections::add(&mut report, &loaded, &passes, args)?;
    written.extend(report.write_summaries(&args.out)?);
    tracing::debug!(secs = started.elapsed().as_secs_f64(), "written");
    tracing::info!(files = written.len(), dir = %args.out.display(), "report written");
    let stdout = match args.format {
        ReportFormat::Text => report.text(),
        ReportFormat::Json => serde_json::to_string_pretty(&report).expect("the report serializes") + "\n",
        ReportFormat::Csv => report.functions.functions_csv(),
    };
    use std::io::Write as _;
    // A closed pipe (`| head`) is not an error of the report.
    let _ = std::io::stdout().lock().write_all(stdout.as_bytes());
    // The process ends now: freeing millions of calls one by one would
    // take longer than some of the analyses.
    std::mem::forget(loaded);
    Ok(())
}
