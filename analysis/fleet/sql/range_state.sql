-- A device-memory range's state after one more call: the body of the fold
-- `fold_ranges` (each engine's prelude wraps it: DuckDB's list_reduce,
-- Spark's aggregate). `s` is the state before the call, `e` the call, both
-- BIGINT so that both engines fold them alike:
--   s = live bytes * 4 + layers holding the range (1 driver, 2 runtime);
--   e = bytes * 8 + 4 if it opens (allocates, maps), else 0 (frees, unmaps)
--       + its layer (1 driver, 2 runtime).
-- Report's rules (live_ranges.rs): an open by a layer that does not hold the
-- range while the other does is the same range seen twice; any other open is
-- a new range of its bytes (replacing the one that layer held); a close
-- takes its layer off, and the range is gone when no layer holds it.
CASE
    WHEN (e & 4) = 0 AND ((s & 3) & (3 - (e & 3))) = 0 THEN CAST(0 AS BIGINT)
    WHEN (e & 4) = 0 THEN s - (s & (e & 3))
    WHEN (s & 3) <> 0 AND ((s & 3) & (e & 3)) = 0 THEN s | 3
    ELSE (e >> 3) * 4 + (e & 3)
END
