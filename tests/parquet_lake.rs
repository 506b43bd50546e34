//! Parquet beside JSONL (issue 19): a session recorded with `--format both`
//! gives the same report from its JSONL and from its Parquet files; a
//! truncated Parquet file is skipped and named; the DuckDB queries shipped
//! in `analysis/fleet/sql/` give every number `report` gives; uploaded
//! into a real S3 server (SeaweedFS), the Parquet files land under the
//! lake's Hive-style keys and read back through an S3 client give the same.

use std::path::{Path, PathBuf};

use cuda_tracer_tests::{
    lake::{self, compare, duckdb, json_stdout, report},
    s3::S3Server,
    *,
};
use serde_json::Value;

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

#[test]
fn the_shipped_duckdb_queries_give_every_number_report_gives() {
    let (tmp, trace, truth) = scratch();
    record(&trace, &truth, &["--format", "parquet"], &[&workload(), "--iterations", "30"]);
    let rep = json_stdout(&report(&trace, &tmp.path().join("report")));
    let functions = duckdb(&trace, "functions.sql");
    let numbers = ["calls", "errors", "total_ms", "mean_us", "p50_us", "p95_us", "p99_us", "max_us"];
    let n = compare("DuckDB", "functions", &functions, &rep["functions"]["functions"], &["func", "type"], &numbers);
    assert_eq!(n, rep["functions"]["functions"].as_array().unwrap().len(), "one row per function");
    let kernels = duckdb(&trace, "kernels.sql");
    let numbers = ["launches", "errors", "total_call_ms", "mean_call_us"];
    assert!(compare("DuckDB", "kernels", &kernels, &rep["kernels"]["kernels"], &["kernel", "type"], &numbers) >= 2);
    let copies = duckdb(&trace, "copies.sql");
    let n = compare(
        "DuckDB",
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
    // The lake read back through the S3 client, under its keys.
    let synced = tmp.path().join("synced");
    let lake = lake::upload_and_read_back(&server, &tmp.path().join("traces"), "pod-a", &synced);
    assert_eq!(lake.len(), 1, "{lake:?}");
    let key = &lake[0];
    let parts: Vec<&str> = key.split('/').collect();
    assert_eq!(parts.len(), 7, "{key}");
    assert!(parts[2].starts_with("date=20") && parts[2].len() == "date=2026-01-01".len(), "{key}");
    assert!(parts[3].starts_with("hour=") && parts[3].len() == "hour=00".len(), "{key}");
    assert_eq!(parts[4..], ["node=node-1", "pod=pod-a", "session-a-00001.parquet"], "{key}");
    assert!(
        server.objects("traces", "test/pod-a/session-a/").keys().any(|k| k.ends_with(".jsonl")),
        "JSONL keys as before"
    );

    let from_lake = json_stdout(&report(&synced, &tmp.path().join("r2")));
    assert_eq!(from_lake["functions"], local["functions"]);
    assert_eq!(from_lake["memory"]["copies"], local["memory"]["copies"]);
    let rows = duckdb(&synced, "fleet_top_kernels.sql");
    assert!(rows.iter().all(|r| r["node"] == "node-1" && r["pod"] == "pod-a"), "{rows:?}");
    let launches: u64 = rows.iter().map(|r| r["launches"].as_u64().unwrap()).sum();
    let named: u64 = duckdb(&synced, "kernels.sql").iter().map(|r| r["launches"].as_u64().unwrap()).sum();
    assert_eq!(launches, named);
}
