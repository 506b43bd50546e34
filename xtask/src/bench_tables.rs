//! The rows of tables 1 and 2, and the per-session loss checks, from the
//! finished sessions.

use crate::{
    bench::{Finished, Mode},
    bench_doc::{median, LossRow, PerCallRow},
    bench_proc::Run,
};

pub fn per_call_rows(finished: &[Finished]) -> Vec<PerCallRow> {
    let ns = |mode: Mode, threads: u32| -> Vec<f64> {
        finished
            .iter()
            .filter(|f| f.0 == mode)
            .flat_map(|f| f.1.iter())
            .filter(|(phase, r)| *phase == "per-call" && r.threads == threads)
            .filter_map(|(_, r)| r.ns_per_call)
            .collect()
    };
    let mut rows = Vec::new();
    for threads in [1, 2] {
        let limit = median(&ns(Mode::Empty, threads));
        for f in finished.iter().filter(|f| f.0 != Mode::Tiny) {
            let mut v = ns(f.0, threads);
            v.sort_by(f64::total_cmp);
            let m = median(&v);
            rows.push(PerCallRow {
                mode: f.0,
                threads,
                reps: v.len(),
                median: m,
                min: v.first().copied().unwrap_or(f64::NAN),
                max: v.last().copied().unwrap_or(f64::NAN),
                ratio: m / limit,
            });
        }
    }
    rows
}

pub fn loss_rows(finished: &[Finished]) -> Vec<LossRow> {
    let mut rows = Vec::new();
    for (mode, runs, delivered) in finished {
        if !matches!(mode, Mode::Full | Mode::BtEntry | Mode::BtEntryRet | Mode::Tiny) {
            continue;
        }
        let measured: Vec<&Run> = runs.iter().filter(|(phase, _)| *phase != "warmup").map(|(_, r)| r).collect();
        let mut keys: Vec<(u32, u64)> = measured.iter().map(|r| (r.threads, r.per_thread)).collect();
        keys.sort();
        keys.dedup();
        for (threads, per_thread) in keys {
            let group: Vec<&Run> =
                measured.iter().copied().filter(|r| r.threads == threads && r.per_thread == per_thread).collect();
            let calls: u64 = group.iter().map(|r| r.calls()).sum();
            let got: u64 = group.iter().map(|r| delivered.per_pid.get(&r.pid).copied().unwrap_or(0)).sum();
            let rates: Vec<f64> = group.iter().map(|r| r.rate()).collect();
            rows.push(LossRow {
                mode: *mode,
                threads,
                per_thread,
                runs: group.len(),
                calls,
                delivered: got,
                rate: median(&rates),
            });
        }
    }
    rows
}

/// Session-level check: what the tracer says it lost against what is missing.
pub fn check_line((mode, runs, d): &Finished) -> String {
    let calls: u64 = runs.iter().map(|(_, r)| r.calls()).sum();
    let got: u64 = runs.iter().map(|(_, r)| d.per_pid.get(&r.pid).copied().unwrap_or(0)).sum();
    let missing = calls.saturating_sub(got);
    let verdict = if *mode == Mode::Empty || *mode == Mode::Launch {
        "records nothing by design".to_string()
    } else if missing == d.reported_lost {
        format!("every missing line is counted ({missing} missing = {} reported)", d.reported_lost)
    } else {
        format!("MISMATCH: {missing} lines missing, {} reported lost", d.reported_lost)
    };
    format!("{}: {} runs, {calls} calls made, {got} lines; {}; {verdict}", mode.label(), runs.len(), d.reported,)
}
