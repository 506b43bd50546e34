//! The report's sections beyond the per-call tables: CUDA graphs, model
//! steps, NCCL collectives, the KV cache and the plots, added to a built
//! [`Report`].

use std::path::{Path, PathBuf};

use super::{collectives, graphs, plots, plots::PlotError, steps, Report, ReportConfig, ReportError};
use crate::{
    analysis::kvcache,
    analysis::trace::{Call, Loaded},
};

/// The sections' passes over the calls, run by [`Report::build`].
pub struct Passes {
    seg: steps::Segmentation,
    graphs: graphs::Graphs,
}

/// The step segmentation and the CUDA-graph pass, in parallel, over the
/// outermost calls (`outer`, from [`super::layer::outermost`]).
pub fn passes(calls: &[Call], outer: &[bool]) -> Passes {
    let (seg, graphs) = rayon::join(|| steps::segment_calls(calls, outer), || graphs::collect(calls, outer));
    Passes { seg, graphs }
}

/// Adds every section to `report`, writing their files and the per-call
/// CSVs into `args.out`.
pub fn add(
    report: &mut Report,
    loaded: &Loaded,
    passes: &Passes,
    args: &ReportConfig,
) -> Result<Vec<PathBuf>, ReportError> {
    let out = &args.out;
    let calls = &loaded.calls;
    let write_err = |name: &str| {
        let path = out.join(name);
        move |source| ReportError::Write { path, source }
    };
    let seg = &passes.seg;
    // The files do not depend on each other: the steps and graph tables, the
    // plots and the per-call CSVs are written at once.
    let shared: &Report = report;
    let (tables, (plotted, csvs)) = rayon::join(
        || -> Result<_, ReportError> {
            let steps = steps::write_steps(&seg.steps, seg.unsynced, out).map_err(write_err("summary.json"))?;
            let graphs =
                graphs::write_graphs(calls, &passes.graphs, seg, out).map_err(write_err("cuda_graph_captures.csv"))?;
            Ok((steps, graphs))
        },
        || rayon::join(|| draw_plots(shared, &seg.steps, out), || shared.write_csvs(out)),
    );
    let (step_summary, graph_summary) = tables?;
    let mut written = csvs?;
    report.extra_text.push(steps_text(&step_summary, &graph_summary));
    report.steps = serde_json::to_value(&step_summary).ok();
    report.graphs = serde_json::to_value(&graph_summary).ok();
    written.extend(
        [
            "forward_pass_timing.csv",
            "summary.json",
            "cuda_graph_captures.csv",
            "cuda_graph_usage.csv",
            "cuda_graph_timeline.csv",
        ]
        .iter()
        .map(|n| out.join(n)),
    );
    for (name, result) in plotted {
        match result {
            Ok(()) => written.push(out.join(name)),
            Err(e) => report.extra_text.push(format!("plot {name} not drawn: {e}\n")),
        }
    }
    written.extend(nccl_collectives(report, calls, out)?);
    written.extend(kv_cache(report, &seg.steps, args));
    Ok(written)
}

/// collectives.csv and its section, when the trace has NCCL transfers.
fn nccl_collectives(report: &mut Report, calls: &[Call], out: &Path) -> Result<Option<PathBuf>, ReportError> {
    let table = collectives::analyze(calls);
    if table.is_empty() {
        return Ok(None);
    }
    let path = out.join("collectives.csv");
    std::fs::write(&path, table.csv()).map_err(|source| ReportError::Write { path: path.clone(), source })?;
    report.extra_text.push(table.text());
    report.collectives = serde_json::to_value(&table).ok();
    Ok(Some(path))
}

/// KV-cache usage from the sessions' kv_cache_usage_*.csv (written by `run
/// --vllm-metrics-url`): the summary, and usage beside each step's latency.
/// A bad KV file is a note in the report, not a failed report.
fn kv_cache(report: &mut Report, steps: &[steps::Step], args: &ReportConfig) -> Vec<PathBuf> {
    let out = &args.out;
    let summary = match kvcache::summarize(&args.inputs, out) {
        Ok(Some(summary)) => summary,
        Ok(None) => return Vec::new(),
        Err(e) => {
            report.extra_text.push(format!("KV cache: not summarized: {e}\n"));
            return Vec::new();
        }
    };
    report.kv_cache = serde_json::to_value(&summary).ok();
    let mut written = vec![out.join("kv_cache_summary.txt"), out.join(crate::format::names::KV_MERGED)];
    if let Ok(text) = std::fs::read_to_string(out.join("kv_cache_summary.txt")) {
        report.extra_text.push(text);
    }
    // Step times are on the first session's clock, as are that session's
    // KV samples; several sessions are summarized but not aligned.
    if let Ok([series]) = kvcache::load(&args.inputs).as_deref() {
        let spans: Vec<(f64, f64, f64)> = steps.iter().map(|s| (s.start_ms, s.end_ms, s.duration_ms())).collect();
        let aligned = kvcache::align_with_steps(&series.rows, &spans);
        let path = out.join("kv_vs_step_latency.csv");
        if !aligned.is_empty() && kvcache::write_kv_vs_latency_csv(&path, &aligned).is_ok() {
            written.push(path);
        }
    }
    written
}

fn steps_text(s: &steps::StepsSummary, g: &graphs::GraphsSummary) -> String {
    let mut out = format!("Model steps: {} ({} never synchronized, not counted)\n", s.steps, s.unsynced);
    for (phase, stats) in &s.phases {
        let v = serde_json::to_value(stats).unwrap_or_default();
        out += &format!(
            "  {:<8} count {:>8}  mean {:>9.3} ms  p50 {:>9.3}  p95 {:>9.3}  p99 {:>9.3}  max {:>9.3}\n",
            serde_json::to_value(phase).ok().and_then(|p| p.as_str().map(str::to_string)).unwrap_or_default(),
            v["count"],
            v["mean_ms"].as_f64().unwrap_or(0.0),
            v["p50_ms"].as_f64().unwrap_or(0.0),
            v["p95_ms"].as_f64().unwrap_or(0.0),
            v["p99_ms"].as_f64().unwrap_or(0.0),
            v["max_ms"].as_f64().unwrap_or(0.0),
        );
    }
    out += &format!(
        "CUDA graphs: {} captures, {} execs, {} replays ({} execs replayed without a traced instantiation)\n",
        g.captures, g.execs, g.replays, g.execs_without_instantiation
    );
    out
}

/// Draws the three plots, in parallel; a plot without data is skipped with
/// a note (a trace without steps has no step-latency plot), never an error.
fn draw_plots(report: &Report, steps: &[steps::Step], out: &Path) -> Vec<(&'static str, Result<(), PlotError>)> {
    let memory: Vec<(u32, Vec<(f64, f64)>)> = report
        .memory
        .processes
        .iter()
        .map(|p| (p.pid, p.timeline.iter().map(|&(t, b)| (t, b as f64)).collect()))
        .collect();
    let mut rate: std::collections::BTreeMap<u32, Vec<(f64, f64)>> = Default::default();
    for r in &report.kernels.launch_rate {
        let series = rate.entry(r.pid).or_default();
        match series.last_mut() {
            // Runtime and driver rows of one second: plot the busier layer.
            Some(last) if last.0 == r.second as f64 => last.1 = last.1.max(r.launches as f64),
            _ => series.push((r.second as f64, r.launches as f64)),
        }
    }
    let rate: Vec<_> = rate.into_iter().collect();
    let latency: Vec<(f64, f64, bool)> =
        steps.iter().map(|s| (s.end_ms / 1000.0, s.duration_ms(), s.phase == steps::Phase::Decode)).collect();
    let (memory_svg, (rate_svg, latency_svg)) = rayon::join(
        || plots::memory_over_time(&out.join("memory.svg"), &memory),
        || {
            rayon::join(
                || plots::launch_rate(&out.join("launch_rate.svg"), &rate),
                || plots::step_latency(&out.join("step_latency.svg"), &latency),
            )
        },
    );
    vec![("memory.svg", memory_svg), ("launch_rate.svg", rate_svg), ("step_latency.svg", latency_svg)]
}
