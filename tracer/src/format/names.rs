//! Every name the daemon gives a file in a session directory, and the
//! predicates that recognise them: the sink, the KV scraper, the disk budget,
//! delivery and the readers all ask here, so they cannot disagree.
//!
//! A session directory holds `trace_<seq>_<utc>.jsonl` files (and/or their
//! Parquet twins `trace_<seq>_<utc>.parquet`, `--format`),
//! `kv_cache_usage_<seq>.csv` and `kv_cache_evictions_<seq>.csv` chunks and
//! `metadata.json`. A file being
//! written has the hidden name `.<name>.partial` and is renamed to `<name>`
//! when closed, so no reader or uploader ever sees half a file.

/// The session's metadata (see [`super::metadata`]).
pub const METADATA: &str = "metadata.json";
/// [`METADATA`] for system calls made where nothing may be allocated.
pub const METADATA_C: &std::ffi::CStr = c"metadata.json";
/// Start of every trace file's name.
const TRACE_PREFIX: &str = "trace_";
/// End of every trace file's name.
const TRACE_SUFFIX: &str = ".jsonl";
/// End of every Parquet trace file's name (`trace_<seq>_<utc>.parquet`).
const PARQUET_SUFFIX: &str = ".parquet";
/// The first component of the Parquet lake's keys (after the prefix).
pub const PARQUET_LAKE_DIR: &str = "parquet";
/// The lake's partition keys (`<key>=<value>` directories).
pub const LAKE_DATE_KEY: &str = "date";
pub const LAKE_HOUR_KEY: &str = "hour";
pub const LAKE_NODE_KEY: &str = "node";
pub const LAKE_POD_KEY: &str = "pod";
/// The partition value engines read as null (Hive's convention): the pod
/// of a tracer that runs on a node, not in a pod.
pub const HIVE_NULL: &str = "__HIVE_DEFAULT_PARTITION__";
/// Start of every KV-cache CSV chunk's name.
const KV_CHUNK_PREFIX: &str = "kv_cache_usage_";
/// The merged (or seed-style) KV-cache CSV that `report` writes and reads.
pub const KV_MERGED: &str = "kv_cache_usage.csv";
/// The Chrome/Perfetto export of the PROFILE_STEPS window (the seed
/// webhook's `trace<pid>.json` of calls 100-150), written once the window
/// has passed; uploaded like metadata.json and kept.
pub const STEP_WINDOW_EXPORT: &str = "profile_steps_trace.json";
/// Hidden directory in a session dir where the step window keeps hard links
/// to the session's trace files until its export is written (so an upload
/// deleting a file does not take the window's calls with it).
pub const STEP_STAGING_DIR: &str = ".step-window";
/// Locked by the session's writer while it runs (see [`super::session_lock`]).
pub const SESSION_LOCK: &str = ".session.lock";
/// Start of every KV-block eviction CSV chunk's name.
const KV_EVICTIONS_PREFIX: &str = "kv_cache_evictions_";
/// The merged (seed-named) eviction CSV that `report` writes and reads.
pub const KV_EVICTIONS_MERGED: &str = "kv_cache_evictions.csv";
/// Written and removed at start: proves the session dir is writable.
pub const WRITE_TEST: &str = ".write-test";

const PARTIAL_SUFFIX: &str = ".partial";

/// The S3 object `cuda-tracer check --s3` puts and deletes again, under the
/// tracer's `<prefix><pod-or-node>/`: hidden, and named for the process.
pub fn s3_probe(pid: u32) -> String {
    format!(".cuda-tracer-check-{pid}")
}

/// The name of trace file number `seq`, opened at `utc` (compact UTC time).
pub fn trace_file(seq: u32, utc: &str) -> String {
    format!("{TRACE_PREFIX}{seq:05}_{utc}{TRACE_SUFFIX}")
}

/// The Parquet twin of trace file number `seq` (see [`trace_file`]).
pub fn parquet_trace_file(seq: u32, utc: &str) -> String {
    format!("{TRACE_PREFIX}{seq:05}_{utc}{PARQUET_SUFFIX}")
}

/// Whether `name` is a closed Parquet trace file (`trace_00001_….parquet`).
pub fn is_parquet_trace_file(name: &str) -> bool {
    name.starts_with(TRACE_PREFIX) && name.ends_with(PARQUET_SUFFIX)
}

/// Whether `name` is any Parquet file (a lake's objects are named by session).
pub fn is_parquet_file(name: &str) -> bool {
    name.ends_with(PARQUET_SUFFIX)
}

/// The sequence number and compact UTC time of a trace file's name.
pub fn trace_seq_and_utc(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(TRACE_PREFIX)?;
    let rest = rest.strip_suffix(TRACE_SUFFIX).or_else(|| rest.strip_suffix(PARQUET_SUFFIX))?;
    rest.split_once('_')
}

/// The Hive-style key of Parquet trace file `file` of `session` under the
/// lake's root: `parquet/date=YYYY-MM-DD/hour=HH/node=<node>/pod=<pod>/<session>-<seq>.parquet`
/// (`utc` of the file's name gives the date and hour). `None` for a name
/// that is not a Parquet trace file's.
pub fn parquet_lake_key(file: &str, session: &str, node: &str, pod: &str) -> Option<String> {
    let (seq, utc) = trace_seq_and_utc(file).filter(|_| is_parquet_trace_file(file))?;
    let (date, hour) = (utc.get(..8)?, utc.get(9..11)?);
    let (y, m, d) = (&date[..4], &date[4..6], &date[6..8]);
    Some(format!(
        "{PARQUET_LAKE_DIR}/{LAKE_DATE_KEY}={y}-{m}-{d}/{LAKE_HOUR_KEY}={hour}/{LAKE_NODE_KEY}={node}/{LAKE_POD_KEY}={pod}/{session}-{seq}{PARQUET_SUFFIX}"
    ))
}

/// A node, pod or session name as a lake partition value: `/` and `=`
/// become `_` (a value may hold neither).
pub fn partition_value(value: &str) -> String {
    value.replace(['/', '='], "_")
}

/// The name of KV-cache CSV chunk number `seq`.
pub fn kv_chunk(seq: u32) -> String {
    format!("{KV_CHUNK_PREFIX}{seq:05}.csv")
}

/// The name of KV-block eviction CSV chunk number `seq`.
pub fn kv_evictions_chunk(seq: u32) -> String {
    format!("{KV_EVICTIONS_PREFIX}{seq:05}.csv")
}

/// The hidden name a file has while it is written (`.<name>.partial`).
pub fn partial(name: &str) -> String {
    format!(".{name}{PARTIAL_SUFFIX}")
}

/// The name a `.partial` file gets when closed; `None` for any other name.
pub fn closed_name(partial: &str) -> Option<&str> {
    partial.strip_prefix('.')?.strip_suffix(PARTIAL_SUFFIX)
}

/// The name of the step window's hard link to trace file `trace`: no
/// reader, uploader or budget takes it for a trace file.
pub fn staged(trace: &str) -> String {
    format!("{trace}.staged")
}

/// Whether `name` is a closed trace file (`trace_00001_….jsonl`).
pub fn is_trace_file(name: &str) -> bool {
    name.starts_with(TRACE_PREFIX) && name.ends_with(TRACE_SUFFIX)
}

/// Whether `name` is a closed KV-cache CSV chunk: usage
/// (`kv_cache_usage_00001.csv`) or evictions (`kv_cache_evictions_00001.csv`).
pub fn is_kv_chunk(name: &str) -> bool {
    is_numbered_csv(name, KV_CHUNK_PREFIX) || is_numbered_csv(name, KV_EVICTIONS_PREFIX)
}

fn is_numbered_csv(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(".csv"))
        .is_some_and(|seq| !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `name` is a KV-cache usage CSV a report reads: a chunk or the merged file.
pub fn is_kv_usage_csv(name: &str) -> bool {
    name == KV_MERGED || is_numbered_csv(name, KV_CHUNK_PREFIX)
}

/// Whether `name` is a KV-block eviction CSV a report reads: a chunk or the merged file.
pub fn is_kv_evictions_csv(name: &str) -> bool {
    name == KV_EVICTIONS_MERGED || is_numbered_csv(name, KV_EVICTIONS_PREFIX)
}

/// Whether `name` is any KV-cache CSV a report reads.
pub fn is_kv_csv(name: &str) -> bool {
    is_kv_usage_csv(name) || is_kv_evictions_csv(name)
}

/// Whether `name` is a closed data file of a session: what delivery uploads
/// (and deletes once stored), repairs after a crash, and what the disk
/// budget counts and may delete. `metadata.json` is not one: it is kept.
pub fn is_data_file(name: &str) -> bool {
    is_trace_file(name) || is_parquet_trace_file(name) || is_kv_chunk(name)
}

/// Whether `name` is a data file, closed or still being written: what the
/// disk budget counts.
pub fn is_data_file_open_or_closed(name: &str) -> bool {
    is_data_file(closed_name(name).unwrap_or(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parquet_names_and_lake_keys() {
        let file = parquet_trace_file(7, "20260102T030405Z");
        assert_eq!(file, "trace_00007_20260102T030405Z.parquet");
        assert!(is_parquet_trace_file(&file) && is_data_file(&file) && !is_trace_file(&file));
        assert!(is_data_file_open_or_closed(&partial(&file)));
        assert_eq!(trace_seq_and_utc(&trace_file(7, "20260102T030405Z")), Some(("00007", "20260102T030405Z")));
        assert_eq!(
            parquet_lake_key(&file, "s1", "node-a", "pod-b").as_deref(),
            Some("parquet/date=2026-01-02/hour=03/node=node-a/pod=pod-b/s1-00007.parquet")
        );
        assert_eq!(parquet_lake_key(&trace_file(7, "20260102T030405Z"), "s", "n", "p"), None);
    }

    #[test]
    fn names_and_their_predicates_agree() {
        let trace = trace_file(7, "20260101T000000Z");
        assert_eq!(trace, "trace_00007_20260101T000000Z.jsonl");
        assert_eq!(kv_chunk(7), "kv_cache_usage_00007.csv");
        assert_eq!(partial(METADATA), ".metadata.json.partial");
        assert_eq!(METADATA_C.to_str(), Ok(METADATA));
        assert_eq!(closed_name(&partial(&trace)), Some(trace.as_str()));
        assert!(is_trace_file(&trace) && is_data_file(&trace) && !is_kv_chunk(&trace));
        assert!(is_kv_chunk(&kv_chunk(7)) && is_data_file(&kv_chunk(7)) && is_kv_csv(&kv_chunk(7)));
        assert!(is_kv_csv(KV_MERGED) && !is_data_file(KV_MERGED));
        for kept in [staged(&trace), STEP_WINDOW_EXPORT.to_string()] {
            assert!(!is_trace_file(&kept) && !is_data_file_open_or_closed(&kept), "{kept}");
        }
        let evictions = kv_evictions_chunk(3);
        assert_eq!(evictions, "kv_cache_evictions_00003.csv");
        assert!(is_kv_chunk(&evictions) && is_data_file(&evictions) && is_kv_evictions_csv(&evictions));
        assert!(!is_kv_usage_csv(&evictions) && is_kv_usage_csv(&kv_chunk(7)) && !is_kv_evictions_csv(&kv_chunk(7)));
        assert!(is_kv_evictions_csv(KV_EVICTIONS_MERGED) && !is_data_file(KV_EVICTIONS_MERGED));
        assert!(is_data_file_open_or_closed(&partial(&evictions)));
        for open in [partial(&trace), partial(&kv_chunk(2))] {
            assert!(!is_data_file(&open) && is_data_file_open_or_closed(&open), "{open}");
        }
        for other in [
            METADATA,
            SESSION_LOCK,
            ".metadata.json.partial",
            "kv_cache_usage_.csv",
            "kv_cache_usage_01.csv.partial",
            "notes.txt",
        ] {
            assert!(!is_data_file_open_or_closed(other), "{other}");
            assert!(!is_kv_chunk(other), "{other}");
        }
    }
}
