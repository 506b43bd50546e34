//! Fuzzes the trace line readers: the fast one-scan reader and the serde
//! fallback must never panic, and where both accept a line they must read
//! the same call from it.
#![no_main]

use cuda_tracer::format::line::{parse_line, read, Call};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut names = read::Interner::default();
    let fast = read::parse(data, &mut names);
    let slow = parse_line(data);
    if let (Some(fast), Ok(slow)) = (&fast, &slow) {
        assert!(same(fast, slow), "the readers disagree on {}:\n{fast:?}\n{slow:?}", String::from_utf8_lossy(data));
    }
    for call in [fast, slow.ok()].into_iter().flatten() {
        // What the readers accept, the analyses can use.
        assert!(call.ts_ms.is_finite() && call.dur_us.is_finite() && call.end_ms().is_finite());
    }
});

/// Equal calls; times equal as numbers (`-0` is `0`) to within one rounding
/// step: serde_json (without `float_roundtrip`) may round a decimal of more
/// than 15 digits to the neighbour of the nearest double.
fn same(a: &Call, b: &Call) -> bool {
    let close = |x: f64, y: f64| x == y || (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs());
    close(a.ts_ms, b.ts_ms)
        && close(a.dur_us, b.dur_us)
        && (a.pid, a.tid, a.func, a.ret, a.error) == (b.pid, b.tid, b.func, b.ret, b.error)
        && a.args == b.args
}
