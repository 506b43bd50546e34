//! The KV-cache CSV files: `run` scrapes vLLM's `/metrics` into the
//! session's `kv_cache_usage_<seq>.csv` chunks (`daemon::output::kv_scrape`),
//! `report` summarises them (`analysis::kvcache`).
//!
//! The CSV keeps the seed's first two columns (`timestamp_sec, usage_pct`)
//! so its awk/pandas recipes work, then adds what vLLM's endpoint offers:
//! `num_requests_running, num_requests_waiting, num_preemptions`.
//! `timestamp_sec` is on the trace's axis: seconds since the session's
//! `start_boot_ns` (a trace line's `ts` / 1000).

/// The header of every `kv_cache_usage*.csv`.
pub const CSV_HEADER: &str = "timestamp_sec,usage_pct,num_requests_running,num_requests_waiting,num_preemptions";

/// Whether `name` is a closed KV-cache CSV chunk the daemon wrote
/// (`kv_cache_usage_00001.csv`); delivery uploads these like trace files.
pub fn is_chunk_name(name: &str) -> bool {
    name.strip_prefix("kv_cache_usage_")
        .and_then(|rest| rest.strip_suffix(".csv"))
        .is_some_and(|seq| !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()))
}

/// The name of chunk number `seq`.
pub fn chunk_name(seq: u32) -> String {
    format!("kv_cache_usage_{seq:05}.csv")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_names_round_trip() {
        assert_eq!(chunk_name(7), "kv_cache_usage_00007.csv");
        assert!(is_chunk_name(&chunk_name(7)));
        for other in ["kv_cache_usage.csv", "kv_cache_usage_.csv", "kv_cache_usage_01.csv.partial", "trace_00001.jsonl"]
        {
            assert!(!is_chunk_name(other), "{other}");
        }
    }
}
