-- The fleet's top kernels: the 20 kernels launched most across every node,
-- pod and layer, with their launch-call time. report's kernels table per
-- kernel (its rows of both layers added up), cut to the top; kernels are
-- named as in kernels.sql. This is the query the fleet benchmark times.
SELECT
    coalesce(kernel, json_extract_string(args, '$.f'), json_extract_string(args, '$.func'), '?') AS kernel,
    count(*) AS launches,
    sum(dur_ns) / 1e6 AS total_call_ms
FROM calls
WHERE role = 'launch'
GROUP BY ALL
ORDER BY launches DESC, kernel
LIMIT 20;
