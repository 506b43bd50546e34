//! `cuda-tracer export`: trace files to other tools' formats (Chrome Trace
//! Event JSON for Perfetto UI and chrome://tracing).

pub mod chrome;
pub mod memory;
pub mod window;

pub use crate::analysis::report::steps;

use std::collections::HashMap;
use std::path::PathBuf;

use crate::{
    analysis::{
        inputs::{self, SelectError},
        remote::StoreOptions,
        trace::{self, filter::TraceFilter},
    },
    format::{align::SessionStart, metadata::Metadata},
};

/// What to export, in which format.
#[derive(Clone, Debug)]
pub enum ExportConfig {
    Chrome(ChromeConfig),
}

/// A Chrome trace export: inputs, output file and an optional window.
#[derive(Clone, Debug)]
pub struct ChromeConfig {
    /// Trace dirs, session dirs or trace_*.jsonl files.
    pub inputs: Vec<PathBuf>,
    pub output: PathBuf,
    /// Window of model steps, e.g. `100..150`.
    pub steps: Option<String>,
    /// Window of session time in milliseconds, e.g. `2000..4500`.
    pub time: Option<String>,
    /// The calls read (`--since`, `--until`, `--node`, `--pod`).
    pub filter: TraceFilter,
    /// How `s3://` inputs are read.
    pub store: StoreOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Read(#[from] trace::ReadError),
    #[error(transparent)]
    Select(#[from] SelectError),
    #[error(transparent)]
    Window(#[from] window::WindowError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("no calls could be read from the inputs ({skipped} bad lines); pass trace files written by cuda-tracer")]
    NoCalls { skipped: u64 },
    #[error("no calls start in the window {start_ms:.3}..{end_ms:.3} ms; the trace spans {first_ms:.3}..{last_ms:.3} ms, pick a window inside it")]
    EmptyWindow { start_ms: f64, end_ms: f64, first_ms: f64, last_ms: f64 },
}

/// Writes the export the arguments ask for.
pub fn run(config: &ExportConfig) -> Result<(), ExportError> {
    let ExportConfig::Chrome(chrome) = config;
    let summary = export_chrome(chrome)?;
    eprintln!("{summary}");
    Ok(())
}

/// What [`export_chrome`] wrote, for the closing message.
#[derive(Debug)]
pub struct Summary {
    pub output: PathBuf,
    pub window: (f64, f64),
    pub written: chrome::Written,
    pub skipped_lines: u64,
    /// Sessions of several machines: how far apart their clocks can be.
    pub clocks: Option<String>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let w = &self.written;
        write!(
            f,
            "wrote {}: {} calls, {} steps, {} memory counter samples, window {:.3}..{:.3} ms; \
             open it in https://ui.perfetto.dev or chrome://tracing",
            self.output.display(),
            w.calls,
            w.steps,
            w.counters,
            self.window.0,
            self.window.1
        )?;
        if self.skipped_lines > 0 {
            write!(f, "\n{} bad lines skipped (run `cuda-tracer report` to list them)", self.skipped_lines)?;
        }
        if let Some(clocks) = &self.clocks {
            write!(f, "\n{}", clocks.trim_end())?;
        }
        Ok(())
    }
}

/// Reads the inputs, picks the window and writes the Chrome trace.
pub fn export_chrome(args: &ChromeConfig) -> Result<Summary, ExportError> {
    args.filter.check().map_err(SelectError::from)?;
    let selected = inputs::select(&args.inputs, &args.filter, &args.store)?;
    let files = &selected.files;
    let loaded = trace::read_filtered(files, &args.filter, &|_| ())?;
    let (sources, names) = sources_and_names(files, &loaded.alignment.shifts_ms, &args.filter);
    let window = Selection { steps: args.steps.as_deref(), time: args.time.as_deref() };
    let open = || std::fs::File::create(&args.output);
    write_chrome(&loaded, &sources, &names, window, (&args.output, &open))
}

/// The `--steps` / `--time` window of an export (neither: the whole trace).
#[derive(Clone, Copy, Debug, Default)]
pub struct Selection<'a> {
    pub steps: Option<&'a str>,
    pub time: Option<&'a str>,
}

/// Where an export goes: its path (for messages) and how to create it,
/// called only once the window has calls.
pub type Output<'a> = (&'a std::path::Path, &'a dyn Fn() -> std::io::Result<std::fs::File>);

/// Writes the Chrome trace of `loaded`'s calls in `window` to `output`;
/// `sources` are the files they were read from (streamed again for the
/// call events), `names` the process names.
pub fn write_chrome(
    loaded: &trace::Loaded,
    sources: &[chrome::Source],
    names: &HashMap<u32, String>,
    window: Selection<'_>,
    (output, create): Output<'_>,
) -> Result<Summary, ExportError> {
    let calls = &loaded.calls;
    let (Some(first), Some(_)) = (calls.first(), calls.last()) else {
        return Err(ExportError::NoCalls { skipped: loaded.skipped_total });
    };
    let span = (first.ts_ms, calls.iter().map(trace::Call::end_ms).fold(first.ts_ms, f64::max));
    let window = window::resolve(window.steps, window.time, steps::segment(calls), span)?;
    let threads = chrome::threads_in(calls, &window);
    if threads.is_empty() {
        return Err(ExportError::EmptyWindow {
            start_ms: window.start_ms,
            end_ms: window.end_ms,
            first_ms: span.0,
            last_ms: span.1,
        });
    }
    let memory = memory::device_memory(calls);
    let io = |source| ExportError::Io { path: output.to_path_buf(), source };
    let out = create().map_err(io)?;
    let written = chrome::write(out, output, sources, &window, &threads, names, &memory)?;
    Ok(Summary {
        output: output.to_path_buf(),
        window: (window.start_ms, window.end_ms),
        written,
        skipped_lines: loaded.skipped_total,
        clocks: loaded.alignment.text(),
    })
}

/// Each file's time shift (the same as [`trace::read`]'s, `shifts_ms`) and
/// the calls `filter` keeps of it, and the process names the sessions'
/// metadata.json record.
fn sources_and_names(
    files: &[PathBuf],
    shifts_ms: &[f64],
    filter: &TraceFilter,
) -> (Vec<chrome::Source>, HashMap<u32, String>) {
    let metas: Vec<Option<Metadata>> = files.iter().map(|f| Metadata::of_trace_file(f)).collect();
    let sources = files.iter().zip(shifts_ms).map(|(path, &shift_ms)| {
        let keep_ms = filter.window_ms(SessionStart::of_trace_file(path).start_unix_ns);
        chrome::Source { path: path.clone(), shift_ms, keep_ms: keep_ms.unwrap_or((f64::INFINITY, f64::NEG_INFINITY)) }
    });
    let names = metas.into_iter().flatten().flat_map(|m| m.processes).map(|p| (p.pid, p.comm)).collect();
    (sources.collect(), names)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders docs/img/{memory,step_latency,launch_rate}.svg from a recorded
    /// trace: `CUDA_TRACER_PLOT_TRACE=<trace dir> CUDA_TRACER_PLOT_OUT=docs/img
    /// cargo test -p cuda-tracer --lib render_doc_plots -- --ignored`.
    #[test]
    #[ignore = "renders the documentation's example plots from a trace named by env vars"]
    fn render_doc_plots() {
        use crate::analysis::report::plots;
        let input = PathBuf::from(std::env::var("CUDA_TRACER_PLOT_TRACE").expect("CUDA_TRACER_PLOT_TRACE"));
        let out = PathBuf::from(std::env::var("CUDA_TRACER_PLOT_OUT").expect("CUDA_TRACER_PLOT_OUT"));
        let loaded = trace::read(&trace::discover(&[input]).unwrap()).unwrap();
        let calls = &loaded.calls;
        let memory = memory::series_by_pid(&memory::device_memory(calls));
        plots::memory_over_time(&out.join("memory.svg"), &memory).unwrap();
        let points: Vec<(f64, f64, bool)> = steps::segment(calls)
            .iter()
            .map(|s| (s.start_ms / 1000.0, s.end_ms - s.start_ms, s.phase == steps::Phase::Decode))
            .collect();
        plots::step_latency(&out.join("step_latency.svg"), &points).unwrap();
        // Launches per second in 50 buckets over the trace, per process.
        let (t0, t1) = (calls[0].ts_ms, calls[calls.len() - 1].ts_ms);
        let bucket_ms = ((t1 - t0) / 50.0).max(1.0);
        let mut counts: std::collections::BTreeMap<u32, Vec<f64>> = Default::default();
        // One layer per process, as for memory: the driver when it is traced.
        let driver: std::collections::HashSet<u32> =
            calls.iter().filter(|c| c.layer() == tracer_common::funcs::Layer::Driver).map(|c| c.pid).collect();
        let counted = |c: &&trace::Call| {
            c.group() == tracer_common::funcs::Group::Launch
                && (c.layer() == tracer_common::funcs::Layer::Driver) == driver.contains(&c.pid)
        };
        for c in calls.iter().filter(counted) {
            let i = (((c.ts_ms - t0) / bucket_ms) as usize).min(50);
            counts.entry(c.pid).or_insert_with(|| vec![0.0; 51])[i] += 1.0;
        }
        let rate: Vec<(u32, Vec<(f64, f64)>)> = counts
            .into_iter()
            .map(|(pid, n)| {
                let pts =
                    n.iter().enumerate().map(|(i, n)| ((t0 + i as f64 * bucket_ms) / 1000.0, n * 1000.0 / bucket_ms));
                (pid, pts.collect())
            })
            .collect();
        plots::launch_rate(&out.join("launch_rate.svg"), &rate).unwrap();
    }
}
