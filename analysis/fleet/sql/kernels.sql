-- Top kernels by launches and by time: report's "Kernels" table
-- (kernels.csv). A launch without a kernel name is named by its handle
-- (`f` on the driver, `func` on the runtime), else "?", as report names it.
SELECT
    coalesce(kernel, json_extract_string(args, '$.f'), json_extract_string(args, '$.func'), '?') AS kernel,
    CASE WHEN layer = 'cuda_runtime' THEN layer ELSE 'cuda_api' END AS type,
    count(*) AS launches,
    count(*) FILTER (WHERE ret <> 0) AS errors,
    sum(dur_ns) / 1e6 AS total_call_ms,
    avg(dur_ns) / 1e3 AS mean_call_us
FROM calls
WHERE role = 'launch'
GROUP BY ALL
ORDER BY launches DESC, type, kernel;
