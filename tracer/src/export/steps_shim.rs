//! STAND-IN for `crate::report::steps` (owned by another branch): the agreed
//! API with a crude rule, so export can be built and tested before the real
//! segmentation lands. DELETE this file at merge and point `export::steps`
//! at `crate::report::steps`.
//!
//! Rule: per process, a step ends at an event synchronize (the CUDA-level
//! end of a vLLM step); a step with a graph replay is decode, else prefill.
//! A synchronize nested inside another one on the same thread (runtime call
//! and the driver call it makes) ends one step, not two.

use std::collections::HashMap;

use serde::Serialize;

use crate::trace::Call;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Prefill,
    Decode,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    pub pid: u32,
    pub index: u64,
    pub start_ms: f64,
    pub end_ms: f64,
    pub phase: Phase,
    pub num_launches: u64,
    pub graph_replays: u64,
}

#[derive(Default)]
struct Open {
    start_ms: Option<f64>,
    launches: u64,
    replays: u64,
    next_index: u64,
    /// (tid, end_ms) of the last step-ending call, to skip nested ones.
    last_end: Option<(u32, f64)>,
}

/// Splits each process's calls (sorted by time) into steps.
pub fn segment(calls: &[Call]) -> Vec<Step> {
    let mut open: HashMap<u32, Open> = HashMap::new();
    let mut steps = Vec::new();
    for call in calls {
        let o = open.entry(call.pid).or_default();
        let name = call.name();
        let ends_step = name == "cudaEventSynchronize" || name == "cuEventSynchronize";
        if ends_step && o.last_end.is_some_and(|(tid, end)| tid == call.tid && call.ts_ms <= end) {
            continue;
        }
        o.start_ms.get_or_insert(call.ts_ms);
        if call.group() == tracer_common::funcs::Group::Launch {
            o.launches += 1;
        }
        if name.contains("GraphLaunch") {
            o.replays += 1;
        }
        if ends_step {
            let start_ms = o.start_ms.take().unwrap_or(call.ts_ms);
            steps.push(Step {
                pid: call.pid,
                index: o.next_index,
                start_ms,
                end_ms: call.end_ms(),
                phase: if o.replays > 0 { Phase::Decode } else { Phase::Prefill },
                num_launches: std::mem::take(&mut o.launches),
                graph_replays: std::mem::take(&mut o.replays),
            });
            o.next_index += 1;
            o.last_end = Some((call.tid, call.end_ms()));
        }
    }
    steps.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
    steps
}
