//! The slow path: any line serde_json can read (other spacing, escapes,
//! key order), with the reason when a line is bad. The fast reader
//! ([`super::read`]) hands over every line it declines.

use serde::Deserialize;
use tracer_common::funcs;

use super::{plausible_time, Args, Call, ErrorName};

/// Why one line was skipped.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum LineError {
    #[error("not JSON or not a trace line: {0}")]
    Json(String),
    #[error("{0:?} is not a function name (empty, too long or with a NUL)")]
    UnknownFunction(String),
    #[error("ret {0} is not a 32-bit CUDA result (the tracer writes CUresult/cudaError_t values)")]
    Ret(i64),
    #[error("more than 65 534 distinct error names (this is not a CUDA trace)")]
    TooManyErrorNames,
    /// A whole file that could not be read (a truncated Parquet file).
    #[error("{0}; the whole file was skipped")]
    File(String),
}

#[derive(Deserialize)]
struct RawLine<'a> {
    ts: f64,
    pid: u32,
    #[serde(default)]
    tid: Option<u32>,
    #[serde(borrow)]
    func: std::borrow::Cow<'a, str>,
    #[serde(default, rename = "type", borrow)]
    layer: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    dur_us: f64,
    #[serde(default)]
    ret: i64,
    #[serde(default)]
    error: Option<Box<str>>,
    #[serde(default)]
    caller: Option<Box<str>>,
    #[serde(default)]
    args: Args,
}

/// Parses one trace line (without its newline).
pub fn parse_line(line: &[u8]) -> Result<Call, LineError> {
    let mut raw: RawLine = serde_json::from_slice(line).map_err(|e| LineError::Json(e.to_string()))?;
    if !plausible_time(raw.ts) {
        return Err(LineError::Json(format!("ts {} is not a finite number of milliseconds", raw.ts)));
    }
    if !plausible_time(raw.dur_us) {
        return Err(LineError::Json(format!("dur_us {} is not a finite number of microseconds", raw.dur_us)));
    }
    // A name without a row (traced name-only) takes the line's `type`.
    let layer = raw.layer.as_deref().and_then(|t| funcs::Layer::from_type_name(t.as_bytes()));
    let func = funcs::extra::intern(&raw.func, layer.unwrap_or(funcs::Layer::Driver))
        .ok_or_else(|| LineError::UnknownFunction(raw.func.to_string()))?;
    let error = match raw.error {
        Some(name) => Some(ErrorName::new(&name).ok_or(LineError::TooManyErrorNames)?),
        None => None,
    };
    if raw.caller.is_some() {
        raw.args.set_caller(raw.caller.as_deref());
    }
    Ok(Call {
        ts_ms: raw.ts,
        pid: raw.pid,
        tid: raw.tid.unwrap_or(raw.pid),
        func,
        dur_us: raw.dur_us,
        ret: i32::try_from(raw.ret).map_err(|_| LineError::Ret(raw.ret))?,
        error,
        args: raw.args,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::line::Hex;
    use tracer_common::funcs::{Group, Layer};

    #[test]
    fn parses_a_launch_line() {
        let line = br#"{"ts":31.2,"pid":7,"tid":8,"type":"cuda_runtime","func":"cudaLaunchKernel","phase":"entry","dur_us":18.2,"ret":0,"args":{"func":"0x55d1","grid":[128,4,1],"block":[256,1,1],"shared_mem":1024,"stream":"0x1000","kernel":"gemm<float>"}}"#;
        let c = parse_line(line).unwrap();
        assert_eq!(c.name(), "cudaLaunchKernel");
        assert_eq!(c.args.f(), Some(Hex(0x55d1)));
        assert_eq!(c.args.grid(), Some([128, 4, 1]));
        assert_eq!(c.args.stream(), Some(Hex(0x1000)));
        assert_eq!(c.args.kernel(), Some("gemm<float>"));
        assert_eq!(c.group(), Group::Launch);
    }

    #[test]
    fn size_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Call>(), 64);
    }

    #[test]
    fn bad_lines_say_why() {
        assert!(matches!(parse_line(b"{\"ts\":1"), Err(LineError::Json(_))));
        let e = parse_line(br#"{"ts":1,"pid":1,"func":""}"#).unwrap_err();
        assert_eq!(e, LineError::UnknownFunction("".into()));
        // A name without a row is a function traced name-only.
        let c = parse_line(br#"{"ts":1,"pid":1,"type":"cuda_api","func":"cuNope"}"#).unwrap();
        assert_eq!((c.name(), c.layer(), c.group()), ("cuNope", Layer::Driver, Group::Exported));
        let e = parse_line(br#"{"ts":1,"pid":1,"func":"cuInit","ret":4294967296}"#).unwrap_err();
        assert_eq!(e, LineError::Ret(1 << 32));
        assert!(e.to_string().contains("32-bit"), "{e}");
    }
}
