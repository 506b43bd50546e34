//! Traced processes cannot steer what the tracer reads and attaches (issue
//! 15, finding 2), each attack performed against the real daemon: an
//! absolute library symlink in a process's own mount namespace resolves in
//! that process's root, never the tracer's; a sparse 3 GB `libcudart.so.99`
//! is refused by what its headers claim, in bounded memory, and reported;
//! "vllm" in an argument does not opt a process into the default pattern.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use cuda_tracer_tests::*;
use serde_json::Value;

/// A daemon tracing processes that match `pattern` (`None`: the default),
/// with `RUST_LOG` at `log`, logging to the returned buffer.
fn daemon(traces: &Path, pattern: Option<&str>, log: &str) -> (KillOnDrop, Arc<Mutex<String>>) {
    let mut cmd = tracer_cmd();
    cmd.args(["run", "--no-upload", "--scan-interval-ms", "100", "--trace-dir"]).arg(traces);
    match pattern {
        Some(p) => cmd.args(["--target-process", p]),
        None => cmd.env_remove("TARGET_PROCESS"),
    };
    cmd.env("RUST_LOG", log);
    spawn_with_log(cmd)
}

/// Stops the daemon and reads its session.
fn stop(mut daemon: KillOnDrop, traces: &Path) -> Trace {
    signal(&daemon.0, libc::SIGTERM);
    assert!(wait_with_deadline(&mut daemon.0, Duration::from_secs(90)).success());
    load_trace(&session_dir(traces).expect("a session dir"))
}

/// An inotify watch for opens and reads of `path`.
struct OpenWatch(std::os::fd::OwnedFd);

impl OpenWatch {
    fn new(path: &Path) -> Self {
        use std::os::fd::FromRawFd as _;
        // SAFETY: no pointer arguments.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(fd >= 0, "inotify_init1");
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid fd and a NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_OPEN | libc::IN_ACCESS) };
        assert!(wd >= 0, "inotify_add_watch {}", path.display());
        // SAFETY: fd is a new descriptor nothing else owns.
        Self(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
    }

    /// Whether anything opened or read the file since the watch began.
    fn touched(&self) -> bool {
        use std::os::fd::AsRawFd as _;
        let mut buf = [0u8; 4096];
        // SAFETY: reads into a local buffer of the given length.
        let n = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        n > 0
    }
}

fn dev_ino(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    (meta.dev(), meta.ino())
}

#[test]
fn an_absolute_library_symlink_resolves_in_the_target_root_never_the_tracers() {
    let tmp = tempfile::tempdir().unwrap();
    let [host, evil, traces] = ["host", "evil", "traces"].map(|d| tmp.path().join(d));
    for dir in [&host, &evil] {
        std::fs::create_dir_all(dir).unwrap();
    }
    // In the tracer's filesystem: a real CUDA library, which the daemon would
    // attach without complaint if the symlink led it here.
    let decoy = host.join("libcuda.so.1");
    std::fs::copy(fixtures().join("libcuda.so.1"), &decoy).unwrap();
    let decoy_id = dev_ino(&std::fs::metadata(&decoy).unwrap());
    let watch = OpenWatch::new(&decoy);

    let marker = format!("target-root-symlink-{}", std::process::id());
    let (tracer, log) = daemon(&traces, Some(&format!("^{marker} ")), "info");
    // The process's own mount namespace: its own `host` (another copy of the
    // library) and an `evil` dir with an absolute symlink into `host`.
    let ready = tmp.path().join("ready");
    let script = format!(
        "mount -t tmpfs none {evil} && mount -t tmpfs none {host} && cp {lib} {host}/libcuda.so.1 && \
         ln -s {host}/libcuda.so.1 {evil}/libcuda.so.1 && touch {ready} && exec -a {marker} sleep 600",
        evil = evil.display(),
        host = host.display(),
        lib = fixtures().join("libcuda.so.1").display(),
        ready = ready.display(),
    );
    let target = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "bash", "-c", &script])
        .env("LD_LIBRARY_PATH", &evil)
        .spawn()
        .unwrap();
    let target = KillOnDrop(target);
    wait_for("the target's namespace", Duration::from_secs(30), || ready.exists());
    let inside = format!("/proc/{}/root{}/libcuda.so.1", target.0.id(), host.display());
    let inside_id = dev_ino(&std::fs::metadata(&inside).unwrap());
    assert_ne!(inside_id, decoy_id);

    let shown = evil.join("libcuda.so.1").display().to_string();
    wait_for("the target's library attached", Duration::from_secs(90), || {
        log.lock().unwrap().lines().any(|l| l.contains(" attached") && l.contains(&shown))
    });
    let trace = stop(tracer, &traces);
    drop(target);

    let libs = trace.metadata["libraries"].as_array().unwrap();
    let id = |l: &Value| (l["dev"].as_u64().unwrap(), l["inode"].as_u64().unwrap());
    let attached = libs.iter().find(|l| l["path"] == shown.as_str()).unwrap_or_else(|| panic!("{libs:?}"));
    assert_eq!(id(attached), inside_id, "the target's own file is attached: {attached}");
    assert!(libs.iter().all(|l| id(l) != decoy_id), "the tracer's file is never attached: {libs:?}");
    assert!(!watch.touched(), "the tracer's file at the symlink's target was opened or read");
}

/// A 3 GB sparse file whose ELF header is real and whose one section, a
/// `.dynsym`, claims nearly all of it.
fn sparse_library(path: &Path) {
    const SIZE: u64 = 3 << 30;
    let mut bytes = vec![0u8; 64 + 2 * 64];
    bytes[..4].copy_from_slice(b"\x7fELF");
    bytes[4..7].copy_from_slice(&[2, 1, 1]); // 64-bit, little-endian, version 1
    let put = |b: &mut [u8], at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
    put(&mut bytes, 16, &3u16.to_le_bytes()); // ET_DYN
    put(&mut bytes, 18, &62u16.to_le_bytes()); // x86-64
    put(&mut bytes, 20, &1u32.to_le_bytes());
    put(&mut bytes, 40, &64u64.to_le_bytes()); // e_shoff
    put(&mut bytes, 52, &64u16.to_le_bytes()); // e_ehsize
    put(&mut bytes, 58, &64u16.to_le_bytes()); // e_shentsize
    put(&mut bytes, 60, &2u16.to_le_bytes()); // e_shnum
    let dynsym = 64 + 64;
    put(&mut bytes, dynsym + 4, &11u32.to_le_bytes()); // SHT_DYNSYM
    put(&mut bytes, dynsym + 24, &4096u64.to_le_bytes()); // sh_offset
    put(&mut bytes, dynsym + 32, &(SIZE - 8192).to_le_bytes()); // sh_size
    put(&mut bytes, dynsym + 56, &24u64.to_le_bytes()); // sh_entsize
    std::fs::write(path, &bytes).unwrap();
    std::fs::OpenOptions::new().write(true).open(path).unwrap().set_len(SIZE).unwrap();
}

/// Peak resident memory of `pid` (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap().trim().trim_end_matches(" kB");
    kib.trim().parse::<u64>().unwrap() * 1024
}

#[test]
fn a_sparse_multi_gb_library_is_missed_with_its_reason_in_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let (lib, traces, ready) =
        (tmp.path().join("libcudart.so.99"), tmp.path().join("traces"), tmp.path().join("ready"));
    sparse_library(&lib);
    let marker = format!("target-root-sparse-{}", std::process::id());
    let (tracer, log) = daemon(&traces, Some(&marker), "info");
    // Fully started: probes loaded, ring buffer mapped.
    wait_for("the daemon to start", Duration::from_secs(60), || {
        log.lock().unwrap().contains("watching CUDA library opens")
    });
    let idle_peak = peak_rss(tracer.0.id());
    // Maps the file, as a loader would, and keeps it mapped.
    let mapper = "import mmap, pathlib, sys, time\nf = open(sys.argv[1], 'rb')\n\
                  m = mmap.mmap(f.fileno(), 4096, prot=mmap.PROT_READ)\npathlib.Path(sys.argv[2]).touch()\ntime.sleep(600)\n";
    let target =
        std::process::Command::new("python3").args(["-c", mapper]).arg(&lib).arg(&ready).arg(&marker).spawn().unwrap();
    let target = KillOnDrop(target);
    wait_for("the file mapped", Duration::from_secs(30), || ready.exists());
    let shown = lib.display().to_string();
    wait_for("the library refused", Duration::from_secs(90), || {
        log.lock().unwrap().lines().any(|l| l.contains("library not attached") && l.contains(&shown))
    });
    let peak = peak_rss(tracer.0.id());
    let trace = stop(tracer, &traces);
    drop(target);

    // The old resolver read the whole file: a 3.3 GB peak.
    eprintln!("daemon peak RSS: {peak} bytes, {idle_peak} idle");
    assert!(peak < idle_peak + (128 << 20), "peak RSS {peak} bytes, idle {idle_peak}");
    let missed = trace.metadata["missed_libraries"].as_array().unwrap();
    let miss = missed.iter().find(|m| m["path"] == shown.as_str()).unwrap_or_else(|| panic!("{missed:?}"));
    assert_eq!(miss["reason"], "attach_failed", "{miss}");
    let error = miss["error"].as_str().unwrap();
    assert!(error.contains(&shown) && error.contains("bytes allowed; not read"), "{error}");
}

/// Starts `python3 argv…` sleeping, with `argv0` as its program name.
fn sleeper(argv0: &str, args: &[&str], ready: &Path) -> KillOnDrop {
    let script = "import pathlib, sys, time\npathlib.Path(sys.argv[-1]).touch()\ntime.sleep(600)\n";
    let file = ready.with_extension("py");
    std::fs::write(&file, script).unwrap();
    let mut cmd = std::process::Command::new("python3");
    if argv0.is_empty() {
        cmd.arg(&file);
    } else {
        // A script named like vLLM's console script.
        let named = ready.with_file_name(argv0);
        std::fs::create_dir_all(named.parent().unwrap()).unwrap();
        std::fs::copy(&file, &named).unwrap();
        cmd.arg(named);
    }
    let child = cmd.args(args).arg(ready).spawn().unwrap();
    wait_for("the sleeper", Duration::from_secs(30), || ready.exists());
    KillOnDrop(child)
}

#[test]
fn vllm_in_an_argument_does_not_match_the_default_pattern_and_an_entry_point_does() {
    let tmp = tempfile::tempdir().unwrap();
    let traces = tmp.path().join("traces");
    let (tracer, log) = daemon(&traces, None, "info");
    wait_for("the daemon's session", Duration::from_secs(60), || session_dir(&traces).is_some());
    let bin: PathBuf = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let opted_in = sleeper("", &["--model", "vllm", "serve", "vllm"], &bin.join("ready-args"));
    let entry_point = sleeper("vllm", &["serve", "facebook/opt-125m"], &bin.join("ready-vllm"));
    let pid = format!("pid={}", entry_point.0.id());
    wait_for("the vLLM entry point traced", Duration::from_secs(60), || {
        log.lock().unwrap().lines().any(|l| l.contains("tracing process") && l.contains(&pid))
    });
    let trace = stop(tracer, &traces);

    let pids: Vec<u64> =
        trace.metadata["processes"].as_array().unwrap().iter().map(|p| p["pid"].as_u64().unwrap()).collect();
    assert!(pids.contains(&u64::from(entry_point.0.id())), "{pids:?}");
    assert!(!pids.contains(&u64::from(opted_in.0.id())), "'vllm' in arguments opted a process in: {pids:?}");
}
