//! The "Method" section of docs/BENCHMARKS.md.

use std::fmt::Write as _;

use crate::{bench::Mode, bench_doc::Report};

pub fn method(r: &Report) -> String {
    let mut o = String::new();
    let med = |m: Mode, t: u32| r.per_call.iter().find(|x| x.mode == m && x.threads == t).map(|x| x.median);
    let trap = match (med(Mode::Empty, 1), med(Mode::Base, 1)) {
        (Some(limit), Some(base)) => format!("{:.1} µs", (limit - base) / 1000.0),
        _ => "(not measured)".into(),
    };
    let _ = writeln!(o, "## Method\n");
    let _ = writeln!(
        o,
        "- **Ratios against a baseline from the same run.** The limit is `cuda-tracer record --empty-probes`: \
         do-nothing BPF programs on the same uprobe+uretprobe points (same libraries, same functions) as the full \
         tracer. It is what any uprobe-based tracer pays before it does anything. Every ratio divides by the \
         limit's median from this run, with the same thread count."
    );
    let _ = writeln!(
        o,
        "- **The trap dominates.** On this machine one uprobe+uretprobe hit costs about {trap} per call \
         (limit minus no tracer, 1 thread): two int3 traps into the kernel, slow on this VM. The call itself \
         costs about a nanosecond. So the numbers compare tracers by what they add to that trap, and no uprobe \
         tracer can go below the limit row."
    );
    let _ = writeln!(
        o,
        "- **Interleaved, isolated sessions.** Each tracer under test traces its own copy of the workload and \
         the fixture libraries. A uprobe binds to an inode, so with separate copies all tracers stay attached \
         at once and a session's probes never fire on another session's calls. Nor do probes that other \
         programs on the machine hold on other copies. The repetitions go round the tracers in turn, with a \
         different tracer first each time. Noise from the rest of the machine then spreads over every tracer \
         and shows in the min–max range."
    );
    let _ = writeln!(
        o,
        "- **Background probe release.** When cuda-tracer exits, a child process named `[cuda-tracer]` holds \
         the probes until the kernel has removed them. That takes about 0.1 s per probe, one after another. \
         While it lives the probes still trap (about {trap} per call) and new attaches wait behind it. Fresh \
         copies per session mean no release in progress can trap a measured call. The harness makes itself \
         the child subreaper, so these children become its own, and it waits for all of them before it \
         writes this file. This run waited {:.0} s after the last session. Run by hand, wait until \
         `pgrep -f '^\\[cuda-tracer\\]'` finds nothing before you measure again on the same files.",
        r.release_secs
    );
    let tracefs = std::path::Path::new("/sys/kernel/tracing/uprobe_events").exists();
    let _ = writeln!(
        o,
        "- **bpftrace** is the distribution's package, and the script is the seed's approach: one JSON line \
         per call, `printf` to a file (`bpftrace -o FILE`). \"uprobe only\" is the seed's script. \
         \"uprobe+uretprobe\" also records the duration and the return value, as cuda-tracer does. Both probe \
         only the benchmarked function. Lines are delivered through bpftrace's perf buffer; its `Lost N events` \
         reports (stdout or stderr) are summed.{}",
        if tracefs {
            ""
        } else {
            " tracefs is not mounted on this machine. bpftrace attaches through the perf uprobe PMU without it. \
             At exit it prints `failed to detach probe` because it cannot open \
             `/sys/kernel/tracing/uprobe_events`, but the probes go away when it closes them. Nothing was mounted \
             for the benchmark."
        }
    );
    let _ = writeln!(
        o,
        "- **Readiness.** `record` attaches before it starts its command. For bpftrace and the daemon, the \
         harness runs short loops until a call traps, then waits a little more for the other probes."
    );
    let _ = writeln!(
        o,
        "- **Loss** counts lines per pid in what each tracer wrote and compares them with the calls the \
         workload made. For cuda-tracer the per-session totals are also checked against `metadata.json` \
         (`counts.calls`, `dropped_events`, `drops`). The 4 KiB ring run shows that a full ring drops \
         calls, and counts every drop."
    );
    let _ = writeln!(
        o,
        "- **Daemon loads.** The C workload has no rate limit. The \"serving loop\" row paces itself with \
         `--step-delay-us`: 16 calls per step, runtime and driver, with launches, copies and events. The bench \
         loop rows run as fast as the machine allows, and the table gives the rate they reached. CPU ticks are \
         10 ms, so short windows have about ±0.5 % resolution."
    );
    let _ = writeln!(
        o,
        "- **Sizes:** {} repetitions; per-call N = {} (probed) / {} (unprobed); loss N = {} per thread (half \
         with 4 threads); daemon windows ≈ {:.0} s; pipeline {} events × {} runs.",
        r.sizes.reps,
        r.sizes.per_call,
        r.sizes.unprobed,
        r.sizes.loss,
        r.sizes.daemon_secs,
        r.sizes.pipeline_events,
        r.sizes.pipeline_reps
    );
    o
}
