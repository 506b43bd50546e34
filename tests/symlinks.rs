//! Symlinks planted in a trace dir are never followed by the root tracer:
//! `upload` neither truncates, uploads nor deletes what they point at, and
//! `GET /readyz` creates and truncates nothing. Each attack as a tenant would
//! plant it, against the real binary and a real S3 server.

use std::{os::unix::fs::symlink, path::Path, time::Duration};

use cuda_tracer_tests::{
    s3::{s3_flags, S3Server, SECRET_KEY},
    *,
};

const VICTIM: &[u8] = b"host file line 1\nhost file, no newline";

fn victim(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, VICTIM).unwrap();
}

#[test]
fn upload_follows_no_planted_symlink() {
    let _one_server = S3Server::lock();
    let tmp = tempfile::tempdir().unwrap();
    let (traces, outside) = (tmp.path().join("traces"), tmp.path().join("outside"));
    let session = traces.join("s1");
    std::fs::create_dir_all(&session).unwrap();
    std::fs::write(session.join("metadata.json"), b"{}").unwrap();
    std::fs::write(session.join("trace_00001_a.jsonl"), b"{\"own\":1}\n").unwrap();
    // A `.partial` symlink (the repair would truncate its target), a closed-name
    // symlink (upload would read its target) and a symlinked session dir
    // (upload would ship and then delete files in another directory).
    victim(&outside.join("partial-target"));
    victim(&outside.join("trace-target"));
    victim(&outside.join("elsewhere").join("trace_00001_b.jsonl"));
    symlink(outside.join("partial-target"), session.join(".trace_00002_a.jsonl.partial")).unwrap();
    symlink(outside.join("trace-target"), session.join("trace_00003_a.jsonl")).unwrap();
    symlink(outside.join("elsewhere"), traces.join("s2")).unwrap();

    let server = S3Server::start();
    server.create_bucket("traces");
    let mut cmd = tracer_cmd();
    cmd.arg("upload").arg(&traces).env("RUST_LOG", "info");
    s3_flags(&mut cmd, "traces", SECRET_KEY);
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");

    for target in ["partial-target", "trace-target", "elsewhere/trace_00001_b.jsonl"] {
        assert_eq!(std::fs::read(outside.join(target)).unwrap(), VICTIM, "{target} untouched");
    }
    let keys: Vec<String> = server.objects("traces", "").into_keys().collect();
    assert_eq!(keys, ["test/node-1/s1/metadata.json", "test/node-1/s1/trace_00001_a.jsonl"], "only real files");
    // The links themselves stay; the tracer's own file went up and left.
    assert!(session.join("trace_00003_a.jsonl").symlink_metadata().is_ok());
    assert!(!session.join("trace_00001_a.jsonl").exists());
    for link in ["s1/.trace_00002_a.jsonl.partial", "s1/trace_00003_a.jsonl", "s2"] {
        let shown = traces.join(link).display().to_string();
        assert!(
            text.lines().any(|l| l.contains("skipping a symlink") && l.contains(&shown)),
            "the skip of {link} is logged:\n{text}"
        );
    }
}

#[test]
fn readyz_writes_nothing_in_the_trace_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let traces = tmp.path().join("traces");
    std::fs::create_dir_all(&traces).unwrap();
    let target = tmp.path().join("outside").join("host-file");
    victim(&target);
    symlink(&target, traces.join(".readyz")).unwrap();
    let (workload, _truth, _go) = held_workload(tmp.path(), &["--iterations", "1"]);
    let pid = workload.0.id().to_string();
    let port = free_port();
    let mut cmd = tracer_cmd();
    cmd.args([
        "run",
        "--no-upload",
        "--pid",
        &pid,
        "--target-process",
        "^none$",
        "--metrics-addr",
        &format!("127.0.0.1:{port}"),
    ])
    .arg("--trace-dir")
    .arg(&traces);
    let (mut daemon, _log) = spawn_with_log(cmd);
    wait_for("/readyz to answer 200", Duration::from_secs(90), || {
        http_get(port, "/readyz").is_some_and(|(status, _)| status == 200)
    });
    for _ in 0..3 {
        assert_eq!(http_get(port, "/readyz").map(|r| r.0), Some(200));
    }
    assert_eq!(std::fs::read(&target).unwrap(), VICTIM, "the link's target is untouched");
    assert!(traces.join(".readyz").symlink_metadata().unwrap().file_type().is_symlink(), "the link is left as it was");
    signal(&daemon.0, libc::SIGTERM);
    assert!(wait_with_deadline(&mut daemon.0, Duration::from_secs(90)).success());
}

#[test]
fn a_symlink_at_the_session_path_is_refused() {
    let (tmp, elsewhere) = scratch_with_dir("elsewhere");
    let out = tmp.path().join("session");
    symlink(&elsewhere, &out).unwrap();
    let result = tracer_cmd()
        .args(["record", "-o"])
        .arg(&out)
        .args(["--", &workload(), "--no-child", "--iterations", "1"])
        .env("LD_LIBRARY_PATH", fixtures())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success() && text.contains("symlink"), "{text}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0, "nothing written through the link");
}

#[test]
fn planted_probe_and_metadata_links_are_not_written_through() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, truth) = (tmp.path().join("session"), tmp.path().join("truth"));
    std::fs::create_dir_all(&out).unwrap();
    let targets = [tmp.path().join("outside").join("a"), tmp.path().join("outside").join("b")];
    for (target, name) in targets.iter().zip([".write-test", ".metadata.json.partial"]) {
        victim(target);
        symlink(target, out.join(name)).unwrap();
    }
    let result = record(&out, &truth, &[], &[&workload(), "--no-child", "--iterations", "2"]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    for target in &targets {
        assert_eq!(std::fs::read(target).unwrap(), VICTIM, "{} untouched", target.display());
    }
    assert!(out.join("metadata.json").symlink_metadata().unwrap().is_file());
}
