#!/usr/bin/env bash
# One GPU node ready for ./deploy.sh: the NVIDIA container toolkit, K3s with
# NVIDIA's runtime as the default container runtime, and NVIDIA's device
# plugin (so pods can request nvidia.com/gpu).
# Usage: sudo K3S_INSTALLER_SHA256=<sha256> ./infrastructure/k3s-install.sh
# Settings (environment): K3S_VERSION (v1.31.4+k3s1, pinned),
#   K3S_INSTALLER_SHA256 (SHA-256 of K3s's install.sh at that tag; required),
#   DEVICE_PLUGIN_VERSION (v0.17.1), GPU_WAIT_SECS (300).
# Ubuntu 22.04 / Debian 12 with the NVIDIA driver (>= 525) installed.
#
# Nothing downloaded runs as root before it is checked: K3s's installer is
# fetched for the pinned tag into a file and run only if its SHA-256 is the
# pinned one (the installer then checks the K3s binary against the release's
# sha256sum file). The admin kubeconfig is written 0600: it is cluster-admin.
set -euo pipefail

K3S_VERSION="${K3S_VERSION:-v1.31.4+k3s1}"
# Pin it after reading the script once (docs/SECURITY.md, "Installing K3s"):
#   curl -fsSL "https://raw.githubusercontent.com/k3s-io/k3s/v1.31.4%2Bk3s1/install.sh" | sha256sum
K3S_INSTALLER_SHA256="${K3S_INSTALLER_SHA256:-}"
DEVICE_PLUGIN_VERSION="${DEVICE_PLUGIN_VERSION:-v0.17.1}"
GPU_WAIT_SECS="${GPU_WAIT_SECS:-300}"
KUBECONFIG_PATH=/etc/rancher/k3s/k3s.yaml
KUBECONFIG_MODE=0600

# log, die, need
# shellcheck source=infrastructure/common.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

preflight() {
    [[ $EUID -eq 0 ]] || die "this script installs system packages and services" "run it as root: sudo $0"
    need apt-get "use Ubuntu 22.04+ or Debian 12 (this script installs with apt)"
    need curl "apt-get install -y curl"
    need gpg "apt-get install -y gnupg"
    need systemctl "K3s runs as a systemd service: use a systemd-based distribution"
    need nvidia-smi "install the NVIDIA driver (>= 525), e.g. sudo ubuntu-drivers install, then reboot"
    nvidia-smi -L >/dev/null 2>&1 || die "nvidia-smi sees no GPU" "check the driver: nvidia-smi (a reboot after installing it is usually needed)"
    local release major minor
    release="$(uname -r)"
    IFS=. read -r major minor _ <<<"$release"
    if ((major < 5 || (major == 5 && minor < 15))); then
        die "kernel $release is older than 5.15, which cuda-tracer needs (ring buffer, uprobe cookies)" \
            "upgrade the kernel (Ubuntu 22.04 ships 5.15)"
    fi
    [[ -r /sys/kernel/btf/vmlinux ]] ||
        log "warning: no /sys/kernel/btf/vmlinux: the tracer finds child processes by /proc scans only"
}

install_container_toolkit() {
    if command -v nvidia-container-runtime >/dev/null 2>&1; then
        log "NVIDIA container toolkit already installed"
        return
    fi
    log "installing the NVIDIA container toolkit"
    local keyring=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
    curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey | gpg --batch --yes --dearmor -o "$keyring"
    curl -fsSL https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list |
        sed "s#deb https://#deb [signed-by=$keyring] https://#g" >/etc/apt/sources.list.d/nvidia-container-toolkit.list
    apt-get update
    apt-get install -y nvidia-container-toolkit
}

# Fails unless FILE's SHA-256 is EXPECTED (64 hex digits).
verify_sha256() {
    local file="$1" expected="$2" what="$3" actual
    actual="$(sha256sum "$file")"
    actual="${actual%% *}"
    if [[ ! "$expected" =~ ^[0-9a-f]{64}$ ]]; then
        die "no pinned SHA-256 for $what (got '${expected}')" \
            "read $what, then rerun with K3S_INSTALLER_SHA256=$actual if it is what you expect"
    fi
    [[ "$actual" == "$expected" ]] ||
        die "$what has SHA-256 $actual, not the pinned $expected: refusing to run it" \
            "check K3S_VERSION and K3S_INSTALLER_SHA256 (a new K3s release needs a new pin)"
}

# The kubeconfig is cluster-admin: root only.
protect_kubeconfig() {
    if [[ -e "$KUBECONFIG_PATH" ]]; then
        chmod "$KUBECONFIG_MODE" "$KUBECONFIG_PATH"
    fi
}

install_k3s() {
    if systemctl is-active --quiet k3s; then
        log "K3s already running ($(k3s --version | head -n 1))"
        protect_kubeconfig
        return
    fi
    log "installing K3s $K3S_VERSION with nvidia as the default runtime"
    local installer url
    url="https://raw.githubusercontent.com/k3s-io/k3s/${K3S_VERSION//+/%2B}/install.sh"
    installer="$(mktemp "${TMPDIR:-/tmp}/k3s-install.XXXXXX")"
    # shellcheck disable=SC2064 # expand now: the local is gone when the trap runs
    trap "rm -f '$installer'" EXIT
    curl -fsSL --proto '=https' --tlsv1.2 -o "$installer" "$url" ||
        die "cannot download $url" "check the network and K3S_VERSION ($K3S_VERSION)"
    verify_sha256 "$installer" "$K3S_INSTALLER_SHA256" "$url"
    # K3s finds nvidia-container-runtime at start and adds it to its
    # containerd; --default-runtime makes every pod use it, so GPU pods need
    # no runtimeClassName.
    INSTALL_K3S_VERSION="$K3S_VERSION" sh "$installer" server \
        --default-runtime nvidia \
        --write-kubeconfig-mode "$KUBECONFIG_MODE"
    protect_kubeconfig
}

wait_for_node() {
    log "waiting for the node to be Ready"
    local _
    for _ in $(seq 1 60); do
        if k3s kubectl get nodes 2>/dev/null | grep -q ' Ready '; then
            return
        fi
        sleep 5
    done
    die "the K3s node did not become Ready in 5 minutes" "journalctl -u k3s -e"
}

install_device_plugin() {
    log "installing the NVIDIA device plugin $DEVICE_PLUGIN_VERSION"
    k3s kubectl apply -f \
        "https://raw.githubusercontent.com/NVIDIA/k8s-device-plugin/$DEVICE_PLUGIN_VERSION/deployments/static/nvidia-device-plugin.yml"
    # The DaemonSet variant (k8s/daemonset/) runs on nodes with this label;
    # NVIDIA's GPU feature discovery would set it, K3s alone does not.
    local node
    node="$(k3s kubectl get nodes -o jsonpath='{.items[0].metadata.name}')"
    k3s kubectl label node "$node" nvidia.com/gpu.present=true --overwrite
}

wait_for_gpus() {
    log "waiting until the node advertises nvidia.com/gpu"
    local deadline=$((SECONDS + GPU_WAIT_SECS)) gpus=""
    while ((SECONDS < deadline)); do
        gpus="$(k3s kubectl get nodes -o jsonpath='{.items[0].status.allocatable.nvidia\.com/gpu}' 2>/dev/null || true)"
        if [[ -n "$gpus" && "$gpus" != 0 ]]; then
            log "node has $gpus GPU(s)"
            return
        fi
        sleep 5
    done
    die "no nvidia.com/gpu on the node after ${GPU_WAIT_SECS}s" \
        "k3s kubectl -n kube-system logs -l name=nvidia-device-plugin-ds (is nvidia the default runtime? grep nvidia /var/lib/rancher/k3s/agent/etc/containerd/config.toml)"
}

main() {
    preflight
    install_container_toolkit
    install_k3s
    wait_for_node
    install_device_plugin
    wait_for_gpus
    cat <<EOF

K3s is ready. $KUBECONFIG_PATH is cluster-admin and readable by root only:
run ./deploy.sh as root, or copy it to ~/.kube/config (mode 0600) for your user.
  export KUBECONFIG=$KUBECONFIG_PATH
  ./deploy.sh all        # build the sidecar image, deploy, test, verify
EOF
}

# Sourcing the script (tests) defines the functions without running them.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
