//! What a finished daemon hands back: the session's numbers for the summary
//! and the exit, the delivery report, and the probes still attached.

use std::{path::PathBuf, process::ExitStatus};

use crate::{
    daemon::{
        output::{delivery::RoundReport, sink::ClosedFile, stats::Stats},
        probes::loader::Probes,
        supervise::Failure,
    },
    format::counts::{Counts, Drops},
};

/// A finished session.
pub struct Outcome {
    pub dir: PathBuf,
    pub stats: Stats,
    pub counts: Counts,
    pub drops: Drops,
    pub files: Vec<ClosedFile>,
    pub processes: usize,
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

impl Outcome {
    /// Calls lost: the number metadata.json has as `dropped_events`.
    pub fn dropped(&self) -> u64 {
        self.counts.dropped(&self.drops)
    }

    /// The end-of-run summary `record` prints.
    pub fn summary(&self) -> String {
        let (c, d) = (&self.counts, &self.drops);
        format!(
            "\n{}\n{} calls from {} process(es) in {} file(s); dropped: {} (ring buffer full {}, entry map full {}), returns without entry: {}, decode errors: {}, write errors: {}, paused by the disk budget: {}\ntrace: {}",
            self.stats.table(),
            c.calls,
            self.processes,
            self.files.len(),
            self.dropped(),
            d.ringbuf_full,
            d.entry_map_full,
            d.return_without_entry,
            c.decode_errors,
            c.write_errors,
            c.dropped_disk_budget,
            self.dir.display()
        )
    }
}
