#!/usr/bin/env bash
# Removes the cuda-tracer admission webhook: first the
# MutatingWebhookConfiguration (so the API server stops calling it), then its
# namespace with the Deployment, Service, Secret and ConfigMap. Pods already
# injected keep their sidecar until they are recreated. Idempotent.
#
#   uninstall.sh [--keep-certs]   (--keep-certs leaves $CERT_DIR in place)
set -euo pipefail

namespace="${WEBHOOK_NAMESPACE:-cuda-tracer-system}"
cert_dir="${CERT_DIR:-./webhook-certs}"
keep_certs=0

die() {
    echo "uninstall.sh: $*" >&2
    exit 1
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --keep-certs) keep_certs=1; shift ;;
        -h | --help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

command -v kubectl >/dev/null 2>&1 || die "kubectl is not installed: install it and rerun"
kubectl version --request-timeout=10s >/dev/null 2>&1 \
    || die "no cluster answers: check KUBECONFIG / the current context (kubectl cluster-info), then rerun"

kubectl delete mutatingwebhookconfiguration cuda-tracer-webhook --ignore-not-found
kubectl delete namespace "$namespace" --ignore-not-found --wait=true --timeout=120s \
    || die "namespace $namespace is still terminating: kubectl get all -n $namespace"
if [[ $keep_certs -eq 0 && -d "$cert_dir" ]]; then
    rm -f "$cert_dir"/ca.crt "$cert_dir"/ca.key "$cert_dir"/tls.crt "$cert_dir"/tls.key "$cert_dir"/secret.yaml
    rmdir "$cert_dir" 2>/dev/null || true
fi
echo "cuda-tracer webhook removed"
