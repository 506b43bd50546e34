//! A per-process allowance of resolver work (re-reading `/proc/PID/maps`,
//! indexing a file's symbols): it refills at a fixed share of wall-clock
//! time up to a burst, so one process's unknown addresses can hold the
//! ring-buffer reader for at most that share, whatever it sends.

use std::time::{Duration, Instant};

/// Work a process may cause at once, after a quiet spell.
const BURST: Duration = Duration::from_millis(200);

/// The share of wall-clock time one process's resolution work may take, as
/// 1/SHARE: refilled at 50 ms per second.
const SHARE: u32 = 20;

/// What one process may still spend; work may overdraw it once (an index
/// of a large library is not cut short), and then waits for the refill.
#[derive(Clone, Copy, Debug)]
pub struct WorkBudget {
    /// Nanoseconds of work allowed; negative after an overdraft.
    credit_ns: i64,
    at: Instant,
}

impl WorkBudget {
    /// A full budget.
    pub fn new(now: Instant) -> Self {
        Self { credit_ns: nanos(BURST), at: now }
    }

    /// Whether work may start now.
    pub fn allows(&mut self, now: Instant) -> bool {
        let refill = nanos(now.saturating_duration_since(self.at) / SHARE);
        self.credit_ns = self.credit_ns.saturating_add(refill).min(nanos(BURST));
        self.at = now;
        self.credit_ns > 0
    }

    /// Charges work that took `took`.
    pub fn spend(&mut self, took: Duration) {
        self.credit_ns = self.credit_ns.saturating_sub(nanos(took));
    }
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_is_allowed_up_to_the_burst_then_at_the_refill_rate() {
        let t0 = Instant::now();
        let mut b = WorkBudget::new(t0);
        assert!(b.allows(t0));
        b.spend(BURST / 2);
        assert!(b.allows(t0));
        // One long piece of work overdraws the budget...
        b.spend(BURST * 2);
        assert!(!b.allows(t0));
        // ...which refills at 1/SHARE of the time passed.
        assert!(!b.allows(t0 + BURST * SHARE));
        assert!(b.allows(t0 + BURST * SHARE * 2));
        // Never above the burst, however long it was quiet.
        let later = t0 + Duration::from_secs(3600);
        assert!(b.allows(later));
        b.spend(BURST);
        assert!(!b.allows(later));
    }
}
