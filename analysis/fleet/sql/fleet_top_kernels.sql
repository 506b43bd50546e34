-- The fleet's top kernels by total call time per node and pod (pruned by
-- the lake's date/hour/node/pod partitions when filtered on them, with
-- hive_partitioning on). Kernels are named as in kernels.sql.
SELECT
    node,
    pod,
    coalesce(kernel, json_extract_string(args, '$.f'), json_extract_string(args, '$.func'), '?') AS kernel,
    count(*) AS launches,
    sum(dur_ns) / 1e6 AS total_call_ms
FROM calls
WHERE role = 'launch'
GROUP BY ALL
ORDER BY total_call_ms DESC
LIMIT 20;
