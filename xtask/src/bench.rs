//! `cargo xtask bench`: overhead and loss, measured against the physical
//! limit (empty BPF programs at the same attach points) and the seed's
//! bpftrace approach, all in one run; writes docs/BENCHMARKS.md.
//!
//! Every tracer under test gets its own copy of the fixtures (its own
//! inodes), so all of them stay attached at once and the repetitions
//! interleave: noise from the rest of the machine spreads over all modes
//! instead of landing on one. A uprobe binds to an inode, so the probes of
//! one session never fire on another session's calls.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::{
    bench_doc::{self, Report},
    bench_load,
    bench_proc::{self, Background, Run, Shell},
    bench_tables, exec, paths, setup,
};

/// How much to measure.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub reps: usize,
    /// Calls per thread in a per-call run under probes.
    pub per_call: u64,
    /// Calls per thread where no probe fires (no tracer, unselected function).
    pub unprobed: u64,
    /// Calls per thread in the loss runs with 1 and 2 threads (half with 4).
    pub loss: u64,
    pub daemon_secs: f64,
    pub pipeline_events: u64,
    pub pipeline_reps: usize,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                reps: 3,
                per_call: 10_000,
                unprobed: 1_000_000,
                loss: 40_000,
                daemon_secs: 2.0,
                pipeline_events: 1_000_000,
                pipeline_reps: 2,
            }
        } else {
            Self {
                reps: 5,
                per_call: 40_000,
                unprobed: 4_000_000,
                loss: 200_000,
                daemon_secs: 6.0,
                pipeline_events: 5_000_000,
                pipeline_reps: 3,
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Base,
    Empty,
    Full,
    Launch,
    BtEntry,
    BtEntryRet,
    Tiny,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Base => "no tracer",
            Mode::Empty => "empty uprobe+uretprobe (the limit)",
            Mode::Full => "cuda-tracer `--functions all`",
            Mode::Launch => "cuda-tracer `--functions launch` (function not selected)",
            Mode::BtEntry => "bpftrace, uprobe only (the seed's script)",
            Mode::BtEntryRet => "bpftrace, uprobe+uretprobe (with duration)",
            Mode::Tiny => "cuda-tracer `--ringbuf-bytes 4096`",
        }
    }

    fn dir(self) -> &'static str {
        match self {
            Mode::Base => "base",
            Mode::Empty => "empty",
            Mode::Full => "full",
            Mode::Launch => "launch",
            Mode::BtEntry => "bpftrace-entry",
            Mode::BtEntryRet => "bpftrace-entry-return",
            Mode::Tiny => "tiny-ring",
        }
    }

    fn record_flags(self) -> Option<&'static [&'static str]> {
        match self {
            Mode::Empty => Some(&["--functions", "all", "--empty-probes"]),
            Mode::Full => Some(&["--functions", "all"]),
            Mode::Launch => Some(&["--functions", "launch"]),
            Mode::Tiny => Some(&["--functions", "all", "--ringbuf-bytes", "4096"]),
            _ => None,
        }
    }

    fn unprobed(self) -> bool {
        matches!(self, Mode::Base | Mode::Launch)
    }
}

/// One tracer under test with its shell and everything it ran.
struct Session {
    mode: Mode,
    shell: Shell,
    bpftrace: Option<Background>,
    root: PathBuf,
    runs: Vec<(&'static str, Run)>,
}

/// What a finished session delivered.
pub struct Delivered {
    pub per_pid: std::collections::HashMap<u32, u64>,
    /// The tracer's own account: metadata.json's counts, or bpftrace's "Lost" reports.
    pub reported: String,
    pub reported_lost: u64,
}

/// A finished session: its mode, its runs (with their phase) and what it delivered.
pub type Finished = (Mode, Vec<(&'static str, Run)>, Delivered);

/// Copies the fixture files the workload needs into `dir` (new inodes).
pub fn private_fixtures(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for f in ["cuda-workload", "libcuda.so.1", "libcudart.so.12"] {
        std::fs::copy(paths::fixtures_dir().join(f), dir.join(f)).with_context(|| format!("copying {f}"))?;
    }
    Ok(())
}

/// The seed's bpftrace approach for `mode` (one JSON line per call), on the
/// library at `lib`.
fn bpftrace_script(mode: Mode, lib: &Path) -> String {
    let script =
        if mode == Mode::BtEntry { include_str!("bench_entry.bt") } else { include_str!("bench_entry_return.bt") };
    script.replace("LIBRARY", &lib.display().to_string())
}

impl Session {
    fn start(mode: Mode, tracer: &Path, bench_root: &Path) -> Result<Self> {
        let root = bench_root.join(mode.dir());
        let lib = root.join("lib");
        private_fixtures(&lib)?;
        let err = root.join("tracer.stderr");
        let (shell, bpftrace) = if let Some(flags) = mode.record_flags() {
            let mut args: Vec<OsString> = vec!["record".into(), "-o".into(), root.join("trace").into()];
            args.extend(flags.iter().map(OsString::from));
            args.extend(["--".into(), "sh".into()]);
            (Shell::spawn(tracer, &args, &lib, &err)?, None)
        } else if mode == Mode::Base {
            (Shell::plain(&lib, &root.join("shell.stderr"))?, None)
        } else {
            let script = root.join("trace.bt");
            std::fs::write(&script, bpftrace_script(mode, &lib.join("libcuda.so.1")))?;
            let mut cmd = Command::new("bpftrace");
            cmd.arg("-o").arg(root.join("bpftrace.out")).arg(&script);
            let bg = Background::spawn(&mut cmd, "bpftrace", &root.join("bpftrace.stdout"), &err)?;
            (Shell::plain(&lib, &root.join("shell.stderr"))?, Some(bg))
        };
        let mut s = Self { mode, shell, bpftrace, root, runs: Vec::new() };
        let began = Instant::now();
        if let Some(bg) = s.bpftrace.as_mut() {
            // bpftrace attaches beside the shell: wait until the calls trap.
            s.shell.wait_for_probes(bg, Duration::from_secs(120), Duration::from_secs(1))?;
        } else {
            // Record attaches before it starts its command.
            s.bench("warmup", 1, 2000)?;
        }
        println!("bench: {} ready ({:.1} s)", mode.dir(), began.elapsed().as_secs_f64());
        Ok(s)
    }

    /// The process that holds this session's probes.
    fn tracer_pid(&self) -> Option<u32> {
        match (&self.bpftrace, self.mode) {
            (Some(bg), _) => Some(bg.pid()),
            (None, Mode::Base) => None,
            (None, _) => Some(self.shell.pid()),
        }
    }

    fn bench(&mut self, phase: &'static str, threads: u32, per_thread: u64) -> Result<Run> {
        let run = self.shell.bench(threads, per_thread)?;
        self.runs.push((phase, run.clone()));
        Ok(run)
    }

    /// Ends the session and counts what reached its output.
    fn finish(self) -> Result<Finished> {
        let status = self.shell.finish()?;
        let delivered = if let Some(bg) = self.bpftrace {
            bg.stop(libc::SIGINT, Duration::from_secs(120))?;
            let out = self.root.join("bpftrace.out");
            let lost = bench_proc::bpftrace_lost(&[out.clone(), self.root.join("tracer.stderr")])?;
            Delivered {
                per_pid: bench_proc::lines_per_pid(&[out])?,
                reported: format!("bpftrace reported `Lost {lost} events`"),
                reported_lost: lost,
            }
        } else if self.mode == Mode::Base {
            Delivered { per_pid: Default::default(), reported: String::new(), reported_lost: 0 }
        } else {
            anyhow::ensure!(status.success(), "{} record exited with {status}", self.mode.dir());
            let trace = self.root.join("trace");
            let (calls, dropped, detail) = metadata_counts(&trace)?;
            Delivered {
                per_pid: bench_proc::lines_per_pid(&bench_proc::trace_files(&trace)?)?,
                reported: format!("metadata.json: counts.calls {calls}, dropped_events {dropped} ({detail})"),
                reported_lost: dropped,
            }
        };
        Ok((self.mode, self.runs, delivered))
    }
}

/// `counts.calls`, `dropped_events` and the drop counters of a session.
pub fn metadata_counts(dir: &Path) -> Result<(u64, u64, String)> {
    let path = dir.join("metadata.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let m: serde_json::Value = serde_json::from_str(&text)?;
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let d = &m["drops"];
    Ok((
        n(&m["counts"]["calls"]),
        n(&m["dropped_events"]),
        format!(
            "ring buffer full {}, entry map full {}, returns without entry {}",
            n(&d["ringbuf_full"]),
            n(&d["entry_map_full"]),
            n(&d["return_without_entry"])
        ),
    ))
}

fn ensure_bpftrace() -> Option<String> {
    let version = || Command::new("bpftrace").arg("--version").output().ok().filter(|o| o.status.success());
    if version().is_none() {
        println!("bench: installing bpftrace (apt-get)");
        let install = |cmd: &[&str]| Command::new(cmd[0]).args(&cmd[1..]).status().is_ok_and(|s| s.success());
        if !install(&["apt-get", "install", "-y", "bpftrace"]) {
            install(&["apt-get", "update"]);
            install(&["apt-get", "install", "-y", "bpftrace"]);
        }
    }
    version().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

pub fn run(quick: bool) -> Result<()> {
    let began = Instant::now();
    setup::run()?;
    crate::require_root("bench")?;
    let root = paths::root();
    // The binary, and table 3's pipeline benchmark (an example: not shipped).
    let build =
        ["build", "--release", "-p", "cuda-tracer", "--bins", "--example", "bench_pipeline", "--example", "fleet_gen"];
    exec(Command::new("cargo").current_dir(&root).args(build))?;
    let tracer = paths::target_dir().join("release/cuda-tracer");
    let bpftrace = ensure_bpftrace();
    bench_proc::become_subreaper()?;
    let sizes = Sizes::new(quick);
    let bench_root = paths::target_dir().join("bench");
    let _ = std::fs::remove_dir_all(&bench_root);
    std::fs::create_dir_all(&bench_root)?;
    let mut report = Report::new(quick, sizes, bpftrace.clone());

    println!("bench: userspace pipeline");
    let bench_pipeline = paths::target_dir().join("release/examples/bench_pipeline");
    report.pipeline = bench_load::pipeline(&bench_pipeline, &bench_root, &sizes)?;

    let mut modes = vec![Mode::Base, Mode::Empty, Mode::Full, Mode::Launch];
    if bpftrace.is_some() {
        modes.extend([Mode::BtEntry, Mode::BtEntryRet]);
    }
    let mut sessions = Vec::new();
    for &m in modes.iter().chain([Mode::Tiny].iter()) {
        sessions.push(Session::start(m, &tracer, &bench_root)?);
    }
    report.foreign_tracers = bench_proc::foreign_tracers();
    per_call(&mut sessions, modes.len(), &sizes, &mut report)?;
    loss(&mut sessions, &sizes)?;
    let mut finished = Vec::new();
    for s in sessions {
        finished.push(s.finish()?);
    }
    report.per_call = bench_tables::per_call_rows(&finished);
    report.loss = bench_tables::loss_rows(&finished);
    report.loss_checks = finished.iter().filter(|f| !f.2.reported.is_empty()).map(bench_tables::check_line).collect();

    println!("bench: daemon cost");
    report.daemon.push(bench_load::daemon(&tracer, &bench_root, &sizes, 16 << 20, true)?);
    report.daemon.push(bench_load::daemon(&tracer, &bench_root, &sizes, 4 << 20, false)?);
    report.report = Some(crate::bench_report::run(&tracer, &bench_root, quick)?);
    println!("bench: waiting for the tracers' background probe release");
    let release = Instant::now();
    bench_proc::reap_all(Duration::from_secs(300))?;
    report.release_secs = release.elapsed().as_secs_f64();
    // After the reap: table 6 waits for its own release processes, and
    // perf-event attaches contend with any removal still running.
    report.attach = Some(crate::bench_attach::run(&tracer, &bench_root)?);
    report.elapsed_secs = began.elapsed().as_secs_f64();
    let doc = bench_doc::render(&report);
    let out = root.join("docs/BENCHMARKS.md");
    std::fs::create_dir_all(out.parent().expect("docs/ has a parent"))?;
    std::fs::write(&out, &doc)?;
    println!("{doc}\nbench: wrote {} in {:.0} s", out.display(), report.elapsed_secs);
    // Tables 7 and 8 (the fleet, the cost of each --format) go after the rest.
    crate::bench_fleet::write_tables(&tracer, &bench_root, quick)
}

/// Table 1 and "where the time goes": each repetition goes round the first
/// `rotation` sessions (the tiny ring is left out), starting one later
/// each time; then each tracer's CPU and BPF time per call.
fn per_call(sessions: &mut [Session], rotation: usize, sizes: &Sizes, report: &mut Report) -> Result<()> {
    let stats = bench_proc::BpfStats::enable();
    let cpu_before: Vec<Option<f64>> =
        sessions.iter().map(|s| s.tracer_pid().and_then(|p| bench_proc::cpu_secs(p).ok())).collect();
    println!("bench: per-call cost, {} repetitions", sizes.reps);
    for rep in 0..sizes.reps {
        for threads in [1, 2] {
            for k in 0..rotation {
                let s = &mut sessions[(k + rep) % rotation];
                let n = if s.mode.unprobed() { sizes.unprobed } else { sizes.per_call };
                s.bench("per-call", threads, n)?;
            }
        }
    }
    for (s, before) in sessions.iter().zip(cpu_before) {
        let (Some(pid), Some(before)) = (s.tracer_pid(), before) else { continue };
        let calls: u64 = s.runs.iter().filter(|(p, _)| *p == "per-call").map(|(_, r)| r.calls()).sum();
        let cpu = bench_proc::cpu_secs(pid)? - before;
        let (bpf_calls, bpf_ns) = bench_proc::uprobe_prog_stats(pid);
        report.where_time.push(bench_doc::WhereTime {
            mode: s.mode,
            calls,
            tracer_cpu_ns: cpu * 1e9 / calls.max(1) as f64,
            bpf_ns: (stats.on() && bpf_calls > 0).then(|| bpf_ns as f64 / bpf_calls as f64),
        });
    }
    drop(stats);
    Ok(())
}

/// Table 2: loss at the highest rate, by the tracers that record calls.
fn loss(sessions: &mut [Session], sizes: &Sizes) -> Result<()> {
    println!("bench: loss");
    for s in sessions.iter_mut() {
        let plan: &[(u32, u64)] = match s.mode {
            Mode::Full | Mode::BtEntry | Mode::BtEntryRet => &[(1, sizes.loss), (2, sizes.loss), (4, sizes.loss / 2)],
            Mode::Tiny => &[(1, sizes.loss / 4), (2, sizes.loss / 4)],
            _ => &[],
        };
        for &(t, n) in plan {
            s.bench("loss", t, n)?;
        }
    }
    Ok(())
}
