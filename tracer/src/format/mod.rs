//! The on-disk contract between the daemon and every reader of a session
//! directory: file names, the JSONL trace line, the KV-cache CSV and
//! `metadata.json`.

pub mod align;
pub mod counts;
pub mod kv;
pub mod line;
pub mod metadata;
pub mod metadata_store;
pub mod names;
pub mod open;
pub mod parquet;
pub mod safe_fs;
pub mod session_lock;
