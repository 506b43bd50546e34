//! `cuda-tracer prompt`: OpenAI-compatible client for `deploy.sh test`: one
//! prompt, then a batch sent sequentially, in parallel, or both; results as
//! JSON (`single_prompt_result_<time>.json`, `batch_prompts_result_<time>.json`,
//! the seed's names).

mod client;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use serde::Serialize;

pub use client::{Client, ClientError, RequestResult};

/// The server, the prompts and where the results go.
#[derive(Clone, Debug)]
pub struct PromptConfig {
    /// Base URL of the OpenAI-compatible server.
    pub url: String,
    /// Model name (none: the first one GET /v1/models lists).
    pub model: Option<String>,
    /// The single prompt.
    pub prompt: String,
    /// Prompts in the batch (0: single prompt only).
    pub batch: usize,
    /// Batch prompts from this file, one per line (none: the built-in ones).
    pub prompts_file: Option<PathBuf>,
    /// Requests in flight at once for the parallel run (1: sequential only).
    pub parallel: u32,
    /// With `parallel` > 1, send the batch only in parallel (the seed's
    /// `batch-prompts.py --parallel --workers N`), not sequentially first.
    pub parallel_only: bool,
    pub max_tokens: u32,
    /// /v1/chat/completions instead of /v1/completions.
    pub chat: bool,
    /// How long one request may take.
    pub timeout: std::time::Duration,
    /// Directory for the result JSON files.
    pub out: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("reading prompts from {path}: {source}")]
    PromptsFile { path: String, source: std::io::Error },
    #[error("{path} has no prompts (one per line)")]
    NoPrompts { path: String },
    #[error("writing {path}: {source} (is --out writable?)")]
    Write { path: String, source: std::io::Error },
    #[error("{failed} of {total} batch requests failed (first: {first}); results in {file}")]
    BatchFailed { failed: usize, total: usize, first: String, file: String },
}

/// Built-in batch prompts: short and varied, so prefill lengths differ.
const PROMPTS: [&str; 15] = [
    "What is the capital of France?",
    "Write a haiku about GPUs.",
    "Explain CUDA graphs in two sentences.",
    "List three prime numbers greater than 100.",
    "Translate 'good morning' into Spanish, German and Japanese.",
    "What does a Kubernetes sidecar container do?",
    "Summarize the plot of Hamlet in three sentences.",
    "Give a Python one-liner that reverses a string.",
    "Why is the sky blue?",
    "Describe eBPF to a new engineer.",
    "What is the difference between prefill and decode in LLM inference?",
    "Name five sorting algorithms and their average complexity.",
    "Write a limerick about a cache miss.",
    "How does paged attention manage memory?",
    "Explain what a uprobe is and when it fires.",
];

/// Latency and throughput of one batch run.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    pub mode: &'static str,
    pub concurrency: u32,
    pub requests: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub wall_ms: f64,
    pub mean_latency_ms: f64,
    pub p50_latency_ms: f64,
    pub p95_latency_ms: f64,
    pub max_latency_ms: f64,
    pub completion_tokens: u64,
    pub completion_tokens_per_sec: f64,
    pub requests_per_sec: f64,
}

#[derive(Serialize)]
struct BatchRun {
    summary: RunSummary,
    requests: Vec<RequestResult>,
}

#[derive(Serialize)]
struct SingleFile<'a> {
    url: &'a str,
    model: &'a str,
    endpoint: &'a str,
    max_tokens: u32,
    result: &'a RequestResult,
}

#[derive(Serialize)]
struct BatchFile<'a> {
    url: &'a str,
    model: &'a str,
    endpoint: &'a str,
    max_tokens: u32,
    sequential: Option<&'a BatchRun>,
    parallel: Option<&'a BatchRun>,
    /// Sequential wall time over parallel wall time.
    parallel_speedup: Option<f64>,
}

fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return 0.0;
    }
    sorted[((q * n as f64).ceil() as usize).clamp(1, n) - 1]
}

fn summarize(mode: &'static str, concurrency: u32, requests: &[RequestResult], wall_ms: f64) -> RunSummary {
    let mut ok: Vec<f64> = requests.iter().filter(|r| r.ok).map(|r| r.latency_ms).collect();
    ok.sort_by(f64::total_cmp);
    let tokens: u64 = requests.iter().filter_map(|r| r.completion_tokens).sum();
    let per_sec = |x: f64| if wall_ms > 0.0 { x / (wall_ms / 1000.0) } else { 0.0 };
    RunSummary {
        mode,
        concurrency,
        requests: requests.len(),
        succeeded: ok.len(),
        failed: requests.len() - ok.len(),
        wall_ms,
        mean_latency_ms: if ok.is_empty() { 0.0 } else { ok.iter().sum::<f64>() / ok.len() as f64 },
        p50_latency_ms: nearest_rank(&ok, 0.5),
        p95_latency_ms: nearest_rank(&ok, 0.95),
        max_latency_ms: ok.last().copied().unwrap_or(0.0),
        completion_tokens: tokens,
        completion_tokens_per_sec: per_sec(tokens as f64),
        requests_per_sec: per_sec(ok.len() as f64),
    }
}

struct Job {
    client: Client,
    model: String,
    max_tokens: u32,
    chat: bool,
}

impl Job {
    /// Sends `prompts` with at most `concurrency` in flight, in prompt order;
    /// results in prompt order.
    async fn batch(self: &Arc<Self>, mode: &'static str, prompts: &[String], concurrency: u32) -> BatchRun {
        let gate = Arc::new(tokio::sync::Semaphore::new(concurrency as usize));
        let start = Instant::now();
        let mut running = tokio::task::JoinSet::new();
        for (index, prompt) in prompts.iter().cloned().enumerate() {
            // The permit is taken here, not in the task: spawned tasks start in
            // whatever order the workers poll them, and a sequential run must
            // send prompt 1 before prompt 2.
            let Ok(permit) = Arc::clone(&gate).acquire_owned().await else { break };
            let job = Arc::clone(self);
            running.spawn(async move {
                let _permit = permit;
                job.client.send(index, &job.model, &prompt, job.max_tokens, job.chat).await.0
            });
        }
        let mut requests = Vec::with_capacity(prompts.len());
        while let Some(joined) = running.join_next().await {
            if let Ok(r) = joined {
                requests.push(r);
            }
        }
        count_lost(&mut requests, prompts);
        let wall_ms = start.elapsed().as_secs_f64() * 1000.0;
        requests.sort_by_key(|r| r.index);
        BatchRun { summary: summarize(mode, concurrency, &requests, wall_ms), requests }
    }
}

/// A task that died took its result with it; it still counts as a failed request.
fn count_lost(requests: &mut Vec<RequestResult>, prompts: &[String]) {
    let mut answered = vec![false; prompts.len()];
    requests.iter().for_each(|r| answered[r.index] = true);
    for (index, prompt) in prompts.iter().enumerate().filter(|&(i, _)| !answered[i]) {
        let lost = "no result: the request task failed before answering".to_string();
        requests.push(RequestResult::failed(index, prompt, 0.0, Some(lost)));
    }
}

/// `batch` prompts: the file's lines, or the built-in prompts, cycled.
fn batch_prompts(prompts_file: Option<&Path>, batch: usize) -> Result<Vec<String>, PromptError> {
    let source: Vec<String> = match prompts_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|source| PromptError::PromptsFile { path: path.display().to_string(), source })?;
            let lines: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
            if lines.is_empty() {
                return Err(PromptError::NoPrompts { path: path.display().to_string() });
            }
            lines
        }
        None => PROMPTS.iter().map(|p| p.to_string()).collect(),
    };
    Ok(source.iter().cycle().take(batch).cloned().collect())
}

fn write_json(dir: &Path, name: &str, value: &impl Serialize) -> Result<PathBuf, PromptError> {
    let path = dir.join(name);
    let err = |source| PromptError::Write { path: path.display().to_string(), source };
    std::fs::create_dir_all(dir).map_err(err)?;
    let json = serde_json::to_vec_pretty(value).map_err(|e| err(std::io::Error::other(e)))?;
    std::fs::write(&path, json).map_err(err)?;
    Ok(path)
}

fn print_run(run: &RunSummary) {
    println!(
        "{:<10} {} requests ({} failed), concurrency {}: wall {:.0} ms, latency mean {:.0} / p95 {:.0} ms, {:.1} tokens/s, {:.2} requests/s",
        run.mode,
        run.requests,
        run.failed,
        run.concurrency,
        run.wall_ms,
        run.mean_latency_ms,
        run.p95_latency_ms,
        run.completion_tokens_per_sec,
        run.requests_per_sec
    );
}

/// Sends the prompts and writes the results.
pub async fn run(args: &PromptConfig) -> Result<(), PromptError> {
    let prompts = batch_prompts(args.prompts_file.as_deref(), args.batch)?;
    let client = Client::new(&args.url, args.timeout)?;
    let model = match &args.model {
        Some(m) => m.clone(),
        None => client.first_model().await?,
    };
    let endpoint = if args.chat { "/v1/chat/completions" } else { "/v1/completions" };
    let stamp = crate::clock::compact_utc_now();
    println!("server {} model {model} endpoint {endpoint}", args.url);

    let (single, error) = client.send(0, &model, &args.prompt, args.max_tokens, args.chat).await;
    let file = SingleFile { url: &args.url, model: &model, endpoint, max_tokens: args.max_tokens, result: &single };
    let path = write_json(&args.out, &format!("single_prompt_result_{stamp}.json"), &file)?;
    if let Some(e) = error {
        return Err(e.into());
    }
    println!(
        "single     {:.0} ms, {} tokens: {}",
        single.latency_ms,
        single.completion_tokens.unwrap_or(0),
        single.text.as_deref().unwrap_or_default().trim().chars().take(120).collect::<String>()
    );
    println!("saved {}", path.display());
    if prompts.is_empty() {
        return Ok(());
    }

    let job = Arc::new(Job { client, model: model.clone(), max_tokens: args.max_tokens, chat: args.chat });
    let parallel_only = args.parallel_only && args.parallel > 1;
    let sequential = if parallel_only { None } else { Some(job.batch("sequential", &prompts, 1).await) };
    if let Some(s) = &sequential {
        print_run(&s.summary);
    }
    let parallel = if args.parallel > 1 { Some(job.batch("parallel", &prompts, args.parallel).await) } else { None };
    if let Some(p) = &parallel {
        print_run(&p.summary);
    }
    let speedup = match (&sequential, &parallel) {
        (Some(s), Some(p)) if p.summary.wall_ms > 0.0 => Some(s.summary.wall_ms / p.summary.wall_ms),
        _ => None,
    };
    let file = BatchFile {
        url: &args.url,
        model: &model,
        endpoint,
        max_tokens: args.max_tokens,
        sequential: sequential.as_ref(),
        parallel: parallel.as_ref(),
        parallel_speedup: speedup,
    };
    let path = write_json(&args.out, &format!("batch_prompts_result_{stamp}.json"), &file)?;
    println!("saved {}", path.display());
    let all: Vec<&RequestResult> = sequential.iter().chain(parallel.iter()).flat_map(|run| &run.requests).collect();
    let failed: Vec<&&RequestResult> = all.iter().filter(|r| !r.ok).collect();
    if let Some(first) = failed.first() {
        return Err(PromptError::BatchFailed {
            failed: failed.len(),
            total: all.len(),
            first: first.error.clone().unwrap_or_default(),
            file: path.display().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(index: usize, ok: bool, latency_ms: f64, tokens: u64) -> RequestResult {
        RequestResult {
            index,
            prompt: String::new(),
            ok,
            status: Some(if ok { 200 } else { 500 }),
            latency_ms,
            prompt_tokens: None,
            completion_tokens: ok.then_some(tokens),
            text: None,
            error: None,
        }
    }

    #[test]
    fn run_summary_counts_only_successes_in_latency() {
        let r = [result(0, true, 100.0, 10), result(1, true, 300.0, 30), result(2, false, 5.0, 0)];
        let s = summarize("parallel", 4, &r, 2000.0);
        assert_eq!((s.requests, s.succeeded, s.failed), (3, 2, 1));
        assert_eq!(
            (s.mean_latency_ms, s.p50_latency_ms, s.p95_latency_ms, s.max_latency_ms),
            (200.0, 100.0, 300.0, 300.0)
        );
        assert_eq!((s.completion_tokens, s.completion_tokens_per_sec, s.requests_per_sec), (40, 20.0, 1.0));
    }

    #[test]
    fn a_lost_request_is_counted_as_failed() {
        let prompts: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let mut requests = vec![RequestResult::failed(2, "c", 1.0, None)];
        requests[0].ok = true;
        count_lost(&mut requests, &prompts);
        requests.sort_by_key(|r| r.index);
        let s = summarize("sequential", 1, &requests, 10.0);
        assert_eq!((s.requests, s.succeeded, s.failed), (3, 1, 2));
        assert_eq!(requests[1].prompt, "b");
        assert!(requests[1].error.as_deref().unwrap().contains("task failed"));
    }

    #[test]
    fn batch_prompts_cycle_the_built_in_list() {
        let p = batch_prompts(None, 17).unwrap();
        assert_eq!(p.len(), 17);
        assert_eq!(p[15], PROMPTS[0]);
    }
}
