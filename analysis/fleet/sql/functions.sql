-- Per-function calls, errors and call-time percentiles: report's
-- "Functions" table (functions.csv) over the Parquet lake. Percentiles
-- interpolate linearly between ranks, as report's do.
SELECT
    function AS func,
    layer AS type,
    count(*) AS calls,
    count(*) FILTER (WHERE ret <> 0) AS errors,
    sum(dur_ns) / 1e6 AS total_ms,
    avg(dur_ns) / 1e3 AS mean_us,
    percentile(dur_ns / 1e3, 0.50) AS p50_us,
    percentile(dur_ns / 1e3, 0.95) AS p95_us,
    percentile(dur_ns / 1e3, 0.99) AS p99_us,
    max(dur_ns) / 1e3 AS max_us
FROM calls
GROUP BY function, layer
ORDER BY calls DESC, func;
