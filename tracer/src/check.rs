//! `cuda-tracer check`: preflight of everything tracing needs (and, with
//! `--s3`, of the upload target), one line per item with the fix for what
//! fails.

use std::path::Path;

use crate::daemon::{
    output::upload::{S3Config, S3Uploader, UploadError},
    privileges,
    probes::{discover, loader, symbols},
    target_files::OpenError,
};

/// One preflight result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub ok: bool,
    pub what: String,
    /// How to fix it, for failures.
    pub fix: Option<String>,
}

impl std::fmt::Display for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", if self.ok { " ok " } else { "FAIL" }, self.what)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n       fix: {fix}")?;
        }
        Ok(())
    }
}

fn ok(what: impl Into<String>) -> Item {
    Item { ok: true, what: what.into(), fix: None }
}

fn fail(what: impl Into<String>, fix: impl Into<String>) -> Item {
    Item { ok: false, what: what.into(), fix: Some(fix.into()) }
}

/// Kernel release as (major, minor).
pub fn kernel_version() -> Option<(u32, u32, String)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?.trim().to_string();
    let mut it = release.split(['.', '-']).map(|p| p.parse::<u32>().ok());
    Some((it.next()??, it.next()??, release))
}

/// Runs every check; `pid` adds the per-target checks.
pub fn run(pid: Option<u32>) -> Vec<Item> {
    let mut items = Vec::new();
    items.push(match kernel_version() {
        Some((maj, min, rel)) if (maj, min) >= (5, 15) => {
            ok(format!("kernel {rel} (>= 5.15: uprobe cookies, ring buffer)"))
        }
        Some((_, _, rel)) => fail(format!("kernel {rel} is older than 5.15"), "run on a node with Linux >= 5.15"),
        None => fail("kernel version unreadable", "is /proc mounted?"),
    });
    let btf = Path::new(crate::daemon::probes::btf::VMLINUX_BTF);
    items.push(match crate::daemon::probes::btf::task_tgid_offset(btf) {
        Ok(off) => ok(format!("kernel BTF: task_struct.tgid at byte {off} (children followed from their first call)")),
        Err(e) => fail(
            format!("kernel BTF: {e}"),
            "use a kernel built with CONFIG_DEBUG_INFO_BTF=y; without it children are found by the /proc scan",
        ),
    });
    items.push(if Path::new("/sys/bus/event_source/devices/uprobe/type").exists() {
        ok("uprobe PMU present (attach through perf_event_open, no tracefs needed)")
    } else {
        fail(
            "no uprobe PMU in /sys/bus/event_source/devices",
            "use a kernel with CONFIG_UPROBES and CONFIG_UPROBE_EVENTS",
        )
    });
    items.extend(capabilities());
    items.push(match kernel_version() {
        Some((maj, min, _)) if (maj, min) >= (5, 11) => {
            ok("memlock: not needed (kernel >= 5.11 charges BPF memory to the cgroup)")
        }
        _ => {
            let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: getrlimit writes into the struct we own.
            unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
            if lim.rlim_cur == libc::RLIM_INFINITY {
                ok("memlock: unlimited")
            } else {
                fail(
                    format!("memlock limit {} bytes on a kernel < 5.11", lim.rlim_cur),
                    "run with `ulimit -l unlimited` or CAP_SYS_RESOURCE",
                )
            }
        }
    });
    if let Some(multi) = bpf_load(&mut items) {
        items.push(uprobe_permission(multi));
    }
    if let Some(pid) = pid {
        items.extend(target(pid));
    }
    items
}

/// One line per capability tracing always needs: held, or missing with
/// what it is for and the fix. (CAP_SYS_ADMIN grants what CAP_BPF and
/// CAP_PERFMON do; whether uprobes need it is [`uprobe_permission`].)
fn capabilities() -> Vec<Item> {
    let mut items: Vec<Item> = privileges::LOAD
        .iter()
        .map(|need| {
            if privileges::lacking(&[*need]).is_empty() {
                ok(format!("{}: {}", need.cap, need.what_for))
            } else {
                fail(format!("{} missing: it {}", need.cap, need.what_for), privileges::fix(&[*need]))
            }
        })
        .collect();
    let ptrace = privileges::SYS_PTRACE;
    items.push(ok(if privileges::lacking(&[ptrace]).is_empty() {
        format!("{}: {}", ptrace.cap, ptrace.what_for)
    } else {
        // The shipped vLLM container drops ALL: it is in reach without.
        format!(
            "{} not held: processes holding a capability the tracer lacks are out of reach (`check --pid` says)",
            ptrace.cap
        )
    }));
    items
}

/// Whether the tracer may read process `pid`'s maps and files: without
/// CAP_SYS_PTRACE only if `pid` holds no capability the tracer lacks.
fn ptrace_reach(pid: u32) -> Option<Item> {
    let ptrace = privileges::SYS_PTRACE;
    if privileges::lacking(&[ptrace]).is_empty() {
        return None;
    }
    let beyond = privileges::held_beyond_ours(pid)?;
    Some(if beyond.is_empty() {
        ok(format!("{} not needed for process {pid}: it holds no capability the tracer lacks", ptrace.cap))
    } else {
        let names: Vec<String> = beyond.iter().map(ToString::to_string).collect();
        fail(
            format!(
                "{} missing: process {pid} holds {} that the tracer does not; it {}",
                ptrace.cap,
                names.join(", "),
                ptrace.what_for
            ),
            privileges::fix(&[ptrace]),
        )
    })
}

/// Whether the BPF programs load, and whether the uprobe_multi ones do
/// (`Some(true)`: uprobe_multi links will be tried; `None`: nothing loads).
fn bpf_load(items: &mut Vec<Item>) -> Option<bool> {
    match loader::Probes::load(&loader::LoadOptions {
        ringbuf_bytes: 1 << 16,
        task_tgid_offset: None,
        match_exec: false,
    }) {
        Ok(probes) => {
            items.push(ok("BPF programs load and pass the verifier"));
            // Informational: without them each function is its own perf-event
            // uprobe, slow to remove (metadata.json's libraries[].attach).
            items.push(ok(match probes.multi_unavailable() {
                None => "uprobe_multi programs load: a library attaches with one link per program".to_string(),
                Some(why) => format!("no uprobe_multi ({why}): one perf-event uprobe per function, slow to remove"),
            }));
            Some(probes.multi_unavailable().is_none())
        }
        Err(e) => {
            let lacking = privileges::lacking(&privileges::LOAD);
            let fix = if lacking.is_empty() {
                "see the lines above (kernel, BTF; a seccomp or AppArmor profile can refuse bpf() too)".to_string()
            } else {
                privileges::fix(&lacking)
            };
            items.push(fail(format!("BPF programs do not load: {e}"), fix));
            None
        }
    }
}

/// Whether uprobes can be attached with what this process holds:
/// uprobe_multi links need nothing more than loading did; perf-event
/// uprobes (no uprobe_multi) are tried for real, and refused without
/// CAP_SYS_ADMIN on kernels with the 2025 fix.
fn uprobe_permission(multi: bool) -> Item {
    let admin = privileges::SYS_ADMIN;
    if multi {
        return ok(format!("uprobes attach through uprobe_multi links: {} not needed", admin.cap));
    }
    match privileges::perf_uprobe_opens() {
        Ok(()) => ok("perf-event uprobes open"),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => fail(
            format!("{} missing: perf-event uprobes refused ({e}); it {}", admin.cap, admin.what_for),
            privileges::fix(&[admin]),
        ),
        Err(e) => fail(format!("perf-event uprobes do not open: {e}"), "use a kernel with CONFIG_UPROBE_EVENTS"),
    }
}

/// How long the S3 probe may take before the store counts as unreachable.
const S3_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// `check --s3`: whether the configured bucket is reachable and writable
/// with the configured credentials (a probe object is put and deleted).
/// Names the bucket, endpoint and failure; never a credential.
pub async fn s3(cfg: Option<S3Config>) -> Vec<Item> {
    let Some(cfg) = cfg else {
        return vec![fail(
            "no S3 bucket is configured",
            "set S3_BUCKET (or pass --s3-bucket), and S3_ENDPOINT/S3_PATH_STYLE for an S3-compatible store",
        )];
    };
    let place = format!(
        "s3://{}/{}{} (endpoint {}, region {})",
        cfg.bucket,
        cfg.prefix,
        cfg.source,
        cfg.endpoint.as_deref().unwrap_or("AWS"),
        cfg.region.as_deref().unwrap_or("from the AWS chain")
    );
    let uploader = S3Uploader::new(cfg).await;
    let probed = tokio::time::timeout(S3_PROBE_TIMEOUT, uploader.probe()).await;
    vec![match probed {
        Ok(Ok(key)) => ok(format!("{place}: reachable and writable (put and deleted {key})")),
        Ok(Err(e)) => fail(format!("{place}: {e}"), s3_fix(&e)),
        Err(_) => fail(
            format!("{place}: no answer within {} s", S3_PROBE_TIMEOUT.as_secs()),
            "check S3_ENDPOINT / --s3-endpoint and that this pod or host can reach it (network policy, proxy)",
        ),
    }]
}

fn s3_fix(e: &UploadError) -> &'static str {
    match e {
        UploadError::Credentials { .. } => {
            "give the tracer credentials with write access to the bucket: the aws-credentials Secret \
             (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), an IRSA role or the node's instance profile"
        }
        UploadError::NoBucket { .. } => "create the bucket, or set S3_BUCKET / --s3-bucket to one that exists",
        UploadError::Unreachable { .. } => {
            "check S3_ENDPOINT / --s3-endpoint (scheme, host, port), S3_REGION, and the network between here and the store"
        }
        _ => "see the store's message above; `./deploy.sh logs` shows the tracer's upload errors",
    }
}

fn target(pid: u32) -> Vec<Item> {
    let info = match discover::ProcessInfo::read(pid) {
        Ok(i) => i,
        Err(e) => {
            return vec![fail(
                e.to_string(),
                "pass the pid of a running process (`pgrep -f vllm`); in a pod set hostPID: true",
            )]
        }
    };
    let mut items = vec![ok(format!("process {pid} ({}): {}", info.comm, info.cmdline))];
    items.extend(ptrace_reach(pid));
    let libs = match discover::cuda_libraries(pid) {
        Ok(l) => l,
        Err(e) => return vec![fail(e.to_string(), privileges::fix(&[privileges::SYS_PTRACE]))],
    };
    if libs.is_empty() {
        items.push(fail(
            format!("process {pid} maps no libcuda/libcudart yet"),
            "wait until it initialises CUDA (the daemon attaches when it does), or check it is the engine process",
        ));
    }
    for lib in libs {
        let layer = symbols::layer_of(Path::new(&lib.shown)).unwrap_or(tracer_common::funcs::Layer::Driver);
        let resolved = lib.open(pid).map_err(|e| (e.to_string(), open_fix(&e))).and_then(|file| {
            symbols::resolve(&file.file, &lib.shown, layer, |_| true, false)
                .map_err(|e| (e.to_string(), LIB_FIX.to_string()))
        });
        items.push(match resolved {
            Ok(s) => {
                ok(format!("{}: {} traced functions found, {} not exported", lib.shown, s.found.len(), s.missing.len()))
            }
            Err((e, fix)) => fail(e, fix),
        });
    }
    items
}

const LIB_FIX: &str = "pass the real library with --lib, or report the library version";

/// The fix for a library of the target that could not be opened: the
/// capability when the tracer lacks it and was refused.
fn open_fix(e: &OpenError) -> String {
    let refused = matches!(e, OpenError::Open { error, .. } if error.kind() == std::io::ErrorKind::PermissionDenied);
    let lacking = privileges::lacking(&[privileges::SYS_PTRACE]);
    if refused && !lacking.is_empty() {
        privileges::fix(&lacking)
    } else {
        LIB_FIX.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_failures_with_fix() {
        let s = fail("thing broke", "do this").to_string();
        assert!(s.starts_with("[FAIL] thing broke") && s.contains("fix: do this"));
        assert_eq!(ok("fine").to_string(), "[ ok ] fine");
    }

    #[test]
    fn kernel_version_parses() {
        let (maj, _, rel) = kernel_version().unwrap();
        assert!(maj >= 3, "{rel}");
    }

    #[test]
    fn missing_pid_fails_with_fix() {
        let items = target(u32::MAX - 2);
        assert!(!items[0].ok && items[0].fix.as_deref().unwrap().contains("hostPID"));
    }
}
