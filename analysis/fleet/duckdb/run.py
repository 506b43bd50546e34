"""Runs one of the lake's DuckDB queries and prints its rows as JSON.

Usage: python3 run.py LAKE QUERY.sql
LAKE is a directory (every *.parquet below it, Hive partitions read) or
an s3:// glob DuckDB's httpfs can read. The queries read the view `calls`.
"""
import json
import os
import sys

import duckdb


def main() -> None:
    lake, query = sys.argv[1], sys.argv[2]
    glob = lake if lake.endswith(".parquet") else os.path.join(lake, "**", "*.parquet")
    con = duckdb.connect()
    quoted = "'" + glob.replace("'", "''") + "'"
    con.execute(
        f"CREATE VIEW calls AS SELECT * FROM read_parquet({quoted}, hive_partitioning = false, union_by_name = true)"
    )
    with open(query, encoding="utf-8") as f:
        cursor = con.execute(f.read())
    names = [d[0] for d in cursor.description]
    rows = [dict(zip(names, row)) for row in cursor.fetchall()]
    json.dump(rows, sys.stdout, default=str)
    print()


if __name__ == "__main__":
    main()
