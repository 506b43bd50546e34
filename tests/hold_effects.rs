//! What a hold at a library open does to those around the held process: a
//! parent waiting with `WUNTRACED`, a loader with several threads loading at
//! once, and a process under `strace -f` (ptrace) all run on, and every call
//! is traced.

use std::path::Path;

use cuda_tracer_tests::*;
use serde_json::Value;

fn record_python(out: &Path, script: &str, args: &[&str]) -> (Trace, String) {
    let dir = out.parent().unwrap();
    let file = dir.join("script.py");
    std::fs::write(&file, script).unwrap();
    let output = tracer_cmd()
        .args(["record", "--scan-interval-ms", "60000", "-o"])
        .arg(out)
        .arg("--")
        .arg("python3")
        .arg(&file)
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    (load_trace(out), String::from_utf8_lossy(&output.stdout).into_owned())
}

fn funcs_by_pid(trace: &Trace) -> Vec<(u64, String)> {
    trace.lines.iter().map(|l| (l["pid"].as_u64().unwrap(), l["func"].as_str().unwrap().to_owned())).collect()
}

fn assert_nothing_missed(trace: &Trace) {
    assert_eq!(trace.metadata["missed_libraries"], Value::Array(vec![]), "nothing missed");
}

/// The parent forks a child that loads the runtime and calls cudaMalloc; the
/// parent waits with WUNTRACED|WCONTINUED and prints what it saw.
const WUNTRACED_PARENT: &str = r#"
import ctypes, os, sys
pid = os.fork()
if pid == 0:
    cu = ctypes.CDLL(sys.argv[1])
    p = ctypes.c_void_p()
    cu.cudaMalloc(ctypes.byref(p), ctypes.c_size_t(64))
    os._exit(7)
seen = []
while True:
    _, status = os.waitpid(pid, os.WUNTRACED | os.WCONTINUED)
    if os.WIFSTOPPED(status):
        seen.append("stopped:%d" % os.WSTOPSIG(status))
    elif os.WIFCONTINUED(status):
        seen.append("continued")
    else:
        seen.append("exited:%d" % os.WEXITSTATUS(status))
        break
print(pid, " ".join(seen))
"#;

#[test]
fn a_parent_waiting_with_wuntraced_sees_at_most_a_stop_and_a_continue_and_its_child_runs_on() {
    let (tmp, out, _) = scratch();
    let lib = private_copy(&tmp.path().join("lib"), &nvidia_cudart());
    let (trace, stdout) = record_python(&out, WUNTRACED_PARENT, &[&lib]);
    let (child, seen) = stdout.trim().split_once(' ').unwrap();
    let seen: Vec<&str> = seen.split(' ').collect();
    // SIGSTOP (19) then SIGCONT, unless the release came before the parent
    // looked; the child always ends normally.
    assert_eq!(seen.last(), Some(&"exited:7"), "{stdout}");
    assert!(seen.iter().all(|s| ["stopped:19", "continued", "exited:7"].contains(s)), "{stdout}");
    let child: u64 = child.parse().unwrap();
    assert_eq!(funcs_by_pid(&trace), [(child, "cudaMalloc".to_owned())]);
    assert_nothing_missed(&trace);
}

/// Four threads each load their own copy of the runtime at once and call
/// cudaMalloc once.
const THREADED_LOADER: &str = r#"
import ctypes, sys, threading
def load(lib):
    cu = ctypes.CDLL(lib)
    p = ctypes.c_void_p()
    assert cu.cudaMalloc(ctypes.byref(p), ctypes.c_size_t(64)) == 35
threads = [threading.Thread(target=load, args=(lib,)) for lib in sys.argv[1:]]
for t in threads:
    t.start()
for t in threads:
    t.join()
"#;

#[test]
fn threads_loading_four_copies_at_once_are_each_traced_from_the_first_call() {
    let (tmp, out, _) = scratch();
    let libs: Vec<String> =
        (0..4).map(|i| private_copy(&tmp.path().join(format!("copy{i}")), &nvidia_cudart())).collect();
    let args: Vec<&str> = libs.iter().map(String::as_str).collect();
    let (trace, _) = record_python(&out, THREADED_LOADER, &args);
    let calls = funcs_by_pid(&trace);
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert!(calls.iter().all(|(_, f)| f == "cudaMalloc"), "{calls:?}");
    let holds = trace.metadata["library_holds"].as_array().unwrap();
    for lib in &libs {
        assert!(holds.iter().any(|h| h["path"] == lib.as_str() && h["outcome"] == "attached"), "{lib}: {holds:?}");
    }
    assert_nothing_missed(&trace);
}

#[test]
fn a_process_under_strace_is_held_released_and_traced() {
    let strace = Path::new("/usr/bin/strace");
    assert!(strace.exists(), "strace is missing: apt-get install -y strace");
    let (tmp, out, _) = scratch();
    let lib = private_copy(&tmp.path().join("lib"), &nvidia_cudart());
    let script = tmp.path().join("load.py");
    std::fs::write(&script, PY_ONE_MALLOC).unwrap();
    let output = tracer_cmd()
        .args(["record", "--scan-interval-ms", "60000", "-o"])
        .arg(&out)
        .arg("--")
        .arg(strace)
        .args(["-f", "-qq", "-o", "/dev/null", "python3"])
        .arg(&script)
        .arg(&lib)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let trace = load_trace(&out);
    let funcs: Vec<String> = funcs_by_pid(&trace).into_iter().map(|(_, f)| f).collect();
    assert_eq!(funcs, ["cudaMalloc"]);
    assert_nothing_missed(&trace);
}
