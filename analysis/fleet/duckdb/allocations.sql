-- Failed device allocations per process: report's memory table
-- (`failed_allocations` of each process that allocated or freed).
SELECT
    pid,
    count(*) FILTER (WHERE role = 'alloc' AND ret <> 0) AS failed_allocations
FROM calls
WHERE role IN ('alloc', 'free')
GROUP BY pid
ORDER BY pid;
