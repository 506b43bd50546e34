-- Step latency per phase: report's steps table (report.json
-- `steps.phases`, summary.json): count, mean, min, max and p50/p95/p99 of
-- the model steps' durations in ms, per phase. Percentiles interpolate
-- linearly between ranks, as report's do (numpy's default).
-- The steps are report's (docs/STEPS.md): of each thread's successful,
-- outermost calls (a driver call made inside a runtime call of the same
-- thread does not count), an event record that follows a small (at most
-- 1 MiB, or unknown) device-to-host copy ends a step, with no event record,
-- capture, instantiation or device-wide sync between them; a capture,
-- instantiation or device sync drops what came before it. The step starts at
-- its first launch, graph replay, copy or NCCL call since the previous
-- boundary (else at its event record) and ends when the first later
-- synchronization of its event, in the same process, returns; a step never
-- synchronized is not counted. Exactly one graph replay makes it decode,
-- else prefill. A process is (node, pod, session, pid); calls in entry
-- order (ties by thread, then name).
WITH timed AS (
    SELECT
        node, pod, session, pid, tid, ts_ns, function, layer, role, ret, bytes, direction,
        CAST(ts_ns AS DOUBLE) / 1e6 AS ts_ms,
        CAST(ts_ns AS DOUBLE) / 1e6 + CAST(dur_ns AS DOUBLE) / 1e3 / 1e3 AS end_ms,
        json_extract_string(args, '$.event') AS event,
        row_number() OVER (PARTITION BY node, pod, session, pid ORDER BY ts_ns, tid, function) AS n
    FROM calls
),
-- When the runtime calls seen so far on the thread end.
nesting AS (
    SELECT
        *,
        max(CASE WHEN layer = 'cuda_runtime' THEN end_ms END) OVER (
            PARTITION BY node, pod, session, pid, tid
            ORDER BY n
            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
        ) AS runtime_until
    FROM timed
),
-- The calls that count, with what each does to a step.
counted AS (
    SELECT
        *,
        CASE
            WHEN role IN ('capturebegin', 'captureend', 'graphinstantiate', 'devicesync') THEN 'reset'
            WHEN role = 'eventrecord' THEN 'record'
            WHEN role = 'copy' AND direction = 'DtoH' AND coalesce(bytes, 0) <= 1048576 THEN 'small copy'
        END AS mark
    FROM nesting
    WHERE ret = 0 AND NOT (layer = 'cuda_api' AND runtime_until IS NOT NULL AND ts_ms <= runtime_until)
),
-- A record ends a step when the thread's last mark before it is a small copy.
marked AS (
    SELECT
        *,
        mark = 'record' AND lag(mark) OVER (
            PARTITION BY node, pod, session, pid, tid, mark IS NULL ORDER BY n
        ) = 'small copy' AS ends_step
    FROM counted
),
-- Each call's segment of its thread: the boundaries (resets and step ends) before it.
segmented AS (
    SELECT
        *,
        coalesce(sum(CASE WHEN mark = 'reset' OR ends_step THEN 1 ELSE 0 END) OVER (
            PARTITION BY node, pod, session, pid, tid
            ORDER BY n
            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
        ), 0) AS segment
    FROM marked
),
-- Per step end: the step's first work, launches and graph replays.
steps AS (
    SELECT
        node, pod, session, pid, tid, segment,
        min(ts_ms) FILTER (WHERE role IN ('launch', 'copy', 'graphlaunch', 'collective', 'p2p')) AS first_work_ms,
        count(*) FILTER (WHERE role = 'graphlaunch') AS graph_replays
    FROM segmented
    GROUP BY ALL
),
-- Step ends and event syncs of each event, in entry order: a step ends
-- at the first sync after its record.
waits AS (
    SELECT
        *,
        min(CASE WHEN role = 'eventsync' THEN n END) OVER (
            PARTITION BY node, pod, session, pid, event
            ORDER BY n
            ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING
        ) AS sync_n
    FROM (
        SELECT node, pod, session, pid, tid, segment, n, role, ts_ms, coalesce(event, '0x0') AS event
        FROM segmented
        WHERE ends_step
        UNION ALL
        SELECT node, pod, session, pid, tid, CAST(NULL AS BIGINT), n, role, ts_ms, event
        FROM segmented
        WHERE role = 'eventsync' AND event IS NOT NULL
    )
),
durations AS (
    SELECT
        CASE WHEN s.graph_replays = 1 THEN 'decode' ELSE 'prefill' END AS phase,
        sync.end_ms - coalesce(s.first_work_ms, w.ts_ms) AS duration_ms
    FROM waits w
    JOIN steps s
        ON s.node IS NOT DISTINCT FROM w.node AND s.pod IS NOT DISTINCT FROM w.pod
        AND s.session = w.session AND s.pid = w.pid AND s.tid = w.tid AND s.segment = w.segment
    JOIN segmented sync
        ON sync.node IS NOT DISTINCT FROM w.node AND sync.pod IS NOT DISTINCT FROM w.pod
        AND sync.session = w.session AND sync.pid = w.pid AND sync.n = w.sync_n
    WHERE w.role = 'eventrecord'
)
SELECT
    phase,
    count(*) AS count,
    avg(duration_ms) AS mean_ms,
    min(duration_ms) AS min_ms,
    max(duration_ms) AS max_ms,
    percentile(duration_ms, 0.50) AS p50_ms,
    percentile(duration_ms, 0.95) AS p95_ms,
    percentile(duration_ms, 0.99) AS p99_ms
FROM durations
GROUP BY phase
ORDER BY phase;
