-- Copy volume by layer and direction: report's "copies" table (copies.csv),
-- successful copies only; a direction the trace has no name for is "unknown".
SELECT
    CASE WHEN layer = 'cuda_runtime' THEN layer ELSE 'cuda_api' END AS type,
    coalesce(direction, 'unknown') AS direction,
    count(*) AS calls,
    sum(coalesce(bytes, 0)) AS bytes,
    sum(dur_ns) / 1e6 AS total_call_ms
FROM calls
WHERE role = 'copy' AND ret = 0
GROUP BY ALL
ORDER BY type, direction;
