//! Uploads against an S3 endpoint that accepts connections and never
//! answers (issue 15, finding 7): `upload` ends at `--upload-deadline-secs`
//! with the uploads in flight cancelled, or sooner through
//! `--s3-timeout-secs`; the daemon's shutdown ends at its deadline too.
//! Every file stays on disk and the summary says so. A hang is a failure
//! only past a generous bound; no other timing is asserted.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use cuda_tracer_tests::{
    s3::{s3_flags_at, SECRET_KEY},
    *,
};

/// Past this, the command hangs.
const HANG: Duration = Duration::from_secs(60);

/// A store that accepts every connection and never reads or answers;
/// returns its endpoint and how many connections it took.
fn black_hole() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    (endpoint, accepted)
}

/// A black-hole store and a recorded session waiting to go up to it.
struct Stuck {
    endpoint: String,
    /// Connections the store took.
    accepted: Arc<AtomicUsize>,
    tmp: tempfile::TempDir,
    session: PathBuf,
    /// The session dir's names before anything ran.
    before: Vec<String>,
}

fn stuck() -> Stuck {
    let (endpoint, accepted) = black_hole();
    let tmp = tempfile::tempdir().unwrap();
    let (session, _truth) = recorded_session(tmp.path());
    let before = listing(&session);
    Stuck { endpoint, accepted, tmp, session, before }
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// How many of `names` are files delivery uploads.
fn deliverable(names: &[String]) -> usize {
    names.iter().filter(|n| (n.starts_with("trace_") && n.ends_with(".jsonl")) || *n == "metadata.json").count()
}

/// Runs `cuda-tracer upload <session> <extra>` against `endpoint` to its
/// end (a failure past [`HANG`]): its exit code and stdout.
fn upload(session: &Path, endpoint: &str, extra: &[&str]) -> (Option<i32>, String) {
    let mut cmd = tracer_cmd();
    cmd.arg("upload").arg(session).args(extra).stdout(Stdio::piped()).stderr(Stdio::inherit());
    s3_flags_at(&mut cmd, endpoint, "traces", SECRET_KEY);
    let mut child = cmd.spawn().expect("start cuda-tracer upload");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).expect("stdout");
        text
    });
    let (status, _) = exit_and_peak_rss(KillOnDrop(child), HANG);
    (status.code(), reader.join().expect("stdout reader"))
}

/// The number before `what` in `summary` ("… 3 cancelled at the deadline …").
fn count_before(summary: &str, what: &str) -> usize {
    let head = summary.split(what).next().expect("summary");
    head.split_whitespace().last().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no count: {summary}"))
}

#[test]
fn upload_to_a_black_hole_ends_at_its_deadline_and_keeps_every_file() {
    let Stuck { endpoint, accepted, tmp: _tmp, session, before } = stuck();
    let (code, summary) = upload(&session, &endpoint, &["--upload-deadline-secs", "5"]);
    assert_eq!(code, Some(1), "{summary}");
    assert!(accepted.load(Ordering::SeqCst) > 0, "the store was reached");
    assert!(summary.starts_with("uploaded 0 file(s)"), "{summary}");
    assert!(count_before(&summary, " cancelled at the deadline") > 0, "{summary}");
    assert_eq!(count_before(&summary, " left on disk"), deliverable(&before), "{summary}");
    assert_eq!(listing(&session), before, "every file stays on disk");
}

#[test]
fn the_request_timeout_ends_an_upload_to_a_black_hole_without_a_deadline() {
    let Stuck { endpoint, accepted: _, tmp: _tmp, session, before } = stuck();
    let flags = ["--s3-timeout-secs", "1", "--upload-deadline-secs", "3600"];
    let (code, summary) = upload(&session, &endpoint, &flags);
    assert_eq!(code, Some(1), "{summary}");
    assert_eq!(count_before(&summary, " cancelled at the deadline"), 0, "{summary}");
    assert_eq!(count_before(&summary, " failed"), deliverable(&before), "{summary}");
    assert_eq!(listing(&session), before, "every file stays on disk");
}

#[test]
fn the_daemon_stops_at_its_deadline_with_uploads_stuck_in_a_black_hole() {
    let Stuck { endpoint, accepted, tmp, session, before } = stuck();
    let mut cmd = tracer_cmd();
    cmd.args(["run", "--pid", "1", "--target-process", "^none$", "--upload-deadline-secs", "5"])
        .args(["--upload-interval-secs", "1"])
        .arg("--trace-dir")
        .arg(tmp.path().join("traces"))
        .env("RUST_LOG", "info");
    s3_flags_at(&mut cmd, &endpoint, "traces", SECRET_KEY);
    let (mut daemon, log) = spawn_with_log(cmd);
    // The files an earlier run left go up first: those uploads are stuck.
    wait_for("uploads in flight", Duration::from_secs(90), || accepted.load(Ordering::SeqCst) > 0);
    signal(&daemon.0, libc::SIGTERM);
    let status = wait_with_deadline(&mut daemon.0, HANG);
    let log = log.lock().unwrap().clone();
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("upload cancelled at the deadline; the file stays on disk"), "{log}");
    assert!(log.contains("cancelled_at_deadline="), "{log}");
    assert_eq!(listing(&session), before, "every file stays on disk");
}
