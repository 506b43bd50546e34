//! Parquet beside JSONL (issue 19): a session recorded with `--format both`
//! gives the same report from its JSONL and from its Parquet files; a
//! truncated Parquet file is skipped and named; the DuckDB queries shipped
//! in `analysis/fleet/duckdb/` give every number `report` gives; uploaded
//! into a real S3 server (SeaweedFS), the Parquet files land under the
//! lake's Hive-style keys and read back through an S3 client give the same.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use cuda_tracer_tests::{
    s3::{s3_flags, S3Server, SECRET_KEY},
    *,
};
use serde_json::Value;

fn report(input: &Path, out: &Path) -> Output {
    tracer_cmd().arg("report").arg(input).arg("--out").arg(out).args(["--format", "json"]).output().expect("report")
}

fn json_stdout(output: &Output) -> Value {
    assert!(output.status.success(), "report failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("--format json prints JSON")
}

/// `metadata.json` and the files of `session` whose name ends with `ext`, copied into `dir`.
fn copy_session(session: &Path, dir: &Path, ext: &str) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(session.join("metadata.json"), dir.join("metadata.json")).unwrap();
    let mut copied = Vec::new();
    for entry in std::fs::read_dir(session).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("trace_") && name.ends_with(ext) {
            std::fs::copy(&path, dir.join(&name)).unwrap();
            copied.push(dir.join(&name));
        }
    }
    assert!(!copied.is_empty(), "no {ext} files in {}", session.display());
    copied
}

fn without_files(mut report: Value) -> Value {
    report["inputs"]["files"] = Value::Null;
    report
}

#[test]
fn parquet_and_jsonl_give_the_same_report_and_a_truncated_file_is_named() {
    let (tmp, trace, truth) = scratch();
    record(&trace, &truth, &["--format", "both", "--rotate-secs", "1"], &[&workload(), "--iterations", "30"]);
    let (jsonl, parquet) = (tmp.path().join("jsonl"), tmp.path().join("parquet"));
    copy_session(&trace, &jsonl, ".jsonl");
    let parquet_files = copy_session(&trace, &parquet, ".parquet");
    let from_jsonl = json_stdout(&report(&jsonl, &tmp.path().join("r1")));
    let from_parquet = json_stdout(&report(&parquet, &tmp.path().join("r2")));
    assert!(from_jsonl["inputs"]["calls"].as_u64().unwrap() > 100);
    assert_eq!(without_files(from_parquet.clone()), without_files(from_jsonl.clone()), "the same numbers from either");
    let chrome = |input: &Path, name: &str| -> Value {
        let out = tmp.path().join(name);
        let status = tracer_cmd().args(["export", "chrome"]).arg(input).arg("-o").arg(&out).status().unwrap();
        assert!(status.success(), "export chrome {}", input.display());
        let mut export: Value = serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap();
        // Events come in file order: a Parquet file's is time order.
        let mut events: Vec<String> = export["traceEvents"].as_array().unwrap().iter().map(Value::to_string).collect();
        events.sort();
        export["traceEvents"] = events.into();
        export
    };
    assert_eq!(chrome(&parquet, "p.json"), chrome(&jsonl, "j.json"), "the same Chrome export from either");
    let both = json_stdout(&report(&trace, &tmp.path().join("r3")));
    assert_eq!(both["inputs"]["calls"], from_jsonl["inputs"]["calls"], "a JSONL twin wins: each call once");

    let bytes = std::fs::read(&parquet_files[0]).unwrap();
    let cut = parquet.join("trace_00099_20260101T000000Z.parquet");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let output = report(&parquet, &tmp.path().join("r4"));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let json = json_stdout(&output);
    assert_eq!(json["inputs"]["skipped_lines"], 1);
    assert_eq!(json["functions"], from_jsonl["functions"], "a truncated file costs nothing else");
    assert!(stderr.contains(&cut.display().to_string()) && stderr.contains("truncated or corrupt"), "{stderr}");
}

/// `cargo xtask setup`'s DuckDB (its own PyPI dir).
fn python_with_duckdb() -> Command {
    let dir =
        std::env::var_os("CUDA_TRACER_DUCKDB").map(PathBuf::from).unwrap_or_else(|| setup_cache().join("pypi-duckdb"));
    let probe = Command::new("python3").env("PYTHONPATH", &dir).args(["-c", "import duckdb"]).output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "duckdb is missing: run `cargo xtask setup` (it installs duckdb==1.5.6 into {0}), or \
         `python3 -m pip install --target {0} duckdb==1.5.6`, or set CUDA_TRACER_DUCKDB to a dir that has it",
        dir.display()
    );
    let mut python = Command::new("python3");
    python.env("PYTHONPATH", &dir);
    python
}

/// The rows of one shipped query over the Parquet files under `lake`.
fn duckdb(lake: &Path, query: &str) -> Vec<Value> {
    let dir = root().join("analysis/fleet/duckdb");
    let output = python_with_duckdb().arg(dir.join("run.py")).arg(lake).arg(dir.join(query)).output().unwrap();
    assert!(output.status.success(), "{query}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice::<Value>(&output.stdout).unwrap().as_array().unwrap().clone()
}

/// Equal numbers: integers exactly, floats to 1e-9 of their size (sums
/// added in another order differ in the last bits).
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_u64(), b.as_u64()) {
        (Some(x), Some(y)) => x == y,
        _ => {
            let (x, y) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
    }
}

/// Every row of `engine` equals the row of `report` with the same `keys`,
/// in every one of `numbers`; returns how many rows were compared.
fn compare(table: &str, engine: &[Value], report: &Value, keys: &[&str], numbers: &[&str]) -> usize {
    let rows = report.as_array().unwrap();
    for row in engine {
        let theirs = rows.iter().find(|r| keys.iter().all(|k| r[k] == row[k]));
        let theirs = theirs.unwrap_or_else(|| panic!("{table}: report has no row {row}"));
        for n in numbers {
            assert!(same(&row[n], &theirs[n]), "{table} {n}: DuckDB {row} vs report {theirs}");
        }
    }
    engine.len()
}

#[test]
fn the_shipped_duckdb_queries_give_every_number_report_gives() {
    let (tmp, trace, truth) = scratch();
    record(&trace, &truth, &["--format", "parquet"], &[&workload(), "--iterations", "30"]);
    let rep = json_stdout(&report(&trace, &tmp.path().join("report")));
    let functions = duckdb(&trace, "functions.sql");
    let numbers = ["calls", "errors", "total_ms", "mean_us", "p50_us", "p95_us", "p99_us", "max_us"];
    let n = compare("functions", &functions, &rep["functions"]["functions"], &["func", "type"], &numbers);
    assert_eq!(n, rep["functions"]["functions"].as_array().unwrap().len(), "one row per function");
    let kernels = duckdb(&trace, "kernels.sql");
    let numbers = ["launches", "errors", "total_call_ms", "mean_call_us"];
    assert!(compare("kernels", &kernels, &rep["kernels"]["kernels"], &["kernel", "type"], &numbers) >= 2);
    let copies = duckdb(&trace, "copies.sql");
    let n = compare(
        "copies",
        &copies,
        &rep["memory"]["copies"],
        &["type", "direction"],
        &["calls", "bytes", "total_call_ms"],
    );
    assert!(n >= 2, "{copies:?}");
}

#[test]
fn uploaded_parquet_lands_in_the_hive_partitions_and_reads_back_the_same() {
    let _one_server = S3Server::lock();
    let tmp = tempfile::tempdir().unwrap();
    let (session, truth) = (tmp.path().join("traces/session-a"), tmp.path().join("truth"));
    // The tracer's downward-API names, as in a pod: the same in the rows and the keys.
    let mut cmd = record_cmd(&session, &truth, &["--format", "both"], &[&workload(), "--iterations", "20"]);
    let out = cmd.env("NODE_NAME", "node-1").env("POD_NAME", "pod-a").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let local = json_stdout(&report(&session, &tmp.path().join("r1")));
    let server = S3Server::start();
    server.create_bucket("traces");
    let mut cmd = tracer_cmd();
    cmd.arg("upload").arg(tmp.path().join("traces"));
    s3_flags(&mut cmd, "traces", SECRET_KEY);
    let out = cmd.env("POD_NAME", "pod-a").output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    let lake = server.objects("traces", "test/parquet/");
    assert_eq!(lake.len(), 1, "{:?}", lake.keys());
    let key = lake.keys().next().unwrap();
    let parts: Vec<&str> = key.split('/').collect();
    assert_eq!(parts.len(), 7, "{key}");
    assert!(parts[2].starts_with("date=20") && parts[2].len() == "date=2026-01-01".len(), "{key}");
    assert!(parts[3].starts_with("hour=") && parts[3].len() == "hour=00".len(), "{key}");
    assert_eq!(parts[4..], ["node=node-1", "pod=pod-a", "session-a-00001.parquet"], "{key}");
    assert!(
        server.objects("traces", "test/pod-a/session-a/").keys().any(|k| k.ends_with(".jsonl")),
        "JSONL keys as before"
    );

    // The lake read back through the S3 client, under its keys.
    let synced = tmp.path().join("synced");
    for (key, bytes) in &lake {
        let path = synced.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let from_lake = json_stdout(&report(&synced, &tmp.path().join("r2")));
    assert_eq!(from_lake["functions"], local["functions"]);
    assert_eq!(from_lake["memory"]["copies"], local["memory"]["copies"]);
    let rows = duckdb(&synced, "fleet_top_kernels.sql");
    assert!(rows.iter().all(|r| r["node"] == "node-1" && r["pod"] == "pod-a"), "{rows:?}");
    let launches: u64 = rows.iter().map(|r| r["launches"].as_u64().unwrap()).sum();
    let named: u64 = duckdb(&synced, "kernels.sql").iter().map(|r| r["launches"].as_u64().unwrap()).sum();
    assert_eq!(launches, named);
}
