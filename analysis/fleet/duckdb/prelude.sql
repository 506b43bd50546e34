-- What the lake's queries (analysis/fleet/sql/) need of DuckDB beyond its
-- own functions: Spark's names where DuckDB's differ. run.py runs this
-- first, with the fold's body from sql/range_state.sql.
-- Spark's exact percentile: linear interpolation between ranks.
CREATE MACRO percentile(x, p) AS quantile_cont(x, p);
-- A device-memory range's state after the calls of `history`, in order.
CREATE MACRO fold_ranges(history) AS list_reduce(history, lambda s, e: ({range_state}), CAST(0 AS BIGINT));
