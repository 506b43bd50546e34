//! The report's KV-block evictions: reads the sessions'
//! `kv_cache_evictions*.csv` (one row per scrape interval in which vLLM's
//! sampled residency histograms grew), merges them into the seed-named
//! `kv_cache_evictions.csv` and sums them up for `kv_cache_summary.txt`,
//! saying why when there is nothing.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use serde::Serialize;

use super::{is_evictions, read_text, session_name, KvReportError};
use crate::format::{
    kv::{EvictionRow, EVICTIONS_HEADER},
    metadata::Metadata,
};

/// One session dir's eviction rows, in time order.
#[derive(Clone, Debug, PartialEq)]
pub struct EvictionSeries {
    pub dir: PathBuf,
    pub rows: Vec<EvictionRow>,
    /// `file:line` of each row that could not be read.
    pub skipped: Vec<String>,
}

/// Reads the eviction CSVs of `groups` (session dir, its KV CSVs).
pub fn load(groups: &[(PathBuf, Vec<PathBuf>)]) -> Result<Vec<EvictionSeries>, KvReportError> {
    let mut all = Vec::new();
    for (dir, files) in groups {
        let mut series = EvictionSeries { dir: dir.clone(), rows: Vec::new(), skipped: Vec::new() };
        for path in files.iter().filter(|f| is_evictions(f)) {
            let text = read_text(path)?;
            let mut lines = text.lines();
            let header = lines.next().unwrap_or_default();
            if !header.starts_with(EVICTIONS_HEADER) {
                let (path, found) = (path.display().to_string(), header.to_string());
                return Err(KvReportError::EvictionsHeader { path, found });
            }
            for (i, line) in lines.enumerate() {
                match EvictionRow::parse(line) {
                    Some(row) => series.rows.push(row),
                    None => series.skipped.push(format!("{}:{}", path.display(), i + 2)),
                }
            }
        }
        series.rows.sort_by(|a, b| a.timestamp_sec.total_cmp(&b.timestamp_sec));
        series.rows.dedup_by(|a, b| a.timestamp_sec == b.timestamp_sec);
        if !series.rows.is_empty() || !series.skipped.is_empty() {
            all.push(series);
        }
    }
    Ok(all)
}

/// Whether the session in `dir` scraped a page with the residency
/// histograms (its `metadata.json` says so).
pub fn exposed(dir: &Path) -> bool {
    Metadata::read(dir).ok().and_then(|m| m.kv_cache).is_some_and(|k| k.eviction_metrics)
}

/// The evictions of every session, for the summary.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct EvictionSummary {
    /// Scrape intervals with evictions (rows).
    pub intervals: usize,
    pub sampled_evictions: f64,
    /// Means over every sampled eviction (rows weighted by their count).
    pub mean_lifetime_sec: Option<f64>,
    pub mean_idle_sec: Option<f64>,
    /// Whether vLLM served the histograms at all.
    pub exposed: bool,
}

/// Sums the series up; `exposed` says whether any session saw the histograms.
pub fn summary_of(series: &[EvictionSeries], exposed: bool) -> EvictionSummary {
    let rows = || series.iter().flat_map(|s| &s.rows);
    let n: f64 = rows().map(|r| r.sampled_evictions).sum();
    let mean =
        |f: fn(&EvictionRow) -> f64| (n > 0.0).then(|| rows().map(|r| f(r) * r.sampled_evictions).sum::<f64>() / n);
    EvictionSummary {
        intervals: rows().count(),
        sampled_evictions: n,
        mean_lifetime_sec: mean(|r| r.lifetime_sec),
        mean_idle_sec: mean(|r| r.idle_sec),
        exposed: exposed || n > 0.0,
    }
}

impl EvictionSummary {
    /// The summary's line about evictions, with the reason when there are none.
    pub fn text(&self) -> String {
        match (self.mean_lifetime_sec, self.mean_idle_sec) {
            (Some(lifetime), Some(idle)) => format!(
                "evictions:      {} sampled blocks evicted in {} scrape intervals; mean lifetime {lifetime:.3} s, \
                 mean idle before eviction {idle:.3} s",
                self.sampled_evictions, self.intervals
            ),
            _ if self.exposed => "evictions:      none: vLLM served its block-residency histograms but evicted no \
                                  sampled block during the session"
                .to_string(),
            _ => "evictions:      not known: vLLM did not serve vllm:kv_block_lifetime_seconds and \
                  vllm:kv_block_idle_before_evict_seconds (start vLLM with --kv-cache-metrics; releases before \
                  December 2025 do not have them), so kv_cache_evictions.csv holds its header only"
                .to_string(),
        }
    }
}

/// The merged `kv_cache_evictions.csv`: the five columns plus `session`.
pub fn merged_csv(series: &[EvictionSeries]) -> String {
    let mut csv = format!("{EVICTIONS_HEADER},session\n");
    for s in series {
        let session = session_name(&s.dir);
        for r in &s.rows {
            let _ = writeln!(
                csv,
                "{},{},{},{},{},{session}",
                r.timestamp_sec, r.lifetime_sec, r.idle_sec, r.sampled_evictions, r.interval_sec
            );
        }
    }
    csv
}
