#!/usr/bin/env bash
# The GPU check (docs/GPU_CHECK.md): on a machine with a GPU, PyTorch (CUDA)
# and transformers, runs three workloads (eager ops, a static-cache decoder
# replayed from a CUDA graph, a one-rank NCCL all-reduce), each three times:
# untraced, under `cuda-tracer record`, and under `record` with
# torch.profiler on; then compares kernel launches and graph replays, tracer
# against profiler, and the traced run's time against the untraced one's.
# Needs nothing from the network.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: tests/gpu/run.sh [--tracer PATH] [--out DIR] [--iters N] [--workloads LIST] [--dry-run]

  --tracer PATH     the cuda-tracer release binary (default: $CUDA_TRACER_BIN,
                    else target/gpu/cuda-tracer, else target/release/cuda-tracer)
  --out DIR         where traces, profiles and report.md go (default: results/gpu-check)
  --iters N         iterations of each workload's loop (default: 50)
  --workloads LIST  comma-separated, from eager,decoder,nccl (default: all three)
  --dry-run         check the Python files and print the commands; needs no GPU
  -h, --help        this text

The tracer needs root (it loads BPF programs): run as root or with password-less sudo.
EOF
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
py="${PYTHON:-python3}"
tracer="${CUDA_TRACER_BIN:-}"
out="$root/results/gpu-check"
iters=50
workloads="eager,decoder,nccl"
dry_run=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --tracer) tracer="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --iters) iters="$2"; shift 2 ;;
        --workloads) workloads="$2"; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done

if [[ ! "$iters" =~ ^[1-9][0-9]*$ ]]; then
    echo "run.sh: --iters wants a positive number, got '$iters'" >&2
    exit 2
fi
IFS=',' read -r -a selected <<< "$workloads"
for w in "${selected[@]}"; do
    case "$w" in
        eager | decoder | nccl) ;;
        *) echo "run.sh: unknown workload '$w' (choose from eager,decoder,nccl)" >&2; exit 2 ;;
    esac
done

# The Python files must at least compile, and the comparison must count a
# made-up trace right, before anything runs for real.
pyc_dir="$(mktemp -d)"
trap 'rm -rf "$pyc_dir"' EXIT
"$py" -c 'import os, py_compile, sys
for f in sys.argv[2:]:
    py_compile.compile(f, cfile=os.path.join(sys.argv[1], os.path.basename(f) + "c"), doraise=True)' \
    "$pyc_dir" "$here/workloads.py" "$here/compare.py"
"$py" "$here/compare.py" --self-test

if [[ -z "$tracer" ]]; then
    for candidate in "$root/target/gpu/cuda-tracer" "$root/target/release/cuda-tracer"; do
        if [[ -x "$candidate" ]]; then
            tracer="$candidate"
            break
        fi
    done
fi

sudo_cmd=()
if [[ "$(id -u)" -ne 0 ]]; then
    sudo_cmd=(sudo -n -E)
fi

# Runs (or, with --dry-run, prints) a command; its wall time in seconds goes
# to the file named by the first argument.
timed() {
    local wall_file="$1"
    shift
    if [[ "$dry_run" -eq 1 ]]; then
        printf '+'
        printf ' %q' "$@"
        printf '\n'
        echo 1 > "$wall_file"
        return 0
    fi
    local start end
    start="$(date +%s.%N)"
    "$@"
    end="$(date +%s.%N)"
    "$py" -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.3f}")' "$start" "$end" > "$wall_file"
}

if [[ "$dry_run" -eq 0 ]]; then
    if [[ -z "$tracer" || ! -x "$tracer" ]]; then
        echo "run.sh: no cuda-tracer binary: build it with 'cargo build --release -p cuda-tracer' and pass --tracer" >&2
        exit 2
    fi
    if ! "$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        echo "run.sh: torch.cuda.is_available() is False here: this check needs a GPU (try --dry-run)" >&2
        exit 2
    fi
    "$py" -c 'import torch, transformers; print("torch", torch.__version__, "CUDA", torch.version.cuda, "transformers", transformers.__version__, torch.cuda.get_device_name())'
    "$tracer" --version || true
else
    tracer="${tracer:-cuda-tracer}"
fi

# libcudart that torch loads (attached up front so no early call is missed).
mapfile -t libs < <("$py" "$here/workloads.py" libs 2>/dev/null || true)
lib_args=()
for lib in "${libs[@]}"; do
    lib_args+=(--lib "$lib")
done

mkdir -p "$out"
report="$out/report.md"
echo "# GPU check: $(date -u +%Y-%m-%dT%H:%MZ), $iters iterations" > "$report"
failed=()
for w in "${selected[@]}"; do
    dir="$out/$w"
    rm -rf "$dir"
    mkdir -p "$dir"
    run_py=("$py" "$here/workloads.py" "$w" --iters "$iters")
    record=("${sudo_cmd[@]}" "$tracer" record --scan-interval-ms 200 "${lib_args[@]}")
    echo "== $w" >&2
    if ! timed "$dir/plain.wall" "${run_py[@]}" --result "$dir/plain.json" \
        || ! timed "$dir/traced.wall" "${record[@]}" -o "$dir/traced-trace" -- "${run_py[@]}" \
            --result "$dir/traced.json" \
        || ! timed "$dir/profiled.wall" "${record[@]}" -o "$dir/trace" -- "${run_py[@]}" \
            --result "$dir/profiled.json" --profile "$dir/profile.json"; then
        echo "run.sh: workload $w failed (see above)" >&2
        failed+=("$w")
        continue
    fi
    if [[ "$dry_run" -eq 1 ]]; then
        continue
    fi
    "$py" "$here/compare.py" --workload "$w" --trace "$dir/trace" --profile "$dir/profile.json" \
        --plain "$dir/plain.json" --traced "$dir/traced.json" \
        --plain-wall "$(cat "$dir/plain.wall")" --traced-wall "$(cat "$dir/traced.wall")" \
        --summary "$dir/summary.json" | tee -a "$report"
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "run.sh: failed: ${failed[*]}" | tee -a "$report" >&2
    exit 1
fi
echo "run.sh: report in $report" >&2
