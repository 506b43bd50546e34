//! Exact numbers for the KV-cache summary and the step alignment.

use super::*;

/// The header of chunks written before `num_blocks, total_blocks`.
const OLDER_HEADER: &str = "timestamp_sec,usage_pct,num_requests_running,num_requests_waiting,num_preemptions";

fn csv(rows: &[(f64, f64, &str)]) -> String {
    let mut t = format!("{CSV_HEADER}\n");
    for (ts, usage, rest) in rows {
        t.push_str(&format!("{ts:.3},{usage:.4},,,{rest}\n"));
    }
    t
}

fn older_csv(rows: &[(f64, f64, &str)]) -> String {
    let mut t = format!("{OLDER_HEADER}\n");
    for (ts, usage, rest) in rows {
        t.push_str(&format!("{ts:.3},{usage:.4},{rest}\n"));
    }
    t
}

/// Session s1: ten samples 1 s apart in two chunks (the second cut mid-row
/// by a crash); session s2: two samples, in a chunk of an older writer.
fn sessions() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let traces = tmp.path().join("traces");
    let (s1, s2) = (traces.join("s1"), traces.join("s2"));
    std::fs::create_dir_all(&s1).unwrap();
    std::fs::create_dir_all(&s2).unwrap();
    let usage = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 95.0, 100.0];
    // The counter resets (vLLM restarted) between 6 and 7.
    let preempt = [0, 0, 1, 1, 3, 3, 3, 0, 2, 2];
    let rows: Vec<(f64, f64, String)> =
        (0..10).map(|i| (i as f64, usage[i], format!("{},{},{}", i % 3, i % 2, preempt[i]))).collect();
    let as_ref: Vec<(f64, f64, &str)> = rows.iter().map(|(t, u, r)| (*t, *u, r.as_str())).collect();
    std::fs::write(s1.join("kv_cache_usage_00002.csv"), csv(&as_ref[5..]) + "9.500,4").unwrap();
    std::fs::write(s1.join("kv_cache_usage_00001.csv"), csv(&as_ref[..5])).unwrap();
    std::fs::write(s1.join("trace_00001_x.jsonl"), "{}\n").unwrap();
    std::fs::write(s2.join("kv_cache_usage_00001.csv"), older_csv(&[(0.0, 91.0, ",,"), (2.0, 53.0, "1,0,4")])).unwrap();
    (tmp, traces)
}

#[test]
fn summary_numbers_are_exact() {
    let (_tmp, traces) = sessions();
    let series = load(std::slice::from_ref(&traces)).unwrap();
    assert_eq!(series.len(), 2);
    assert_eq!(series[0].rows.len(), 10);
    assert_eq!(series[0].rows[3].num_requests_running, Some(0.0));
    assert_eq!(series[1].rows[0].num_requests_running, None, "empty cells stay empty");
    assert_eq!(series[0].skipped.len(), 1);
    assert!(series[0].skipped[0].ends_with("kv_cache_usage_00002.csv:7"), "{:?}", series[0].skipped);
    let s = summary_of(&series).unwrap();
    assert_eq!(
        s,
        KvSummary {
            sessions: 2,
            samples: 12,
            covered_sec: 11.0,
            mean_pct: 58.25,
            p95_pct: 100.0,
            peak_pct: 100.0,
            peak_at_sec: 9.0,
            // s1: 95 % held from 8 s to 9 s; s2: 91 % from 0 s to 2 s.
            above_90_sec: 3.0,
            // 0→1, 1→3, reset to 0, 0→2: 1 + 2 + 0 + 2 = 5; s2 has one counter value.
            preemptions: 5.0,
            skipped_lines: 1,
            evictions: evictions::EvictionSummary::default(),
        }
    );
    assert_eq!(series[1].rows[1].num_preemptions, Some(4.0), "an older writer's columns are read by name");
}

#[test]
fn summarize_writes_the_summary_and_a_merged_csv() {
    let (tmp, traces) = sessions();
    let out = tmp.path().join("report");
    // A session dir and one of its trace files name the same session once.
    let one = summarize(&[traces.join("s1"), traces.join("s1/trace_00001_x.jsonl")], &out).unwrap().unwrap();
    assert_eq!((one.sessions, one.samples, one.mean_pct, one.above_90_sec), (1, 10, 55.5, 1.0));
    let text = std::fs::read_to_string(out.join("kv_cache_summary.txt")).unwrap();
    for want in [
        "10 samples over 9.0 s in 1 session(s)",
        "mean usage:     55.50 %",
        "p95 usage:      100.00 %",
        "peak usage:     100.00 % at 9.000 s",
        "time above 90%: 1.0 s (11.1 % of the time)",
        "preemptions:    5",
        "skipped lines:  1",
        "peak above 90 %",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }
    let merged = std::fs::read_to_string(out.join("kv_cache_usage.csv")).unwrap();
    let lines: Vec<&str> = merged.lines().collect();
    assert_eq!(lines[0], format!("{CSV_HEADER},session"));
    assert_eq!(lines[1], "0,10,,,0,0,0,s1");
    assert_eq!(lines.len(), 11);
    // The merged file reads back as the same series.
    let again = load(&[out.join("kv_cache_usage.csv")]).unwrap();
    assert_eq!(again[0].rows, load(&[traces.join("s1")]).unwrap()[0].rows);
}

#[test]
fn no_kv_data_is_none_and_a_foreign_csv_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(summarize(&[tmp.path().to_path_buf()], &tmp.path().join("out")).unwrap(), None);
    assert!(!tmp.path().join("out").exists());
    let bad = tmp.path().join("kv_cache_usage.csv");
    std::fs::write(&bad, "time,usage,num_blocks,total_blocks\n0.1,15.3,625,4096\n").unwrap();
    let err = load(std::slice::from_ref(&bad)).unwrap_err().to_string();
    assert!(err.contains("is not a KV-cache CSV") && err.contains("num_blocks"), "{err}");
    // The seed's own file has our first four columns: it reads.
    std::fs::write(&bad, "timestamp_sec,usage_pct,num_blocks,total_blocks\n0.1,15.3,625,4096\n").unwrap();
    let seed = load(&[bad]).unwrap();
    assert_eq!((seed[0].rows[0].num_blocks, seed[0].rows[0].total_blocks), (Some(625.0), Some(4096.0)));
}

#[test]
fn evictions_are_merged_and_summed_or_their_absence_explained() {
    let (tmp, traces) = sessions();
    let out = tmp.path().join("report");
    let without = summarize(std::slice::from_ref(&traces), &out).unwrap().unwrap();
    assert_eq!(without.evictions, evictions::EvictionSummary::default());
    let text = std::fs::read_to_string(out.join("kv_cache_summary.txt")).unwrap();
    assert!(text.contains("evictions:      not known: vLLM did not serve vllm:kv_block_lifetime_seconds"), "{text}");
    let merged = std::fs::read_to_string(out.join("kv_cache_evictions.csv")).unwrap();
    assert_eq!(merged, format!("{},session\n", crate::format::kv::EVICTIONS_HEADER), "the header alone");

    let chunk = format!("{}\n5.000,10.0,2.0,1,5.000\n10.000,4.0,1.0,3,5.000\n", crate::format::kv::EVICTIONS_HEADER);
    std::fs::write(traces.join("s1/kv_cache_evictions_00001.csv"), chunk).unwrap();
    let with = summarize(std::slice::from_ref(&traces), &out).unwrap().unwrap();
    assert_eq!(
        with.evictions,
        evictions::EvictionSummary {
            intervals: 2,
            sampled_evictions: 4.0,
            mean_lifetime_sec: Some(5.5),
            mean_idle_sec: Some(1.25),
            exposed: true
        }
    );
    assert_eq!(with.samples, without.samples, "eviction rows are not usage samples");
    let merged = std::fs::read_to_string(out.join("kv_cache_evictions.csv")).unwrap();
    assert_eq!(merged.lines().nth(2), Some("10,4,1,3,5,s1"));
    let text = std::fs::read_to_string(out.join("kv_cache_summary.txt")).unwrap();
    assert!(text.contains("4 sampled blocks evicted in 2 scrape intervals; mean lifetime 5.500 s"), "{text}");
}

#[test]
fn steps_get_the_nearest_sample_within_two_intervals() {
    let row = |t: f64, u: f64| KvRow {
        timestamp_sec: t,
        usage_pct: u,
        num_blocks: None,
        total_blocks: None,
        num_requests_running: Some(t),
        num_requests_waiting: None,
        num_preemptions: None,
    };
    // Median interval 1 s: samples further than 2 s from a step do not count.
    let rows = [row(0.0, 10.0), row(1.0, 20.0), row(2.0, 30.0), row(10.0, 90.0)];
    let steps = [(1400.0, 1800.0, 400.0), (5000.0, 5000.0, 0.0), (9500.0, 10500.0, 1000.0), (-300.0, -100.0, 200.0)];
    let aligned = align_with_steps(&rows, &steps);
    let got: Vec<(Option<f64>, Option<f64>)> = aligned.iter().map(|s| (s.usage_pct, s.kv_timestamp_sec)).collect();
    assert_eq!(got, [(Some(30.0), Some(2.0)), (None, None), (Some(90.0), Some(10.0)), (Some(10.0), Some(0.0))]);
    assert_eq!(aligned[0].num_requests_running, Some(2.0));
    assert_eq!(aligned[2].duration_ms, 1000.0);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("kv_vs_step_latency.csv");
    write_kv_vs_latency_csv(&path, &aligned).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().nth(1), Some("1.400000,400,30,2,,2"));
    assert_eq!(text.lines().nth(2), Some("5.000000,0,,,,"));
    assert!(align_with_steps(&[], &steps).iter().all(|s| s.usage_pct.is_none()));
}
