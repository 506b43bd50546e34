//! Writing the Chrome Trace Event JSON (object format): metadata naming a
//! track per process and thread, a "steps" track per process, device-memory
//! counters, then one complete event per call, streamed from the trace files
//! (parsed in parallel batches, written in order, never held whole). NCCL
//! calls go on an "NCCL" track of their process, apart from its threads.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Deserialize;
use serde_json::value::RawValue;
use tracer_common::funcs::{Layer, Role};

use super::memory::MemorySample;
use super::window::Window;
use super::ExportError;
use crate::analysis::trace::{parse_line, Call};

/// The steps track's tid is this plus the pid (pids stay below 2^22), so it
/// never collides with a real thread.
pub const STEPS_TID_BASE: u32 = 1_000_000_000;
/// The NCCL track's tid is this plus the pid (above every steps track).
pub const NCCL_TID_BASE: u32 = 1_100_000_000;

/// The track a call is drawn on: its thread's, or its process's NCCL track.
pub fn track_of(call: &Call) -> u32 {
    if call.layer() == Layer::Nccl {
        NCCL_TID_BASE + call.pid
    } else {
        call.tid
    }
}

/// A trace file and the shift that puts its `ts` on the common time axis.
#[derive(Clone, Debug)]
pub struct Source {
    pub path: PathBuf,
    pub shift_ms: f64,
    /// The file's own `ts` kept (`--since`/`--until`), `[lo, hi]`.
    pub keep_ms: (f64, f64),
}

/// What was written.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Written {
    pub calls: u64,
    pub steps: u64,
    pub counters: u64,
    pub metadata: u64,
}

/// The processes and threads with calls in the window.
pub type Threads = BTreeMap<u32, BTreeSet<u32>>;

pub fn threads_in(calls: &[Call], window: &Window) -> Threads {
    let mut threads = Threads::new();
    for c in calls.iter().filter(|c| window.contains(c.ts_ms)) {
        threads.entry(c.pid).or_default().insert(track_of(c));
    }
    threads
}

/// Writes the whole document to `out`.
pub fn write<W: Write>(
    out: W,
    output_path: &Path,
    sources: &[Source],
    window: &Window,
    threads: &Threads,
    process_names: &HashMap<u32, String>,
    memory: &[MemorySample],
) -> Result<Written, ExportError> {
    let io = |source| ExportError::Io { path: output_path.to_path_buf(), source };
    let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
    let mut written = Written::default();
    out.write_all(b"{\"displayTimeUnit\":\"ms\",\"otherData\":{\"producer\":\"cuda-tracer\"},\"traceEvents\":[\n")
        .map_err(io)?;
    let mut buf = Vec::with_capacity(1 << 16);
    metadata_events(&mut buf, threads, process_names, window, &mut written);
    step_events(&mut buf, window, threads, &mut written);
    counter_events(&mut buf, window, threads, memory, &mut written);
    // The first event has no separator before it; every later one starts
    // with ",\n" (metadata always comes first: the window has a call).
    out.write_all(buf.strip_prefix(b",\n").unwrap_or(&buf)).map_err(io)?;
    for source in sources {
        written.calls += call_events(&mut out, source, window, output_path)?;
    }
    out.write_all(b"\n]}\n").map_err(io)?;
    out.flush().map_err(io)?;
    Ok(written)
}

fn metadata_events(
    buf: &mut Vec<u8>,
    threads: &Threads,
    names: &HashMap<u32, String>,
    window: &Window,
    written: &mut Written,
) {
    let mut meta = |buf: &mut Vec<u8>, kind: &str, pid: u32, tid: u32, key: &str, value: &str| {
        let _ = write!(
            buf,
            ",\n{{\"name\":\"{kind}\",\"ph\":\"M\",\"ts\":0,\"pid\":{pid},\"tid\":{tid},\"args\":{{\"{key}\":"
        );
        json_str(buf, value);
        buf.extend_from_slice(b"}}");
        written.metadata += 1;
    };
    let mut sort_indices = 0;
    let step_pids: BTreeSet<u32> = window.steps.iter().map(|s| s.pid).collect();
    for (&pid, tids) in threads {
        let name = names.get(&pid).cloned().unwrap_or_else(|| format!("pid {pid}"));
        meta(buf, "process_name", pid, pid, "name", &name);
        for &tid in tids {
            let name = match tid {
                _ if tid == pid => "main thread".to_string(),
                _ if tid == NCCL_TID_BASE + pid => "NCCL".to_string(),
                _ => format!("thread {tid}"),
            };
            meta(buf, "thread_name", pid, tid, "name", &name);
        }
        if step_pids.contains(&pid) {
            meta(buf, "thread_name", pid, STEPS_TID_BASE + pid, "name", "steps");
            // Negative sort index: the steps track sits above the threads.
            let _ = write!(
                buf,
                ",\n{{\"name\":\"thread_sort_index\",\"ph\":\"M\",\"ts\":0,\"pid\":{pid},\"tid\":{},\"args\":{{\"sort_index\":-1}}}}",
                STEPS_TID_BASE + pid
            );
            sort_indices += 1;
        }
    }
    written.metadata += sort_indices;
}

fn step_events(buf: &mut Vec<u8>, window: &Window, threads: &Threads, written: &mut Written) {
    for s in window.steps.iter().filter(|s| threads.contains_key(&s.pid)) {
        let _ = write!(
            buf,
            concat!(
                ",\n{{\"name\":\"{phase} #{index}\",\"cat\":\"step\",\"ph\":\"X\",\"ts\":{ts:.3},\"dur\":{dur:.3},\"pid\":{pid},\"tid\":{tid},",
                "\"args\":{{\"phase\":\"{phase}\",\"index\":{index},\"num_launches\":{launches},\"graph_replays\":{replays},",
                "\"nccl_calls\":{nccl_calls},\"nccl_bytes\":{nccl_bytes}}}}}"
            ),
            phase = s.phase.name(),
            index = s.index,
            ts = s.start_ms * 1000.0,
            dur = ((s.end_ms - s.start_ms) * 1000.0).max(0.0),
            pid = s.pid,
            tid = STEPS_TID_BASE + s.pid,
            launches = s.num_launches,
            replays = s.graph_replays,
            nccl_calls = s.nccl.collectives,
            nccl_bytes = s.nccl.bytes,
        );
        written.steps += 1;
    }
}

/// Per process: the bytes in use at the window's start, every change inside
/// it, and the value at its end (so the track spans the window).
fn counter_events(buf: &mut Vec<u8>, window: &Window, threads: &Threads, memory: &[MemorySample], w: &mut Written) {
    let mut counter = |buf: &mut Vec<u8>, pid: u32, ts_ms: f64, bytes: u64| {
        let _ = write!(
            buf,
            ",\n{{\"name\":\"device memory in use\",\"cat\":\"memory\",\"ph\":\"C\",\"ts\":{:.3},\"pid\":{pid},\"tid\":{pid},\"args\":{{\"bytes\":{bytes}}}}}",
            ts_ms * 1000.0
        );
        w.counters += 1;
    };
    for &pid in threads.keys() {
        let samples: Vec<&MemorySample> = memory.iter().filter(|s| s.pid == pid).collect();
        if samples.is_empty() || samples[0].ts_ms > window.end_ms {
            continue;
        }
        let before = samples.iter().take_while(|s| s.ts_ms < window.start_ms).last().map_or(0, |s| s.bytes_in_use);
        counter(buf, pid, window.start_ms, before);
        let mut last = before;
        for s in samples.iter().filter(|s| window.contains(s.ts_ms)) {
            counter(buf, pid, s.ts_ms, s.bytes_in_use);
            last = s.bytes_in_use;
        }
        counter(buf, pid, window.end_ms, last);
    }
}

/// The parts of a line read before deciding whether it is in the window.
#[derive(Deserialize)]
struct Head<'a> {
    ts: f64,
    #[serde(borrow, default)]
    args: Option<&'a RawValue>,
}

fn call_events<W: Write>(out: &mut W, source: &Source, window: &Window, output: &Path) -> Result<u64, ExportError> {
    // The reader's own bytes: mapped JSONL, a `.partial` file read, a
    // Parquet file as its lines; a damaged Parquet file was counted there.
    let map = match crate::analysis::trace::read::map_file(&source.path) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Ok(0),
        Err(crate::analysis::trace::ReadError::Parquet { source, .. }) if source.is_damage() => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let chunks = crate::analysis::trace::read::chunks(&map);
    let mut calls = 0;
    // Batches of a few chunks per thread keep memory bounded on big files.
    for batch in chunks.chunks(rayon::current_num_threads() * 2) {
        let rendered: Vec<(Vec<u8>, u64)> = batch.par_iter().map(|c| render_chunk(c, source, window)).collect();
        for (bytes, n) in rendered {
            out.write_all(&bytes).map_err(|e| ExportError::Io { path: output.to_path_buf(), source: e })?;
            calls += n;
        }
    }
    Ok(calls)
}

/// The events of one chunk's lines in the window; bad lines are skipped here
/// as the reader skips them (it counted and reported them already).
fn render_chunk(chunk: &[u8], source: &Source, window: &Window) -> (Vec<u8>, u64) {
    let (mut buf, shift_ms, (lo, hi)) = (Vec::new(), source.shift_ms, source.keep_ms);
    let mut n = 0;
    for line in chunk.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(head) = serde_json::from_slice::<Head>(line) else { continue };
        if !window.contains(head.ts + shift_ms) || head.ts < lo || head.ts > hi {
            continue;
        }
        let Ok(mut call) = parse_line(line) else { continue };
        call.ts_ms += shift_ms;
        call_event(&mut buf, &call, head.args);
        n += 1;
    }
    (buf, n)
}

/// One complete event: named by the kernel for launches, by the function
/// otherwise; args are the call's own decoded args plus `call`, `type`,
/// `ret`, `error` and `caller`, and `thread` for an NCCL call (drawn on its
/// process's NCCL track).
pub fn call_event(buf: &mut Vec<u8>, call: &Call, raw_args: Option<&RawValue>) {
    let spec = call.spec();
    let name = match (&call.args.kernel(), spec.role) {
        (Some(kernel), Role::Launch) => kernel,
        _ => spec.name,
    };
    buf.extend_from_slice(b",\n{\"name\":");
    json_str(buf, name);
    let _ = write!(
        buf,
        ",\"cat\":\"{}\",\"ph\":\"X\",\"ts\":{:.3},\"dur\":{:.3},\"pid\":{},\"tid\":{},\"args\":{{\"call\":\"{}\",\"type\":\"{}\",\"ret\":{}",
        spec.group.name(),
        call.ts_ms * 1000.0,
        call.dur_us.max(0.0),
        call.pid,
        track_of(call),
        spec.name,
        spec.layer.type_name(),
        call.ret
    );
    if spec.layer == Layer::Nccl {
        let _ = write!(buf, ",\"thread\":{}", call.tid);
    }
    if let Some(error) = call.error_name() {
        buf.extend_from_slice(b",\"error\":");
        json_str(buf, error);
    }
    if let Some(caller) = call.args.caller() {
        buf.extend_from_slice(b",\"caller\":");
        json_str(buf, caller);
    }
    if let Some(raw) = raw_args.filter(|r| r.get().len() > ARG_BYTES_KEPT) {
        truncated_args(buf, raw);
    } else if let Some(raw) = raw_args {
        let text = raw.get().trim();
        match text.strip_prefix('{').and_then(|t| t.strip_suffix('}')).map(str::trim) {
            Some("") => {}
            Some(inner) => {
                buf.push(b',');
                buf.extend_from_slice(inner.as_bytes());
            }
            None => {
                buf.extend_from_slice(b",\"args\":");
                buf.extend_from_slice(text.as_bytes());
            }
        }
    }
    buf.extend_from_slice(b"}}");
}

/// Args longer than this are written value by value, each value cut to
/// this many bytes with a marker: a traced process's 1.5 GB argument must
/// not become a 1.5 GB event.
pub const ARG_BYTES_KEPT: usize = 4096;

/// The inner members of an over-long `args` object, each value over
/// [`ARG_BYTES_KEPT`] cut: a string keeps its head and says how long it
/// was; any other value becomes a marker string.
fn truncated_args(buf: &mut Vec<u8>, raw: &RawValue) {
    let members: std::collections::BTreeMap<std::borrow::Cow<str>, &RawValue> = match serde_json::from_str(raw.get()) {
        Ok(members) => members,
        Err(_) => {
            buf.extend_from_slice(b",\"args\":");
            json_str(buf, &format!("[truncated: {} bytes]", raw.get().len()));
            return;
        }
    };
    for (key, value) in &members {
        buf.push(b',');
        json_str(buf, key);
        buf.push(b':');
        let text = value.get();
        if text.len() <= ARG_BYTES_KEPT {
            buf.extend_from_slice(text.as_bytes());
        } else if let Ok(string) = serde_json::from_str::<std::borrow::Cow<str>>(text) {
            let mut cut = ARG_BYTES_KEPT;
            while !string.is_char_boundary(cut) {
                cut -= 1;
            }
            json_str(buf, &format!("{}…[truncated: {} bytes]", &string[..cut], string.len()));
        } else {
            json_str(buf, &format!("[truncated: {} bytes]", text.len()));
        }
    }
}

fn json_str(buf: &mut Vec<u8>, s: &str) {
    // Writing JSON into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_launch_is_named_by_its_kernel_and_keeps_its_args() {
        let line = br#"{"ts":31.2,"pid":7,"tid":8,"type":"cuda_runtime","func":"cudaLaunchKernel","phase":"entry","dur_us":18.2,"ret":0,"caller":"libtorch_cuda.so","args":{"func":"0x55d1","grid":[128,4,1],"stream":"0x1000","kernel":"gemm<\"f\">"}}"#;
        let call = parse_line(line).unwrap();
        let head: Head = serde_json::from_slice(line).unwrap();
        let mut buf = Vec::new();
        call_event(&mut buf, &call, head.args);
        let v: serde_json::Value = serde_json::from_slice(&buf[2..]).unwrap();
        assert_eq!(v["name"], "gemm<\"f\">");
        assert_eq!(v["cat"], "launch");
        assert_eq!(v["ts"], 31200.0);
        assert_eq!(v["dur"], 18.2);
        assert_eq!(v["args"]["call"], "cudaLaunchKernel");
        assert_eq!(v["args"]["type"], "cuda_runtime");
        assert_eq!(v["args"]["grid"], serde_json::json!([128, 4, 1]));
        assert_eq!(v["args"]["func"], "0x55d1");
        assert_eq!(v["args"]["caller"], "libtorch_cuda.so");
    }

    #[test]
    fn nccl_calls_are_on_their_process_nccl_track() {
        let line = br#"{"ts":2,"pid":7,"tid":9,"type":"nccl","func":"ncclAllReduce","phase":"entry","dur_us":3,"ret":0,"args":{"count":4,"datatype":"float32","bytes":16,"op":"sum","comm":"0xc0","stream":"0x0"}}"#;
        let call = parse_line(line).unwrap();
        let head: Head = serde_json::from_slice(line).unwrap();
        let mut buf = Vec::new();
        call_event(&mut buf, &call, head.args);
        let v: serde_json::Value = serde_json::from_slice(&buf[2..]).unwrap();
        assert_eq!((v["name"].as_str(), v["cat"].as_str()), (Some("ncclAllReduce"), Some("nccl")));
        assert_eq!((v["pid"].as_u64(), v["tid"].as_u64()), (Some(7), Some(u64::from(NCCL_TID_BASE) + 7)));
        assert_eq!((v["args"]["thread"].as_u64(), v["args"]["bytes"].as_u64()), (Some(9), Some(16)));
        assert_eq!(v["args"]["op"], "sum");
        let window = Window { start_ms: 0.0, end_ms: 10.0, end_included: true, steps: Vec::new() };
        let threads = threads_in(&[call], &window);
        assert_eq!(threads[&7], BTreeSet::from([NCCL_TID_BASE + 7]));
        let mut meta = Vec::new();
        metadata_events(&mut meta, &threads, &HashMap::new(), &window, &mut Written::default());
        assert!(String::from_utf8_lossy(&meta).contains(r#""args":{"name":"NCCL"}"#));
    }

    #[test]
    fn a_failed_call_carries_its_error_name() {
        let line = br#"{"ts":1,"pid":7,"tid":7,"func":"cudaMalloc","dur_us":2,"ret":2,"error":"cudaErrorMemoryAllocation","args":{}}"#;
        let call = parse_line(line).unwrap();
        let mut buf = Vec::new();
        call_event(&mut buf, &call, None);
        let v: serde_json::Value = serde_json::from_slice(&buf[2..]).unwrap();
        assert_eq!(
            (v["name"].as_str(), v["args"]["error"].as_str()),
            (Some("cudaMalloc"), Some("cudaErrorMemoryAllocation"))
        );
        assert!(v["args"].get("caller").is_none(), "no caller when the line has none");
    }
}
