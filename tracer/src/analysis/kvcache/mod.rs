//! The report's KV-cache answers: reads the sessions' `kv_cache_usage*.csv`
//! (and `kv_cache_evictions*.csv`, [`evictions`]), computes mean, p95, peak,
//! time above 90 %, preemptions and evictions into `kv_cache_summary.txt`,
//! merges the rows into one `kv_cache_usage.csv` and one
//! `kv_cache_evictions.csv`, and gives each model step the KV usage nearest
//! to it.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use serde::Serialize;

pub use crate::format::kv::KvRow;
use crate::{
    analysis::trace::discover,
    format::{
        kv::{KvColumns, CSV_HEADER},
        names, safe_fs,
    },
};

pub mod evictions;

/// The rows of one session dir, in time order.
#[derive(Clone, Debug, PartialEq)]
pub struct KvSeries {
    pub dir: PathBuf,
    pub rows: Vec<KvRow>,
    /// `file:line` of each row that could not be read (a crash-cut last line).
    pub skipped: Vec<String>,
}

/// Why the KV-cache CSVs could not be read or the summary written.
#[derive(Debug, thiserror::Error)]
pub enum KvReportError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} is not a KV-cache CSV: its header is `{found}`, expected `{CSV_HEADER}`")]
    Header { path: String, found: String },
    #[error(
        "{path} is not a KV-block eviction CSV: its header is `{found}`, expected `{}`",
        crate::format::kv::EVICTIONS_HEADER
    )]
    EvictionsHeader { path: String, found: String },
    #[error("writing {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

/// Groups the KV CSVs the inputs name, one group per session dir: a dir
/// (those of every directory below it, to any depth, as trace files are
/// found: [`crate::analysis::trace::discover`]), a CSV file, or a trace
/// file (the CSVs beside it).
fn groups(inputs: &[PathBuf]) -> Vec<(PathBuf, Vec<PathBuf>)> {
    let mut groups: std::collections::BTreeMap<PathBuf, Vec<PathBuf>> = Default::default();
    for input in inputs {
        if input.is_dir() {
            // A walk that fails (too deep, unreadable) fails the trace
            // discovery of the same input first, with the error.
            for session in discover::walk(input).unwrap_or_default() {
                if !session.kv_csvs.is_empty() {
                    groups.entry(session.dir).or_default().extend(session.kv_csvs);
                }
            }
        } else if input.extension().is_some_and(|e| e == "csv") {
            let dir = input.parent().unwrap_or(Path::new(".")).to_path_buf();
            groups.entry(dir).or_default().push(input.clone());
        } else if let Some(dir) = input.parent() {
            // The CSVs beside a trace file: its directory alone, not below.
            let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
            let beside: Vec<PathBuf> =
                safe_fs::regular_files(dir).into_iter().filter(|n| names::is_kv_csv(n)).map(|n| dir.join(n)).collect();
            if !beside.is_empty() {
                groups.entry(dir.to_path_buf()).or_default().extend(beside);
            }
        }
    }
    groups
        .into_iter()
        .map(|(dir, mut files)| {
            files.sort();
            files.dedup();
            (dir, files)
        })
        .collect()
}

/// The largest KV-cache CSV read: a row every second for a month is ~150 MiB.
const MAX_KV_CSV_BYTES: u64 = 256 << 20;

/// A KV CSV's text, size-capped, opened as a session file.
fn read_text(path: &Path) -> Result<String, KvReportError> {
    crate::format::open::read_regular(path, MAX_KV_CSV_BYTES)
        .and_then(|bytes| String::from_utf8(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
        .map_err(|source| KvReportError::Read { path: path.display().to_string(), source })
}

fn read_csv(path: &Path, series: &mut KvSeries) -> Result<(), KvReportError> {
    let text = read_text(path)?;
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let Some(columns) = KvColumns::of_header(header) else {
        return Err(KvReportError::Header { path: path.display().to_string(), found: header.to_string() });
    };
    for (i, line) in lines.enumerate() {
        match KvRow::parse_with(line, &columns) {
            Some(row) => series.rows.push(row),
            None => series.skipped.push(format!("{}:{}", path.display(), i + 2)),
        }
    }
    Ok(())
}

/// Whether `path` is named as a KV-block eviction CSV.
fn is_evictions(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(names::is_kv_evictions_csv)
}

/// Reads the KV usage CSVs of the sessions the inputs name.
pub fn load(inputs: &[PathBuf]) -> Result<Vec<KvSeries>, KvReportError> {
    let mut all = Vec::new();
    for (dir, files) in groups(inputs) {
        let usage: Vec<&PathBuf> = files.iter().filter(|f| !is_evictions(f)).collect();
        if usage.is_empty() {
            continue;
        }
        let mut series = KvSeries { dir, rows: Vec::new(), skipped: Vec::new() };
        for f in usage {
            read_csv(f, &mut series)?;
        }
        series.rows.sort_by(|a, b| a.timestamp_sec.total_cmp(&b.timestamp_sec));
        series.rows.dedup_by(|a, b| a.timestamp_sec == b.timestamp_sec);
        all.push(series);
    }
    Ok(all)
}

/// `kv_cache_summary.txt` in numbers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KvSummary {
    pub sessions: usize,
    pub samples: usize,
    /// Sum over sessions of last minus first sample time.
    pub covered_sec: f64,
    /// Mean of the samples (as the seed's awk recipe computes it).
    pub mean_pct: f64,
    /// Nearest-rank 95th percentile of the samples.
    pub p95_pct: f64,
    pub peak_pct: f64,
    pub peak_at_sec: f64,
    /// Each sample's value held until the next sample; strictly above 90 %.
    pub above_90_sec: f64,
    /// Increase of vLLM's preemption counter over each session (resets counted as restarts from 0).
    pub preemptions: f64,
    pub skipped_lines: usize,
    /// KV blocks evicted, from vLLM's sampled residency histograms.
    pub evictions: evictions::EvictionSummary,
}

/// Summarises the series; `None` when there is no row.
pub fn summary_of(series: &[KvSeries]) -> Option<KvSummary> {
    let mut usage: Vec<f64> = series.iter().flat_map(|s| s.rows.iter().map(|r| r.usage_pct)).collect();
    if usage.is_empty() {
        return None;
    }
    let peak = series.iter().flat_map(|s| &s.rows).max_by(|a, b| a.usage_pct.total_cmp(&b.usage_pct))?;
    let (mut covered_sec, mut above_90_sec, mut preemptions) = (0.0, 0.0, 0.0);
    for s in series {
        if let (Some(first), Some(last)) = (s.rows.first(), s.rows.last()) {
            covered_sec += last.timestamp_sec - first.timestamp_sec;
        }
        for pair in s.rows.windows(2) {
            if pair[0].usage_pct > 90.0 {
                above_90_sec += pair[1].timestamp_sec - pair[0].timestamp_sec;
            }
        }
        let counts: Vec<f64> = s.rows.iter().filter_map(|r| r.num_preemptions).collect();
        for pair in counts.windows(2) {
            preemptions += if pair[1] >= pair[0] { pair[1] - pair[0] } else { pair[1] };
        }
    }
    let n = usage.len();
    usage.sort_by(f64::total_cmp);
    let rank = ((0.95 * n as f64).ceil() as usize).clamp(1, n);
    Some(KvSummary {
        sessions: series.iter().filter(|s| !s.rows.is_empty()).count(),
        samples: n,
        covered_sec,
        mean_pct: usage.iter().sum::<f64>() / n as f64,
        p95_pct: usage[rank - 1],
        peak_pct: peak.usage_pct,
        peak_at_sec: peak.timestamp_sec,
        above_90_sec,
        preemptions,
        skipped_lines: series.iter().map(|s| s.skipped.len()).sum(),
        evictions: evictions::EvictionSummary::default(),
    })
}

impl KvSummary {
    /// The text of `kv_cache_summary.txt`.
    pub fn to_text(&self) -> String {
        let share = if self.covered_sec > 0.0 { self.above_90_sec / self.covered_sec * 100.0 } else { 0.0 };
        let mut t = String::new();
        let _ = writeln!(
            t,
            "KV cache usage (vLLM /metrics): {} samples over {:.1} s in {} session(s)",
            self.samples, self.covered_sec, self.sessions
        );
        let _ = writeln!(t, "mean usage:     {:.2} %", self.mean_pct);
        let _ = writeln!(t, "p95 usage:      {:.2} %", self.p95_pct);
        let _ = writeln!(t, "peak usage:     {:.2} % at {:.3} s", self.peak_pct, self.peak_at_sec);
        let _ = writeln!(t, "time above 90%: {:.1} s ({share:.1} % of the time)", self.above_90_sec);
        let _ = writeln!(t, "preemptions:    {}", self.preemptions);
        if self.skipped_lines > 0 {
            let _ = writeln!(t, "skipped lines:  {} (unreadable rows, e.g. cut by a crash)", self.skipped_lines);
        }
        let _ = writeln!(t, "{}", self.evictions.text());
        let advice = match self.peak_pct {
            p if p > 90.0 => "peak above 90 %: the cache is tight; raise gpu_memory_utilization or lower max_num_seqs",
            p if p < 40.0 => "peak below 40 %: the cache is larger than this load needs",
            _ => "peak between 40 and 90 %: the cache fits this load",
        };
        let _ = writeln!(t, "{advice}");
        t
    }
}

fn write(path: &Path, text: &str) -> Result<(), KvReportError> {
    std::fs::write(path, text).map_err(|source| KvReportError::Write { path: path.display().to_string(), source })
}

fn cell(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// The session column of merged files: the session dir's name.
fn session_name(dir: &Path) -> String {
    dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Reads the sessions' KV CSVs and writes `kv_cache_summary.txt`, a merged
/// `kv_cache_usage.csv` (the seven columns plus `session`) and a merged
/// `kv_cache_evictions.csv` (its five plus `session`; the header alone when
/// vLLM gave no evictions, the summary says why) into `out_dir`.
/// `Ok(None)`: the inputs hold no KV data (scraping was off).
pub fn summarize(inputs: &[PathBuf], out_dir: &Path) -> Result<Option<KvSummary>, KvReportError> {
    let series = load(inputs)?;
    let Some(mut summary) = summary_of(&series) else { return Ok(None) };
    let evicted = evictions::load(&groups(inputs))?;
    let exposed = series.iter().any(|s| evictions::exposed(&s.dir));
    summary.evictions = evictions::summary_of(&evicted, exposed);
    std::fs::create_dir_all(out_dir)
        .map_err(|source| KvReportError::Write { path: out_dir.display().to_string(), source })?;
    write(&out_dir.join("kv_cache_summary.txt"), &summary.to_text())?;
    let mut csv = format!("{CSV_HEADER},session\n");
    for s in &series {
        let session = session_name(&s.dir);
        for r in &s.rows {
            let _ = writeln!(
                csv,
                "{},{},{},{},{},{},{},{session}",
                r.timestamp_sec,
                r.usage_pct,
                cell(r.num_blocks),
                cell(r.total_blocks),
                cell(r.num_requests_running),
                cell(r.num_requests_waiting),
                cell(r.num_preemptions)
            );
        }
    }
    write(&out_dir.join(names::KV_MERGED), &csv)?;
    write(&out_dir.join(names::KV_EVICTIONS_MERGED), &evictions::merged_csv(&evicted))?;
    Ok(Some(summary))
}

/// One step with the KV usage nearest to it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepKv {
    pub start_ms: f64,
    pub end_ms: f64,
    pub duration_ms: f64,
    /// `None` when no sample is within two scrape intervals of the step.
    pub usage_pct: Option<f64>,
    pub num_requests_running: Option<f64>,
    pub num_requests_waiting: Option<f64>,
    /// When that sample was taken (seconds, trace axis).
    pub kv_timestamp_sec: Option<f64>,
}

/// For each step `(start_ms, end_ms, duration_ms)` (trace `ts` axis), the
/// sample nearest its midpoint, if it is within two median scrape
/// intervals: a step in a gap of failed scrapes gets none rather than a
/// stale value. `rows` are one session's, sorted by time.
pub fn align_with_steps(rows: &[KvRow], steps: &[(f64, f64, f64)]) -> Vec<StepKv> {
    let mut gaps: Vec<f64> = rows.windows(2).map(|p| p[1].timestamp_sec - p[0].timestamp_sec).collect();
    gaps.sort_by(f64::total_cmp);
    let max_distance_sec = gaps.get(gaps.len() / 2).map_or(f64::INFINITY, |median| 2.0 * median);
    steps
        .iter()
        .map(|&(start_ms, end_ms, duration_ms)| {
            let mid_sec = (start_ms + end_ms) / 2000.0;
            let i = rows.partition_point(|r| r.timestamp_sec < mid_sec);
            let nearest = [i.checked_sub(1), Some(i)]
                .into_iter()
                .flatten()
                .filter_map(|j| rows.get(j))
                .min_by(|a, b| (a.timestamp_sec - mid_sec).abs().total_cmp(&(b.timestamp_sec - mid_sec).abs()))
                .filter(|r| (r.timestamp_sec - mid_sec).abs() <= max_distance_sec);
            StepKv {
                start_ms,
                end_ms,
                duration_ms,
                usage_pct: nearest.map(|r| r.usage_pct),
                num_requests_running: nearest.and_then(|r| r.num_requests_running),
                num_requests_waiting: nearest.and_then(|r| r.num_requests_waiting),
                kv_timestamp_sec: nearest.map(|r| r.timestamp_sec),
            }
        })
        .collect()
}

/// Writes the steps with their KV usage as CSV (`kv_vs_step_latency.csv`).
pub fn write_kv_vs_latency_csv(path: &Path, steps: &[StepKv]) -> Result<(), KvReportError> {
    let mut csv = String::from(
        "timestamp_sec,duration_ms,usage_pct,num_requests_running,num_requests_waiting,kv_timestamp_sec\n",
    );
    for s in steps {
        let _ = writeln!(
            csv,
            "{:.6},{},{},{},{},{}",
            s.start_ms / 1000.0,
            s.duration_ms,
            cell(s.usage_pct),
            cell(s.num_requests_running),
            cell(s.num_requests_waiting),
            cell(s.kv_timestamp_sec)
        );
    }
    write(path, &csv)
}

#[cfg(test)]
mod tests;
