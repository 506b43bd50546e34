//! The local disk budget (`--max-local-bytes`): how much the trace dir may
//! hold and what happens at the cap. The default policy never deletes data
//! that has not been uploaded: it pauses writing and counts every call it
//! does not write. `delete-oldest` instead removes the oldest closed trace
//! files and records each one in the metadata. What counts is what delivery
//! uploads: trace files and KV-cache chunks ([`names::is_data_file`]).

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

pub use crate::format::metadata::DeletedFile;
use crate::format::names;

/// What to do when the trace dir reaches `--max-local-bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFullPolicy {
    /// Stop writing lines (each one counted as dropped) until uploads free space.
    Pause,
    /// Delete the oldest closed data files (trace files, KV-cache chunks), recording which.
    DeleteOldest,
}

/// The budget of one tracer.
#[derive(Clone, Debug)]
pub struct DiskBudget {
    pub max_bytes: u64,
    pub policy: DiskFullPolicy,
    /// The directory whose data files count (the trace dir, or a record's session dir).
    pub root: PathBuf,
    /// Read by the pipeline for every call: true while writing is paused.
    pub paused: Arc<AtomicBool>,
}

/// The data files under `root` (trace files and KV-cache chunks, closed or
/// open: what delivery uploads) with their sizes.
fn data_files(root: &Path) -> Vec<(PathBuf, u64)> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.filter_map(Result::ok) {
            let path = e.path();
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                dirs.push(path);
            } else if names::is_data_file_open_or_closed(&e.file_name().to_string_lossy()) {
                files.push((path, meta.len()));
            }
        }
    }
    files
}

impl DiskBudget {
    /// Bytes of data files, closed and open, under the root.
    pub fn usage(&self) -> u64 {
        data_files(&self.root).iter().map(|(_, n)| n).sum()
    }

    /// Applies the policy once; returns the files deleted (delete-oldest).
    pub fn enforce(&self) -> Vec<DeletedFile> {
        let usage = self.usage();
        match self.policy {
            DiskFullPolicy::Pause => {
                let full = usage >= self.max_bytes;
                if self.paused.swap(full, Ordering::Relaxed) != full {
                    if full {
                        tracing::warn!(usage, max = self.max_bytes, "disk budget reached: pausing trace writes; calls are counted as dropped until uploads free space");
                    } else {
                        tracing::info!(usage, max = self.max_bytes, "disk budget has room again: writing traces");
                    }
                }
                Vec::new()
            }
            DiskFullPolicy::DeleteOldest => {
                let mut deleted = Vec::new();
                if usage <= self.max_bytes {
                    return deleted;
                }
                // Oldest first: session dirs and file names start with time and sequence.
                let mut closed: Vec<(PathBuf, u64)> = data_files(&self.root)
                    .into_iter()
                    .filter(|(p, _)| p.file_name().is_some_and(|n| names::is_data_file(&n.to_string_lossy())))
                    .collect();
                closed.sort();
                // The newest closed file holds the latest data: it is never deleted.
                closed.pop();
                let mut over = usage - self.max_bytes;
                for (path, bytes) in closed {
                    if over == 0 {
                        break;
                    }
                    if std::fs::remove_file(&path).is_ok() {
                        tracing::warn!(file = %path.display(), bytes, "deleted a trace file that was not uploaded, to stay within the disk budget");
                        over = over.saturating_sub(bytes);
                        deleted.push(DeletedFile { path: path.display().to_string(), bytes });
                    }
                }
                deleted
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(root: &Path, max: u64, policy: DiskFullPolicy) -> DiskBudget {
        DiskBudget { max_bytes: max, policy, root: root.to_path_buf(), paused: Arc::default() }
    }

    #[test]
    fn pause_flips_with_usage_and_deletes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("trace_00001_a.jsonl"), vec![b'x'; 600]).unwrap();
        let b = budget(dir.path(), 500, DiskFullPolicy::Pause);
        assert!(b.enforce().is_empty());
        assert!(b.paused.load(Ordering::Relaxed));
        std::fs::remove_file(dir.path().join("trace_00001_a.jsonl")).unwrap();
        b.enforce();
        assert!(!b.paused.load(Ordering::Relaxed));
    }

    #[test]
    fn kv_chunks_count_like_trace_files_and_metadata_does_not() {
        let dir = tempfile::tempdir().unwrap();
        for (name, n) in [
            (names::kv_chunk(1), 100),
            (names::partial(&names::kv_chunk(2)), 20),
            (names::trace_file(1, "x"), 3),
            (names::METADATA.to_string(), 1000),
        ] {
            std::fs::write(dir.path().join(name), vec![b'x'; n]).unwrap();
        }
        assert_eq!(budget(dir.path(), 500, DiskFullPolicy::Pause).usage(), 123);
    }

    #[test]
    fn delete_oldest_removes_the_oldest_closed_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path().join("20261122T000000Z-1");
        std::fs::create_dir_all(&s).unwrap();
        for (name, n) in
            [("trace_00001_a.jsonl", 400), ("trace_00002_b.jsonl", 400), (".trace_00003_c.jsonl.partial", 400)]
        {
            std::fs::write(s.join(name), vec![b'x'; n]).unwrap();
        }
        let deleted = budget(dir.path(), 900, DiskFullPolicy::DeleteOldest).enforce();
        assert_eq!(deleted.len(), 1);
        assert!(deleted[0].path.ends_with("trace_00001_a.jsonl"));
        // Far over the cap, the newest closed file still stays.
        assert!(budget(dir.path(), 1, DiskFullPolicy::DeleteOldest).enforce().is_empty());
        assert!(s.join("trace_00002_b.jsonl").exists());
        assert!(s.join(".trace_00003_c.jsonl.partial").exists(), "the open file is never deleted");
    }
}
