//! The KV-cache CSV row: `run` scrapes vLLM's `/metrics` into the session's
//! `kv_cache_usage_<seq>.csv` chunks (`daemon::output::kv_scrape` writes
//! [`KvRow::to_line`]), `report` summarises them (`analysis::kvcache` reads
//! [`KvRow::parse`]).
//!
//! The CSV keeps the seed's first two columns (`timestamp_sec, usage_pct`)
//! so its awk/pandas recipes work, then adds what vLLM's endpoint offers:
//! `num_requests_running, num_requests_waiting, num_preemptions`.
//! `timestamp_sec` is on the trace's axis: seconds since the session's
//! `start_boot_ns` (a trace line's `ts` / 1000).

use serde::Serialize;

/// The header of every `kv_cache_usage*.csv`.
pub const CSV_HEADER: &str = "timestamp_sec,usage_pct,num_requests_running,num_requests_waiting,num_preemptions";

/// One row of a KV-cache CSV; an absent value is an empty cell.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KvRow {
    pub timestamp_sec: f64,
    pub usage_pct: f64,
    pub num_requests_running: Option<f64>,
    pub num_requests_waiting: Option<f64>,
    /// vLLM's cumulative counter.
    pub num_preemptions: Option<f64>,
}

impl KvRow {
    /// The row as the daemon writes it, with its newline: milliseconds of
    /// time, four decimals of percent, integers plain.
    pub fn to_line(&self) -> String {
        format!(
            "{:.3},{:.4},{},{},{}\n",
            self.timestamp_sec,
            self.usage_pct,
            integer_cell(self.num_requests_running),
            integer_cell(self.num_requests_waiting),
            integer_cell(self.num_preemptions)
        )
    }

    /// Reads one row (without its newline); extra trailing columns (the
    /// merged file's `session`) are ignored. `None`: not a row (e.g. a line
    /// cut by a crash).
    pub fn parse(line: &str) -> Option<KvRow> {
        let mut cells = line.trim_end_matches('\r').split(',');
        let mut next = || cells.next();
        let timestamp_sec = next()?.parse().ok()?;
        let usage_pct = next()?.parse().ok()?;
        Some(KvRow {
            timestamp_sec,
            usage_pct,
            num_requests_running: optional(next()?)?,
            num_requests_waiting: optional(next()?)?,
            num_preemptions: optional(next()?)?,
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

    #[test]
    fn rows_keep_integers_plain_and_absent_values_empty() {
        let row = KvRow {
            timestamp_sec: 1.23456,
            usage_pct: 12.5,
            num_requests_running: Some(3.0),
            num_requests_waiting: None,
            num_preemptions: Some(1.5),
        };
        assert_eq!(row.to_line(), "1.235,12.5000,3,,1.5\n");
    }

    #[test]
    fn a_written_row_reads_back_as_itself() {
        let rows = [
            KvRow {
                timestamp_sec: 12.345,
                usage_pct: 87.125,
                num_requests_running: Some(4.0),
                num_requests_waiting: Some(0.0),
                num_preemptions: Some(17.0),
            },
            KvRow {
                timestamp_sec: -0.5,
                usage_pct: 0.0,
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
        assert_eq!(KvRow::parse("1,2,3,4,5,session").map(|r| r.num_preemptions), Some(Some(5.0)));
        for bad in ["9.500,4", "", "x,1,,,", "1,2,three,,"] {
            assert_eq!(KvRow::parse(bad), None, "{bad}");
        }
    }
}
