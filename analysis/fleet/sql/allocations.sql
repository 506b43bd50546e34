-- Failed device allocations per process: report's memory table
-- (`failed_allocations` of each process that allocated, mapped, freed or
-- unmapped device memory; a failed allocation or mapping counts).
SELECT
    pid,
    count(*) FILTER (WHERE role IN ('alloc', 'map') AND ret <> 0) AS failed_allocations
FROM calls
WHERE role IN ('alloc', 'free', 'map', 'unmap')
GROUP BY pid
ORDER BY pid;
