//! What the daemon keeps and shows: trace files, counters, the disk budget,
//! delivery to S3, the KV-cache scraper, the step window's export and the
//! `/metrics` server.

pub mod budget;
pub mod delivery;
pub mod kv_scrape;
pub mod metrics;
pub mod parquet_sink;
pub mod sink;
pub mod stats;
pub mod step_window;
pub mod upload;
