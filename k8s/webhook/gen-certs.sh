#!/usr/bin/env bash
# Generates the webhook's TLS material with openssl: a CA and a serving
# certificate for <service>.<namespace>.svc (plus any --ip/--dns SANs), and
# the kubernetes.io/tls Secret manifest that the webhook Deployment mounts.
#
#   gen-certs.sh [--out DIR] [--namespace NS] [--service NAME] [--secret NAME]
#                [--ip IP]... [--dns NAME]... [--days N] [--new-ca] [--apply]
#
# Writes DIR/{ca.crt,ca.key,tls.crt,tls.key,secret.yaml}. An existing CA in
# DIR is reused (the caBundle already registered stays valid) unless --new-ca.
# --apply runs `kubectl apply -f DIR/secret.yaml`.
# For a webhook on this machine (clientConfig.url https://127.0.0.1:8443/mutate):
#   gen-certs.sh --out /tmp/wh-certs --ip 127.0.0.1
set -euo pipefail

out="${CERT_DIR:-./webhook-certs}"
namespace="${WEBHOOK_NAMESPACE:-cuda-tracer-system}"
service="${WEBHOOK_SERVICE:-cuda-tracer-webhook}"
secret="${WEBHOOK_SECRET:-cuda-tracer-webhook-tls}"
days=365
new_ca=0
apply=0
ips=()
dns_names=()

die() {
    echo "gen-certs.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --out) out="${2:?--out needs a directory}"; shift 2 ;;
        --namespace) namespace="${2:?--namespace needs a name}"; shift 2 ;;
        --service) service="${2:?--service needs a name}"; shift 2 ;;
        --secret) secret="${2:?--secret needs a name}"; shift 2 ;;
        --ip) ips+=("${2:?--ip needs an address}"); shift 2 ;;
        --dns) dns_names+=("${2:?--dns needs a name}"); shift 2 ;;
        --days) days="${2:?--days needs a number}"; shift 2 ;;
        --new-ca) new_ca=1; shift ;;
        --apply) apply=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument '$1'" ;;
    esac
done

command -v openssl >/dev/null 2>&1 \
    || die "openssl is not installed: install it (apt-get install openssl / dnf install openssl) and rerun"
if [[ $apply -eq 1 ]]; then
    command -v kubectl >/dev/null 2>&1 \
        || die "--apply needs kubectl: install it, or drop --apply and apply $out/secret.yaml yourself"
fi
[[ "$days" =~ ^[0-9]+$ ]] || die "--days must be a whole number of days, got '$days'"

mkdir -p "$out"
umask 077

# Subject alternative names: every name the API server may dial.
san="DNS:${service},DNS:${service}.${namespace},DNS:${service}.${namespace}.svc"
san="${san},DNS:${service}.${namespace}.svc.cluster.local"
for name in "${dns_names[@]+"${dns_names[@]}"}"; do
    san="${san},DNS:${name}"
done
for ip in "${ips[@]+"${ips[@]}"}"; do
    san="${san},IP:${ip}"
done

if [[ $new_ca -eq 1 || ! -s "$out/ca.crt" || ! -s "$out/ca.key" ]]; then
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$days" \
        -keyout "$out/ca.key" -out "$out/ca.crt" \
        -subj "/CN=${service}-ca" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null \
        || die "openssl could not create the CA in $out"
    echo "created CA $out/ca.crt"
else
    echo "reusing CA $out/ca.crt (pass --new-ca for a new one)"
fi

ext="$(mktemp)"
trap 'rm -f "$ext" "$out/tls.csr"' EXIT
cat >"$ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=${san}
EOF

openssl req -newkey rsa:2048 -nodes -sha256 \
    -keyout "$out/tls.key" -out "$out/tls.csr" \
    -subj "/CN=${service}.${namespace}.svc" 2>/dev/null \
    || die "openssl could not create the serving key in $out"
openssl x509 -req -sha256 -days "$days" -in "$out/tls.csr" \
    -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
    -extfile "$ext" -out "$out/tls.crt" 2>/dev/null \
    || die "openssl could not sign the serving certificate"
rm -f "$out/ca.srl"
openssl verify -CAfile "$out/ca.crt" "$out/tls.crt" >/dev/null \
    || die "the new serving certificate does not verify against $out/ca.crt"
echo "created serving certificate $out/tls.crt for ${san}"

b64() {
    base64 <"$1" | tr -d '\n'
}

cat >"$out/secret.yaml" <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: ${secret}
  namespace: ${namespace}
  labels:
    app.kubernetes.io/name: cuda-tracer-webhook
type: kubernetes.io/tls
data:
  tls.crt: $(b64 "$out/tls.crt")
  tls.key: $(b64 "$out/tls.key")
  ca.crt: $(b64 "$out/ca.crt")
EOF
echo "wrote Secret manifest $out/secret.yaml (${namespace}/${secret})"

if [[ $apply -eq 1 ]]; then
    kubectl apply -f "$out/secret.yaml" \
        || die "kubectl could not apply $out/secret.yaml: does namespace ${namespace} exist? (kubectl apply -f k8s/webhook/namespace.yaml)"
fi
