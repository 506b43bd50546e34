#!/usr/bin/env bash
# Puts the webhook CA into every webhook of the MutatingWebhookConfiguration
# (clientConfig.caBundle), so the API server trusts the serving certificate.
#
#   patch-ca-bundle.sh [--ca FILE] [--config NAME] [--print]
#
# --ca      the CA certificate (default: $CERT_DIR/ca.crt, ./webhook-certs/ca.crt)
# --config  the MutatingWebhookConfiguration (default: cuda-tracer-webhook)
# --print   only print the base64 caBundle (for a hand-written configuration)
set -euo pipefail

ca="${CERT_DIR:-./webhook-certs}/ca.crt"
config="${WEBHOOK_CONFIG:-cuda-tracer-webhook}"
print_only=0

die() {
    echo "patch-ca-bundle.sh: $*" >&2
    exit 1
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --ca) ca="${2:?--ca needs a file}"; shift 2 ;;
        --config) config="${2:?--config needs a name}"; shift 2 ;;
        --print) print_only=1; shift ;;
        -h | --help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

[[ -s "$ca" ]] || die "no CA certificate at $ca: run k8s/webhook/gen-certs.sh first, or pass --ca FILE"
command -v openssl >/dev/null 2>&1 || die "openssl is not installed: install it and rerun"
openssl x509 -in "$ca" -noout 2>/dev/null || die "$ca is not a PEM certificate"
bundle="$(base64 <"$ca" | tr -d '\n')"

if [[ $print_only -eq 1 ]]; then
    echo "$bundle"
    exit 0
fi

command -v kubectl >/dev/null 2>&1 \
    || die "kubectl is not installed: install it, or use --print and set caBundle yourself"
names="$(kubectl get mutatingwebhookconfiguration "$config" -o jsonpath='{range .webhooks[*]}{.name}{"\n"}{end}')" \
    || die "cannot read MutatingWebhookConfiguration $config: apply k8s/webhook/mutatingwebhook.yaml first (and check KUBECONFIG)"
count="$(grep -c . <<<"$names" || true)"
[[ "$count" -gt 0 ]] || die "MutatingWebhookConfiguration $config has no webhooks"

ops=""
for ((i = 0; i < count; i++)); do
    ops="${ops:+$ops,}{\"op\":\"add\",\"path\":\"/webhooks/$i/clientConfig/caBundle\",\"value\":\"$bundle\"}"
done
kubectl patch mutatingwebhookconfiguration "$config" --type=json -p "[$ops]" >/dev/null \
    || die "kubectl could not patch $config"
echo "caBundle of $config set from $ca ($count webhook(s))"
