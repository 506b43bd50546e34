//! The capabilities tracing needs: which of them this process lacks, what
//! each is for, and the fix to tell a user (a container's
//! `securityContext.capabilities.add`), for `check` and for the daemon's
//! errors when the kernel refuses it.

use std::sync::OnceLock;

use caps::{CapSet, Capability};

/// A capability the tracer may need, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Need {
    pub cap: Capability,
    /// What it is for, said to a user whose tracer lacks it.
    pub what_for: &'static str,
}

impl Need {
    /// Its name in a container's `securityContext.capabilities.add`.
    pub fn k8s_name(&self) -> String {
        self.cap.to_string().trim_start_matches("CAP_").to_string()
    }
}

/// Loading the BPF programs and creating their maps.
pub const BPF: Need = Need { cap: Capability::CAP_BPF, what_for: "loads the BPF programs and creates their maps" };
/// Loading tracing programs (uprobes, tracepoints) that read user memory.
pub const PERFMON: Need = Need {
    cap: Capability::CAP_PERFMON,
    what_for: "lets tracing programs (uprobes, tracepoints) load and read the traced process's memory",
};
/// Another process's maps and files (vLLM in another container).
pub const SYS_PTRACE: Need = Need {
    cap: Capability::CAP_SYS_PTRACE,
    what_for: "reads another process's /proc/PID/maps and opens its libraries through /proc/PID/root \
               (vLLM in another container)",
};
/// Perf-event uprobes, where uprobe_multi links are not available.
pub const SYS_ADMIN: Need = Need {
    cap: Capability::CAP_SYS_ADMIN,
    what_for: "opens perf-event uprobes, which the tracer uses where the kernel has no uprobe_multi links \
               (before 6.6) and which kernels with the 2025 fix \"perf: Require CAP_SYS_ADMIN for uprobes\" \
               (CVE-2025-38466: 6.16, 6.15.7, 6.12.39, 6.6.99, 6.1.146, 5.15.189, 5.10.240) refuse without it",
};

/// What loading the programs needs.
pub const LOAD: [Need; 2] = [BPF, PERFMON];

/// This process's effective capabilities (they do not change while it
/// runs); `None` where they cannot be read.
fn effective() -> Option<&'static caps::CapsHashSet> {
    static SET: OnceLock<Option<caps::CapsHashSet>> = OnceLock::new();
    SET.get_or_init(|| caps::read(None, CapSet::Effective).ok()).as_ref()
}

/// Whether `set` holds `need` in effect: CAP_SYS_ADMIN also grants what
/// CAP_BPF and CAP_PERFMON do (the kernel's bpf_capable and
/// perfmon_capable).
fn holds_in(set: &caps::CapsHashSet, need: &Need) -> bool {
    let admin_covers = matches!(need.cap, Capability::CAP_BPF | Capability::CAP_PERFMON);
    set.contains(&need.cap) || (admin_covers && set.contains(&Capability::CAP_SYS_ADMIN))
}

/// Those of `needs` this process lacks. Unreadable capabilities count as
/// held: no claim is made that cannot be backed.
pub fn lacking(needs: &[Need]) -> Vec<Need> {
    effective().map_or_else(Vec::new, |set| lacking_in(set, needs))
}

fn lacking_in(set: &caps::CapsHashSet, needs: &[Need]) -> Vec<Need> {
    needs.iter().filter(|n| !holds_in(set, n)).copied().collect()
}

/// The capabilities process `pid` holds (permitted) that this process does
/// not hold in effect: reading its maps and files needs CAP_SYS_PTRACE
/// unless there are none (the kernel's ptrace access check, same uid).
/// `None` where either set cannot be read.
pub fn held_beyond_ours(pid: u32) -> Option<Vec<Capability>> {
    let theirs = caps::read(Some(i32::try_from(pid).ok()?), CapSet::Permitted).ok()?;
    let ours = effective()?;
    let mut beyond: Vec<Capability> = theirs.difference(ours).copied().collect();
    beyond.sort_by_key(|c| c.index());
    Some(beyond)
}

/// The fix for lacking `needs`, in the words of a pod spec.
pub fn fix(needs: &[Need]) -> String {
    let names: Vec<String> = needs.iter().map(Need::k8s_name).collect();
    format!(
        "add {} to the tracer container's securityContext.capabilities.add (on a host: run it as root)",
        names.join(" and ")
    )
}

/// `"; the tracer lacks CAP_X (what it is for): fix"` for each of `needs`
/// it lacks, or nothing when it holds them all: appended to the errors of
/// the operations that need them.
pub fn lacking_hint(needs: &[Need]) -> String {
    said_lacking(&lacking(needs))
}

fn said_lacking(missing: &[Need]) -> String {
    if missing.is_empty() {
        return String::new();
    }
    let said: Vec<String> = missing.iter().map(|n| format!("{} ({})", n.cap, n.what_for)).collect();
    format!("; the tracer lacks {}: {}", said.join(" and "), fix(missing))
}

/// The hint for a refused read of another process's `/proc` entries.
pub fn ptrace_hint(error: &std::io::Error) -> String {
    if error.kind() == std::io::ErrorKind::PermissionDenied {
        lacking_hint(&[SYS_PTRACE])
    } else {
        String::new()
    }
}

/// The first fields of `struct perf_event_attr` (`PERF_ATTR_SIZE_VER1`):
/// what a uprobe event needs.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    /// The flag bits; bit 0 is `disabled`.
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    /// `uprobe_path` for the uprobe PMU.
    config1: u64,
    /// `probe_offset` for the uprobe PMU.
    config2: u64,
}
const _: () = assert!(std::mem::size_of::<PerfEventAttr>() == 72);

/// Whether the kernel lets this process open a perf-event uprobe: one is
/// opened, disabled (never inserted into any process), on this very
/// binary and closed again. `Err` is the kernel's refusal.
pub fn perf_uprobe_opens() -> std::io::Result<()> {
    let pmu = std::fs::read_to_string("/sys/bus/event_source/devices/uprobe/type")?;
    let pmu: u32 = pmu.trim().parse().map_err(std::io::Error::other)?;
    let path = c"/proc/self/exe";
    let attr = PerfEventAttr {
        type_: pmu,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        flags: 1,
        config1: path.as_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: `attr` is a valid perf_event_attr prefix whose `size` says so;
    // `config1` points at a NUL-terminated path alive for the call; pid -1
    // with cpu 0 is a system-wide event on CPU 0; no group, no flags.
    let fd = unsafe { libc::syscall(libc::SYS_perf_event_open, std::ptr::from_ref(&attr), -1, 0, -1, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a successful perf_event_open returns a new descriptor that
    // nothing else owns; it is closed here.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// The hint for a refused perf-event uprobe.
pub fn perf_uprobe_hint(refused: bool) -> String {
    if refused {
        lacking_hint(&[SYS_ADMIN])
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_fixes_speak_the_pod_spec() {
        assert_eq!(SYS_PTRACE.k8s_name(), "SYS_PTRACE");
        assert_eq!(BPF.cap.to_string(), "CAP_BPF");
        let fix = fix(&[BPF, PERFMON]);
        assert!(fix.starts_with("add BPF and PERFMON to") && fix.contains("securityContext.capabilities.add"), "{fix}");
    }

    #[test]
    fn sys_admin_covers_bpf_and_perfmon_but_not_ptrace() {
        let admin: caps::CapsHashSet = [Capability::CAP_SYS_ADMIN].into_iter().collect();
        assert_eq!(lacking_in(&admin, &[BPF, PERFMON, SYS_PTRACE, SYS_ADMIN]), [SYS_PTRACE]);
        let shipped: caps::CapsHashSet =
            [Capability::CAP_BPF, Capability::CAP_PERFMON, Capability::CAP_SYS_PTRACE].into_iter().collect();
        assert_eq!(lacking_in(&shipped, &[BPF, PERFMON, SYS_PTRACE, SYS_ADMIN]), [SYS_ADMIN]);
        let no_perfmon: caps::CapsHashSet = [Capability::CAP_BPF].into_iter().collect();
        let said = said_lacking(&lacking_in(&no_perfmon, &LOAD));
        assert!(said.starts_with("; the tracer lacks CAP_PERFMON (lets tracing programs"), "{said}");
        assert!(
            said.ends_with(
                "add PERFMON to the tracer container's securityContext.capabilities.add (on a host: run it as root)"
            ),
            "{said}"
        );
        assert_eq!(said_lacking(&[]), "");
    }
}
