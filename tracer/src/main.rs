//! The `cuda-tracer` binary: parses the command line and wires the library's
//! pieces; no logic of its own.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use cuda_tracer::{
    bench_pipeline, check,
    cli::{Cli, Command, LogFormat, RecordArgs, RunArgs, TraceArgs, UploadArgs},
    clock,
    daemon::output::delivery::{self, Delivery},
    daemon::probes::exit,
    daemon::session::{self, SessionConfig, SessionResult, Target},
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_level);
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| "info".into());
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn dispatch(command: Command) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    match command {
        Command::Check(args) => {
            let items = check::run(args.pid);
            for item in &items {
                println!("{item}");
            }
            Ok(if items.iter().all(|i| i.ok) { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Record(args) => runtime.block_on(record(args)),
        Command::Run(args) => runtime.block_on(run(args)),
        Command::Upload(args) => runtime.block_on(upload_dir(args)),
        Command::Report(args) => {
            cuda_tracer::analysis::report::run(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Export(args) => {
            cuda_tracer::analysis::export::run(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Webhook(args) => {
            runtime.block_on(cuda_tracer::kube::webhook::serve(&args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Prompt(args) => {
            runtime.block_on(cuda_tracer::kube::prompt::run(&args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchPipeline(args) => {
            let r = bench_pipeline::run(args.events, &args.dir)?;
            println!(
                "events={} secs={:.3} events_per_sec={:.0} bytes={} files={}",
                r.events,
                r.secs,
                r.events_per_sec(),
                r.bytes,
                r.files
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn session_id() -> String {
    format!("{}-{}", clock::compact_utc_now(), std::process::id())
}

fn config(dir: PathBuf, id: String, target: Target, t: &TraceArgs, budget_root: &std::path::Path) -> SessionConfig {
    SessionConfig {
        dir,
        session_id: id,
        target,
        rotate_every: Duration::from_secs(t.rotate_secs),
        scan_every: Duration::from_millis(t.scan_interval_ms),
        selection: t.functions.clone(),
        ringbuf_bytes: t.ringbuf_bytes,
        libs: t.libs.clone(),
        empty_probes: t.empty_probes,
        metrics: None,
        kv_cache: None,
        budget: t.max_local_bytes.map(|max_bytes| cuda_tracer::daemon::output::budget::DiskBudget {
            max_bytes,
            policy: t.on_disk_full,
            root: budget_root.to_path_buf(),
            paused: Default::default(),
        }),
    }
}

async fn record(args: RecordArgs) -> Result<ExitCode> {
    let id = session_id();
    let dir = args.output.unwrap_or_else(|| PathBuf::from("traces").join(&id));
    if dir.join("metadata.json").exists() {
        bail!("{} already holds a trace session; pass an empty or new directory with -o", dir.display());
    }
    let cfg = config(dir.clone(), id, Target::Command(args.command), &args.trace, &dir);
    let result = session::run(cfg, shutdown_signal()).await.context("record failed")?;
    print_summary(&result);
    let code = result.exit_status.and_then(|s| s.code()).unwrap_or(0);
    exit::leave(u8::try_from(code).unwrap_or(1), result.probes)
}

const NO_BUCKET: &str =
    "S3_BUCKET / --s3-bucket is required when upload is on; pass --no-upload (or UPLOAD_ENABLED=false) to keep traces local";

async fn run(args: RunArgs) -> Result<ExitCode> {
    let id = session_id();
    let pattern = regex::Regex::new(&args.target_process)
        .with_context(|| format!("--target-process / TARGET_PROCESS `{}` is not a valid regex", args.target_process))?;
    let upload = if args.no_upload || !args.upload_enabled { None } else { Some(args.s3.config().context(NO_BUCKET)?) };
    let dir = args.trace_dir.join(&id);
    let target = Target::Daemon { pattern: Some(pattern), pids: args.pids };
    let metrics = args.metrics_addr.map(|addr| {
        let m = std::sync::Arc::new(cuda_tracer::daemon::output::metrics::Metrics::new(args.trace_dir.clone()));
        let served = std::sync::Arc::clone(&m);
        tokio::spawn(async move {
            if let Err(e) = cuda_tracer::daemon::output::metrics::serve(addr, served).await {
                tracing::error!(%addr, error = %e, "metrics endpoint failed");
            }
        });
        m
    });
    // Files an earlier run left (closed or half-written) go up with this run's.
    let delivery = match upload {
        Some(cfg) => {
            std::fs::create_dir_all(&args.trace_dir).ok();
            delivery::repair_partials(&args.trace_dir, Some(&id));
            let d = std::sync::Arc::new(tokio::sync::Mutex::new(Delivery::new(
                cuda_tracer::daemon::output::upload::S3Uploader::new(cfg).await,
                &args.trace_dir,
                metrics.clone(),
            )));
            let every = Duration::from_secs(args.upload_interval_secs);
            let looped = std::sync::Arc::clone(&d);
            let task = tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    let report = looped.lock().await.round(None).await;
                    if report.uploaded > 0 || report.failed > 0 {
                        tracing::info!(uploaded = report.uploaded, failed = report.failed, "upload round");
                    }
                }
            });
            Some((d, task))
        }
        None => None,
    };
    let mut cfg = config(dir, id, target, &args.trace, &args.trace_dir);
    cfg.metrics = metrics;
    cfg.kv_cache = args.vllm_metrics_url.map(|url| cuda_tracer::daemon::output::kv_scrape::KvCacheConfig {
        url,
        interval: Duration::from_secs(args.metrics_interval),
    });
    let result = session::run(cfg, shutdown_signal()).await.context("run failed")?;
    tracing::info!(
        calls = result.stats.calls(),
        files = result.files.len(),
        dropped = result.drops.lost_calls(),
        missed_libraries = result.missed_libraries.len(),
        dir = %result.dir.display(),
        "session finished"
    );
    for m in &result.missed_libraries {
        tracing::warn!(pid = m.pid, library = %m.path, reason = m.reason, error = m.error.as_deref().unwrap_or(""), "library not fully traced: its calls are missing from the trace");
    }
    if let Some((d, task)) = delivery {
        task.abort();
        let deadline = std::time::Instant::now() + Duration::from_secs(args.s3.deadline_secs);
        let report = d.lock().await.round(Some(deadline)).await;
        if report.remaining.is_empty() {
            tracing::info!(uploaded = report.uploaded, "all trace files uploaded");
        } else {
            tracing::warn!(
                left_on_disk = report.remaining.len(),
                "some trace files stay on disk; the next run uploads them"
            );
        }
    }
    exit::leave(0, result.probes)
}

async fn upload_dir(args: UploadArgs) -> Result<ExitCode> {
    let cfg = args.s3.config().context("S3_BUCKET / --s3-bucket is required")?;
    if !args.dir.is_dir() {
        bail!("{} is not a directory: pass a trace dir or a session dir", args.dir.display());
    }
    let bucket = cfg.bucket.clone();
    let repaired = delivery::repair_partials(&args.dir, None);
    let mut d = Delivery::new(cuda_tracer::daemon::output::upload::S3Uploader::new(cfg).await, &args.dir, None);
    let deadline = std::time::Instant::now() + Duration::from_secs(args.s3.deadline_secs);
    let report = d.round(Some(deadline)).await;
    println!(
        "uploaded {} file(s) to s3://{bucket} ({} repaired from half-written files); {} failed; {} left on disk",
        report.uploaded,
        repaired.len(),
        report.failed,
        report.remaining.len()
    );
    Ok(if report.remaining.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn print_summary(r: &SessionResult) {
    eprintln!("\n{}", r.stats.table());
    let dropped = r.drops.lost_calls() + r.stats.write_errors + r.stats.budget_dropped;
    // Calls of an untraced library cannot be counted: never claim none were lost.
    let dropped = match r.missed_libraries.len() {
        0 => dropped.to_string(),
        n => format!(
            "unknown ({dropped} counted, plus the calls of {n} untraced librar{})",
            if n == 1 { "y" } else { "ies" }
        ),
    };
    eprintln!(
        "{} calls from {} process(es) in {} file(s); dropped: {} (ring buffer full {}, entry map full {}), returns without entry: {}, decode errors: {}, write errors: {}, paused by the disk budget: {}",
        r.stats.calls(),
        r.processes,
        r.files.len(),
        dropped,
        r.drops.ringbuf_full,
        r.drops.entry_map_full,
        r.drops.return_without_entry,
        r.stats.decode_errors,
        r.stats.write_errors,
        r.stats.budget_dropped,
    );
    eprintln!("trace: {}", r.dir.display());
    warn_missed(r);
}

/// The last line `record` prints when a library went (partly) untraced.
fn warn_missed(r: &SessionResult) {
    if r.missed_libraries.is_empty() {
        return;
    }
    let named: Vec<String> = r
        .missed_libraries
        .iter()
        .map(|m| match &m.error {
            Some(e) => format!("{} (pid {}, {}: {e})", m.path, m.pid, m.reason),
            None => format!("{} (pid {}, {})", m.path, m.pid, m.reason),
        })
        .collect();
    eprintln!(
        "warning: {} CUDA librar{} not fully traced, their calls are missing from the trace: {}",
        named.len(),
        if named.len() == 1 { "y" } else { "ies" },
        named.join("; ")
    );
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}
