//! Table 5: `cuda-tracer report` on a ~1 GB synthetic trace dir against the
//! seed's jq recipe (per-function counts only) on the same files, timed in
//! the same run. `cargo xtask bench --only report` runs this table alone
//! (no BPF, no root) and replaces its section in docs/BENCHMARKS.md.

use std::{
    fmt::Write as _,
    io::{BufWriter, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context as _, Result};

use crate::{bench_doc::num, exec, paths};

/// Lines go into files of this size, like a rotating session.
const FILE_BYTES: u64 = 128 << 20;
const PROCESSES: u32 = 4;
const THREADS: u32 = 2;

/// What table 5 measured.
#[derive(Debug)]
pub struct ReportBench {
    pub bytes: u64,
    pub files: usize,
    pub lines: u64,
    pub jq_secs: f64,
    pub report_secs: Vec<f64>,
    pub report_max_rss_kib: u64,
    /// One run on one thread (`RAYON_NUM_THREADS=1`): how the time scales
    /// with cores.
    pub one_thread_secs: f64,
}

/// Kernel names as PyTorch/cuBLAS/Triton write them: templates with commas.
const KERNELS: [&str; 4] = [
    "void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, at::detail::Array<char*, 1> >(int, at::native::FillFunctor<float>, at::detail::Array<char*, 1>)",
    "void cutlass::Kernel2<cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_64x4_tn_align8>(cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_64x4_tn_align8::Params)",
    "void flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 64, 64, 4, false, false, cutlass::bfloat16_t>, true, false, false, false, true, true, false>(flash::Flash_fwd_params)",
    "triton_poi_fused_add_mul_silu_0",
];

/// Appends one serving step of one thread, in return order (a runtime
/// call's driver call returns first), as the tracer writes it.
fn step(out: &mut String, pid: u32, tid: u32, ts: &mut f64, n: u64) {
    let dptr = 0x7f50_0000_0000u64 + (n % 4096) * 0x2000;
    let mut line = |out: &mut String, ty: &str, func: &str, dur: f64, args: &str| {
        let _ = writeln!(
            out,
            "{{\"ts\":{:.6},\"pid\":{pid},\"tid\":{tid},\"type\":\"{ty}\",\"func\":\"{func}\",\"phase\":\"entry\",\"dur_us\":{dur:.3},\"ret\":0,\"args\":{{{args}}}}}",
            *ts
        );
        *ts += 0.0123;
    };
    let (api, rt) = ("cuda_api", "cuda_runtime");
    line(out, api, "cuMemAlloc_v2", 15.2, &format!("\"bytes\":8192,\"dptr\":\"{dptr:#x}\""));
    line(out, rt, "cudaMalloc", 31.7, &format!("\"bytes\":8192,\"dptr\":\"{dptr:#x}\""));
    for (i, kernel) in KERNELS[..3].iter().enumerate() {
        let launch = format!(
            "\"grid\":[{},4,1],\"block\":[256,1,1],\"shared_mem\":{},\"stream\":\"0x1001\",\"kernel\":\"{kernel}\"",
            128 << i,
            1024 * i
        );
        line(out, api, "cuLaunchKernel", 0.6, &format!("\"f\":\"{:#x}\",{launch}", 0x5000 + i * 16));
        line(
            out,
            rt,
            "cudaLaunchKernel",
            17.4,
            &format!("\"func\":\"{:#x}\",{launch}", 0x55d1_c2a0_1230usize + i * 16),
        );
    }
    line(
        out,
        api,
        "cuLaunchKernelEx",
        0.9,
        &format!("\"f\":\"0x6000\",\"grid\":[1024,1,1],\"block\":[128,1,1],\"shared_mem\":0,\"stream\":\"0x1001\",\"kernel\":\"{}\"", KERNELS[3]),
    );
    let copy = format!(
        "\"dst\":\"0x7f2f0f631e60\",\"src\":\"{dptr:#x}\",\"bytes\":64,\"kind\":\"DtoH\",\"stream\":\"0x1001\""
    );
    line(out, api, "cuMemcpyDtoHAsync_v2", 15.1, &copy);
    line(out, rt, "cudaMemcpyAsync", 31.0, &copy);
    line(out, api, "cuEventRecord", 15.4, "\"event\":\"0x2001\",\"stream\":\"0x1001\"");
    line(out, rt, "cudaEventRecord", 32.0, "\"event\":\"0x2001\",\"stream\":\"0x1001\"");
    line(out, api, "cuEventSynchronize", 412.5, "\"event\":\"0x2001\"");
    line(out, rt, "cudaEventSynchronize", 414.1, "\"event\":\"0x2001\"");
    line(out, api, "cuMemFree_v2", 15.5, &format!("\"dptr\":\"{dptr:#x}\",\"bytes\":8192"));
    line(out, rt, "cudaFree", 32.3, &format!("\"dptr\":\"{dptr:#x}\",\"bytes\":8192"));
}

/// Writes about `target` bytes of trace into `dir/session-1/`; returns
/// (files, bytes, lines).
pub fn generate(dir: &Path, target: u64) -> Result<(Vec<PathBuf>, u64, u64)> {
    let session = dir.join("session-1");
    std::fs::create_dir_all(&session)?;
    std::fs::write(session.join("metadata.json"), "{\"start_boot_ns\":1000000000,\"status\":\"finished\"}\n")?;
    let (mut files, mut bytes, mut lines) = (Vec::new(), 0u64, 0u64);
    let mut ts = vec![0.0f64; (PROCESSES * THREADS) as usize];
    let mut n = 0u64;
    while bytes < target {
        let path = session.join(format!("trace_{:05}_20260101T000000Z.jsonl", files.len() + 1));
        let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
        let mut file_bytes = 0u64;
        let mut buf = String::new();
        while file_bytes < FILE_BYTES && bytes + file_bytes < target {
            buf.clear();
            for (slot, t) in ts.iter_mut().enumerate() {
                let pid = 1000 + slot as u32 / THREADS;
                step(&mut buf, pid, pid * 10 + slot as u32 % THREADS, t, n);
            }
            n += 1;
            lines += buf.matches('\n').count() as u64;
            file_bytes += buf.len() as u64;
            w.write_all(buf.as_bytes())?;
        }
        w.flush()?;
        bytes += file_bytes;
        files.push(path);
    }
    Ok((files, bytes, lines))
}

/// What a command took: wall seconds, CPU seconds (user + system) and peak RSS.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub secs: f64,
    pub cpu_secs: f64,
    pub max_rss_kib: u64,
}

/// Runs a command to completion; returns (seconds, max RSS in KiB).
fn timed(cmd: &mut Command) -> Result<(f64, u64)> {
    timed_usage(cmd).map(|u| (u.secs, u.max_rss_kib))
}

/// Runs a command to completion (its stdout discarded); returns its [`Usage`].
pub fn timed_usage(cmd: &mut Command) -> Result<Usage> {
    let start = Instant::now();
    let child = cmd.stdout(Stdio::null()).spawn().with_context(|| format!("starting {cmd:?}"))?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, which std has not reaped.
    let rc = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let secs = start.elapsed().as_secs_f64();
    if rc < 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{cmd:?} failed (wait status {status})");
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Usage { secs, cpu_secs: tv(usage.ru_utime) + tv(usage.ru_stime), max_rss_kib: usage.ru_maxrss as u64 })
}

/// Generates the trace, warms the page cache, times jq once and report
/// three times.
pub fn run(tracer: &Path, bench_root: &Path, quick: bool) -> Result<ReportBench> {
    let dir = bench_root.join("report");
    let _ = std::fs::remove_dir_all(&dir);
    let target = if quick { 128 << 20 } else { 1 << 30 };
    println!("bench: report vs jq, generating {} MiB of trace", target >> 20);
    let (files, bytes, lines) = generate(&dir.join("trace"), target)?;
    let glob = dir.join("trace/*/trace_*.jsonl");
    exec(Command::new("sh").arg("-c").arg(format!("cat {} > /dev/null", glob.display())))?;
    let jq = format!("jq -r .func {} | sort | uniq -c | sort -rn > {}", glob.display(), dir.join("jq.out").display());
    println!("bench: {jq}");
    let (jq_secs, _) = timed(Command::new("sh").arg("-c").arg(&jq))?;
    let mut report_secs = Vec::new();
    let mut rss = 0;
    for _ in 0..3 {
        let (secs, kib) = timed(
            Command::new(tracer)
                .args(["report", "--format", "csv", "--out"])
                .arg(dir.join("out"))
                .arg(dir.join("trace"))
                .env("RUST_LOG", "warn"),
        )?;
        report_secs.push(secs);
        rss = rss.max(kib);
    }
    let (one_thread_secs, _) = timed(
        Command::new(tracer)
            .args(["report", "--format", "csv", "--out"])
            .arg(dir.join("out"))
            .arg(dir.join("trace"))
            .env("RUST_LOG", "warn")
            .env("RAYON_NUM_THREADS", "1"),
    )?;
    // Both counted the same lines.
    let jq_total: u64 = std::fs::read_to_string(dir.join("jq.out"))?
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    let csv = std::fs::read_to_string(dir.join("out/functions.csv"))?;
    let report_total: u64 = csv.lines().skip(1).filter_map(|l| l.split(',').nth(3)?.parse::<u64>().ok()).sum();
    if jq_total != lines || report_total != lines {
        bail!("counts differ: {lines} lines written, jq counted {jq_total}, report {report_total}");
    }
    // CUDA_TRACER_KEEP_BENCH=1 keeps the generated trace for profiling.
    if std::env::var_os("CUDA_TRACER_KEEP_BENCH").is_none() {
        let _ = std::fs::remove_dir_all(dir.join("trace"));
    }
    Ok(ReportBench { bytes, files: files.len(), lines, jq_secs, report_secs, report_max_rss_kib: rss, one_thread_secs })
}

/// The markdown of table 5.
/// The Targets table's row for `report` (issue #6: at least 20× faster
/// than the seed's jq recipe on 1 GB).
pub fn target_row(r: Option<&ReportBench>) -> String {
    let Some(r) = r else {
        return "| `report` on 1 GB at least 20× faster than jq | not measured in this run | — |".into();
    };
    let mut sorted = r.report_secs.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
    let ratio = r.jq_secs / median;
    let verdict = if ratio >= 20.0 { "met" } else { "**missed**" };
    format!(
        "| `report` on 1 GB at least 20× faster than jq | {median:.2} vs {:.2} s ({ratio:.1}×) | {verdict} |",
        r.jq_secs
    )
}

pub fn section(r: Option<&ReportBench>) -> String {
    let mut o = "## 5. `report` on a 1 GB trace vs the seed's jq recipe\n\n".to_string();
    let Some(r) = r else {
        o += "Not measured in this run.\n\n";
        return o;
    };
    let mut sorted = r.report_secs.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let _ = writeln!(
        o,
        "A synthetic trace dir: {} bytes in {} files of up to 128 MiB, {} lines. Serving steps of 4 processes × \
         2 threads as both layers write them (allocation, 3 launches with C++ template kernel names, a Triton \
         launch, async copy, event record and sync, free). Page cache warm for both. jq: \
         `jq -r .func FILES | sort | uniq -c | sort -rn` (per-function counts only). report: \
         `cuda-tracer report --format csv` (release build), every section, all files written; \
         median of 3 runs. Both counted every line.\n",
        num(r.bytes),
        r.files,
        num(r.lines)
    );
    let _ = writeln!(
        o,
        "| jq recipe (s) | report median (s) | report runs (s) | × faster | report max RSS |\n|---|---|---|---|---|\n\
         | {:.2} | {:.2} | {} | {:.1} | {:.0} MiB |\n",
        r.jq_secs,
        median,
        r.report_secs.iter().map(|s| format!("{s:.2}")).collect::<Vec<_>>().join(", "),
        r.jq_secs / median,
        r.report_max_rss_kib as f64 / 1024.0
    );
    let _ = writeln!(
        o,
        "On one thread (`RAYON_NUM_THREADS=1`) the same report takes {:.2} s: {:.2}× slower than on this machine's \
         {} threads, {:.1}× faster than jq. Parsing, sorting, the analyses and the writing run in parallel \
         and jq runs on one core, so the ratio grows with cores; the target is judged on this machine.\n",
        r.one_thread_secs,
        r.one_thread_secs / median,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        r.jq_secs / r.one_thread_secs
    );
    let met = r.jq_secs / median >= 20.0;
    let _ = writeln!(o, "Target (issue #6): at least 20× faster: {}.\n", if met { "met" } else { "**not met**" });
    o
}

/// `cargo xtask bench --only report`: builds, measures table 5 and
/// replaces its section in docs/BENCHMARKS.md.
pub fn run_only(quick: bool) -> Result<()> {
    let root = paths::root();
    exec(Command::new("cargo").current_dir(&root).args(["build", "--release", "-p", "cuda-tracer"]))?;
    let tracer = paths::target_dir().join("release/cuda-tracer");
    let bench_root = paths::target_dir().join("bench");
    let r = run(&tracer, &bench_root, quick)?;
    let mut text = section(Some(&r));
    let _ = writeln!(
        text,
        "Measured alone (`cargo xtask bench --only report{}`) on {} CPUs ({}), {}, load average at start {}.\n",
        if quick { " --quick" } else { "" },
        sh("nproc")?,
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2")?.trim(),
        sh("date -u '+%Y-%m-%d %H:%M UTC'")?,
        sh("cut -d' ' -f1-3 /proc/loadavg")?
    );
    let doc_path = root.join("docs/BENCHMARKS.md");
    replace_section(&doc_path, "## 5. ", &text)?;
    println!("{text}bench: updated {}", doc_path.display());
    Ok(())
}

/// The trimmed output of the shell command `c` (machine facts for a section).
pub fn sh(c: &str) -> std::io::Result<String> {
    Command::new("sh").args(["-c", c]).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Replaces the section of `doc_path` that starts with `heading` (up to the
/// next `## `) with `text`, or appends `text` when there is none.
pub fn replace_section(doc_path: &Path, heading: &str, text: &str) -> Result<()> {
    let doc = std::fs::read_to_string(doc_path).unwrap_or_default();
    let doc = match doc.find(heading) {
        Some(start) => {
            let end = doc[start + 3..].find("\n## ").map_or(doc.len(), |i| start + 3 + i + 1);
            format!("{}{}{}", &doc[..start], text, &doc[end..])
        }
        None => format!("{doc}\n{text}"),
    };
    std::fs::write(doc_path, doc)?;
    Ok(())
}
