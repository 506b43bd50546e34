//! What a finished daemon hands back: the session's numbers for the summary
//! and the exit, the delivery report, and the probes still attached.

use std::{path::PathBuf, process::ExitStatus};

use crate::{
    daemon::{
        output::{delivery::RoundReport, sink::ClosedFile, stats::Stats},
        probes::loader::Probes,
        supervise::Failure,
    },
    format::{
        counts::{Counts, Drops},
        metadata::MissedLibrary,
    },
};

/// A finished session.
pub struct Outcome {
    pub dir: PathBuf,
    pub stats: Stats,
    pub counts: Counts,
    pub drops: Drops,
    pub files: Vec<ClosedFile>,
    pub processes: usize,
    /// Libraries a traced process used whose calls are (partly) missing.
    pub missed_libraries: Vec<MissedLibrary>,
    /// The command's exit status (record mode).
    pub exit_status: Option<ExitStatus>,
    /// The last upload round, when uploads are on.
    pub delivery: Option<RoundReport>,
    /// The task whose failure ended the daemon; metadata.json says `failed`.
    pub failure: Option<Failure>,
    /// The loaded probes, still attached: dropping them detaches every
    /// uprobe, slowly; `exit::leave` hands them off instead.
    pub probes: Probes,
}

/// The exit code of `record` and `run` when trace lines were lost to write
/// errors (and no task failed): the trace is incomplete.
pub const LINES_LOST_EXIT: u8 = 3;

/// Trace lines were lost to write errors.
#[derive(Debug, thiserror::Error)]
#[error(
    "{lines} trace line(s) could not be written (disk full or I/O error) and are missing from the trace; \
     metadata.json counts them (counts.write_errors); free space in the trace dir or give it more"
)]
pub struct LinesLost {
    pub lines: u64,
}

impl Outcome {
    /// The error to report when lines were lost to write errors.
    pub fn lines_lost_error(&self) -> Option<LinesLost> {
        (self.counts.write_errors > 0).then_some(LinesLost { lines: self.counts.write_errors })
    }

    /// Calls lost: the number metadata.json has as `dropped_events`.
    pub fn dropped(&self) -> u64 {
        self.counts.dropped(&self.drops)
    }

    /// Calls lost, as the summary states them: the calls of an untraced
    /// library or process cannot be counted, so never claim none were lost.
    fn dropped_text(&self) -> String {
        let mut uncounted = Vec::new();
        match self.missed_libraries.len() {
            0 => {}
            n => uncounted.push(format!("the calls of {n} untraced librar{}", if n == 1 { "y" } else { "ies" })),
        }
        if !self.drops.all_losses_counted() {
            uncounted.push(format!(
                "the calls of {} process(es) the traced-pid map had no room for",
                self.drops.traced_map_full
            ));
        }
        if uncounted.is_empty() {
            return self.dropped().to_string();
        }
        format!("unknown ({} counted, plus {})", self.dropped(), uncounted.join(" and "))
    }

    /// The end-of-run summary `record` prints; its last line names every
    /// library that went (partly) untraced.
    pub fn summary(&self) -> String {
        let (c, d) = (&self.counts, &self.drops);
        let summary = format!(
            "\n{}\n{} calls from {} process(es) in {} file(s); dropped: {} (ring buffer full {}, entry map full {}), returns without entry: {}, decode errors: {}, write errors: {}, paused by the disk budget: {}, map inserts refused (traced processes {}, names {}, holds {})\ntrace: {}",
            self.stats.table(),
            c.calls,
            self.processes,
            self.files.len(),
            self.dropped_text(),
            d.ringbuf_full,
            d.entry_map_full,
            d.return_without_entry,
            c.decode_errors,
            c.write_errors,
            c.dropped_disk_budget,
            d.traced_map_full,
            d.name_map_full,
            d.hold_map_full,
            self.dir.display()
        );
        match self.missed_warning() {
            Some(warning) => format!("{summary}\n{warning}"),
            None => summary,
        }
    }

    /// The `warning:` line naming each missed library, when there is one.
    fn missed_warning(&self) -> Option<String> {
        if self.missed_libraries.is_empty() {
            return None;
        }
        let named: Vec<String> = self
            .missed_libraries
            .iter()
            .map(|m| match &m.error {
                Some(e) => format!("{} (pid {}, {}: {e})", m.path, m.pid, m.reason),
                None => format!("{} (pid {}, {})", m.path, m.pid, m.reason),
            })
            .collect();
        Some(format!(
            "warning: {} CUDA librar{} not fully traced, their calls are missing from the trace: {}",
            named.len(),
            if named.len() == 1 { "y" } else { "ies" },
            named.join("; ")
        ))
    }
}
