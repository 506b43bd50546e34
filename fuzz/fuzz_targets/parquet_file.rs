//! Fuzzes the Parquet trace file reader: a file from a lake or a synced
//! bucket is untrusted, so reading one back (footer, checks against the
//! caps, every column decoded into lines) must never end the process,
//! whatever the bytes: a refusal is an error of a kind the callers sort
//! (another version, or damage skipped and counted).
#![no_main]

use std::io::Write as _;

use cuda_tracer::format::parquet::{read_as_lines_within, ReadLimits};
use libfuzzer_sys::fuzz_target;

/// Caps small enough that a file claiming much cannot exhaust the fuzzer's memory.
const LIMITS: ReadLimits = ReadLimits {
    footer_bytes: 1 << 20,
    row_groups: 1024,
    columns: 64,
    rows: 1 << 20,
    group_bytes: 64 << 20,
    batch_bytes: 64 << 20,
    file_bytes: 128 << 20,
};

fuzz_target!(|data: &[u8]| {
    // The reader catches a panic of the parquet crate's decoder and counts
    // the file as damage (`parquet::read::guarded`); libfuzzer-sys's panic
    // hook would abort before that catch. Any panic not caught there still
    // reaches libfuzzer-sys's own catch, which aborts: a crash.
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    // The reader takes a file (it reads the footer's length at the end).
    let path = std::env::temp_dir().join(format!("cuda-tracer-fuzz-parquet-{}", std::process::id()));
    let mut file = std::fs::File::create(&path).expect("scratch file");
    file.write_all(data).expect("scratch file written");
    let file = std::fs::File::open(&path).expect("scratch file opened");
    if let Ok(lines) = read_as_lines_within(file, &LIMITS) {
        assert!(lines.is_empty() || lines.ends_with(b"\n"), "lines end with a newline");
    }
});
