//! An allowance of resolver work (re-reading `/proc/PID/maps`, indexing a
//! file's symbols): it refills at a fixed share of wall-clock time up to a
//! burst. One per process, so one process's unknown addresses can hold the
//! ring-buffer reader for at most its share, whatever it sends; and one for
//! all processes together, so many such processes cannot either.

use std::time::{Duration, Instant};

/// How much work, and how often.
#[derive(Clone, Copy, Debug)]
pub struct Allowance {
    /// Work allowed at once, after a quiet spell.
    pub burst: Duration,
    /// The share of wall-clock time the work may take, as 1/share.
    pub share: u32,
}

/// One process: 200 ms at once, 50 ms per second.
pub const PER_PROCESS: Allowance = Allowance { burst: Duration::from_millis(200), share: 20 };

/// All processes together: 500 ms at once, 200 ms per second.
pub const ALL_PROCESSES: Allowance = Allowance { burst: Duration::from_millis(500), share: 5 };

/// What may still be spent; work may overdraw it once (an index of a large
/// library is not cut short), and then waits for the refill.
#[derive(Clone, Copy, Debug)]
pub struct WorkBudget {
    allowance: Allowance,
    /// Nanoseconds of work allowed; negative after an overdraft.
    credit_ns: i64,
    at: Instant,
}

impl WorkBudget {
    /// A full budget.
    pub fn new(allowance: Allowance, now: Instant) -> Self {
        Self { allowance, credit_ns: nanos(allowance.burst), at: now }
    }

    /// Whether work may start now.
    pub fn allows(&mut self, now: Instant) -> bool {
        let refill = nanos(now.saturating_duration_since(self.at) / self.allowance.share.max(1));
        self.credit_ns = self.credit_ns.saturating_add(refill).min(nanos(self.allowance.burst));
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
        const BURST: Duration = PER_PROCESS.burst;
        const SHARE: u32 = PER_PROCESS.share;
        let t0 = Instant::now();
        let mut b = WorkBudget::new(PER_PROCESS, t0);
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
