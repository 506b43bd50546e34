//! Formats one completed call as a JSONL trace line: the seed's fields (`ts`,
//! `pid`, `type`, `func`, `phase`) plus `tid`, `dur_us`, `ret` and decoded
//! `args`, with the separators of [`super::schema`]. Hand-written for speed:
//! the schema is fixed and every string we emit is a static name, a number
//! or a [`JsonStr`] escaped once, so nothing needs escaping here.

use std::sync::Arc;

use tracer_common::{
    abi::{call_flags, CallEvent},
    funcs::{self, Fmt},
};

use super::{
    schema::{self, arg},
    CopyKind,
};

/// A string already escaped and quoted as JSON, ready to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonStr(pub Arc<str>);

impl JsonStr {
    pub fn new(s: &str) -> Self {
        Self(Arc::from(serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())))
    }
}

/// What the daemon's annotator adds to a line that the record does not
/// carry by itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Annotations {
    /// Demangled kernel name of a launch.
    pub kernel: Option<JsonStr>,
    /// Bytes released by a free (from the matching allocation).
    pub freed_bytes: Option<u64>,
    /// Name of a non-zero return code.
    pub error: Option<&'static str>,
}

/// Writes trace lines with `ts` relative to the session start.
#[derive(Clone, Copy, Debug)]
pub struct LineFormatter {
    /// Boot-time nanoseconds of the session start (`ts` = 0).
    pub start_ns: u64,
}

impl LineFormatter {
    /// Appends one line (with its newline) for `ev` to `out`; `name` is the
    /// string argument read at entry, `ann` what the annotator added.
    /// The caller has checked `ev.func_id` through `decode`.
    pub fn write_call(&self, out: &mut Vec<u8>, ev: &CallEvent, name: Option<&[u8]>, ann: &Annotations) {
        let Some(spec) = funcs::by_id(ev.func_id) else {
            return;
        };
        let ret = ev.ret as u32 as i32;
        out.extend_from_slice(schema::BEFORE_TS);
        write_ms(out, ev.entry_ns as i128 - self.start_ns as i128);
        out.extend_from_slice(schema::BEFORE_PID);
        write_int(out, ev.pid);
        out.extend_from_slice(schema::BEFORE_TID);
        write_int(out, ev.tid);
        out.extend_from_slice(schema::BEFORE_TYPE);
        write_str(out, spec.layer.type_name());
        out.extend_from_slice(schema::BEFORE_FUNC);
        write_str(out, spec.name);
        out.extend_from_slice(schema::PHASE_THEN_DUR_US);
        write_us(out, ev.dur_ns);
        out.extend_from_slice(schema::BEFORE_RET);
        write_int(out, ret);
        if let Some(error) = ann.error {
            out.extend_from_slice(schema::BEFORE_ERROR);
            write_str(out, error);
        }
        out.extend_from_slice(schema::BEFORE_ARGS);
        out.push(b'{');
        let mut first = true;
        for arg in spec.args {
            let w = |i: u8| ev.args.get(i as usize).copied().unwrap_or(0);
            let word = w(arg.word);
            if arg.fmt == Fmt::Out && (ret != 0 || ev.flags & call_flags::OUT_VALID == 0) {
                continue;
            }
            write_key(out, &mut first, arg.name.as_bytes());
            match arg.fmt {
                Fmt::U64 => write_int(out, word),
                Fmt::U32 => write_int(out, word as u32),
                Fmt::Hex => write_hex(out, word),
                Fmt::Out => write_hex(out, ev.out),
                Fmt::Dim3Regs => write_dim3(out, word as u32, (word >> 32) as u32, w(arg.word + 1) as u32),
                Fmt::Dim3Words => write_dim3(out, word as u32, w(arg.word + 1) as u32, w(arg.word + 2) as u32),
                Fmt::MemcpyKind => match CopyKind::from_cuda(word as u32) {
                    Some(k) => write_str(out, k.name()),
                    None => write_int(out, word as u32),
                },
                Fmt::Const(s) => write_str(out, s),
                Fmt::Str => {
                    let text = String::from_utf8_lossy(name.unwrap_or_default());
                    out.extend_from_slice(JsonStr::new(&text).0.as_bytes());
                }
                Fmt::Dim3U32 => {
                    write_dim3(out, u32_at(ev, arg.word), u32_at(ev, arg.word + 1), u32_at(ev, arg.word + 2))
                }
                Fmt::U32At => write_int(out, u32_at(ev, arg.word)),
            }
        }
        if let Some(bytes) = ann.freed_bytes {
            write_key(out, &mut first, arg::BYTES);
            write_int(out, bytes);
        }
        if let Some(kernel) = &ann.kernel {
            write_key(out, &mut first, arg::KERNEL);
            out.extend_from_slice(kernel.0.as_bytes());
        }
        out.push(b'}');
        out.extend_from_slice(schema::END);
        out.push(b'\n');
    }
}

/// The `idx`-th 32-bit half-word of the raw argument words.
fn u32_at(ev: &CallEvent, idx: u8) -> u32 {
    let word = ev.args.get(usize::from(idx / 2)).copied().unwrap_or(0);
    if idx.is_multiple_of(2) {
        word as u32
    } else {
        (word >> 32) as u32
    }
}

/// `"key":` of an `args` entry, after a comma unless it is the `first`.
pub(crate) fn write_key(out: &mut Vec<u8>, first: &mut bool, key: &[u8]) {
    if !std::mem::take(first) {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(key);
    out.extend_from_slice(b"\":");
}

pub(crate) fn write_int(out: &mut Vec<u8>, v: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

fn write_padded(out: &mut Vec<u8>, v: u64, width: usize) {
    let mut buf = itoa::Buffer::new();
    let s = buf.format(v);
    out.extend(std::iter::repeat_n(b'0', width.saturating_sub(s.len())));
    out.extend_from_slice(s.as_bytes());
}

/// Microseconds with nanosecond precision, from integer nanoseconds.
pub(crate) fn write_us(out: &mut Vec<u8>, ns: u64) {
    write_int(out, ns / 1000);
    out.push(b'.');
    write_padded(out, ns % 1000, 3);
}

/// Milliseconds with nanosecond precision, from integer nanoseconds (no
/// float rounding, no float formatting on the hot path).
pub(crate) fn write_ms(out: &mut Vec<u8>, ns: i128) {
    if ns < 0 {
        out.push(b'-');
    }
    let ns = ns.unsigned_abs();
    write_int(out, (ns / 1_000_000) as u64);
    out.push(b'.');
    write_padded(out, (ns % 1_000_000) as u64, 6);
}

pub(crate) fn write_hex(out: &mut Vec<u8>, v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(b"\"0x");
    let nibbles = if v == 0 { 1 } else { (67 - v.leading_zeros() as usize) / 4 };
    for i in (0..nibbles).rev() {
        out.push(DIGITS[((v >> (i * 4)) & 0xf) as usize]);
    }
    out.push(b'"');
}

pub(crate) fn write_dim3(out: &mut Vec<u8>, x: u32, y: u32, z: u32) {
    out.push(b'[');
    write_int(out, x);
    out.push(b',');
    write_int(out, y);
    out.push(b',');
    write_int(out, z);
    out.push(b']');
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use tracer_common::abi::{EventHeader, CALL_EVENT_SIZE};

    fn event(name: &str, args: &[u64]) -> CallEvent {
        let (id, _) = funcs::by_name(name).unwrap();
        let mut ev = CallEvent {
            header: EventHeader { kind: 1, size: CALL_EVENT_SIZE as u32 },
            entry_ns: 1_000_000_000 + 12_345_678,
            dur_ns: 4_567,
            pid: 10,
            tid: 11,
            func_id: id as u32,
            ..Default::default()
        };
        ev.args[..args.len()].copy_from_slice(args);
        ev
    }

    fn line(ev: &CallEvent) -> Value {
        let mut out = Vec::new();
        LineFormatter { start_ns: 1_000_000_000 }.write_call(&mut out, ev, None, &Annotations::default());
        assert_eq!(out.last(), Some(&b'\n'));
        serde_json::from_slice(&out).expect("valid JSON")
    }

    #[test]
    fn seed_fields_and_timing() {
        let v = line(&event("cuCtxSynchronize", &[]));
        assert_eq!(v["ts"], json!(12.345678));
        assert_eq!(v["pid"], 10);
        assert_eq!(v["tid"], 11);
        assert_eq!(v["type"], "cuda_api");
        assert_eq!(v["func"], "cuCtxSynchronize");
        assert_eq!(v["phase"], "entry");
        assert_eq!(v["dur_us"], json!(4.567));
        assert_eq!(v["ret"], 0);
        assert_eq!(v["args"], json!({}));
    }

    #[test]
    fn runtime_launch_unpacks_dim3_registers_and_stack_words() {
        // cudaLaunchKernel(func, grid{128,4,1}, block{256,1,1}, args, shmem, stream)
        let ev = event(
            "cudaLaunchKernel",
            &[0x401000, 128 | (4 << 32), 0xdead_0000_0001, 256 | (1 << 32), 1, 0x7ffc, 1024, 0x1001],
        );
        let v = line(&ev);
        assert_eq!(v["type"], "cuda_runtime");
        assert_eq!(
            v["args"],
            json!({"func":"0x401000","grid":[128,4,1],"block":[256,1,1],"shared_mem":1024,"stream":"0x1001"})
        );
    }

    #[test]
    fn driver_launch_masks_32_bit_words() {
        let hi = 0xffff_ffff_0000_0000u64;
        let ev = event("cuLaunchKernel", &[0x5010, 16 | hi, 8, 1, 128, 1, 1 | hi, 8192, 0x2000, 0, 0]);
        assert_eq!(
            line(&ev)["args"],
            json!({"f":"0x5010","grid":[16,8,1],"block":[128,1,1],"shared_mem":8192,"stream":"0x2000"})
        );
    }

    #[test]
    fn out_pointer_only_on_success() {
        let mut ev = event("cudaMalloc", &[0x7ffd_0000, 4096]);
        ev.out = 0x7f50_0000_0100;
        ev.flags = call_flags::OUT_VALID;
        assert_eq!(line(&ev)["args"], json!({"bytes":4096,"dptr":"0x7f5000000100"}));
        ev.ret = 2;
        let v = line(&ev);
        assert_eq!(v["ret"], 2);
        assert_eq!(v["args"], json!({"bytes":4096}));
    }

    #[test]
    fn memcpy_kind_and_negative_ts() {
        let mut ev = event("cudaMemcpy", &[0x10, 0x20, 64, 2]);
        ev.entry_ns = 999_000_000;
        let v = line(&ev);
        assert_eq!(v["args"]["kind"], "DtoH");
        assert_eq!(v["ts"], json!(-1.0));
        assert_eq!(line(&event("cudaMemcpy", &[0, 0, 1, 9]))["args"]["kind"], 9);
    }

    #[test]
    fn launch_config_struct_names_and_annotations() {
        // CUlaunchConfig copied into words 6..: grid (32,2,1), block (128,1,1), shmem 4096, stream 0x2100.
        let mut ev = event("cuLaunchKernelEx", &[0x7ffc0, 0x5020]);
        ev.args[6] = 32 | (2 << 32);
        ev.args[7] = 1 | (128 << 32);
        ev.args[8] = 1 | (1 << 32);
        ev.args[9] = 4096;
        ev.args[10] = 0x2100;
        ev.ret = 400;
        let ann = Annotations {
            kernel: Some(JsonStr::new("gemm<128>(float const*)")),
            error: Some("CUDA_ERROR_INVALID_HANDLE"),
            freed_bytes: None,
        };
        let mut out = Vec::new();
        LineFormatter { start_ns: 1_000_000_000 }.write_call(&mut out, &ev, None, &ann);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"], "CUDA_ERROR_INVALID_HANDLE");
        assert_eq!(
            v["args"],
            json!({"f":"0x5020","grid":[32,2,1],"block":[128,1,1],"shared_mem":4096,"stream":"0x2100",
                   "kernel":"gemm<128>(float const*)"})
        );
    }

    #[test]
    fn string_arguments_are_escaped_and_frees_get_their_size() {
        let mut ev = event("cuModuleGetFunction", &[0x10, 0x7000, 0x20]);
        ev.out = 0x5010;
        ev.flags = call_flags::OUT_VALID;
        let mut out = Vec::new();
        let f = LineFormatter { start_ns: 0 };
        f.write_call(&mut out, &ev, Some(b"odd\"name"), &Annotations::default());
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["args"], json!({"module":"0x7000","name":"odd\"name","f":"0x5010"}));
        out.clear();
        let ann = Annotations { freed_bytes: Some(4096), ..Default::default() };
        f.write_call(&mut out, &event("cudaFree", &[0xd000]), None, &ann);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["args"], json!({"dptr":"0xd000","bytes":4096}));
    }

    #[test]
    fn hex_formatting() {
        for v in [0u64, 1, 0xf, 0x10, 0xabc, u64::MAX] {
            let mut out = Vec::new();
            write_hex(&mut out, v);
            assert_eq!(String::from_utf8(out).unwrap(), format!("\"0x{v:x}\""));
        }
    }
}
