//! docs/BENCHMARKS.md: the machine, the five tables, the targets and the method.

use std::{fmt::Write as _, process::Command};

use crate::{
    bench::{Mode, Sizes},
    bench_load::{DaemonResult, PipelineResult},
};

/// One row of table 1.
#[derive(Debug)]
pub struct PerCallRow {
    pub mode: Mode,
    pub threads: u32,
    pub reps: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Median over the limit's median.
    pub ratio: f64,
}

/// One row of table 2.
#[derive(Debug)]
pub struct LossRow {
    pub mode: Mode,
    pub threads: u32,
    pub per_thread: u64,
    pub runs: usize,
    pub calls: u64,
    pub delivered: u64,
    pub rate: f64,
}

/// Where a traced call's extra time goes (per-call phase of one session).
#[derive(Debug)]
pub struct WhereTime {
    pub mode: Mode,
    pub calls: u64,
    /// CPU of the tracer process (all threads) per call.
    pub tracer_cpu_ns: f64,
    /// Time inside the uprobe BPF programs per call, from bpf_stats.
    pub bpf_ns: Option<f64>,
}

/// Everything the benchmark found.
#[derive(Debug)]
pub struct Report {
    pub quick: bool,
    pub sizes: Sizes,
    pub bpftrace: Option<String>,
    pub machine: Vec<(&'static str, String)>,
    pub pipeline: PipelineResult,
    pub per_call: Vec<PerCallRow>,
    pub where_time: Vec<WhereTime>,
    pub loss: Vec<LossRow>,
    pub loss_checks: Vec<String>,
    pub daemon: Vec<DaemonResult>,
    pub foreign_tracers: usize,
    pub release_secs: f64,
    pub elapsed_secs: f64,
    /// Table 5.
    pub report: Option<crate::bench_report::ReportBench>,
    pub attach: Option<crate::bench_attach::AttachBench>,
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn proc_field(file: &str, key: &str) -> String {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find_map(|l| Some(l.strip_prefix(key)?.trim_start().strip_prefix(':')?.trim().to_string()))
        .unwrap_or_default()
}

impl Report {
    pub fn new(quick: bool, sizes: Sizes, bpftrace: Option<String>) -> Self {
        let mem_kib: f64 = proc_field("/proc/meminfo", "MemTotal").trim_end_matches("kB").trim().parse().unwrap_or(0.0);
        let machine = vec![
            ("CPUs (`nproc`)", sh("nproc")),
            ("CPU model", proc_field("/proc/cpuinfo", "model name")),
            ("memory", format!("{:.1} GiB", mem_kib / 1024.0 / 1024.0)),
            ("kernel (`uname -r`)", sh("uname -r")),
            ("date", sh("date -u '+%Y-%m-%d %H:%M UTC'")),
            ("load average at start", sh("cut -d' ' -f1-3 /proc/loadavg")),
            ("bpftrace", bpftrace.clone().unwrap_or_else(|| "not available".into())),
        ];
        Self {
            quick,
            sizes,
            bpftrace,
            machine,
            pipeline: PipelineResult::default(),
            per_call: Vec::new(),
            where_time: Vec::new(),
            loss: Vec::new(),
            loss_checks: Vec::new(),
            daemon: Vec::new(),
            foreign_tracers: 0,
            release_secs: 0.0,
            elapsed_secs: 0.0,
            report: None,
            attach: None,
        }
    }
}

/// 1234567 -> "1 234 567".
pub fn num(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

pub fn ns(v: f64) -> String {
    if v < 100.0 {
        format!("{v:.1}")
    } else {
        num(v.round() as u64)
    }
}

pub fn ratio(r: f64) -> String {
    if r < 0.001 {
        "< 0.001×".into()
    } else if r < 0.1 {
        format!("{r:.3}×")
    } else {
        format!("{r:.2}×")
    }
}

pub fn yes(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**missed**"
    }
}

fn buffer(mode: Mode) -> &'static str {
    match mode {
        Mode::Tiny => "ring buffer 4 KiB",
        Mode::BtEntry | Mode::BtEntryRet => "perf buffer, 64 pages per CPU (default)",
        _ => "ring buffer 16 MiB (default)",
    }
}

/// The median (NaN for none).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let n = v.len();
    if !n.is_multiple_of(2) {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn short(m: Mode) -> &'static str {
    match m {
        Mode::BtEntry => "bpftrace entry",
        Mode::BtEntryRet => "bpftrace entry+return",
        _ => m.label(),
    }
}

/// The whole document.
pub fn render(r: &Report) -> String {
    let s = &r.sizes;
    let mut o = String::new();
    let _ = writeln!(o, "# Benchmarks\n");
    let _ = writeln!(
        o,
        "Written by `cargo xtask bench{}` (run as root); rerun it to refresh this file. It took {:.0} s.\n",
        if r.quick { " --quick" } else { "" },
        r.elapsed_secs
    );
    if r.quick {
        let _ = writeln!(o, "**`--quick` run: small sizes, for checking the harness, not for quoting.**\n");
    }
    let _ = writeln!(o, "## Machine\n\n| | |\n|---|---|");
    for (k, v) in &r.machine {
        let _ = writeln!(o, "| {k} | {v} |");
    }
    let _ = writeln!(o, "| load average at end | {} |", sh("cut -d' ' -f1-3 /proc/loadavg"));
    let _ = writeln!(o, "| other `cuda-tracer` processes on the machine during the run | {} |\n", r.foreign_tracers);
    let _ = writeln!(o, "## Targets\n");
    crate::bench_method::targets(r, &mut o);

    let _ = writeln!(o, "## 1. Per-call cost\n");
    let _ = writeln!(
        o,
        "`cuda-workload --bench-loop N --threads T`: each thread calls `cuStreamSynchronize` N times through a \
         `dlopen`ed `libcuda.so.1`. N = {} per thread where a probe fires, {} where none does. {} repetitions, \
         interleaved across tracers; the median, with the range. The ratio is against the limit's median with the \
         same thread count.\n",
        num(s.per_call),
        num(s.unprobed),
        s.reps
    );
    let _ =
        writeln!(o, "| threads | tracer | runs | ns/call (median) | min – max | × limit |\n|---|---|---|---|---|---|");
    for x in &r.per_call {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} – {} | {} |",
            x.threads,
            x.mode.label(),
            x.reps,
            ns(x.median),
            ns(x.min),
            ns(x.max),
            ratio(x.ratio)
        );
    }
    where_section(r, &mut o);
    let _ = writeln!(o, "\n## 2. Loss\n");
    let _ = writeln!(
        o,
        "Delivered = trace lines of the run's pid (cuda-tracer's JSONL files, bpftrace's output file). \
         The rate is what the workload achieved while traced (threads × 10⁹ / ns per call). 4 threads on 2 CPUs \
         oversubscribe the machine.\n"
    );
    let _ = writeln!(
        o,
        "| tracer | buffer | threads | calls/thread | runs | calls | calls/s | delivered | lost | delivered/calls |\n\
         |---|---|---|---|---|---|---|---|---|---|"
    );
    for l in &r.loss {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.4} |",
            l.mode.label(),
            buffer(l.mode),
            l.threads,
            num(l.per_thread),
            l.runs,
            num(l.calls),
            num(l.rate as u64),
            num(l.delivered),
            num(l.calls.saturating_sub(l.delivered)),
            l.delivered as f64 / l.calls.max(1) as f64
        );
    }
    let _ = writeln!(
        o,
        "\nWhat each tracer reported against what is missing (all runs of its session, warm-up included):\n"
    );
    for c in &r.loss_checks {
        let _ = writeln!(o, "- {c}");
    }
    let _ = writeln!(o, "\n## 3. Userspace pipeline, no kernel\n");
    let p = &r.pipeline;
    let _ = writeln!(
        o,
        "`bench_pipeline --events {}` (the example `tracer/examples/bench_pipeline.rs`): synthetic records, byte for byte what the probes write to the \
         ring buffer (a serving step as both layers see it: allocation, 3 launches with grid/block and kernel \
         names, async copy, event record and sync, free; each as runtime call and driver call, each with a \
         return address named as its `caller`), through `Pipeline::handle` (checked decode, annotation, \
         statistics, JSONL formatting, buffered write), rotating every 1 000 000 events (flush, fsync, rename). One thread.\n",
        num(p.events)
    );
    let runs = p.rates.iter().map(|v| num(*v as u64)).collect::<Vec<_>>().join(", ");
    let best = p.rates.iter().copied().fold(0.0, f64::max);
    let med = median(&p.rates);
    let _ = writeln!(
        o,
        "| runs | events/s (median) | best | each run | bytes/line | MB/s written (median) |\n|---|---|---|---|---|---|\n\
         | {} | {} | {} | {runs} | {:.0} | {:.0} |\n",
        p.rates.len(),
        num(med as u64),
        num(best as u64),
        p.bytes_per_event,
        med * p.bytes_per_event / 1e6
    );
    if !p.profile.is_empty() {
        let _ = writeln!(o, "Where the time goes (`perf record`, self time by object and symbol, one more run):\n");
        let _ = writeln!(o, "```");
        for l in &p.profile {
            let _ = writeln!(o, "{l}");
        }
        let _ = writeln!(o, "```\n");
    }
    daemon_section(r, &mut o);
    o.push_str(&crate::bench_report::section(r.report.as_ref()));
    o.push_str(&crate::bench_attach::section(r.attach.as_ref()));
    o.push_str(&crate::bench_method::method(r));
    o
}

fn daemon_section(r: &Report, o: &mut String) {
    let _ = writeln!(o, "## 4. Daemon cost at fixed loads\n");
    let _ = writeln!(
        o,
        "`cuda-tracer run --no-upload --pid <shell> --ringbuf-bytes R` (rotation every 60 s) traces a shell that \
         runs the loads one after the other. CPU is utime + stime of the daemon (all threads) from \
         `/proc/PID/stat` over the window, as % of one core; peak RSS is `VmHWM` from `/proc/PID/status`. \
         A second daemon with a 4 MiB ring runs the fastest load only.\n"
    );
    let _ = writeln!(
        o,
        "| ring | load | window | calls traced | calls/s | daemon CPU (% of one core) | peak RSS (VmHWM) | RSS at end |\n\
         |---|---|---|---|---|---|---|---|"
    );
    for d in &r.daemon {
        for x in &d.rows {
            let _ = writeln!(
                o,
                "| {} MiB | {} | {:.1} s | {} | {} | {:.1} % | {:.1} MiB | {:.1} MiB |",
                d.ring >> 20,
                x.load,
                x.secs,
                num(x.calls),
                num(x.rate as u64),
                x.cpu_pct,
                x.hwm_kib as f64 / 1024.0,
                x.rss_kib as f64 / 1024.0
            );
        }
    }
    let _ = writeln!(o);
    for d in &r.daemon {
        let _ =
            writeln!(o, "Daemon with a {} MiB ring: {}. Resident memory after its last load:\n", d.ring >> 20, d.check);
        for (kind, kib) in &d.rss_by_mapping {
            let _ = writeln!(o, "- {:.1} MiB: {kind}", *kib as f64 / 1024.0);
        }
        let _ = writeln!(o);
    }
}

fn where_section(r: &Report, o: &mut String) {
    let _ = writeln!(
        o,
        "\nWhere the time goes, over the same runs. BPF time is measured by the kernel \
         (`kernel.bpf_stats_enabled=1` during these runs; `run_time_ns` / `run_cnt` of the tracer's uprobe \
         programs, from `/proc/PID/fdinfo`); it is spent on the calling thread, inside the trap. Tracer CPU is \
         utime + stime of the tracer's process (reader, decoding, formatting, writing) over the runs, divided by \
         the calls; it runs on any core, so with 2 busy threads on 2 CPUs it takes time from them. The \
         empty-probe tracer does nothing per call in userspace, so its row is the idle cost (poll timer, \
         `/proc` scans) spread over the same calls; subtract it from cuda-tracer's. For the entry-only bpftrace \
         script, the BPF time is almost all `printf`'s output to the perf buffer. Enabling `bpf_stats` adds \
         two clock reads to every program run, for every tracer alike.\n"
    );
    let _ =
        writeln!(o, "| tracer | calls | in BPF programs, ns/call | tracer process CPU, ns/call |\n|---|---|---|---|");
    for w in r.where_time.iter().filter(|w| w.calls > 0) {
        let bpf = w.bpf_ns.map(|v| format!("{v:.0}")).unwrap_or_else(|| "—".into());
        let _ = writeln!(o, "| {} | {} | {bpf} | {:.0} |", w.mode.label(), num(w.calls), w.tracer_cpu_ns);
    }
}
