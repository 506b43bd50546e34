//! The tally from calls already read (JSONL files): report's own kernel
//! names and launch role, so the numbers are report's.

use tracer_common::funcs::Role;

use super::Tallies;
use crate::analysis::{report::kernels::kernel_name, trace::Call};

/// Launches and call time (ns) per kernel name.
pub(super) fn tally(calls: &[Call]) -> Tallies {
    let mut tallies = Tallies::new();
    for c in calls.iter().filter(|c| c.spec().role == Role::Launch) {
        let acc = tallies.entry(kernel_name(c)).or_default();
        acc.0 += 1;
        acc.1 += c.dur_us * 1000.0;
    }
    tallies
}
