#!/usr/bin/env bash
# Messages and checks shared by deploy.sh and infrastructure/k3s-install.sh,
# which source this file: `log` a step, `die` with the fix, `need` a command.
set -euo pipefail

log() { printf '==> %s\n' "$*"; }
die() {
    printf 'error: %s\n' "$1" >&2
    [[ $# -gt 1 ]] && printf '  fix: %s\n' "$2" >&2
    exit 1
}
need() {
    command -v "$1" >/dev/null 2>&1 || die "\`$1\` is missing" "$2"
}
