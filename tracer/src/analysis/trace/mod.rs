//! Reading trace files back: one JSONL line → one typed [`Call`]; the
//! analyses (`report`, `export`) work on these, never on raw JSON.

mod args;
pub mod fast;
mod hash;
pub mod intern;
pub mod read;
mod sort;

use serde::{de, Deserialize, Deserializer};
use tracer_common::funcs::{self, FuncSpec, Group, Layer};

pub use args::Args;
pub use intern::{ErrorName, Launch};
pub use read::{discover, read, read_with_progress, Loaded, ReadError, Skipped};

/// A device pointer or handle: the trace writes them as `"0x…"` strings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hex(pub u64);

impl<'de> Deserialize<'de> for Hex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Hex;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a hex string like \"0x7f00\" or an integer")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Hex, E> {
                let digits = s.strip_prefix("0x").unwrap_or(s);
                u64::from_str_radix(digits, 16).map(Hex).map_err(|_| E::custom(format!("bad hex value {s:?}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Hex, E> {
                Ok(Hex(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl std::fmt::Display for Hex {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// Direction of a copy, as the trace's `kind` argument names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
pub enum CopyKind {
    HtoD,
    DtoH,
    DtoD,
    HtoH,
    Default,
    #[serde(other)]
    #[default]
    Other,
}

/// One completed CUDA call: one trace line. 64 bytes, one cache line: a
/// gigabyte of trace is millions of calls, and the report's time goes into
/// writing and reading them (`size_is_one_cache_line` checks).
#[derive(Clone, Debug)]
pub struct Call {
    /// Milliseconds since the session started, at entry.
    pub ts_ms: f64,
    pub pid: u32,
    pub tid: u32,
    /// Index into [`funcs::FUNCS`].
    pub func: u16,
    pub dur_us: f64,
    /// `CUresult` / `cudaError_t`: 32 bits, as the tracer writes it.
    pub ret: i32,
    /// The error's name when `ret != 0`.
    pub error: Option<ErrorName>,
    /// Inline and packed: no allocation per call.
    pub args: Args,
}

impl Call {
    pub fn spec(&self) -> &'static FuncSpec {
        &funcs::FUNCS[usize::from(self.func)]
    }
    pub fn name(&self) -> &'static str {
        self.spec().name
    }
    pub fn layer(&self) -> Layer {
        self.spec().layer
    }
    pub fn group(&self) -> Group {
        self.spec().group
    }
    /// End of the call in session milliseconds.
    pub fn end_ms(&self) -> f64 {
        self.ts_ms + self.dur_us / 1000.0
    }
    pub fn ok(&self) -> bool {
        self.ret == 0
    }
    pub fn error_name(&self) -> Option<&'static str> {
        self.error.map(ErrorName::as_str)
    }
    /// The placeholder of a line that could not be read, while reading:
    /// it sorts last (its time is infinite) and is cut off.
    pub(crate) fn hole() -> Self {
        Call {
            ts_ms: f64::INFINITY,
            pid: 0,
            tid: 0,
            func: HOLE,
            dur_us: 0.0,
            ret: 0,
            error: None,
            args: Args::default(),
        }
    }
    pub(crate) fn is_hole(&self) -> bool {
        self.func == HOLE
    }
}

/// [`Call::func`] of a hole: no index of [`funcs::FUNCS`].
const HOLE: u16 = u16::MAX;

/// Why one line was skipped.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum LineError {
    #[error("not JSON or not a trace line: {0}")]
    Json(String),
    #[error("unknown function {0:?} (a trace from a newer tracer?)")]
    UnknownFunction(String),
    #[error("ret {0} is not a 32-bit CUDA result (the tracer writes CUresult/cudaError_t values)")]
    Ret(i64),
    #[error("more than 65 534 distinct error names (this is not a CUDA trace)")]
    TooManyErrorNames,
}

#[derive(Deserialize)]
struct RawLine<'a> {
    ts: f64,
    pid: u32,
    #[serde(default)]
    tid: Option<u32>,
    #[serde(borrow)]
    func: std::borrow::Cow<'a, str>,
    #[serde(default)]
    dur_us: f64,
    #[serde(default)]
    ret: i64,
    #[serde(default)]
    error: Option<Box<str>>,
    #[serde(default)]
    args: Args,
}

/// Parses one trace line (without its newline).
pub fn parse_line(line: &[u8]) -> Result<Call, LineError> {
    let raw: RawLine = serde_json::from_slice(line).map_err(|e| LineError::Json(e.to_string()))?;
    if !raw.ts.is_finite() {
        return Err(LineError::Json(format!("ts {} is not a finite number", raw.ts)));
    }
    let (func, _) = funcs::by_name(&raw.func).ok_or_else(|| LineError::UnknownFunction(raw.func.to_string()))?;
    let error = match raw.error {
        Some(name) => Some(ErrorName::new(&name).ok_or(LineError::TooManyErrorNames)?),
        None => None,
    };
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
        let e = parse_line(br#"{"ts":1,"pid":1,"func":"cuNope"}"#).unwrap_err();
        assert_eq!(e, LineError::UnknownFunction("cuNope".into()));
        let e = parse_line(br#"{"ts":1,"pid":1,"func":"cuInit","ret":4294967296}"#).unwrap_err();
        assert_eq!(e, LineError::Ret(1 << 32));
        assert!(e.to_string().contains("32-bit"), "{e}");
    }
}
