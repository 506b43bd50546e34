//! The processes `cargo xtask bench` drives: a shell that runs the fixture
//! workload on request (alone, under `cuda-tracer record`, or watched by a
//! daemon or bpftrace), the tracers themselves, `/proc` sampling, and the
//! reaping of the tracer's background probe-release children.

use std::{
    collections::HashMap,
    ffi::OsString,
    fs::File,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

/// One workload run.
#[derive(Clone, Debug)]
pub struct Run {
    pub pid: u32,
    pub threads: u32,
    /// Calls per thread.
    pub per_thread: u64,
    /// The workload's own figure (bench loop only): mean over threads of loop time / N.
    pub ns_per_call: Option<f64>,
    /// From the command's start to its exit, as the shell saw it.
    pub wall: Duration,
}

impl Run {
    pub fn calls(&self) -> u64 {
        self.per_thread * u64::from(self.threads)
    }

    /// Calls per second the workload made while it ran.
    pub fn rate(&self) -> f64 {
        match self.ns_per_call {
            Some(ns) if ns > 0.0 => f64::from(self.threads) * 1e9 / ns,
            _ => self.calls() as f64 / self.wall.as_secs_f64(),
        }
    }
}

/// `sh` reading commands from a pipe, in a directory holding a private copy
/// of the fixtures (its own inodes, so probes of other sessions never fire
/// on its calls). Wrapped by `cuda-tracer record` when `program` is the tracer.
pub struct Shell {
    child: Child,
    stdin: Option<ChildStdin>,
    out: BufReader<ChildStdout>,
    pub lib_dir: PathBuf,
}

impl Shell {
    /// Starts `program args` (ending in `sh`), with the fixtures on `LD_LIBRARY_PATH`.
    pub fn spawn(program: &Path, args: &[OsString], lib_dir: &Path, stderr: &Path) -> Result<Self> {
        let err = File::create(stderr).with_context(|| format!("creating {}", stderr.display()))?;
        let mut child = Command::new(program)
            .args(args)
            .current_dir(lib_dir)
            .env("LD_LIBRARY_PATH", lib_dir)
            .env_remove("CUDA_FIXTURE_TRUTH_DIR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().context("no stdout pipe")?);
        Ok(Self { child, stdin, out, lib_dir: lib_dir.to_path_buf() })
    }

    pub fn plain(lib_dir: &Path, stderr: &Path) -> Result<Self> {
        Self::spawn(Path::new("sh"), &[], lib_dir, stderr)
    }

    /// The pid of the process this shell is (or, under record, of the tracer).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs `cuda-workload ARGS` and returns its pid, its stdout and its wall time.
    pub fn exec(&mut self, args: &str) -> Result<(u32, Vec<String>, Duration)> {
        let line = format!("./cuda-workload {args} & p=$!; wait $p; echo \"@@done $p $?\"\n");
        let stdin = self.stdin.as_mut().context("shell already closed")?;
        let began = Instant::now();
        stdin.write_all(line.as_bytes()).and_then(|_| stdin.flush()).context("writing to the bench shell")?;
        let mut output = Vec::new();
        loop {
            let mut l = String::new();
            if self.out.read_line(&mut l)? == 0 {
                bail!("the bench shell ended during `cuda-workload {args}` (output: {output:?})");
            }
            if let Some(done) = l.trim().strip_prefix("@@done ") {
                let wall = began.elapsed();
                let mut it = done.split(' ');
                let pid: u32 = it.next().unwrap_or("").parse().context("pid from the shell")?;
                if it.next() != Some("0") {
                    bail!("`cuda-workload {args}` failed in {}: {done} (output: {output:?})", self.lib_dir.display());
                }
                return Ok((pid, output, wall));
            }
            output.push(l.trim_end().to_string());
        }
    }

    /// `--bench-loop N --threads T`.
    pub fn bench(&mut self, threads: u32, per_thread: u64) -> Result<Run> {
        let (pid, output, wall) = self.exec(&format!("--bench-loop {per_thread} --threads {threads}"))?;
        let ns = output
            .iter()
            .find_map(|l| l.strip_prefix("ns_per_call=")?.parse::<f64>().ok())
            .with_context(|| format!("no ns_per_call= in {output:?}"))?;
        Ok(Run { pid, threads, per_thread, ns_per_call: Some(ns), wall })
    }

    /// Runs short loops until the calls trap (a uprobe is attached to this
    /// shell's libcuda), then waits `settle` for the other probes. Fails
    /// at once if `tracer`, the process that attaches them, has exited.
    pub fn wait_for_probes(
        &mut self,
        tracer: &mut Background,
        timeout: Duration,
        settle: Duration,
    ) -> Result<Duration> {
        let began = Instant::now();
        loop {
            if let Some(status) = tracer.child.try_wait()? {
                bail!("{} exited with {status} before its probes fired", tracer.name);
            }
            if self.bench(1, 2000)?.ns_per_call.unwrap_or(0.0) > 1000.0 {
                std::thread::sleep(settle);
                return Ok(began.elapsed());
            }
            if began.elapsed() > timeout {
                bail!("no uprobe fired on {} after {timeout:?}", self.lib_dir.display());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Closes the shell's input (it exits) and waits for the process.
    pub fn finish(mut self) -> Result<ExitStatus> {
        drop(self.stdin.take());
        Ok(self.child.wait()?)
    }
}

/// A background process stopped with a signal (daemon, bpftrace).
pub struct Background {
    pub child: Child,
    pub name: String,
}

impl Background {
    pub fn spawn(cmd: &mut Command, name: &str, stdout: &Path, stderr: &Path) -> Result<Self> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(File::create(stdout)?)
            .stderr(File::create(stderr)?)
            .spawn()
            .with_context(|| format!("cannot start {name}: {cmd:?}"))?;
        Ok(Self { child, name: name.to_string() })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal`, waits up to `timeout`, then kills.
    pub fn stop(mut self, signal: i32, timeout: Duration) -> Result<ExitStatus> {
        // SAFETY: kill has no memory preconditions; the pid is our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let began = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if began.elapsed() > timeout {
                eprintln!("bench: {} did not stop within {timeout:?}; killing it", self.name);
                let _ = self.child.kill();
                return Ok(self.child.wait()?);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Background {
    /// On an error path: a tracer left running would keep its probes.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Makes orphaned descendants (the tracer's probe-release child) our children.
pub fn become_subreaper() -> Result<()> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) only sets a flag on this process.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        bail!("prctl(PR_SET_CHILD_SUBREAPER): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Waits until every child has exited (call it with no `Child` handle left
/// unwaited): the released probes are gone from the kernel once the
/// tracer's release children are reaped. Returns how many were reaped.
pub fn reap_all(timeout: Duration) -> Result<usize> {
    let began = Instant::now();
    let mut reaped = 0;
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only to `status`.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if r > 0 {
            reaped += 1;
            continue;
        }
        if r < 0 {
            return Ok(reaped);
        }
        if began.elapsed() > timeout {
            bail!("probe-release processes still running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Lines per `"pid":N` in the given files.
pub fn lines_per_pid(files: &[PathBuf]) -> Result<HashMap<u32, u64>> {
    let mut counts = HashMap::new();
    for f in files {
        let reader = BufReader::with_capacity(1 << 20, File::open(f).with_context(|| format!("{}", f.display()))?);
        for line in reader.split(b'\n') {
            let line = line?;
            let Some(at) = line.windows(6).position(|w| w == b"\"pid\":") else { continue };
            let digits: Vec<u8> = line[at + 6..].iter().copied().take_while(u8::is_ascii_digit).collect();
            if let Ok(pid) = std::str::from_utf8(&digits).unwrap_or("").parse::<u32>() {
                *counts.entry(pid).or_insert(0) += 1;
            }
        }
    }
    Ok(counts)
}

/// The `trace_*.jsonl` files of a session directory.
pub fn trace_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("trace_") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// utime + stime of a process (all its threads), in seconds.
pub fn cpu_secs(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state is field 3, utime 14, stime 15 (1-based).
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks as f64 / hz)
}

/// A `Vm*` line of /proc/PID/status, in KiB.
pub fn vm_kib(pid: u32, key: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
        .with_context(|| format!("no {key} in /proc/{pid}/status"))
}

/// Processes named cuda-tracer that are not ours (other sessions on this machine).
pub fn foreign_tracers() -> usize {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    dir.filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|s| s.contains("(cuda-tracer)"))
        .filter(|s| s.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)).is_some_and(|ppid| ppid != me))
        .count()
}

/// "Lost N events" reports summed over the given files (bpftrace's output and stderr).
pub fn bpftrace_lost(files: &[PathBuf]) -> Result<u64> {
    let mut lost = 0;
    for f in files {
        let Ok(file) = File::open(f) else { continue };
        for line in BufReader::with_capacity(1 << 20, file).split(b'\n') {
            let line = line?;
            if let Some(at) = line.windows(5).position(|w| w == b"Lost ") {
                let text = String::from_utf8_lossy(&line[at + 5..]);
                if let (Some(n), true) = (text.split_whitespace().next(), text.contains("event")) {
                    lost += n.parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    Ok(lost)
}

/// Resident memory of a process by kind of mapping, in KiB, largest first.
pub fn rss_by_mapping(pid: u32) -> Result<Vec<(String, u64)>> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let mut by: HashMap<String, u64> = HashMap::new();
    let mut kind = String::new();
    for line in smaps.lines() {
        if let Some(kib) = line.strip_prefix("Rss:") {
            *by.entry(kind.clone()).or_insert(0) +=
                kib.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap_or(0);
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        // A mapping header: "start-end perms offset dev inode [path]".
        if fields.len() >= 5 && fields[0].contains('-') && fields[0].bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        {
            let path = fields.get(5..).map(|p| p.join(" ")).unwrap_or_default();
            kind = match path.as_str() {
                "anon_inode:bpf-map" => {
                    "BPF maps mapped into the process (the ring buffer's data pages appear twice)".into()
                }
                "[heap]" => "heap".into(),
                "" => "other anonymous memory (thread stacks, large allocations)".into(),
                p if p.ends_with("/cuda-tracer") => "the cuda-tracer executable".into(),
                p if p.contains(".so") => "shared libraries".into(),
                p => p.to_string(),
            };
        }
    }
    let mut v: Vec<(String, u64)> = by.into_iter().filter(|(_, kib)| *kib > 0).collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    Ok(v)
}

/// `kernel.bpf_stats_enabled` on for the guard's lifetime (then the old value again).
pub struct BpfStats(Option<String>);

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    pub fn enable() -> Self {
        let old = std::fs::read_to_string(BPF_STATS).ok();
        let on = old.is_some() && std::fs::write(BPF_STATS, "1").is_ok();
        Self(if on { old } else { None })
    }

    pub fn on(&self) -> bool {
        self.0.is_some()
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = std::fs::write(BPF_STATS, old.trim());
        }
    }
}

/// Uprobe programs (type kprobe) a process holds: (run_cnt, run_time_ns) summed,
/// with the largest single run_cnt (one program runs once per call).
pub fn uprobe_prog_stats(pid: u32) -> (u64, u64) {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return (0, 0) };
    let (mut calls, mut ns) = (0, 0);
    for e in dir.filter_map(|e| e.ok()) {
        let Ok(info) = std::fs::read_to_string(e.path()) else { continue };
        let field = |k: &str| info.lines().find_map(|l| l.strip_prefix(k)?.trim().parse::<u64>().ok());
        // BPF_PROG_TYPE_KPROBE = 2 (uprobes and uretprobes).
        if field("prog_type:") == Some(2) {
            calls = calls.max(field("run_cnt:").unwrap_or(0));
            ns += field("run_time_ns:").unwrap_or(0);
        }
    }
    (calls, ns)
}
