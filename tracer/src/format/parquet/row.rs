//! One trace line as one Parquet row, both ways: [`Row::from_line`] takes
//! apart what the JSONL line writer wrote (the common fields into typed
//! columns, the rest of `args` and any top-level key this module does not
//! know, such as one a later tracer adds, into JSON strings), and
//! [`Row::write_line`] puts the same line back together, so every reader
//! of JSONL reads a Parquet file with the same result.

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::format::line::{
    schema::{self, arg, key},
    write::{write_dim3, write_hex, write_int, write_key, write_ms, write_us},
};

/// A line the row cannot hold.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    #[error("not a JSON object: {0}")]
    Json(#[from] serde_json::Error),
    #[error("field {0:?} missing or out of range")]
    Field(&'static str),
}

/// One call, column by column (see [`super::schema::col`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Row {
    pub ts_ns: i64,
    pub dur_ns: i64,
    pub pid: i32,
    pub tid: i32,
    pub layer: String,
    pub function: String,
    pub ret: i32,
    pub error: Option<String>,
    pub caller: Option<String>,
    pub kernel: Option<String>,
    pub bytes: Option<i64>,
    pub direction: Option<String>,
    pub grid: Option<[i32; 3]>,
    pub block: Option<[i32; 3]>,
    pub shared_mem: Option<i64>,
    pub stream: Option<i64>,
    pub graph_exec: Option<i64>,
    pub dptr: Option<i64>,
    /// The other `args`, as a JSON object; `None` when there are none.
    pub args: Option<String>,
    /// Top-level keys no column holds, as a JSON object.
    pub extra: Option<String>,
}

const CALLER: &str = "caller";
const TYPE: &str = "type";
const PHASE: &str = "phase";
const ENTRY: &str = "entry";

fn text(k: &[u8]) -> &str {
    std::str::from_utf8(k).unwrap_or_default()
}

/// `ms` (or `us`) as integer nanoseconds: the writer prints them with
/// nanosecond precision, which an f64 holds exactly for over 100 days.
fn nanos(v: Option<Value>, scale: f64, name: &'static str) -> Result<i64, RowError> {
    let f = v.as_ref().and_then(Value::as_f64).filter(|f| crate::format::line::plausible_time(*f));
    f.map(|f| (f * scale).round() as i64).ok_or(RowError::Field(name))
}

fn int<T: TryFrom<i64>>(v: Option<Value>, name: &'static str) -> Result<T, RowError> {
    v.as_ref().and_then(Value::as_i64).and_then(|i| T::try_from(i).ok()).ok_or(RowError::Field(name))
}

fn string(v: Option<Value>, name: &'static str) -> Result<String, RowError> {
    match v {
        Some(Value::String(s)) => Ok(s),
        _ => Err(RowError::Field(name)),
    }
}

/// Removes `k` from `map` when `pick` takes its value.
fn take<T>(map: &mut Map<String, Value>, k: &[u8], pick: impl Fn(&Value) -> Option<T>) -> Option<T> {
    let picked = pick(map.get(text(k))?)?;
    map.remove(text(k));
    Some(picked)
}

fn as_i64(v: &Value) -> Option<i64> {
    v.as_u64().and_then(|u| i64::try_from(u).ok())
}

fn as_hex(v: &Value) -> Option<i64> {
    let digits = v.as_str()?.strip_prefix("0x")?;
    // Only what the writer prints reads back as itself: lowercase, no leading zeros.
    let ok =
        digits == "0" || (!digits.starts_with('0') && digits.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    ok.then(|| u64::from_str_radix(digits, 16).ok().and_then(|u| i64::try_from(u).ok())).flatten()
}

fn as_str(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

fn as_dim3(v: &Value) -> Option<[i32; 3]> {
    let a = v.as_array()?;
    let dim = |i: usize| a.get(i).and_then(Value::as_u64).and_then(|u| i32::try_from(u).ok());
    (a.len() == 3).then(|| Some([dim(0)?, dim(1)?, dim(2)?])).flatten()
}

fn object(map: Map<String, Value>) -> Option<String> {
    (!map.is_empty()).then(|| Value::Object(map).to_string())
}

/// A key of the line: absent (`None`) or present, `null` included.
#[derive(Default)]
struct Present(Option<Value>);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::deserialize(d).map(|v| Present(Some(v)))
    }
}

/// The top-level keys the line writer writes, and no others: such a line
/// is read without building a map of its keys (the daemon makes a row of
/// every line it writes).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KnownKeys {
    #[serde(default)]
    ts: Present,
    #[serde(default)]
    pid: Present,
    #[serde(default)]
    tid: Present,
    #[serde(default, rename = "type")]
    layer: Present,
    #[serde(default)]
    func: Present,
    #[serde(default)]
    phase: Present,
    #[serde(default)]
    dur_us: Present,
    #[serde(default)]
    ret: Present,
    #[serde(default)]
    error: Present,
    #[serde(default)]
    caller: Present,
    #[serde(default)]
    args: Present,
}

/// The line's fields every row has, as read.
struct Common {
    ts: Option<Value>,
    dur_us: Option<Value>,
    pid: Option<Value>,
    tid: Option<Value>,
    layer: Option<Value>,
    function: Option<Value>,
    ret: Option<Value>,
}

impl Common {
    /// The row of these fields and `args` (its typed members taken out,
    /// the rest kept as JSON); no error, caller or extra keys.
    fn into_row(self, mut args: Map<String, Value>) -> Result<Row, RowError> {
        let row = Row {
            ts_ns: nanos(self.ts, 1e6, "ts")?,
            dur_ns: nanos(self.dur_us, 1e3, "dur_us").and_then(|d| {
                if d < 0 {
                    Err(RowError::Field("dur_us"))
                } else {
                    Ok(d)
                }
            })?,
            pid: int(self.pid, "pid")?,
            tid: int(self.tid, "tid")?,
            layer: string(self.layer, "type")?,
            function: string(self.function, "func")?,
            ret: int(self.ret, "ret")?,
            error: None,
            caller: None,
            kernel: take(&mut args, arg::KERNEL, as_str),
            bytes: take(&mut args, arg::BYTES, as_i64),
            direction: take(&mut args, arg::KIND, as_str),
            grid: take(&mut args, arg::GRID, as_dim3),
            block: take(&mut args, arg::BLOCK, as_dim3),
            shared_mem: take(&mut args, arg::SHARED_MEM, as_i64),
            stream: take(&mut args, arg::STREAM, as_hex),
            graph_exec: take(&mut args, arg::EXEC, as_hex),
            dptr: take(&mut args, arg::DPTR, as_hex),
            args: None,
            extra: None,
        };
        Ok(Row { args: object(args), ..row })
    }
}

impl Row {
    /// The row of one JSONL trace line (without or with its newline).
    pub fn from_line(line: &[u8]) -> Result<Self, RowError> {
        match Self::from_known_keys(line) {
            Some(row) => Ok(row),
            None => Self::from_any_keys(line),
        }
    }

    /// The row of a line with only the keys the writer writes, each as it
    /// writes them; `None` for any other line, which
    /// [`Self::from_any_keys`] reads (with the same result where both do).
    fn from_known_keys(line: &[u8]) -> Option<Self> {
        let k: KnownKeys = serde_json::from_slice(line).ok()?;
        let Some(Value::Object(args)) = k.args.0 else { return None };
        let text = |p: Present| match p.0 {
            None => Some(None),
            Some(Value::String(s)) => Some(Some(s)),
            Some(_) => None,
        };
        if text(k.phase)?.is_some_and(|p| p != ENTRY) {
            return None;
        }
        let (error, caller) = (text(k.error)?, text(k.caller)?);
        let common = Common {
            ts: k.ts.0,
            dur_us: k.dur_us.0,
            pid: k.pid.0,
            tid: k.tid.0,
            layer: k.layer.0,
            function: k.func.0,
            ret: k.ret.0,
        };
        Some(Row { error, caller, ..common.into_row(args).ok()? })
    }

    /// The row of any line: keys no column holds go to `extra`.
    fn from_any_keys(line: &[u8]) -> Result<Self, RowError> {
        let mut top: Map<String, Value> = serde_json::from_slice(line)?;
        let args = match top.remove(text(key::ARGS)) {
            Some(Value::Object(m)) => m,
            _ => return Err(RowError::Field("args")),
        };
        if top.get(PHASE).and_then(Value::as_str) == Some(ENTRY) {
            top.remove(PHASE);
        }
        let mut field = |k: &[u8]| top.remove(text(k));
        let common = Common {
            ts: field(key::TS),
            dur_us: field(key::DUR_US),
            pid: field(key::PID),
            tid: field(key::TID),
            layer: field(TYPE.as_bytes()),
            function: field(key::FUNC),
            ret: field(key::RET),
        };
        let row = common.into_row(args)?;
        let error = take(&mut top, key::ERROR, as_str);
        let caller = take(&mut top, CALLER.as_bytes(), as_str);
        Ok(Row { error, caller, extra: object(top), ..row })
    }

    /// Appends the JSONL line (with its newline) this row was made from.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        let quoted = |out: &mut Vec<u8>, s: &str| {
            out.extend_from_slice(serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()).as_bytes())
        };
        out.extend_from_slice(schema::BEFORE_TS);
        write_ms(out, i128::from(self.ts_ns));
        out.extend_from_slice(schema::BEFORE_PID);
        write_int(out, self.pid);
        out.extend_from_slice(schema::BEFORE_TID);
        write_int(out, self.tid);
        out.extend_from_slice(schema::BEFORE_TYPE);
        quoted(out, &self.layer);
        out.extend_from_slice(schema::BEFORE_FUNC);
        quoted(out, &self.function);
        out.extend_from_slice(schema::PHASE_THEN_DUR_US);
        write_us(out, self.dur_ns.max(0) as u64);
        out.extend_from_slice(schema::BEFORE_RET);
        write_int(out, self.ret);
        if let Some(error) = &self.error {
            out.extend_from_slice(schema::BEFORE_ERROR);
            quoted(out, error);
        }
        out.extend_from_slice(schema::BEFORE_ARGS);
        out.push(b'{');
        let mut first = true;
        let hexes = [(arg::STREAM, self.stream), (arg::EXEC, self.graph_exec), (arg::DPTR, self.dptr)];
        for (k, v) in hexes.into_iter().filter_map(|(k, v)| Some((k, v?))) {
            write_key(out, &mut first, k);
            write_hex(out, v as u64);
        }
        for (k, v) in [(arg::BYTES, self.bytes), (arg::SHARED_MEM, self.shared_mem)] {
            if let Some(v) = v {
                write_key(out, &mut first, k);
                write_int(out, v);
            }
        }
        for (k, v) in [(arg::GRID, self.grid), (arg::BLOCK, self.block)] {
            if let Some([x, y, z]) = v {
                write_key(out, &mut first, k);
                write_dim3(out, x as u32, y as u32, z as u32);
            }
        }
        for (k, v) in [(arg::KIND, &self.direction), (arg::KERNEL, &self.kernel)] {
            if let Some(v) = v {
                write_key(out, &mut first, k);
                quoted(out, v);
            }
        }
        if let Some(inner) = self.args.as_deref().and_then(inside_braces) {
            if !first {
                out.push(b',');
            }
            out.extend_from_slice(inner.as_bytes());
        }
        out.push(b'}');
        if let Some(caller) = &self.caller {
            out.extend_from_slice(b",\"caller\":");
            quoted(out, caller);
        }
        if let Some(inner) = self.extra.as_deref().and_then(inside_braces) {
            out.push(b',');
            out.extend_from_slice(inner.as_bytes());
        }
        out.extend_from_slice(schema::END);
        out.push(b'\n');
    }
}

/// The members of a non-empty JSON object's text.
fn inside_braces(object: &str) -> Option<&str> {
    object.strip_prefix('{')?.strip_suffix('}').filter(|s| !s.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(line: &str) -> Row {
        let row = Row::from_line(line.as_bytes()).unwrap();
        assert_eq!(Row::from_any_keys(line.as_bytes()).unwrap(), row, "both readers make the same row");
        let mut out = Vec::new();
        row.write_line(&mut out);
        let back: Value = serde_json::from_slice(&out).unwrap();
        let orig: Value = serde_json::from_str(line).unwrap();
        assert_eq!(back, orig, "{}", String::from_utf8_lossy(&out));
        assert_eq!(Row::from_line(&out).unwrap(), row, "a written line reads back as the same row");
        row
    }

    #[test]
    fn a_launch_keeps_every_field() {
        let row = round_trip(
            r#"{"ts":12.345678,"pid":10,"tid":11,"type":"cuda_driver","func":"cuLaunchKernel","phase":"entry","dur_us":4.567,"ret":0,"args":{"f":"0x5010","grid":[16,8,1],"block":[128,1,1],"shared_mem":8192,"stream":"0x2000","kernel":"k<1>(\"x\")"}}"#,
        );
        assert_eq!((row.ts_ns, row.dur_ns), (12_345_678, 4_567));
        assert_eq!(
            (row.grid, row.block, row.shared_mem, row.stream),
            (Some([16, 8, 1]), Some([128, 1, 1]), Some(8192), Some(0x2000))
        );
        assert_eq!(row.kernel.as_deref(), Some("k<1>(\"x\")"));
        assert_eq!(row.args.as_deref(), Some(r#"{"f":"0x5010"}"#));
    }

    #[test]
    fn errors_copies_odd_values_and_unknown_keys_survive() {
        let row = round_trip(
            r#"{"ts":-1.000000,"pid":1,"tid":1,"type":"cuda_runtime","func":"cudaMemcpy","phase":"entry","dur_us":0.001,"ret":1,"error":"cudaErrorInvalidValue","args":{"dst":"0x10","src":"0x20","bytes":64,"kind":9},"caller":"libtorch.so","newer":{"a":[1]}}"#,
        );
        assert_eq!((row.ts_ns, row.bytes, row.direction.as_deref()), (-1_000_000, Some(64), None));
        assert_eq!(row.caller.as_deref(), Some("libtorch.so"));
        assert_eq!(row.extra.as_deref(), Some(r#"{"newer":{"a":[1]}}"#));
        let row = round_trip(
            r#"{"ts":0.5,"pid":1,"tid":1,"type":"cuda_runtime","func":"cudaFree","phase":"entry","dur_us":1.0,"ret":0,"args":{"dptr":"0x00d0","bytes":18446744073709551615}}"#,
        );
        assert_eq!((row.dptr, row.bytes), (None, None), "values a column cannot hold as written stay in args");
    }

    #[test]
    fn a_line_as_the_writer_writes_it_takes_the_fast_path_and_any_other_the_general_one() {
        let line = r#"{"ts":1.0,"pid":1,"tid":2,"type":"cuda_runtime","func":"cudaFree","phase":"entry","dur_us":1.0,"ret":0,"error":"e","args":{"dptr":"0x10"},"caller":"libx.so"}"#;
        assert!(Row::from_known_keys(line.as_bytes()).is_some());
        for other in [
            line.replace(r#""phase":"entry""#, r#""phase":"exit""#),
            line.replace(r#""error":"e""#, r#""error":null"#),
            line.replace(r#""caller":"libx.so""#, r#""caller":7"#),
            line.replace(r#""ret":0"#, r#""ret":0,"newer":true"#),
            line.replace(r#""ret":0"#, r#""ret":0,"ret":1"#),
        ] {
            assert!(Row::from_known_keys(other.as_bytes()).is_none(), "{other}");
            round_trip(&other);
        }
    }

    #[test]
    fn a_line_without_the_common_fields_is_refused() {
        assert!(Row::from_line(br#"{"ts":1,"pid":1,"func":"x","args":{}}"#).is_err());
        assert!(Row::from_line(b"not json").is_err());
    }
}
