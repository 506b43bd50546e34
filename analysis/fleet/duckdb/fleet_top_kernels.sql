-- The fleet's top kernels by total call time per node and pod (pruned by
-- the lake's date/hour/node/pod partitions when filtered on them).
SELECT node, pod, kernel, count(*) AS launches, sum(dur_ns) / 1e6 AS total_call_ms
FROM calls
WHERE kernel IS NOT NULL
GROUP BY node, pod, kernel
ORDER BY total_call_ms DESC
LIMIT 20;
