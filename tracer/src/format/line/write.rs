//! Formats one completed call as a JSONL trace line: the seed's fields (`ts`,
//! `pid`, `type`, `func`, `phase`) plus `tid`, `dur_us`, `ret`, `error`,
//! `caller` and decoded `args`, with the separators of [`super::schema`]. Hand-written for speed:
//! the schema is fixed and every string we emit is a static name, a number
//! or a [`JsonStr`] escaped once, so nothing needs escaping here.

use std::sync::Arc;

use tracer_common::{
    abi::{call_flags, CallEvent},
    funcs::{self, image_bytes, ArgSpec, Fmt, FuncSpec},
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
    /// Name of the file whose code made the call.
    pub caller: Option<JsonStr>,
    /// The module a launch's kernel came from (`ModuleLoad`'s file name or image).
    pub module: Option<JsonStr>,
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
        if let Some(caller) = &ann.caller {
            out.extend_from_slice(schema::BEFORE_CALLER);
            out.extend_from_slice(caller.0.as_bytes());
        }
        out.extend_from_slice(schema::BEFORE_ARGS);
        write_args(out, spec, ev, name, ann);
        out.push(b'}');
        out.extend_from_slice(schema::END);
        out.push(b'\n');
    }
}

/// Whether an argument's value comes from the words the entry probe copies
/// (stack arguments or a struct), past the registers.
fn reads_copied_words(fmt: Fmt, word: u8) -> bool {
    let last = match fmt {
        Fmt::Dim3U32 => (word + 2) / 2,
        Fmt::U32At => word / 2,
        Fmt::Dim3Regs => word + 1,
        Fmt::Dim3Words => word + 2,
        Fmt::Product(n) => word + n.saturating_sub(1),
        Fmt::NcclBytes(datatype) => word.max(datatype),
        Fmt::Out | Fmt::OutI32 | Fmt::OutU64 | Fmt::OutF32 | Fmt::Out2U64 | Fmt::Const(_) | Fmt::Str => return false,
        Fmt::U64 | Fmt::U32 | Fmt::I32 | Fmt::Hex | Fmt::MemcpyKind | Fmt::NcclType | Fmt::NcclOp | Fmt::ImageBytes => {
            word
        }
    };
    usize::from(last) >= tracer_common::abi::REG_ARGS
}

/// NCCL's arguments: datatypes and reduction ops by name, a buffer's bytes.
mod nccl {
    use tracer_common::funcs::{nccl, ArgSpec, Fmt};

    /// Whether `fmt` writes anything: a buffer's size needs a datatype NCCL defines.
    pub(super) fn has_value(fmt: Fmt, w: &impl Fn(u8) -> u64) -> bool {
        match fmt {
            Fmt::NcclBytes(datatype) => nccl::datatype(w(datatype) as u32).is_some(),
            _ => true,
        }
    }

    /// A value NCCL does not name is written as its number.
    pub(super) fn write(out: &mut Vec<u8>, arg: &ArgSpec, w: &impl Fn(u8) -> u64) {
        let word = w(arg.word);
        let name = match arg.fmt {
            Fmt::NcclType => nccl::datatype(word as u32).map(|(name, _)| name),
            Fmt::NcclOp => nccl::redop(word as u32),
            Fmt::NcclBytes(datatype) => {
                let size = nccl::datatype(w(datatype) as u32).map_or(0, |(_, size)| size);
                return super::write_int(out, word.saturating_mul(size));
            }
            _ => None,
        };
        match name {
            Some(name) => super::write_str(out, name),
            None => super::write_int(out, word as u32),
        }
    }
}

/// The `{...}` of a line: the row's decoded arguments, then what the
/// annotator added (a free's bytes, the kernel name, its module).
fn write_args(out: &mut Vec<u8>, spec: &FuncSpec, ev: &CallEvent, name: Option<&[u8]>, ann: &Annotations) {
    out.push(b'{');
    let mut first = true;
    for arg in spec.args {
        let w = |i: u8| ev.args.get(i as usize).copied().unwrap_or(0);
        let word = w(arg.word);
        if !shown(arg, ev) || !nccl::has_value(arg.fmt, &w) {
            continue;
        }
        // Stack words or a struct the probe could not read: no value, not zeros.
        if ev.flags & call_flags::STACK_UNREAD != 0 && reads_copied_words(arg.fmt, arg.word) {
            continue;
        }
        write_key(out, &mut first, arg.name.as_bytes());
        write_value(out, arg, ev, name, word, &w);
    }
    if let Some(bytes) = ann.freed_bytes {
        write_key(out, &mut first, arg::BYTES);
        write_int(out, bytes);
    }
    if let Some(kernel) = &ann.kernel {
        write_key(out, &mut first, arg::KERNEL);
        out.extend_from_slice(kernel.0.as_bytes());
    }
    if let Some(module) = &ann.module {
        write_key(out, &mut first, arg::MODULE);
        out.extend_from_slice(module.0.as_bytes());
    }
}

/// One decoded argument's value, formed as its row says.
fn write_value(
    out: &mut Vec<u8>,
    arg: &ArgSpec,
    ev: &CallEvent,
    name: Option<&[u8]>,
    word: u64,
    w: &impl Fn(u8) -> u64,
) {
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
        Fmt::Dim3U32 => write_dim3(out, u32_at(ev, arg.word), u32_at(ev, arg.word + 1), u32_at(ev, arg.word + 2)),
        Fmt::U32At => write_int(out, u32_at(ev, arg.word)),
        Fmt::Product(n) => write_int(out, (arg.word..arg.word + n).map(w).fold(1u64, u64::saturating_mul)),
        Fmt::OutI32 => write_int(out, ev.out as u32 as i32),
        Fmt::NcclType | Fmt::NcclOp | Fmt::NcclBytes(_) => nccl::write(out, arg, w),
        Fmt::I32 => write_int(out, word as u32 as i32),
        Fmt::OutU64 => write_int(out, ev.out),
        Fmt::OutF32 => write_float(out, f32::from_bits(ev.out as u32)),
        Fmt::Out2U64 => write_int(out, word),
        Fmt::ImageBytes => write_int(out, image_bytes(struct_words(arg, ev)).unwrap_or(0)),
    }
}

/// Whether an argument has a value to show: one read at return only when
/// the call succeeded and the read did, an image size only when known.
fn shown(arg: &ArgSpec, ev: &CallEvent) -> bool {
    let ok = ev.ret as u32 == 0;
    match arg.fmt {
        Fmt::Out2U64 => ok && ev.flags & call_flags::OUT2_VALID != 0,
        f if f.is_out() => ok && ev.flags & call_flags::OUT_VALID != 0,
        Fmt::ImageBytes => ev.flags & call_flags::STACK_UNREAD == 0 && image_bytes(struct_words(arg, ev)).is_some(),
        _ => true,
    }
}

/// The struct words the probe copied, from the argument's word on.
fn struct_words<'a>(arg: &ArgSpec, ev: &'a CallEvent) -> &'a [u64] {
    ev.args.get(usize::from(arg.word)..).unwrap_or_default()
}

/// A float as a JSON number (`null` when it is not finite).
fn write_float(out: &mut Vec<u8>, v: f32) {
    if v.is_finite() {
        out.extend_from_slice(f64::from(v).to_string().as_bytes());
    } else {
        out.extend_from_slice(b"null");
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
    fn typed_outs_a_second_out_and_image_sizes() {
        let mut ev = event("cuEventElapsedTime", &[0x7ffd_0000, 0x10, 0x20]);
        ev.out = u64::from(2.5f32.to_bits()) | 0xdead_0000_0000_0000;
        ev.flags = call_flags::OUT_VALID;
        assert_eq!(line(&ev)["args"], json!({"start":"0x10","end":"0x20","ms":2.5}));
        let mut ev = event("cuMemGetInfo_v2", &[0x7ffd_0000, 0x7ffd_0008]);
        (ev.out, ev.flags) = (4096, call_flags::OUT_VALID);
        ev.args[tracer_common::abi::OUT2_WORD] = 8192;
        assert_eq!(line(&ev)["args"], json!({"free":4096}), "no total unless it was read");
        ev.flags |= call_flags::OUT2_VALID;
        assert_eq!(line(&ev)["args"], json!({"free":4096,"total":8192}));
        let mut ev = event("cuStreamCreateWithPriority", &[0x7ffd_0000, 1, u64::from((-3i32) as u32)]);
        (ev.out, ev.flags) = (0x9000, call_flags::OUT_VALID);
        assert_eq!(line(&ev)["args"], json!({"stream":"0x9000","flags":1,"priority":-3}));
        let mut ev = event("cuModuleLoadData", &[0x7ffd_0000, 0x5000]);
        ev.args[6] = 0xba55_ed50 | (16 << 48);
        ev.args[7] = 4080;
        assert_eq!(line(&ev)["args"], json!({"image":"0x5000","image_bytes":4096}));
        ev.flags = call_flags::STACK_UNREAD;
        assert_eq!(line(&ev)["args"], json!({"image":"0x5000"}), "the header could not be read");
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
            caller: Some(JsonStr::new("libcublasLt.so.12")),
            module: Some(JsonStr::new("gemm.cubin")),
        };
        let mut out = Vec::new();
        LineFormatter { start_ns: 1_000_000_000 }.write_call(&mut out, &ev, None, &ann);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"], "CUDA_ERROR_INVALID_HANDLE");
        assert_eq!(v["caller"], "libcublasLt.so.12");
        assert_eq!(
            v["args"],
            json!({"f":"0x5020","grid":[32,2,1],"block":[128,1,1],"shared_mem":4096,"stream":"0x2100",
                   "kernel":"gemm<128>(float const*)","module":"gemm.cubin"})
        );
    }

    #[test]
    fn an_unread_struct_gives_no_values() {
        // cuMemcpy3D_v2(NULL): the descriptor could not be read.
        let mut ev = event("cuMemcpy3D_v2", &[0]);
        ev.flags = call_flags::STACK_UNREAD;
        ev.ret = 1;
        let mut out = Vec::new();
        LineFormatter { start_ns: 0 }.write_call(&mut out, &ev, None, &Annotations::default());
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["args"], json!({}));
        // Read: width x height x depth from the copied words 9..12.
        ev.flags = 0;
        ev.args[9..12].copy_from_slice(&[64, 8, 4]);
        out.clear();
        LineFormatter { start_ns: 0 }.write_call(&mut out, &ev, None, &Annotations::default());
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["args"], json!({"bytes": 2048}));
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
