"""Runs the lake's queries with Spark SQL and prints their rows as JSON.

Usage: report.py [--master URL] [--query NAME]... [--out DIR] [--format json|csv]
                 [--conf KEY=VALUE]... LAKE

LAKE is a directory of the Parquet lake (every *.parquet below it), one
file, or any URL Spark reads (s3a://bucket/prefix/parquet/ on a cluster with
hadoop-aws; a narrower prefix such as .../date=2026-12-03/ reads less).
Each query (analysis/fleet/sql/NAME.sql) reads the view `calls` and gives
the same rows as DuckDB running the same file (analysis/fleet/duckdb/run.py).

Started with python3, it runs in local mode (--master local[2] unless
given) with a small configuration for a small machine; started by
spark-submit, the cluster's master and configuration stand. One Spark
session runs every query asked for (default: all of report's tables).

Output: with one --query and no --out, that query's rows as a JSON list
(run.py's shape); else a JSON object of query name to rows. With --out DIR,
one file per query instead: DIR/NAME.json (rows, run.py's shape) or
DIR/NAME.csv.
"""
import argparse
import csv
import decimal
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SQL = os.path.join(HERE, "..", "sql")

# The queries: one file each in analysis/fleet/sql/, the same files DuckDB
# runs (run.py); prelude.sql gives them the few DuckDB names they use.
QUERIES = ["functions", "kernels", "copies", "allocations", "memory", "steps", "fleet_top_kernels", "top_kernels"]
# What runs without --query: report's tables.
REPORT_TABLES = ["functions", "kernels", "copies", "allocations", "memory", "steps"]

# Local mode on a small machine (2 cores): a small driver, few shuffle
# partitions, no web UI.
LOCAL_CONF = {
    "spark.driver.memory": "2g",
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "2",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
}
# Everywhere: the lake's `time` column is a nanosecond timestamp, which
# Spark reads only as a long; answers in UTC.
CONF = {
    "spark.sql.legacy.parquet.nanosAsLong": "true",
    "spark.sql.session.timeZone": "UTC",
}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("lake")
    p.add_argument("--master", help="Spark master (default local[2], or spark-submit's)")
    p.add_argument("--query", action="append", choices=QUERIES, help="a query to run (repeatable)")
    p.add_argument("--out", help="write NAME.json / NAME.csv per query into this directory")
    p.add_argument("--format", choices=["json", "csv"], default="json")
    p.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="a Spark setting over ours")
    return p.parse_args(argv)


def session(master, overrides):
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("cuda-tracer fleet report")
    # spark-submit starts the JVM and hands Python its gateway: its master
    # and configuration stand.
    under_submit = "PYSPARK_GATEWAY_PORT" in os.environ
    if master or not under_submit:
        builder = builder.master(master or "local[2]")
    if not under_submit:
        for k, v in LOCAL_CONF.items():
            builder = builder.config(k, v)
    for k, v in CONF.items():
        builder = builder.config(k, v)
    for setting in overrides:
        k, _, v = setting.partition("=")
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def calls_view(spark, lake):
    """The view `calls`: every Parquet file under `lake`, by column name
    (files with and without a newer nullable column read together); the
    Hive partition directories are not read as columns (node and pod are
    columns of the files)."""
    reader = spark.read.option("mergeSchema", "true")
    if not lake.endswith(".parquet"):
        reader = reader.option("recursiveFileLookup", "true").option("pathGlobFilter", "*.parquet")
    reader.parquet(lake).createOrReplaceTempView("calls")


def plain(value):
    """A Spark value as JSON writes it (rows as objects, decimals as numbers)."""
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def prelude(spark):
    """prelude.sql's functions, with the range fold's body put in (its
    comment lines left out), one statement at a time."""
    body = "\n".join(l for l in text(os.path.join(SQL, "range_state.sql")).splitlines() if not l.startswith("--"))
    statements = text(os.path.join(HERE, "prelude.sql")).replace("{range_state}", body).split(";\n")
    for statement in statements:
        code = "\n".join(l for l in statement.splitlines() if not l.startswith("--")).strip()
        if code:
            spark.sql(code)


def run(spark, name):
    sql = text(os.path.join(SQL, name + ".sql")).strip().rstrip(";")
    return [plain(row.asDict(recursive=True)) for row in spark.sql(sql).collect()]


def write(rows, out, fmt):
    if fmt == "json":
        json.dump(rows, out, default=str)
        out.write("\n")
        return
    names = list(rows[0]) if rows else []
    w = csv.DictWriter(out, fieldnames=names, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)


def main(argv):
    args = parse_args(argv)
    names = args.query or REPORT_TABLES
    spark = session(args.master, args.conf)
    try:
        calls_view(spark, args.lake)
        prelude(spark)
        results = {name: run(spark, name) for name in names}
    finally:
        spark.stop()
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        for name, rows in results.items():
            with open(os.path.join(args.out, f"{name}.{args.format}"), "w", encoding="utf-8", newline="") as f:
                write(rows, f, args.format)
    elif len(names) == 1:
        write(results[names[0]], sys.stdout, args.format)
    elif args.format == "json":
        json.dump(results, sys.stdout, default=str)
        print()
    else:
        for name, rows in results.items():
            print(f"# {name}")
            write(rows, sys.stdout, "csv")


if __name__ == "__main__":
    main(sys.argv[1:])
