#!/usr/bin/env bash
# One GPU node ready for ./deploy.sh: the NVIDIA container toolkit, K3s with
# NVIDIA's runtime as the default container runtime, and NVIDIA's device
# plugin (so pods can request nvidia.com/gpu).
# Usage: sudo ./infrastructure/k3s-install.sh
# Settings (environment): K3S_VERSION (empty: the stable channel),
#   DEVICE_PLUGIN_VERSION (v0.17.1), GPU_WAIT_SECS (300).
# Ubuntu 22.04 / Debian 12 with the NVIDIA driver (>= 525) installed.
set -euo pipefail

K3S_VERSION="${K3S_VERSION:-}"
DEVICE_PLUGIN_VERSION="${DEVICE_PLUGIN_VERSION:-v0.17.1}"
GPU_WAIT_SECS="${GPU_WAIT_SECS:-300}"
KUBECONFIG_PATH=/etc/rancher/k3s/k3s.yaml

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

install_k3s() {
    if systemctl is-active --quiet k3s; then
        log "K3s already running ($(k3s --version | head -n 1))"
        return
    fi
    log "installing K3s ${K3S_VERSION:-(stable channel)} with nvidia as the default runtime"
    # K3s finds nvidia-container-runtime at start and adds it to its
    # containerd; --default-runtime makes every pod use it, so GPU pods need
    # no runtimeClassName.
    curl -sfL https://get.k3s.io |
        INSTALL_K3S_VERSION="$K3S_VERSION" sh -s - server \
            --default-runtime nvidia \
            --write-kubeconfig-mode 0644
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

K3s is ready. Next:
  export KUBECONFIG=$KUBECONFIG_PATH
  ./deploy.sh all        # build the sidecar image, deploy, test, verify
EOF
}

main "$@"
