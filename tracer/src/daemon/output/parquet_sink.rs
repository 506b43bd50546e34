//! Parquet trace files beside (or instead of) JSONL (`--format`):
//! `ParquetSink` turns each call into the JSONL line the line writer
//! makes and that line into a row (so both formats hold the same calls,
//! fields added to the line later included), writes it under a hidden
//! `.partial` name and renames the file when it closes; `TeeSink` feeds
//! one call to a JSONL and a Parquet sink and rotates them together.

use std::path::{Path, PathBuf};

use tracer_common::abi::CallEvent;

use super::sink::{ClosedFile, Sink, SinkError};
use crate::{
    daemon::ingest::annotate::Annotations,
    format::{
        line::LineFormatter,
        names,
        parquet::{FileContext, ParquetFileWriter, Row},
        safe_fs,
    },
};

/// Which files the daemon writes (`--format`, `TRACE_FORMAT`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TraceFormat {
    /// JSONL only (the seed's format, the default).
    #[default]
    Jsonl,
    /// Parquet only.
    Parquet,
    /// Both, rotated together.
    Both,
}

struct OpenParquet {
    tmp: PathBuf,
    dest: PathBuf,
    writer: ParquetFileWriter,
}

/// Rotating Parquet files in one session directory.
pub struct ParquetSink {
    dir: PathBuf,
    formatter: LineFormatter,
    ctx: FileContext,
    seq: u32,
    current: Option<OpenParquet>,
    line: Vec<u8>,
    lost: u64,
}

fn write_error(path: &Path, e: impl std::fmt::Display, lost: u64) -> SinkError {
    SinkError::Write { path: path.display().to_string(), source: std::io::Error::other(e.to_string()), lost }
}

impl ParquetSink {
    pub fn new(dir: &Path, formatter: LineFormatter, ctx: FileContext) -> Self {
        Self { dir: dir.to_path_buf(), formatter, ctx, seq: 0, current: None, line: Vec::with_capacity(512), lost: 0 }
    }

    fn open(&mut self) -> Result<&mut OpenParquet, SinkError> {
        if self.current.is_none() {
            self.seq += 1;
            let name = names::parquet_trace_file(self.seq, &crate::clock::compact_utc_now());
            let dest = self.dir.join(&name);
            let tmp = self.dir.join(names::partial(&name));
            let create = |source| SinkError::Create { path: tmp.display().to_string(), source };
            let file = safe_fs::create_new(&tmp).map_err(|e| create(e.into_io()))?;
            let writer = ParquetFileWriter::new(file, self.ctx.clone())
                .map_err(|e| create(std::io::Error::other(e.to_string())))?;
            self.current = Some(OpenParquet { tmp, dest, writer });
        }
        Ok(self.current.as_mut().expect("just opened"))
    }

    fn write_row(&mut self) -> Result<(), SinkError> {
        let row = Row::from_line(&self.line).map_err(|e| write_error(&self.dir, e, 1))?;
        let f = self.open()?;
        let lost = f.writer.rows() + 1;
        if let Err(e) = f.writer.push(row) {
            let err = write_error(&f.tmp, e, lost);
            // A failed row group leaves the file without a footer, its rows
            // lost (counted): the next call starts a new file.
            self.current = None;
            return Err(err);
        }
        Ok(())
    }
}

impl Sink for ParquetSink {
    fn write_call(&mut self, ev: &CallEvent, name: Option<&[u8]>, ann: &Annotations) -> Result<(), SinkError> {
        self.line.clear();
        self.formatter.write_call(&mut self.line, ev, name, ann);
        if self.line.is_empty() {
            return Ok(());
        }
        let result = self.write_row();
        match &result {
            Err(SinkError::Write { lost, .. }) => self.lost += lost,
            Err(_) => self.lost += 1,
            Ok(()) => {}
        }
        result
    }

    fn rotate(&mut self) -> Result<Option<ClosedFile>, SinkError> {
        let Some(f) = self.current.take() else {
            return Ok(None);
        };
        let close = |source| SinkError::Close { path: f.tmp.display().to_string(), source };
        let (rows, file) = f.writer.finish().map_err(|e| close(std::io::Error::other(e.to_string())))?;
        file.sync_data().map_err(close)?;
        let bytes = file.metadata().map_err(close)?.len();
        std::fs::rename(&f.tmp, &f.dest).map_err(close)?;
        let name = f.dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        tracing::debug!(file = %name, rows, "Parquet trace file closed");
        Ok(Some(ClosedFile { name, lines: rows, bytes }))
    }

    fn lines_lost(&self) -> u64 {
        self.lost
    }
}

impl Drop for ParquetSink {
    fn drop(&mut self) {
        // Close on every exit path so the rows written reach a final file.
        let _ = self.rotate();
    }
}

/// A JSONL sink and a Parquet sink fed the same calls (`--format both`).
pub struct TeeSink<A, B> {
    pub first: A,
    pub second: B,
}

impl<A: Sink, B: Sink> Sink for TeeSink<A, B> {
    fn write_call(&mut self, ev: &CallEvent, name: Option<&[u8]>, ann: &Annotations) -> Result<(), SinkError> {
        let first = self.first.write_call(ev, name, ann);
        let second = self.second.write_call(ev, name, ann);
        first.and(second)
    }

    /// The first sink's file; see [`Sink::rotate_all`] for both.
    fn rotate(&mut self) -> Result<Option<ClosedFile>, SinkError> {
        Ok(self.rotate_all()?.into_iter().next())
    }

    fn rotate_all(&mut self) -> Result<Vec<ClosedFile>, SinkError> {
        let first = self.first.rotate_all();
        let second = self.second.rotate_all();
        Ok(first?.into_iter().chain(second?).collect())
    }

    /// The larger of the two: lines missing from at least one format.
    fn lines_lost(&self) -> u64 {
        self.first.lines_lost().max(self.second.lines_lost())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::output::sink::JsonlSink;
    use tracer_common::{abi::EventHeader, funcs};

    fn ev(i: u64) -> CallEvent {
        CallEvent {
            header: EventHeader { kind: 1, size: 152 },
            entry_ns: 10_000 - i * 1000,
            func_id: funcs::by_name("cudaMalloc").unwrap().0 as u32,
            pid: 1,
            tid: 1,
            args: [0x10, 4096 * i, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ..Default::default()
        }
    }

    #[test]
    fn both_formats_hold_the_same_lines_and_rotate_together() {
        let dir = tempfile::tempdir().unwrap();
        let f = LineFormatter { start_ns: 0 };
        let ctx = FileContext { node: "n".into(), session: "s".into(), ..Default::default() };
        let mut sink = TeeSink { first: JsonlSink::new(dir.path(), f), second: ParquetSink::new(dir.path(), f, ctx) };
        for i in 1..=3 {
            sink.write_call(&ev(i), None, &Annotations::default()).unwrap();
        }
        let closed = sink.rotate_all().unwrap();
        assert_eq!(closed.len(), 2, "{closed:?}");
        assert!(names::is_trace_file(&closed[0].name) && names::is_parquet_trace_file(&closed[1].name));
        assert_eq!((closed[0].lines, closed[1].lines), (3, 3));
        let jsonl = std::fs::read(dir.path().join(&closed[0].name)).unwrap();
        let file = std::fs::File::open(dir.path().join(&closed[1].name)).unwrap();
        let parquet = crate::format::parquet::read_as_lines(file).unwrap();
        let parse = |b: &[u8]| -> Vec<serde_json::Value> {
            let mut v: Vec<serde_json::Value> = b
                .split(|c| *c == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice(l).unwrap())
                .collect();
            v.sort_by(|a, b| a["ts"].as_f64().partial_cmp(&b["ts"].as_f64()).unwrap());
            v
        };
        assert_eq!(parse(&parquet), parse(&jsonl));
        assert!(sink.rotate_all().unwrap().is_empty(), "no empty files");
    }
}
