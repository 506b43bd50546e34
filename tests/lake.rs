//! The Parquet lake's query engines in tests: `report` as JSON, the
//! shipped DuckDB queries (`analysis/fleet/duckdb/run.py`) and Spark job
//! (`analysis/fleet/spark/report.py`) from setup's PyPI dirs, a lake
//! uploaded to S3 and read back under its keys, and the comparison of an
//! engine's rows with report's, number by number.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;

use crate::{
    root,
    s3::{s3_flags, S3Server, SECRET_KEY},
    setup_cache, tracer_cmd,
};

/// `cuda-tracer report INPUT --out OUT --format json`.
pub fn report(input: &Path, out: &Path) -> Output {
    tracer_cmd().arg("report").arg(input).arg("--out").arg(out).args(["--format", "json"]).output().expect("report")
}

/// A successful command's stdout as JSON.
pub fn json_stdout(output: &Output) -> Value {
    assert!(output.status.success(), "report failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("--format json prints JSON")
}

/// `python3` with `cargo xtask setup`'s PyPI dir of `package` (from `var`,
/// else `~/.cache/cuda-tracer/<dir>`) on its path; `pin` is what setup installs.
fn python_with(var: &str, dir: &str, package: &str, pin: &str) -> Command {
    let dir = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| setup_cache().join(dir));
    let probe = Command::new("python3").env("PYTHONPATH", &dir).args(["-c", &format!("import {package}")]).output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "{package} is missing: run `cargo xtask setup` (it installs {pin} into {0}), or \
         `python3 -m pip install --target {0} {pin}`, or set {var} to a dir that has it",
        dir.display()
    );
    let mut python = Command::new("python3");
    python.env("PYTHONPATH", &dir);
    python
}

/// `python3` with setup's DuckDB.
pub fn python_with_duckdb() -> Command {
    python_with("CUDA_TRACER_DUCKDB", "pypi-duckdb", "duckdb", "duckdb==1.5.6")
}

/// The rows of one shipped query (a file of `analysis/fleet/sql/`) run by
/// DuckDB over the Parquet files under `lake`.
pub fn duckdb(lake: &Path, query: &str) -> Vec<Value> {
    let (run, query) = (root().join("analysis/fleet/duckdb/run.py"), root().join("analysis/fleet/sql").join(query));
    let output = python_with_duckdb().arg(run).arg(lake).arg(&query).output().unwrap();
    assert!(output.status.success(), "{}: {}", query.display(), String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice::<Value>(&output.stdout).unwrap().as_array().unwrap().clone()
}

/// The rows of each of `queries` from the Spark job in local mode over the
/// Parquet files under `lake`, in one Spark session; `out` receives the
/// job's per-query files. Spark needs Java 17 or newer (`JAVA_HOME`, else
/// `java` on PATH; setup installs Debian's).
pub fn spark(lake: &Path, queries: &[&str], out: &Path) -> BTreeMap<String, Vec<Value>> {
    let mut python = python_with("CUDA_TRACER_PYSPARK", "pypi-pyspark", "pyspark", "pyspark==4.0.1");
    python.arg(root().join("analysis/fleet/spark/report.py")).arg(lake).arg("--out").arg(out);
    for q in queries {
        python.args(["--query", q]);
    }
    let output = python.output().unwrap();
    assert!(output.status.success(), "Spark job: {}", String::from_utf8_lossy(&output.stderr));
    let rows = |q: &&str| {
        let text = std::fs::read(out.join(format!("{q}.json"))).unwrap_or_else(|e| panic!("{q}.json: {e}"));
        (q.to_string(), serde_json::from_slice::<Value>(&text).unwrap().as_array().unwrap().clone())
    };
    queries.iter().map(rows).collect()
}

/// Uploads the sessions under `traces` into bucket `traces` of `server` as a
/// pod (`POD_NAME` `pod`) would, and writes the lake's objects, read back
/// through the S3 client, into `dir` under their keys. Returns the keys.
pub fn upload_and_read_back(server: &S3Server, traces: &Path, pod: &str, dir: &Path) -> Vec<String> {
    server.create_bucket("traces");
    let mut cmd = tracer_cmd();
    cmd.arg("upload").arg(traces);
    s3_flags(&mut cmd, "traces", SECRET_KEY);
    let out = cmd.env("POD_NAME", pod).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let lake = server.objects("traces", "test/parquet/");
    for (key, bytes) in &lake {
        let path = dir.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    lake.into_keys().collect()
}

/// Equal numbers: integers exactly, floats to 1e-9 of their size (sums
/// added in another order differ in the last bits).
pub fn same(a: &Value, b: &Value) -> bool {
    match (a.as_u64(), b.as_u64()) {
        (Some(x), Some(y)) => x == y,
        _ => {
            let (x, y) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
    }
}

/// Every row `engine` gave for `table` equals the row of `report` with the
/// same `keys`, in every one of `numbers`; returns how many rows were compared.
pub fn compare(engine: &str, table: &str, rows: &[Value], report: &Value, keys: &[&str], numbers: &[&str]) -> usize {
    let theirs = report.as_array().unwrap();
    for row in rows {
        let found = theirs.iter().find(|r| keys.iter().all(|k| r[k] == row[k]));
        let found = found.unwrap_or_else(|| panic!("{engine} {table}: report has no row {row}"));
        for n in numbers {
            assert!(same(&row[n], &found[n]), "{table} {n}: {engine} {row} vs report {found}");
        }
    }
    rows.len()
}
