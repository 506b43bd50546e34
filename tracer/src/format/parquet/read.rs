//! Reads a Parquet trace file back as the JSONL lines it holds, so every
//! analysis reads Parquet through the same line readers as JSONL. A file
//! of an unknown schema version is refused (naming the version); one that
//! cannot be decoded (truncated, corrupt) or claims more than the caps of
//! [`ReadLimits`] is an error the caller skips and counts.

use std::fs::File;

use ::parquet::arrow::{arrow_reader::ParquetRecordBatchReaderBuilder, ProjectionMask};
use arrow_array::{
    cast::AsArray,
    types::{Int32Type, Int64Type},
    Array, ArrayAccessor, ArrayRef, RecordBatch,
};

use super::{
    limits::{check_metadata, check_tail, within, ReadLimits, BATCH_ROWS},
    row::Row,
    schema::{arrow_schema, col, SCHEMA_VERSION, SCHEMA_VERSION_KEY, START_UNIX_NS_KEY},
};

/// Why a Parquet file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ParquetReadError {
    #[error(
        "Parquet schema version {found} (key {SCHEMA_VERSION_KEY}): this tracer reads version {SCHEMA_VERSION}; \
         read it with the tracer that wrote it, or a newer one"
    )]
    Version { found: String },
    #[error("not a cuda-tracer Parquet file: no {SCHEMA_VERSION_KEY} in its metadata")]
    NoVersion,
    #[error("unreadable Parquet file (truncated or corrupt): {0}")]
    Unreadable(String),
    #[error("Parquet file skipped: its {what} ({found}) is over the cap of {cap} (a crafted or foreign file?)")]
    OverCap { what: &'static str, found: u64, cap: u64 },
}

impl ParquetReadError {
    /// Whether the file is damaged (skipped and counted), rather than of
    /// another version (refused).
    pub fn is_damage(&self) -> bool {
        matches!(self, ParquetReadError::Unreadable(_) | ParquetReadError::OverCap { .. })
    }
}

fn damage(e: impl std::fmt::Display) -> ParquetReadError {
    ParquetReadError::Unreadable(e.to_string())
}

/// Runs a decode of an untrusted file, a panic of the decoder counted as
/// damage: the parquet crate asserts on some malformed encodings (a
/// varint of more than ten bytes in an RLE run panics in release builds
/// too, found by the `parquet_file` fuzz target), and one crafted object
/// in a lake must be skipped and counted, not end the report.
pub fn guarded<T>(decode: impl FnOnce() -> Result<T, ParquetReadError>) -> Result<T, ParquetReadError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(ParquetReadError::Unreadable(format!("the Parquet decoder failed on it: {what}")))
    })
}

/// The file's rows as JSONL lines, in file order, within the default caps.
pub fn read_as_lines(file: File) -> Result<Vec<u8>, ParquetReadError> {
    read_as_lines_within(file, &ReadLimits::default())
}

/// The file's footer decoded once its length is within `limits`, then
/// checked against them (before any column is read).
fn open_checked(file: File, limits: &ReadLimits) -> Result<ParquetRecordBatchReaderBuilder<File>, ParquetReadError> {
    let data_end = check_tail(&file, limits)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(damage)?;
    check_metadata(builder.metadata(), data_end, limits)?;
    Ok(builder)
}

/// [`read_as_lines`] within `limits`: the footer's length before it is
/// decoded, what it claims before any column is read, the schema of the
/// columns read, and the decoded bytes of each batch and of the lines.
pub fn read_as_lines_within(file: File, limits: &ReadLimits) -> Result<Vec<u8>, ParquetReadError> {
    guarded(|| lines_of(file, limits))
}

fn lines_of(file: File, limits: &ReadLimits) -> Result<Vec<u8>, ParquetReadError> {
    let builder = open_versioned(file, limits)?;
    // Only the columns a row is made of are decoded.
    let read = I64_COLUMNS.iter().chain(&I32_COLUMNS).chain(&STRING_COLUMNS).copied();
    let mask = ProjectionMask::columns(builder.parquet_schema(), read);
    let mut out = Vec::new();
    for batch in builder.with_projection(mask).with_batch_size(BATCH_ROWS).build().map_err(damage)? {
        let batch = batch.map_err(damage)?;
        within("decoded bytes of a batch", batch.get_array_memory_size() as u64, limits.batch_bytes)?;
        let columns = Columns::of(&batch)?;
        for i in 0..batch.num_rows() {
            columns.row(i).write_line(&mut out);
        }
        within("decoded bytes of the file", out.len() as u64, limits.file_bytes)?;
    }
    Ok(out)
}

/// Every column a row is made of that the file has is of the type this
/// version writes (strings plain or dictionary-encoded); the required
/// ones are there.
fn check_schema(file: &arrow_schema::Schema) -> Result<(), ParquetReadError> {
    use arrow_schema::DataType;
    let ours = arrow_schema();
    for name in I64_COLUMNS.iter().chain(&I32_COLUMNS).chain(&STRING_COLUMNS) {
        let Ok(found) = file.field_with_name(name) else { continue };
        let want = ours.field_with_name(name).map(|f| f.data_type().clone()).map_err(damage)?;
        let string = matches!(want, DataType::Utf8 | DataType::Dictionary(..));
        let ok = match found.data_type() {
            DataType::Utf8 => string,
            DataType::Dictionary(k, v) => string && **k == DataType::Int32 && **v == DataType::Utf8,
            other => *other == want,
        };
        if !ok {
            return Err(damage(format!("column {name:?} is {}, not {want}", found.data_type())));
        }
    }
    match REQUIRED.iter().find(|c| file.field_with_name(c).is_err()) {
        Some(missing) => Err(damage(format!("no column {missing:?}"))),
        None => Ok(()),
    }
}

/// The session's start (Unix ns) a file's metadata records: what puts a
/// lake object, which has no `metadata.json` beside it, on the wall clock.
pub fn start_unix_ns(file: File) -> Option<u128> {
    let builder = guarded(|| open_checked(file, &ReadLimits::default())).ok()?;
    let kv = builder.metadata().file_metadata().key_value_metadata()?;
    let value = kv.iter().find(|e| e.key == START_UNIX_NS_KEY)?.value.as_deref()?;
    value.parse().ok().filter(|&ns: &u128| ns > 0)
}

/// A file of this tracer's schema version whose footer and column types
/// passed the checks of `limits`, ready to read (any projection).
pub fn open_versioned(
    file: File,
    limits: &ReadLimits,
) -> Result<ParquetRecordBatchReaderBuilder<File>, ParquetReadError> {
    let builder = open_checked(file, limits)?;
    let kv = builder.metadata().file_metadata().key_value_metadata();
    let version = kv.and_then(|kv| kv.iter().find(|e| e.key == SCHEMA_VERSION_KEY)).and_then(|e| e.value.clone());
    match version {
        None => return Err(ParquetReadError::NoVersion),
        Some(v) if v != SCHEMA_VERSION.to_string() => return Err(ParquetReadError::Version { found: v }),
        Some(_) => {}
    }
    check_schema(builder.schema())?;
    Ok(builder)
}

/// A string column, plain or dictionary-encoded.
pub enum Strings<'a> {
    Plain(&'a arrow_array::StringArray),
    Dict(arrow_array::TypedDictionaryArray<'a, Int32Type, arrow_array::StringArray>),
    Absent,
}

impl<'a> Strings<'a> {
    /// The column `name` of `batch` (absent, or not a string column: no values).
    pub fn of(batch: &'a RecordBatch, name: &str) -> Self {
        batch.column_by_name(name).map_or(Strings::Absent, strings)
    }

    /// Row `i`'s value, borrowed.
    pub fn str(&self, i: usize) -> Option<&'a str> {
        match self {
            Strings::Plain(a) => a.is_valid(i).then(|| a.value(i)),
            Strings::Dict(d) => d.is_valid(i).then(|| d.value(i)),
            Strings::Absent => None,
        }
    }

    fn get(&self, i: usize) -> Option<String> {
        self.str(i).map(str::to_string)
    }
}

/// The columns a row is made of, looked up by name.
struct Columns<'a> {
    i64s: [Option<&'a arrow_array::Int64Array>; 7],
    i32s: [Option<&'a arrow_array::Int32Array>; 9],
    strings: [Strings<'a>; 8],
}

const I64_COLUMNS: [&str; 7] =
    [col::TS_NS, col::DUR_NS, col::BYTES, col::SHARED_MEM, col::STREAM, col::GRAPH_EXEC, col::DPTR];
const I32_COLUMNS: [&str; 9] =
    [col::PID, col::TID, col::RET, col::GRID_X, col::GRID_Y, col::GRID_Z, col::BLOCK_X, col::BLOCK_Y, col::BLOCK_Z];
const STRING_COLUMNS: [&str; 8] =
    [col::LAYER, col::FUNCTION, col::ERROR, col::CALLER, col::KERNEL, col::DIRECTION, col::ARGS, col::EXTRA];
/// Columns every row has.
const REQUIRED: [&str; 7] = [col::TS_NS, col::DUR_NS, col::PID, col::TID, col::RET, col::LAYER, col::FUNCTION];

impl<'a> Columns<'a> {
    fn of(batch: &'a RecordBatch) -> Result<Self, ParquetReadError> {
        if let Some(missing) = REQUIRED.iter().find(|c| batch.column_by_name(c).is_none()) {
            return Err(damage(format!("no column {missing:?}")));
        }
        let get = |name: &str| batch.column_by_name(name);
        Ok(Columns {
            i64s: I64_COLUMNS.map(|c| get(c).and_then(|a| a.as_primitive_opt::<Int64Type>())),
            i32s: I32_COLUMNS.map(|c| get(c).and_then(|a| a.as_primitive_opt::<Int32Type>())),
            strings: STRING_COLUMNS.map(|c| get(c).map_or(Strings::Absent, strings)),
        })
    }

    fn row(&self, i: usize) -> Row {
        let long = |k: usize| self.i64s[k].filter(|a| a.is_valid(i)).map(|a| a.value(i));
        let int = |k: usize| self.i32s[k].filter(|a| a.is_valid(i)).map(|a| a.value(i));
        let dim3 = |k: usize| Some([int(k)?, int(k + 1)?, int(k + 2)?]);
        let s = |k: usize| self.strings[k].get(i);
        Row {
            ts_ns: long(0).unwrap_or_default(),
            dur_ns: long(1).unwrap_or_default(),
            pid: int(0).unwrap_or_default(),
            tid: int(1).unwrap_or_default(),
            ret: int(2).unwrap_or_default(),
            layer: s(0).unwrap_or_default(),
            function: s(1).unwrap_or_default(),
            error: s(2),
            caller: s(3),
            kernel: s(4),
            bytes: long(2),
            direction: s(5),
            grid: dim3(3),
            block: dim3(6),
            shared_mem: long(3),
            stream: long(4),
            graph_exec: long(5),
            dptr: long(6),
            args: s(6),
            extra: s(7),
        }
    }
}

fn strings(a: &ArrayRef) -> Strings<'_> {
    if let Some(plain) = a.as_string_opt::<i32>() {
        return Strings::Plain(plain);
    }
    match a.as_dictionary_opt::<Int32Type>().and_then(|d| d.downcast_dict::<arrow_array::StringArray>()) {
        Some(dict) => Strings::Dict(dict),
        None => Strings::Absent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::parquet::{FileContext, ParquetFileWriter};

    const LINES: &str = concat!(
        r#"{"ts":2.000000,"pid":7,"tid":8,"type":"cuda_runtime","func":"cudaMalloc","phase":"entry","dur_us":3.000,"ret":0,"args":{"bytes":4096,"dptr":"0x7f00"}}"#,
        "\n",
        r#"{"ts":1.000000,"pid":7,"tid":8,"type":"cuda_driver","func":"cuLaunchKernel","phase":"entry","dur_us":1.500,"ret":0,"args":{"f":"0x50","grid":[1,2,3],"block":[4,5,6],"shared_mem":0,"stream":"0x0","kernel":"k"}}"#,
        "\n",
    );

    fn write(dir: &std::path::Path, version: &str) -> std::path::PathBuf {
        let path = dir.join("t.parquet");
        let ctx = FileContext { node: "n1".into(), session: "s1".into(), start_unix_ns: 5, ..Default::default() };
        let mut w = ParquetFileWriter::with_version(File::create(&path).unwrap(), ctx, version).unwrap();
        for line in LINES.lines() {
            w.push(Row::from_line(line.as_bytes()).unwrap()).unwrap();
        }
        assert_eq!(w.finish().unwrap().0, 2);
        path
    }

    fn values(bytes: &[u8]) -> Vec<serde_json::Value> {
        bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect()
    }

    #[test]
    fn rows_come_back_as_the_lines_sorted_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "1");
        let lines = read_as_lines(File::open(&path).unwrap()).unwrap();
        let mut want = values(LINES.as_bytes());
        want.reverse();
        assert_eq!(values(&lines), want);
        assert_eq!(start_unix_ns(File::open(&path).unwrap()), Some(5), "the session's start, for alignment");
    }

    #[test]
    fn another_schema_version_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_as_lines(File::open(write(dir.path(), "2")).unwrap()).unwrap_err();
        assert!(!err.is_damage() && err.to_string().contains("schema version 2"), "{err}");
    }

    #[test]
    fn a_file_the_decoder_panics_on_is_damage() {
        // Found by the parquet_file fuzz target: an RLE run whose varint
        // is longer than ten bytes makes the parquet crate assert.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/parquet-rle-varint-panic.parquet");
        let err = read_as_lines(File::open(path).unwrap()).unwrap_err();
        assert!(err.is_damage() && err.to_string().contains("decoder failed"), "{err}");
    }

    #[test]
    fn a_truncated_file_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "1");
        let len = std::fs::metadata(&path).unwrap().len();
        File::options().write(true).open(&path).unwrap().set_len(len / 2).unwrap();
        let err = read_as_lines(File::open(&path).unwrap()).unwrap_err();
        assert!(err.is_damage(), "{err}");
    }
}
