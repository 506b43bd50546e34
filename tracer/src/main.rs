//! The `cuda-tracer` binary: parses the command line and wires the library's
//! pieces; no logic of its own.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use cuda_tracer::{
    analysis::report::ReportFormat,
    check,
    cli::{Cli, Command, LogFormat, RecordArgs, RunArgs, TraceArgs, UploadArgs},
    clock,
    daemon::output::delivery::{self, Delivery},
    daemon::probes::exit,
    daemon::{self, outcome, DaemonConfig, Outcome, SessionConfig, Target, UploadConfig},
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_level);
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes, each once: most of our errors already name
/// their cause in their own message, and `{:#}` would print it again.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain().map(ToString::to_string) {
        if out.contains(&cause) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&cause);
    }
    out
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
            let items = if args.s3_only { runtime.block_on(check::s3(args.s3.config())) } else { check::run(args.pid) };
            for item in &items {
                println!("{item}");
            }
            Ok(if items.iter().all(|i| i.ok) { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Record(args) => runtime.block_on(record(args)),
        Command::Run(args) => runtime.block_on(run(args)),
        Command::Upload(args) => runtime.block_on(upload_dir(args)),
        Command::Report(args) => {
            cuda_tracer::analysis::report::run(&args.into())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Export(args) => {
            cuda_tracer::analysis::export::run(&args.into())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::TopKernels(args) => {
            let answer = cuda_tracer::analysis::top_kernels::run(&(&args).into())?;
            match args.read.format {
                ReportFormat::Text => print!("{}", answer.text()),
                ReportFormat::Csv => print!("{}", answer.csv()),
                ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Webhook(args) => {
            runtime.block_on(cuda_tracer::kube::webhook::serve(&args.into()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Prompt(args) => {
            runtime.block_on(cuda_tracer::kube::prompt::run(&args.into()))?;
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
        per_probe_uprobes: t.per_probe_uprobes,
        kv_cache: None,
        redact_cmdlines: !t.keep_cmdline_secrets,
        format: t.format,
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
    if dir.join(cuda_tracer::format::names::METADATA).exists() {
        bail!("{} already holds a trace session; pass an empty or new directory with -o", dir.display());
    }
    let session = config(dir.clone(), id, Target::Command(args.command), &args.trace, &dir);
    let cfg = DaemonConfig { session, trace_dir: None, metrics_addr: None, upload: None, profile_steps: None };
    let outcome = daemon::run(cfg, shutdown_signal()).await.context("record failed")?;
    eprintln!("{}", outcome.summary());
    let code = outcome.exit_status.and_then(|s| s.code()).unwrap_or(0);
    leave(u8::try_from(code).unwrap_or(1), outcome)
}

async fn run(args: RunArgs) -> Result<ExitCode> {
    let id = session_id();
    let pattern = regex::Regex::new(&args.target_process)
        .with_context(|| format!("--target-process / TARGET_PROCESS `{}` is not a valid regex", args.target_process))?;
    let s3 = args.upload_target()?;
    if s3.is_none() {
        tracing::info!(trace_dir = %args.trace_dir.display(), "upload off (no S3_BUCKET, or UPLOAD_ENABLED=false): traces stay local");
    }
    let target = Target::Daemon { pattern: Some(pattern), pids: args.pids };
    let mut session = config(args.trace_dir.join(&id), id, target, &args.trace, &args.trace_dir);
    session.kv_cache = args.vllm_metrics_url.map(|url| cuda_tracer::daemon::output::kv_scrape::KvCacheConfig {
        url,
        interval: Duration::from_secs(args.metrics_interval),
    });
    let upload = s3.map(|s3| UploadConfig {
        s3,
        every: Duration::from_secs(args.upload_interval_secs),
        deadline: Duration::from_secs(args.s3.deadline_secs),
    });
    let cfg = DaemonConfig {
        session,
        trace_dir: Some(args.trace_dir),
        metrics_addr: args.metrics_addr,
        upload,
        profile_steps: args.profile.steps.0,
    };
    let outcome = daemon::run(cfg, shutdown_signal()).await.context("run failed")?;
    tracing::info!(
        calls = outcome.counts.calls,
        files = outcome.files.len(),
        dropped = outcome.dropped(),
        missed_libraries = outcome.missed_libraries.len(),
        dir = %outcome.dir.display(),
        "session finished"
    );
    for m in &outcome.missed_libraries {
        tracing::warn!(pid = m.pid, library = %m.path, reason = %m.reason, error = m.error.as_deref().unwrap_or(""), "library not fully traced: its calls are missing from the trace");
    }
    leave(0, outcome)
}

/// Exits with `code`; with 2 after the error when a task the daemon needs
/// failed, else with [`outcome::LINES_LOST_EXIT`] when trace lines were lost
/// to write errors.
fn leave(code: u8, outcome: Outcome) -> Result<ExitCode> {
    let code = match (&outcome.failure, outcome.lines_lost_error()) {
        (Some(failure), _) => {
            eprintln!("error: {failure}; metadata.json says `failed`");
            2
        }
        (None, Some(lost)) => {
            eprintln!("error: {lost}");
            outcome::LINES_LOST_EXIT
        }
        (None, None) => code,
    };
    exit::leave(code, outcome.probes)
}

async fn upload_dir(args: UploadArgs) -> Result<ExitCode> {
    let cfg = args.s3.config().context("S3_BUCKET / --s3-bucket is required")?;
    if !args.dir.is_dir() {
        bail!("{} is not a directory: pass a trace dir or a session dir", args.dir.display());
    }
    let bucket = cfg.bucket.clone();
    let live = delivery::live_sessions(&args.dir, None);
    for dir in &live {
        eprintln!("error: {}", delivery::LiveSession(dir.clone()));
    }
    let repaired = delivery::repair_partials(&args.dir, &live);
    let uploader = cuda_tracer::daemon::output::upload::S3Uploader::new(cfg).await;
    let mut d = Delivery::new(uploader, &args.dir, None, None).leaving_alone(live.clone());
    let deadline = std::time::Instant::now() + Duration::from_secs(args.s3.deadline_secs);
    let report = d.round(Some(deadline)).await;
    println!(
        "uploaded {} file(s) to s3://{bucket} ({} repaired from half-written files); {} failed; {} cancelled at the deadline; {} left on disk",
        report.uploaded,
        repaired.len(),
        report.failed,
        report.cancelled,
        report.remaining.len()
    );
    Ok(if report.remaining.is_empty() && live.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
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
