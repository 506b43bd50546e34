#!/usr/bin/env bash
# Installs the cuda-tracer admission webhook into the current cluster:
# namespace, ServiceAccount, settings ConfigMap, TLS Secret (gen-certs.sh),
# Service, Deployment, MutatingWebhookConfiguration with its caBundle
# (patch-ca-bundle.sh). Idempotent: rerun it after changing a setting.
#
# Settings (environment):
#   TRACER_IMAGE        image with cuda-tracer, for the webhook and the sidecar
#                       (default cuda-tracer:latest)
#   TARGET_NAMESPACE    namespace whose pods get the tracer (downstream-llm-d)
#   TARGET_LABEL_KEY    pod label that selects them (llm-d.ai/inferenceServing)
#   TARGET_LABEL_VALUE  its value (true)
#   S3_BUCKET S3_PREFIX S3_ENDPOINT S3_REGION S3_PATH_STYLE AWS_CREDENTIALS_SECRET
#   TRACES_PVC TARGET_PROCESS VLLM_METRICS_URL TRACER_PRIVILEGED TRACER_SYS_ADMIN SIDECAR_ENV
#                       passed to the injected sidecar (docs/WEBHOOK.md)
#   SIDECAR_SECRET_ENV  sidecar env from Secrets, VAR=SECRET:KEY,... (a secret in
#                       SIDECAR_ENV makes the webhook refuse to start)
#   PROFILE_STEPS       the sidecar's step window (100..150; empty: none)
#   CLIENT_TIMEOUT_SECS MAX_CONNECTIONS MAX_CONCURRENT_REVIEWS
#                       the webhook server's bounds (docs/SECURITY.md)
#   WEBHOOK_NAMESPACE   where the webhook runs (cuda-tracer-system)
#   CERT_DIR            where certificates are kept (./webhook-certs)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
namespace="${WEBHOOK_NAMESPACE:-cuda-tracer-system}"
export CERT_DIR="${CERT_DIR:-./webhook-certs}"
image="${TRACER_IMAGE:-cuda-tracer:latest}"
target_namespace="${TARGET_NAMESPACE:-downstream-llm-d}"
label_key="${TARGET_LABEL_KEY:-llm-d.ai/inferenceServing}"
label_value="${TARGET_LABEL_VALUE:-true}"

die() {
    echo "install.sh: $*" >&2
    exit 1
}

[[ "${1:-}" == "-h" || "${1:-}" == "--help" ]] && { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0; }
[[ $# -eq 0 ]] || die "unknown argument '$1': settings come from the environment (see --help)"
command -v kubectl >/dev/null 2>&1 || die "kubectl is not installed: install it (https://kubernetes.io/docs/tasks/tools/) and rerun"
command -v openssl >/dev/null 2>&1 || die "openssl is not installed: install it (apt-get install openssl) and rerun"
kubectl version --request-timeout=10s >/dev/null 2>&1 \
    || die "no cluster answers: check KUBECONFIG / the current context (kubectl cluster-info), then rerun"
[[ "$namespace" == "cuda-tracer-system" ]] \
    || die "WEBHOOK_NAMESPACE must be cuda-tracer-system: the manifests in $here name it"

# The injected sidecar shares the host's pid namespace and adds BPF, PERFMON
# and SYS_PTRACE (or runs privileged): only the `privileged` Pod
# Security level admits that. A namespace enforcing baseline or restricted
# would reject every labelled pod once the webhook injects it.
check_pod_security() {
    local ns="$target_namespace" label=pod-security.kubernetes.io enforce warn
    if [[ "$ns" == "*" ]]; then
        echo "note: TARGET_NAMESPACE=*: every namespace with labelled pods needs $label/enforce=privileged"
        return
    fi
    if ! kubectl get namespace "$ns" >/dev/null 2>&1; then
        echo "note: namespace $ns does not exist yet; create it with the privileged Pod Security level:"
        echo "  kubectl create namespace $ns && kubectl label namespace $ns $label/enforce=privileged"
        return
    fi
    enforce="$(kubectl get namespace "$ns" -o "jsonpath={.metadata.labels.pod-security\.kubernetes\.io/enforce}")"
    warn="$(kubectl get namespace "$ns" -o "jsonpath={.metadata.labels.pod-security\.kubernetes\.io/warn}")"
    case "$enforce" in
    "" | privileged) ;;
    *) die "namespace $ns enforces Pod Security level '$enforce' ($label/enforce), which rejects the tracer sidecar (hostPID and the BPF, PERFMON, SYS_PTRACE capabilities): every labelled pod would fail to start. Fix: kubectl label namespace $ns $label/enforce=privileged --overwrite, then rerun" ;;
    esac
    if [[ -z "$enforce" ]]; then
        echo "note: namespace $ns has no $label/enforce label: the cluster's default level applies (privileged unless your admission configuration sets another); to be sure: kubectl label namespace $ns $label/enforce=privileged"
    fi
    if [[ -n "$warn" && "$warn" != privileged ]]; then
        echo "note: namespace $ns warns at Pod Security level '$warn': creating labelled pods prints warnings (kubectl label namespace $ns $label/warn=privileged --overwrite silences them)"
    fi
}
echo "==> Pod Security of namespace $target_namespace"
check_pod_security

echo "==> namespace, ServiceAccount, Service"
kubectl apply -f "$here/namespace.yaml" -f "$here/serviceaccount.yaml" -f "$here/service.yaml"

echo "==> settings ConfigMap"
settings=(
    --from-literal=TARGET_NAMESPACE="$target_namespace"
    --from-literal=TARGET_LABEL_KEY="$label_key"
    --from-literal=TARGET_LABEL_VALUE="$label_value"
    --from-literal=TRACER_IMAGE="$image"
)
for var in TRACER_IMAGE_PULL_POLICY TARGET_PROCESS VLLM_METRICS_URL S3_BUCKET S3_PREFIX S3_ENDPOINT \
    S3_REGION S3_PATH_STYLE AWS_CREDENTIALS_SECRET TRACES_PVC TRACER_PRIVILEGED TRACER_SYS_ADMIN SIDECAR_ENV SIDECAR_SECRET_ENV \
    CLIENT_TIMEOUT_SECS MAX_CONNECTIONS MAX_CONCURRENT_REVIEWS; do
    if [[ -n "${!var:-}" ]]; then
        settings+=(--from-literal="$var=${!var}")
    fi
done
# PROFILE_STEPS is passed on even when empty: "" turns the sidecar's window off.
if [[ -n "${PROFILE_STEPS+set}" ]]; then
    settings+=(--from-literal="PROFILE_STEPS=$PROFILE_STEPS")
fi
kubectl create configmap cuda-tracer-webhook -n "$namespace" "${settings[@]}" --dry-run=client -o yaml \
    | kubectl apply -f -

echo "==> TLS certificate and Secret"
"$here/gen-certs.sh" --out "$CERT_DIR" --namespace "$namespace" --apply

echo "==> webhook Deployment"
kubectl apply -f "$here/deployment.yaml"
kubectl -n "$namespace" set image deployment/cuda-tracer-webhook webhook="$image" >/dev/null
# New settings or certificates take effect in a new pod.
kubectl -n "$namespace" rollout restart deployment/cuda-tracer-webhook >/dev/null
kubectl -n "$namespace" rollout status deployment/cuda-tracer-webhook --timeout=180s \
    || die "the webhook did not become ready: kubectl -n $namespace logs deployment/cuda-tracer-webhook"

echo "==> MutatingWebhookConfiguration"
kubectl apply -f "$here/mutatingwebhook.yaml"
if [[ "$target_namespace" == "*" ]]; then
    namespace_selector='{}'
else
    namespace_selector="{\"matchLabels\":{\"kubernetes.io/metadata.name\":\"$target_namespace\"}}"
fi
object_selector="{\"matchLabels\":{\"$label_key\":\"$label_value\"}}"
kubectl patch mutatingwebhookconfiguration cuda-tracer-webhook --type=json -p "[
  {\"op\":\"replace\",\"path\":\"/webhooks/0/namespaceSelector\",\"value\":$namespace_selector},
  {\"op\":\"replace\",\"path\":\"/webhooks/0/objectSelector\",\"value\":$object_selector}]" >/dev/null
"$here/patch-ca-bundle.sh" --ca "$CERT_DIR/ca.crt" --config cuda-tracer-webhook

cat <<EOM

Webhook installed. Pods created from now on in namespace $target_namespace with
label $label_key=$label_value get the cuda-tracer sidecar, for example:
  kubectl run my-vllm -n $target_namespace --labels=$label_key=$label_value \\
    --image=vllm/vllm-openai:latest -- --model <model>
Check a pod:  kubectl get pod <pod> -n $target_namespace -o jsonpath='{.spec.containers[*].name}'
Webhook log:  kubectl -n $namespace logs deployment/cuda-tracer-webhook
EOM
