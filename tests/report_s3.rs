//! `report s3://bucket/prefix` and `export chrome s3://…` (issue 19): two
//! nodes' sessions uploaded into a real S3 server (SeaweedFS), one as
//! Parquet and JSONL, one as JSONL, read straight from the store give the
//! report of the same objects synced locally, with per-node and per-pod
//! breakdowns; `--node`/`--pod`/`--since`/`--until` download only what they
//! want (the store counts say so); a wrong secret, a stopped store and a
//! missing bucket are one clear error each; a truncated object is skipped
//! and named by its key; a store that trickles a body is cut off at a
//! deadline with one clear error.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use cuda_tracer_tests::{
    s3::{s3_flags, S3Server, ACCESS_KEY, ENDPOINT, SECRET_KEY},
    *,
};
use serde_json::Value;

const BUCKET: &str = "lake";
const URL: &str = "s3://lake/test/";

/// Records one session as node `node`, pod `pod`, in `format`, and uploads it.
fn record_and_upload(root: &Path, name: &str, node: &str, pod: &str, format: &str) {
    let (traces, truth) = (root.join(name).join("traces"), root.join(name).join("truth"));
    let argv = [workload(), "--iterations".into(), "40".into(), "--step-delay-us".into(), "20000".into()];
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut cmd =
        record_cmd(&traces.join(format!("session-{name}")), &truth, &["--format", format, "--rotate-secs", "1"], &argv);
    let out = cmd.env("NODE_NAME", node).env("POD_NAME", pod).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut cmd = tracer_cmd();
    cmd.arg("upload").arg(&traces);
    s3_flags(&mut cmd, BUCKET, SECRET_KEY);
    let out = cmd.env("NODE_NAME", node).env("POD_NAME", pod).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// `cuda-tracer report <inputs> <args> --format json`, reading the store with `secret`.
fn report(inputs: &[&dyn AsRef<std::ffi::OsStr>], out: &Path, args: &[&str], secret: &str) -> Output {
    let mut cmd = tracer_cmd();
    cmd.arg("report").args(inputs.iter().map(|i| i.as_ref())).arg("--out").arg(out).args(["--format", "json"]);
    store_flags(&mut cmd, secret);
    cmd.args(args).output().expect("report")
}

fn store_flags(cmd: &mut Command, secret: &str) {
    cmd.args(["--s3-endpoint", ENDPOINT, "--s3-path-style", "--s3-timeout-secs", "5"])
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true");
}

fn json_of(output: &Output) -> Value {
    assert!(output.status.success(), "report failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("--format json prints JSON")
}

fn failure_of(output: &Output) -> String {
    assert!(!output.status.success(), "expected a failure: {}", String::from_utf8_lossy(&output.stdout));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The report less what names local or temporary paths.
fn without_paths(mut r: Value) -> Value {
    for key in ["files", "stores", "bytes"] {
        r["inputs"][key] = Value::Null;
    }
    r["inputs"]["clock_alignment"]["unbounded"] = Value::Null;
    r
}

/// The calls of `rows` (a `nodes` or `pods` section) named `name`.
fn calls_of(rows: &Value, name: &str) -> u64 {
    rows.as_array().unwrap().iter().filter(|r| r["name"] == name).map(|r| r["calls"].as_u64().unwrap()).sum()
}

fn names_in(rows: &Value) -> Vec<String> {
    let mut names: Vec<String> = rows.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().into()).collect();
    names.dedup();
    names
}

#[test]
fn reports_straight_from_the_store_equal_the_synced_objects_and_download_only_what_the_filters_want() {
    let _one_server = S3Server::lock();
    let tmp = tempfile::tempdir().unwrap();
    let mut server = S3Server::start();
    server.create_bucket(BUCKET);
    record_and_upload(tmp.path(), "a", "node-a", "pod-a", "both");
    record_and_upload(tmp.path(), "b", "node-b", "pod-b", "jsonl");

    // The objects report reads, synced: node a's Parquet lake and node b's JSONL session.
    let objects = server.objects(BUCKET, "test/");
    let synced = tmp.path().join("synced");
    for (key, bytes) in &objects {
        let path = synced.join(key.strip_prefix("test/").unwrap());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let lake_objects = objects.keys().filter(|k| k.starts_with("test/parquet/")).count() as u64;
    let b_objects = objects.keys().filter(|k| k.starts_with("test/pod-b/")).count() as u64;
    assert!(lake_objects >= 1 && b_objects >= 2, "{:?}", objects.keys());
    let (lake, pod_b) = (synced.join("parquet"), synced.join("pod-b"));
    let local = json_of(&report(&[&lake, &pod_b], &tmp.path().join("r-local"), &[], SECRET_KEY));
    let remote = json_of(&report(&[&URL], &tmp.path().join("r-s3"), &[], SECRET_KEY));
    assert_eq!(without_paths(remote.clone()), without_paths(local.clone()), "the same report from the store");
    let store = &remote["inputs"]["stores"][0];
    assert_eq!(store["url"], URL);
    assert_eq!(store["downloaded"], lake_objects + b_objects, "the lake and b's session; a's JSONL twins not: {store}");
    assert!(store["listed"].as_u64().unwrap() >= store["downloaded"].as_u64().unwrap() + 2, "{store}");
    assert!(remote["inputs"]["files"].as_array().unwrap().iter().all(|f| f.as_str().unwrap().starts_with(URL)));
    assert_eq!(names_in(&remote["nodes"]), ["node-a", "node-b"]);
    assert_eq!(names_in(&remote["pods"]), ["pod-a", "pod-b"]);
    let total = remote["inputs"]["calls"].as_u64().unwrap();
    let (a_calls, b_calls) = (calls_of(&remote["nodes"], "node-a"), calls_of(&remote["nodes"], "node-b"));
    assert!(a_calls > 0 && b_calls > 0 && a_calls + b_calls == total, "{a_calls} + {b_calls} != {total}");
    assert!(std::fs::read_to_string(tmp.path().join("r-s3/nodes.csv")).unwrap().contains("\nnode-b,cuda_"));
    assert!(std::fs::read_to_string(tmp.path().join("r-s3/pods.csv")).unwrap().starts_with("pod,type,calls,"));

    // --node: only node a's objects are downloaded (and b's metadata.json, which names its node).
    let only_a = json_of(&report(&[&URL], &tmp.path().join("r-a"), &["--node", "node-a"], SECRET_KEY));
    assert_eq!(only_a["inputs"]["calls"], a_calls);
    assert_eq!(names_in(&only_a["nodes"]), ["node-a"]);
    let store = &only_a["inputs"]["stores"][0];
    assert_eq!(store["downloaded"], lake_objects + 1, "b's trace files were not downloaded: {store}");
    assert!(store["skipped_by_filters"].as_u64().unwrap() >= b_objects - 1, "{store}");
    // The same filter over the local copy.
    let local_a = json_of(&report(&[&lake, &pod_b], &tmp.path().join("r-la"), &["--node", "node-a"], SECRET_KEY));
    assert_eq!(without_paths(local_a.clone())["functions"], without_paths(only_a.clone())["functions"]);
    assert_eq!(local_a["inputs"]["filter"]["files_left_out"], b_objects - 1);

    // --pod: the pod's session dir is the only one listed; the lake's other pods are not downloaded.
    let only_b = json_of(&report(&[&URL], &tmp.path().join("r-b"), &["--pod", "pod-b"], SECRET_KEY));
    assert_eq!((only_b["inputs"]["calls"].as_u64(), names_in(&only_b["pods"])), (Some(b_calls), vec!["pod-b".into()]));
    assert_eq!(only_b["inputs"]["stores"][0]["downloaded"], b_objects);

    // The caps: one error naming the flag to raise.
    for (flag, cap) in [("--max-object-bytes", "10"), ("--max-download-bytes", "1000")] {
        let e = failure_of(&report(&[&URL], &tmp.path().join("r-cap"), &[flag, cap], SECRET_KEY));
        assert!(e.contains(&format!("raise {flag}")) && e.contains(&format!("{cap} bytes")), "{e}");
    }

    // A time range holding nothing downloads nothing.
    let range = ["--since", "2001-01-01T00:00:00Z", "--until", "2001-01-01T01:00:00Z"];
    let e = failure_of(&report(&[&URL], &tmp.path().join("r-t"), &range, SECRET_KEY));
    assert!(e.contains("no trace file matches the filters") && e.contains("none downloaded"), "{e}");
    // A range around the calls keeps them all, locally too.
    let around = ["--since", "-1d", "--until", "-0s"];
    let all = json_of(&report(&[&URL], &tmp.path().join("r-d"), &around, SECRET_KEY));
    assert_eq!(all["inputs"]["calls"], total);
    assert_eq!(all["inputs"]["filter"]["calls_left_out"], 0);

    // Export straight from the store.
    let trace = tmp.path().join("trace.json");
    let mut cmd = tracer_cmd();
    cmd.args(["export", "chrome", URL, "--pod", "pod-b", "-o"]).arg(&trace);
    store_flags(&mut cmd, SECRET_KEY);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let export: Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let calls =
        export["traceEvents"].as_array().unwrap().iter().filter(|e| e["ph"] == "X" && e["cat"] != "step").count();
    assert_eq!(calls as u64, b_calls, "the pod's calls only");

    // A truncated object is skipped and named by its key.
    let (key, bytes) = objects.iter().find(|(k, _)| k.ends_with(".parquet")).unwrap();
    let cut_key = format!("{}/cut-00099.parquet", key.rsplit_once('/').unwrap().0);
    server.put(BUCKET, &cut_key, bytes[..bytes.len() / 2].to_vec());
    let out = report(&[&URL], &tmp.path().join("r-cut"), &[], SECRET_KEY);
    let cut = json_of(&out);
    assert_eq!(cut["inputs"]["skipped_lines"], 1);
    let skipped = cut["inputs"]["skipped"].to_string();
    assert!(skipped.contains(&format!("s3://{BUCKET}/{cut_key}")) && skipped.contains("truncated"), "{skipped}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("s3://{BUCKET}/{cut_key}")));
    assert_eq!(cut["functions"], remote["functions"], "a truncated object costs nothing else");

    // Bad input: one clear error each, never the secret.
    let secret = "not-the-secret-4f2a";
    let e = failure_of(&report(&[&URL], &tmp.path().join("r-x"), &[], secret));
    assert!(e.contains("refused the credentials") && e.contains("s3://lake/") && !e.contains(secret), "{e}");
    assert_eq!(e.lines().filter(|l| l.starts_with("error")).count(), 1, "{e}");
    let e = failure_of(&report(&[&"s3://no-such-bucket/x/"], &tmp.path().join("r-y"), &[], SECRET_KEY));
    assert!(e.contains("bucket no-such-bucket does not exist"), "{e}");
    server.down();
    let e = failure_of(&report(&[&URL], &tmp.path().join("r-z"), &[], SECRET_KEY));
    assert!(e.contains("unreachable") && e.contains("--s3-endpoint") && e.contains("s3://lake/"), "{e}");
}

/// Local inputs take the same filters: a synced JSONL session of another pod is left out.
#[test]
fn local_inputs_take_the_pod_filter_and_name_what_they_hold() {
    let (tmp, trace, truth) = scratch();
    let mut cmd = record_cmd(&trace, &truth, &[], &[&workload(), "--iterations", "5"]);
    let out = cmd.env("NODE_NAME", "node-q").env("POD_NAME", "pod-q").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let kept = json_of(&report(&[&trace], &tmp.path().join("r1"), &["--pod", "pod-q,pod-r"], SECRET_KEY));
    assert!(kept["inputs"]["calls"].as_u64().unwrap() > 0);
    assert_eq!(names_in(&kept["nodes"]), ["node-q"]);
    let e = failure_of(&report(&[&trace], &tmp.path().join("r2"), &["--node", "node-r"], SECRET_KEY));
    assert!(e.contains("node node-q pod pod-q"), "{e}");
    let _: PathBuf = trace;
}

/// The lake object the trickling store lists.
const TRICKLED_KEY: &str = "test/parquet/date=2026-12-04/hour=01/node=n1/pod=p1/s1-00001.parquet";

/// `%XX` escapes of a query value decoded.
fn percent_decoded(v: &str) -> String {
    let mut out = Vec::new();
    let mut bytes = v.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex: String = bytes.by_ref().take(2).map(char::from).collect();
                out.push(u8::from_str_radix(&hex, 16).unwrap());
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).unwrap()
}

/// One connection of the trickling store: a listing holds [`TRICKLED_KEY`]
/// (64 bytes) under a matching prefix; its body comes a byte every 500 ms.
fn trickle_connection(stream: std::net::TcpStream) {
    use std::io::{BufRead, BufReader, Write};
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            head.push(line);
        }
        let target = head[0].split(' ').nth(1).unwrap_or_default().to_string();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        if path.trim_end_matches('/') == "/lake" {
            let param =
                |name: &str| query.split('&').find_map(|kv| kv.strip_prefix(&format!("{name}="))).map(percent_decoded);
            let prefix = param("prefix").unwrap_or_default();
            let listed = param("delimiter").is_none() && TRICKLED_KEY.starts_with(&prefix);
            let contents = if listed {
                format!("<Contents><Key>{TRICKLED_KEY}</Key><Size>64</Size></Contents>")
            } else {
                String::new()
            };
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <Name>lake</Name><Prefix>{prefix}</Prefix><KeyCount>{}</KeyCount><MaxKeys>1000</MaxKeys>\
                 <IsTruncated>false</IsTruncated>{contents}</ListBucketResult>",
                usize::from(listed)
            );
            let head =
                format!("HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n", body.len());
            if stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(body.as_bytes())).is_err() {
                return;
            }
            continue;
        }
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 64\r\n\r\n");
        for _ in 0..64 {
            std::thread::sleep(std::time::Duration::from_millis(500));
            if stream.write_all(b"P").is_err() {
                return;
            }
        }
    }
}

/// A store that answers at once and then trickles an object's body (each
/// byte in time for any per-read timeout) gets one clear error naming the
/// object and the timeout flag, instead of holding the report.
#[test]
fn a_trickling_store_gets_a_clear_error_not_a_hang() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || trickle_connection(stream));
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = tracer_cmd();
    cmd.arg("report").arg(URL).arg("--out").arg(tmp.path().join("r"));
    cmd.args(["--s3-endpoint", &endpoint, "--s3-path-style", "--s3-timeout-secs", "2"])
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let e = failure_of(&cmd.output().unwrap());
    assert!(e.contains(&format!("s3://{BUCKET}/{TRICKLED_KEY}")) && e.contains("did not arrive within 2 s"), "{e}");
    assert!(e.contains("--s3-timeout-secs"), "{e}");
}
