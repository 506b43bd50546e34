-- Copy volume by layer and direction: report's "copies" table (copies.csv),
-- successful copies only.
SELECT
    layer AS type,
    direction,
    count(*) AS calls,
    sum(bytes) AS bytes,
    sum(dur_ns) / 1e6 AS total_call_ms
FROM calls
WHERE ret = 0 AND direction IS NOT NULL AND bytes IS NOT NULL
GROUP BY layer, direction
ORDER BY type, direction;
