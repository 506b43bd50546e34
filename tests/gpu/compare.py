"""Compares one workload's cuda-tracer trace with torch.profiler's (CUPTI)
view of the same run, and the traced run's time with an untraced one's.

    python3 compare.py --workload NAME --trace SESSION_DIR --profile PROFILE.json
                       [--plain RESULT.json --traced RESULT.json]
                       [--plain-wall S --traced-wall S] [--summary OUT.json]
    python3 compare.py --self-test

Kernel launches are counted at the driver layer (every launch reaches it,
including cuBLAS's and NCCL's, which never call the shared runtime) and
split into eager launches and launches made while a stream was being
captured (those run later, inside graph replays). The profiler's kernels
are split the same way by the API call they correlate to: a graph launch or
a direct launch. Prints Markdown.
"""

import argparse
import glob
import json
import os
import re
import sys
import tempfile
from collections import Counter


def is_launch(func):
    return func.startswith(("cuLaunch", "cudaLaunch")) and "HostFunc" not in func


def is_graph_launch(func):
    return func.startswith(("cuGraphLaunch", "cudaGraphLaunch"))


def tracer_counts(session):
    """Counts from the trace lines of a cuda-tracer session directory."""
    lines = []
    for path in sorted(glob.glob(os.path.join(session, "trace_*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            lines.extend(json.loads(l) for l in f if l.strip())
    lines.sort(key=lambda l: l["ts"])
    capturing = set()  # (pid, tid) between a BeginCapture and its EndCapture
    eager, runtime, counts = Counter(), Counter(), Counter()
    for l in lines:
        func, who = l["func"], (l["pid"], l.get("tid"))
        if l.get("ret", 0) != 0:
            continue
        if "StreamBeginCapture" in func:
            capturing.add(who)
        elif "StreamEndCapture" in func:
            capturing.discard(who)
        elif is_launch(func):
            kernel = l.get("args", {}).get("kernel", "<unnamed>")
            if l["type"] == "cuda_runtime":
                runtime[kernel] += 1
            elif who in capturing:
                counts["captured"] += 1
            else:
                eager[kernel] += 1
        elif is_graph_launch(func):
            counts["graph_" + l["type"]] += 1
    counts["calls"] = len(lines)
    return eager, runtime, counts


def profiler_counts(path):
    """Counts from torch.profiler's Chrome trace."""
    with open(path, encoding="utf-8") as f:
        events = json.load(f).get("traceEvents", [])
    api, kernels = {}, []
    for e in events:
        if e.get("ph") != "X":
            continue
        cat = str(e.get("cat", "")).lower()
        corr = e.get("args", {}).get("correlation")
        if cat == "kernel":
            kernels.append((e.get("name", "<unnamed>"), corr))
        elif cat in ("cuda_runtime", "cuda_driver") and corr is not None:
            api[corr] = e.get("name", "")
    eager, counts = Counter(), Counter()
    ran = set()
    for name, corr in kernels:
        ran.add(corr)
        if is_graph_launch(api.get(corr, "")):
            counts["graph_kernels"] += 1
        else:
            eager[name] += 1
    for corr, name in api.items():
        if is_graph_launch(name):
            counts["graph"] += 1
        elif is_launch(name) and corr not in ran:
            counts["captured"] += 1
    return eager, counts


def short_name(name):
    """The kernel's own identifier: `void ns::k<T>(int)` and `_ZN2ns1kIiEEvi` are `k`."""
    if name.startswith("_Z"):
        rest, ids = name[2:], []
        if rest.startswith("N"):
            rest = rest[1:].lstrip("KVr")
        while rest[:1].isdigit():
            digits = re.match(r"\d+", rest).group()
            n = int(digits)
            ids.append(rest[len(digits) : len(digits) + n])
            rest = rest[len(digits) + n :]
        return ids[-1] if ids else name
    depth, head = 0, ""
    for c in name:
        if c == "<":
            depth += 1
        elif c == ">":
            depth -= 1
        elif c == "(" and depth == 0:
            break
        elif depth == 0:
            head += c
    return head.split()[-1].split("::")[-1] if head.split() else name


def match(tracer, profiler):
    """Per-kernel rows: exact names (whitespace aside) first, the rest by short name."""
    norm = lambda c: Counter({re.sub(r"\s+", "", k): v for k, v in c.items()})  # noqa: E731
    t, p = norm(tracer), norm(profiler)
    rows = {k: (t.pop(k), p.pop(k)) for k in set(t) & set(p)}
    ts, ps = Counter(), Counter()
    for k, v in t.items():
        ts[short_name(k)] += v
    for k, v in p.items():
        ps[short_name(k)] += v
    for k in set(ts) | set(ps):
        old = rows.get(k, (0, 0))
        rows[k] = (old[0] + ts[k], old[1] + ps[k])
    return sorted(rows.items(), key=lambda kv: (-max(kv[1]), kv[0]))


def verdict(a, b):
    return "same" if a == b else "DIFFERENT"


def overhead(args):
    """Rows for the traced run's time against the untraced one's."""
    rows = []
    if args.plain and args.traced:
        with open(args.plain, encoding="utf-8") as f:
            plain = json.load(f)
        with open(args.traced, encoding="utf-8") as f:
            traced = json.load(f)
        ratio = traced["loop_s"] / plain["loop_s"] if plain["loop_s"] else float("nan")
        rows.append(("timed loop, untraced / traced", f"{plain['loop_s']:.3f} s / {traced['loop_s']:.3f} s", f"x{ratio:.2f}"))
    if args.plain_wall and args.traced_wall:
        ratio = args.traced_wall / args.plain_wall
        rows.append(("process wall, untraced / traced", f"{args.plain_wall:.1f} s / {args.traced_wall:.1f} s", f"x{ratio:.2f}"))
    return rows


def report(args, out=sys.stdout):
    t_eager, t_runtime, t = tracer_counts(args.trace)
    p_eager, p = profiler_counts(args.profile)
    t_graph = t["graph_cuda_api"] or t["graph_cuda_runtime"]
    summary = {
        "workload": args.workload,
        "eager_launches": [sum(t_eager.values()), sum(p_eager.values())],
        "captured_launches": [t["captured"], p["captured"]],
        "graph_replays": [t_graph, p["graph"]],
        "graph_kernels_profiler": p["graph_kernels"],
        "runtime_launches_tracer": sum(t_runtime.values()),
    }
    print(f"\n### {args.workload}\n", file=out)
    print("| what | cuda-tracer | torch.profiler | |\n| --- | ---: | ---: | --- |", file=out)
    for label, key in (("eager kernel launches", "eager_launches"), ("launches during capture", "captured_launches"), ("graph replays", "graph_replays")):
        a, b = summary[key]
        print(f"| {label} | {a} | {b} | {verdict(a, b)} |", file=out)
    print(f"| kernels run by graph replays | (not visible) | {p['graph_kernels']} | |", file=out)
    print(f"| runtime-layer launches (cudaLaunch*) | {summary['runtime_launches_tracer']} | | |", file=out)
    for label, value, ratio in overhead(args):
        print(f"| {label} | {value} | {ratio} | |", file=out)
    rows = match(t_eager, p_eager)
    summary["kernels"] = {k: list(v) for k, v in rows}
    summary["kernels_different"] = sum(1 for _, (a, b) in rows if a != b)
    print(f"\n{len(rows)} kernels, {summary['kernels_different']} with different counts (top 25 by count):\n", file=out)
    print("| kernel | cuda-tracer (driver) | torch.profiler | |\n| --- | ---: | ---: | --- |", file=out)
    for name, (a, b) in rows[:25]:
        print(f"| `{name[:90]}` | {a} | {b} | {verdict(a, b)} |", file=out)
    if args.summary:
        with open(args.summary, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)
    return summary


def self_test():
    """Runs the comparison on a small made-up trace and profile."""
    d = tempfile.mkdtemp(prefix="gpu-compare-")
    k = "void at::native::softmax_kernel<float>(float*, int)"
    lines = [
        {"ts": 1, "pid": 1, "tid": 1, "type": "cuda_runtime", "func": "cudaLaunchKernel", "ret": 0, "args": {"kernel": k}},
        {"ts": 2, "pid": 1, "tid": 1, "type": "cuda_api", "func": "cuLaunchKernel", "ret": 0, "args": {"kernel": k}},
        {"ts": 3, "pid": 1, "tid": 1, "type": "cuda_api", "func": "cuLaunchKernelEx", "ret": 0, "args": {"kernel": "_ZN3cub6kernelIiEEvi"}},
        {"ts": 4, "pid": 1, "tid": 1, "type": "cuda_api", "func": "cuStreamBeginCapture_v2", "ret": 0, "args": {}},
        {"ts": 5, "pid": 1, "tid": 1, "type": "cuda_api", "func": "cuLaunchKernel", "ret": 0, "args": {"kernel": k}},
        {"ts": 6, "pid": 1, "tid": 1, "type": "cuda_api", "func": "cuStreamEndCapture", "ret": 0, "args": {}},
        {"ts": 7, "pid": 1, "tid": 1, "type": "cuda_api", "func": "cuGraphLaunch", "ret": 0, "args": {}},
        {"ts": 8, "pid": 1, "tid": 1, "type": "cuda_api", "func": "cuLaunchKernel", "ret": 999, "args": {"kernel": k}},
    ]
    with open(os.path.join(d, "trace_0.jsonl"), "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(l) + "\n" for l in lines))
    ev = lambda cat, name, corr: {"ph": "X", "cat": cat, "name": name, "args": {"correlation": corr}}  # noqa: E731
    events = [
        ev("cuda_runtime", "cudaLaunchKernel", 1), ev("kernel", "void at::native::softmax_kernel<float>(float *, int)", 1),
        ev("cuda_driver", "cuLaunchKernelEx", 2), ev("kernel", "void cub::kernel<int>(int)", 2),
        ev("cuda_runtime", "cudaLaunchKernel", 3),
        ev("cuda_runtime", "cudaGraphLaunch", 4), ev("kernel", "void at::native::softmax_kernel<float>(float*, int)", 4),
    ]
    prof = os.path.join(d, "profile.json")
    with open(prof, "w", encoding="utf-8") as f:
        json.dump({"traceEvents": events}, f)
    ns = argparse.Namespace(workload="self-test", trace=d, profile=prof, plain=None, traced=None, plain_wall=2.0, traced_wall=3.0, summary=None)
    with open(os.devnull, "w", encoding="utf-8") as null:
        s = report(ns, null)
    assert s["eager_launches"] == [2, 2], s
    assert s["captured_launches"] == [1, 1], s
    assert s["graph_replays"] == [1, 1] and s["graph_kernels_profiler"] == 1, s
    assert len(s["kernels"]) == 2 and s["kernels_different"] == 0, s
    assert short_name("_ZN2at6native14softmax_kernelIfEEvPfi") == "softmax_kernel"
    assert short_name("void at::native::softmax_kernel<float>(float*, int)") == "softmax_kernel"
    print("compare.py self-test: ok")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--self-test", action="store_true")
    parser.add_argument("--workload", default="?")
    parser.add_argument("--trace", help="cuda-tracer session directory")
    parser.add_argument("--profile", help="torch.profiler Chrome trace")
    parser.add_argument("--plain", help="workloads.py --result of the untraced run")
    parser.add_argument("--traced", help="workloads.py --result of the traced run")
    parser.add_argument("--plain-wall", type=float)
    parser.add_argument("--traced-wall", type=float)
    parser.add_argument("--summary", help="write the numbers here (JSON)")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    if not (args.trace and args.profile):
        parser.error("--trace and --profile are required")
    report(args)
    return None


if __name__ == "__main__":
    main()
