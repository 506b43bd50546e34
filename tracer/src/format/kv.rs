//! The KV-cache CSV rows: `run` scrapes vLLM's `/metrics` into the
//! session's `kv_cache_usage_<seq>.csv` and `kv_cache_evictions_<seq>.csv`
//! chunks (`daemon::output::kv_scrape` writes [`KvRow::to_line`] and
//! [`EvictionRow::to_line`]), `report` merges and summarises them
//! (`analysis::kvcache` reads them back here).
//!
//! Both start with the seed's columns in the seed's order, so its awk and
//! pandas recipes index the same numbers; ours come after.
//! `kv_cache_usage`: `timestamp_sec, usage_pct, num_blocks, total_blocks`,
//! then `num_requests_running, num_requests_waiting, num_preemptions`.
//! `kv_cache_evictions`: `timestamp_sec, lifetime_sec, idle_sec`, then
//! `sampled_evictions, interval_sec`. `timestamp_sec` is on the trace's
//! axis: seconds since the session's `start_boot_ns` (a trace line's `ts` / 1000).

use serde::Serialize;

/// The header of every `kv_cache_usage*.csv`.
pub const CSV_HEADER: &str =
    "timestamp_sec,usage_pct,num_blocks,total_blocks,num_requests_running,num_requests_waiting,num_preemptions";
/// The header of every `kv_cache_evictions*.csv`.
pub const EVICTIONS_HEADER: &str = "timestamp_sec,lifetime_sec,idle_sec,sampled_evictions,interval_sec";

/// One row of a KV-cache usage CSV; an absent value is an empty cell.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KvRow {
    pub timestamp_sec: f64,
    pub usage_pct: f64,
    /// Blocks in use: `usage_pct` × `total_blocks` (vLLM does not export
    /// the count itself).
    pub num_blocks: Option<f64>,
    /// vLLM's `num_gpu_blocks` (its `vllm:cache_config_info` label).
    pub total_blocks: Option<f64>,
    pub num_requests_running: Option<f64>,
    pub num_requests_waiting: Option<f64>,
    /// vLLM's cumulative counter.
    pub num_preemptions: Option<f64>,
}

/// Where each field is in a KV-cache usage CSV, from its header: files of
/// older writers (without `num_blocks, total_blocks`) still read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvColumns([Option<usize>; 5]);

impl KvColumns {
    /// `None` unless the header starts `timestamp_sec,usage_pct`.
    pub fn of_header(header: &str) -> Option<Self> {
        let names: Vec<&str> = header.trim_end_matches('\r').split(',').collect();
        if names.get(..2) != Some(&["timestamp_sec", "usage_pct"]) {
            return None;
        }
        let at = |name: &str| names.iter().position(|n| *n == name);
        Some(Self(
            ["num_blocks", "total_blocks", "num_requests_running", "num_requests_waiting", "num_preemptions"].map(at),
        ))
    }
}

impl KvRow {
    /// The row as the daemon writes it, with its newline: milliseconds of
    /// time, four decimals of percent, integers plain.
    pub fn to_line(&self) -> String {
        format!(
            "{:.3},{:.4},{},{},{},{},{}\n",
            self.timestamp_sec,
            self.usage_pct,
            integer_cell(self.num_blocks),
            integer_cell(self.total_blocks),
            integer_cell(self.num_requests_running),
            integer_cell(self.num_requests_waiting),
            integer_cell(self.num_preemptions)
        )
    }

    /// Reads one row of a file with today's header (without its newline);
    /// extra trailing columns (the merged file's `session`) are ignored.
    /// `None`: not a row (e.g. a line cut by a crash).
    pub fn parse(line: &str) -> Option<KvRow> {
        Self::parse_with(line, &KvColumns(CURRENT_COLUMNS))
    }

    /// Reads one row of a file whose header gave `columns`.
    pub fn parse_with(line: &str, columns: &KvColumns) -> Option<KvRow> {
        let cells: Vec<&str> = line.trim_end_matches('\r').split(',').collect();
        let width = columns.0.iter().flatten().max().map_or(2, |&i| i + 1);
        if cells.len() < width {
            return None;
        }
        let cell = |i: Option<usize>| i.map_or(Some(None), |i| optional(cells[i]));
        let [blocks, total, running, waiting, preemptions] = columns.0;
        Some(KvRow {
            timestamp_sec: cells[0].parse().ok()?,
            usage_pct: cells[1].parse().ok()?,
            num_blocks: cell(blocks)?,
            total_blocks: cell(total)?,
            num_requests_running: cell(running)?,
            num_requests_waiting: cell(waiting)?,
            num_preemptions: cell(preemptions)?,
        })
    }
}

const CURRENT_COLUMNS: [Option<usize>; 5] = [Some(2), Some(3), Some(4), Some(5), Some(6)];

/// Evictions of KV blocks in one scrape interval, from vLLM's sampled
/// block-residency histograms: the mean over the blocks evicted (and
/// sampled) since the previous scrape.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvictionRow {
    /// When the scrape that saw them was taken.
    pub timestamp_sec: f64,
    /// Mean time from allocation to eviction.
    pub lifetime_sec: f64,
    /// Mean time from the last access to eviction.
    pub idle_sec: f64,
    /// Sampled evictions in the interval (`--kv-cache-metrics-sample` of all).
    pub sampled_evictions: f64,
    /// Seconds since the previous scrape: the interval the row covers.
    pub interval_sec: f64,
}

impl EvictionRow {
    /// The row as the daemon writes it, with its newline.
    pub fn to_line(&self) -> String {
        format!(
            "{:.3},{:.6},{:.6},{},{:.3}\n",
            self.timestamp_sec,
            self.lifetime_sec,
            self.idle_sec,
            integer_cell(Some(self.sampled_evictions)),
            self.interval_sec
        )
    }

    /// Reads one row (without its newline); extra trailing columns are
    /// ignored; `None`: not a row.
    pub fn parse(line: &str) -> Option<EvictionRow> {
        let mut cells = line.trim_end_matches('\r').split(',');
        let mut next = || cells.next()?.parse().ok();
        Some(EvictionRow {
            timestamp_sec: next()?,
            lifetime_sec: next()?,
            idle_sec: next()?,
            sampled_evictions: next()?,
            interval_sec: next()?,
        })
    }
}

/// An optional number as a cell: whole numbers without a fraction.
fn integer_cell(v: Option<f64>) -> String {
    match v {
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{}", x as i64),
        Some(x) => format!("{x}"),
        None => String::new(),
    }
}

/// `Some(None)` for an empty cell, `None` for one that is not a number.
fn optional(cell: &str) -> Option<Option<f64>> {
    if cell.is_empty() {
        return Some(None);
    }
    cell.parse().ok().map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(num_blocks: Option<f64>, total_blocks: Option<f64>) -> KvRow {
        KvRow {
            timestamp_sec: 1.23456,
            usage_pct: 12.5,
            num_blocks,
            total_blocks,
            num_requests_running: Some(3.0),
            num_requests_waiting: None,
            num_preemptions: Some(1.5),
        }
    }

    #[test]
    fn rows_keep_integers_plain_and_absent_values_empty() {
        assert_eq!(row(Some(512.0), Some(4096.0)).to_line(), "1.235,12.5000,512,4096,3,,1.5\n");
        assert_eq!(row(None, None).to_line(), "1.235,12.5000,,,3,,1.5\n");
    }

    #[test]
    fn a_written_row_reads_back_as_itself() {
        let rows = [
            KvRow {
                timestamp_sec: 12.345,
                usage_pct: 87.125,
                num_blocks: Some(3569.0),
                total_blocks: Some(4096.0),
                num_requests_running: Some(4.0),
                num_requests_waiting: Some(0.0),
                num_preemptions: Some(17.0),
            },
            KvRow {
                timestamp_sec: -0.5,
                usage_pct: 0.0,
                num_blocks: None,
                total_blocks: None,
                num_requests_running: None,
                num_requests_waiting: None,
                num_preemptions: None,
            },
        ];
        for row in rows {
            let line = row.to_line();
            assert_eq!(line.matches(',').count() + 1, CSV_HEADER.split(',').count(), "{line}");
            assert_eq!(KvRow::parse(line.trim_end()), Some(row));
        }
        assert_eq!(KvRow::parse("1,2,3,4,5,6,7,session").map(|r| r.num_preemptions), Some(Some(7.0)));
        for bad in ["9.500,4", "", "x,1,,,,,", "1,2,three,,,,", "1,2,,,"] {
            assert_eq!(KvRow::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn files_of_the_older_header_still_read() {
        let old =
            KvColumns::of_header("timestamp_sec,usage_pct,num_requests_running,num_requests_waiting,num_preemptions")
                .unwrap();
        let r = KvRow::parse_with("1.5,40.0000,3,1,7", &old).unwrap();
        assert_eq!((r.num_blocks, r.num_requests_running, r.num_preemptions), (None, Some(3.0), Some(7.0)));
        assert_eq!(KvColumns::of_header(CSV_HEADER), Some(KvColumns(CURRENT_COLUMNS)));
        assert_eq!(KvColumns::of_header(&format!("{CSV_HEADER},session")), Some(KvColumns(CURRENT_COLUMNS)));
        assert_eq!(KvColumns::of_header("usage_pct,timestamp_sec"), None);
    }

    #[test]
    fn eviction_rows_read_back() {
        let row = EvictionRow {
            timestamp_sec: 5.0,
            lifetime_sec: 12.25,
            idle_sec: 3.5,
            sampled_evictions: 4.0,
            interval_sec: 5.0,
        };
        assert_eq!(row.to_line(), "5.000,12.250000,3.500000,4,5.000\n");
        assert_eq!(EvictionRow::parse(row.to_line().trim_end()), Some(row));
        assert_eq!(EvictionRow::parse("1,2,3"), None);
        assert_eq!(
            EVICTIONS_HEADER.split(',').take(3).collect::<Vec<_>>(),
            ["timestamp_sec", "lifetime_sec", "idle_sec"]
        );
    }
}
