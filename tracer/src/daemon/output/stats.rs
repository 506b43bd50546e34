//! Per-function counts and duration histograms for the end-of-run summary
//! and the session metadata.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tracer_common::{abi::CallEvent, funcs};

use crate::format::counts::Counts;

/// One function's totals.
#[derive(Clone, Debug)]
pub struct FuncStats {
    pub calls: u64,
    pub errors: u64,
    pub total_ns: u64,
    durations: Histogram<u64>,
}

impl Default for FuncStats {
    fn default() -> Self {
        Self {
            calls: 0,
            errors: 0,
            total_ns: 0,
            // 3 significant digits, auto-resizing: bounded memory per function.
            durations: Histogram::new(3).expect("valid precision"),
        }
    }
}

impl FuncStats {
    pub fn percentile_ns(&self, q: f64) -> u64 {
        self.durations.value_at_quantile(q)
    }
}

/// Totals per function id, and the session's counters.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub by_func: BTreeMap<u32, FuncStats>,
    /// `counts.calls` is the sum of `by_func`'s calls, kept as it grows.
    pub counts: Counts,
}

/// One row of the summary, as written to metadata.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SummaryRow {
    pub func: crate::format::metadata::Name,
    #[serde(rename = "type")]
    pub layer: crate::format::metadata::Name,
    pub calls: u64,
    pub errors: u64,
    pub total_ms: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

impl Stats {
    pub fn observe(&mut self, ev: &CallEvent) {
        self.counts.calls += 1;
        let s = self.by_func.entry(ev.func_id).or_default();
        s.calls += 1;
        if ev.ret as u32 != 0 {
            s.errors += 1;
        }
        s.total_ns += ev.dur_ns;
        // Auto-resizing histogram: record only fails past u64 range.
        let _ = s.durations.record(ev.dur_ns.max(1));
    }

    pub fn calls(&self) -> u64 {
        self.counts.calls
    }

    /// Rows sorted by call count, most called first.
    pub fn rows(&self) -> Vec<SummaryRow> {
        let mut rows: Vec<_> = self
            .by_func
            .iter()
            .filter_map(|(id, s)| {
                let spec = funcs::by_id(*id)?;
                Some(SummaryRow {
                    func: spec.name.into(),
                    layer: spec.layer.type_name().into(),
                    calls: s.calls,
                    errors: s.errors,
                    total_ms: s.total_ns as f64 / 1e6,
                    p50_us: s.percentile_ns(0.5) as f64 / 1e3,
                    p99_us: s.percentile_ns(0.99) as f64 / 1e3,
                })
            })
            .collect();
        rows.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.func.cmp(&b.func)));
        rows
    }

    /// The human-readable table `record` prints.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<30} {:<12} {:>9} {:>7} {:>11} {:>10} {:>10}\n",
            "function", "type", "calls", "errors", "total ms", "p50 us", "p99 us"
        );
        for r in self.rows() {
            out += &format!(
                "{:<30} {:<12} {:>9} {:>7} {:>11.3} {:>10.2} {:>10.2}\n",
                r.func, r.layer, r.calls, r.errors, r.total_ms, r.p50_us, r.p99_us
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_errors_and_percentiles() {
        let id = funcs::by_name("cudaMalloc").unwrap().0 as u32;
        let mut stats = Stats::default();
        for i in 1..=100u64 {
            let ev = CallEvent { func_id: id, dur_ns: i * 1000, ret: u64::from(i == 7) * 2, ..Default::default() };
            stats.observe(&ev);
        }
        let rows = stats.rows();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].calls, rows[0].errors), (100, 1));
        assert!((rows[0].p50_us - 50.0).abs() < 0.1, "{}", rows[0].p50_us);
        assert!((rows[0].p99_us - 99.0).abs() < 0.1);
        assert!(stats.table().contains("cudaMalloc"));
        assert_eq!(stats.calls(), stats.by_func.values().map(|s| s.calls).sum::<u64>());
    }
}
