//! Where formatted calls go: `JsonlSink` writes buffered JSONL files under a
//! hidden temporary name and renames them on close, so no reader (or
//! uploader) ever sees half a file.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use tracer_common::abi::CallEvent;

pub use crate::format::metadata::ClosedFile;
use crate::{daemon::ingest::annotate::Annotations, format::line::LineFormatter, format::names, format::safe_fs};

/// Why the trace could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("creating trace file {path}: {source} (is the trace dir writable and not full?)")]
    Create { path: String, source: std::io::Error },
    #[error("writing trace file {path}: {source} (disk full?)")]
    Write { path: String, source: std::io::Error },
    #[error("closing trace file {path}: {source}")]
    Close { path: String, source: std::io::Error },
}

/// Receives decoded calls.
pub trait Sink: Send {
    /// Writes one call; `name` is its string argument, if it has one.
    fn write_call(&mut self, ev: &CallEvent, name: Option<&[u8]>, ann: &Annotations) -> Result<(), SinkError>;
    /// Closes the current file, if one is open; the next call opens a new one.
    fn rotate(&mut self) -> Result<Option<ClosedFile>, SinkError>;
}

struct OpenFile {
    tmp: PathBuf,
    dest: PathBuf,
    writer: BufWriter<File>,
    lines: u64,
    bytes: u64,
}

/// Rotating JSONL files in one session directory.
pub struct JsonlSink {
    dir: PathBuf,
    formatter: LineFormatter,
    seq: u32,
    current: Option<OpenFile>,
    line: Vec<u8>,
}

const BUFFER_BYTES: usize = 256 * 1024;

impl JsonlSink {
    pub fn new(dir: &Path, formatter: LineFormatter) -> Self {
        Self { dir: dir.to_path_buf(), formatter, seq: 0, current: None, line: Vec::with_capacity(512) }
    }

    fn open(&mut self) -> Result<&mut OpenFile, SinkError> {
        if self.current.is_none() {
            self.seq += 1;
            let name = names::trace_file(self.seq, &crate::clock::compact_utc_now());
            let dest = self.dir.join(&name);
            let tmp = self.dir.join(names::partial(&name));
            let file = safe_fs::create_new(&tmp)
                .map_err(|e| SinkError::Create { path: tmp.display().to_string(), source: e.into_io() })?;
            self.current =
                Some(OpenFile { tmp, dest, writer: BufWriter::with_capacity(BUFFER_BYTES, file), lines: 0, bytes: 0 });
        }
        Ok(self.current.as_mut().expect("just opened"))
    }
}

impl Sink for JsonlSink {
    fn write_call(&mut self, ev: &CallEvent, name: Option<&[u8]>, ann: &Annotations) -> Result<(), SinkError> {
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        self.formatter.write_call(&mut line, ev, name, ann);
        let result = self.open().and_then(|f| {
            f.writer
                .write_all(&line)
                .map_err(|source| SinkError::Write { path: f.tmp.display().to_string(), source })?;
            f.lines += 1;
            f.bytes += line.len() as u64;
            Ok(())
        });
        self.line = line;
        result
    }

    fn rotate(&mut self) -> Result<Option<ClosedFile>, SinkError> {
        let Some(mut f) = self.current.take() else {
            return Ok(None);
        };
        let close = |source| SinkError::Close { path: f.tmp.display().to_string(), source };
        f.writer.flush().map_err(close)?;
        f.writer.get_ref().sync_data().map_err(close)?;
        std::fs::rename(&f.tmp, &f.dest).map_err(close)?;
        let name = f.dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        tracing::debug!(file = %name, lines = f.lines, "trace file closed");
        Ok(Some(ClosedFile { name, lines: f.lines, bytes: f.bytes }))
    }
}

impl Drop for JsonlSink {
    fn drop(&mut self) {
        // Close on every exit path (panics included) so captured lines reach
        // a final file; errors were already reported by an explicit rotate.
        let _ = self.rotate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::{abi::EventHeader, funcs};

    fn ev(i: u64) -> CallEvent {
        CallEvent {
            header: EventHeader { kind: 1, size: 152 },
            entry_ns: i * 1000,
            func_id: funcs::by_name("cuInit").unwrap().0 as u32,
            pid: 1,
            tid: 1,
            ..Default::default()
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<_> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn writes_under_temp_name_then_renames_on_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = JsonlSink::new(dir.path(), LineFormatter { start_ns: 0 });
        assert_eq!(sink.rotate().unwrap(), None, "no empty files");
        sink.write_call(&ev(1), None, &Annotations::default()).unwrap();
        sink.write_call(&ev(2), None, &Annotations::default()).unwrap();
        let open = names(dir.path());
        assert_eq!(open.len(), 1);
        assert!(open[0].starts_with(".trace_00001_") && open[0].ends_with(".jsonl.partial"), "{open:?}");
        let closed = sink.rotate().unwrap().unwrap();
        assert_eq!(closed.lines, 2);
        assert!(closed.name.starts_with("trace_00001_") && closed.name.ends_with(".jsonl"));
        let text = std::fs::read_to_string(dir.path().join(&closed.name)).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert_eq!(closed.bytes, text.len() as u64);
        for l in text.lines() {
            serde_json::from_str::<serde_json::Value>(l).unwrap();
        }
    }

    #[test]
    fn each_rotation_starts_a_new_numbered_file_and_drop_closes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut sink = JsonlSink::new(dir.path(), LineFormatter { start_ns: 0 });
            sink.write_call(&ev(1), None, &Annotations::default()).unwrap();
            sink.rotate().unwrap();
            sink.write_call(&ev(2), None, &Annotations::default()).unwrap();
        }
        let files = names(dir.path());
        assert_eq!(files.len(), 2, "{files:?}");
        assert!(files[0].starts_with("trace_00001_") && files[1].starts_with("trace_00002_"));
    }

    #[test]
    fn unwritable_dir_is_a_clear_error() {
        let mut sink = JsonlSink::new(Path::new("/proc/no-such-dir"), LineFormatter { start_ns: 0 });
        let err = sink.write_call(&ev(1), None, &Annotations::default()).unwrap_err();
        assert!(err.to_string().contains("trace dir writable"), "{err}");
    }
}
