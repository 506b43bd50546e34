//! The inputs a report or an export reads: `s3://` inputs fetched into
//! private temp dirs ([`crate::analysis::remote`]), every input's trace
//! files found ([`super::discover`]) and those of unwanted nodes and pods
//! left out ([`super::filter`]); paths under a temp dir are shown as the
//! objects they came from.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::remote::{self, Fetched, RemoteError, S3Url, StoreCounts, StoreOptions};
use super::trace::{self, filter::TraceFilter, identity::Identity, ReadError};

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Filter(#[from] trace::filter::FilterError),
    #[error("{url}: no trace file matches the filters ({listed} objects listed, {skipped} skipped by --since/--until/--node/--pod, none downloaded); widen them")]
    NothingInStore { url: String, listed: u64, skipped: u64 },
    #[error("none of the {files} trace files is of the nodes/pods asked for (--node {nodes:?}, --pod {pods:?}); found: {found}")]
    NoneOfThese { files: usize, nodes: Vec<String>, pods: Vec<String>, found: String },
}

/// What the filters left out, for report.json.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FilterCounts {
    pub since: Option<String>,
    pub until: Option<String>,
    pub nodes: Vec<String>,
    pub pods: Vec<String>,
    /// Trace files of other nodes or pods.
    pub files_left_out: u64,
    /// Calls outside `[since, until]`.
    pub calls_left_out: u64,
    /// Files of sessions with no recorded start: not placeable in time.
    pub files_without_start: Vec<PathBuf>,
}

/// The trace files to read, their nodes and pods, and the stores' downloads
/// (kept until dropped).
pub struct Selected {
    pub files: Vec<PathBuf>,
    pub identities: Vec<Identity>,
    pub files_left_out: u64,
    /// Local inputs as given, `s3://` ones as their download dirs.
    pub local_inputs: Vec<PathBuf>,
    pub fetched: Vec<Fetched>,
}

impl Selected {
    /// How `path` is shown: the object it was downloaded from, else itself.
    pub fn shown(&self, path: &Path) -> PathBuf {
        self.fetched.iter().find_map(|f| f.object_of(path)).unwrap_or_else(|| path.to_path_buf())
    }

    pub fn store_counts(&self) -> Vec<StoreCounts> {
        self.fetched.iter().map(|f| f.counts.clone()).collect()
    }

    /// The counts of what `filter` left out (`None` without filters).
    pub fn filter_counts(&self, filter: &TraceFilter, loaded: &trace::Loaded) -> Option<FilterCounts> {
        let rfc = |t: Option<std::time::SystemTime>| t.map(|t| humantime::format_rfc3339_seconds(t).to_string());
        (!filter.is_empty()).then(|| FilterCounts {
            since: rfc(filter.since),
            until: rfc(filter.until),
            nodes: filter.nodes.clone(),
            pods: filter.pods.clone(),
            files_left_out: self.files_left_out,
            calls_left_out: loaded.filtered_calls,
            files_without_start: loaded.unplaced_files.iter().map(|f| self.shown(f)).collect(),
        })
    }
}

/// Fetches the `s3://` inputs, finds the trace files and keeps those of
/// the wanted nodes and pods.
pub fn select(inputs: &[PathBuf], filter: &TraceFilter, store: &StoreOptions) -> Result<Selected, SelectError> {
    let mut local_inputs = Vec::new();
    let mut fetched = Vec::new();
    for input in inputs {
        let Some(url) = S3Url::parse(input) else {
            local_inputs.push(input.clone());
            continue;
        };
        let got = remote::fetch(&url?, store, filter)?;
        if !got.root.exists() {
            let c = &got.counts;
            return Err(SelectError::NothingInStore {
                url: c.url.clone(),
                listed: c.listed,
                skipped: c.skipped_by_filters,
            });
        }
        local_inputs.push(got.root.clone());
        fetched.push(got);
    }
    let all = trace::discover(&local_inputs)?;
    let ids = trace::identity::of_files(&all);
    let total = all.len();
    let (mut files, mut identities) = (Vec::new(), Vec::new());
    for (file, id) in all.into_iter().zip(ids) {
        if filter.admits(&id) {
            files.push(file);
            identities.push(id);
        }
    }
    if files.is_empty() {
        return Err(SelectError::NoneOfThese {
            files: total,
            nodes: filter.nodes.clone(),
            pods: filter.pods.clone(),
            found: found(&local_inputs),
        });
    }
    let files_left_out = (total - files.len()) as u64;
    Ok(Selected { files, identities, files_left_out, local_inputs, fetched })
}

/// The nodes and pods of the inputs' files, for the error that none is wanted.
fn found(inputs: &[PathBuf]) -> String {
    let files = trace::discover(inputs).unwrap_or_default();
    let mut ids: Vec<Identity> = trace::identity::of_files(&files);
    ids.sort();
    ids.dedup();
    let name = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    ids.iter().map(|i| format!("node {} pod {}", name(&i.node), name(&i.pod))).collect::<Vec<_>>().join(", ")
}
