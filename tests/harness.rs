//! Test harness: builds or finds the fixtures and the tracer binary, runs the
//! tracer, reads trace directories and ground truth, and compares them.
//!
//! Every test here loads the real BPF object and attaches real uprobes, so
//! the tests run as root (CI does). Trace comparison is exact: per thread,
//! the sequence of calls in the trace files equals the sequence the fixture
//! libraries recorded (both are in return order).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
    time::Duration,
};

pub mod docker_engine;
pub mod image_build;
pub mod kube;
pub mod lake;
pub mod node;
pub mod node_config;
pub mod node_host;
pub mod node_images;
pub mod node_pods;
pub mod node_sidecar;
pub mod node_ways;
pub mod openai_stub;
pub mod procs;
pub mod s3;
pub mod scripts;
pub mod setup_paths;

pub use procs::*;
use serde_json::Value;
pub use setup_paths::*;
use tracer_common::funcs;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace").to_path_buf()
}

/// Cargo's target directory for this build (…/target/debug/deps/test → …/target).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>").to_path_buf()
}

/// The fixture libraries and workloads, built once per test binary unless
/// `CUDA_TRACER_FIXTURES` points at a built set (as `cargo xtask test` does).
/// Every `*.yaml`/`*.yml` under `dir`, recursively, sorted (the
/// Kubernetes manifests the k8s and apiserver tests read).
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

pub fn fixtures() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("CUDA_TRACER_FIXTURES") {
            return PathBuf::from(dir);
        }
        let dir = profile_dir().join("fixtures");
        let status = Command::new("bash").arg(root().join("fixtures/build.sh")).arg(&dir).status().expect("bash");
        assert!(status.success(), "fixtures/build.sh failed");
        dir
    })
    .clone()
}

/// The `cuda-tracer` binary of this build, brought up to date once per test
/// binary (a plain `cargo test` does not build it for this package, and a
/// stale binary would test old code).
/// `CUDA_TRACER_BIN` names a binary to test instead (a copy that builds of
/// other worktrees sharing the target dir cannot overwrite mid-run).
pub fn tracer() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("CUDA_TRACER_BIN") {
            return PathBuf::from(bin);
        }
        let bin = profile_dir().join("cuda-tracer");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        // The variables cargo sets for a running test are not the nested
        // build's: ring's build script tracks CARGO_MANIFEST_DIR, so passing
        // them on rebuilt ring, rustls and everything above, twice per run.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            let for_this_test = name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_BIN_")
                || ["CARGO_MANIFEST_DIR", "CARGO_MANIFEST_PATH", "CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE"]
                    .contains(&name.as_ref());
            if for_this_test {
                build.env_remove(name.as_ref());
            }
        }
        let status =
            build.current_dir(root()).args(["build", "-q", "-p", "cuda-tracer"]).status().expect("start cargo");
        assert!(status.success() && bin.exists(), "building {} failed", bin.display());
        bin
    })
    .clone()
}

/// A port nobody listens on now (the OS picks it).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// A Kustomize file (`kustomization.yaml`), not a manifest of its own.
pub fn is_kustomization(path: &Path) -> bool {
    path.file_stem().is_some_and(|s| s == "kustomization")
}

/// The vLLM pod of `tests/data/vllm-pod.json`, as the API server sends it
/// to an admission webhook.
pub fn vllm_pod() -> Value {
    let path = root().join("tests/data/vllm-pod.json");
    serde_json::from_slice(&std::fs::read(&path).expect("tests/data/vllm-pod.json")).expect("pod JSON")
}

/// A `cuda-tracer` command with quiet logs.
pub fn tracer_cmd() -> Command {
    let mut cmd = Command::new(tracer());
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// The command `cuda-tracer record -o out <extra> -- argv` with the fixture
/// dir on the loader path and ground truth written to `truth`.
pub fn record_cmd(out: &Path, truth: &Path, extra: &[&str], argv: &[&str]) -> Command {
    std::fs::create_dir_all(truth).expect("truth dir");
    let mut cmd = tracer_cmd();
    cmd.arg("record")
        .arg("-o")
        .arg(out)
        .args(extra)
        .arg("--")
        .args(argv)
        .env("CUDA_FIXTURE_TRUTH_DIR", truth)
        .env("LD_LIBRARY_PATH", fixtures());
    cmd
}

/// Runs [`record_cmd`], asserting that it succeeds.
pub fn record(out: &Path, truth: &Path, extra: &[&str], argv: &[&str]) -> Output {
    let output = record_cmd(out, truth, extra, argv).output().expect("start cuda-tracer");
    assert!(
        output.status.success(),
        "cuda-tracer record failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A recorded session of a few trace files (rotated each second) under
/// `root/traces/session-a`, its truth under `root/truth`: `(session, truth)`.
pub fn recorded_session(root: &Path) -> (PathBuf, PathBuf) {
    let (out, truth) = (root.join("traces").join("session-a"), root.join("truth"));
    record(
        &out,
        &truth,
        &["--rotate-secs", "1"],
        &[&workload(), "--no-child", "--iterations", "60", "--step-delay-us", "20000"],
    );
    (out, truth)
}

/// A scratch dir with the paths tests record into: `(dir, trace, truth)`.
pub fn scratch() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (out, truth) = (tmp.path().join("trace"), tmp.path().join("truth"));
    (tmp, out, truth)
}

/// A scratch dir holding an empty directory `name`.
pub fn scratch_with_dir(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join(name);
    std::fs::create_dir_all(&dir).expect("scratch subdir");
    (tmp, dir)
}

/// The fixture workload's path.
pub fn workload() -> String {
    fixtures().join("cuda-workload").display().to_string()
}

/// A session directory's parsed contents.
pub struct Trace {
    pub files: Vec<PathBuf>,
    pub lines: Vec<Value>,
    pub metadata: Value,
}

/// Reads a session directory, asserting it is complete: no temporary files
/// left, every line valid JSON, metadata.json present and finished.
pub fn load_trace(dir: &Path) -> Trace {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("session dir") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.ends_with(".partial"), "temporary file left behind: {name}");
        if name.starts_with("trace_") && name.ends_with(".jsonl") {
            files.push(path);
        }
    }
    files.sort();
    let mut lines = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("trace file");
        assert!(text.is_empty() || text.ends_with('\n'), "{} ends mid-line", f.display());
        for (i, l) in text.lines().enumerate() {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{}:{}: {e}: {l}", f.display(), i + 1));
            lines.push(v);
        }
    }
    let meta = std::fs::read_to_string(dir.join("metadata.json")).expect("metadata.json");
    let metadata: Value = serde_json::from_str(&meta).expect("metadata.json is JSON");
    Trace { files, lines, metadata }
}

/// Every ground-truth call the fixture libraries wrote into `dir`.
pub fn load_truth(dir: &Path) -> Vec<Value> {
    load_jsonl(dir, "truth.")
}

/// Every kernel registration and look-up the fixtures recorded in `dir`.
pub fn load_kernel_truth(dir: &Path) -> Vec<Value> {
    load_jsonl(dir, "kernels.")
}

fn load_jsonl(dir: &Path, prefix: &str) -> Vec<Value> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("truth dir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)))
        .collect();
    names.sort();
    names
        .iter()
        .flat_map(|p| std::fs::read_to_string(p).expect("truth file").lines().map(String::from).collect::<Vec<_>>())
        .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("truth line {l}: {e}")))
        .collect()
}

type ThreadKey = (u64, u64);

/// The comparable part of one call: layer, function, return value, and the
/// arguments the call was made with. What the tracer derives beyond the
/// call itself (the `kernel` name of a launch, the `bytes` a free released)
/// is checked by its own tests.
fn comparable(v: &Value) -> Value {
    let func = v["func"].as_str().unwrap_or_default();
    let spec = funcs::FUNCS.iter().find(|s| s.name == func);
    // A free's size comes from the annotator, not the call's arguments.
    let is_free = spec.is_some_and(|s| matches!(s.role, funcs::Role::Free | funcs::Role::HostFree));
    let mut args = v["args"].as_object().cloned().unwrap_or_default();
    args.remove("kernel");
    // A launch's `module` is the annotator's, like its kernel name.
    if spec.is_some_and(|s| s.role == funcs::Role::Launch) {
        args.remove("module");
    }
    if is_free {
        args.remove("bytes");
    }
    serde_json::json!({"type": v["type"], "func": func, "ret": v["ret"], "args": args})
}

fn by_thread(lines: &[Value]) -> BTreeMap<ThreadKey, Vec<&Value>> {
    let mut map: BTreeMap<ThreadKey, Vec<&Value>> = BTreeMap::new();
    for l in lines {
        let key = (l["pid"].as_u64().expect("pid"), l["tid"].as_u64().expect("tid"));
        map.entry(key).or_default().push(l);
    }
    map
}

/// Per thread, the trace's calls must be the truth's calls in the same order
/// (`prefix`: the trace may stop early, as after a SIGTERM).
pub fn assert_matches_truth(trace: &[Value], truth: &[Value], prefix: bool) {
    let traced = by_thread(trace);
    let expected = by_thread(truth);
    for (key, lines) in &traced {
        let want = expected.get(key).unwrap_or_else(|| panic!("trace has thread {key:?} which made no call"));
        assert!(lines.len() <= want.len(), "thread {key:?}: {} traced calls, {} made", lines.len(), want.len());
        for (i, (got, exp)) in lines.iter().zip(want.iter()).enumerate() {
            let (g, e) = (comparable(got), comparable(exp));
            // Stopped mid-run, a thread's last traced call may be an outer
            // runtime call whose nested driver call began after tracing
            // stopped: the truth lists that inner call first.
            let cut_inside_nested =
                prefix && i + 1 == lines.len() && want.get(i + 1).is_some_and(|n| comparable(n) == g);
            if !cut_inside_nested {
                assert_eq!(g, e, "thread {key:?} call #{i} differs:\n trace: {got}\n truth: {exp}");
            }
        }
    }
    if !prefix {
        for (key, want) in &expected {
            let got = traced.get(key).map_or(0, Vec::len);
            assert_eq!(got, want.len(), "thread {key:?}: {got} calls traced of {} made", want.len());
        }
    }
}

/// Asserts the seed's fields and ours are present with the right types.
pub fn assert_line_schema(v: &Value) {
    assert!(v["ts"].is_f64() || v["ts"].is_u64(), "ts: {v}");
    assert!(v["pid"].is_u64() && v["tid"].is_u64(), "pid/tid: {v}");
    assert!(matches!(v["type"].as_str(), Some("cuda_api" | "cuda_runtime" | "nccl")), "type: {v}");
    assert!(v["func"].is_string(), "func: {v}");
    assert_eq!(v["phase"], "entry", "phase: {v}");
    assert!(v["dur_us"].is_number(), "dur_us: {v}");
    assert!(v["ret"].is_i64(), "ret: {v}");
    assert!(v["args"].is_object(), "args: {v}");
}

/// The fixture workload run with `args`, held at its start until the file
/// `go` exists; returns it with its truth dir and `go` (both in `tmp`).
pub fn held_workload(tmp: &Path, args: &[&str]) -> (KillOnDrop, PathBuf, PathBuf) {
    let (truth, go) = (tmp.join("truth"), tmp.join("go"));
    std::fs::create_dir_all(&truth).expect("truth dir");
    let child = Command::new(workload())
        .args(args)
        .arg("--wait-for-file")
        .arg(&go)
        .env("CUDA_FIXTURE_TRUTH_DIR", &truth)
        .env("LD_LIBRARY_PATH", fixtures())
        .spawn()
        .expect("spawn the workload");
    (KillOnDrop(child), truth, go)
}

/// Waits until the daemon writing under `traces` has attached every one of
/// `libs` (its metadata.json names them). Attaching can queue behind other
/// tracers' probe removals (the kernel serialises uprobe changes), hence the
/// generous deadline.
pub fn wait_attached(what: &str, traces: &Path, libs: &[&str]) {
    wait_for(what, Duration::from_secs(90), || {
        let Some(dir) = session_dir(traces) else { return false };
        std::fs::read_to_string(dir.join("metadata.json")).is_ok_and(|m| libs.iter().all(|l| m.contains(l)))
    });
}

/// A plain HTTP/1.0 GET on 127.0.0.1: (status code, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// A Python program that loads the runtime named by its first argument and
/// calls `cudaMalloc` once, which returns 35 with no driver.
pub const PY_ONE_MALLOC: &str = "import ctypes, sys\ncu = ctypes.CDLL(sys.argv[1])\np = ctypes.c_void_p()\n\
     assert cu.cudaMalloc(ctypes.byref(p), ctypes.c_size_t(64)) == 35\n";

/// Python: `calls(lib, out, n, unit)` loads `lib`, calls cudaMalloc and
/// cudaFree `n` times (`unit`, 2×`unit`, … bytes) and writes each call to
/// `out.<pid>.jsonl` as the tracer should write it.
pub const PY_RECORDED_CALLS: &str = r#"
import ctypes, json, os, threading

def calls(lib, out, n, unit):
    cu = ctypes.CDLL(lib)
    tid = threading.get_native_id()
    lines = []
    for i in range(n):
        p = ctypes.c_void_p()
        size = unit * (i + 1)
        r = cu.cudaMalloc(ctypes.byref(p), ctypes.c_size_t(size))
        lines.append({"pid": os.getpid(), "tid": tid, "type": "cuda_runtime", "func": "cudaMalloc", "ret": r,
                      "args": {"bytes": size}})
        r = cu.cudaFree(p)
        lines.append({"pid": os.getpid(), "tid": tid, "type": "cuda_runtime", "func": "cudaFree", "ret": r,
                      "args": {"dptr": hex(p.value or 0)}})
    with open(out + "." + str(os.getpid()) + ".jsonl", "w") as f:
        f.write("".join(json.dumps(l) + "\n" for l in lines))
"#;

/// The single session directory a daemon created under its trace dir.
pub fn session_dir(trace_dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(trace_dir).ok()?.filter_map(|e| e.ok().map(|e| e.path())).find(|p| p.is_dir())
}

/// Copies `lib` into a fresh directory no search path names.
pub fn private_copy(dir: &Path, lib: &Path) -> String {
    std::fs::create_dir_all(dir).expect("private dir");
    let dest = dir.join(lib.file_name().expect("a file name"));
    std::fs::copy(lib, &dest).expect("copy the library");
    dest.display().to_string()
}

/// `s` as a regular expression that matches exactly it.
pub fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '/' || c == '_' { c.to_string() } else { format!("\\{c}") })
        .collect()
}

/// An HTTP server on 127.0.0.1 answering request `n` (from 0) with
/// `respond(n)` = (status, body), as vLLM's `/metrics` would; returns its
/// port and the count of requests answered.
pub fn serve_http(
    respond: impl Fn(usize) -> (u16, String) + Send + 'static,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::{atomic::Ordering, Arc};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&served);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let (status, body) = respond(count.load(Ordering::SeqCst));
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.flush();
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    (port, served)
}
