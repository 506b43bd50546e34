//! Which files delivery uploads, repairs or leaves, and in what order.

use super::*;

#[test]
fn every_file_has_one_kind() {
    let kinds =
        ["trace_00001_20260101T000000Z.jsonl", "kv_cache_usage_00002.csv", "metadata.json", "kv_cache_usage.csv"]
            .map(FileKind::of);
    assert_eq!(kinds, [FileKind::Trace, FileKind::KvChunk, FileKind::Metadata, FileKind::Other]);
    assert_eq!(kinds.map(FileKind::is_data), [true, true, false, false]);
    let parquet = FileKind::of(&names::parquet_trace_file(1, "20260101T000000Z"));
    assert_eq!((parquet, parquet.is_data(), parquet.is_lines()), (FileKind::Parquet, true, false));
    let export = FileKind::of(names::STEP_WINDOW_EXPORT);
    assert_eq!((export, export.is_data(), export.is_kept()), (FileKind::StepExport, false, true));
}

#[test]
fn delivery_uploads_what_the_disk_budget_counts() {
    let trace = names::trace_file(1, "20260101T000000Z");
    for name in [trace.as_str(), "kv_cache_usage_00002.csv", "metadata.json", "kv_cache_usage.csv", "notes.txt"] {
        assert_eq!(FileKind::of(name).is_data(), names::is_data_file(name), "{name}");
    }
}

#[test]
fn partial_files_of_other_sessions_are_repaired_to_their_last_full_line() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old-session");
    let live = dir.path().join("live-session");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::create_dir_all(&live).unwrap();
    std::fs::write(old.join(".trace_00003_x.jsonl.partial"), b"{\"a\":1}\n{\"a\":2}\n{\"a\":").unwrap();
    std::fs::write(live.join(".trace_00001_x.jsonl.partial"), b"{\"a\":1}\n{\"b\"").unwrap();
    let fixed = repair_partials(dir.path(), std::slice::from_ref(&live));
    assert_eq!(fixed, vec![old.join("trace_00003_x.jsonl")]);
    assert_eq!(std::fs::read(&fixed[0]).unwrap(), b"{\"a\":1}\n{\"a\":2}\n");
    assert!(live.join(".trace_00001_x.jsonl.partial").exists(), "the live session is untouched");
}

#[test]
fn pending_lists_closed_traces_before_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("s1");
    std::fs::create_dir_all(&s).unwrap();
    for f in [
        "metadata.json",
        "trace_00002_b.jsonl",
        "trace_00001_a.jsonl",
        ".trace_00003_c.jsonl.partial",
        "kv_cache_usage_00001.csv",
        ".kv_cache_usage_00002.csv.partial",
    ] {
        std::fs::write(s.join(f), b"x\n").unwrap();
    }
    let names: Vec<String> = pending(dir.path(), None).into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["kv_cache_usage_00001.csv", "trace_00001_a.jsonl", "trace_00002_b.jsonl", "metadata.json"]);
    // A crash's open KV chunk is repaired like a trace file.
    let mut fixed = repair_partials(dir.path(), &[]);
    fixed.sort();
    assert_eq!(fixed, [s.join("kv_cache_usage_00002.csv"), s.join("trace_00003_c.jsonl")]);
    // A session dir given directly is its own session.
    assert_eq!(pending(&s, None)[0].session, "s1");
}

#[test]
fn a_session_another_tracer_holds_is_neither_repaired_nor_listed() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    std::fs::write(live.join("trace_00001_a.jsonl"), b"{}\n").unwrap();
    std::fs::write(live.join(".trace_00002_a.jsonl.partial"), b"{}\n{").unwrap();
    let lock = session_lock::SessionLock::acquire(&live).unwrap();
    assert_eq!(live_sessions(dir.path(), None), std::slice::from_ref(&live));
    assert!(repair_partials(dir.path(), &[]).is_empty());
    assert!(pending(dir.path(), None).is_empty() && pending(&live, None).is_empty());
    assert_eq!(pending(dir.path(), Some("live")).len(), 1, "the daemon uploads its own closed files");
    assert_eq!(std::fs::read(live.join(".trace_00002_a.jsonl.partial")).unwrap(), b"{}\n{");
    drop(lock);
    assert!(live_sessions(dir.path(), None).is_empty());
    assert_eq!(repair_partials(dir.path(), &[]), [live.join("trace_00002_a.jsonl")]);
}

#[test]
fn backoff_grows() {
    assert!(backoff(1) >= Duration::from_millis(500) && backoff(1) < Duration::from_millis(751));
    assert!(backoff(3) >= Duration::from_secs(2));
}
