//! The daemon's scraper: every `--metrics-interval` it GETs vLLM's
//! `/metrics`, appends one row to the open `kv_cache_usage_<seq>.csv` chunk
//! (and, when blocks were evicted since the last scrape, one to
//! `kv_cache_evictions_<seq>.csv`) and, like the trace sink, closes chunks on
//! the rotation interval (hidden `.partial` name while open, renamed on
//! close) so delivery uploads them. A failed scrape is counted and retried
//! next interval, never fatal. The endpoint is not trusted: one scrape reads
//! at most [`MAX_PAGE_BYTES`] within its timeout (connect, head and body
//! together).

use std::{
    collections::BTreeMap,
    fs::File,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tokio::sync::watch;

mod evictions;
mod parse;

pub use parse::{parse_page, KvSample, PageError, Totals};

use crate::daemon::output::metrics::{KindLabel, Metrics};
pub use crate::format::metadata::KvStatus;
use crate::format::{
    kv::{KvRow, CSV_HEADER, EVICTIONS_HEADER},
    names,
};

/// What to scrape (`--vllm-metrics-url`, `--metrics-interval`).
#[derive(Clone, Debug)]
pub struct KvCacheConfig {
    pub url: String,
    pub interval: Duration,
}

/// Why one scrape gave no row.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("{url} is unreachable: {reason} (is vLLM up and listening there? check --vllm-metrics-url)")]
    Connect { url: String, reason: String },
    #[error("{url} did not answer within {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("{url} answered HTTP {status} (is the path vLLM's /metrics?)")]
    Status { url: String, status: u16 },
    #[error("reading {url}: {source}")]
    Body { url: String, source: reqwest::Error },
    #[error("{url} sent more than {limit} bytes; the page is refused unread (vLLM's pages are far smaller: is the URL vLLM's /metrics?)")]
    TooLarge { url: String, limit: usize },
    #[error("{url}: {source}")]
    Page { url: String, source: PageError },
    #[error("writing {path}: {source} (is the trace dir writable and not full?)")]
    Write { path: String, source: std::io::Error },
}

impl ScrapeError {
    /// A short label for counting (metrics label, metadata key).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "connect",
            Self::Timeout { .. } => "timeout",
            Self::Status { .. } => "http_status",
            Self::Body { .. } => "body",
            Self::TooLarge { .. } => "too_large",
            Self::Page { .. } => "bad_page",
            Self::Write { .. } => "write",
        }
    }
}

/// The largest `/metrics` page read. vLLM's pages are tens to hundreds of
/// KiB (one set of histograms per model); a longer answer is cut off here,
/// so a hostile or broken endpoint costs the daemon at most this much memory.
pub const MAX_PAGE_BYTES: usize = 8 << 20;

/// Why the scraper stopped working (a failed scrape is not this: it is
/// counted and retried).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct ClientError(#[source] reqwest::Error);

/// One session's scraper. Its record and chunk numbering live here, outside
/// any one run of [`KvScraper::run`], so a restarted run carries on both.
pub struct KvScraper {
    cfg: KvCacheConfig,
    dir: PathBuf,
    start_boot_ns: u64,
    rotate_every: Duration,
    metrics: Option<Arc<Metrics>>,
    status: Arc<Mutex<KvStatus>>,
    /// The last chunk number used, of usage and of eviction chunks.
    seq: Arc<AtomicU32>,
    evictions_seq: Arc<AtomicU32>,
}

impl KvScraper {
    /// A scraper into `dir`; `start_boot_ns` is the session's `ts` origin.
    pub fn new(
        cfg: KvCacheConfig,
        dir: &Path,
        start_boot_ns: u64,
        rotate_every: Duration,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        let status = Arc::new(Mutex::new(KvStatus {
            url: cfg.url.clone(),
            interval_secs: cfg.interval.as_secs_f64(),
            ..Default::default()
        }));
        Self {
            cfg,
            dir: dir.to_path_buf(),
            start_boot_ns,
            rotate_every,
            metrics,
            status,
            seq: Arc::default(),
            evictions_seq: Arc::default(),
        }
    }

    pub fn status(&self) -> KvStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Scrapes until `stop` flips, then closes the open chunk; `scraped`
    /// is called after every scrape, failed or not.
    pub fn run(
        &self,
        stop: watch::Receiver<bool>,
        scraped: impl Fn() + Send + 'static,
    ) -> impl std::future::Future<Output = Result<(), ClientError>> + Send + 'static {
        let chunks = |seq: &Arc<AtomicU32>, kind| Chunks {
            dir: self.dir.clone(),
            kind,
            seq: Arc::clone(seq),
            open: None,
            rotate_every: self.rotate_every,
        };
        let ctx = Context {
            cfg: self.cfg.clone(),
            chunks: chunks(&self.seq, ChunkKind::USAGE),
            eviction_chunks: chunks(&self.evictions_seq, ChunkKind::EVICTIONS),
            evictions: evictions::Evictions::default(),
            start_boot_ns: self.start_boot_ns,
            status: Arc::clone(&self.status),
            metrics: self.metrics.clone(),
            log: ErrorLog::default(),
        };
        ctx.run(stop, scraped)
    }
}

struct Context {
    cfg: KvCacheConfig,
    chunks: Chunks,
    eviction_chunks: Chunks,
    evictions: evictions::Evictions,
    start_boot_ns: u64,
    status: Arc<Mutex<KvStatus>>,
    metrics: Option<Arc<Metrics>>,
    log: ErrorLog,
}

impl Context {
    async fn run(mut self, mut stop: watch::Receiver<bool>, scraped: impl Fn()) -> Result<(), ClientError> {
        // Shorter than the interval, so a hung server never stacks requests.
        let timeout = self.cfg.interval.clamp(Duration::from_millis(500), Duration::from_secs(10));
        let client = reqwest::Client::builder().timeout(timeout).build().map_err(ClientError)?;
        tracing::info!(url = %self.cfg.url, every_secs = self.cfg.interval.as_secs_f64(), "scraping vLLM metrics");
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            let sent = crate::clock::boot_ns();
            let page = tokio::select! {
                r = fetch(&client, &self.cfg.url, timeout) => r,
                _ = stop.changed() => break,
            };
            // The page describes the moment vLLM rendered it: between send and receipt.
            let at_ns = sent / 2 + crate::clock::boot_ns() / 2;
            let ts_sec = (at_ns as f64 - self.start_boot_ns as f64) / 1e9;
            let outcome = page.and_then(|text| {
                parse_page(&text).map_err(|source| ScrapeError::Page { url: self.cfg.url.clone(), source })
            });
            match outcome.and_then(|sample| self.write_rows(ts_sec, &sample).map(|()| sample)) {
                Ok(sample) => self.on_row(&sample),
                Err(e) => self.on_error(e),
            }
            self.close_chunk(false);
            scraped();
        }
        self.close_chunk(true);
        Ok(())
    }

    /// The usage row, and an eviction row when blocks were evicted since
    /// the last scrape.
    fn write_rows(&mut self, ts_sec: f64, sample: &KvSample) -> Result<(), ScrapeError> {
        self.chunks.write_row(&row(ts_sec, sample).to_line())?;
        match self.evictions.next(ts_sec, sample) {
            Some(evicted) => self.eviction_chunks.write_row(&evicted.to_line()),
            None => Ok(()),
        }
    }

    fn on_row(&mut self, sample: &KvSample) {
        if let Ok(mut s) = self.status.lock() {
            s.scrapes += 1;
            s.usage_metric = Some(sample.usage_metric.into());
            s.eviction_metrics |= sample.lifetime.is_some() && sample.idle.is_some();
        }
        if let Some(m) = &self.metrics {
            m.vllm_scrapes.inc();
        }
        if self.log.recovered() {
            tracing::info!(url = %self.cfg.url, "vLLM metrics scraping works again");
        }
    }

    fn on_error(&mut self, e: ScrapeError) {
        let kind = e.kind();
        if let Ok(mut s) = self.status.lock() {
            *s.scrape_errors.entry(kind.into()).or_default() += 1;
            s.last_error = Some(e.to_string());
        }
        if let Some(m) = &self.metrics {
            m.vllm_scrape_errors.get_or_create(&KindLabel { kind }).inc();
        }
        if let Some(since_last) = self.log.due(kind) {
            tracing::warn!(error = %e, kind, failed_since_last_log = since_last, "vLLM metrics scrape failed; retrying next interval (tracing goes on)");
        }
    }

    fn close_chunk(&mut self, now: bool) {
        for closed in [self.chunks.close(now), self.eviction_chunks.close(now)] {
            match closed {
                Ok(Some(name)) => {
                    if let Ok(mut s) = self.status.lock() {
                        s.files.push(name);
                    }
                }
                Ok(None) => {}
                Err(e) => self.on_error(e),
            }
        }
    }
}

async fn fetch(client: &reqwest::Client, url: &str, timeout: Duration) -> Result<String, ScrapeError> {
    let classify = |source: reqwest::Error| {
        if source.is_timeout() {
            ScrapeError::Timeout { url: url.to_string(), secs: timeout.as_secs().max(1) }
        } else if source.is_connect() || source.is_request() || source.is_builder() {
            ScrapeError::Connect { url: url.to_string(), reason: root_cause(&source) }
        } else {
            ScrapeError::Body { url: url.to_string(), source }
        }
    };
    let response = client.get(url).send().await.map_err(classify)?;
    let status = response.status();
    if !status.is_success() {
        return Err(ScrapeError::Status { url: url.to_string(), status: status.as_u16() });
    }
    read_capped(response, MAX_PAGE_BYTES).await.map_err(|e| match e {
        Capped::Over => ScrapeError::TooLarge { url: url.to_string(), limit: MAX_PAGE_BYTES },
        Capped::Read(source) => classify(source),
    })
}

/// Why [`read_capped`] gave no page.
enum Capped {
    Over,
    Read(reqwest::Error),
}

/// The body as text, read chunk by chunk and given up past `limit` bytes
/// (a declared length over it is refused before reading anything).
async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<String, Capped> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(Capped::Over);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Capped::Read)? {
        if body.len() + chunk.len() > limit {
            return Err(Capped::Over);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The innermost error (e.g. `Connection refused`), which reqwest's own
/// message leaves out.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

/// The CSV row of a sample taken at `ts_sec` (trace axis). vLLM exports
/// usage as a fraction of the pool, not a count of blocks: the blocks in
/// use are that fraction of the pool, rounded.
fn row(ts_sec: f64, s: &KvSample) -> KvRow {
    KvRow {
        timestamp_sec: ts_sec,
        usage_pct: s.usage_pct,
        num_blocks: s.total_blocks.map(|total| (s.usage_pct / 100.0 * total).round()),
        total_blocks: s.total_blocks,
        num_requests_running: s.num_requests_running,
        num_requests_waiting: s.num_requests_waiting,
        num_preemptions: s.num_preemptions,
    }
}

struct OpenChunk {
    tmp: PathBuf,
    dest: PathBuf,
    file: File,
    opened: Instant,
}

/// Which chunk series: its file names and header.
#[derive(Clone, Copy)]
struct ChunkKind {
    name: fn(u32) -> String,
    header: &'static str,
}

impl ChunkKind {
    const USAGE: Self = Self { name: names::kv_chunk, header: CSV_HEADER };
    const EVICTIONS: Self = Self { name: names::kv_evictions_chunk, header: EVICTIONS_HEADER };
}

/// The CSV chunks of one session, of one kind.
struct Chunks {
    dir: PathBuf,
    kind: ChunkKind,
    /// The last number used, shared by every run of the scraper.
    seq: Arc<AtomicU32>,
    open: Option<OpenChunk>,
    rotate_every: Duration,
}

impl Chunks {
    /// Appends a row with one write, unbuffered: after a crash the repair
    /// at the next start keeps every complete row.
    fn write_row(&mut self, line: &str) -> Result<(), ScrapeError> {
        if self.open.is_none() {
            let seq = self.seq.load(Ordering::Relaxed) + 1;
            let name = (self.kind.name)(seq);
            let tmp = self.dir.join(names::partial(&name));
            let err = |source| ScrapeError::Write { path: tmp.display().to_string(), source };
            let mut file = crate::format::safe_fs::create_new(&tmp).map_err(|e| err(e.into_io()))?;
            file.write_all(format!("{}\n", self.kind.header).as_bytes()).map_err(err)?;
            self.seq.store(seq, Ordering::Relaxed);
            self.open = Some(OpenChunk { dest: self.dir.join(name), tmp, file, opened: Instant::now() });
        }
        let Some(f) = self.open.as_mut() else { return Ok(()) };
        f.file
            .write_all(line.as_bytes())
            .map_err(|source| ScrapeError::Write { path: f.tmp.display().to_string(), source })
    }

    /// Closes the open chunk if it is due (or `now`); returns its name.
    fn close(&mut self, now: bool) -> Result<Option<String>, ScrapeError> {
        if !self.open.as_ref().is_some_and(|f| now || f.opened.elapsed() >= self.rotate_every) {
            return Ok(None);
        }
        let Some(f) = self.open.take() else { return Ok(None) };
        let err = |source| ScrapeError::Write { path: f.tmp.display().to_string(), source };
        f.file.sync_data().map_err(err)?;
        std::fs::rename(&f.tmp, &f.dest).map_err(err)?;
        Ok(f.dest.file_name().map(|n| n.to_string_lossy().into_owned()))
    }
}

impl Drop for Chunks {
    fn drop(&mut self) {
        // Also on a panic or an aborted task: rows written reach a closed file.
        let _ = self.close(true);
    }
}

/// Rate limit for failure logs: the first failure of a kind at once, then
/// one line per kind per minute with the count in between.
#[derive(Default)]
struct ErrorLog {
    last: BTreeMap<&'static str, (Instant, u64)>,
    failing: bool,
}

impl ErrorLog {
    const EVERY: Duration = Duration::from_secs(60);

    /// `Some(failures since the last line)` when this failure is to be logged.
    fn due(&mut self, kind: &'static str) -> Option<u64> {
        self.failing = true;
        let now = Instant::now();
        match self.last.get_mut(kind) {
            Some((at, skipped)) if now.duration_since(*at) < Self::EVERY => {
                *skipped += 1;
                None
            }
            Some((at, skipped)) => {
                let n = *skipped + 1;
                (*at, *skipped) = (now, 0);
                Some(n)
            }
            None => {
                self.last.insert(kind, (now, 0));
                Some(1)
            }
        }
    }

    /// True once after a run of failures ends.
    fn recovered(&mut self) -> bool {
        std::mem::take(&mut self.failing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_becomes_its_row() {
        let s = super::KvSample {
            usage_pct: 12.5,
            usage_metric: "vllm:kv_cache_usage_perc",
            engines: 1,
            num_requests_running: Some(3.0),
            num_requests_waiting: None,
            num_preemptions: Some(1.5),
            total_blocks: Some(4001.0),
            lifetime: None,
            idle: None,
        };
        assert_eq!(row(1.23456, &s).to_line(), "1.235,12.5000,500,4001,3,,1.5\n", "12.5 % of 4001 is 500.125");
        let not_sized = super::KvSample { total_blocks: None, ..s };
        assert_eq!(row(1.23456, &not_sized).to_line(), "1.235,12.5000,,,3,,1.5\n");
    }

    #[test]
    fn chunks_are_hidden_while_open_and_closed_on_time_or_stop() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Chunks {
            dir: dir.path().to_path_buf(),
            kind: ChunkKind::USAGE,
            seq: Arc::default(),
            open: None,
            rotate_every: Duration::from_secs(3600),
        };
        assert_eq!(c.close(true).unwrap(), None, "no empty chunk");
        c.write_row("1.000,2.0000,,,1,0,0\n").unwrap();
        assert!(dir.path().join(".kv_cache_usage_00001.csv.partial").exists());
        assert_eq!(c.close(false).unwrap(), None, "not due yet");
        assert_eq!(c.close(true).unwrap().as_deref(), Some("kv_cache_usage_00001.csv"));
        let text = std::fs::read_to_string(dir.path().join("kv_cache_usage_00001.csv")).unwrap();
        assert_eq!(text, format!("{CSV_HEADER}\n1.000,2.0000,,,1,0,0\n"));
        c.rotate_every = Duration::ZERO;
        c.write_row("2.000,3.0000,,,1,0,0\n").unwrap();
        assert_eq!(c.close(false).unwrap().as_deref(), Some("kv_cache_usage_00002.csv"));
        c.kind = ChunkKind::EVICTIONS;
        c.write_row("3.000,1.000000,0.500000,2,1.000\n").unwrap();
        assert_eq!(c.close(false).unwrap().as_deref(), Some("kv_cache_evictions_00003.csv"));
        let text = std::fs::read_to_string(dir.path().join("kv_cache_evictions_00003.csv")).unwrap();
        assert!(text.starts_with(&format!("{EVICTIONS_HEADER}\n")), "{text}");
    }

    #[test]
    fn failure_logs_are_rate_limited_per_kind() {
        let mut log = ErrorLog::default();
        assert_eq!(log.due("connect"), Some(1));
        assert_eq!(log.due("connect"), None);
        assert_eq!(log.due("timeout"), Some(1));
        assert!(log.recovered());
        assert!(!log.recovered());
    }
}
