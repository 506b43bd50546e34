//! KV-cache usage from vLLM's Prometheus `/metrics`: scraped by `run` into
//! the session's `kv_cache_usage.csv`.
