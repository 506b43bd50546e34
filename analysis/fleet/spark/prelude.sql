-- What the lake's queries (analysis/fleet/sql/) need of Spark SQL beyond
-- its own functions: DuckDB's names where Spark's differ. report.py runs
-- each statement first, with the fold's body from sql/range_state.sql.
-- A JSON field as text.
CREATE TEMPORARY FUNCTION json_extract_string(json STRING, path STRING) RETURNS STRING
RETURN get_json_object(json, path);
-- A device-memory range's state after the calls of `history`, in order.
CREATE TEMPORARY FUNCTION fold_ranges(history ARRAY<BIGINT>) RETURNS BIGINT
RETURN aggregate(history, CAST(0 AS BIGINT), (s, e) -> ({range_state}));
