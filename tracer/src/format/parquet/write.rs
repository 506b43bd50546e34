//! Writes rows into one Parquet file: buffered, sorted by `ts_ns`, written
//! a row group at a time (memory stays bounded however long a file stays
//! open), zstd-compressed, names dictionary-encoded, the schema version and
//! the session's start in the key-value metadata.

use std::{
    collections::HashMap,
    fs::File,
    sync::{Arc, LazyLock},
};

use ::parquet::{
    arrow::ArrowWriter,
    basic::{Compression, ZstdLevel},
    file::{
        metadata::{KeyValue, SortingColumn},
        properties::WriterProperties,
    },
};
use arrow_array::{
    builder::StringDictionaryBuilder, types::Int32Type, ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampNanosecondArray,
};

use super::{
    row::Row,
    schema::{arrow_schema, FileContext, SCHEMA_VERSION, SCHEMA_VERSION_KEY, START_UNIX_NS_KEY},
};

/// Why a Parquet file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ParquetWriteError {
    #[error("Parquet: {0}")]
    Parquet(#[from] ::parquet::errors::ParquetError),
    #[error("Arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
}

/// Rows per row group: a file within one group is sorted as a whole; a
/// longer one is sorted within each group (calls arrive by their end, so
/// only calls that outlast a group's span cross it).
pub const ROW_GROUP_ROWS: usize = 32 * 1024;

/// The zstd level: 3 is zstd's own default, fast enough for the daemon.
const ZSTD_LEVEL: i32 = 3;

/// One Parquet file being written.
pub struct ParquetFileWriter {
    writer: ArrowWriter<File>,
    ctx: FileContext,
    rows: Vec<Row>,
    written: u64,
}

impl ParquetFileWriter {
    /// Starts a file in `file` for calls traced in `ctx`.
    pub fn new(file: File, ctx: FileContext) -> Result<Self, ParquetWriteError> {
        Self::with_version(file, ctx, &SCHEMA_VERSION.to_string())
    }

    /// [`Self::new`] stamped with another schema version (tests of readers).
    pub(super) fn with_version(file: File, ctx: FileContext, version: &str) -> Result<Self, ParquetWriteError> {
        let sorted_by_ts = SortingColumn { column_idx: 1, descending: false, nulls_first: false };
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL)?))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_sorting_columns(Some(vec![sorted_by_ts]))
            .set_key_value_metadata(Some(vec![
                KeyValue::new(SCHEMA_VERSION_KEY.into(), version.to_string()),
                KeyValue::new(START_UNIX_NS_KEY.into(), ctx.start_unix_ns.to_string()),
            ]))
            .build();
        let writer = ArrowWriter::try_new(file, arrow_schema(), Some(props))?;
        Ok(Self { writer, ctx, rows: Vec::with_capacity(1024), written: 0 })
    }

    /// Adds a row; a full group is written out.
    pub fn push(&mut self, row: Row) -> Result<(), ParquetWriteError> {
        self.rows.push(row);
        if self.rows.len() >= ROW_GROUP_ROWS {
            self.write_group()?;
        }
        Ok(())
    }

    /// Rows pushed so far.
    pub fn rows(&self) -> u64 {
        self.written + self.rows.len() as u64
    }

    /// Writes what is buffered and the footer; returns the file's rows.
    pub fn finish(mut self) -> Result<(u64, File), ParquetWriteError> {
        self.write_group()?;
        let rows = self.written;
        let file = self.writer.into_inner()?;
        Ok((rows, file))
    }

    fn write_group(&mut self) -> Result<(), ParquetWriteError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let mut rows = std::mem::take(&mut self.rows);
        rows.sort_by_key(|r| r.ts_ns);
        let batch = batch(&rows, &self.ctx)?;
        self.writer.write(&batch)?;
        self.writer.flush()?;
        self.written += rows.len() as u64;
        rows.clear();
        self.rows = rows;
        Ok(())
    }
}

/// Each role's name: its variant's, in lowercase (`Role::ALL` is in
/// declaration order, so a role's index is its discriminant).
static ROLE_NAMES: LazyLock<Vec<String>> =
    LazyLock::new(|| tracer_common::funcs::Role::ALL.iter().map(|r| format!("{r:?}").to_ascii_lowercase()).collect());

/// The role and group names of each function of `rows` (none for a
/// function the FUNCS table lacks), looked up once per name.
fn roles_and_groups(rows: &[Row]) -> (ArrayRef, ArrayRef) {
    let mut seen: HashMap<&str, Option<(&'static str, &'static str)>> = HashMap::new();
    let mut pairs = Vec::with_capacity(rows.len());
    for r in rows {
        let pair = *seen.entry(r.function.as_str()).or_insert_with(|| {
            let (_, spec) = tracer_common::funcs::by_name(&r.function)?;
            Some((ROLE_NAMES.get(spec.role as usize)?.as_str(), spec.group.name()))
        });
        pairs.push(pair);
    }
    (names(pairs.iter().map(|p| p.map(|p| p.0))), names(pairs.iter().map(|p| p.map(|p| p.1))))
}

/// A dictionary column of `values` (a name per row, or none).
fn names<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    let mut b = StringDictionaryBuilder::<Int32Type>::new();
    values.for_each(|v| b.append_option(v));
    Arc::new(b.finish())
}

fn i64s(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(Int64Array::from_iter(values))
}

fn i32s(values: impl Iterator<Item = Option<i32>>) -> ArrayRef {
    Arc::new(Int32Array::from_iter(values))
}

/// The rows as one record batch of [`arrow_schema`].
fn batch(rows: &[Row], ctx: &FileContext) -> Result<RecordBatch, ParquetWriteError> {
    let n = rows.len();
    let time = TimestampNanosecondArray::from_iter_values(rows.iter().map(|r| ctx.start_unix_ns + r.ts_ns));
    let dim = |pick: fn(&Row) -> Option<[i32; 3]>, i: usize| i32s(rows.iter().map(move |r| pick(r).map(|d| d[i])));
    let json = |pick: fn(&Row) -> Option<&str>| -> ArrayRef { Arc::new(StringArray::from_iter(rows.iter().map(pick))) };
    let constant = |v: Option<&str>| names(std::iter::repeat_n(v, n));
    let (roles, groups) = roles_and_groups(rows);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(time.with_timezone("UTC")),
        i64s(rows.iter().map(|r| Some(r.ts_ns))),
        i64s(rows.iter().map(|r| Some(r.dur_ns))),
        i32s(rows.iter().map(|r| Some(r.pid))),
        i32s(rows.iter().map(|r| Some(r.tid))),
        i32s(rows.iter().map(|r| Some(r.ret))),
        names(rows.iter().map(|r| Some(r.layer.as_str()))),
        names(rows.iter().map(|r| Some(r.function.as_str()))),
        roles,
        groups,
        names(rows.iter().map(|r| r.error.as_deref())),
        names(rows.iter().map(|r| r.caller.as_deref())),
        names(rows.iter().map(|r| r.kernel.as_deref())),
        i64s(rows.iter().map(|r| r.bytes)),
        names(rows.iter().map(|r| r.direction.as_deref())),
        dim(|r| r.grid, 0),
        dim(|r| r.grid, 1),
        dim(|r| r.grid, 2),
        dim(|r| r.block, 0),
        dim(|r| r.block, 1),
        dim(|r| r.block, 2),
        i64s(rows.iter().map(|r| r.shared_mem)),
        i64s(rows.iter().map(|r| r.stream)),
        i64s(rows.iter().map(|r| r.graph_exec)),
        i64s(rows.iter().map(|r| r.dptr)),
        json(|r| r.args.as_deref()),
        json(|r| r.extra.as_deref()),
        constant(Some(&ctx.node)),
        constant(ctx.pod.as_deref()),
        constant(ctx.namespace.as_deref()),
        constant(Some(&ctx.session)),
    ];
    Ok(RecordBatch::try_new(arrow_schema(), columns)?)
}
