//! Finding the sessions under the inputs, in any tree the tracer or an
//! `aws s3 sync` leaves: the local trace dir (`<dir>/<session>/`), a synced
//! prefix (`<prefix><pod-or-node>/<session>/`), a parent of several, a
//! session dir, or single files. A directory is walked to any depth up to
//! [`MAX_DEPTH`] and [`MAX_ENTRIES`] entries, and no symlink inside it is
//! followed (an input named on the command line is: the user chose it).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use crate::format::{names, safe_fs};

/// Directory levels below an input that are walked: a synced prefix is two
/// (`<pod>/<session>`), a sync of a bucket's root a few more.
pub const MAX_DEPTH: usize = 16;
/// Entries (files and directories) walked per input: a day of one-minute
/// rotations is under 2 000 files per session.
pub const MAX_ENTRIES: usize = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}: no trace files (trace_*.jsonl, *.parquet) here or below; pass a trace dir, a synced S3 prefix, a session dir or .jsonl files")]
    NoTraceFiles(PathBuf),
    #[error("{0}: not a trace file (expected trace_*.jsonl or .jsonl lines from cuda-tracer, or its .parquet)")]
    NotTrace(PathBuf),
    #[error("{path} is more than {MAX_DEPTH} directory levels below {input}; pass the session dirs (or a dir nearer them) instead")]
    TooDeep { input: PathBuf, path: PathBuf },
    #[error(
        "{input} holds more than {max} files and directories; pass the session dirs (or a dir nearer them) instead"
    )]
    TooManyEntries { input: PathBuf, max: usize },
}

/// One directory's session files: a session dir (it has `metadata.json`)
/// or any directory holding trace files or KV-cache CSVs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionFiles {
    pub dir: PathBuf,
    pub has_metadata: bool,
    /// `trace_*.jsonl`, sorted.
    pub traces: Vec<PathBuf>,
    /// The KV-cache CSVs a report reads (`names::is_kv_csv`), sorted.
    pub kv_csvs: Vec<PathBuf>,
}

/// The trace files of the inputs: a `.jsonl` file as is, a directory's
/// from every directory below it. Each directory input must hold one.
pub fn discover(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, DiscoverError> {
    let mut files = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|source| DiscoverError::Io { path: input.clone(), source })?;
        if meta.is_file() {
            if input.extension().is_none_or(|e| e != "jsonl" && e != "parquet") && !is_partial_trace(input) {
                return Err(DiscoverError::NotTrace(input.clone()));
            }
            files.push(resolved(input));
            continue;
        }
        let before = files.len();
        files.extend(walk(input)?.into_iter().flat_map(|s| s.traces));
        if files.len() == before {
            return Err(DiscoverError::NoTraceFiles(input.clone()));
        }
    }
    let files = without_twins(files);
    let partial: Vec<String> = files.iter().filter(|f| is_partial_trace(f)).map(|f| f.display().to_string()).collect();
    if !partial.is_empty() {
        tracing::warn!(
            "reading {} half-written trace file(s) (.partial: their tracer was killed, failed or is still writing): {}",
            partial.len(),
            partial.join(", ")
        );
    }
    Ok(files)
}

/// A trace file's session and sequence number: from `<session>/trace_<seq>_…`
/// (JSONL or Parquet) or a lake object's `<session>-<seq>.parquet`.
fn session_and_seq(path: &Path) -> Option<(String, u32)> {
    let name = path.file_name()?.to_str()?;
    if let Some((seq, _)) = names::trace_seq_and_utc(name) {
        let session = path.parent()?.file_name()?.to_string_lossy().into_owned();
        return Some((session, seq.parse().ok()?));
    }
    let (session, seq) = name.strip_suffix(".parquet")?.rsplit_once('-')?;
    Some((session.to_string(), seq.parse().ok()?))
}

/// The files less each Parquet file whose JSONL twin (`--format both`, or
/// a synced bucket holding both layouts) is among them: each call once.
fn without_twins(files: Vec<PathBuf>) -> Vec<PathBuf> {
    let is_parquet = |f: &Path| f.file_name().and_then(|n| n.to_str()).is_some_and(names::is_parquet_file);
    let jsonl: std::collections::HashSet<(String, u32)> =
        files.iter().filter(|f| !is_parquet(f)).filter_map(|f| session_and_seq(f)).collect();
    files.into_iter().filter(|f| !is_parquet(f) || session_and_seq(f).is_none_or(|k| !jsonl.contains(&k))).collect()
}

/// Whether `path` is a trace file still under its `.partial` name.
pub(super) fn is_partial_trace(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    names::closed_name(name).is_some_and(names::is_trace_file)
}

/// An input file as given, or where it leads if it is a symlink: the
/// readers open session files without following a last-component link.
fn resolved(input: &Path) -> PathBuf {
    let is_link = std::fs::symlink_metadata(input).is_ok_and(|m| m.file_type().is_symlink());
    if is_link {
        std::fs::canonicalize(input).unwrap_or_else(|_| input.to_path_buf())
    } else {
        input.to_path_buf()
    }
}

/// Every directory under `root` (itself included) that holds session
/// files, in path order. Symlinks below `root` are skipped and logged.
pub fn walk(root: &Path) -> Result<Vec<SessionFiles>, DiscoverError> {
    walk_within(root, MAX_ENTRIES)
}

fn walk_within(root: &Path, max_entries: usize) -> Result<Vec<SessionFiles>, DiscoverError> {
    let mut dirs: BTreeMap<PathBuf, SessionFiles> = BTreeMap::new();
    let walker = walkdir::WalkDir::new(root).follow_links(false).follow_root_links(true).sort_by_file_name();
    for (seen, entry) in walker.into_iter().enumerate() {
        if seen >= max_entries {
            return Err(DiscoverError::TooManyEntries { input: root.to_path_buf(), max: max_entries });
        }
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(root).to_path_buf();
            DiscoverError::Io { path, source: e.into_io_error().unwrap_or_else(|| std::io::Error::other("walk")) }
        })?;
        if entry.depth() > MAX_DEPTH {
            return Err(DiscoverError::TooDeep { input: root.to_path_buf(), path: entry.path().to_path_buf() });
        }
        let kind = entry.file_type();
        if kind.is_symlink() {
            safe_fs::skipped_symlink(entry.path());
            continue;
        }
        // Anything but a directory named like a session file is kept: a
        // FIFO or device named `trace_*.jsonl` is then refused by the
        // reader with an error naming it, not passed over in silence.
        if kind.is_dir() {
            continue;
        }
        let (Some(name), Some(dir)) = (entry.file_name().to_str(), entry.path().parent()) else { continue };
        let trace = names::is_trace_file(name) || names::is_parquet_file(name) || is_partial_trace(entry.path());
        let (kv, metadata) = (names::is_kv_csv(name), name == names::METADATA);
        if !(trace || kv || metadata) {
            continue;
        }
        let files = dirs
            .entry(dir.to_path_buf())
            .or_insert_with(|| SessionFiles { dir: dir.to_path_buf(), ..Default::default() });
        if trace {
            files.traces.push(entry.path().to_path_buf());
        } else if kv {
            files.kv_csvs.push(entry.path().to_path_buf());
        } else {
            files.has_metadata = true;
        }
    }
    Ok(dirs.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "x").unwrap();
    }

    #[test]
    fn local_and_synced_layouts_and_deeper_ones_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for session in ["traces/s1", "synced/k3s-vllm/pod-a/s2", "synced/k3s-vllm/pod-b/s3"] {
            touch(&root.join(session).join("trace_00001_x.jsonl"));
            touch(&root.join(session).join(names::METADATA));
        }
        touch(&root.join("synced/k3s-vllm/pod-b/s3/kv_cache_usage_00001.csv"));
        touch(&root.join("synced/k3s-vllm/pod-b/s3/notes.txt"));
        assert_eq!(discover(&[root.join("traces")]).unwrap(), [root.join("traces/s1/trace_00001_x.jsonl")]);
        let found = walk(&root.join("synced")).unwrap();
        let dirs: Vec<&Path> = found.iter().map(|s| s.dir.as_path()).collect();
        assert_eq!(dirs, [root.join("synced/k3s-vllm/pod-a/s2"), root.join("synced/k3s-vllm/pod-b/s3")]);
        assert!(found.iter().all(|s| s.has_metadata && s.traces.len() == 1));
        assert_eq!(found[1].kv_csvs, [root.join("synced/k3s-vllm/pod-b/s3/kv_cache_usage_00001.csv")]);
        assert_eq!(discover(&[root.to_path_buf()]).unwrap().len(), 3);
    }

    #[test]
    fn parquet_files_are_found_and_a_jsonl_twin_wins() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(&root.join("traces/s1/trace_00001_x.jsonl"));
        touch(&root.join("traces/s1/trace_00001_x.parquet"));
        touch(&root.join("traces/s1/trace_00002_x.parquet"));
        touch(&root.join("lake/parquet/date=2026-01-01/hour=00/node=n/pod=p/s1-00002.parquet"));
        touch(&root.join("lake/parquet/date=2026-01-01/hour=00/node=n/pod=p/s2-00001.parquet"));
        assert_eq!(
            discover(&[root.join("traces")]).unwrap(),
            [root.join("traces/s1/trace_00001_x.jsonl"), root.join("traces/s1/trace_00002_x.parquet")]
        );
        assert_eq!(discover(&[root.join("lake")]).unwrap().len(), 2);
        let jsonl_and_lake = discover(&[root.join("traces/s1/trace_00001_x.jsonl"), root.join("lake")]).unwrap();
        assert_eq!(jsonl_and_lake.len(), 3);
    }

    #[test]
    fn symlinks_below_an_input_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let (outside, traces) = (dir.path().join("outside"), dir.path().join("traces"));
        touch(&outside.join("trace_00001_x.jsonl"));
        touch(&traces.join("s1/trace_00001_x.jsonl"));
        std::os::unix::fs::symlink(&outside, traces.join("linked-session")).unwrap();
        std::os::unix::fs::symlink(outside.join("trace_00001_x.jsonl"), traces.join("s1/trace_00002_x.jsonl")).unwrap();
        assert_eq!(discover(std::slice::from_ref(&traces)).unwrap(), [traces.join("s1/trace_00001_x.jsonl")]);
        // An input that is itself a link is the user's choice: followed.
        let link = dir.path().join("chosen");
        std::os::unix::fs::symlink(&traces, &link).unwrap();
        assert_eq!(discover(std::slice::from_ref(&link)).unwrap(), [link.join("s1/trace_00001_x.jsonl")]);
        let file_link = dir.path().join("chosen.jsonl");
        std::os::unix::fs::symlink(traces.join("s1/trace_00001_x.jsonl"), &file_link).unwrap();
        assert_eq!(
            discover(&[file_link]).unwrap(),
            [std::fs::canonicalize(traces.join("s1/trace_00001_x.jsonl")).unwrap()]
        );
    }

    #[test]
    fn too_deep_a_tree_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut deep = dir.path().to_path_buf();
        for i in 0..=MAX_DEPTH {
            deep.push(format!("d{i}"));
        }
        touch(&deep.join("trace_00001_x.jsonl"));
        let e = discover(&[dir.path().to_path_buf()]).unwrap_err().to_string();
        assert!(e.contains("more than 16 directory levels") && e.contains("pass the session dirs"), "{e}");
        let e = discover(&[dir.path().join("d0/d1")]).unwrap();
        assert_eq!(e.len(), 1, "from nearer, the same file is in reach");
    }

    #[test]
    fn too_many_entries_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..5 {
            touch(&dir.path().join(format!("s{i}/trace_00001_x.jsonl")));
        }
        assert_eq!(walk_within(dir.path(), 11).unwrap().len(), 5, "the root, 5 dirs and 5 files");
        let e = walk_within(dir.path(), 10).unwrap_err().to_string();
        assert!(e.contains("more than 10 files and directories"), "{e}");
    }

    #[test]
    fn empty_trees_and_other_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join("pod/s1/metadata.json"));
        let e = discover(&[dir.path().to_path_buf()]).unwrap_err().to_string();
        assert!(e.contains("no trace files") && e.contains("synced S3 prefix"), "{e}");
        touch(&dir.path().join("notes.txt"));
        let e = discover(&[dir.path().join("notes.txt")]).unwrap_err().to_string();
        assert!(e.contains("not a trace file"), "{e}");
    }
}
