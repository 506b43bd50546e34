-- Device memory per process: report's memory table (report.json
-- `memory.processes`), in Spark SQL; the same rows as
-- analysis/fleet/duckdb/memory.sql (which says the rules). The per-pointer
-- state machine is a fold (`aggregate`) over each call's pointer's calls up
-- to it, sorted by entry (ties by thread, then name).
WITH mem AS (
    SELECT
        node, pod, session, pid, tid, ts_ns, function, dptr,
        role IN ('alloc', 'map') AS opens,
        -- Failed calls and calls without a pointer change no range.
        ret = 0 AND coalesce(dptr, 0) <> 0 AS ranged,
        ret <> 0 AND role IN ('alloc', 'map') AS failed,
        -- Which layer saw the call: 2 for the runtime, 1 for the driver.
        CASE WHEN layer = 'cuda_runtime' THEN 2 ELSE 1 END AS bit,
        coalesce(bytes, 0) AS bytes
    FROM calls
    WHERE role IN ('alloc', 'free', 'map', 'unmap')
),
-- Each call with its pointer's calls up to it, in entry order.
histories AS (
    SELECT
        *,
        array_sort(collect_list(named_struct(
            'ts_ns', ts_ns, 'tid', tid, 'function', function, 'opens', opens, 'bit', bit, 'bytes', bytes
        )) OVER (
            PARTITION BY node, pod, session, pid, ranged, dptr
            ORDER BY ts_ns, tid, function
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        )) AS history
    FROM mem
),
-- The range's state after each call: which layers hold it (`layers`), its
-- bytes (`live`), how the call changed the bytes in use (`delta`) and what
-- it did (`outcome`).
stepped AS (
    SELECT
        node, pod, session, pid, tid, ts_ns, function, failed,
        CASE WHEN ranged THEN aggregate(
            history,
            named_struct('layers', 0, 'live', CAST(0 AS BIGINT), 'delta', CAST(0 AS BIGINT), 'outcome', ''),
            (s, e) -> named_struct(
                'layers', CASE
                    WHEN NOT e.opens THEN s.layers & (3 - e.bit)
                    WHEN s.layers <> 0 AND s.layers & e.bit = 0 THEN 3
                    ELSE e.bit END,
                'live', CASE
                    WHEN e.opens AND NOT (s.layers <> 0 AND s.layers & e.bit = 0) THEN e.bytes
                    WHEN NOT e.opens AND s.layers & (3 - e.bit) = 0 THEN CAST(0 AS BIGINT)
                    ELSE s.live END,
                'delta', CASE
                    WHEN e.opens AND NOT (s.layers <> 0 AND s.layers & e.bit = 0) THEN e.bytes - s.live
                    WHEN NOT e.opens AND s.layers & (3 - e.bit) = 0 THEN -s.live
                    ELSE CAST(0 AS BIGINT) END,
                'outcome', CASE
                    WHEN e.opens AND s.layers = 0 THEN 'new'
                    WHEN e.opens AND s.layers & e.bit = 0 THEN 'seen by the other layer'
                    WHEN e.opens THEN 'replaced'
                    WHEN s.layers = 0 THEN 'unmatched'
                    WHEN s.layers & (3 - e.bit) = 0 THEN 'freed'
                    ELSE 'one layer closed' END
            )
        ) END AS after
    FROM histories
),
-- Bytes in use after each call, per process in entry order, and the peak.
in_use AS (
    SELECT
        *,
        sum(coalesce(after.delta, 0)) OVER (
            PARTITION BY node, pod, session, pid
            ORDER BY ts_ns, tid, function
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS bytes_in_use
    FROM stepped
),
peaks AS (
    SELECT *, max(bytes_in_use) OVER (PARTITION BY node, pod, session, pid) AS peak_bytes
    FROM in_use
)
SELECT
    node, pod, session, pid,
    count(*) FILTER (WHERE after.outcome IN ('new', 'replaced')) AS allocations,
    count(*) FILTER (WHERE after.outcome = 'freed') AS frees,
    count(*) FILTER (WHERE after.outcome = 'unmatched') AS unmatched_frees,
    count(*) FILTER (WHERE failed) AS failed_allocations,
    max(peak_bytes) AS peak_bytes,
    -- When the peak was first reached, in seconds since the session's start
    -- (0 without one).
    coalesce(CAST(min(ts_ns) FILTER (WHERE bytes_in_use = peak_bytes AND peak_bytes > 0) AS DOUBLE) / 1e6 / 1e3, 0.0D)
        AS peak_at_sec,
    sum(coalesce(after.delta, 0)) AS final_bytes
FROM peaks
GROUP BY node, pod, session, pid
ORDER BY node, pod, session, pid;
