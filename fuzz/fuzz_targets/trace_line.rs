//! Fuzzes the trace line readers: the fast one-scan reader and the serde
//! fallback must never panic, and where both accept a line they must read
//! the same call from it.
#![no_main]

use cuda_tracer::format::line::{parse_line, read};
use cuda_tracer_fuzz::same_call;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut names = read::Interner::default();
    let fast = read::parse(data, &mut names);
    let slow = parse_line(data);
    if let (Some(fast), Ok(slow)) = (&fast, &slow) {
        assert!(
            same_call(fast, slow),
            "the readers disagree on {}:\n{fast:?}\n{slow:?}",
            String::from_utf8_lossy(data)
        );
    }
    for call in [fast, slow.ok()].into_iter().flatten() {
        // What the readers accept, the analyses can use.
        assert!(call.ts_ms.is_finite() && call.dur_us.is_finite() && call.end_ms().is_finite());
    }
});
