//! Table 3 of `cargo xtask bench` (`bench_pipeline --events N --dir DIR`):
//! the userspace path with no kernel involved, built as an example so that
//! neither it nor its mangled `_Z…kernel` stubs ship in `cuda-tracer`. Synthetic ring-buffer records,
//! byte for byte what the BPF programs emit, go through [`Pipeline::handle`]
//! (checked decode, annotation, statistics, JSONL formatting and writing)
//! with a file rotation every million events, on one thread.
//!
//! The mix is one serving step of the fixture workload as both layers see
//! it: allocation, three launches (runtime stubs named through this
//! binary's `.symtab`, driver handles named by `cuModuleGetFunction`), an
//! async copy, event record and sync, and a free, each as a runtime call and
//! the driver call beneath it, each with a return address to name.

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use cuda_tracer::{
    daemon::ingest::pipeline::Pipeline,
    daemon::output::{
        parquet_sink::{ParquetSink, TeeSink},
        sink::{JsonlSink, Sink},
    },
    format::{line::LineFormatter, parquet::FileContext},
};
use tracer_common::{
    abi::{call_flags, kind, CallEvent, CallNameEvent, EventHeader, NameBuf, CALL_EVENT_SIZE, CALL_NAME_EVENT_SIZE},
    funcs,
};

#[derive(Debug, Parser)]
#[command(about = "Synthetic records through decode, JSONL and rotation, no kernel")]
struct Args {
    /// Synthetic events to send through the pipeline.
    #[arg(long, default_value_t = 5_000_000)]
    events: u64,
    /// Directory for the trace files (removed again after the run).
    #[arg(long)]
    dir: PathBuf,
    /// Trace file format: jsonl, parquet or both (the daemon's `--format`).
    #[arg(long, default_value = "jsonl")]
    format: String,
}

/// Prints the one line `cargo xtask bench` parses.
fn main() -> Result<()> {
    let args = Args::parse();
    println!("{}", run(args.events, &args.dir, &args.format)?);
    Ok(())
}

/// Events between rotations, as a busy daemon with `--rotate-secs` would see.
const ROTATE_EVERY: u64 = 1_000_000;
/// Distinct pre-built serving steps the generator cycles through.
const STEPS: u64 = 4096;
const ATTENTION_F: u64 = 0x5000;
const GEMM_F: u64 = 0x5010;

/// Stand-ins for nvcc host stubs: launch addresses the annotator names
/// through `/proc/self/maps` and this binary's symbol table.
#[export_name = "_Z16attention_kernelPfS_i"]
#[inline(never)]
pub extern "C" fn bench_stub_attention() -> u32 {
    std::hint::black_box(1)
}

#[export_name = "_Z11gemm_kernelILi128EEvPKfS1_Pfiii"]
#[inline(never)]
pub extern "C" fn bench_stub_gemm() -> u32 {
    std::hint::black_box(2)
}

fn id(name: &str) -> u32 {
    funcs::by_name(name).map(|(i, _)| u32::from(i)).unwrap_or_else(|| panic!("{name} is in the function table"))
}

fn bytes_of<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: the ABI structs are `#[repr(C)]` with explicit padding fields
    // (their sizes are asserted in tracer-common), so every byte is initialised.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

/// Return addresses in this binary's code, named through `/proc/self/maps`
/// as a call's `caller`: the program's runtime calls and the runtime's
/// driver calls come from two call sites.
fn caller(name: &str) -> u64 {
    let site = if name.starts_with("cuda") { main as *const () } else { run as *const () };
    site as u64 + 1
}

fn call(name: &str, args: &[u64]) -> CallEvent {
    let mut ev = CallEvent {
        header: EventHeader { kind: kind::CALL, size: CALL_EVENT_SIZE as u32 },
        func_id: id(name),
        pid: std::process::id(),
        caller: caller(name),
        ..Default::default()
    };
    ev.args[..args.len()].copy_from_slice(args);
    ev
}

fn with_out(mut ev: CallEvent, out: u64) -> CallEvent {
    ev.out = out;
    ev.flags |= call_flags::OUT_VALID;
    ev
}

/// `cuModuleGetFunction(&f, module, name)` returning `f`, as a name record.
fn lookup(f: u64, name: &str) -> Vec<u8> {
    let mut call = with_out(call("cuModuleGetFunction", &[0x7ffd_0000_1000, 0x4000, 0x5555_0000_2000]), f);
    call.header = EventHeader { kind: kind::CALL_NAME, size: CALL_NAME_EVENT_SIZE as u32 };
    let mut buf = NameBuf { len: name.len() as u32 + 1, ..Default::default() };
    buf.bytes[..name.len()].copy_from_slice(name.as_bytes());
    bytes_of(&CallNameEvent { call, name: buf }).to_vec()
}

/// The 16 records of serving step `step`, in the order calls return (the
/// driver call inside a runtime call returns first).
fn step(step: u64) -> Vec<CallEvent> {
    let stream = 0x1000 + step % 4;
    let dptr = 0x7f50_0000_0000 + step * 0x1000;
    let host = 0x5600_0000_0000 + step * 0x40;
    let (attention, gemm) = (bench_stub_attention as *const () as u64, bench_stub_gemm as *const () as u64);
    let params = 0x7ffd_0000_2000;
    let cu_launch = |name, f, g: [u64; 3], b: [u64; 3], shared| {
        call(name, &[f, g[0], g[1], g[2], b[0], b[1], b[2], shared, stream, params, 0])
    };
    // dim3 by value: two registers each (x | y << 32, z).
    let rt_launch = |name, func, g: [u64; 3], b: [u64; 3], shared| {
        call(name, &[func, g[0] | g[1] << 32, g[2], b[0] | b[1] << 32, b[2], params, shared, stream])
    };
    vec![
        with_out(call("cuMemAlloc_v2", &[0x7ffd_0000_3000, 4096]), dptr),
        with_out(call("cudaMalloc", &[0x7ffd_0000_3000, 4096]), dptr),
        cu_launch("cuLaunchKernel", ATTENTION_F, [128, 4, 1], [256, 1, 1], 1024),
        rt_launch("cudaLaunchKernel", attention, [128, 4, 1], [256, 1, 1], 1024),
        cu_launch("cuLaunchKernel", GEMM_F, [64, 64, 2], [128, 2, 1], 49152),
        rt_launch("cudaLaunchKernel", gemm, [64, 64, 2], [128, 2, 1], 49152),
        cu_launch("cuLaunchKernel_ptsz", GEMM_F, [64, 64, 2], [128, 2, 1], 49152),
        rt_launch("cudaLaunchKernel_ptsz", gemm, [64, 64, 2], [128, 2, 1], 49152),
        call("cuMemcpyDtoHAsync_v2", &[host, dptr, 64, stream]),
        call("cudaMemcpyAsync", &[host, dptr, 64, 2, stream]),
        call("cuEventRecord", &[0x3000 + step % 4, stream]),
        call("cudaEventRecord", &[0x3000 + step % 4, stream]),
        call("cuEventSynchronize", &[0x3000 + step % 4]),
        call("cudaEventSynchronize", &[0x3000 + step % 4]),
        call("cuMemFree_v2", &[dptr]),
        call("cudaFree", &[dptr]),
    ]
}

/// Pre-built records (bytes) the generator cycles through.
fn records() -> Vec<Vec<u8>> {
    let me = std::process::id();
    let mut out = Vec::new();
    for s in 0..STEPS {
        for (i, mut ev) in step(s).into_iter().enumerate() {
            ev.tid = me + 1 + (s % 4) as u32;
            ev.dur_ns = 2_000 + (s * 7 + i as u64 * 131) % 40_000;
            out.push(bytes_of(&ev).to_vec());
        }
    }
    out
}

/// What one run measured; shown as the line `cargo xtask bench` parses.
#[derive(Debug)]
struct BenchResult {
    events: u64,
    secs: f64,
    bytes: u64,
    files: usize,
}

impl std::fmt::Display for BenchResult {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let rate = self.events as f64 / self.secs;
        write!(
            f,
            "events={} secs={:.3} events_per_sec={rate:.0} bytes={} files={}",
            self.events, self.secs, self.bytes, self.files
        )
    }
}

/// The sink of `format` (`jsonl`, `parquet` or `both`) writing into `dir`.
fn sink(dir: &Path, format: &str, formatter: LineFormatter) -> Result<Box<dyn Sink>> {
    let parquet = || ParquetSink::new(dir, formatter, FileContext { node: "bench".into(), ..Default::default() });
    Ok(match format {
        "jsonl" => Box::new(JsonlSink::new(dir, formatter)),
        "parquet" => Box::new(parquet()),
        "both" => Box::new(TeeSink { first: JsonlSink::new(dir, formatter), second: parquet() }),
        other => bail!("--format {other}: expected jsonl, parquet or both"),
    })
}

/// Sends `events` synthetic records through a pipeline writing `format` into `dir`.
fn run(events: u64, dir: &Path, format: &str) -> Result<BenchResult> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let start_ns = 1_000_000_000;
    let mut pipeline = Pipeline::new(sink(dir, format, LineFormatter { start_ns })?, None);
    let mut records = records();
    // Warm-up outside the clock: the name lookups, and one pass that loads
    // this binary's symbol index for the runtime stubs.
    pipeline.handle(&lookup(ATTENTION_F, "_Z16attention_kernelPfS_i"));
    pipeline.handle(&lookup(GEMM_F, "_Z11gemm_kernelILi128EEvPKfS1_Pfiii"));
    for r in records.iter().take(16) {
        pipeline.handle(r);
    }
    let mut closed = Vec::new();
    closed.extend(pipeline.rotate());
    let warm_files = closed.len();
    let warm = pipeline.stats.calls();
    let entry_offset = std::mem::offset_of!(CallEvent, entry_ns);
    let count = records.len() as u64;
    let began = Instant::now();
    for i in 0..events {
        let r = &mut records[(i % count) as usize];
        // What the probe stamps at entry: a fresh time for every call.
        let entry = start_ns + 1_000 + i * 1_250;
        r[entry_offset..entry_offset + 8].copy_from_slice(&entry.to_ne_bytes());
        pipeline.handle(r);
        if (i + 1) % ROTATE_EVERY == 0 {
            closed.extend(pipeline.rotate());
        }
    }
    closed.extend(pipeline.rotate());
    let secs = began.elapsed().as_secs_f64();
    let s = &pipeline.stats.counts;
    if s.decode_errors != 0 || s.write_errors != 0 || s.calls != warm + events {
        bail!(
            "pipeline lost events: {} of {} counted, {} decode errors, {} write errors",
            s.calls - warm,
            events,
            s.decode_errors,
            s.write_errors
        );
    }
    let bytes = closed.iter().skip(warm_files).map(|f| f.bytes).sum();
    for f in &closed {
        let _ = std::fs::remove_file(dir.join(&f.name));
    }
    Ok(BenchResult { events, secs, bytes, files: closed.len() - warm_files })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parquet_and_both_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(run(40, dir.path(), "parquet").unwrap().files, 1);
        assert_eq!(run(40, dir.path(), "both").unwrap().files, 2);
        assert!(run(1, dir.path(), "xml").is_err());
    }

    #[test]
    fn synthetic_records_become_named_lines() {
        let dir = tempfile::tempdir().unwrap();
        let result = run(40, dir.path(), "jsonl").unwrap();
        assert_eq!((result.events, result.files), (40, 1));
        assert!(result.bytes > 40 * 100, "{result:?}");
        // The files are removed after the run; check a line by hand.
        let mut pipeline = Pipeline::new(Box::new(JsonlSink::new(dir.path(), LineFormatter { start_ns: 0 })), None);
        pipeline.handle(&lookup(GEMM_F, "_Z11gemm_kernelILi128EEvPKfS1_Pfiii"));
        for r in records().iter().take(16) {
            pipeline.handle(r);
        }
        let f = pipeline.rotate().into_iter().next().unwrap();
        let text = std::fs::read_to_string(dir.path().join(&f.name)).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 17);
        let gemm = "void gemm_kernel<128>(float const*, float const*, float*, int, int, int)";
        // Runtime launch: the stub named through this binary's symbol table.
        assert_eq!(lines[4]["func"], "cudaLaunchKernel");
        assert_eq!(lines[4]["args"]["grid"], serde_json::json!([128, 4, 1]));
        assert_eq!(lines[4]["args"]["kernel"], "attention_kernel(float*, float*, int)");
        // Driver launch: the handle named by the lookup.
        assert_eq!(lines[5]["func"], "cuLaunchKernel");
        assert_eq!(lines[5]["args"]["block"], serde_json::json!([128, 2, 1]));
        assert_eq!(lines[5]["args"]["kernel"], gemm);
        assert_eq!(lines[16]["func"], "cudaFree");
        assert_eq!(lines[16]["args"]["bytes"], 4096);
    }
}
