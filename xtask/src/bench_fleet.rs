//! Table 7 (`cargo xtask bench --only fleet`): a synthetic fleet written by
//! the `fleet_gen` example through the daemon's own sinks, as the uploaded
//! JSONL tree and as the Parquet lake: the byte ratio, and the fleet's top
//! kernels from `report` over each, DuckDB and (when installed) Spark local
//! over the lake, checked to agree and then timed in the same run. Table 8:
//! the daemon's cost per call of each `--format` (release build).

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{
    bench_doc::num,
    bench_report::{replace_section, sh, timed_usage, Usage},
    exec, paths,
};

/// The fleet's shape. The rate keeps the JSONL under about 4 GB (the
/// disk's room for both formats): see the section's text.
const NODES: u32 = 64;
const PODS: u32 = 4;
const MINUTES: u32 = 60;
const RATE: u32 = 12;
/// Timed runs per engine (the median is reported).
const RUNS: usize = 3;
/// The top kernels compared across engines.
const TOP: usize = 10;

/// Kernels and their launches, most launched first.
type TopKernels = Vec<(String, u64)>;

/// One engine's timing of the top-kernels query.
#[derive(Debug)]
struct Engine {
    name: String,
    /// Median and every run, or why it did not run.
    secs: Result<(f64, Vec<f64>), String>,
}

/// What table 7 measured.
#[derive(Debug)]
struct FleetBench {
    nodes: u32,
    pods: u32,
    minutes: u32,
    rate: u32,
    calls: u64,
    gen_secs: f64,
    jsonl: (u64, usize),
    parquet: (u64, usize),
    engines: Vec<Engine>,
    top: TopKernels,
}

/// Bytes and files below `dir` whose names end with `ext`.
fn du(dir: &Path, ext: &str) -> Result<(u64, usize)> {
    let (mut bytes, mut files) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() && e.file_name().to_string_lossy().ends_with(ext) {
                bytes += e.metadata()?.len();
                files += 1;
            }
        }
    }
    Ok((bytes, files))
}

/// The top kernels by launches (ties by name) from kernel → launches rows.
fn top(mut rows: TopKernels) -> TopKernels {
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows.truncate(TOP);
    rows
}

/// kernel → launches from report's kernels.csv (summed over layers).
fn report_kernels(csv: &Path) -> Result<TopKernels> {
    let text = std::fs::read_to_string(csv).with_context(|| format!("reading {}", csv.display()))?;
    let mut sums = std::collections::BTreeMap::<String, u64>::new();
    for line in text.lines().skip(1).filter(|l| !l.is_empty()) {
        let fields = csv_fields(line);
        let launches = fields.get(2).and_then(|n| n.parse::<u64>().ok()).context("a kernels.csv row")?;
        *sums.entry(fields[0].clone()).or_default() += launches;
    }
    Ok(top(sums.into_iter().collect()))
}

/// The fields of one CSV line (quoted fields may hold commas and `""`).
fn csv_fields(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut chars) = (Vec::new(), String::new(), false, line.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// kernel → launches from an engine's JSON rows (`kernel`, `launches`).
fn json_kernels(stdout: &[u8]) -> Result<TopKernels> {
    let value: serde_json::Value = serde_json::from_slice(stdout).context("the engine's JSON rows")?;
    // An array of rows (the engines), or `top-kernels`' answer holding them.
    let rows = value.get("kernels").unwrap_or(&value).as_array().context("rows of kernels")?;
    let mut sums = std::collections::BTreeMap::<String, u64>::new();
    for r in rows {
        let kernel = r["kernel"].as_str().context("a row's kernel")?.to_string();
        *sums.entry(kernel).or_default() += r["launches"].as_u64().context("a row's launches")?;
    }
    Ok(top(sums.into_iter().collect()))
}

/// The commands of each engine, for a fleet in `out`.
fn engines(tracer: &Path, out: &Path) -> Vec<(String, Result<Command, String>)> {
    let report = |input: &str, dest: &str| {
        let mut c = Command::new(tracer);
        c.args(["report", "--format", "csv", "--out"]).arg(out.join(dest)).arg(out.join(input)).env("RUST_LOG", "warn");
        c
    };
    let top_kernels = |input: &str| {
        let mut c = Command::new(tracer);
        c.args(["top-kernels", "--format", "json"]).arg(out.join(input)).env("RUST_LOG", "warn");
        c
    };
    let root = paths::root();
    let python = |site: Option<std::ffi::OsString>, script: PathBuf, args: &[&str]| {
        let mut c = Command::new("python3");
        c.arg(script).args(args).env("PYTHONPATH", site.unwrap_or_default());
        c
    };
    let lake = out.join("lake").display().to_string();
    let duckdb = std::env::var_os("CUDA_TRACER_DUCKDB")
        .map(|site| python(Some(site), root.join("analysis/fleet/duckdb/run.py"), &[&lake, "top_kernels"]))
        .ok_or_else(|| "CUDA_TRACER_DUCKDB is not set (cargo xtask setup installs DuckDB)".to_string());
    let spark_script = root.join("analysis/fleet/spark/report.py");
    let spark = match std::env::var_os("CUDA_TRACER_PYSPARK") {
        None => Err("CUDA_TRACER_PYSPARK is not set (PySpark not installed)".to_string()),
        Some(_) if !spark_script.exists() => Err("analysis/fleet/spark/report.py is not there yet".to_string()),
        Some(site) => {
            Ok(python(Some(site), spark_script, &["--query", "top_kernels", "--conf", "spark.driver.memory=6g", &lake]))
        }
    };
    vec![
        ("`report` over the JSONL".into(), Ok(report("jsonl", "report-jsonl"))),
        ("`report` over the Parquet lake".into(), Ok(report("lake", "report-lake"))),
        ("DuckDB over the lake (`top_kernels.sql` via `run.py`)".into(), duckdb),
        ("Spark local over the lake (`spark/report.py --query top_kernels`)".into(), spark),
        ("`cuda-tracer top-kernels` over the lake".into(), Ok(top_kernels("lake"))),
        ("`cuda-tracer top-kernels` over the JSONL".into(), Ok(top_kernels("jsonl"))),
    ]
}

/// The top kernels one engine answers (run once, untimed).
fn answer(i: usize, cmd: &mut Command, out: &Path) -> Result<TopKernels> {
    let o = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !o.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    match i {
        0 => report_kernels(&out.join("report-jsonl/kernels.csv")),
        1 => report_kernels(&out.join("report-lake/kernels.csv")),
        _ => json_kernels(&o.stdout),
    }
}

/// Checks every engine's answer against report over the JSONL, then times each.
fn measure(tracer: &Path, out: &Path) -> Result<(Vec<Engine>, TopKernels)> {
    let mut cmds = engines(tracer, out);
    let mut want = None;
    for (i, (name, cmd)) in cmds.iter_mut().enumerate() {
        let Ok(cmd) = cmd else { continue };
        let got = answer(i, cmd, out)?;
        println!("bench: {name}: top kernel {:?}", got.first());
        match &want {
            None => want = Some(got),
            Some(w) if *w != got => bail!("{name} disagrees with report over the JSONL:\n{got:?}\nvs\n{w:?}"),
            Some(_) => {}
        }
    }
    let mut engines = Vec::new();
    for (name, cmd) in cmds {
        let secs = match cmd {
            Err(why) => {
                println!("bench: skipping {name}: {why}");
                Err(why)
            }
            Ok(mut cmd) => {
                let mut runs = Vec::new();
                for _ in 0..RUNS {
                    runs.push(timed_usage(&mut cmd)?.secs);
                }
                let mut sorted = runs.clone();
                sorted.sort_by(f64::total_cmp);
                Ok((sorted[RUNS / 2], runs))
            }
        };
        engines.push(Engine { name, secs });
    }
    Ok((engines, want.unwrap_or_default()))
}

/// Generates the fleet, measures, and deletes it.
fn run(tracer: &Path, bench_root: &Path, quick: bool) -> Result<FleetBench> {
    let out = bench_root.join("fleet");
    let _ = std::fs::remove_dir_all(&out);
    let (nodes, minutes) = if quick { (8, 10) } else { (NODES, MINUTES) };
    println!("bench: generating a fleet of {nodes} nodes × {PODS} pods × {minutes} min at {RATE} calls/s per pod");
    let gen = paths::target_dir().join("release/examples/fleet_gen");
    let mut cmd = Command::new(gen);
    cmd.args(["--nodes", &nodes.to_string(), "--pods", &PODS.to_string(), "--minutes", &minutes.to_string()])
        .args(["--rate", &RATE.to_string(), "--out"])
        .arg(&out);
    let gen_secs = timed_usage(&mut cmd)?.secs;
    let jsonl = du(&out.join("jsonl"), ".jsonl")?;
    let parquet = du(&out.join("lake"), ".parquet")?;
    // Page cache warm for every engine.
    exec(Command::new("sh").arg("-c").arg(format!("find {} -type f -exec cat {{}} + > /dev/null", out.display())))?;
    let (engines, top) = measure(tracer, &out)?;
    let calls = u64::from(nodes * PODS * minutes) * 60 * u64::from(RATE);
    if std::env::var_os("CUDA_TRACER_KEEP_BENCH").is_none() {
        std::fs::remove_dir_all(&out)?;
    }
    Ok(FleetBench { nodes, pods: PODS, minutes, rate: RATE, calls, gen_secs, jsonl, parquet, engines, top })
}

/// One `--format`'s pipeline runs: CPU seconds and peak RSS (KiB) per run.
#[derive(Debug)]
struct FormatCost {
    format: &'static str,
    cpu_secs: Vec<f64>,
    max_rss_kib: u64,
}

/// Table 8: `bench_pipeline` with each `--format`, interleaved, `RUNS` rounds.
fn format_costs(bench_root: &Path, events: u64) -> Result<Vec<FormatCost>> {
    let bin = paths::target_dir().join("release/examples/bench_pipeline");
    let mut costs: Vec<FormatCost> = ["jsonl", "parquet", "both"]
        .into_iter()
        .map(|format| FormatCost { format, cpu_secs: Vec::new(), max_rss_kib: 0 })
        .collect();
    for _ in 0..RUNS {
        for c in &mut costs {
            println!("bench: pipeline --format {}", c.format);
            let dir = bench_root.join(format!("pipeline-{}", c.format));
            let Usage { cpu_secs, max_rss_kib, .. } = timed_usage(
                Command::new(&bin).args(["--events", &events.to_string(), "--format", c.format, "--dir"]).arg(&dir),
            )?;
            c.cpu_secs.push(cpu_secs);
            c.max_rss_kib = c.max_rss_kib.max(max_rss_kib);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    Ok(costs)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The markdown of table 7.
fn fleet_section(r: &FleetBench, machine: &str) -> String {
    let mut o = "## 7. A fleet's traces: JSONL against the Parquet lake\n\n".to_string();
    let pods = r.nodes * r.pods;
    let _ = writeln!(
        o,
        "`cargo xtask bench --only fleet`: the `fleet_gen` example writes {} nodes × {} pods × {} min of calls at \
         {} calls/s per pod ({} calls, {:.0} s to generate) through the daemon's own sinks (`--format both`: the \
         line writer and the Parquet writer), as the uploaded JSONL tree (`<pod>/<session>/trace_*.jsonl` with \
         `metadata.json`) and as the lake (`parquet/date=/hour=/node=/pod=/…`), rotated every 10 min. A serving \
         step is 18 calls: an allocation, 12 launches over 316 kernel names (PyTorch, CUTLASS and flash-attention \
         templates, Triton; a few far more frequent than the rest), a graph launch, two copies (HtoD, DtoH or DtoD), \
         a stream sync and a free. {machine}\n",
        r.nodes,
        r.pods,
        r.minutes,
        r.rate,
        num(r.calls),
        r.gen_secs
    );
    let _ = writeln!(
        o,
        "Why {} calls/s per pod: a real vLLM pod makes about 1–10 k calls/s, but {} pods for an hour at 1 k/s is \
         {} calls, about 250 GB of JSONL; the machine's disk has room for about 6 GB of fleet data, so the rate is \
         chosen to keep the JSONL under 4 GB. Both sizes and every query's work scale with the rows, so the ratios \
         below hold at the real rate; the absolute times grow with it.\n",
        r.rate,
        pods,
        num(u64::from(pods) * 3600 * 1000)
    );
    let ratio = r.parquet.0 as f64 / r.jsonl.0 as f64;
    let _ = writeln!(
        o,
        "| format | files | bytes | bytes per call | ÷ JSONL |\n|---|---|---|---|---|\n\
         | JSONL | {} | {} | {:.0} | 1 |\n| Parquet (zstd, dictionaries) | {} | {} | {:.1} | {ratio:.3} (1/{:.1}) |\n",
        r.jsonl.1,
        num(r.jsonl.0),
        r.jsonl.0 as f64 / r.calls as f64,
        r.parquet.1,
        num(r.parquet.0),
        r.parquet.0 as f64 / r.calls as f64,
        1.0 / ratio
    );
    o += &engine_table(r);
    o
}

/// The engines' rows of table 7, their agreement and the targets.
fn engine_table(r: &FleetBench) -> String {
    let mut o = String::new();
    let base = r.engines.first().and_then(|e| e.secs.as_ref().ok()).map_or(f64::NAN, |s| s.0);
    let _ = writeln!(
        o,
        "The fleet's top kernels by launches, page cache warm, median of {RUNS} runs each, in the same run; the \
         ratio is against `report` over the JSONL. Before timing, every engine's top {TOP} (kernel and launches) \
         was checked to equal `report`'s over the JSONL: `report` runs every section (release build, \
         `--format csv`); DuckDB and Spark run `top_kernels.sql` (the fleet's 20 most launched kernels with their \
         call time, report's kernels table added up per kernel), each engine started afresh per run.\n"
    );
    o += "| engine | median (s) | runs (s) | × faster than report over JSONL |\n|---|---|---|---|\n";
    for e in &r.engines {
        let _ = match &e.secs {
            Ok((m, runs)) => writeln!(
                o,
                "| {} | {m:.2} | {} | {:.1} |",
                e.name,
                runs.iter().map(|s| format!("{s:.2}")).collect::<Vec<_>>().join(", "),
                base / m
            ),
            Err(why) => writeln!(o, "| {} | not run: {why} | — | — |", e.name),
        };
    }
    let best = r.engines.iter().skip(1).filter_map(|e| e.secs.as_ref().ok().map(|s| (base / s.0, &e.name)));
    let best = best.max_by(|a, b| a.0.total_cmp(&b.0));
    let size = r.parquet.0 as f64 / r.jsonl.0 as f64;
    let _ = writeln!(
        o,
        "\nThe top {TOP}: {}.\n\nGoals (issue 19): Parquet at most 1/8 of the JSONL bytes: {} (1/{:.1}); the \
         top-kernels query over Parquet at least 10× faster than `report` over the JSONL: {}.\n",
        r.top.iter().map(|(k, n)| format!("`{k}` {}", num(*n))).collect::<Vec<_>>().join("; "),
        if size <= 0.125 { "met" } else { "**missed**" },
        1.0 / size,
        match best {
            Some((x, name)) if x >= 10.0 => format!("met ({name}, {x:.1}×)"),
            Some((x, name)) => format!("**missed** (best: {name}, {x:.1}×)"),
            None => "not measured".into(),
        }
    );
    o
}

/// The markdown of table 8.
fn cost_section(costs: &[FormatCost], events: u64, machine: &str) -> String {
    let mut o = "## 8. The daemon's cost of each `--format`\n\n".to_string();
    let _ = writeln!(
        o,
        "`bench_pipeline --events {} --format F` (table 3's pipeline: synthetic ring-buffer records through \
         decode, annotation, statistics and the sinks, a rotation every million events; release build), the \
         three formats interleaved, {RUNS} rounds. CPU is the process's user + system time over its events \
         (setup included); peak RSS is its `ru_maxrss`. {machine}\n",
        num(events)
    );
    o += "| `--format` | CPU per call, median (µs) | runs (µs) | × JSONL | peak RSS |\n|---|---|---|---|---|\n";
    let per_call = |c: &FormatCost| median(&c.cpu_secs) * 1e6 / events as f64;
    let base = costs.first().map_or(f64::NAN, per_call);
    for c in costs {
        let runs: Vec<String> = c.cpu_secs.iter().map(|s| format!("{:.2}", s * 1e6 / events as f64)).collect();
        let _ = writeln!(
            o,
            "| {} | {:.2} | {} | {:.1} | {:.1} MiB |",
            c.format,
            per_call(c),
            runs.join(", "),
            per_call(c) / base,
            c.max_rss_kib as f64 / 1024.0
        );
    }
    o.push('\n');
    o
}

/// `cargo xtask bench --only fleet`: builds, then [`write_tables`].
pub fn run_only(quick: bool) -> Result<()> {
    let root = paths::root();
    let build = ["build", "--release", "-p", "cuda-tracer", "--bins", "--example", "fleet_gen", "--example"];
    exec(Command::new("cargo").current_dir(&root).args(build).arg("bench_pipeline"))?;
    write_tables(&paths::target_dir().join("release/cuda-tracer"), &paths::target_dir().join("bench"), quick)
}

/// Measures tables 7 and 8 with the release build and replaces their
/// sections in docs/BENCHMARKS.md (the full bench calls it last).
pub fn write_tables(tracer: &Path, bench_root: &Path, quick: bool) -> Result<()> {
    std::fs::create_dir_all(bench_root)?;
    let machine = format!(
        "Measured on {} CPUs ({}, {} memory), {}, load average at start {}.",
        sh("nproc")?,
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2")?.trim(),
        sh("free -g | awk '/Mem:/ {print $2 \" GiB\"}'")?,
        sh("date -u '+%Y-%m-%d %H:%M UTC'")?,
        sh("cut -d' ' -f1-3 /proc/loadavg")?
    );
    let events = if quick { 500_000 } else { 2_000_000 };
    let costs = format_costs(bench_root, events)?;
    let fleet = run(tracer, bench_root, quick)?;
    let doc_path = paths::root().join("docs/BENCHMARKS.md");
    let (seven, eight) = (fleet_section(&fleet, &machine), cost_section(&costs, events, &machine));
    replace_section(&doc_path, "## 7. ", &seven)?;
    replace_section(&doc_path, "## 8. ", &eight)?;
    println!("{seven}{eight}bench: updated {}", doc_path.display());
    Ok(())
}
