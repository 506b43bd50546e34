//! The daemon against hostile network peers (issue 15, finding 5): a vLLM
//! endpoint whose `/metrics` answer never ends, and a flood of idle and
//! slow-header connections to the metrics server of a daemon with 256 file
//! descriptors. The daemon stays up in bounded memory, counts and logs what
//! it refused, and every traced call still reaches the trace file.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use cuda_tracer_tests::*;
use serde_json::Value;

/// A fake vLLM whose `/metrics` answer never ends: a 200 head, then comment
/// lines as fast as the socket takes them until the client hangs up.
/// Returns its port and how many scrapes it answered.
fn endless_metrics() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let served = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&served);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || endless_answer(stream));
        }
    });
    (port, served)
}

fn endless_answer(mut stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
        line.clear();
    }
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nConnection: close\r\n\r\n";
    let chunk = "# HELP vllm:padding a page that never ends\n".repeat(4096);
    if stream.write_all(head.as_bytes()).is_ok() {
        while stream.write_all(chunk.as_bytes()).is_ok() {}
    }
}

/// The value of the sample `name` on a `/metrics` page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

/// The daemon's memory may not grow with what the endpoint sends: one
/// capped page (8 MiB) on top of an idle daemon (87 MiB measured, debug
/// build; 105 MiB peak under this attack). Reading the endless page to its
/// timeout, as before, took gigabytes.
const MAX_PEAK_RSS: u64 = 256 << 20;

#[test]
fn an_endless_metrics_page_is_cut_off_counted_and_memory_stays_bounded() {
    let (vllm, served) = endless_metrics();
    let (tmp, traces) = scratch_with_dir("traces");
    let port = free_port();
    let mut cmd = tracer_cmd();
    cmd.args(["run", "--pid", "1", "--target-process", "^none$", "--no-upload", "--metrics-interval", "5"])
        .args(["--vllm-metrics-url", &format!("http://127.0.0.1:{vllm}/metrics")])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .arg("--trace-dir")
        .arg(&traces)
        .env("RUST_LOG", "info");
    let (daemon, log) = spawn_with_log(cmd);
    let refused = r#"cuda_tracer_vllm_scrape_errors_total{kind="too_large"}"#;
    wait_for("two scrapes cut off", Duration::from_secs(90), || {
        http_get(port, "/metrics").and_then(|(_, page)| sample(&page, refused)).is_some_and(|n| n >= 2.0)
    });
    assert!(served.load(Ordering::SeqCst) >= 2);
    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200), "still serving");
    signal(&daemon.0, libc::SIGTERM);
    let (status, peak) = exit_and_peak_rss(daemon, Duration::from_secs(60));
    let log = log.lock().unwrap().clone();
    eprintln!("daemon peak RSS: {} KiB", peak >> 10);
    assert!(status.success(), "{status}\n{log}");
    assert!(peak < MAX_PEAK_RSS, "peak RSS {} KiB over {} KiB", peak >> 10, MAX_PEAK_RSS >> 10);
    assert!(log.contains("sent more than 8388608 bytes; the page is refused unread"), "{log}");
    let session = session_dir(&traces).expect("session dir");
    let metadata: Value =
        serde_json::from_str(&std::fs::read_to_string(session.join("metadata.json")).unwrap()).unwrap();
    let kv = &metadata["kv_cache"];
    assert!(kv["scrape_errors"]["too_large"].as_u64().is_some_and(|n| n >= 2), "{kv}");
    assert_eq!(kv["scrapes"], 0, "{kv}");
    drop(tmp);
}

/// Keeps `connections` connections open to a server: half idle, half
/// sending an endless request head a byte at a time. Closed ones are
/// replaced (a few per round), until stopped.
struct Flood {
    stop: Arc<AtomicBool>,
    /// Connections made so far.
    opened: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<()>,
}

impl Flood {
    fn start(port: u16, connections: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, opened) = (Arc::clone(&stop), Arc::new(AtomicUsize::new(0)));
        let made = Arc::clone(&opened);
        let thread = std::thread::spawn(move || {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut open: Vec<(TcpStream, bool)> = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                for _ in 0..50.min(connections - open.len()) {
                    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else { break };
                    let slow = open.len() % 2 == 1;
                    if slow {
                        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ");
                    }
                    s.set_nonblocking(true).expect("nonblocking");
                    open.push((s, slow));
                    made.fetch_add(1, Ordering::Relaxed);
                }
                open.retain_mut(|(s, slow)| {
                    let gone = |r: std::io::Result<usize>| match r {
                        Ok(n) => n == 0,
                        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                    };
                    let closed = gone(s.read(&mut [0u8; 1024])) || (*slow && gone(s.write(b"a").map(|_| 1)));
                    !closed
                });
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Self { stop, opened, thread }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("flood thread");
    }
}

#[test]
fn idle_and_slow_header_connections_never_starve_trace_files() {
    let tmp = tempfile::tempdir().unwrap();
    let traces = tmp.path().join("traces");
    let args = ["--no-child", "--threads", "2", "--iterations", "300", "--step-delay-us", "20000"];
    let (mut workload, truth, go) = held_workload(tmp.path(), &args);
    let port = free_port();
    let mut cmd = tracer_cmd();
    cmd.args(["run", "--pid", &workload.0.id().to_string(), "--target-process", "^none$", "--no-upload"])
        .args(["--rotate-secs", "1", "--metrics-addr", &format!("127.0.0.1:{port}")])
        .arg("--trace-dir")
        .arg(&traces)
        .env("RUST_LOG", "info");
    // SAFETY: only setrlimit, which is async-signal-safe, runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: 256, rlim_max: 256 };
            match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let (mut daemon, log) = spawn_with_log(cmd);
    wait_for("the daemon to attach", Duration::from_secs(90), || {
        log.lock().unwrap().matches("attached path=").count() >= 2
    });
    let flood = Flood::start(port, 600);
    // Past the descriptors the daemon has spare (256, less ~170 for the probes
    // and the rest), and past its connection cap.
    wait_for("the flood's connections", Duration::from_secs(60), || flood.opened.load(Ordering::Relaxed) >= 150);
    std::fs::write(&go, "").unwrap();
    assert!(wait_with_deadline(&mut workload.0, Duration::from_secs(120)).success());
    flood.stop();

    // Served again once the flood ends.
    let mut page = String::new();
    wait_for("/metrics to answer", Duration::from_secs(60), || {
        page = http_get(port, "/metrics").map(|r| r.1).unwrap_or_default();
        page.contains("cuda_tracer_calls_total")
    });
    // An idle connection is closed by the server, not kept.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    assert_eq!(idle.read(&mut [0u8; 64]).expect("closed within 60 s"), 0);

    signal(&daemon.0, libc::SIGTERM);
    let status = wait_with_deadline(&mut daemon.0, Duration::from_secs(60));
    let log = log.lock().unwrap().clone();
    assert!(status.success(), "{status}\n{log}");
    assert!(!log.contains("trace line not written"), "{log}");
    let trace = load_trace(&session_dir(&traces).expect("session dir"));
    assert!(trace.files.len() >= 2, "rotated under the flood: {:?}", trace.files);
    assert_matches_truth(&trace.lines, &load_truth(&truth), false);
    let counts = &trace.metadata["counts"];
    assert_eq!(counts["write_errors"], 0, "{counts}");
    assert_eq!(trace.metadata["dropped_events"], 0, "{}", trace.metadata);
    // The refusals are counted and logged.
    assert!(sample(&page, "cuda_tracer_http_connections_refused_total").is_some_and(|n| n > 0.0), "{page}");
    assert!(log.contains("connection refused: all connection slots are in use"), "{log}");
}
