//! Fuzzes the vLLM `/metrics` page parser with what a scraped pod may send:
//! any bytes, read as text the way the scraper reads a body (lossy UTF-8).
//! It must never panic, and a sample it returns holds finite numbers (they
//! become a KV-cache CSV row).
#![no_main]

use cuda_tracer::daemon::output::kv_scrape::parse_page;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(sample) = parse_page(&text) {
        let counts = [sample.num_requests_running, sample.num_requests_waiting, sample.num_preemptions];
        assert!(sample.usage_pct.is_finite(), "{sample:?}");
        assert!(counts.into_iter().flatten().all(f64::is_finite), "{sample:?}");
        assert!(sample.engines > 0, "{sample:?}");
    }
});
