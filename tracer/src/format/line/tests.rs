//! The round trip over every traced function: a call written by the writer
//! reads back, through the fast reader and through serde, as the call it
//! was, with every argument the readers keep. A field renamed on one side
//! only fails here.

use tracer_common::{
    abi::{call_flags, CallEvent, EventHeader, CALL_EVENT_SIZE},
    funcs::{ArgSpec, Fmt, FuncSpec, Group, Role, FUNCS},
};

use super::{intern, read, Annotations, Args, Call, CopyKind, ErrorName, Hex, JsonStr, Launch, LineFormatter};

const START_NS: u64 = 5_000_000_000;
/// The string argument of functions that have one.
const STRING_ARG: &str = "gemm<128, float>";
const KERNEL: &str = "void kern<7>(float const*, int)";
const ERROR: &str = "CUDA_ERROR_OUT_OF_MEMORY";
/// The calling file the annotator names (on the calls that succeed).
const CALLER: &str = "libcublasLt.so.12";

/// Argument names the readers do not keep; every other name in `FUNCS` must
/// be one they decode, so a renamed argument fails this test.
const IGNORED_ARGS: [&str; 29] = [
    "src",
    "dst",
    "flags",
    "name",
    "version",
    "symbol",
    "pool",
    "module",
    "mode",
    "library",
    "priority",
    "start",
    "end",
    "ms",
    "fn",
    "user_data",
    "sync_mode",
    "status",
    "image",
    "image_bytes",
    "num_options",
    "code",
    "fname",
    "ctx",
    "params",
    "device",
    "count",
    "free",
    "total",
];
/// Ignored as well: the arguments of the versioned rows (funcs/versioned.rs).
const IGNORED_VERSIONED_ARGS: [&str; 6] = ["ctx", "device", "advice", "location_type", "location_id", "id"];
/// The memory families' arguments no analysis reads (funcs/memory.rs).
const IGNORED_MEMORY_ARGS: [&str; 14] = [
    "value",
    "count",
    "dst_ctx",
    "src_ctx",
    "dst_device",
    "src_device",
    "dpitch",
    "spitch",
    "alignment",
    "addr",
    "handle",
    "prop",
    "offset",
    "desc",
];
/// NCCL's arguments the readers do not keep.
const IGNORED_NCCL_ARGS: [&str; 12] =
    ["sendbuff", "recvbuff", "count", "datatype", "op", "root", "peer", "nranks", "rank", "config", "ndev", "devlist"];

/// A call of function `id` with a distinctive value in every field; `failed`
/// gives it a negative return code (and no out-pointer value).
fn event(id: usize, spec: &FuncSpec, failed: bool) -> CallEvent {
    let n = id as u64;
    let mut ev = CallEvent {
        header: EventHeader { kind: 1, size: CALL_EVENT_SIZE as u32 },
        entry_ns: START_NS + 1_000_000 * (n + 1) + 123_456 + n,
        dur_ns: 7_000 + 13 * n,
        pid: 1000 + id as u32,
        tid: 2000 + id as u32,
        func_id: id as u32,
        flags: if failed { 0 } else { call_flags::OUT_VALID },
        ret: if failed { u64::from((-(id as i32) - 1) as u32) } else { 0 },
        out: 0x7f00_0000_0000 + 0x100 * n + 0xab,
        ..Default::default()
    };
    for (i, word) in ev.args.iter_mut().enumerate() {
        *word = ((i as u64 + 1) << 32) | (0x100 * n + i as u64 + 1);
    }
    for arg in spec.args.iter().filter(|a| a.fmt == Fmt::MemcpyKind) {
        ev.args[usize::from(arg.word)] = 2 + n % 3;
    }
    // A datatype NCCL defines, so the buffer's bytes are written.
    for arg in spec.args.iter().filter(|a| a.fmt == Fmt::NcclType) {
        ev.args[usize::from(arg.word)] = n % 12;
    }
    ev
}

/// What the annotator would add: a kernel name to launches, a size to frees,
/// the caller (left unknown on failed calls, to read both forms back).
fn annotations(spec: &FuncSpec, failed: bool) -> Annotations {
    let has = |name: &str| spec.args.iter().any(|a| a.name == name);
    let free = matches!(spec.role, Role::Free | Role::HostFree);
    Annotations {
        kernel: (spec.group == Group::Launch && !has("kernel")).then(|| JsonStr::new(KERNEL)),
        freed_bytes: free.then_some(0xf4ee),
        error: failed.then_some(ERROR),
        caller: (!failed).then(|| JsonStr::new(CALLER)),
        module: None,
    }
}

fn u32_at(ev: &CallEvent, idx: u8) -> u32 {
    let word = ev.args[usize::from(idx / 2)];
    if idx.is_multiple_of(2) {
        word as u32
    } else {
        (word >> 32) as u32
    }
}

/// The args a reader must return for `ev`, worked out from the spec (not
/// from the written line).
fn expected_args(spec: &FuncSpec, ev: &CallEvent, ann: &Annotations) -> Args {
    let mut a = Args::default();
    let mut launch = Launch::default();
    let w = |i: u8| ev.args[usize::from(i)];
    for &ArgSpec { name, fmt, word } in spec.args {
        let int = || match fmt {
            Fmt::U64 => w(word),
            Fmt::U32 => u64::from(w(word) as u32),
            Fmt::U32At => u64::from(u32_at(ev, word)),
            Fmt::Product(n) => (word..word + n).map(w).fold(1u64, u64::saturating_mul),
            Fmt::NcclBytes(datatype) => {
                w(word) * tracer_common::funcs::nccl::datatype(w(datatype) as u32).expect("a defined datatype").1
            }
            other => panic!("{}: {name} is {other:?}, not an integer", spec.name),
        };
        let hex = || match fmt {
            Fmt::Hex => Some(Hex(w(word))),
            Fmt::Out => (ev.ret == 0).then_some(Hex(ev.out)),
            other => panic!("{}: {name} is {other:?}, not a handle", spec.name),
        };
        let dim3 = || match fmt {
            Fmt::Dim3Regs => [w(word) as u32, (w(word) >> 32) as u32, w(word + 1) as u32],
            Fmt::Dim3Words => [w(word) as u32, w(word + 1) as u32, w(word + 2) as u32],
            Fmt::Dim3U32 => [u32_at(ev, word), u32_at(ev, word + 1), u32_at(ev, word + 2)],
            other => panic!("{}: {name} is {other:?}, not a dim3", spec.name),
        };
        let set = match name {
            "bytes" => a.set_bytes(Some(int())),
            "shared_mem" => a.set_shared_mem(Some(int())),
            "dptr" => a.set_dptr(hex()),
            "ptr" => a.set_ptr(hex()),
            "stream" => a.set_stream(hex()),
            "event" => a.set_event(hex()),
            "graph" => a.set_graph(hex()),
            "exec" => a.set_exec(hex()),
            "f" | "func" => a.set_f(hex()),
            "comm" => a.set_comm(hex()),
            "kind" => {
                a.set_kind(Some(match fmt {
                    Fmt::MemcpyKind => CopyKind::from_cuda(w(word) as u32).expect("a valid kind"),
                    Fmt::Const(text) => CopyKind::from_name(text.as_bytes()),
                    other => panic!("{}: kind is {other:?}", spec.name),
                }));
                Ok(())
            }
            "grid" => {
                launch.grid = Some(dim3());
                Ok(())
            }
            "block" => {
                launch.block = Some(dim3());
                Ok(())
            }
            "kernel" => {
                launch.kernel = hex().map(|h| intern::name(&format!("{h}")));
                Ok(())
            }
            other => {
                let ignored = IGNORED_ARGS.contains(&other)
                    || IGNORED_VERSIONED_ARGS.contains(&other)
                    || IGNORED_MEMORY_ARGS.contains(&other)
                    || IGNORED_NCCL_ARGS.contains(&other);
                assert!(ignored, "{}: argument {other:?} is neither read nor ignored", spec.name);
                Ok(())
            }
        };
        set.unwrap_or_else(|e| panic!("{}: {e}", spec.name));
    }
    if let Some(bytes) = ann.freed_bytes {
        a.set_bytes(Some(bytes)).unwrap_or_else(|e| panic!("{}: {e}", spec.name));
    }
    if ann.kernel.is_some() {
        launch.kernel = Some(intern::name(KERNEL));
    }
    if ann.caller.is_some() {
        launch.caller = Some(intern::name(CALLER));
    }
    a.set_launch(launch);
    a
}

fn assert_call(spec: &FuncSpec, ev: &CallEvent, ann: &Annotations, call: &Call, path: &str) {
    let at = format!("{} ({path})", spec.name);
    assert_eq!((call.name(), call.layer()), (spec.name, spec.layer), "{at}");
    assert_eq!(call.ts_ms, (ev.entry_ns - START_NS) as f64 / 1e6, "{at}");
    assert_eq!(call.dur_us, ev.dur_ns as f64 / 1e3, "{at}");
    assert_eq!((call.pid, call.tid, call.ret), (ev.pid, ev.tid, ev.ret as u32 as i32), "{at}");
    assert_eq!(call.error_name(), ann.error, "{at}");
    assert_eq!(call.args, expected_args(spec, ev, ann), "{at}");
}

#[test]
fn every_function_reads_back_as_written() {
    let writer = LineFormatter { start_ns: START_NS };
    for (id, spec) in FUNCS.iter().enumerate() {
        for failed in [false, true] {
            let ev = event(id, spec, failed);
            let ann = annotations(spec, failed);
            let mut out = Vec::new();
            writer.write_call(&mut out, &ev, Some(STRING_ARG.as_bytes()), &ann);
            let line = out.strip_suffix(b"\n").expect("one line with its newline");
            let text = String::from_utf8_lossy(line);
            let mut names = read::Interner::default();
            let mut fast = Call::hole();
            read::in_writing_order(line, &mut names, &mut fast)
                .unwrap_or_else(|| panic!("the fast reader takes the writer's key order: {text}"));
            assert_call(spec, &ev, &ann, &fast, "fast reader");
            let slow = super::parse_line(line).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_call(spec, &ev, &ann, &slow, "serde");
            let value: serde_json::Value = serde_json::from_slice(line).expect("valid JSON");
            assert_eq!(value["type"], spec.layer.type_name(), "{text}");
        }
    }
}

#[test]
fn copy_kinds_round_trip_by_name_and_value() {
    for value in 0..5 {
        let kind = CopyKind::from_cuda(value).unwrap();
        assert_eq!(CopyKind::from_name(kind.name().as_bytes()), kind);
        let json = serde_json::to_string(kind.name()).unwrap();
        assert_eq!(serde_json::from_str::<CopyKind>(&json).unwrap(), kind);
    }
    assert_eq!(CopyKind::from_cuda(5), None);
    assert!(ErrorName::new(ERROR).is_some());
}

#[test]
fn a_copy_kind_without_a_name_is_written_and_read_as_its_number() {
    // Found by the ring_record fuzz target: the writer puts `"kind":9` for a
    // cudaMemcpyKind CUDA does not define, and both readers refused the line.
    let (id, spec) = tracer_common::funcs::by_name("cudaMemcpyAsync").unwrap();
    let mut ev = event(usize::from(id), spec, false);
    ev.args[3] = 9;
    let mut out = Vec::new();
    LineFormatter { start_ns: START_NS }.write_call(&mut out, &ev, None, &Annotations::default());
    let line = out.strip_suffix(b"\n").unwrap();
    assert!(String::from_utf8_lossy(line).contains(r#""kind":9,"#), "{}", String::from_utf8_lossy(line));
    let slow = super::parse_line(line).unwrap_or_else(|e| panic!("{e}"));
    let fast = read::parse(line, &mut read::Interner::default()).expect("the fast reader takes it");
    assert_eq!((slow.args.kind(), fast.args.kind()), (Some(CopyKind::Other), Some(CopyKind::Other)));
    assert_eq!(slow.args.bytes(), fast.args.bytes());
    assert_eq!(serde_json::from_str::<CopyKind>("2").unwrap(), CopyKind::DtoH);
    assert_eq!(CopyKind::from_number(1 << 40), CopyKind::Other);
}

#[test]
fn the_fuzz_seed_lines_are_read_alike() {
    // `fuzz/corpus/trace_line`: the seeds are lines the tracer wrote (and a
    // few from the readers' tests) and must stay readable as the format
    // changes; `regress_` inputs and those the fuzzer found (named by hash)
    // may be anything.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/trace_line");
    let mut seeds = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let found = name.len() == 40 && name.bytes().all(|b| b.is_ascii_hexdigit());
        if found || name.starts_with("regress_") {
            continue;
        }
        let line = std::fs::read(&path).unwrap();
        let slow = super::parse_line(&line).unwrap_or_else(|e| panic!("{name}: {e}"));
        if let Some(fast) = read::parse(&line, &mut read::Interner::default()) {
            assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{name}");
        }
        seeds += 1;
    }
    assert!(seeds >= 20, "{seeds} seed lines in {dir}");
}

#[test]
fn reads_names_without_a_row_with_their_type() {
    let mut names = read::Interner::default();
    let line = br#"{"ts":1.000,"pid":7,"tid":7,"type":"cuda_runtime","func":"cudaReadNameOnlyTest","phase":"entry","dur_us":2.000,"ret":100,"error":"cudaErrorNoDevice","args":{}}"#;
    let fast = read::parse(line, &mut names).unwrap();
    assert_eq!(
        (fast.name(), fast.layer(), fast.ret),
        ("cudaReadNameOnlyTest", tracer_common::funcs::Layer::Runtime, 100)
    );
    assert_eq!(fast.group(), Group::Exported);
    let any = read::parse(br#"{"func":"cuReadNameOnlyTest","type":"cuda_api","ts":1,"pid":1}"#, &mut names).unwrap();
    assert_eq!((any.name(), any.layer()), ("cuReadNameOnlyTest", tracer_common::funcs::Layer::Driver));
    let slow = super::parse_line(line).unwrap();
    assert_eq!(format!("{fast:?}"), format!("{slow:?}"));
}

#[test]
fn the_caller_is_read_in_any_key_order() {
    for line in [
        r#"{"ts":2.5,"pid":7,"tid":9,"type":"cuda_api","func":"cuLaunchKernel","phase":"entry","dur_us":3.1,"ret":0,"caller":"libcublasLt.so.12","args":{"f":"0x5010","grid":[16,8,1],"block":[128,1,1],"kernel":"sm90_gemm"}}"#,
        r#"{"args":{"kernel":"sm90_gemm","f":"0x5010","grid":[16,8,1],"block":[128,1,1]},"caller":"libcublasLt.so.12","ret":0,"func":"cuLaunchKernel","tid":9,"pid":7,"ts":2.5}"#,
    ] {
        let fast = read::parse(line.as_bytes(), &mut read::Interner::default()).expect("the fast reader takes it");
        let slow = super::parse_line(line.as_bytes()).unwrap();
        for call in [&fast, &slow] {
            assert_eq!(call.args.caller(), Some("libcublasLt.so.12"), "{line}");
            assert_eq!((call.args.kernel(), call.args.grid()), (Some("sm90_gemm"), Some([16, 8, 1])), "{line}");
        }
    }
}
