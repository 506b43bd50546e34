//! Parsing trace files in parallel (rayon over chunks of
//! memory-mapped files); bad lines are skipped and counted with file and
//! line number, never fatal. Files a tracer left (or still writes) under
//! their `.partial` name are read too, and said so.

use std::{
    mem::MaybeUninit,
    path::{Path, PathBuf},
};

use rayon::prelude::*;

use super::{
    filter::TraceFilter,
    parse_line,
    sort::{sort_by_time, sort_chunk, time_order},
    tally::Tally,
    Call, LineError,
};
use crate::format::align;
use crate::format::line::read as fast;

/// Chunk size for parallel parsing; chunks end at a newline.
const CHUNK_BYTES: usize = 4 << 20;
/// Skipped lines kept with their reason; the rest are only counted.
const SKIPPED_KEPT: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Discover(#[from] super::discover::DiscoverError),
    #[error("{0} lines in one report: at most 4 294 967 295 fit; report fewer files or sessions at a time")]
    TooManyLines(usize),
    #[error("{path}: {source}")]
    Parquet { path: PathBuf, source: crate::format::parquet::ParquetReadError },
}

/// One skipped line.
#[derive(Clone, Debug)]
pub struct Skipped {
    pub file: PathBuf,
    /// 1-based.
    pub line: u64,
    pub reason: LineError,
}

/// Every call of the inputs, sorted by time, with what could not be read.
#[derive(Debug, Default)]
pub struct Loaded {
    pub files: Vec<PathBuf>,
    pub calls: Vec<Call>,
    pub bytes: u64,
    pub lines: u64,
    /// The first [`SKIPPED_KEPT`] skipped lines.
    pub skipped: Vec<Skipped>,
    pub skipped_total: u64,
    /// How the sessions were put on one time axis.
    pub alignment: align::Alignment,
    /// Per file (in `files` order): the calls kept, by layer.
    pub tallies: Vec<Tally>,
    /// Calls read but left out by the time filter.
    pub filtered_calls: u64,
    /// Files left out whole: a time filter and no known session start.
    pub unplaced_files: Vec<PathBuf>,
}

/// Parses every file. Sessions started at different instants are put on one
/// time axis ([`align::align`]: by boot time on one machine, by wall clock
/// across machines).
pub fn read(files: &[PathBuf]) -> Result<Loaded, ReadError> {
    read_with_progress(files, &|_| ())
}

/// [`read`], calling `progress` with the bytes of each chunk parsed (from
/// rayon's threads), for a progress bar.
///
/// Every line long enough to hold a call gets one slot of one vector: the newlines of each chunk are
/// counted first, then the chunks are parsed in parallel straight into their
/// own part of the vector (no per-chunk vectors to concatenate: at 1 GB,
/// copying and faulting in that memory costs as much as parsing). A line
/// that cannot be read leaves a hole, which sorts last and is cut off.
pub fn read_with_progress(files: &[PathBuf], progress: &(dyn Fn(u64) + Sync)) -> Result<Loaded, ReadError> {
    read_filtered(files, &TraceFilter::default(), progress)
}

/// [`read_with_progress`] keeping only the calls `filter`'s time range
/// holds (its nodes and pods are the caller's: they pick whole files).
pub fn read_filtered(
    files: &[PathBuf],
    filter: &TraceFilter,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Loaded, ReadError> {
    let started = std::time::Instant::now();
    let starts: Vec<align::SessionStart> = files.iter().map(|f| align::SessionStart::of_trace_file(f)).collect();
    let alignment = align::align(&starts);
    let windows: Vec<Option<(f64, f64)>> = starts.iter().map(|s| filter.window_ms(s.start_unix_ns)).collect();
    let (maps, damaged) = map_files(files, &windows)?;
    let mut work = Vec::new();
    for (index, (map, &shift_ms)) in maps.iter().zip(&alignment.shifts_ms).enumerate() {
        let keep = windows[index].unwrap_or_default();
        let place = Placement { shift_ms, keep };
        work.extend(chunks(map.as_deref().unwrap_or_default()).into_iter().map(|c| (index, c, place)));
    }
    let counts: Vec<usize> = work.par_iter().map(|&(_, chunk, _)| line_count(chunk)).collect();
    let total: usize = counts.iter().sum();
    if u32::try_from(total).is_err() {
        return Err(ReadError::TooManyLines(total));
    }
    let mut calls: Vec<Call> = Vec::with_capacity(total);
    let mut parts = Vec::with_capacity(work.len());
    let mut rest = &mut calls.spare_capacity_mut()[..total];
    let mut first = 0;
    let mut chunk_starts = Vec::with_capacity(counts.len());
    for &n in &counts {
        chunk_starts.push(first);
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(n);
        parts.push(head);
        rest = tail;
        first += n;
    }
    let outs: Vec<ChunkOut> = work
        .par_iter()
        .zip(parts)
        // One buffer of sort keys per thread, reused chunk after chunk.
        .map_init(Vec::new, |keys, (&(_, chunk, place), slots)| {
            let out = parse_chunk(chunk, place, slots, keys);
            progress(chunk.len() as u64);
            out
        })
        .collect();
    // SAFETY: the slots are `total` disjoint parts of the spare capacity, in
    // order, and `parse_chunk` initialized every slot of its part (it asserts
    // so before returning; a panic there never reaches this line).
    unsafe { calls.set_len(total) };
    let mut loaded = Loaded { files: files.to_vec(), alignment, ..Loaded::default() };
    loaded.tallies = vec![Tally::default(); files.len()];
    loaded.unplaced_files = files.iter().zip(&windows).filter(|(_, w)| w.is_none()).map(|(f, _)| f.clone()).collect();
    loaded.skipped_total = damaged.len() as u64;
    loaded.skipped = damaged;
    loaded.bytes = work.iter().map(|w| w.1.len() as u64).sum();
    let mut file_lines = vec![0u64; files.len()];
    let mut holes = 0;
    for (&(index, _, _), out) in work.iter().zip(outs) {
        for (i, reason) in out.bad {
            if loaded.skipped.len() < SKIPPED_KEPT {
                loaded.skipped.push(Skipped { file: files[index].clone(), line: file_lines[index] + i + 1, reason });
            }
        }
        file_lines[index] += out.lines;
        loaded.lines += out.lines;
        loaded.skipped_total += out.bad_total;
        loaded.filtered_calls += out.filtered;
        loaded.tallies[index].merge(&out.tally);
        holes += out.holes;
    }
    drop(work);
    drop(maps);
    tracing::debug!(secs = started.elapsed().as_secs_f64(), calls = total - holes, "parsed");
    let seams_sufficed = sort_by_time(&mut calls, &chunk_starts, |c| time_order(c.ts_ms));
    calls.truncate(total - holes);
    debug_assert!(calls.last().is_none_or(|c| !c.is_hole()));
    loaded.calls = calls;
    tracing::debug!(secs = started.elapsed().as_secs_f64(), seams_sufficed, "sorted");
    Ok(loaded)
}

/// Each file's bytes, and the damaged files skipped.
type Mapped = (Vec<Option<FileBytes>>, Vec<Skipped>);

/// The bytes of each file with a window (`None` for one without, and for
/// an empty or damaged file), and the damaged Parquet files, which are
/// skipped and counted like bad lines. Files are read in parallel (a
/// Parquet file is decoded as it is read).
fn map_files(files: &[PathBuf], windows: &[Option<(f64, f64)>]) -> Result<Mapped, ReadError> {
    /// A file's bytes, or the damage it was skipped for.
    type OneFile = (Option<FileBytes>, Option<Skipped>);
    let each: Vec<Result<OneFile, ReadError>> = files
        .par_iter()
        .zip(windows)
        .map(|(file, window)| match window {
            None => Ok((None, None)),
            Some(_) => match map_file(file) {
                Err(ReadError::Parquet { path, source }) if source.is_damage() => {
                    Ok((None, Some(Skipped { file: path, line: 0, reason: LineError::File(source.to_string()) })))
                }
                other => Ok((other?, None)),
            },
        })
        .collect();
    let mut maps = Vec::with_capacity(files.len());
    let mut damaged = Vec::new();
    for one in each {
        let (map, skipped) = one?;
        maps.push(map);
        damaged.extend(skipped);
    }
    Ok((maps, damaged))
}

/// Lines shorter than this cannot hold a call (`{"ts":0,"pid":0,"func":""}`
/// is 26 bytes, and no function's name is empty): they get no slot, so
/// slots are bounded by the bytes (a file of newlines reserves nothing).
const MIN_CALL_BYTES: usize = 26;

/// The lines of a chunk long enough to hold a call ([`MIN_CALL_BYTES`]).
fn line_count(chunk: &[u8]) -> usize {
    let body = chunk.strip_suffix(b"\n").unwrap_or(chunk);
    let mut start = 0;
    let mut slots = 0;
    for end in memchr::memchr_iter(b'\n', body).chain(std::iter::once(body.len())) {
        slots += usize::from(end - start >= MIN_CALL_BYTES);
        start = end + 1;
    }
    slots
}

/// Where a file's calls go on the common axis, and which of them are kept.
#[derive(Clone, Copy, Debug)]
struct Placement {
    shift_ms: f64,
    /// The file's own `ts` kept, `[lo, hi]` ([`TraceFilter::window_ms`]).
    keep: (f64, f64),
}

struct ChunkOut {
    lines: u64,
    /// Calls read but outside the kept window (holes, not bad lines).
    filtered: u64,
    tally: Tally,
    /// (line index within the chunk, reason), the first [`SKIPPED_KEPT`].
    bad: Vec<(u64, LineError)>,
    bad_total: u64,
    /// Bad lines given a slot.
    holes: usize,
}

/// Parses each line of `chunk` into its slot (a hole for an empty or bad
/// line), so that every slot is initialized, and sorts them by time (with
/// `keys` as scratch).
fn parse_chunk(
    chunk: &[u8],
    place: Placement,
    slots: &mut [MaybeUninit<Call>],
    keys: &mut Vec<(u64, u32)>,
) -> ChunkOut {
    let mut out = ChunkOut { lines: 0, filtered: 0, tally: Tally::default(), bad: Vec::new(), bad_total: 0, holes: 0 };
    let mut names = fast::Interner::default();
    let body = chunk.strip_suffix(b"\n").unwrap_or(chunk);
    // memchr finds the newlines with SIMD; a byte-by-byte split is slower
    // than parsing the line.
    let ends = memchr::memchr_iter(b'\n', body).chain(std::iter::once(body.len()));
    let mut start = 0;
    keys.clear();
    let mut free = slots.iter_mut();
    for end in ends {
        let line = &body[start..end];
        start = end + 1;
        out.lines += 1;
        if line.len() < MIN_CALL_BYTES {
            if !line.is_empty() {
                let reason = parse_line(line).err().unwrap_or(LineError::Json("too short to be a call".into()));
                count_bad(&mut out, reason);
            }
            continue;
        }
        let Some(slot) = free.next() else { break };
        // Parsed in place: the slot is the call's only home.
        let call = slot.write(Call::hole());
        if !fast::parse_into(line, &mut names, call) {
            match parse_line(line) {
                Ok(parsed) => *call = parsed,
                Err(reason) => {
                    *call = Call::hole();
                    out.holes += 1;
                    count_bad(&mut out, reason);
                }
            }
        }
        if !call.is_hole() {
            if place.keep.0 <= call.ts_ms && call.ts_ms <= place.keep.1 {
                out.tally.add(call);
                call.ts_ms += place.shift_ms;
            } else {
                *call = Call::hole();
                out.holes += 1;
                out.filtered += 1;
            }
        }
        // Below 2^32: the caller checked the total.
        keys.push((time_order(call.ts_ms), keys.len() as u32));
    }
    assert_eq!(keys.len(), slots.len(), "a chunk's lines were counted before it was parsed");
    sort_chunk(slots, keys);
    out
}

/// Counts the chunk's current line as bad.
fn count_bad(out: &mut ChunkOut, reason: LineError) {
    if out.bad.len() < SKIPPED_KEPT {
        out.bad.push((out.lines - 1, reason));
    }
    out.bad_total += 1;
}

/// A trace file's bytes: mapped, or read for a `.partial` file, which its
/// writer may still cut back (a mapping would then fault).
pub(crate) enum FileBytes {
    Mapped(memmap2::Mmap),
    Read(Vec<u8>),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(map) => map,
            FileBytes::Read(bytes) => bytes,
        }
    }
}

/// The file's bytes, or `None` for an empty file (which cannot be mapped).
pub(crate) fn map_file(path: &Path) -> Result<Option<FileBytes>, ReadError> {
    let io = |source| ReadError::Io { path: path.to_path_buf(), source };
    let file = crate::format::open::open_session_file(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        return Ok(None);
    }
    if path.file_name().and_then(|n| n.to_str()).is_some_and(crate::format::names::is_parquet_file) {
        let lines = crate::format::parquet::read_as_lines(file)
            .map_err(|source| ReadError::Parquet { path: path.to_path_buf(), source })?;
        return Ok(Some(FileBytes::Read(lines)));
    }
    if super::discover::is_partial_trace(path) {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(file, len), &mut bytes).map_err(io)?;
        return Ok(Some(FileBytes::Read(bytes)));
    }
    // SAFETY: trace files are closed (renamed from .partial) before anyone
    // reads them; a file truncated underneath would only yield bad lines.
    let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }.map_err(io)?;
    Ok(Some(FileBytes::Mapped(map)))
}

/// Splits a file into chunks of about [`CHUNK_BYTES`] that end at a newline,
/// for parallel parsing (also used by the Chrome export).
pub fn chunks(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() > CHUNK_BYTES {
        let cut = memchr::memchr(b'\n', &rest[CHUNK_BYTES..]).map_or(rest.len(), |i| CHUNK_BYTES + i + 1);
        let (head, tail) = rest.split_at(cut);
        out.push(head);
        rest = tail;
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::trace::discover::discover;

    #[test]
    fn skips_and_counts_bad_lines_with_their_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("trace_00001_x.jsonl");
        let good = r#"{"ts":1.5,"pid":1,"tid":1,"type":"cuda_api","func":"cuInit","phase":"entry","dur_us":1,"ret":0,"args":{"flags":0}}"#;
        std::fs::write(&f, format!("{good}\nnot json\n{good}\n{{\"ts\":2,\"pid\"")).unwrap();
        let loaded = read(&discover(&[dir.path().to_path_buf()]).unwrap()).unwrap();
        assert_eq!(loaded.calls.len(), 2);
        assert_eq!(loaded.skipped_total, 2);
        assert_eq!(loaded.skipped.iter().map(|s| s.line).collect::<Vec<_>>(), [2, 4]);
    }

    #[test]
    fn empty_dir_and_non_trace_file_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = discover(&[dir.path().to_path_buf()]).unwrap_err().to_string();
        assert!(e.contains("no trace files"), "{e}");
        let f = dir.path().join("notes.txt");
        std::fs::write(&f, "hi").unwrap();
        let e = discover(&[f]).unwrap_err().to_string();
        assert!(e.contains("not a trace file"), "{e}");
    }

    #[test]
    fn calls_come_back_sorted_by_time_with_ties_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("trace_00001_x.jsonl");
        let line = |ts: f64, tid: u32| {
            format!(
                r#"{{"ts":{ts},"pid":1,"tid":{tid},"type":"cuda_api","func":"cuInit","phase":"entry","dur_us":1,"ret":0,"args":{{}}}}"#
            )
        };
        let body = [line(3.0, 1), line(1.0, 2), line(2.0, 3), line(1.0, 4), line(0.5, 5)].join("\n");
        std::fs::write(&f, body).unwrap();
        let loaded = read(&[f]).unwrap();
        assert_eq!(loaded.calls.iter().map(|c| c.tid).collect::<Vec<_>>(), [5, 2, 4, 3, 1]);
    }

    #[test]
    fn a_session_left_in_partial_files_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let good = r#"{"ts":1.5,"pid":1,"tid":1,"type":"cuda_api","func":"cuInit","phase":"entry","dur_us":1,"ret":0,"args":{}}"#;
        std::fs::write(dir.path().join(".trace_00001_x.jsonl.partial"), format!("{good}\n{good}\n{{\"ts\"")).unwrap();
        std::fs::write(dir.path().join(".metadata.json.partial"), "{").unwrap();
        let files = discover(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(files, [dir.path().join(".trace_00001_x.jsonl.partial")]);
        let loaded = read(&files).unwrap();
        assert_eq!((loaded.calls.len(), loaded.skipped_total), (2, 1), "the cut last line is skipped");
        assert_eq!(discover(&files).unwrap(), files, "a .partial trace file may be named directly");
    }

    #[test]
    fn chunks_end_at_newlines() {
        let data = "a\n".repeat(CHUNK_BYTES);
        let parts = chunks(data.as_bytes());
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| p.ends_with(b"\n")));
        assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), data.len());
    }
}
