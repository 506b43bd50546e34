//! The generator on a small fleet (2 nodes × 2 pods × 1 minute): the lake
//! layout, the JSONL tree as uploaded, and `report` giving the same tables
//! over either.

use super::*;
use cuda_tracer::analysis::{
    inputs::select,
    remote::{StoreOptions, MAX_OBJECT_BYTES, MAX_TOTAL_BYTES},
    report::{read_inputs, Report},
    trace::filter::TraceFilter,
};

/// Every file under `dir`, as paths relative to it.
fn files(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().strip_prefix(dir).unwrap().display().to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn a_small_fleet_has_the_lake_layout_and_both_formats_report_alike() {
    let out = tempfile::tempdir().unwrap();
    let fleet = Fleet { nodes: 2, pods: 2, minutes: 1, rate: 200, rotate_minutes: 1 };
    assert_eq!(step(0, 1, &kernel_names()).len() as u64, STEP_CALLS);
    assert_eq!(generate(&fleet, out.path()).unwrap(), 4 * 60 * 200);

    let lake = files(&out.path().join("lake"));
    assert_eq!(lake.len(), 4, "one file per pod: {lake:?}");
    let key = regex::Regex::new(
        r"^parquet/date=\d{4}-\d{2}-\d{2}/hour=\d{2}/node=gpu-node-00(\d)/pod=vllm-00(\d)-(\d)/00(\d)(\d)-s1-00001\.parquet$",
    )
    .unwrap();
    for f in &lake {
        let c = key.captures(f).unwrap_or_else(|| panic!("not a lake key: {f}"));
        assert!(c[1] == c[2] && c[2] == c[4] && c[3] == c[5], "node, pod and session agree: {f}");
    }
    let jsonl = files(&out.path().join("jsonl"));
    assert_eq!(jsonl.len(), 8, "{jsonl:?}");
    for pod in ["vllm-000-0", "vllm-000-1", "vllm-001-0", "vllm-001-1"] {
        let session = format!("{pod}/{}-s1", pod.replace("vllm-", "").replace('-', ""));
        assert!(jsonl.contains(&format!("{session}/metadata.json")), "{jsonl:?}");
        assert!(jsonl.iter().any(|f| f.starts_with(&format!("{session}/trace_00001_")) && f.ends_with(".jsonl")));
    }

    let report = |dir: PathBuf| {
        let (filter, store) = (
            TraceFilter::default(),
            StoreOptions {
                client: Default::default(),
                max_object_bytes: MAX_OBJECT_BYTES,
                max_total_bytes: MAX_TOTAL_BYTES,
            },
        );
        let loaded = read_inputs(&select(&[dir], &filter, &store).unwrap(), &filter).unwrap();
        assert_eq!(loaded.skipped_total, 0);
        assert_eq!(loaded.calls.len(), 4 * 60 * 200);
        Report::build(&loaded).0
    };
    let (from_jsonl, from_parquet) = (report(out.path().join("jsonl")), report(out.path().join("lake")));
    let kernels = from_jsonl.kernels.kernels_csv();
    assert_eq!(kernels, from_parquet.kernels.kernels_csv());
    assert!(kernels.lines().count() > 100, "a few hundred kernels, most of them launched: {kernels}");
    assert!(kernels.contains("cutlass::Kernel2<") && kernels.contains("flash::flash_fwd_kernel<"));
    assert_eq!(from_jsonl.functions.functions_csv(), from_parquet.functions.functions_csv());
    let names: Vec<&str> = ["cudaGraphLaunch", "cudaMemcpyAsync", "cudaMalloc", "cudaFree", "cudaStreamSynchronize"]
        .into_iter()
        .filter(|f| !from_jsonl.functions.functions_csv().contains(f))
        .collect();
    assert!(names.is_empty(), "the mix has every kind of call: {names:?} missing");
}
