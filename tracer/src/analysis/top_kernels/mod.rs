//! `cuda-tracer top-kernels`: the fleet's most launched kernels with their
//! launch-call time — report's kernels table added up per kernel, without
//! the rest of the report. Parquet files are read column by column (only
//! the columns the answer needs, [`columns`]); JSONL files through the
//! trace reader, so both give report's numbers.

mod calls;
mod columns;

use std::{collections::HashMap, path::PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use super::{
    inputs::{self, SelectError},
    remote::StoreOptions,
    trace::{self, filter::TraceFilter},
};
use crate::format::{names, parquet::ParquetReadError};

/// What to answer and from where.
#[derive(Clone, Debug)]
pub struct TopKernelsConfig {
    /// Trace dirs, session dirs, trace files or `s3://bucket/prefix`.
    pub inputs: Vec<PathBuf>,
    pub filter: TraceFilter,
    pub store: StoreOptions,
    /// Rows kept, most launched first.
    pub limit: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum TopKernelsError {
    #[error(transparent)]
    Select(#[from] SelectError),
    #[error(transparent)]
    Read(#[from] trace::ReadError),
    #[error("{path}: {source}")]
    Parquet { path: PathBuf, source: ParquetReadError },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// One kernel: its launches in every layer and their call time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TopKernel {
    pub kernel: String,
    pub launches: u64,
    pub total_call_ms: f64,
}

/// The answer, and what could not be read.
#[derive(Debug, Default, Serialize)]
pub struct TopKernels {
    pub kernels: Vec<TopKernel>,
    /// Trace files read.
    pub files: u64,
    /// Launch calls counted, all kernels.
    pub launches: u64,
    /// Damaged files skipped (truncated or corrupt Parquet), by name.
    pub skipped_files: Vec<PathBuf>,
    /// Bad JSONL lines skipped.
    pub skipped_lines: u64,
}

/// Per kernel name: (launches, call time in ns).
pub(crate) type Tallies = HashMap<String, (u64, f64)>;

/// Reads the inputs and answers.
pub fn run(config: &TopKernelsConfig) -> Result<TopKernels, TopKernelsError> {
    config.filter.check().map_err(SelectError::from)?;
    let selected = inputs::select(&config.inputs, &config.filter, &config.store)?;
    let is_parquet = |p: &PathBuf| p.file_name().and_then(|n| n.to_str()).is_some_and(names::is_parquet_file);
    let (parquet, jsonl): (Vec<PathBuf>, Vec<PathBuf>) = selected.files.iter().cloned().partition(is_parquet);
    let mut answer = TopKernels { files: selected.files.len() as u64, ..TopKernels::default() };
    let mut tallies = Tallies::new();
    let per_file: Vec<_> = parquet.par_iter().map(|path| (path, columns::tally_file(path, &config.filter))).collect();
    for (path, tally) in per_file {
        match tally {
            Ok(t) => merge(&mut tallies, t),
            Err(TopKernelsError::Parquet { source, .. }) if source.is_damage() => {
                tracing::warn!("skipped {}: {source}", selected.shown(path).display());
                answer.skipped_files.push(selected.shown(path));
            }
            Err(e) => return Err(e),
        }
    }
    if !jsonl.is_empty() {
        let loaded = trace::read_filtered(&jsonl, &config.filter, &|_| {})?;
        answer.skipped_lines = loaded.skipped_total;
        merge(&mut tallies, calls::tally(&loaded.calls));
    }
    answer.launches = tallies.values().map(|(n, _)| n).sum();
    answer.kernels = ranked(tallies, config.limit);
    Ok(answer)
}

fn merge(into: &mut Tallies, from: Tallies) {
    for (kernel, (launches, ns)) in from {
        let acc = into.entry(kernel).or_default();
        acc.0 += launches;
        acc.1 += ns;
    }
}

/// Most launched first, ties by name (as the shipped `top_kernels.sql`).
fn ranked(tallies: Tallies, limit: usize) -> Vec<TopKernel> {
    let mut rows: Vec<TopKernel> = tallies
        .into_iter()
        .map(|(kernel, (launches, ns))| TopKernel { kernel, launches, total_call_ms: ns / 1e6 })
        .collect();
    rows.sort_by(|a, b| b.launches.cmp(&a.launches).then_with(|| a.kernel.cmp(&b.kernel)));
    rows.truncate(limit);
    rows
}

impl TopKernels {
    /// The table as CSV (`kernel,launches,total_call_ms`).
    pub fn csv(&self) -> String {
        let mut out = String::from("kernel,launches,total_call_ms\n");
        for k in &self.kernels {
            let quoted = k.kernel.replace('"', "\"\"");
            out.push_str(&format!("\"{quoted}\",{},{:.3}\n", k.launches, k.total_call_ms));
        }
        out
    }

    /// The table for a terminal, with what was skipped.
    pub fn text(&self) -> String {
        let mut out = format!("{:>12}  {:>14}  kernel\n", "launches", "call time (ms)");
        for k in &self.kernels {
            out.push_str(&format!("{:>12}  {:>14.3}  {}\n", k.launches, k.total_call_ms, k.kernel));
        }
        let plural = if self.files == 1 { "" } else { "s" };
        out.push_str(&format!("{} launches in {} trace file{plural}", self.launches, self.files));
        if !self.skipped_files.is_empty() || self.skipped_lines > 0 {
            out.push_str(&format!(
                "; skipped: {} damaged files, {} bad lines",
                self.skipped_files.len(),
                self.skipped_lines
            ));
        }
        out.push('\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranked_by_launches_then_name_and_cut() {
        let mut t = Tallies::new();
        t.insert("b".into(), (5, 2e6));
        t.insert("a".into(), (5, 1e6));
        t.insert("c".into(), (9, 3e6));
        let rows = ranked(t, 2);
        assert_eq!(rows.iter().map(|r| r.kernel.as_str()).collect::<Vec<_>>(), ["c", "a"]);
        assert_eq!(rows[0].total_call_ms, 3.0);
    }

    #[test]
    fn csv_quotes_template_names() {
        let answer = TopKernels {
            kernels: vec![TopKernel { kernel: "k<\"x\", 2>".into(), launches: 3, total_call_ms: 1.5 }],
            ..TopKernels::default()
        };
        assert_eq!(answer.csv(), "kernel,launches,total_call_ms\n\"k<\"\"x\"\", 2>\",3,1.500\n");
    }
}
