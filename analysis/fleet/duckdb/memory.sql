-- Device memory per process: report's memory table (report.json
-- `memory.processes`): allocations, frees, unmatched frees, failed
-- allocations, peak bytes and when the peak was first reached, final bytes.
-- Allocations and mappings (`cuMemMap`) open a range, frees and unmaps close
-- it. As in report, a range is keyed by (process, pointer) and counted once
-- whichever layers saw it: a runtime allocation reaches the driver as a
-- second open of the same pointer, and the range closes when every layer
-- that opened it has closed it; opened again by a layer that holds it
-- already, the old range is gone and the new one counts. That rule is a
-- state machine per pointer, run here as a fold (list_reduce) over each
-- call's pointer's calls up to it. A process is (node, pod, session, pid):
-- over one session, report's per-pid rows. Calls in entry order (ties by
-- thread, then name).
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
-- Each call with its pointer's calls up to it.
histories AS (
    SELECT
        *,
        list({
            'opens': opens, 'bit': bit, 'bytes': bytes,
            'layers': 0, 'live': 0::BIGINT, 'delta': 0::BIGINT, 'outcome': ''
        } ORDER BY ts_ns, tid, function) OVER (
            PARTITION BY node, pod, session, pid, ranged, dptr
            ORDER BY ts_ns, tid, function
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS history
    FROM mem
),
-- The range's state after each call: which layers hold it (`layers`), its
-- bytes (`live`), how the call changed the bytes in use (`delta`) and what
-- it did (`outcome`). The accumulator has the calls' type (list_reduce
-- wants one type); its first three fields are the call's.
stepped AS (
    SELECT
        node, pod, session, pid, tid, ts_ns, function, failed,
        CASE WHEN ranged THEN list_reduce(
            history,
            lambda s, e: {
                'opens': e.opens, 'bit': e.bit, 'bytes': e.bytes,
                'layers': CASE
                    WHEN NOT e.opens THEN s.layers & (3 - e.bit)
                    WHEN s.layers <> 0 AND s.layers & e.bit = 0 THEN 3
                    ELSE e.bit END,
                'live': CASE
                    WHEN e.opens AND NOT (s.layers <> 0 AND s.layers & e.bit = 0) THEN e.bytes
                    WHEN NOT e.opens AND s.layers & (3 - e.bit) = 0 THEN 0
                    ELSE s.live END,
                'delta': CASE
                    WHEN e.opens AND NOT (s.layers <> 0 AND s.layers & e.bit = 0) THEN e.bytes - s.live
                    WHEN NOT e.opens AND s.layers & (3 - e.bit) = 0 THEN -s.live
                    ELSE 0 END,
                'outcome': CASE
                    WHEN e.opens AND s.layers = 0 THEN 'new'
                    WHEN e.opens AND s.layers & e.bit = 0 THEN 'seen by the other layer'
                    WHEN e.opens THEN 'replaced'
                    WHEN s.layers = 0 THEN 'unmatched'
                    WHEN s.layers & (3 - e.bit) = 0 THEN 'freed'
                    ELSE 'one layer closed' END
            },
            {'opens': false, 'bit': 0, 'bytes': 0::BIGINT,
             'layers': 0, 'live': 0::BIGINT, 'delta': 0::BIGINT, 'outcome': ''}
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
    coalesce(CAST(min(ts_ns) FILTER (WHERE bytes_in_use = peak_bytes AND peak_bytes > 0) AS DOUBLE) / 1e6 / 1e3, 0.0)
        AS peak_at_sec,
    sum(coalesce(after.delta, 0)) AS final_bytes
FROM peaks
GROUP BY node, pod, session, pid
ORDER BY node, pod, session, pid;
