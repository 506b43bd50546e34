//! One vLLM `/metrics` page to one KV-cache sample: the usage gauge (new or
//! old name), the pool's size (`vllm:cache_config_info`'s `num_gpu_blocks`
//! label), running and waiting requests, the preemption counter, and the
//! totals of the sampled block-residency histograms vLLM serves with
//! `--kv-cache-metrics`.

use prometheus_parse::{Scrape, Value};

/// The usage gauge (0-1) since vLLM 0.10, then the name older releases use.
const USAGE_METRICS: [&str; 2] = ["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"];
const RUNNING: &str = "vllm:num_requests_running";
const WAITING: &str = "vllm:num_requests_waiting";
const PREEMPTIONS: &str = "vllm:num_preemptions_total";
/// An info gauge whose `num_gpu_blocks` label is the KV pool's size in
/// blocks (`None` until the engine has profiled memory).
const CACHE_CONFIG: &str = "vllm:cache_config_info";
/// Histograms of sampled KV blocks at their eviction, served by vLLM with
/// `--kv-cache-metrics` (vLLM PR #27793, December 2025; not in earlier
/// releases): allocation to eviction, and last access to eviction.
pub const LIFETIME: &str = "vllm:kv_block_lifetime_seconds";
pub const IDLE: &str = "vllm:kv_block_idle_before_evict_seconds";

/// What one page says about the KV cache.
#[derive(Clone, Debug, PartialEq)]
pub struct KvSample {
    /// Usage in percent: the mean of the gauge over its label sets (engines).
    pub usage_pct: f64,
    /// Which usage metric the page had.
    pub usage_metric: &'static str,
    /// Label sets (engines/models) the usage gauge had.
    pub engines: usize,
    /// Summed over label sets; `None` when the page lacks the metric.
    pub num_requests_running: Option<f64>,
    pub num_requests_waiting: Option<f64>,
    /// vLLM's cumulative counter (since the server started).
    pub num_preemptions: Option<f64>,
    /// The KV pool in blocks, summed over engines.
    pub total_blocks: Option<f64>,
    /// [`LIFETIME`]'s cumulative totals, summed over engines.
    pub lifetime: Option<Totals>,
    /// [`IDLE`]'s cumulative totals, summed over engines.
    pub idle: Option<Totals>,
}

/// A histogram's cumulative `_sum` and `_count`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Totals {
    pub sum: f64,
    pub count: f64,
}

/// Why a page gave no sample.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("the page is not in the Prometheus text format: {0}")]
    Parse(std::io::Error),
    #[error(
        "the page has no vllm:* metrics: is the URL vLLM's /metrics endpoint (e.g. http://127.0.0.1:8000/metrics)?"
    )]
    NotVllm,
    #[error("the page has vllm:* metrics but neither vllm:kv_cache_usage_perc nor vllm:gpu_cache_usage_perc")]
    NoKvMetric,
    #[error("{0} is beyond what a 64-bit float holds (summed over label sets, or as a percentage)")]
    Overflow(&'static str),
}

// prometheus-parse only accepts `\w` in metric names, but Prometheus names
// may hold colons and vLLM's all do (`vllm:...`). Colons in the name token of
// HELP, TYPE and sample lines are spelled out before parsing; label values
// (which may hold colons too) are left alone.
const COLON: &str = "__colon__";

fn escaped(name: &str) -> String {
    name.replace(':', COLON)
}

fn escape_line(line: &str) -> String {
    let trimmed = line.trim_start();
    if let Some(comment) = trimmed.strip_prefix('#') {
        let body = comment.trim_start();
        for keyword in ["HELP", "TYPE"] {
            if let Some(rest) = body.strip_prefix(keyword) {
                let rest = rest.trim_start();
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                return format!("# {keyword} {}{}", escaped(&rest[..end]), &rest[end..]);
            }
        }
        return line.to_string();
    }
    let end = trimmed.find(|c: char| c == '{' || c.is_whitespace()).unwrap_or(trimmed.len());
    format!("{}{}", escaped(&trimmed[..end]), &trimmed[end..])
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Counter(x) | Value::Gauge(x) | Value::Untyped(x) if x.is_finite() => Some(*x),
        _ => None,
    }
}

/// Reads one page. Usage is averaged over label sets: each engine's gauge is
/// the fraction of its own pool, so with equal pools (data-parallel replicas)
/// the mean is the fraction of all KV memory in use; counts are summed.
pub fn parse_page(text: &str) -> Result<KvSample, PageError> {
    let scrape = Scrape::parse(text.lines().map(|l| Ok(escape_line(l)))).map_err(PageError::Parse)?;
    let values = |name: &str| -> Vec<f64> {
        let name = escaped(name);
        scrape.samples.iter().filter(|s| s.metric == name).filter_map(|s| number(&s.value)).collect()
    };
    // Each value is finite, but a sum (or a gauge times 100) may not be:
    // the CSV and the analyses take only finite numbers.
    let finite = |name: &'static str, v: f64| if v.is_finite() { Ok(v) } else { Err(PageError::Overflow(name)) };
    let sum_as = |metric: &str, shown: &'static str| {
        let v = values(metric);
        (!v.is_empty()).then(|| finite(shown, v.iter().sum::<f64>())).transpose()
    };
    let sum = |name: &'static str| sum_as(name, name);
    let Some((usage_metric, usage)) = USAGE_METRICS.iter().map(|m| (*m, values(m))).find(|(_, v)| !v.is_empty()) else {
        let prefix = escaped("vllm:");
        return Err(if scrape.samples.iter().any(|s| s.metric.starts_with(&prefix)) {
            PageError::NoKvMetric
        } else {
            PageError::NotVllm
        });
    };
    let totals = |name: &'static str| -> Result<Option<Totals>, PageError> {
        let (sum, count) = (sum_as(&format!("{name}_sum"), name)?, sum_as(&format!("{name}_count"), name)?);
        Ok(sum.zip(count).map(|(sum, count)| Totals { sum, count }))
    };
    Ok(KvSample {
        usage_pct: finite(usage_metric, usage.iter().sum::<f64>() / usage.len() as f64 * 100.0)?,
        usage_metric,
        engines: usage.len(),
        num_requests_running: sum(RUNNING)?,
        num_requests_waiting: sum(WAITING)?,
        num_preemptions: sum(PREEMPTIONS)?,
        total_blocks: pool_blocks(&scrape),
        lifetime: totals(LIFETIME)?,
        idle: totals(IDLE)?,
    })
}

/// The KV pool's blocks: `num_gpu_blocks` of each label set (engine) of the
/// cache-config info gauge, summed; `None` when a set lacks a number (vLLM
/// writes `None` before its memory profiling has sized the pool).
fn pool_blocks(scrape: &Scrape) -> Option<f64> {
    let name = escaped(CACHE_CONFIG);
    let blocks: Option<Vec<f64>> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .map(|s| s.labels.get("num_gpu_blocks")?.parse::<f64>().ok().filter(|b| b.is_finite() && *b > 0.0))
        .collect();
    blocks.filter(|b| !b.is_empty()).map(|b| b.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_ENGINES: &str = r#"# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="org/m:v1"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="org/m:v1"} 0.75
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="org/m:v1"} 3.0
vllm:num_requests_running{engine="1",model_name="org/m:v1"} 4.0
# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{engine="0",model_name="org/m:v1"} 2.0
vllm:num_preemptions_total{engine="1",model_name="org/m:v1"} 5.0
vllm:num_preemptions_created{engine="0",model_name="org/m:v1"} 1.7e+09
"#;

    #[test]
    fn usage_is_averaged_and_counts_summed_over_engines() {
        let s = parse_page(TWO_ENGINES).unwrap();
        assert_eq!(s.usage_pct, 50.0);
        assert_eq!(s.usage_metric, "vllm:kv_cache_usage_perc");
        assert_eq!(s.engines, 2);
        assert_eq!(s.num_requests_running, Some(7.0));
        assert_eq!(s.num_requests_waiting, None, "absent, not zero");
        assert_eq!(s.num_preemptions, Some(7.0));
    }

    #[test]
    fn the_old_name_is_accepted_and_the_new_one_wins() {
        let old = "# TYPE vllm:gpu_cache_usage_perc gauge\nvllm:gpu_cache_usage_perc{model_name=\"m\"} 0.5\n";
        let s = parse_page(old).unwrap();
        assert_eq!((s.usage_pct, s.usage_metric), (50.0, "vllm:gpu_cache_usage_perc"));
        let both = format!("{old}vllm:kv_cache_usage_perc{{model_name=\"m\"}} 0.1\n");
        assert_eq!(parse_page(&both).unwrap().usage_metric, "vllm:kv_cache_usage_perc");
    }

    #[test]
    fn recorded_vllm_pages_parse() {
        let new =
            parse_page(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/vllm_metrics.txt"))).unwrap();
        assert_eq!(
            new,
            KvSample {
                usage_pct: 4.21875,
                usage_metric: "vllm:kv_cache_usage_perc",
                engines: 1,
                num_requests_running: Some(3.0),
                num_requests_waiting: Some(1.0),
                num_preemptions: Some(2.0),
                total_blocks: Some(58893.0),
                lifetime: None,
                idle: None,
            }
        );
        let old = parse_page(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/vllm_metrics_v0.6.txt")))
            .unwrap();
        assert_eq!((old.usage_pct, old.usage_metric), (37.5, "vllm:gpu_cache_usage_perc"));
        assert_eq!((old.num_requests_running, old.num_preemptions), (Some(5.0), Some(7.0)));
        assert_eq!(old.total_blocks, Some(58893.0));
    }

    #[test]
    fn the_pool_size_and_residency_histograms_are_read() {
        let page = format!(
            "{TWO_ENGINES}\
vllm:cache_config_info{{engine=\"0\",num_gpu_blocks=\"1000\"}} 1.0
vllm:cache_config_info{{engine=\"1\",num_gpu_blocks=\"3000\"}} 1.0
# TYPE vllm:kv_block_lifetime_seconds histogram
vllm:kv_block_lifetime_seconds_bucket{{engine=\"0\",le=\"+Inf\"}} 4.0
vllm:kv_block_lifetime_seconds_sum{{engine=\"0\"}} 40.0
vllm:kv_block_lifetime_seconds_count{{engine=\"0\"}} 4.0
vllm:kv_block_lifetime_seconds_sum{{engine=\"1\"}} 10.0
vllm:kv_block_lifetime_seconds_count{{engine=\"1\"}} 1.0
# TYPE vllm:kv_block_idle_before_evict_seconds histogram
vllm:kv_block_idle_before_evict_seconds_sum{{engine=\"0\"}} 5.0
vllm:kv_block_idle_before_evict_seconds_count{{engine=\"0\"}} 5.0
"
        );
        let s = parse_page(&page).unwrap();
        assert_eq!(s.total_blocks, Some(4000.0));
        assert_eq!(s.lifetime, Some(Totals { sum: 50.0, count: 5.0 }));
        assert_eq!(s.idle, Some(Totals { sum: 5.0, count: 5.0 }));
        let not_sized = TWO_ENGINES.to_string() + "vllm:cache_config_info{engine=\"0\",num_gpu_blocks=\"None\"} 1.0\n";
        assert_eq!(parse_page(&not_sized).unwrap().total_blocks, None, "before profiling the pool has no size");
        assert_eq!(parse_page(TWO_ENGINES).unwrap().lifetime, None, "without --kv-cache-metrics");
    }

    #[test]
    fn other_pages_are_named() {
        let err = parse_page("<html>hello</html>").unwrap_err();
        assert!(matches!(err, PageError::NotVllm), "{err}");
        let err = parse_page("vllm:num_requests_running 1\n").unwrap_err();
        assert!(matches!(err, PageError::NoKvMetric), "{err}");
        // NaN gauges (vLLM before the first step) give no value.
        assert!(parse_page("vllm:kv_cache_usage_perc NaN\n").is_err());
    }

    #[test]
    fn sums_and_percentages_beyond_f64_are_refused() {
        // Each value parses as finite; the sample would hold `inf`.
        let err = parse_page("vllm:kv_cache_usage_perc 1e307\n").unwrap_err();
        assert!(matches!(err, PageError::Overflow("vllm:kv_cache_usage_perc")), "{err}");
        let page = "vllm:kv_cache_usage_perc 0.5\nvllm:num_requests_running{e=\"0\"} 1e308\n\
                    vllm:num_requests_running{e=\"1\"} 1e308\n";
        let err = parse_page(page).unwrap_err();
        assert!(matches!(err, PageError::Overflow("vllm:num_requests_running")), "{err}");
        assert!(err.to_string().contains("beyond what a 64-bit float holds"), "{err}");
    }
}
