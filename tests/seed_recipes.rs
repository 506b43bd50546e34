//! The seeds' users' first day: README's trace recipes (jq, wc, grep, head,
//! `report`, `export`) run verbatim, as bash, on both layouts a user has (the
//! local trace dir `traces/<session>/` and an `aws s3 sync`ed prefix
//! `traces/<pod>/<session>/`) and give the same answers; and the report's
//! CSVs are read with the seeds' own pandas and awk snippets, which index
//! columns by position.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::Ordering,
    time::Duration,
};

use cuda_tracer_tests::*;

/// Steps of the vLLM-like loop: README exports steps 100..150.
const STEPS: &str = "200";

/// The ```bash blocks of README's section under `heading` (to the next
/// heading of the same or a higher level), joined into one script.
fn readme_blocks(heading: &str) -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let level = heading.split(' ').next().unwrap_or_default().len();
    let mut lines = readme.lines().skip_while(|l| *l != heading);
    assert!(lines.next().is_some(), "README has no heading {heading:?}");
    let (mut script, mut inside) = (String::new(), false);
    for line in lines {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if !inside && hashes > 0 && hashes <= level && line.chars().nth(hashes) == Some(' ') {
            break;
        }
        match (inside, line.trim()) {
            (false, "```bash") => inside = true,
            (true, "```") => inside = false,
            (true, _) => script += &format!("{line}\n"),
            _ => {}
        }
    }
    assert!(!script.is_empty(), "no bash block under {heading:?}");
    script
}

/// A directory with `cuda-tracer` in it, for PATH.
fn bin_dir(tmp: &Path) -> PathBuf {
    let bin = tmp.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(tracer(), bin.join("cuda-tracer")).unwrap();
    bin
}

/// Runs `script` with bash in `dir` (`-e`: a failing command fails it),
/// with `bin` first on PATH; its stdout.
fn bash(script: &str, dir: &Path, bin: &Path) -> String {
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("bash")
        .args(["-e", "-c", script])
        .current_dir(dir)
        .env("PATH", path)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "in {}:\n{script}\nfailed: {}\n{}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn need_tool(tool: &str, fix: &str) {
    let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().unwrap().status.success();
    assert!(found, "`{tool}` is missing: {fix}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// `traces/<session>/` in `local`, recorded from the vLLM-like loop, and the
/// same files where `aws s3 sync s3://BUCKET/PREFIX ./traces/` puts them
/// (`<prefix><pod>/<session>/<file>` keys) in `synced`.
fn two_layouts(tmp: &Path, sessions: &[PathBuf]) -> (PathBuf, PathBuf) {
    let (local, synced) = (tmp.join("local"), tmp.join("synced"));
    for session in sessions {
        let name = session.file_name().unwrap();
        copy_dir(session, &local.join("traces").join(name));
        copy_dir(session, &synced.join("traces/vllm-7d9f8-abcde").join(name));
    }
    (local, synced)
}

/// Records the vLLM-like loop into `dir/<session>`; the session dir.
fn record_loop(dir: &Path, truth: &Path) -> PathBuf {
    let session = dir.join("20261203T100000Z-1");
    record(&session, truth, &[], &[&workload(), "--vllm-loop", "--vllm-steps", STEPS]);
    session
}

fn sorted_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    lines
}

#[test]
fn readme_trace_recipes_give_the_same_answers_on_the_local_and_the_synced_layout() {
    need_tool("jq", "apt-get install -y jq");
    let tmp = tempfile::tempdir().unwrap();
    let session = record_loop(&tmp.path().join("recorded"), &tmp.path().join("truth"));
    let calls = load_trace(&session).lines.len();
    let (local, synced) = two_layouts(tmp.path(), &[session]);
    let bin = bin_dir(tmp.path());

    let answers = readme_blocks("## Answers from a trace: `report` and `export chrome`");
    let recipes = readme_blocks("### Reading traces with `jq`, `wc`, `grep` and `head`");
    let mut outputs = Vec::new();
    for layout in [&local, &synced] {
        let printed = bash(&answers, layout, &bin);
        assert!(printed.contains(" launches in "), "top-kernels' table: {printed}");
        // The text summary of the first report, then the second's JSON.
        let json_start = printed.find("\n{").unwrap_or_else(|| panic!("no JSON printed: {printed}"));
        let report: serde_json::Value = serde_json::from_str(&printed[json_start..]).expect("report --format json");
        assert_eq!(report["inputs"]["calls"], calls as u64, "{}", layout.display());
        assert!(layout.join("report/report.txt").exists() && layout.join("report/forward_pass_timing.csv").exists());
        let chrome: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("trace.json")).unwrap()).expect("trace.json is JSON");
        assert!(chrome["traceEvents"].as_array().is_some_and(|e| !e.is_empty()), "{}", layout.display());
        outputs.push(bash(&recipes, layout, &bin));
    }
    let (on_local, on_synced) = (&outputs[0], &outputs[1]);
    assert_eq!(sorted_lines(on_local), sorted_lines(on_synced), "the recipes answer the same on both layouts");
    let lines: Vec<&str> = on_local.lines().collect();
    assert_eq!(lines[0].trim(), calls.to_string(), "wc -l counts every call");
    assert!(lines.iter().any(|l| l.trim().ends_with(" cudaGraphLaunch")), "jq -r .func | uniq -c");
    assert!(lines.iter().any(|l| l.contains(r#""func":"cudaMemcpy"#)), "memory operations: {on_local}");
    assert!(lines.iter().any(|l| l.contains(r#""func":"cudaLaunchKernel""#)), "kernel launches");
    // The last 100 lines are the timeline: entry times, never decreasing.
    let timeline: Vec<f64> =
        lines[lines.len() - 100..].iter().map(|l| l.split('\t').next().unwrap().parse().unwrap()).collect();
    assert!(timeline.windows(2).all(|w| w[0] <= w[1]), "sorted by ts: {timeline:?}");
}

/// vLLM's page at scrape `n`: usage rising by 10 % a scrape from 10 %, and
/// with `--kv-cache-metrics`, one sampled block evicted per interval after
/// `5 + n` s of life, `n` s of it idle.
fn vllm_page(n: usize) -> String {
    let page = std::fs::read_to_string(root().join("tests/data/vllm_metrics.txt")).expect("recorded page");
    let usage = (n.min(8) + 1) as f64 / 10.0;
    let page = page.replace(
        r#"vllm:kv_cache_usage_perc{engine="0",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 0.0421875"#,
        &format!(r#"vllm:kv_cache_usage_perc{{engine="0",model_name="Qwen/Qwen2.5-0.5B-Instruct"}} {usage}"#),
    );
    let (count, lifetime, idle) = (n, (0..=n).skip(1).map(|i| 5 + i).sum::<usize>(), (0..=n).sum::<usize>());
    format!(
        "{page}# TYPE vllm:kv_block_lifetime_seconds histogram\n\
         vllm:kv_block_lifetime_seconds_count{{engine=\"0\"}} {count}\n\
         vllm:kv_block_lifetime_seconds_sum{{engine=\"0\"}} {lifetime}\n\
         # TYPE vllm:kv_block_idle_before_evict_seconds histogram\n\
         vllm:kv_block_idle_before_evict_seconds_count{{engine=\"0\"}} {count}\n\
         vllm:kv_block_idle_before_evict_seconds_sum{{engine=\"0\"}} {idle}\n"
    )
}

/// A daemon session that scraped [`vllm_page`] `scrapes` times into `traces`.
fn scrape_session(traces: &Path, scrapes: usize) -> PathBuf {
    let (port, served) = serve_http(|n| (200, vllm_page(n)));
    let mut daemon = KillOnDrop(
        tracer_cmd()
            .args(["run", "--no-upload", "--target-process", "^no-such-process$", "--metrics-interval", "1"])
            .arg("--vllm-metrics-url")
            .arg(format!("http://127.0.0.1:{port}/metrics"))
            .arg("--trace-dir")
            .arg(traces)
            .spawn()
            .unwrap(),
    );
    wait_for("the scrapes", Duration::from_secs(90), || served.load(Ordering::SeqCst) > scrapes);
    signal(&daemon.0, libc::SIGTERM);
    assert!(wait_with_deadline(&mut daemon.0, Duration::from_secs(90)).success());
    session_dir(traces).expect("the daemon's session")
}

/// The seeds' Python: ProfileMate's analysis and Prometheus export (its
/// matplotlib lines left out: they draw, they do not read), then
/// forward_pass_timing.csv by the simple profiler's column names.
const SEED_PANDAS: &str = r#"
import pandas as pd

# Load CUDA graph usage
graphs = pd.read_csv('cuda_graph_usage.csv')

# Find most-used graphs
top_graphs = graphs.nlargest(10, 'replay_count')
print("Top 10 CUDA Graphs:")
print(top_graphs[['num_tokens', 'replay_count']])

# Load KV cache usage
kv_cache = pd.read_csv('kv_cache_usage.csv')

# convert_to_prometheus.py
kv_cache = pd.read_csv('kv_cache_usage.csv')

# Generate Prometheus metrics
for _, row in kv_cache.iterrows():
    print(f'vllm_kv_cache_usage{{timestamp="{row["timestamp_sec"]}"}} {row["usage_pct"]}')

# Checks of what the seeds' scripts take for granted.
captures = pd.read_csv('cuda_graph_captures.csv')
evictions = pd.read_csv('kv_cache_evictions.csv')
steps = pd.read_csv('forward_pass_timing.csv')
print("SEED_COLUMNS", list(captures.columns[:6]), list(graphs.columns[:6]), list(kv_cache.columns[:4]),
      list(evictions.columns[:3]), list(steps.columns[:6]))
print("TOP_REPLAYS", int(top_graphs['replay_count'].iloc[0]))
print("MEAN_USAGE", kv_cache['usage_pct'].mean())
print("BLOCKS", int(kv_cache['num_blocks'].iloc[-1]), int(kv_cache['total_blocks'].iloc[-1]))
print("MEAN_LIFETIME", evictions['lifetime_sec'].mean())
print("DECODE_STEPS", int((steps['phase'] == 'decode').sum()))
"#;

/// ProfileMate's command-line analysis, verbatim.
const SEED_AWK: &str = r#"
# Count unique CUDA graphs
wc -l cuda_graph_captures.csv

# Find most-used graph
sort -t',' -k6 -rn cuda_graph_usage.csv | head -5

# Calculate average KV cache usage
awk -F',' 'NR>1 {sum+=$2; count++} END {print sum/count}' kv_cache_usage.csv

# Check peak usage
sort -t',' -k2 -rn kv_cache_usage.csv | head -1

# Compare CUDA graph replays vs total requests
total_replays=$(awk -F',' 'NR>1 {sum+=$6} END {print sum}' cuda_graph_usage.csv)
echo "Total CUDA graph replays: $total_replays"

# Look for block reuse in eviction data
# Short lifetime + many accesses = good sharing
awk -F',' 'NR>1 && $2<10 {count++} END {print count " blocks evicted quickly"}' \
    kv_cache_evictions.csv
"#;

/// `cargo xtask setup`'s pandas (its own PyPI dir), or the system's.
fn python_with_pandas() -> Command {
    let dir =
        std::env::var_os("CUDA_TRACER_PANDAS").map(PathBuf::from).unwrap_or_else(|| setup_cache().join("pypi-pandas"));
    let mut python = Command::new("python3");
    python.env("PYTHONPATH", &dir);
    let probe = Command::new("python3").env("PYTHONPATH", &dir).args(["-c", "import pandas"]).output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "pandas is missing: run `cargo xtask setup` (it installs pandas==2.2.3 into {}), \
         or `python3 -m pip install --target {} pandas==2.2.3 numpy==2.2.6`, or set CUDA_TRACER_PANDAS to a dir that has it",
        dir.display(),
        dir.display()
    );
    python
}

#[test]
fn the_seeds_pandas_and_awk_snippets_read_the_reports_csvs() {
    let mut python = python_with_pandas();
    let tmp = tempfile::tempdir().unwrap();
    let traces = tmp.path().join("traces");
    let recorded = record_loop(&traces, &tmp.path().join("truth"));
    let scraped = scrape_session(&tmp.path().join("daemon"), 6);
    let (local, _) = two_layouts(tmp.path(), &[recorded, scraped]);
    let report = local.join("report");
    let out = tracer_cmd()
        .arg("report")
        .arg(local.join("traces"))
        .arg("--out")
        .arg(&report)
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "report: {}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let replays = json["graphs"]["replays"].as_u64().unwrap();
    let usage: Vec<f64> = std::fs::read_to_string(report.join("kv_cache_usage.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(usage.len() >= 6, "{usage:?}");

    let py = python.arg("-c").arg(SEED_PANDAS).current_dir(&report).output().unwrap();
    assert!(py.status.success(), "the seeds' pandas failed: {}", String::from_utf8_lossy(&py.stderr));
    let py = String::from_utf8(py.stdout).unwrap();
    let value = |key: &str| -> String {
        let line = py.lines().find_map(|l| l.strip_prefix(&format!("{key} "))).unwrap_or_else(|| panic!("{key}: {py}"));
        line.to_string()
    };
    assert_eq!(
        value("SEED_COLUMNS"),
        "['runtime_mode', 'num_tokens', 'num_reqs', 'uniform', 'has_lora', 'capture_time_sec'] \
         ['runtime_mode', 'num_tokens', 'num_reqs', 'uniform', 'has_lora', 'replay_count'] \
         ['timestamp_sec', 'usage_pct', 'num_blocks', 'total_blocks'] \
         ['timestamp_sec', 'lifetime_sec', 'idle_sec'] \
         ['timestamp_sec', 'phase', 'batch_size', 'num_tokens', 'duration_ms', 'throughput_tokens_per_sec']"
    );
    let mean = usage.iter().sum::<f64>() / usage.len() as f64;
    assert!((value("MEAN_USAGE").parse::<f64>().unwrap() - mean).abs() < 1e-9, "{py}");
    let last = *usage.last().unwrap();
    assert_eq!(value("BLOCKS"), format!("{} 58893", (last / 100.0 * 58893.0).round()), "{py}");
    assert_eq!(py.lines().filter(|l| l.starts_with("vllm_kv_cache_usage{timestamp=")).count(), usage.len());
    // Evictions n = 1.. lived 5 + n s: the mean of the rows is above 5.
    assert!(value("MEAN_LIFETIME").parse::<f64>().unwrap() > 5.0, "{py}");
    assert!(value("DECODE_STEPS").parse::<u64>().unwrap() > 0, "{py}");
    let top: u64 = value("TOP_REPLAYS").parse().unwrap();

    let sh = bash(SEED_AWK, &report, &bin_dir(tmp.path()));
    let lines: Vec<&str> = sh.lines().collect();
    let captures = std::fs::read_to_string(report.join("cuda_graph_captures.csv")).unwrap().lines().count();
    assert_eq!(lines[0], format!("{captures} cuda_graph_captures.csv"), "{sh}");
    // sort -k6 -rn: the most-replayed graph first, its replay_count in column 6.
    assert_eq!(lines[1].split(',').nth(5), Some(top.to_string().as_str()), "{sh}");
    let awk_mean: f64 = lines.iter().find_map(|l| l.parse().ok()).unwrap_or_else(|| panic!("{sh}"));
    assert!((awk_mean - mean).abs() < 1e-3, "awk's mean of $2 is usage: {awk_mean} vs {mean}");
    // sort -k2 -rn | head -1: the peak's row, usage in column 2.
    let peak = usage.iter().copied().fold(f64::MIN, f64::max);
    let after_mean = lines.iter().skip_while(|l| l.parse::<f64>().is_err()).nth(1).copied().unwrap_or_default();
    assert_eq!(after_mean.split(',').nth(1).and_then(|u| u.parse::<f64>().ok()), Some(peak), "{sh}");
    assert!(sh.contains(&format!("Total CUDA graph replays: {replays}")), "$6 is replay_count: {sh}");
    // Lifetimes 6, 7, 8, 9 s are under 10: the intervals after scrapes 1 to 4.
    assert!(sh.contains("4 blocks evicted quickly"), "$2 is lifetime_sec: {sh}");
}

/// A session dir with one call at `ts` 1 ms and the given clock fields.
fn session_of(dir: &Path, boot_id: &str, start_boot_ns: u64, start_unix_ns: u128, max_error_us: Option<u64>) {
    std::fs::create_dir_all(dir).unwrap();
    let meta = serde_json::json!({
        "session_id": dir.file_name().unwrap().to_string_lossy(),
        "status": "finished",
        "boot_id": boot_id,
        "start_boot_ns": start_boot_ns,
        "start_unix_ns": start_unix_ns,
        "start_wall_max_error_us": max_error_us,
    });
    std::fs::write(dir.join("metadata.json"), meta.to_string()).unwrap();
    let call = r#"{"ts":1.0,"pid":7,"tid":7,"type":"cuda_api","func":"cuInit","phase":"entry","dur_us":1,"ret":0,"args":{"flags":0}}"#;
    std::fs::write(dir.join("trace_00001_20261203T100000Z.jsonl"), format!("{call}\n")).unwrap();
}

#[test]
fn synced_sessions_of_two_machines_are_aligned_by_wall_clock_and_the_offset_bound_is_said() {
    let tmp = tempfile::tempdir().unwrap();
    let traces = tmp.path().join("traces");
    // Node b booted an hour after node a, so its boot clock reads less, but
    // its session started 2 s of wall time after a's.
    session_of(&traces.join("pod-a/s1"), "boot-a", 7_200_000_000_000, 1_764_756_000_000_000_000, Some(1_500));
    session_of(&traces.join("pod-b/s2"), "boot-b", 3_600_000_000_000, 1_764_756_002_000_000_000, Some(250));
    let report = |args: &[&str]| {
        let out = tracer_cmd().arg("report").arg(&traces).arg("--out").arg(tmp.path().join("r")).args(args).output();
        let out = out.unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let json: serde_json::Value = serde_json::from_str(&report(&["--format", "json"])).unwrap();
    let inputs = &json["inputs"];
    assert_eq!(inputs["calls"], 2);
    // One call at 1 ms on each clock: 2 s apart on the wall clock.
    let (first, last) = (inputs["first_ts_sec"].as_f64().unwrap(), inputs["last_ts_sec"].as_f64().unwrap());
    assert!((first - 0.001).abs() < 1e-9 && (last - 2.001001).abs() < 1e-9, "{first} {last}");
    let clocks = &inputs["clock_alignment"];
    assert_eq!(clocks["aligned_by"], "wall_clock");
    assert_eq!((clocks["sessions"].as_u64(), clocks["clocks"].as_u64()), (Some(2), Some(2)));
    assert_eq!(clocks["max_clock_offset_ms"], 1.75, "1.5 ms + 0.25 ms");
    let text = report(&[]);
    assert!(text.contains("2 sessions from 2 machines") && text.contains("up to 1.750 ms apart"), "{text}");

    // A clock that was not synchronized makes the bound unknown, and named.
    session_of(&traces.join("pod-c/s3"), "boot-c", 5, 1_764_756_001_000_000_000, None);
    let text = report(&[]);
    assert!(text.contains("3 sessions from 3 machines") && text.contains("unknown amount"), "{text}");
    assert!(text.contains("pod-c/s3"), "{text}");
}
