//! CUDA graphs from the trace: stream captures per (pid, stream), the exec
//! each instantiation made, every replay, written as the seed's
//! cuda_graph_captures.csv, cuda_graph_usage.csv and cuda_graph_timeline.csv
//! (docs/STEPS.md lists the columns).

use std::{
    collections::HashMap,
    fs::File,
    io::{BufWriter, Write},
    path::Path,
};

use serde::Serialize;
use tracer_common::funcs::Role;

use super::{
    layer,
    steps::{self, Phase, Segmentation},
    table,
};
use crate::analysis::trace::{Call, Hex};

/// One stream capture, `BeginCapture` to `EndCapture`.
#[derive(Clone, Debug, PartialEq)]
pub struct Capture {
    pub stream: Hex,
    pub start_ms: f64,
    /// Return of `EndCapture`.
    pub end_ms: f64,
    /// Kernel launches on the capturing stream while it captured.
    pub kernels: u64,
}

/// One instantiated graph (or one replayed exec the trace never saw made).
#[derive(Clone, Debug, PartialEq)]
pub struct GraphExec {
    pub pid: u32,
    pub exec: Hex,
    /// `None` when the instantiation is not in the trace.
    pub graph: Option<Hex>,
    /// `None` when the graph was not made by a traced capture.
    pub capture: Option<Capture>,
    pub instantiate_ms: Option<f64>,
    /// Indices into the calls of its replays, in time order.
    pub replays: Vec<usize>,
}

/// Every graph exec, in order of instantiation (or first replay).
#[derive(Debug, Default)]
pub struct Graphs {
    pub execs: Vec<GraphExec>,
    pub captures: u64,
    /// Captures begun but never ended in the trace.
    pub unclosed_captures: u64,
}

/// What [`write`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GraphsSummary {
    pub captures: u64,
    pub execs: u64,
    pub replays: u64,
    /// Execs replayed but never instantiated in the trace (tracing began later).
    pub execs_without_instantiation: u64,
    pub unclosed_captures: u64,
}

#[derive(Default)]
struct Open {
    start_ms: f64,
    kernels: u64,
}

/// Follows captures, instantiations and replays through the outermost calls.
pub fn collect(calls: &[Call], outer: &[bool]) -> Graphs {
    let mut g = Graphs::default();
    let mut open: HashMap<(u32, Hex), Open> = HashMap::new();
    let mut captured: HashMap<(u32, Hex), Capture> = HashMap::new();
    let mut exec_at: HashMap<(u32, Hex), usize> = HashMap::new();
    for (i, c) in calls.iter().enumerate() {
        if !outer[i] || !c.ok() {
            continue;
        }
        let stream = c.args.stream().unwrap_or_default();
        match c.spec().role {
            Role::Launch => {
                if let Some(o) = open.get_mut(&(c.pid, stream)) {
                    o.kernels += 1;
                }
            }
            Role::CaptureBegin => {
                let before = open.insert((c.pid, stream), Open { start_ms: c.ts_ms, kernels: 0 });
                g.unclosed_captures += u64::from(before.is_some());
            }
            Role::CaptureEnd => {
                let (Some(o), Some(graph)) = (open.remove(&(c.pid, stream)), c.args.graph()) else { continue };
                let capture = Capture { stream, start_ms: o.start_ms, end_ms: c.end_ms(), kernels: o.kernels };
                captured.insert((c.pid, graph), capture);
                g.captures += 1;
            }
            Role::GraphInstantiate => {
                let Some(exec) = c.args.exec() else { continue };
                let graph = c.args.graph();
                let capture = graph.and_then(|gr| captured.get(&(c.pid, gr)).cloned());
                exec_at.insert((c.pid, exec), g.execs.len());
                g.execs.push(GraphExec {
                    pid: c.pid,
                    exec,
                    graph,
                    capture,
                    instantiate_ms: Some(c.ts_ms),
                    replays: Vec::new(),
                });
            }
            Role::GraphLaunch => {
                let exec = c.args.exec().unwrap_or_default();
                let at = *exec_at.entry((c.pid, exec)).or_insert_with(|| {
                    g.execs.push(GraphExec {
                        pid: c.pid,
                        exec,
                        graph: None,
                        capture: None,
                        instantiate_ms: None,
                        replays: Vec::new(),
                    });
                    g.execs.len() - 1
                });
                g.execs[at].replays.push(i);
            }
            _ => {}
        }
    }
    g.unclosed_captures += open.len() as u64;
    g
}

/// vLLM's CUDAGraphMode of an exec, inferred from the steps that replayed
/// it: only decode steps → FULL; any prefill step → PIECEWISE; none → empty.
fn runtime_mode(e: &GraphExec, seg: &Segmentation) -> &'static str {
    let mut phases = e.replays.iter().filter_map(|&i| seg.step_of(i)).map(|s| seg.steps[s].phase);
    match phases.next() {
        None => "",
        Some(first) => {
            if first == Phase::Prefill || phases.any(|p| p == Phase::Prefill) {
                "PIECEWISE"
            } else {
                "FULL"
            }
        }
    }
}

pub const CAPTURES_COLUMNS: &str = "runtime_mode,num_tokens,num_reqs,uniform,has_lora,capture_time_sec,\
pid,exec,graph,capture_stream,capture_duration_ms,kernels_captured,instantiate_time_sec,replay_count";
pub const USAGE_COLUMNS: &str = "runtime_mode,num_tokens,num_reqs,uniform,has_lora,replay_count,\
pid,exec,graph,mean_launch_us,p99_launch_us,first_replay_sec,last_replay_sec";
pub const TIMELINE_COLUMNS: &str = "timestamp_sec,pid,tid,exec,graph,stream,step,launch_us,runtime_mode";

/// `Some(v)` formatted, `None` as an empty field.
fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn sec(ms: f64) -> String {
    format!("{:.6}", ms / 1000.0)
}

/// Writes the three CSV files into `out`.
pub fn write(calls: &[Call], out: &Path) -> Result<GraphsSummary, std::io::Error> {
    let outer = layer::outermost(calls);
    let seg = steps::segment_calls(calls, &outer);
    write_graphs(calls, &collect(calls, &outer), &seg, out)
}

pub(crate) fn write_graphs(
    calls: &[Call],
    g: &Graphs,
    seg: &Segmentation,
    out: &Path,
) -> Result<GraphsSummary, std::io::Error> {
    let modes: Vec<&str> = g.execs.iter().map(|e| runtime_mode(e, seg)).collect();
    let mut w = BufWriter::new(File::create(out.join("cuda_graph_captures.csv"))?);
    writeln!(w, "{CAPTURES_COLUMNS}")?;
    for (e, mode) in g.execs.iter().zip(&modes).filter(|(e, _)| e.instantiate_ms.is_some()) {
        let cap = e.capture.as_ref();
        writeln!(
            w,
            "{mode},,,,,{},{},{},{},{},{},{},{},{}",
            opt(cap.map(|c| sec(c.start_ms))),
            e.pid,
            e.exec,
            opt(e.graph),
            opt(cap.map(|c| c.stream)),
            opt(cap.map(|c| format!("{:.3}", c.end_ms - c.start_ms))),
            opt(cap.map(|c| c.kernels)),
            opt(e.instantiate_ms.map(sec)),
            e.replays.len()
        )?;
    }
    w.flush()?;

    let mut w = BufWriter::new(File::create(out.join("cuda_graph_usage.csv"))?);
    writeln!(w, "{USAGE_COLUMNS}")?;
    for (e, mode) in g.execs.iter().zip(&modes) {
        let mut durs: Vec<f64> = e.replays.iter().map(|&i| calls[i].dur_us).collect();
        let mean = (!durs.is_empty()).then(|| durs.iter().sum::<f64>() / durs.len() as f64);
        let first = e.replays.first().map(|&i| sec(calls[i].ts_ms));
        let last = e.replays.last().map(|&i| sec(calls[i].ts_ms));
        writeln!(
            w,
            "{mode},,,,,{},{},{},{},{},{},{},{}",
            e.replays.len(),
            e.pid,
            e.exec,
            opt(e.graph),
            opt(mean.map(|m| format!("{m:.3}"))),
            opt(table::percentile(&mut durs, 99.0).map(|p| format!("{p:.3}"))),
            opt(first),
            opt(last)
        )?;
    }
    w.flush()?;

    let mut w = BufWriter::new(File::create(out.join("cuda_graph_timeline.csv"))?);
    writeln!(w, "{TIMELINE_COLUMNS}")?;
    let mut replays: Vec<(usize, usize)> =
        g.execs.iter().enumerate().flat_map(|(x, e)| e.replays.iter().map(move |&i| (i, x))).collect();
    replays.sort_unstable();
    for (i, x) in replays {
        let (c, e) = (&calls[i], &g.execs[x]);
        writeln!(
            w,
            "{},{},{},{},{},{},{},{:.3},{}",
            sec(c.ts_ms),
            c.pid,
            c.tid,
            e.exec,
            opt(e.graph),
            opt(c.args.stream()),
            opt(seg.step_of(i).map(|s| seg.steps[s].index)),
            c.dur_us,
            modes[x]
        )?;
    }
    w.flush()?;

    Ok(GraphsSummary {
        captures: g.captures,
        execs: g.execs.len() as u64,
        replays: g.execs.iter().map(|e| e.replays.len() as u64).sum(),
        execs_without_instantiation: g.execs.iter().filter(|e| e.instantiate_ms.is_none()).count() as u64,
        unclosed_captures: g.unclosed_captures,
    })
}

#[cfg(test)]
#[path = "graphs_tests.rs"]
mod tests;
