//! KV-block evictions per scrape interval: vLLM's residency histograms are
//! cumulative, so each scrape's row is the difference to the previous one
//! (mean lifetime and idle time of the blocks evicted in between).

use super::parse::{KvSample, Totals};
use crate::format::kv::EvictionRow;

/// The previous scrape's totals.
#[derive(Debug, Default)]
pub struct Evictions {
    last: Option<(f64, Totals, Totals)>,
}

impl Evictions {
    /// The row for a sample taken at `ts_sec`: `None` for the first sample,
    /// a page without the histograms, or an interval without evictions. A
    /// count that went down is a restarted vLLM: counted from 0.
    pub fn next(&mut self, ts_sec: f64, sample: &KvSample) -> Option<EvictionRow> {
        let (Some(lifetime), Some(idle)) = (sample.lifetime, sample.idle) else {
            self.last = None;
            return None;
        };
        let (last_ts, last_lifetime, last_idle) = self.last.replace((ts_sec, lifetime, idle))?;
        let delta = |now: Totals, before: Totals| {
            if now.count < before.count {
                now
            } else {
                Totals { sum: now.sum - before.sum, count: now.count - before.count }
            }
        };
        let (lifetime, idle) = (delta(lifetime, last_lifetime), delta(idle, last_idle));
        (lifetime.count > 0.0 && idle.count > 0.0).then(|| EvictionRow {
            timestamp_sec: ts_sec,
            lifetime_sec: lifetime.sum / lifetime.count,
            idle_sec: idle.sum / idle.count,
            sampled_evictions: lifetime.count,
            interval_sec: ts_sec - last_ts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(lifetime: (f64, f64), idle: (f64, f64)) -> KvSample {
        KvSample {
            usage_pct: 0.0,
            usage_metric: "vllm:kv_cache_usage_perc",
            engines: 1,
            num_requests_running: None,
            num_requests_waiting: None,
            num_preemptions: None,
            total_blocks: None,
            lifetime: Some(Totals { sum: lifetime.0, count: lifetime.1 }),
            idle: Some(Totals { sum: idle.0, count: idle.1 }),
        }
    }

    #[test]
    fn each_interval_gets_the_means_of_its_own_evictions() {
        let mut e = Evictions::default();
        assert_eq!(e.next(1.0, &sample((10.0, 1.0), (2.0, 1.0))), None, "the first scrape has nothing before it");
        assert_eq!(e.next(2.0, &sample((10.0, 1.0), (2.0, 1.0))), None, "no eviction in the interval");
        let row = e.next(5.0, &sample((40.0, 4.0), (8.0, 4.0))).unwrap();
        assert_eq!((row.lifetime_sec, row.idle_sec, row.sampled_evictions, row.interval_sec), (10.0, 2.0, 3.0, 3.0));
        let restarted = e.next(6.0, &sample((6.0, 2.0), (1.0, 2.0))).unwrap();
        assert_eq!((restarted.lifetime_sec, restarted.sampled_evictions), (3.0, 2.0));
        let mut without = sample((0.0, 0.0), (0.0, 0.0));
        without.lifetime = None;
        assert_eq!(e.next(7.0, &without), None);
        assert_eq!(e.next(8.0, &sample((9.0, 3.0), (1.0, 3.0))), None, "after a gap, a new start");
    }
}
