//! Issue 15, findings 6 and 8, performed as described against the real
//! binary with real BPF: `upload` on a session a live tracer writes, a full
//! tmpfs under `record` and `run`, a tracer killed with SIGKILL, and a
//! traced command line carrying `--api-key`.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use cuda_tracer_tests::{
    s3::{s3_flags, S3Server, SECRET_KEY},
    *,
};
use serde_json::Value;

/// A small tmpfs mounted at `dir`, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let status =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).status();
        assert!(status.unwrap().success(), "mount a tmpfs at {} (tests run as root)", dir.display());
        Self(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return BTreeSet::new() };
    entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

fn metadata(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("metadata.json")).unwrap()).expect("metadata.json is JSON")
}

/// Lines in the session's trace files, `.partial` ones included.
fn lines_on_disk(dir: &Path) -> u64 {
    let is_trace = |n: &str| n.trim_start_matches('.').starts_with("trace_");
    names_in(dir)
        .iter()
        .filter(|n| is_trace(n.as_str()))
        .map(|n| std::fs::read(dir.join(n)).unwrap())
        .map(|b| b.iter().filter(|c| **c == b'\n').count() as u64)
        .sum()
}

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn upload_refuses_a_session_a_live_tracer_writes() {
    let _one_server = S3Server::lock();
    let tmp = tempfile::tempdir().unwrap();
    let (traces, truth, go) = (tmp.path().join("traces"), tmp.path().join("truth"), tmp.path().join("go"));
    let session = traces.join("live");
    std::fs::create_dir_all(&truth).unwrap();
    // One thread calling every 20 ms for several seconds, files rotated each second.
    let mut cmd = tracer_cmd();
    cmd.args(["record", "--rotate-secs", "1", "-o"])
        .arg(&session)
        .arg("--")
        .arg(workload())
        .args(["--no-child", "--threads", "1", "--iterations", "400", "--step-delay-us", "20000", "--wait-for-file"])
        .arg(&go)
        .env("CUDA_FIXTURE_TRUTH_DIR", &truth)
        .env("LD_LIBRARY_PATH", fixtures());
    let (mut tracer, log) = spawn_with_log(cmd);
    wait_for("the session's metadata", Duration::from_secs(90), || session.join("metadata.json").exists());
    std::fs::write(&go, b"").unwrap();
    wait_for("a closed file and an open one", Duration::from_secs(30), || {
        let names = names_in(&session);
        names.iter().any(|n| n.starts_with("trace_")) && names.iter().any(|n| n.ends_with(".partial"))
    });

    let server = S3Server::start();
    server.create_bucket("traces");
    let before = names_in(&session);
    for dir in [&traces, &session] {
        let mut upload = tracer_cmd();
        upload.arg("upload").arg(dir);
        s3_flags(&mut upload, "traces", SECRET_KEY);
        let out = upload.output().unwrap();
        let said = text(&out);
        assert_eq!(out.status.code(), Some(1), "refused: {said}");
        assert!(
            said.contains(&format!("error: {} is still being written by a running tracer", session.display()))
                && said.contains(".session.lock")
                && said.contains("Upload it once that tracer has ended"),
            "the refusal names the session, the lock and the fix: {said}"
        );
    }
    let stored: Vec<String> = server.objects("traces", "").into_keys().collect();
    assert!(stored.is_empty(), "nothing of the live session was uploaded: {stored:?}");
    let after = names_in(&session);
    assert!(before.iter().filter(|n| !n.ends_with(".partial")).all(|n| after.contains(n)), "nothing deleted");
    assert!(after.iter().all(|n| !n.starts_with('.') || n.ends_with(".partial") || n == ".session.lock"));

    // The session ends on its own; every call of the workload is in its files.
    let status = wait_with_deadline(&mut tracer.0, Duration::from_secs(90));
    assert!(status.success(), "{}", log.lock().unwrap());
    let trace = load_trace(&session);
    assert_eq!(trace.lines.len(), load_truth(&truth).len(), "every line intact");
    assert_eq!(trace.metadata["status"], "finished");
    // Once the writer is gone, upload takes the session.
    let mut upload = tracer_cmd();
    upload.arg("upload").arg(&traces);
    s3_flags(&mut upload, "traces", SECRET_KEY);
    let out = upload.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(server.objects("traces", "test/node-1/live/").len() > 1);
}

#[test]
fn a_full_disk_under_record_is_counted_fails_the_exit_and_leaves_a_readable_session() {
    let tmp = tempfile::tempdir().unwrap();
    let (truth, reports) = (tmp.path().join("truth"), tmp.path().join("report"));
    let full = Tmpfs::mount(&tmp.path().join("full"), "256k");
    let session = full.0.join("s1");
    std::fs::create_dir_all(&truth).unwrap();
    let out = tracer_cmd()
        .arg("record")
        .arg("-o")
        .arg(&session)
        .arg("--")
        .args([&workload(), "--iterations", "200"])
        .env("CUDA_FIXTURE_TRUTH_DIR", &truth)
        .env("LD_LIBRARY_PATH", fixtures())
        .output()
        .unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(3), "lines lost: exit 3\n{said}");

    let made = load_truth(&truth).len() as u64;
    let m = metadata(&session);
    let lost = m["counts"]["write_errors"].as_u64().unwrap();
    let written = lines_on_disk(&session);
    assert!(lost > made / 2, "the disk filled early: {lost} of {made} lost");
    assert_eq!(m["status"], "finished", "metadata.json never stays running");
    assert_eq!(written + m["dropped_events"].as_u64().unwrap(), made, "every call written or counted lost");
    let files_lines: u64 = m["files"].as_array().unwrap().iter().map(|f| f["lines"].as_u64().unwrap()).sum();
    assert_eq!(files_lines, written, "metadata.json names the lines that reached the files");
    assert!(said.contains(&format!("write errors: {lost}")), "the summary counts them: {said}");
    assert!(said.contains(&format!("error: {lost} trace line(s) could not be written")), "{said}");

    // Only whole lines reached the files, and report reads them.
    let trace = load_trace(&session);
    assert_eq!(trace.lines.len() as u64, written);
    let report = tracer_cmd().arg("report").arg(&session).arg("--out").arg(&reports).output().unwrap();
    assert!(report.status.success(), "{}", text(&report));
    let json: Value = serde_json::from_slice(&std::fs::read(reports.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["inputs"]["calls"].as_u64(), Some(written));
}

#[test]
fn a_full_disk_under_run_is_counted_in_metrics_and_fails_the_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let full = Tmpfs::mount(&tmp.path().join("full"), "256k");
    let (workload, truth, go) = held_workload(tmp.path(), &["--iterations", "200"]);
    let port = free_port();
    let mut cmd = tracer_cmd();
    cmd.args(["run", "--no-upload", "--metrics-addr", &format!("127.0.0.1:{port}"), "--pid"])
        .arg(workload.0.id().to_string())
        .arg("--trace-dir")
        .arg(&full.0);
    let (mut tracer, log) = spawn_with_log(cmd);
    wait_attached("the workload's libraries", &full.0, &["libcudart.so.12", "libcuda.so.1"]);
    std::fs::write(&go, b"").unwrap();
    let mut workload = workload;
    assert!(wait_with_deadline(&mut workload.0, Duration::from_secs(60)).success());
    let lost_in_metrics = || {
        let (_, body) = http_get(port, "/metrics").unwrap_or_default();
        body.lines()
            .find(|l| l.starts_with("cuda_tracer_dropped_events{kind=\"write_errors\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    wait_for("/metrics to count lost lines", Duration::from_secs(30), || lost_in_metrics() > 0);
    signal(&tracer.0, libc::SIGTERM);
    let status = wait_with_deadline(&mut tracer.0, Duration::from_secs(60));
    let said = log.lock().unwrap().clone();
    assert_eq!(status.code(), Some(3), "{said}");
    let session = session_dir(&full.0).unwrap();
    let m = metadata(&session);
    assert_eq!(m["status"], "finished");
    let lost = m["counts"]["write_errors"].as_u64().unwrap();
    assert!(lost > 0 && lost >= lost_in_metrics(), "metadata {lost}, metrics {}", lost_in_metrics());
    assert_eq!(lines_on_disk(&session) + m["dropped_events"].as_u64().unwrap(), load_truth(&truth).len() as u64);
}

/// A record session whose command keeps running after its calls, killed
/// with SIGKILL once some lines reached its open file.
fn killed_session(tmp: &Path, extra_env: &[(&str, &str)]) -> PathBuf {
    let (session, truth) = (tmp.join("s1"), tmp.join("truth"));
    std::fs::create_dir_all(&truth).unwrap();
    let mut cmd = tracer_cmd();
    // Launches only: few probes, so the killed tracer's exit (which removes
    // them, about 0.1 s each) is short.
    cmd.args(["record", "--functions", "launch", "-o"])
        .arg(&session)
        .arg("--")
        .args([&workload(), "--iterations", "1000", "--linger-ms", "20000"])
        .env("CUDA_FIXTURE_TRUTH_DIR", &truth)
        .env("LD_LIBRARY_PATH", fixtures())
        .envs(extra_env.iter().copied());
    let (mut tracer, _log) = spawn_with_log(cmd);
    wait_for("lines in the open trace file", Duration::from_secs(90), || {
        names_in(&session).iter().any(|n| n.ends_with(".jsonl.partial")) && lines_on_disk(&session) > 0
    });
    assert_eq!(metadata(&session)["status"], "running");
    let traced: Vec<u64> =
        metadata(&session)["processes"].as_array().unwrap().iter().filter_map(|p| p["pid"].as_u64()).collect();
    signal(&tracer.0, libc::SIGKILL);
    // The kernel removes the dead tracer's uprobes as it closes its files
    // (about 0.1 s each), before the process is gone.
    let _ = wait_with_deadline(&mut tracer.0, Duration::from_secs(300));
    for pid in traced {
        // SAFETY: kill has no memory-safety preconditions; the lingering workload goes.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    wait_for("the watchdog's mark", Duration::from_secs(30), || metadata(&session)["status"] != "running");
    session
}

#[test]
fn a_tracer_killed_with_sigkill_leaves_its_session_killed_and_readable() {
    for env in [&[][..], &[("CUDA_TRACER_LOAD_WATCH", "0")][..]] {
        let tmp = tempfile::tempdir().unwrap();
        let session = killed_session(tmp.path(), env);
        let m = metadata(&session);
        assert_eq!(m["status"], "killed", "{env:?}");
        assert!(m["end_wall_clock"].is_null());
        // The lock died with the tracer: report reads the .partial file and says so.
        let reports = tmp.path().join("report");
        let out = tracer_cmd().arg("report").arg(&session).arg("--out").arg(&reports).output().unwrap();
        let said = text(&out);
        assert!(out.status.success(), "{said}");
        assert!(said.contains("reading 1 half-written trace file(s)") && said.contains(".partial"), "{said}");
        let json: Value = serde_json::from_slice(&std::fs::read(reports.join("report.json")).unwrap()).unwrap();
        assert!(json["inputs"]["calls"].as_u64().unwrap() > 0);
    }
}

#[test]
fn secret_values_on_command_lines_are_redacted_unless_kept() {
    // `; true`: the shell stays (a lone command would be exec'd in its
    // place), so its command line with the secrets is there to be read.
    let argv =
        ["sh", "-c", "sleep 0.3; true", "sh", "--api-key", "sk-live-123", "--api-key=sk-live-456", "HF_TOKEN=hf_abc"];
    for keep in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let session = tmp.path().join("s1");
        let mut cmd = tracer_cmd();
        cmd.arg("record").arg("-o").arg(&session).arg("--").args(argv);
        if keep {
            cmd.env("KEEP_CMDLINE_SECRETS", "true");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let raw = std::fs::read_to_string(session.join("metadata.json")).unwrap();
        let m: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(m["cmdlines_redacted"], !keep);
        let cmdlines: Vec<&str> =
            m["processes"].as_array().unwrap().iter().map(|p| p["cmdline"].as_str().unwrap()).collect();
        assert!(cmdlines.iter().any(|c| c.contains("--api-key")), "{cmdlines:?}");
        if keep {
            assert_eq!(m["command"], serde_json::json!(argv));
            assert!(raw.contains("sk-live-123") && raw.contains("hf_abc"));
        } else {
            assert_eq!(
                m["command"],
                serde_json::json!([
                    "sh",
                    "-c",
                    "sleep 0.3; true",
                    "sh",
                    "--api-key",
                    "[REDACTED]",
                    "--api-key=[REDACTED]",
                    "HF_TOKEN=[REDACTED]"
                ])
            );
            for secret in ["sk-live", "hf_abc"] {
                assert!(!raw.contains(secret), "{secret} in metadata.json:\n{raw}");
            }
        }
    }
}
