//! What the fuzz targets share: when two readings of one line are the same call.

use cuda_tracer::format::line::Call;

/// Equal calls; times equal as numbers (`-0` is `0`) to within one rounding
/// step: serde_json (without `float_roundtrip`) may round a decimal of more
/// than 15 digits to the neighbour of the nearest double, where the fast
/// reader uses the standard library's exact parse.
pub fn same_call(a: &Call, b: &Call) -> bool {
    let close = |x: f64, y: f64| x == y || (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs());
    close(a.ts_ms, b.ts_ms)
        && close(a.dur_us, b.dur_us)
        && (a.pid, a.tid, a.func, a.ret, a.error) == (b.pid, b.tid, b.func, b.ret, b.error)
        && a.args == b.args
}
