//! The JSONL trace line, writer and readers side by side: [`schema`] lists
//! its keys, [`write`] formats a completed call (the daemon's hot path),
//! [`read`] parses the tracer's own lines in one scan (the report's hot
//! path) and [`fallback`] parses anything else through serde_json, saying
//! why a line is bad. Both readers produce a [`Call`]: 64 bytes with
//! packed [`Args`] and interned names ([`intern`]).

mod args;
pub mod fallback;
mod hash;
pub mod intern;
pub mod read;
pub mod schema;
#[cfg(test)]
mod tests;
pub mod write;

use serde::{de, Deserialize, Deserializer};
use tracer_common::funcs::{self, FuncSpec, Group, Layer};

pub use args::{Args, SlotTaken};
pub use fallback::{parse_line, LineError};
pub use hash::FastMap;
pub use intern::{ErrorName, Launch};
pub use write::{Annotations, JsonStr, LineFormatter};

/// The largest `ts` (ms) or `dur_us` a line may carry: about 31 years.
/// Anything larger (or not finite) is a corrupt line: converted to the
/// microseconds of the Chrome export it would overflow to `inf`, which is
/// not JSON.
pub const MAX_TIME: f64 = 1e15;

/// Whether `v` is a time or duration a trace line can carry ([`MAX_TIME`]).
pub fn plausible_time(v: f64) -> bool {
    v.is_finite() && v.abs() <= MAX_TIME
}

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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CopyKind {
    HtoD,
    DtoH,
    DtoD,
    HtoH,
    Default,
    #[default]
    Other,
}

/// A name, or the number the writer puts for a `cudaMemcpyKind` it has no
/// name for (a line with `"kind":9` used to be refused as corrupt).
impl<'de> Deserialize<'de> for CopyKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written<'a> {
            Name(#[serde(borrow)] std::borrow::Cow<'a, str>),
            Number(u64),
        }
        Ok(match Written::deserialize(d)? {
            Written::Name(name) => CopyKind::from_name(name.as_bytes()),
            Written::Number(value) => CopyKind::from_number(value),
        })
    }
}

impl CopyKind {
    /// The kinds the trace names, in `cudaMemcpyKind` order (0 = `HtoH`).
    const BY_CUDA_VALUE: [CopyKind; 5] =
        [CopyKind::HtoH, CopyKind::HtoD, CopyKind::DtoH, CopyKind::DtoD, CopyKind::Default];

    /// The kind a `cudaMemcpyKind` value means; `None` for an unknown value
    /// (written as the number).
    pub fn from_cuda(kind: u32) -> Option<Self> {
        Self::BY_CUDA_VALUE.get(kind as usize).copied()
    }

    /// The kind a number in the trace means: the writer names the kinds
    /// CUDA defines and writes any other value as its number.
    pub fn from_number(value: u64) -> Self {
        u32::try_from(value).ok().and_then(Self::from_cuda).unwrap_or(CopyKind::Other)
    }

    /// The name the trace writes.
    pub fn name(self) -> &'static str {
        match self {
            CopyKind::HtoD => "HtoD",
            CopyKind::DtoH => "DtoH",
            CopyKind::DtoD => "DtoD",
            CopyKind::HtoH => "HtoH",
            CopyKind::Default => "Default",
            CopyKind::Other => "Other",
        }
    }

    /// The kind a name in the trace means ([`CopyKind::Other`] if none).
    pub fn from_name(name: &[u8]) -> Self {
        match name {
            b"HtoD" => CopyKind::HtoD,
            b"DtoH" => CopyKind::DtoH,
            b"DtoD" => CopyKind::DtoD,
            b"HtoH" => CopyKind::HtoH,
            b"Default" => CopyKind::Default,
            _ => CopyKind::Other,
        }
    }
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
    /// Index into [`funcs::FUNCS`], or beyond it an id of the name-only
    /// registry ([`funcs::extra`]): [`funcs::by_id`] finds either.
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
        // Every reader sets `func` from a row or a registered name; a hole
        // (or a call built by hand) reads as a name-only unknown.
        funcs::by_id(u32::from(self.func)).unwrap_or(&funcs::extra::UNKNOWN)
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
