//! Table 6: attaching and detaching a probe pair at every exported function
//! of the CUDA libraries (`--functions exported`), with uprobe_multi links
//! and with one perf-event uprobe per function (`--per-probe-uprobes`), in
//! the same run. `cargo xtask bench --only attach` runs this table alone
//! (root) and replaces its section in docs/BENCHMARKS.md.

use std::{
    ffi::OsString,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{bench_proc, exec, paths};

/// Exports of the synthetic libcuda.so.1: about what a real libcuda 12/13
/// exports (there is no real libcuda on the machines this runs on).
const SYNTHETIC_EXPORTS: usize = 600;

/// How long a mode's detach is waited for: per-probe perf events take a
/// grace period each (minutes for ~3000); the table says "more than" then.
const DETACH_WAIT: Duration = Duration::from_secs(300);

/// One mode's numbers.
#[derive(Debug)]
pub struct AttachRun {
    pub mode: &'static str,
    /// Probes attached (entry and return each count one).
    pub probes: u64,
    /// Sum of the libraries' `attach_ms` in metadata.json.
    pub attach_ms: f64,
    /// From the tracer's exit to its probe-release child's: the detach
    /// (`None`: not done within [`DETACH_WAIT`]).
    pub detach_ms: Option<f64>,
}

/// What table 6 measured.
#[derive(Debug)]
pub struct AttachBench {
    /// (library, exported functions).
    pub libraries: Vec<(String, usize)>,
    pub runs: Vec<AttachRun>,
}

/// Runs both modes with `tracer` (a release build: attach time includes
/// reading the symbol tables).
pub fn run(tracer: &Path, bench_root: &Path) -> Result<AttachBench> {
    let dir = bench_root.join("attach");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let libcuda = synthetic_libcuda(&dir)?;
    let libs = [libcuda, paths::nvidia_cudart(), paths::nvidia_cudart13()];
    let mut libraries = Vec::new();
    for lib in &libs {
        libraries.push((lib.display().to_string(), exported_functions(lib)?));
    }
    bench_proc::become_subreaper()?;
    let mut runs = Vec::new();
    for (mode, flags) in [("uprobe_multi", &[][..]), ("perf_event", &["--per-probe-uprobes"][..])] {
        println!("bench: attach and detach, {mode}");
        runs.push(one(tracer, &dir.join(mode), &libs, mode, flags)?);
    }
    Ok(AttachBench { libraries, runs })
}

fn one(tracer: &Path, out: &Path, libs: &[PathBuf], mode: &'static str, flags: &[&str]) -> Result<AttachRun> {
    let mut args: Vec<OsString> =
        vec!["record".into(), "-o".into(), out.into(), "--functions".into(), "exported".into()];
    args.extend(flags.iter().map(OsString::from));
    for lib in libs {
        args.extend(["--lib".into(), lib.into()]);
    }
    args.extend(["--".into(), "true".into()]);
    let status = Command::new(tracer).args(&args).env_remove("LD_LIBRARY_PATH").status()?;
    let exited = Instant::now();
    if !status.success() {
        bail!("{} {args:?}: {status}", tracer.display());
    }
    let detach = reap_release(DETACH_WAIT)?.map(|at| at.duration_since(exited).as_secs_f64() * 1e3);
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("metadata.json"))?)?;
    let attached = meta["libraries"].as_array().context("metadata.json has libraries")?;
    if attached.len() != libs.len() || attached.iter().any(|l| l["attach"] != mode) {
        bail!("expected {} libraries attached by {mode}: {attached:?}", libs.len());
    }
    let sum = |key: &str| attached.iter().filter_map(|l| l[key].as_f64()).sum::<f64>();
    Ok(AttachRun { mode, probes: sum("probes") as u64, attach_ms: sum("attach_ms"), detach_ms: detach })
}

/// Waits until every descendant reparented to us (the tracer's
/// probe-release child) has exited, and returns when the last one was
/// reaped (polled every 2 ms); `None` if one still runs after `timeout`
/// (the full bench's final reap waits for it).
fn reap_release(timeout: Duration) -> Result<Option<Instant>> {
    let began = Instant::now();
    let mut last = None;
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only to `status`.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        match r {
            r if r > 0 => last = Some(Instant::now()),
            r if r < 0 => return last.context("the tracer left no probe-release process").map(Some),
            _ if began.elapsed() > timeout => return Ok(None),
            _ => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// A libcuda.so.1 exporting `cuInit` and [`SYNTHETIC_EXPORTS`]` - 1` other functions.
fn synthetic_libcuda(dir: &Path) -> Result<PathBuf> {
    let mut c = String::from("int cuInit(unsigned f) { return (int)f; }\n");
    for i in 1..SYNTHETIC_EXPORTS {
        let _ = writeln!(c, "int cuSynthetic{i}(void) {{ return {i}; }}");
    }
    let src = dir.join("libcuda.c");
    std::fs::write(&src, c)?;
    let lib = dir.join("libcuda.so.1");
    exec(Command::new("cc").args(["-shared", "-fPIC", "-O1", "-o"]).arg(&lib).arg(&src))?;
    Ok(lib)
}

/// Defined function symbols in `.dynsym` (`nm -D --defined-only`).
fn exported_functions(lib: &Path) -> Result<usize> {
    let out = Command::new("nm").args(["-D", "--defined-only"]).arg(lib).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().filter(|l| matches!(l.split_whitespace().nth(1), Some("T" | "t" | "W" | "i"))).count())
}

/// The section of docs/BENCHMARKS.md.
pub fn section(r: Option<&AttachBench>) -> String {
    let mut o = String::from("## 6. Attaching every exported function\n\n");
    let Some(r) = r else {
        o.push_str("Not measured in this run.\n\n");
        return o;
    };
    let libs: Vec<String> = r.libraries.iter().map(|(l, n)| format!("`{l}` ({n} exported functions)")).collect();
    let _ = writeln!(
        o,
        "`record --functions exported -- true` with {}: an entry and a return probe at every exported \
         function. There is no real libcuda here: the libcuda.so.1 is synthetic, with {SYNTHETIC_EXPORTS} \
         exports (about what NVIDIA's libcuda 12/13 exports). Attach: the sum of the libraries' `attach_ms` in \
         metadata.json. Detach: from the tracer's exit to the exit of the child that releases the probes \
         (±10 ms: it polls for its parent's exit).\n",
        libs.join(", ")
    );
    let _ = writeln!(o, "| mode | probes | attach (ms) | detach (ms) |\n|---|---:|---:|---:|");
    let waited = DETACH_WAIT.as_millis();
    for run in &r.runs {
        let detach = run.detach_ms.map_or(format!("> {waited}"), |ms| format!("{ms:.0}"));
        let _ = writeln!(o, "| {} | {} | {:.0} | {detach} |", run.mode, run.probes, run.attach_ms);
    }
    if let [multi, perf] = &r.runs[..] {
        let detach = match (perf.detach_ms, multi.detach_ms) {
            (Some(p), Some(m)) => format!("{:.1}×", p / m.max(0.001)),
            (None, Some(m)) => format!("more than {:.0}×", waited as f64 / m.max(0.001)),
            _ => "not measured".into(),
        };
        let attach = perf.attach_ms / multi.attach_ms.max(0.001);
        let _ = writeln!(o, "\nperf_event / uprobe_multi, same run: attach {attach:.1}×, detach {detach}.\n");
    }
    o
}

/// `cargo xtask bench --only attach`: builds, measures, replaces section 6.
/// `CUDA_TRACER_BENCH_BIN` measures that binary instead of building a
/// release one (the section names it): attach and detach are kernel time.
pub fn run_only() -> Result<()> {
    crate::require_root("bench --only attach")?;
    let root = paths::root();
    let tracer = match std::env::var_os("CUDA_TRACER_BENCH_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => {
            exec(Command::new("cargo").current_dir(&root).args(["build", "--release", "-p", "cuda-tracer"]))?;
            paths::target_dir().join("release/cuda-tracer")
        }
    };
    let r = run(&tracer, &paths::target_dir().join("bench"))?;
    let sh = crate::bench_report::sh;
    let mut text = section(Some(&r));
    let _ = writeln!(
        text,
        "Measured alone (`cargo xtask bench --only attach`, binary `{}`) on {} CPUs, kernel {}, {}, load average at start {}.\n",
        tracer.display(),
        sh("nproc")?,
        sh("uname -r")?,
        sh("date -u '+%Y-%m-%d %H:%M UTC'")?,
        sh("cut -d' ' -f1-3 /proc/loadavg")?
    );
    crate::bench_report::replace_section(&root.join("docs/BENCHMARKS.md"), "## 6. ", &text)?;
    println!("{text}bench: updated docs/BENCHMARKS.md");
    Ok(())
}
