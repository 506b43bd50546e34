//! The Parquet trace file, beside the JSONL line (issue 19): [`schema`] is
//! the versioned column layout, [`row`] turns a JSONL trace line into a row
//! and back (so a Parquet file holds exactly what the line writer wrote,
//! fields added later included), [`write`] writes sorted, zstd-compressed
//! files and [`read`] reads them back as JSONL lines for the analyses.

pub mod limits;
pub mod read;
pub mod row;
pub mod schema;
pub mod write;

pub use limits::ReadLimits;
pub use read::{read_as_lines, read_as_lines_within, ParquetReadError};
pub use row::Row;
pub use schema::{FileContext, SCHEMA_VERSION, SCHEMA_VERSION_KEY};
pub use write::{ParquetFileWriter, ParquetWriteError};
