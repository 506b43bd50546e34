//! The same answers from Spark and DuckDB (issue 19): the daemon records a
//! workload with steps (prefill and decode) and device memory allocated,
//! mapped and freed as Parquet, uploads it into a real S3 server
//! (SeaweedFS), and the lake read back through an S3 client under its keys
//! is queried with the shipped queries (`analysis/fleet/sql/`) by DuckDB
//! (`analysis/fleet/duckdb/run.py`) and by the PySpark job in local mode
//! (`analysis/fleet/spark/report.py`, one session for every query): every
//! number of report's main tables equals `report`'s.
//! `cuda-tracer top-kernels` over the same lake gives the fleet query's rows.
//!
//! Run the S3 tests one at a time across the machine (fixed ports):
//! `flock /tmp/s3-port.lock cargo test -p cuda-tracer-tests --test fleet_engines`.

use cuda_tracer_tests::{
    lake::{self, compare, duckdb, json_stdout, report, same, spark, upload_and_read_back},
    s3::S3Server,
    *,
};
use serde_json::Value;
use std::collections::BTreeMap;

/// The shipped queries, the same files for both engines.
const QUERIES: [&str; 8] =
    ["functions", "kernels", "copies", "allocations", "memory", "steps", "fleet_top_kernels", "top_kernels"];

/// The serving loop of four threads (a step per iteration, memory allocated
/// and freed in each; `--graphs`: mapped memory, pinned host memory, a
/// failed allocation) and then the vLLM-like loop (prefill and decode steps,
/// each queued before the last one's event was synchronized).
fn workload_with_steps_and_memory() -> Vec<String> {
    let w = workload();
    let script = format!("{w} --iterations 30 --graphs && {w} --vllm-loop --vllm-async");
    ["sh", "-c", &script].map(String::from).to_vec()
}

/// report.json's `steps.phases` map as rows with a `phase` key.
fn phase_rows(report: &Value) -> Value {
    let phases = report["steps"]["phases"].as_object().expect("report found steps");
    phases.iter().map(|(phase, stats)| serde_json::json!({ "phase": phase }).merged(stats)).collect()
}

trait Merged {
    fn merged(self, other: &Value) -> Value;
}

impl Merged for Value {
    fn merged(mut self, other: &Value) -> Value {
        for (k, v) in other.as_object().unwrap() {
            self[k] = v.clone();
        }
        self
    }
}

/// Every table of one engine against report's; `rows(query)` gives the
/// engine's rows of a query.
fn assert_equals_report(engine: &str, rep: &Value, rows: impl Fn(&str) -> Vec<Value>) {
    let functions = rep["functions"]["functions"].as_array().unwrap().len();
    let numbers = ["calls", "errors", "total_ms", "mean_us", "p50_us", "p95_us", "p99_us", "max_us"];
    let n =
        compare(engine, "functions", &rows("functions"), &rep["functions"]["functions"], &["func", "type"], &numbers);
    assert_eq!(n, functions, "{engine}: one row per function");
    let numbers = ["launches", "errors", "total_call_ms", "mean_call_us"];
    assert!(
        compare(engine, "kernels", &rows("kernels"), &rep["kernels"]["kernels"], &["kernel", "type"], &numbers) >= 3
    );
    let (copies, numbers) = (&rep["memory"]["copies"], ["calls", "bytes", "total_call_ms"]);
    let n = compare(engine, "copies", &rows("copies"), copies, &["type", "direction"], &numbers);
    assert_eq!(n, copies.as_array().unwrap().len(), "{engine}: every copy direction");

    let processes = &rep["memory"]["processes"];
    let numbers =
        ["allocations", "frees", "unmatched_frees", "failed_allocations", "peak_bytes", "peak_at_sec", "final_bytes"];
    let n = compare(engine, "memory", &rows("memory"), processes, &["pid"], &numbers);
    assert_eq!(n, processes.as_array().unwrap().len(), "{engine}: every process that allocated");
    assert!(compare(engine, "allocations", &rows("allocations"), processes, &["pid"], &["failed_allocations"]) >= 1);

    let phases = phase_rows(rep);
    let numbers = ["count", "mean_ms", "min_ms", "max_ms", "p50_ms", "p95_ms", "p99_ms"];
    let n = compare(engine, "steps", &rows("steps"), &phases, &["phase"], &numbers);
    assert_eq!(n, 2, "{engine}: prefill and decode");
}

#[test]
fn duckdb_and_spark_over_a_lake_read_back_from_s3_give_every_number_report_gives() {
    let _one_server = S3Server::lock();
    let tmp = tempfile::tempdir().unwrap();
    let (session, truth) = (tmp.path().join("traces/session-a"), tmp.path().join("truth"));
    let argv = workload_with_steps_and_memory();
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    // Every function: `--graphs`' memory families are off by default.
    let mut cmd = record_cmd(&session, &truth, &["--format", "parquet", "--functions", "all"], &argv);
    let out = cmd.env("NODE_NAME", "node-1").env("POD_NAME", "pod-a").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let server = S3Server::start();
    let lake = tmp.path().join("lake");
    let keys = upload_and_read_back(&server, &tmp.path().join("traces"), "pod-a", &lake);
    assert!(!keys.is_empty() && keys.iter().all(|k| k.ends_with(".parquet")), "{keys:?}");
    drop(server);

    let rep = json_stdout(&report(&lake, &tmp.path().join("report")));
    // The tables are not trivial: both phases, memory freed and never freed.
    let phases = &rep["steps"]["phases"];
    assert!(phases["prefill"]["count"].as_u64() > Some(20) && phases["decode"]["count"].as_u64() > Some(5), "{phases}");
    let processes = rep["memory"]["processes"].as_array().unwrap();
    assert!(processes.len() >= 2 && processes.iter().all(|p| p["peak_bytes"].as_u64() > Some(0)), "{processes:?}");
    assert!(processes.iter().any(|p| p["frees"].as_u64() > Some(100) && p["final_bytes"].as_u64() > Some(0)));
    assert!(processes.iter().any(|p| p["failed_allocations"].as_u64() > Some(0)), "{processes:?}");

    assert_equals_report("DuckDB", &rep, |q| duckdb(&lake, &format!("{q}.sql")));
    let from_spark = spark(&lake, &QUERIES, &tmp.path().join("spark"));
    assert_equals_report("Spark", &rep, |q| from_spark[q].clone());

    // The fleet-wide top kernels (what the fleet bench times): report's
    // kernels table added up per kernel, the same rows from both engines
    // and from `top-kernels`.
    let mut per_kernel: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    for r in rep["kernels"]["kernels"].as_array().unwrap() {
        let e = per_kernel.entry(r["kernel"].as_str().unwrap().to_string()).or_default();
        e.0 += r["launches"].as_u64().unwrap();
        e.1 += r["total_call_ms"].as_f64().unwrap();
    }
    // `cuda-tracer top-kernels` over the lake: the same rows, no engine.
    let ours = tracer_cmd().arg("top-kernels").arg(&lake).args(["--format", "json"]).output().unwrap();
    let ours = json_stdout(&ours)["kernels"].as_array().unwrap().clone();
    for rows in [duckdb(&lake, "top_kernels.sql"), from_spark["top_kernels"].clone(), ours] {
        assert!(!rows.is_empty() && rows.len() <= 20, "{rows:?}");
        assert_eq!(rows.len(), per_kernel.len().min(20));
        for r in &rows {
            let (launches, ms) = per_kernel[r["kernel"].as_str().unwrap()];
            assert_eq!(r["launches"].as_u64(), Some(launches), "{r}");
            assert!(same(&r["total_call_ms"], &ms.into()), "{r} vs {ms}");
        }
        let launches: Vec<u64> = rows.iter().map(|r| r["launches"].as_u64().unwrap()).collect();
        assert!(launches.windows(2).all(|w| w[0] >= w[1]), "most launched first: {launches:?}");
    }

    // The fleet's top kernels: the same rows from both, named by node and pod.
    let top_spark = &from_spark["fleet_top_kernels"];
    assert!(top_spark.iter().all(|r| r["node"] == "node-1" && r["pod"] == "pod-a"), "{top_spark:?}");
    let by_kernel = |rows: &[Value]| -> Vec<(String, Value)> {
        let mut v: Vec<_> = rows.iter().map(|r| (format!("{}/{}", r["kernel"], r["launches"]), r.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let (a, b) = (by_kernel(&duckdb(&lake, "fleet_top_kernels.sql")), by_kernel(top_spark));
    assert_eq!(a.iter().map(|x| &x.0).collect::<Vec<_>>(), b.iter().map(|x| &x.0).collect::<Vec<_>>());
    for ((_, x), (_, y)) in a.iter().zip(&b) {
        assert!(same(&x["total_call_ms"], &y["total_call_ms"]), "{x} vs {y}");
    }
}

/// One hand-made call for [`memory_fold_keeps_reports_rules_on_hand_made_calls`].
fn mem_call(pid: u32, ts_ms: f64, function: &str, ret: i32, bytes: Option<u64>, dptr: Option<u64>) -> Value {
    let (layer, role) = match function {
        "cudaMalloc" => ("cuda_runtime", "alloc"),
        "cudaFree" => ("cuda_runtime", "free"),
        "cuMemAlloc_v2" => ("cuda_api", "alloc"),
        "cuMemFree_v2" => ("cuda_api", "free"),
        "cuMemMap" => ("cuda_api", "map"),
        "cuMemUnmap" => ("cuda_api", "unmap"),
        other => panic!("{other}"),
    };
    serde_json::json!({
        "node": "n", "pod": "p", "session": "s", "pid": pid, "tid": 1, "ts_ns": (ts_ms * 1e6).round() as i64,
        "function": function, "layer": layer, "role": role, "ret": ret, "bytes": bytes, "dptr": dptr,
    })
}

/// The memory query's fold on the sequences report's own unit tests use
/// (live_ranges.rs, memory.rs), and on the cases the recorded workload
/// never makes: a pointer opened again by the layer that holds it, a close
/// by the layer that does not, a free of a pointer never allocated; in
/// DuckDB and in Spark.
#[test]
fn memory_fold_keeps_reports_rules_on_hand_made_calls() {
    let calls = [
        // report's counts_each_allocation_once_across_layers
        mem_call(1, 1000.0, "cudaMalloc", 0, Some(100), Some(0xa0)),
        mem_call(1, 1000.001, "cuMemAlloc_v2", 0, Some(100), Some(0xa0)),
        mem_call(1, 1500.0, "cuMemAlloc_v2", 0, Some(50), Some(0xb0)),
        mem_call(1, 1600.0, "cudaMalloc", 2, Some(1 << 40), None),
        mem_call(1, 2000.0, "cudaFree", 0, None, Some(0xa0)),
        mem_call(1, 2000.001, "cuMemFree_v2", 0, None, Some(0xa0)),
        mem_call(1, 2100.0, "cudaFree", 0, None, Some(0)),
        mem_call(1, 2200.0, "cuMemFree_v2", 0, None, Some(0xf0)),
        // Replaced, closed by the other layer (nothing), seen twice, freed.
        mem_call(2, 1000.0, "cudaMalloc", 0, Some(100), Some(0xa0)),
        mem_call(2, 1100.0, "cudaMalloc", 0, Some(300), Some(0xa0)),
        mem_call(2, 1200.0, "cuMemFree_v2", 0, None, Some(0xa0)),
        mem_call(2, 1300.0, "cuMemAlloc_v2", 0, Some(300), Some(0xa0)),
        mem_call(2, 1400.0, "cudaFree", 0, None, Some(0xa0)),
        mem_call(2, 1500.0, "cuMemFree_v2", 0, None, Some(0xa0)),
        // A mapping, unmapped; a failed one.
        mem_call(3, 1200.0, "cuMemMap", 0, Some(4096), Some(0xb000)),
        mem_call(3, 1300.0, "cuMemMap", 1, Some(4096), Some(0xc000)),
        mem_call(3, 2000.0, "cuMemUnmap", 0, Some(4096), Some(0xb000)),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("calls.json");
    std::fs::write(&json, serde_json::to_vec(&calls.to_vec()).unwrap()).unwrap();
    let parquet = tmp.path().join("lake/calls.parquet");
    std::fs::create_dir_all(parquet.parent().unwrap()).unwrap();
    let script = "import duckdb, sys\nduckdb.sql(f\"COPY (SELECT * FROM read_json('{sys.argv[1]}', columns = {{'node': 'VARCHAR', \
         'pod': 'VARCHAR', 'session': 'VARCHAR', 'pid': 'INTEGER', 'tid': 'INTEGER', 'ts_ns': 'BIGINT', 'function': 'VARCHAR', \
         'layer': 'VARCHAR', 'role': 'VARCHAR', 'ret': 'INTEGER', 'bytes': 'BIGINT', 'dptr': 'BIGINT'}})) TO '{sys.argv[2]}'\")";
    let status = lake::python_with_duckdb().args(["-c", script]).arg(&json).arg(&parquet).status().unwrap();
    assert!(status.success());
    let numbers = |rows: &[Value]| -> Vec<Vec<f64>> {
        let names = ["pid", "allocations", "frees", "unmatched_frees", "failed_allocations", "peak_bytes"];
        let names = names.iter().chain(&["peak_at_sec", "final_bytes"]);
        rows.iter().map(|r| names.clone().map(|n| r[*n].as_f64().unwrap()).collect()).collect()
    };
    let want = [
        [1.0, 2.0, 1.0, 1.0, 1.0, 150.0, 1.5, 50.0],
        [2.0, 2.0, 1.0, 0.0, 0.0, 300.0, 1.1, 0.0],
        [3.0, 1.0, 1.0, 0.0, 1.0, 4096.0, 1.2, 0.0],
    ];
    let lake = parquet.parent().unwrap();
    let from_spark = spark(lake, &["memory"], &tmp.path().join("spark"));
    for (engine, rows) in [("DuckDB", duckdb(lake, "memory.sql")), ("Spark", from_spark["memory"].clone())] {
        let got = numbers(&rows);
        assert_eq!(got.len(), want.len(), "{engine}: {rows:?}");
        for (g, w) in got.iter().zip(want) {
            assert!(g.iter().zip(w).all(|(a, b)| (a - b).abs() < 1e-9), "{engine}: {g:?} vs {w:?}");
        }
    }
}
