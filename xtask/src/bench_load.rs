//! The two benchmarks that are not a per-call loop: the userspace pipeline
//! with no kernel (the example `bench_pipeline` of `tracer`, profiled with
//! perf when it is installed) and the daemon's CPU and memory at fixed loads.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{
    bench::{metadata_counts, private_fixtures, Sizes},
    bench_proc::{self, Background, Run, Shell},
};

/// Table 3.
#[derive(Debug, Default)]
pub struct PipelineResult {
    pub events: u64,
    pub rates: Vec<f64>,
    pub bytes_per_event: f64,
    /// `perf report` lines (self time by symbol), if perf is installed.
    pub profile: Vec<String>,
}

/// One row of table 4.
#[derive(Debug)]
pub struct DaemonRow {
    pub load: String,
    pub secs: f64,
    pub calls: u64,
    pub rate: f64,
    pub cpu_pct: f64,
    pub hwm_kib: u64,
    pub rss_kib: u64,
}

/// One daemon session of table 4.
#[derive(Debug, Default)]
pub struct DaemonResult {
    /// Ring buffer size in bytes.
    pub ring: u32,
    pub rows: Vec<DaemonRow>,
    /// What its metadata.json said.
    pub check: String,
    /// Resident memory by mapping after the last load, KiB.
    pub rss_by_mapping: Vec<(String, u64)>,
}

fn pipeline_once(bench_pipeline: &Path, events: u64, dir: &Path) -> Result<(f64, u64)> {
    let out = Command::new(bench_pipeline)
        .args(["--events", &events.to_string(), "--dir"])
        .arg(dir)
        .stderr(Stdio::inherit())
        .output()
        .context("running bench_pipeline")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("bench_pipeline failed: {text}");
    }
    let field = |k: &str| text.split_whitespace().find_map(|w| w.strip_prefix(k)).and_then(|v| v.parse::<f64>().ok());
    match (field("events_per_sec="), field("bytes=")) {
        (Some(rate), Some(bytes)) => Ok((rate, bytes as u64)),
        _ => bail!("no events_per_sec= in {text}"),
    }
}

/// Table 3: synthetic records through decode, JSONL and rotation on one
/// thread, by the `bench_pipeline` example at `bench_pipeline`.
pub fn pipeline(bench_pipeline: &Path, bench_root: &Path, sizes: &Sizes) -> Result<PipelineResult> {
    let dir = bench_root.join("pipeline");
    let mut r = PipelineResult { events: sizes.pipeline_events, ..Default::default() };
    for _ in 0..sizes.pipeline_reps {
        let (rate, bytes) = pipeline_once(bench_pipeline, sizes.pipeline_events, &dir)?;
        println!("bench: pipeline {rate:.0} events/s");
        r.rates.push(rate);
        r.bytes_per_event = bytes as f64 / sizes.pipeline_events as f64;
    }
    let data = bench_root.join("pipeline.perf.data");
    let recorded = Command::new("perf")
        .args(["record", "-q", "-o"])
        .arg(&data)
        .arg("--")
        .arg(bench_pipeline)
        .args(["--events", &sizes.pipeline_events.to_string(), "--dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if recorded {
        let report = Command::new("perf")
            .args(["report", "--no-children", "--stdio", "--percent-limit", "1.5", "--sort", "dso,symbol", "-i"])
            .arg(&data)
            .stderr(Stdio::null())
            .output()?;
        r.profile = String::from_utf8_lossy(&report.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#') && l.contains('%'))
            .take(12)
            .map(|l| l.split_whitespace().filter(|w| *w != "-").collect::<Vec<_>>().join(" "))
            .collect();
    }
    Ok(r)
}

struct Window {
    cpu: f64,
    at: Instant,
}

fn window(pid: u32) -> Result<Window> {
    Ok(Window { cpu: bench_proc::cpu_secs(pid)?, at: Instant::now() })
}

fn row(pid: u32, load: String, start: Window) -> Result<DaemonRow> {
    // Records reach the daemon within its 20 ms poll; count that work too.
    std::thread::sleep(Duration::from_millis(100));
    let end = window(pid)?;
    let secs = end.at.duration_since(start.at).as_secs_f64();
    Ok(DaemonRow {
        load,
        secs,
        calls: 0,
        rate: 0.0,
        cpu_pct: (end.cpu - start.cpu) / secs * 100.0,
        hwm_kib: bench_proc::vm_kib(pid, "VmHWM")?,
        rss_kib: bench_proc::vm_kib(pid, "VmRSS")?,
    })
}

/// Table 4: `cuda-tracer run --pid` on a shell that runs the loads one after
/// another; with `all_loads` false only the fastest one.
pub fn daemon(tracer: &Path, bench_root: &Path, sizes: &Sizes, ring: u32, all_loads: bool) -> Result<DaemonResult> {
    let root = bench_root.join(format!("daemon-ring-{}k", ring / 1024));
    let lib = root.join("lib");
    private_fixtures(&lib)?;
    let mut shell = Shell::plain(&lib, &root.join("shell.stderr"))?;
    let traces = root.join("traces");
    let mut cmd = Command::new(tracer);
    cmd.args(["run", "--no-upload", "--pid", &shell.pid().to_string(), "--ringbuf-bytes", &ring.to_string()]);
    cmd.arg("--trace-dir").arg(&traces);
    for var in ["TARGET_PROCESS", "TRACE_DIR", "TRACE_INTERVAL", "TRACE_FUNCTIONS"] {
        cmd.env_remove(var);
    }
    let mut bg =
        Background::spawn(&mut cmd, "cuda-tracer run", &root.join("tracer.stdout"), &root.join("tracer.stderr"))?;
    let pid = bg.pid();
    shell.wait_for_probes(&mut bg, Duration::from_secs(120), Duration::from_secs(2))?;
    let secs = sizes.daemon_secs;

    // Each row is closed right after its load; the calls come from the trace.
    let mut rows: Vec<(DaemonRow, Option<Run>)> = Vec::new();
    if all_loads {
        let start = window(pid)?;
        std::thread::sleep(Duration::from_secs_f64(secs / 2.0));
        rows.push((row(pid, "idle (traced shell, no calls)".into(), start)?, None));

        // The serving loop (realistic mix: launches with kernel names, allocations,
        // copies, events), paced by its step delay to about 10 k calls/s.
        let iterations = (secs / 0.0016) as u64;
        let start = window(pid)?;
        let (spid, _, wall) =
            shell.exec(&format!("--threads 1 --iterations {iterations} --step-delay-us 1250 --no-child"))?;
        let serving = Run { pid: spid, threads: 1, per_thread: 0, ns_per_call: None, wall };
        rows.push((row(pid, "serving loop, 1 thread, 1.25 ms pause per step".into(), start)?, Some(serving)));
    }
    let fast: &[(u32, u64)] = if all_loads {
        &[(1, (secs * 55_000.0) as u64), (2, (secs * 30_000.0) as u64)]
    } else {
        &[(2, (secs * 30_000.0) as u64)]
    };
    for &(threads, per_thread) in fast {
        let start = window(pid)?;
        let run = shell.bench(threads, per_thread)?;
        rows.push((row(pid, format!("bench loop, {threads} thread(s), no pause (machine max)"), start)?, Some(run)));
    }
    let rss_by_mapping = bench_proc::rss_by_mapping(pid).context("the daemon exited during the benchmark")?;
    let status = bg.stop(libc::SIGTERM, Duration::from_secs(120))?;
    shell.finish()?;
    if !status.success() {
        bail!("cuda-tracer run exited with {status}; see {}", root.join("tracer.stderr").display());
    }
    let session = std::fs::read_dir(&traces)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.join("metadata.json").exists())
        .with_context(|| format!("no session directory in {}", traces.display()))?;
    let per_pid = bench_proc::lines_per_pid(&bench_proc::trace_files(&session)?)?;
    let (calls, dropped, detail) = metadata_counts(&session)?;
    let mut result = DaemonResult {
        ring,
        check: format!("metadata.json: counts.calls {calls}, dropped_events {dropped} ({detail})"),
        rows: Vec::new(),
        rss_by_mapping,
    };
    for (mut r, run) in rows {
        if let Some(run) = run {
            r.calls = per_pid.get(&run.pid).copied().unwrap_or(0);
            r.rate = match run.ns_per_call {
                Some(_) => run.rate(),
                None => r.calls as f64 / run.wall.as_secs_f64(),
            };
        }
        result.rows.push(r);
    }
    Ok(result)
}
