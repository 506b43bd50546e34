//! The caps a Parquet file from a lake or a synced bucket (untrusted) is
//! checked against before the decoder allocates what it claims: the
//! footer's length (read from the file's last 8 bytes, before the footer
//! is decoded), then from the decoded footer the row groups, the columns,
//! the rows, every column chunk's byte range (inside the file's data) and
//! the decoded bytes per row group and per file; while reading, the
//! decoded bytes of each batch and of the lines made so far.

use std::{fs::File, os::unix::fs::FileExt};

use ::parquet::file::metadata::ParquetMetaData;

use super::read::ParquetReadError;

/// What a file may claim before it is skipped (docs/SECURITY.md). The
/// defaults are far above what the tracer writes (31 columns, row groups
/// of 32 768 rows, a footer of a few hundred KiB for a million rows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimits {
    /// Bytes of the footer (the file's metadata).
    pub footer_bytes: u64,
    pub row_groups: u64,
    /// Leaf columns of the file's schema.
    pub columns: u64,
    /// Rows in the file.
    pub rows: u64,
    /// Decoded bytes of one row group (its column chunks' uncompressed sizes).
    pub group_bytes: u64,
    /// Decoded bytes of one batch of [`BATCH_ROWS`] rows, once decoded.
    pub batch_bytes: u64,
    /// Decoded bytes of the whole file, as claimed and as lines made.
    pub file_bytes: u64,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            footer_bytes: 8 << 20,
            row_groups: 100_000,
            columns: 1024,
            rows: 1 << 31,
            group_bytes: 1 << 30,
            batch_bytes: 512 << 20,
            file_bytes: 16 << 30,
        }
    }
}

/// Rows per decoded batch.
pub const BATCH_ROWS: usize = 8192;

/// `found` within `cap`, or the error naming both.
pub fn within(what: &'static str, found: u64, cap: u64) -> Result<(), ParquetReadError> {
    if found > cap {
        return Err(ParquetReadError::OverCap { what, found, cap });
    }
    Ok(())
}

fn damage(what: String) -> ParquetReadError {
    ParquetReadError::Unreadable(what)
}

/// Checks the file's tail (footer length and magic) and returns where its
/// footer starts: the end of the data its column chunks may point into.
pub fn check_tail(file: &File, limits: &ReadLimits) -> Result<u64, ParquetReadError> {
    let len = file.metadata().map_err(|e| damage(e.to_string()))?.len();
    if len < 12 {
        return Err(damage(format!("{len} bytes: shorter than a Parquet file's magic and footer")));
    }
    let mut tail = [0u8; 8];
    file.read_exact_at(&mut tail, len - 8).map_err(|e| damage(e.to_string()))?;
    if &tail[4..] != b"PAR1" {
        return Err(damage("no PAR1 magic at the end (truncated, or an encrypted footer)".into()));
    }
    let footer = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    within("footer length (bytes)", footer, limits.footer_bytes)?;
    if footer + 12 > len {
        return Err(damage(format!("footer length {footer} reaches before the file's start ({len} bytes)")));
    }
    Ok(len - 8 - footer)
}

/// Checks what the decoded footer claims against `limits`, and that every
/// column chunk lies in the file's data (before `data_end`).
pub fn check_metadata(meta: &ParquetMetaData, data_end: u64, limits: &ReadLimits) -> Result<(), ParquetReadError> {
    let groups = meta.row_groups();
    within("row groups", groups.len() as u64, limits.row_groups)?;
    within("columns", meta.file_metadata().schema_descr().num_columns() as u64, limits.columns)?;
    let (mut rows, mut bytes) = (0u64, 0u64);
    for (i, group) in groups.iter().enumerate() {
        let n = u64::try_from(group.num_rows()).map_err(|_| damage(format!("row group {i}: negative rows")))?;
        rows = rows.saturating_add(n);
        let mut group_bytes = 0u64;
        for chunk in group.columns() {
            // Not `byte_range()`: it asserts, and these numbers are the file's.
            let start = chunk.dictionary_page_offset().unwrap_or(chunk.data_page_offset());
            let (start, len, decoded) = match (
                u64::try_from(start),
                u64::try_from(chunk.compressed_size()),
                u64::try_from(chunk.uncompressed_size()),
            ) {
                (Ok(s), Ok(l), Ok(d)) => (s, l, d),
                _ => {
                    return Err(damage(format!(
                        "row group {i}, column {}: a negative offset or size",
                        chunk.column_path()
                    )))
                }
            };
            if start.checked_add(len).is_none_or(|end| end > data_end) {
                return Err(damage(format!(
                    "row group {i}, column {}: bytes {start}..{start}+{len} past the data's end at {data_end}",
                    chunk.column_path()
                )));
            }
            group_bytes = group_bytes.saturating_add(decoded);
        }
        within("decoded bytes of a row group", group_bytes, limits.group_bytes)?;
        bytes = bytes.saturating_add(group_bytes);
    }
    within("rows", rows, limits.rows)?;
    within("decoded bytes of the file", bytes, limits.file_bytes)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::format::parquet::{read_as_lines, read_as_lines_within, FileContext, ParquetFileWriter, Row};

    fn line(i: usize, args: &str) -> String {
        format!(
            r#"{{"ts":{i}.000000,"pid":7,"tid":8,"type":"cuda_runtime","func":"cudaMalloc","phase":"entry","dur_us":3.000,"ret":0,"args":{{"bytes":4096,"dptr":"0x7f00"{args}}}}}"#
        )
    }

    /// A file of `rows` calls, `group` rows per row group when given.
    fn write(dir: &Path, rows: usize, args: &str) -> PathBuf {
        let path = dir.join("t.parquet");
        let ctx = FileContext { node: "n1".into(), session: "s1".into(), ..Default::default() };
        let mut w = ParquetFileWriter::new(File::create(&path).unwrap(), ctx).unwrap();
        for i in 0..rows {
            w.push(Row::from_line(line(i, args).as_bytes()).unwrap()).unwrap();
        }
        w.finish().unwrap();
        path
    }

    fn skipped(path: &Path, limits: &ReadLimits) -> String {
        let err = read_as_lines_within(File::open(path).unwrap(), limits).unwrap_err();
        assert!(err.is_damage(), "skipped and counted, not refused: {err}");
        err.to_string()
    }

    #[test]
    fn a_huge_footer_length_is_refused_before_the_footer_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), 3, "");
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 8..n - 4].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let err = skipped(&path, &ReadLimits::default());
        assert!(err.contains("footer length (bytes) (4294967280) is over the cap of 8388608"), "{err}");
        // Within the cap but longer than the file: damage, named.
        bytes[n - 8..n - 4].copy_from_slice(&(n as u32).to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        assert!(skipped(&path, &ReadLimits::default()).contains("before the file's start"));
    }

    /// A footer (compact Thrift) of one root schema element whose row
    /// group list claims `groups` entries it does not hold.
    fn footer_claiming(groups: u32) -> Vec<u8> {
        let mut f = vec![0x15, 0x02, 0x19, 0x1c, 0x48, 6];
        f.extend(b"schema");
        f.extend([0x15, 0x00, 0x00, 0x16, 0x00, 0x19, 0xfc]);
        let mut n = groups;
        while n >= 0x80 {
            f.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        f.push(n as u8);
        f
    }

    #[test]
    fn a_footer_claiming_millions_of_row_groups_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let footer = footer_claiming(5_000_000);
        let mut bytes = b"PAR1".to_vec();
        bytes.extend(&footer);
        bytes.extend((footer.len() as u32).to_le_bytes());
        bytes.extend(b"PAR1");
        std::fs::write(&path, &bytes).unwrap();
        let err = skipped(&path, &ReadLimits::default());
        assert!(err.contains("unreadable"), "{err}");
        // Row groups it does hold, over the cap: skipped, the cap named.
        let path = write(dir.path(), 3, "");
        let limits = ReadLimits { row_groups: 0, ..Default::default() };
        assert!(skipped(&path, &limits).contains("row groups (1) is over the cap of 0"));
        let limits = ReadLimits { columns: 30, ..Default::default() };
        assert!(skipped(&path, &limits).contains("columns (31) is over the cap of 30"));
        let limits = ReadLimits { rows: 2, ..Default::default() };
        assert!(skipped(&path, &limits).contains("rows (3) is over the cap of 2"));
    }

    #[test]
    fn a_column_chunk_past_the_end_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), 3, "");
        let bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        let footer = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().unwrap()) as usize;
        // The data pages cut out: every chunk's offset now lies past them.
        let mut cut = b"PAR1".to_vec();
        cut.extend(&bytes[n - 8 - footer..]);
        std::fs::write(&path, &cut).unwrap();
        let err = skipped(&path, &ReadLimits::default());
        assert!(err.contains("past the data's end at 4"), "{err}");
    }

    #[test]
    fn a_huge_string_value_is_skipped_by_its_decoded_size() {
        let dir = tempfile::tempdir().unwrap();
        let huge = format!(r#","note":"{}""#, "x".repeat(2 << 20));
        let path = write(dir.path(), 2, &huge);
        let limits = ReadLimits { group_bytes: 1 << 20, ..Default::default() };
        let err = skipped(&path, &limits);
        assert!(err.contains("decoded bytes of a row group") && err.contains("over the cap of 1048576"), "{err}");
        // Past the row group's claim: each batch and the lines made are capped too.
        let limits = ReadLimits { batch_bytes: 1 << 20, ..Default::default() };
        assert!(skipped(&path, &limits).contains("decoded bytes of a batch"));
        let limits = ReadLimits { file_bytes: 3 << 20, ..Default::default() };
        assert!(skipped(&path, &limits).contains("decoded bytes of the file"));
        assert_eq!(read_as_lines(File::open(&path).unwrap()).unwrap().len(), 2 * (line(0, &huge).len() + 1));
    }

    #[test]
    fn a_column_of_another_type_is_refused_before_it_is_read() {
        use arrow_array::{Int64Array, RecordBatch};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let schema = std::sync::Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
            "pid",
            arrow_schema::DataType::Int64,
            false,
        )]));
        let batch = RecordBatch::try_new(schema.clone(), vec![std::sync::Arc::new(Int64Array::from(vec![1]))]).unwrap();
        let props = ::parquet::file::properties::WriterProperties::builder()
            .set_key_value_metadata(Some(vec![::parquet::file::metadata::KeyValue::new(
                crate::format::parquet::SCHEMA_VERSION_KEY.into(),
                "1".to_string(),
            )]))
            .build();
        let mut w = ::parquet::arrow::ArrowWriter::try_new(File::create(&path).unwrap(), schema, Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let err = skipped(&path, &ReadLimits::default());
        assert!(err.contains(r#"column "pid" is Int64, not Int32"#), "{err}");
    }
}
