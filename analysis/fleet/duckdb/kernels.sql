-- Top kernels by launches and by time: report's "Kernels" table
-- (kernels.csv) for launches whose kernel is named.
SELECT
    kernel,
    layer AS type,
    count(*) AS launches,
    count(*) FILTER (WHERE ret <> 0) AS errors,
    sum(dur_ns) / 1e6 AS total_call_ms,
    avg(dur_ns) / 1e3 AS mean_call_us
FROM calls
WHERE kernel IS NOT NULL
GROUP BY kernel, layer
ORDER BY launches DESC, type, kernel;
