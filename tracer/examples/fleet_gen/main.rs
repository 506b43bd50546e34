//! `cargo xtask bench --only fleet`'s synthetic fleet (`fleet_gen --nodes N
//! --pods P --minutes M --rate R --out DIR`): every pod's calls, made as
//! the probes record them (`CallEvent`s with their annotations), go
//! through the daemon's own sinks (`--format both`: the line writer and
//! the Parquet writer, rotated together), so the files are what the daemon
//! writes. The JSONL files stay in `DIR/jsonl/<pod>/<session>/` beside a
//! `metadata.json`, as uploaded; the Parquet files move to the lake layout
//! `DIR/lake/parquet/date=/hour=/node=/pod=/<session>-<seq>.parquet`.
//!
//! The mix, per serving step of one pod: an allocation, twelve kernel
//! launches (a few hundred distinct names, long C++ templates among them,
//! a few names much more frequent than the rest), a CUDA graph launch, a
//! host-to-device and a device-to-host copy (every eighth step a
//! device-to-device one), a stream sync and a free.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::Parser;
use cuda_tracer::{
    daemon::output::{
        parquet_sink::{ParquetSink, TeeSink},
        sink::{JsonlSink, Sink},
    },
    format::{
        line::{Annotations, JsonStr, LineFormatter},
        metadata::{Kubernetes, Metadata},
        names,
        parquet::FileContext,
    },
};
use rayon::prelude::*;
use tracer_common::{
    abi::{call_flags, kind, CallEvent, EventHeader, CALL_EVENT_SIZE},
    funcs,
};

#[derive(Debug, Parser)]
#[command(about = "A synthetic fleet's traces as JSONL and as a Parquet lake")]
struct Args {
    #[arg(long, default_value_t = 64)]
    nodes: u32,
    /// Pods per node.
    #[arg(long, default_value_t = 4)]
    pods: u32,
    /// Minutes of calls per pod.
    #[arg(long, default_value_t = 60)]
    minutes: u32,
    /// Calls per second per pod (the bench's rate: docs/BENCHMARKS.md, table 7).
    #[arg(long, default_value_t = 12)]
    rate: u32,
    /// Files rotate every this many minutes of calls.
    #[arg(long, default_value_t = 10)]
    rotate_minutes: u32,
    #[arg(long)]
    out: PathBuf,
}

/// Prints the one line `cargo xtask bench` parses.
fn main() -> Result<()> {
    let a = Args::parse();
    let fleet =
        Fleet { nodes: a.nodes, pods: a.pods, minutes: a.minutes, rate: a.rate, rotate_minutes: a.rotate_minutes };
    let calls = generate(&fleet, &a.out)?;
    println!("calls={calls} pods={}", a.nodes * a.pods);
    Ok(())
}

/// The fleet's shape and load.
#[derive(Clone, Copy, Debug)]
struct Fleet {
    nodes: u32,
    pods: u32,
    minutes: u32,
    rate: u32,
    rotate_minutes: u32,
}

/// Calls per serving step (see the module's doc).
const STEP_CALLS: u64 = 18;
const LAUNCHES_PER_STEP: u64 = 12;
/// The session's start on the boot clock (`ts` = 0).
const START_BOOT_NS: u64 = 1_000_000_000;

/// A few hundred distinct kernel names as PyTorch, cuBLAS/CUTLASS, flash
/// attention and Triton write them.
fn kernel_names() -> Vec<JsonStr> {
    let mut out = Vec::new();
    for op in ["Fill", "Add", "Mul", "Silu", "Gelu", "Exp", "Neg", "Sqrt", "Rsqrt", "Tanh"] {
        for ty in ["float", "c10::BFloat16", "c10::Half"] {
            for vec in [1, 2, 4] {
                out.push(format!(
                    "void at::native::vectorized_elementwise_kernel<{vec}, at::native::{op}Functor<{ty}>, \
                     at::detail::Array<char*, 2> >(int, at::native::{op}Functor<{ty}>, at::detail::Array<char*, 2>)"
                ));
            }
        }
    }
    for tile in ["64x64_64x4", "128x128_32x3", "256x128_64x3", "128x256_64x3", "64x128_32x6"] {
        for op in ["relu", "gelu", "silu", "identity"] {
            for layout in ["tn", "nn", "nt"] {
                let name = format!("cutlass_80_tensorop_bf16_s16816gemm_{op}_bf16_{tile}_{layout}_align8");
                out.push(format!("void cutlass::Kernel2<{name}>({name}::Params)"));
            }
        }
    }
    for (d, causal) in [(64, "false"), (128, "true"), (128, "false"), (256, "true")] {
        for split in ["true", "false"] {
            out.push(format!(
                "void flash::flash_fwd_kernel<Flash_fwd_kernel_traits<{d}, 64, 64, 4, false, false, \
                 cutlass::bfloat16_t>, {causal}, false, false, false, {split}, true, false>(flash::Flash_fwd_params)"
            ));
        }
    }
    for i in 0..120 {
        out.push(format!("triton_poi_fused_add_mul_silu_{i}"));
    }
    out.iter().map(|n| JsonStr::new(n)).collect()
}

fn call(name: &str, args: &[u64], pid: u32, tid: u32) -> CallEvent {
    let (id, _) = funcs::by_name(name).unwrap_or_else(|| panic!("{name} is in the function table"));
    let mut ev = CallEvent {
        header: EventHeader { kind: kind::CALL, size: CALL_EVENT_SIZE as u32 },
        func_id: u32::from(id),
        pid,
        tid,
        ..Default::default()
    };
    ev.args[..args.len()].copy_from_slice(args);
    ev
}

/// Kernel `k` of launch `n` of a step: a skewed choice (an index squared),
/// so a few kernels lead the fleet's top list by a clear margin.
fn pick(seed: u64, kernels: usize) -> usize {
    let r = (seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 33) % 1000;
    (r * r / 1000) as usize * kernels / 1000
}

/// The calls of serving step `step` of a pod, with their annotations.
fn step(step: u64, pid: u32, kernels: &[JsonStr]) -> Vec<(CallEvent, Annotations)> {
    let stream = 0x1000 + step % 2;
    let tid = pid + 1 + (step % 2) as u32;
    let bytes = 4096 << (step % 8);
    let dptr = 0x7f50_0000_0000 + (step % 4096) * 0x10_0000;
    let plain = Annotations::default;
    let mut alloc = call("cudaMalloc", &[0x7ffd_0000_3000, bytes], pid, tid);
    alloc.out = dptr;
    alloc.flags |= call_flags::OUT_VALID;
    let mut out = vec![(alloc, plain())];
    for n in 0..LAUNCHES_PER_STEP {
        let k = pick(step * LAUNCHES_PER_STEP + n + u64::from(pid) * 7919, kernels.len());
        let (g, b) = (64 << (k % 4), 128 << (k % 3));
        let func = 0x55d1_c2a0_0000 + k as u64 * 16;
        let ev =
            call("cudaLaunchKernel", &[func, g | 4 << 32, 1, b | 1 << 32, 1, 0x7ffd_0000_2000, 0, stream], pid, tid);
        out.push((ev, Annotations { kernel: Some(kernels[k].clone()), ..plain() }));
    }
    out.push((call("cudaGraphLaunch", &[0x6000 + step % 3, stream], pid, tid), plain()));
    let host = 0x5600_0000_0000 + (step % 64) * 0x1000;
    out.push((call("cudaMemcpyAsync", &[dptr, host, bytes, 1, stream], pid, tid), plain()));
    let back = if step % 8 == 7 { [dptr + bytes, dptr, bytes, 3] } else { [host, dptr, 256, 2] };
    out.push((call("cudaMemcpyAsync", &[back[0], back[1], back[2], back[3], stream], pid, tid), plain()));
    out.push((call("cudaStreamSynchronize", &[stream], pid, tid), plain()));
    out.push((call("cudaFree", &[dptr], pid, tid), Annotations { freed_bytes: Some(bytes), ..plain() }));
    out
}

/// A call's duration: syncs long, the rest short, with some spread.
fn duration_ns(function: &str, i: u64) -> u64 {
    let spread = (i.wrapping_mul(2_654_435_761) >> 7) % 4000;
    match function {
        "cudaStreamSynchronize" => 200_000 + spread * 100,
        _ => 2_000 + spread * 3,
    }
}

/// Where one pod's calls go.
struct Pod {
    node: String,
    name: String,
    session: String,
    pid: u32,
}

/// Writes every pod's calls; returns the calls written.
fn generate(fleet: &Fleet, out: &Path) -> Result<u64> {
    let kernels = kernel_names();
    let start_unix_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
    let pods: Vec<Pod> = (0..fleet.nodes)
        .flat_map(|n| {
            (0..fleet.pods).map(move |p| Pod {
                node: format!("gpu-node-{n:03}"),
                name: format!("vllm-{n:03}-{p}"),
                session: format!("{n:03}{p}-s1"),
                pid: 1000 + p * 10,
            })
        })
        .collect();
    let calls: Result<Vec<u64>> =
        pods.par_iter().map(|pod| write_pod(pod, fleet, &kernels, start_unix_ns, out)).collect();
    Ok(calls?.iter().sum())
}

/// One pod's session: the calls at `fleet.rate` per second for
/// `fleet.minutes`, rotated every `fleet.rotate_minutes`.
fn write_pod(pod: &Pod, fleet: &Fleet, kernels: &[JsonStr], start_unix_ns: u128, out: &Path) -> Result<u64> {
    let dir = out.join("jsonl").join(&pod.name).join(&pod.session);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let formatter = LineFormatter { start_ns: START_BOOT_NS };
    let ctx = FileContext {
        node: pod.node.clone(),
        pod: Some(pod.name.clone()),
        namespace: Some("serving".into()),
        session: pod.session.clone(),
        start_unix_ns: i64::try_from(start_unix_ns)?,
    };
    let mut sink = TeeSink { first: JsonlSink::new(&dir, formatter), second: ParquetSink::new(&dir, formatter, ctx) };
    let total = u64::from(fleet.minutes) * 60 * u64::from(fleet.rate);
    let step_ns = STEP_CALLS * 1_000_000_000 / u64::from(fleet.rate.max(1));
    let rotate_ns = u64::from(fleet.rotate_minutes.max(1)) * 60_000_000_000;
    let (mut written, mut s, mut next_rotation) = (0u64, 0u64, rotate_ns);
    while written < total {
        let began = s * step_ns;
        if began >= next_rotation {
            place(&dir, pod, out, sink.rotate_all()?)?;
            next_rotation += rotate_ns;
        }
        for (i, (mut ev, ann)) in step(s, pod.pid, kernels).into_iter().enumerate().take((total - written) as usize) {
            ev.entry_ns = START_BOOT_NS + began + i as u64 * (step_ns / STEP_CALLS);
            ev.dur_ns = duration_ns(funcs::by_id(ev.func_id).map_or("", |f| f.name), written);
            sink.write_call(&ev, None, &ann)?;
            written += 1;
        }
        s += 1;
    }
    place(&dir, pod, out, sink.rotate_all()?)?;
    metadata(pod, start_unix_ns, written).write(&dir)?;
    Ok(written)
}

/// Moves the closed Parquet files of a rotation to their lake keys.
fn place(dir: &Path, pod: &Pod, out: &Path, closed: Vec<cuda_tracer::daemon::output::sink::ClosedFile>) -> Result<()> {
    for f in closed.iter().filter(|f| names::is_parquet_trace_file(&f.name)) {
        let key = names::parquet_lake_key(&f.name, &pod.session, &pod.node, &pod.name)
            .with_context(|| format!("no lake key for {}", f.name))?;
        let dest = out.join("lake").join(key);
        std::fs::create_dir_all(dest.parent().context("a lake key has a directory")?)?;
        std::fs::rename(dir.join(&f.name), &dest)?;
    }
    Ok(())
}

/// The session's `metadata.json`, as the daemon writes the fields that
/// `report` reads (the start on the boot and wall clocks, where it ran).
fn metadata(pod: &Pod, start_unix_ns: u128, calls: u64) -> Metadata {
    let mut m = Metadata {
        session_id: pod.session.clone(),
        hostname: pod.node.clone(),
        kubernetes: Kubernetes {
            pod: Some(pod.name.clone()),
            namespace: Some("serving".into()),
            node: Some(pod.node.clone()),
        },
        status: "finished".into(),
        mode: "run".into(),
        start_unix_ns,
        start_boot_ns: Some(START_BOOT_NS),
        boot_id: Some(format!("boot-{}", pod.node)),
        ts_unit: "ms".into(),
        ..Default::default()
    };
    m.counts.calls = calls;
    m
}

#[cfg(test)]
mod tests;
