//! The session's counters, one type from the ring-buffer reader to
//! `metadata.json`, `/metrics` and the printed summary, and the one
//! definition of "dropped".

use serde::{Deserialize, Serialize};

/// What userspace counted: calls captured and what became of them
/// (`metadata.json` `counts`).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Counts {
    /// Calls captured (decoded) by the reader, written or not.
    pub calls: u64,
    /// Records the decoder rejected (each is also logged).
    pub decode_errors: u64,
    /// Lines that could not be written (disk full, I/O error).
    pub write_errors: u64,
    /// Calls not written while the disk budget paused writing.
    pub dropped_disk_budget: u64,
}

/// What the kernel side could not record (`metadata.json` `drops`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Drops {
    /// Completed calls lost because the ring buffer was full.
    pub ringbuf_full: u64,
    /// Calls whose entry could not be stored (their return is then not recorded).
    pub entry_map_full: u64,
    /// Returns seen without an entry: calls already running when the probes attached.
    pub return_without_entry: u64,
    /// Fork/exit notices lost to a full ring buffer (the kernel still follows the tree).
    pub proc_events_lost: u64,
    /// Processes that could not be added to the traced-pid map (it was
    /// full): their calls went unseen and cannot be counted.
    pub traced_map_full: u64,
    /// Calls recorded without their string argument (the name map was full).
    pub name_map_full: u64,
    /// Library opens that could not be held (a map was full): attached
    /// late, by the /proc scan, and listed as late.
    pub hold_map_full: u64,
}

impl Drops {
    /// Calls that happened while traced but never reached userspace.
    pub fn lost_calls(&self) -> u64 {
        self.ringbuf_full + self.entry_map_full
    }

    /// Whether every call made in a traced process is either in the trace
    /// or counted in [`Counts::dropped`]: not so once a process could not
    /// be traced, whose calls nobody saw.
    pub fn all_losses_counted(&self) -> bool {
        self.traced_map_full == 0
    }
}

impl Counts {
    /// Calls that happened in traced processes but are not in the trace
    /// files: lost in the kernel, not written, or paused by the disk budget.
    /// `metadata.json` `dropped_events` and the summary's `dropped:` are this.
    pub fn dropped(&self, drops: &Drops) -> u64 {
        drops.lost_calls() + self.write_errors + self.dropped_disk_budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_is_kernel_losses_plus_unwritten_calls() {
        let counts = Counts { calls: 100, decode_errors: 7, write_errors: 2, dropped_disk_budget: 3 };
        let drops = Drops {
            ringbuf_full: 10,
            entry_map_full: 1,
            return_without_entry: 50,
            proc_events_lost: 4,
            traced_map_full: 0,
            name_map_full: 6,
            hold_map_full: 7,
        };
        assert!(drops.all_losses_counted());
        // Decode errors, orphan returns and lost process notices are not calls lost.
        assert_eq!(counts.dropped(&drops), 16);
        let json = serde_json::to_value(counts).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"calls": 100, "decode_errors": 7, "write_errors": 2, "dropped_disk_budget": 3})
        );
    }

    #[test]
    fn an_untraced_process_makes_the_losses_uncountable() {
        let drops = Drops { traced_map_full: 1, ..Drops::default() };
        // Its calls are not in `dropped`: nobody saw them to count them.
        assert_eq!(Counts::default().dropped(&drops), 0);
        assert!(!drops.all_losses_counted());
    }
}
