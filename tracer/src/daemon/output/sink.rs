//! Where formatted calls go: `JsonlSink` writes buffered JSONL files under a
//! hidden temporary name and renames them on close, so no reader (or
//! uploader) ever sees half a file. A file only ever holds whole lines, and
//! every line that could not be written (a full disk) is counted.

use std::{
    fs::File,
    os::unix::fs::FileExt,
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
    #[error("writing trace file {path}: {source} (disk full?); {lost} line(s) lost")]
    Write { path: String, source: std::io::Error, lost: u64 },
    #[error("closing trace file {path}: {source}")]
    Close { path: String, source: std::io::Error },
}

/// Receives decoded calls.
pub trait Sink: Send {
    /// Writes one call; `name` is its string argument, if it has one.
    fn write_call(&mut self, ev: &CallEvent, name: Option<&[u8]>, ann: &Annotations) -> Result<(), SinkError>;
    /// Closes the current file, if one is open; the next call opens a new one.
    fn rotate(&mut self) -> Result<Option<ClosedFile>, SinkError>;
    /// [`Sink::rotate`] for sinks that write more than one file at a time
    /// (`--format both`): every file closed.
    fn rotate_all(&mut self) -> Result<Vec<ClosedFile>, SinkError> {
        Ok(self.rotate()?.into_iter().collect())
    }
    /// Lines accepted by `write_call` that did not reach a file, so far.
    fn lines_lost(&self) -> u64;
}

/// The file being written: whole lines only ever reach it.
struct OpenFile {
    tmp: PathBuf,
    dest: PathBuf,
    file: File,
    /// Lines not yet written, and how many.
    buf: Vec<u8>,
    buf_lines: u64,
    /// What the file holds.
    lines: u64,
    bytes: u64,
}

impl OpenFile {
    /// Writes the buffer at the file's end. When the disk refuses part of
    /// it, the file is cut back to its last whole line and the lines that
    /// did not make it are returned as lost (the buffer is emptied either
    /// way: a full disk must not stall the reader).
    fn flush(&mut self) -> Result<(), SinkError> {
        let buf_lines = std::mem::take(&mut self.buf_lines);
        let (written, source) = match write_all_at(&self.file, &self.buf, self.bytes) {
            Ok(()) => {
                (self.lines, self.bytes) = (self.lines + buf_lines, self.bytes + self.buf.len() as u64);
                self.buf.clear();
                return Ok(());
            }
            Err(failed) => failed,
        };
        let whole = self.buf[..written].iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let kept = memchr::memchr_iter(b'\n', &self.buf[..whole]).count() as u64;
        self.buf.clear();
        (self.lines, self.bytes) = (self.lines + kept, self.bytes + whole as u64);
        if whole < written {
            // Cutting needs no space; a half line left would be a corrupt line.
            if let Err(e) = self.file.set_len(self.bytes) {
                tracing::error!(file = %self.tmp.display(), error = %e, "a trace file keeps a half-written last line");
            }
        }
        Err(SinkError::Write { path: self.tmp.display().to_string(), source, lost: buf_lines - kept })
    }
}

/// Writes `buf` at `offset`; on failure, says how many bytes were written.
fn write_all_at(file: &File, buf: &[u8], offset: u64) -> Result<(), (usize, std::io::Error)> {
    let mut written = 0;
    while written < buf.len() {
        match file.write_at(&buf[written..], offset + written as u64) {
            Ok(0) => return Err((written, std::io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err((written, e)),
        }
    }
    Ok(())
}

/// Rotating JSONL files in one session directory.
pub struct JsonlSink {
    dir: PathBuf,
    formatter: LineFormatter,
    seq: u32,
    current: Option<OpenFile>,
    line: Vec<u8>,
    lost: u64,
}

const BUFFER_BYTES: usize = 256 * 1024;

impl JsonlSink {
    pub fn new(dir: &Path, formatter: LineFormatter) -> Self {
        Self { dir: dir.to_path_buf(), formatter, seq: 0, current: None, line: Vec::with_capacity(512), lost: 0 }
    }

    fn open(&mut self) -> Result<&mut OpenFile, SinkError> {
        if self.current.is_none() {
            self.seq += 1;
            let name = names::trace_file(self.seq, &crate::clock::compact_utc_now());
            let dest = self.dir.join(&name);
            let tmp = self.dir.join(names::partial(&name));
            let file = safe_fs::create_new(&tmp)
                .map_err(|e| SinkError::Create { path: tmp.display().to_string(), source: e.into_io() })?;
            let buf = Vec::with_capacity(BUFFER_BYTES);
            self.current = Some(OpenFile { tmp, dest, file, buf, buf_lines: 0, lines: 0, bytes: 0 });
        }
        Ok(self.current.as_mut().expect("just opened"))
    }

    /// Counts the lines an error says were lost.
    fn count(&mut self, result: Result<(), SinkError>) -> Result<(), SinkError> {
        match &result {
            Err(SinkError::Write { lost, .. }) => self.lost += lost,
            Err(SinkError::Create { .. }) => self.lost += 1,
            _ => {}
        }
        result
    }
}

impl Sink for JsonlSink {
    fn write_call(&mut self, ev: &CallEvent, name: Option<&[u8]>, ann: &Annotations) -> Result<(), SinkError> {
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        self.formatter.write_call(&mut line, ev, name, ann);
        let result = self.open().and_then(|f| {
            f.buf.extend_from_slice(&line);
            f.buf_lines += 1;
            if f.buf.len() >= BUFFER_BYTES {
                f.flush()?;
            }
            Ok(())
        });
        self.line = line;
        self.count(result)
    }

    /// Closes the file: what reached it is renamed to its final name even
    /// when the last lines could not be written (they are counted lost).
    fn rotate(&mut self) -> Result<Option<ClosedFile>, SinkError> {
        let Some(mut f) = self.current.take() else {
            return Ok(None);
        };
        if let Err(e) = self.count(f.flush()) {
            tracing::error!(error = %e, "the last lines of a trace file could not be written");
        }
        let close = |source| SinkError::Close { path: f.tmp.display().to_string(), source };
        f.file.sync_data().map_err(close)?;
        std::fs::rename(&f.tmp, &f.dest).map_err(close)?;
        let name = f.dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        tracing::debug!(file = %name, lines = f.lines, "trace file closed");
        Ok(Some(ClosedFile { name, lines: f.lines, bytes: f.bytes }))
    }

    fn lines_lost(&self) -> u64 {
        self.lost
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
