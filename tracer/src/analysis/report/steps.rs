//! Model steps from CUDA calls: each thread's calls are cut where a small
//! device→host copy is followed by an event record, the step ends when that
//! event is synchronized, and one graph replay marks a decode step
//! (docs/STEPS.md explains the heuristic and its limits). A step also
//! counts the NCCL transfers its threads made.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    path::Path,
};

use serde::Serialize;
use tracer_common::funcs::Role;

use super::{collectives, layer, table, table::FastMap};
use crate::analysis::trace::{Call, CopyKind, Hex};

/// Device→host copies up to this size can end a step (sampled token ids are
/// a few bytes per request; a bigger copy is something else).
pub const SMALL_COPY_BYTES: u64 = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Piecewise graph replays with eager launches, eager only, or a mixed
    /// prefill+decode batch: the CUDA calls do not tell them apart.
    Prefill,
    /// Exactly one graph replay: the full graph of a decode-only batch.
    Decode,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Prefill => "prefill",
            Phase::Decode => "decode",
        }
    }
}

/// One model step of one process.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    pub pid: u32,
    /// 0-based, per process, in order of `start_ms`.
    pub index: u64,
    /// Entry of the step's first launch, graph replay or copy.
    pub start_ms: f64,
    /// Return of the `cudaEventSynchronize` that waited for the step's event.
    pub end_ms: f64,
    pub phase: Phase,
    /// Eager kernel launches (outside graphs), counted once per launch.
    pub num_launches: u64,
    pub graph_replays: u64,
    /// NCCL collectives and point-to-point calls made in the step, their
    /// bytes and the time spent in the calls.
    pub nccl: StepNccl,
}

/// A step's NCCL transfers (successful calls of the step's threads).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct StepNccl {
    pub collectives: u64,
    pub bytes: u64,
    pub call_ms: f64,
}

impl StepNccl {
    fn add(&mut self, c: &Call) {
        self.collectives += 1;
        self.bytes += collectives::moved_bytes(c);
        self.call_ms += c.dur_us / 1000.0;
    }
}

impl Step {
    pub fn duration_ms(&self) -> f64 {
        self.end_ms - self.start_ms
    }
}

/// Steps with, for every call, the step it belongs to.
pub(crate) struct Segmentation {
    pub steps: Vec<Step>,
    /// Per call, the index into `steps` of the step holding it, or
    /// [`NO_STEP`] (u32: four bytes per call, not sixteen).
    call_step: Vec<u32>,
    /// Steps whose event was recorded but never synchronized in the trace.
    pub unsynced: u64,
}

const NO_STEP: u32 = u32::MAX;

impl Segmentation {
    /// Index into `steps` of the step holding `calls[i]`.
    pub fn step_of(&self, i: usize) -> Option<usize> {
        self.call_step.get(i).filter(|&&s| s != NO_STEP).map(|&s| s as usize)
    }
}

/// A thread's calls since its last step boundary.
#[derive(Default)]
struct Pending {
    start_ms: Option<f64>,
    launches: u64,
    replays: u64,
    nccl: StepNccl,
    small_dtoh: bool,
    members: Vec<usize>,
}

/// A step whose event has been recorded; `end_ms` is set by the sync.
struct Recorded {
    pid: u32,
    start_ms: f64,
    end_ms: Option<f64>,
    launches: u64,
    replays: u64,
    nccl: StepNccl,
    members: Vec<usize>,
}

fn is_small_dtoh(c: &Call) -> bool {
    let dtoh = c.args.kind() == Some(CopyKind::DtoH) || c.spec().fixed_copy_kind() == Some("DtoH");
    dtoh && c.args.bytes().is_none_or(|b| b <= SMALL_COPY_BYTES)
}

/// Segments every process's calls into steps (sorted by pid, then index).
pub fn segment(calls: &[Call]) -> Vec<Step> {
    segment_calls(calls, &layer::outermost(calls)).steps
}

pub(crate) fn segment_calls(calls: &[Call], outer: &[bool]) -> Segmentation {
    let mut pending: FastMap<(u32, u32), Pending> = FastMap::default();
    let mut recorded: Vec<Recorded> = Vec::new();
    // (pid, event) -> recorded steps waiting for a sync of that event.
    let mut waiting: FastMap<(u32, Hex), Vec<usize>> = FastMap::default();
    for (i, c) in calls.iter().enumerate() {
        if !outer[i] || !c.ok() {
            continue;
        }
        // The role is a field of the function's row: no name is compared per call.
        let role = c.spec().role;
        let p = pending.entry((c.pid, c.tid)).or_default();
        match role {
            // Warm-up capture and device-wide synchronization (vLLM's profile
            // run ends with one) end whatever was pending: never a step.
            Role::CaptureBegin | Role::CaptureEnd | Role::GraphInstantiate | Role::DeviceSync => {
                *p = Pending::default();
                continue;
            }
            Role::EventSync => {
                if let Some(ids) = c.args.event().and_then(|e| waiting.remove(&(c.pid, e))) {
                    for id in ids {
                        recorded[id].end_ms = Some(c.end_ms());
                    }
                }
                p.members.push(i);
                continue;
            }
            Role::EventRecord => {
                p.members.push(i);
                if p.small_dtoh {
                    let done = std::mem::take(p);
                    let event = c.args.event().unwrap_or_default();
                    waiting.entry((c.pid, event)).or_default().push(recorded.len());
                    recorded.push(Recorded {
                        pid: c.pid,
                        start_ms: done.start_ms.unwrap_or(c.ts_ms),
                        end_ms: None,
                        launches: done.launches,
                        replays: done.replays,
                        nccl: done.nccl,
                        members: done.members,
                    });
                }
                continue;
            }
            _ => p.members.push(i),
        }
        match role {
            Role::Launch => p.launches += 1,
            Role::GraphLaunch => p.replays += 1,
            Role::Copy if is_small_dtoh(c) => p.small_dtoh = true,
            Role::Collective | Role::P2p => p.nccl.add(c),
            _ => {}
        }
        // Allocations and frees are the caching allocator's, not the step's.
        if matches!(role, Role::Launch | Role::Copy | Role::GraphLaunch | Role::Collective | Role::P2p) {
            p.start_ms.get_or_insert(c.ts_ms);
        }
    }
    finish(calls.len(), recorded)
}

/// Numbers the synchronized steps per process in time order.
fn finish(n_calls: usize, recorded: Vec<Recorded>) -> Segmentation {
    let unsynced = recorded.iter().filter(|r| r.end_ms.is_none()).count() as u64;
    let mut done: Vec<Recorded> = recorded.into_iter().filter(|r| r.end_ms.is_some()).collect();
    done.sort_by(|a, b| a.pid.cmp(&b.pid).then(a.start_ms.total_cmp(&b.start_ms)));
    let mut call_step = vec![NO_STEP; n_calls];
    let mut steps = Vec::with_capacity(done.len());
    let mut next_index: HashMap<u32, u64> = HashMap::new();
    for r in done {
        let index = next_index.entry(r.pid).or_insert(0);
        for &m in &r.members {
            call_step[m] = steps.len() as u32;
        }
        steps.push(Step {
            pid: r.pid,
            index: *index,
            start_ms: r.start_ms,
            end_ms: r.end_ms.unwrap_or(r.start_ms),
            phase: if r.replays == 1 { Phase::Decode } else { Phase::Prefill },
            num_launches: r.launches,
            graph_replays: r.replays,
            nccl: r.nccl,
        });
        *index += 1;
    }
    Segmentation { steps, call_step, unsynced }
}

/// Duration statistics of one phase, as the seed's summary.json has them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PhaseStats {
    pub count: u64,
    pub mean_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

impl PhaseStats {
    fn of(mut durations: Vec<f64>) -> Option<PhaseStats> {
        let count = durations.len();
        let min_ms = durations.iter().copied().min_by(f64::total_cmp)?;
        let max_ms = durations.iter().copied().max_by(f64::total_cmp)?;
        let mean_ms = durations.iter().sum::<f64>() / count as f64;
        let mut pct = |p| table::percentile(&mut durations, p);
        Some(PhaseStats {
            count: count as u64,
            mean_ms,
            min_ms,
            max_ms,
            p50_ms: pct(50.0)?,
            p95_ms: pct(95.0)?,
            p99_ms: pct(99.0)?,
        })
    }
}

/// What [`write`] found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StepsSummary {
    /// Per phase seen (summary.json is exactly this map).
    pub phases: BTreeMap<Phase, PhaseStats>,
    pub steps: u64,
    /// Step ends whose event was never synchronized in the trace (not counted as steps).
    pub unsynced: u64,
}

impl StepsSummary {
    pub fn of(steps: &[Step], unsynced: u64) -> StepsSummary {
        let mut by_phase: BTreeMap<Phase, Vec<f64>> = BTreeMap::new();
        for s in steps {
            by_phase.entry(s.phase).or_default().push(s.duration_ms());
        }
        let phases = by_phase.into_iter().filter_map(|(p, d)| Some((p, PhaseStats::of(d)?))).collect();
        StepsSummary { phases, steps: steps.len() as u64, unsynced }
    }
}

/// Columns of forward_pass_timing.csv: the seed's six in the seed's order
/// (scripts index them by position), `batch_size`, `num_tokens` and
/// `throughput_tokens_per_sec` empty because the CUDA calls cannot give
/// them; then ours: launches, graph replays, pid and step index, and the
/// step's NCCL transfers (calls, bytes, call time).
pub const FORWARD_PASS_COLUMNS: &str = "timestamp_sec,phase,batch_size,num_tokens,duration_ms,\
throughput_tokens_per_sec,num_launches,graph_replays,pid,step,nccl_calls,nccl_bytes,nccl_call_ms";

/// Writes forward_pass_timing.csv and summary.json into `out`.
pub fn write(calls: &[Call], out: &Path) -> Result<StepsSummary, std::io::Error> {
    let seg = segment_calls(calls, &layer::outermost(calls));
    write_steps(&seg.steps, seg.unsynced, out)
}

pub(crate) fn write_steps(steps: &[Step], unsynced: u64, out: &Path) -> Result<StepsSummary, std::io::Error> {
    // Built in memory and written at once: a row costs less than a buffered
    // writer's call per field.
    let mut csv = String::with_capacity(64 * (steps.len() + 1));
    writeln!(csv, "{FORWARD_PASS_COLUMNS}").map_err(std::io::Error::other)?;
    let mut by_time: Vec<&Step> = steps.iter().collect();
    // Ties in order of process, then step: one order whatever the sort.
    by_time
        .sort_unstable_by(|a, b| a.start_ms.total_cmp(&b.start_ms).then(a.pid.cmp(&b.pid)).then(a.index.cmp(&b.index)));
    for s in by_time {
        writeln!(
            csv,
            "{},{},,,{},,{},{},{},{},{},{},{}",
            table::Fixed(s.start_ms / 1000.0, 6),
            s.phase.name(),
            table::Fixed(s.duration_ms(), 3),
            s.num_launches,
            s.graph_replays,
            s.pid,
            s.index,
            s.nccl.collectives,
            s.nccl.bytes,
            table::Fixed(s.nccl.call_ms, 3)
        )
        .map_err(std::io::Error::other)?;
    }
    std::fs::write(out.join("forward_pass_timing.csv"), csv)?;
    let summary = StepsSummary::of(steps, unsynced);
    let json = serde_json::to_vec_pretty(&summary.phases).map_err(std::io::Error::other)?;
    std::fs::write(out.join("summary.json"), json)?;
    Ok(summary)
}

#[cfg(test)]
#[path = "steps_tests.rs"]
mod tests;
