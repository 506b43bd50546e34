"""Runs one of the lake's queries with DuckDB and prints its rows as JSON.

Usage: python3 run.py LAKE QUERY
LAKE is a directory (every *.parquet below it) or an s3:// glob DuckDB's
httpfs can read. QUERY is a query's name in analysis/fleet/sql/
(`fleet_top_kernels`) or a .sql file. The queries read the view `calls`;
prelude.sql gives them the few Spark names they use (the Spark job,
analysis/fleet/spark/report.py, runs the same files).
"""
import json
import os
import sys

import duckdb

HERE = os.path.dirname(os.path.abspath(__file__))
SQL = os.path.join(HERE, "..", "sql")


def text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def prelude():
    """prelude.sql with the range fold's body put in (its comment lines left out)."""
    body = "\n".join(l for l in text(os.path.join(SQL, "range_state.sql")).splitlines() if not l.startswith("--"))
    return text(os.path.join(HERE, "prelude.sql")).replace("{range_state}", body)


def main() -> None:
    lake, query = sys.argv[1], sys.argv[2]
    if not query.endswith(".sql"):
        query = os.path.join(SQL, query + ".sql")
    glob = lake if lake.endswith(".parquet") else os.path.join(lake, "**", "*.parquet")
    con = duckdb.connect()
    quoted = "'" + glob.replace("'", "''") + "'"
    con.execute(
        f"CREATE VIEW calls AS SELECT * FROM read_parquet({quoted}, hive_partitioning = false, union_by_name = true)"
    )
    con.execute(prelude())
    cursor = con.execute(text(query))
    names = [d[0] for d in cursor.description]
    rows = [dict(zip(names, row)) for row in cursor.fetchall()]
    json.dump(rows, sys.stdout, default=str)
    print()


if __name__ == "__main__":
    main()
