-- Device memory per process: report's memory table (report.json
-- `memory.processes`): allocations, frees, unmatched frees, failed
-- allocations, peak bytes and when the peak was first reached (seconds
-- since the session's start), final bytes. Allocations and mappings
-- (`cuMemMap`) open a range, frees and unmaps close it. As in report, a
-- range is keyed by (process, pointer) and counted once whichever layers
-- saw it: a runtime allocation reaches the driver as a second open of the
-- same pointer, and the range closes when every layer that opened it has
-- closed it (range_state.sql has the rule). That rule is a state machine per
-- pointer, run as a fold (`fold_ranges`) over the pointer's calls up to each
-- call. A process is (node, pod, session, pid): over one session, report's
-- per-pid rows. Calls in entry order (ties by thread, then name).
WITH mem AS (
    SELECT
        node, pod, session, pid, tid, ts_ns, function, dptr,
        role IN ('alloc', 'map') AS opens,
        -- Failed calls and calls without a pointer change no range.
        ret = 0 AND coalesce(dptr, 0) <> 0 AS ranged,
        ret <> 0 AND role IN ('alloc', 'map') AS failed,
        -- The call for the fold: bytes, whether it opens, its layer.
        coalesce(bytes, 0) * 8
            + CASE WHEN role IN ('alloc', 'map') THEN 4 ELSE 0 END
            + CASE WHEN layer = 'cuda_runtime' THEN 2 ELSE 1 END AS code
    FROM calls
    WHERE role IN ('alloc', 'free', 'map', 'unmap')
),
-- The range's state after each call (both engines list a frame's rows in
-- the window's order).
states AS (
    SELECT
        *,
        CASE WHEN ranged THEN fold_ranges(array_agg(code) OVER (
            PARTITION BY node, pod, session, pid, ranged, dptr
            ORDER BY ts_ns, tid, function
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        )) END AS after
    FROM mem
),
-- ... and before it: which layers held the range, and its bytes.
changes AS (
    SELECT
        *,
        code & 3 AS layer_bit,
        coalesce(lag(after) OVER (
            PARTITION BY node, pod, session, pid, ranged, dptr
            ORDER BY ts_ns, tid, function
        ), 0) AS before
    FROM states
),
-- Bytes in use after each call, per process in entry order, and the peak.
in_use AS (
    SELECT
        *,
        sum(coalesce((after >> 2) - (before >> 2), 0)) OVER (
            PARTITION BY node, pod, session, pid
            ORDER BY ts_ns, tid, function
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS bytes_in_use
    FROM changes
),
peaks AS (
    SELECT *, max(bytes_in_use) OVER (PARTITION BY node, pod, session, pid) AS peak_bytes
    FROM in_use
)
SELECT
    node, pod, session, pid,
    -- A new range: an open, unless the other layer alone held it.
    count(*) FILTER (WHERE ranged AND opens AND ((before & 3) = 0 OR ((before & 3) & layer_bit) <> 0))
        AS allocations,
    count(*) FILTER (WHERE ranged AND NOT opens AND (before & 3) <> 0 AND (after & 3) = 0) AS frees,
    count(*) FILTER (WHERE ranged AND NOT opens AND (before & 3) = 0) AS unmatched_frees,
    count(*) FILTER (WHERE failed) AS failed_allocations,
    max(peak_bytes) AS peak_bytes,
    -- When the peak was first reached (0 without one).
    coalesce(CAST(min(ts_ns) FILTER (WHERE bytes_in_use = peak_bytes AND peak_bytes > 0) AS DOUBLE) / 1e6 / 1e3, CAST(0 AS DOUBLE))
        AS peak_at_sec,
    sum(coalesce((after >> 2) - (before >> 2), 0)) AS final_bytes
FROM peaks
GROUP BY node, pod, session, pid
ORDER BY node, pod, session, pid;
