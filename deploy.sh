#!/usr/bin/env bash
# vLLM with the cuda-tracer sidecar on K3s: build, deploy, test, verify.
# Usage: ./deploy.sh all|build|deploy|test|verify|status|logs|destroy|webhook|teardown
# Settings come from the environment; `./deploy.sh help` lists them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NAMESPACE="vllm-tracing"
APP_LABEL="app=vllm"
TRACER_CONTAINER="ebpf-tracer"
METRICS_PORT=9464

IMAGE="${IMAGE:-cuda-tracer:latest}"
VLLM_IMAGE="${VLLM_IMAGE:-}"
MODEL="${MODEL:-meta-llama/Llama-2-7b-hf}"
S3_BUCKET="${S3_BUCKET:-}"
S3_PREFIX="${S3_PREFIX:-k3s-vllm/}"
S3_ENDPOINT="${S3_ENDPOINT:-}"
S3_REGION="${S3_REGION:-}"
S3_PATH_STYLE="${S3_PATH_STYLE:-false}"
TRACE_INTERVAL="${TRACE_INTERVAL:-60}"
UPLOAD_INTERVAL="${UPLOAD_INTERVAL:-120}"
# vLLM's entry points only (README "Which processes run traces").
DEFAULT_TARGET_PROCESS='^VLLM::|^(\S*/)?vllm( |$)|^(\S*/)?python[0-9.]*( -\S+)* ((\S*/)?vllm|-m ?vllm(\.\S+)?)( |$)'
TARGET_PROCESS="${TARGET_PROCESS:-$DEFAULT_TARGET_PROCESS}"
# Empty turns the step window off, so only an unset variable gets the default.
PROFILE_STEPS="${PROFILE_STEPS-100..150}"
CONTAINER_RUNTIME="${CONTAINER_RUNTIME:-docker}"
CLUSTER_RUNTIME="${CLUSTER_RUNTIME:-k3s}"
CONTAINERD_ADDRESS="${CONTAINERD_ADDRESS:-/run/containerd/containerd.sock}"
BUILD_CA_CERTS="${BUILD_CA_CERTS:-}"
# The RUN steps' network for docker and podman (buildah's is always the host's).
BUILD_NETWORK="${BUILD_NETWORK:-}"
PUSH="${PUSH:-0}"
KUBECTL="${KUBECTL:-kubectl}"
# CPUs the vLLM container requests (the manifest's 4; less on a small test node).
VLLM_CPU_REQUEST="${VLLM_CPU_REQUEST:-4}"
API_URL="${API_URL:-http://localhost:30800}"
BATCH_COUNT="${BATCH_COUNT:-15}"
PARALLEL_COUNT="${PARALLEL_COUNT:-20}"
PARALLEL_WORKERS="${PARALLEL_WORKERS:-4}"
RESULTS_DIR="${RESULTS_DIR:-$PWD}"
ROLLOUT_TIMEOUT="${ROLLOUT_TIMEOUT:-1200s}"
CUDA_TRACER="${CUDA_TRACER:-}"

usage() {
    cat <<'EOF'
Usage: ./deploy.sh COMMAND

Commands:
  all       build, deploy, wait until vLLM is ready, test, verify
  build     build the sidecar image (docker/ebpf-sidecar/Dockerfile) and
            import it into K3s, or into containerd (CLUSTER_RUNTIME=containerd),
            or nowhere (CLUSTER_RUNTIME=none); PUSH=1: push it to its registry
  deploy    apply k8s/ with the settings below and wait for the rollout
  test      the seed's test: one prompt, then 15 prompts one after another
            (--parallel [--workers 4]: 20 prompts, 4 in flight; --count N);
            results in single_prompt_result_<time>.json and
            batch_prompts_result_<time>.json in RESULTS_DIR (here)
  verify    the sidecar found vLLM, trace files are written, uploads succeed
  render    print the manifests deploy would apply (no cluster needed)
  status    pods, services, volumes, GPUs
  logs      recent logs of both containers (FOLLOW=1 to follow the tracer)
  destroy   delete everything in k8s/ (the namespace, its volumes and secrets)
  webhook   install the admission webhook (k8s/webhook/install.sh)
  teardown  remove the admission webhook (k8s/webhook/uninstall.sh)

Settings (environment):
  S3_BUCKET, S3_PREFIX (k3s-vllm/), S3_ENDPOINT, S3_REGION, S3_PATH_STYLE
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN  -> Secret aws-credentials
  HF_TOKEN                      -> Secret hf-token (gated models such as Llama-2)
  MODEL (meta-llama/Llama-2-7b-hf), VLLM_IMAGE (vllm/vllm-openai:TAG), VLLM_CPU_REQUEST (4)
  IMAGE (cuda-tracer:latest), CONTAINER_RUNTIME (docker|podman|buildah), PUSH (0|1)
  BUILDER_IMAGE, RUNTIME_IMAGE  -> the Dockerfile's base images (rust:1.95-bookworm,
                                   debian:bookworm-slim; `cargo xtask setup` makes local ones)
  CARGO_BUILD_JOBS              -> the image's cargo jobs (one per CPU)
  BUILD_CA_CERTS                -> a CA bundle the build's downloads trust (buildah|podman)
  BUILD_NETWORK                 -> the RUN steps' network (docker|podman; host: no bridge needed)
  CLUSTER_RUNTIME (k3s|containerd|none), CONTAINERD_ADDRESS (/run/containerd/containerd.sock)
  TRACE_INTERVAL (60), UPLOAD_INTERVAL (120), TARGET_PROCESS (vLLM's entry points)
  PROFILE_STEPS (100..150: Chrome trace of those model steps per session; "" off)
  API_URL (http://localhost:30800), BATCH_COUNT (15), PARALLEL_COUNT (20),
  PARALLEL_WORKERS (4), RESULTS_DIR (the working directory), ROLLOUT_TIMEOUT (1200s)
  KUBECTL (kubectl), KUBECONFIG, CUDA_TRACER (path of the cuda-tracer binary)
EOF
}

# log, die, need
# shellcheck source=infrastructure/common.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/infrastructure/common.sh"

# K3s writes its kubeconfig to /etc/rancher/k3s/k3s.yaml; use it when nothing else is set.
default_kubeconfig() {
    if [[ -z "${KUBECONFIG:-}" && ! -f "$HOME/.kube/config" && -r /etc/rancher/k3s/k3s.yaml ]]; then
        export KUBECONFIG=/etc/rancher/k3s/k3s.yaml
    fi
}

k() { "$KUBECTL" "$@"; }

need_cluster() {
    need "$KUBECTL" "install kubectl (https://kubernetes.io/docs/tasks/tools/); K3s installs it as /usr/local/bin/kubectl"
    default_kubeconfig
    if [[ -n "${KUBECONFIG:-}" && ! -e "${KUBECONFIG%%:*}" ]]; then
        die "KUBECONFIG=$KUBECONFIG does not exist" \
            "point KUBECONFIG at your cluster's kubeconfig (K3s: export KUBECONFIG=/etc/rancher/k3s/k3s.yaml), or unset it"
    fi
    local out
    if ! out="$(k get --raw=/version --request-timeout=10s 2>&1)"; then
        die "cannot reach the Kubernetes API (KUBECONFIG=${KUBECONFIG:-~/.kube/config}): ${out##*$'\n'}" \
            "start the cluster (sudo ./infrastructure/k3s-install.sh on a fresh node), then on K3s: export KUBECONFIG=/etc/rancher/k3s/k3s.yaml"
    fi
}

# Double-quoted YAML scalar.
yaml_str() {
    local s="${1//\\/\\\\}"
    s="${s//\"/\\\"}"
    printf '"%s"' "$s"
}

# Prints "name tag" of an image reference (tag defaults to latest; digests kept in the name).
split_image() {
    local ref="$1" name tag
    if [[ "$ref" == *@* ]]; then
        printf '%s %s\n' "$ref" ""
        return
    fi
    name="${ref%:*}"
    tag="${ref##*:}"
    if [[ "$name" == "$ref" || "$tag" == */* ]]; then
        name="$ref"
        tag="latest"
    fi
    printf '%s %s\n' "$name" "$tag"
}

# A kustomize overlay over k8s/ with this run's settings; prints its directory.
render_overlay() {
    local dir rel name tag
    dir="$(mktemp -d "${TMPDIR:-/tmp}/cuda-tracer-deploy.XXXXXX")"
    rel="$(realpath --relative-to="$dir" "$ROOT/k8s")"
    read -r name tag < <(split_image "$IMAGE")
    local upload=false
    [[ -n "$S3_BUCKET" ]] && upload=true
    {
        echo "apiVersion: kustomize.config.k8s.io/v1beta1"
        echo "kind: Kustomization"
        echo "resources:"
        echo "  - $rel"
        echo "images:"
        echo "  - name: cuda-tracer"
        echo "    newName: $(yaml_str "$name")"
        [[ -n "$tag" ]] && echo "    newTag: $(yaml_str "$tag")"
        if [[ -n "$VLLM_IMAGE" ]]; then
            read -r name tag < <(split_image "$VLLM_IMAGE")
            echo "  - name: vllm/vllm-openai"
            echo "    newName: $(yaml_str "$name")"
            [[ -n "$tag" ]] && echo "    newTag: $(yaml_str "$tag")"
        fi
        echo "patches:"
        echo "  - patch: |-"
        echo "      apiVersion: v1"
        echo "      kind: ConfigMap"
        echo "      metadata:"
        echo "        name: tracer-config"
        echo "        namespace: $NAMESPACE"
        echo "      data:"
        echo "        UPLOAD_ENABLED: \"$upload\""
        echo "        S3_BUCKET: $(yaml_str "$S3_BUCKET")"
        echo "        S3_PREFIX: $(yaml_str "$S3_PREFIX")"
        echo "        S3_PATH_STYLE: $(yaml_str "$S3_PATH_STYLE")"
        [[ -n "$S3_ENDPOINT" ]] && echo "        S3_ENDPOINT: $(yaml_str "$S3_ENDPOINT")"
        [[ -n "$S3_REGION" ]] && echo "        S3_REGION: $(yaml_str "$S3_REGION")"
        echo "        TRACE_INTERVAL: $(yaml_str "$TRACE_INTERVAL")"
        echo "        UPLOAD_INTERVAL: $(yaml_str "$UPLOAD_INTERVAL")"
        echo "        TARGET_PROCESS: $(yaml_str "$TARGET_PROCESS")"
        echo "        PROFILE_STEPS: $(yaml_str "$PROFILE_STEPS")"
        echo "  - patch: |-"
        echo "      apiVersion: v1"
        echo "      kind: ConfigMap"
        echo "      metadata:"
        echo "        name: vllm-config"
        echo "        namespace: $NAMESPACE"
        echo "      data:"
        echo "        MODEL: $(yaml_str "$MODEL")"
        echo "  - patch: |-"
        echo "      apiVersion: apps/v1"
        echo "      kind: Deployment"
        echo "      metadata:"
        echo "        name: vllm"
        echo "        namespace: $NAMESPACE"
        echo "      spec:"
        echo "        template:"
        echo "          spec:"
        echo "            containers:"
        echo "              - name: vllm"
        echo "                resources:"
        echo "                  requests:"
        echo "                    cpu: $(yaml_str "$VLLM_CPU_REQUEST")"
    } >"$dir/kustomization.yaml"
    printf '%s\n' "$dir"
}

# The AWS keys as an env file, for `kubectl create secret --from-env-file`.
aws_env_file() {
    printf 'AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY"
    if [[ -n "${AWS_SESSION_TOKEN:-}" ]]; then
        printf 'AWS_SESSION_TOKEN=%s\n' "$AWS_SESSION_TOKEN"
    fi
}

# Secrets from the caller's environment, never written to disk and never on
# a command line (where `ps` and /proc/PID/cmdline show them to every user):
# kubectl reads each from a pipe that a shell builtin fills, and the Secret
# goes to `kubectl apply` on stdin.
apply_secrets() {
    if [[ -n "${AWS_ACCESS_KEY_ID:-}" && -n "${AWS_SECRET_ACCESS_KEY:-}" ]]; then
        k -n "$NAMESPACE" create secret generic aws-credentials --from-env-file=<(aws_env_file) \
            --dry-run=client -o yaml | k apply -f -
    elif [[ -n "$S3_BUCKET" ]]; then
        log "no AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY set: the tracer uses the node's instance role (or an existing aws-credentials Secret)"
    fi
    if [[ -n "${HF_TOKEN:-}" ]]; then
        k -n "$NAMESPACE" create secret generic hf-token --from-file=token=<(printf '%s' "$HF_TOKEN") \
            --dry-run=client -o yaml | k apply -f -
    elif ! k -n "$NAMESPACE" get secret hf-token >/dev/null 2>&1; then
        log "no HF_TOKEN set and no hf-token Secret: gated models (Llama-2) will fail to download"
    fi
}

# The image builder: docker, podman or buildah (daemonless; Debian packages it).
check_builder() {
    need "$CONTAINER_RUNTIME" "install Docker (https://docs.docker.com/engine/install/) or set CONTAINER_RUNTIME=podman or buildah"
    case "$CONTAINER_RUNTIME" in
    buildah) ;;
    *)
        "$CONTAINER_RUNTIME" info >/dev/null 2>&1 ||
            die "cannot reach the $CONTAINER_RUNTIME engine" "start it (sudo systemctl start docker) or add yourself to the docker group"
        ;;
    esac
    if [[ -n "$BUILD_CA_CERTS" ]]; then
        [[ -r "$BUILD_CA_CERTS" ]] || die "BUILD_CA_CERTS=$BUILD_CA_CERTS is not readable" "point it at a PEM bundle (/etc/ssl/certs/ca-certificates.crt)"
        [[ "$CONTAINER_RUNTIME" != docker ]] || die "BUILD_CA_CERTS needs CONTAINER_RUNTIME=buildah or podman" "docker build cannot mount files into RUN steps"
    fi
}

# Where the built image goes: checked before the long build.
check_import_target() {
    [[ "$PUSH" == 1 ]] && return
    case "$CLUSTER_RUNTIME" in
    k3s | none) ;;
    containerd)
        need ctr "apt-get install -y containerd (ctr imports the image)"
        [[ -S "$CONTAINERD_ADDRESS" ]] || die "no containerd socket at CONTAINERD_ADDRESS=$CONTAINERD_ADDRESS" "start containerd or set CONTAINERD_ADDRESS to its socket"
        ;;
    *) die "CLUSTER_RUNTIME=$CLUSTER_RUNTIME is not k3s, containerd or none" "unset it (K3s) or set CLUSTER_RUNTIME=containerd" ;;
    esac
}

# `build` with the base images and settings from the environment; buildah's
# RUN steps use the host's network (no bridge or iptables rules made).
build_image() {
    local args=(-f "$ROOT/docker/ebpf-sidecar/Dockerfile" -t "$IMAGE")
    local name
    for name in BUILDER_IMAGE RUNTIME_IMAGE CARGO_BUILD_JOBS; do
        [[ -n "${!name:-}" ]] && args+=(--build-arg "$name=${!name}")
    done
    [[ -n "$BUILD_CA_CERTS" ]] && args+=(-v "$BUILD_CA_CERTS:/etc/ssl/certs/ca-certificates.crt:ro")
    if [[ "$CONTAINER_RUNTIME" == buildah ]]; then
        buildah bud --layers --network=host "${args[@]}" "$ROOT"
    else
        [[ -n "$BUILD_NETWORK" ]] && args+=(--network "$BUILD_NETWORK")
        # The Dockerfile's cache mounts need BuildKit (Docker 23+ uses it
        # anyway; 20.10's classic builder rejects RUN --mount).
        DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-1}" "$CONTAINER_RUNTIME" build "${args[@]}" "$ROOT"
    fi
}

# The image as a docker-archive tar on stdout.
save_image() {
    if [[ "$CONTAINER_RUNTIME" == buildah ]]; then
        local tar
        tar="$(mktemp -d)/image.tar"
        buildah push --quiet "$IMAGE" "docker-archive:$tar:$IMAGE" >/dev/null
        cat "$tar"
        rm -rf "$(dirname "$tar")"
    else
        "$CONTAINER_RUNTIME" save "$IMAGE"
    fi
}

cmd_build() {
    check_builder
    check_import_target
    log "building $IMAGE with $CONTAINER_RUNTIME (the first release build takes 15-30 minutes; rebuilds reuse its cache)"
    build_image
    if [[ "$PUSH" == 1 ]]; then
        log "pushing $IMAGE"
        if [[ "$CONTAINER_RUNTIME" == buildah ]]; then buildah push "$IMAGE"; else "$CONTAINER_RUNTIME" push "$IMAGE"; fi
        return
    fi
    local sudo=()
    [[ $EUID -ne 0 ]] && sudo=(sudo)
    if [[ "$CLUSTER_RUNTIME" == none ]]; then
        log "$IMAGE stays in $CONTAINER_RUNTIME's storage (CLUSTER_RUNTIME=none)"
    elif [[ "$CLUSTER_RUNTIME" == containerd ]]; then
        log "importing $IMAGE into the containerd at $CONTAINERD_ADDRESS (namespace k8s.io)"
        save_image | "${sudo[@]}" ctr -n k8s.io --address "$CONTAINERD_ADDRESS" images import -
    elif command -v k3s >/dev/null 2>&1; then
        log "importing $IMAGE into K3s's containerd"
        save_image | "${sudo[@]}" k3s ctr images import -
    else
        log "k3s not found on this host: push the image (PUSH=1 IMAGE=registry/cuda-tracer:tag), set CLUSTER_RUNTIME=containerd, or load it into your cluster's runtime yourself"
    fi
}

cmd_render() {
    need "$KUBECTL" "install kubectl (https://kubernetes.io/docs/tasks/tools/)"
    need realpath "apt-get install -y coreutils"
    local overlay
    overlay="$(render_overlay)"
    k kustomize "$overlay" || {
        rm -rf "$overlay"
        die "kubectl kustomize failed on the generated overlay" "check the settings above (IMAGE, VLLM_IMAGE)"
    }
    rm -rf "$overlay"
}

cmd_deploy() {
    need_cluster
    need realpath "apt-get install -y coreutils"
    log "namespace $NAMESPACE"
    k apply -f "$ROOT/k8s/00-namespace.yaml"
    apply_secrets
    local overlay
    overlay="$(render_overlay)"
    log "applying k8s/ (image $IMAGE, model $MODEL, bucket ${S3_BUCKET:-<none: traces stay in the pod>})"
    k apply -k "$overlay"
    rm -rf "$overlay"
    log "waiting for the rollout (up to $ROLLOUT_TIMEOUT: the first start downloads the model)"
    k -n "$NAMESPACE" rollout status deployment/vllm --timeout="$ROLLOUT_TIMEOUT" ||
        die "the vLLM pod is not ready" "./deploy.sh status; ./deploy.sh logs; kubectl -n $NAMESPACE describe pod -l $APP_LABEL"
}

# The prompt client: a local cuda-tracer binary, else the one in the sidecar
# image (run with the host's network, results written to a bind mount).
PROMPT_CLIENT=()
find_prompt_client() {
    local c
    for c in "$CUDA_TRACER" "$(command -v cuda-tracer || true)" "$ROOT/target/release/cuda-tracer" \
        "${CARGO_TARGET_DIR:-$ROOT/target}/release/cuda-tracer"; do
        if [[ -n "$c" && -x "$c" ]]; then
            PROMPT_CLIENT=("$c")
            return
        fi
    done
    if command -v "$CONTAINER_RUNTIME" >/dev/null 2>&1 && "$CONTAINER_RUNTIME" image inspect "$IMAGE" >/dev/null 2>&1; then
        PROMPT_CLIENT=("$CONTAINER_RUNTIME" run --rm --network host -v "$RESULTS_DIR:$RESULTS_DIR"
            --entrypoint cuda-tracer "$IMAGE")
        return
    fi
    die "no cuda-tracer binary for the prompt client and no $IMAGE image" \
        "./deploy.sh build (the client runs from the image), or set CUDA_TRACER=/path/to/cuda-tracer"
}

# The seed's test flow: test/single-prompt.py, then test/batch-prompts.py
# (--count 15 sequential; --parallel --workers 4 sends 20, 4 at a time).
cmd_test() {
    local parallel=0 workers="$PARALLEL_WORKERS" count=""
    while [[ $# -gt 0 ]]; do
        case "$1" in
        --parallel) parallel=1 ;;
        --workers)
            [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || die "--workers needs a number of requests in flight" "./deploy.sh test --parallel --workers 4"
            workers="$2"
            shift
            ;;
        --count)
            [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || die "--count needs a number of prompts" "./deploy.sh test --count 15"
            count="$2"
            shift
            ;;
        *) die "unknown test option '$1'" "./deploy.sh test [--parallel] [--workers N] [--count N]" ;;
        esac
        shift
    done
    find_prompt_client
    mkdir -p "$RESULTS_DIR"
    RESULTS_DIR="$(cd "$RESULTS_DIR" && pwd)"
    local batch=(--batch "${count:-$BATCH_COUNT}" --parallel 1)
    if ((parallel)); then
        batch=(--batch "${count:-$PARALLEL_COUNT}" --parallel "$workers" --parallel-only)
        log "single prompt, then ${count:-$PARALLEL_COUNT} prompts with $workers in flight -> $API_URL"
    else
        log "single prompt, then ${count:-$BATCH_COUNT} prompts one after another -> $API_URL"
    fi
    "${PROMPT_CLIENT[@]}" prompt --url "$API_URL" --model "$MODEL" --out "$RESULTS_DIR" "${batch[@]}" ||
        die "the prompt test failed" "is vLLM ready? ./deploy.sh status; curl $API_URL/health"
    log "results: $RESULTS_DIR/single_prompt_result_*.json and batch_prompts_result_*.json"
}

# The newest running vLLM pod.
vllm_pod() {
    local pod
    pod="$(k -n "$NAMESPACE" get pods -l "$APP_LABEL" --field-selector=status.phase=Running \
        --sort-by=.metadata.creationTimestamp -o jsonpath='{.items[-1:].metadata.name}' 2>/dev/null || true)"
    [[ -n "$pod" ]] || die "no running vLLM pod in namespace $NAMESPACE" "./deploy.sh deploy, then ./deploy.sh status"
    printf '%s\n' "$pod"
}

# Sum of a Prometheus metric's samples (all label sets).
metric_sum() {
    awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $NF } END { printf "%d\n", s }' <<<"$2"
}

# One setting of the deployed tracer-config ConfigMap (what the sidecar runs
# with), empty when unset.
deployed_setting() {
    k -n "$NAMESPACE" get configmap tracer-config -o "jsonpath={.data.$1}" 2>/dev/null || true
}

# The upload checks of `verify`, against the bucket the pod was deployed
# with (tracer-config), not whatever S3_BUCKET the caller's shell has.
# Called from cmd_verify: uses its ok/bad.
verify_uploads() {
    local pod="$1" metrics="$2" bucket prefix endpoint enabled
    bucket="$(deployed_setting S3_BUCKET)"
    prefix="$(deployed_setting S3_PREFIX)"
    endpoint="$(deployed_setting S3_ENDPOINT)"
    enabled="$(deployed_setting UPLOAD_ENABLED)"
    if [[ -z "$bucket" ]]; then
        local hint="traces stay on the trace-storage volume"
        [[ -n "$S3_BUCKET" ]] && hint="S3_BUCKET=$S3_BUCKET in this shell was never deployed: ./deploy.sh deploy uploads to it"
        log "the deployed tracer-config has no S3_BUCKET: upload not checked ($hint)"
        return
    fi
    if [[ "$enabled" == false ]]; then
        log "the deployed tracer-config sets UPLOAD_ENABLED=false: upload to s3://$bucket not checked"
        return
    fi
    local uploaded pending errors probe
    uploaded="$(metric_sum cuda_tracer_files_uploaded "$metrics")"
    pending="$(metric_sum cuda_tracer_files_pending "$metrics")"
    errors="$(metric_sum cuda_tracer_upload_errors "$metrics")"
    if probe="$(k -n "$NAMESPACE" exec "$pod" -c "$TRACER_CONTAINER" -- cuda-tracer check --s3 2>&1)"; then
        ok "s3://$bucket is reachable and writable with the sidecar's credentials (cuda-tracer check --s3)"
    else
        bad "the sidecar cannot write to s3://$bucket: $(grep -m1 'FAIL' <<<"$probe" || tail -n 1 <<<"$probe")" \
            "$(grep -m1 'fix:' <<<"$probe" | sed 's/^ *fix: //' || true) (kubectl -n $NAMESPACE exec $pod -c $TRACER_CONTAINER -- cuda-tracer check --s3)"
    fi
    if ((uploaded > 0)); then
        ok "uploads to s3://$bucket: $uploaded files uploaded, $pending pending, $errors failed attempts so far (retried)"
    elif ((errors > 0)); then
        bad "upload errors: $(grep '^cuda_tracer_upload_errors' <<<"$metrics" | awk '$NF > 0' | tr '\n' ' ')" \
            "check the bucket and credentials (aws-credentials Secret or node role): ./deploy.sh logs"
    else
        bad "nothing uploaded to s3://$bucket yet ($pending pending)" "uploads run every UPLOAD_INTERVAL ($UPLOAD_INTERVAL s) after a file closes: retry later"
    fi
    if command -v aws >/dev/null 2>&1; then
        local listing endpoint_arg=()
        [[ -n "$endpoint" ]] && endpoint_arg=(--endpoint-url "$endpoint")
        if listing="$(aws "${endpoint_arg[@]}" s3 ls --recursive "s3://$bucket/$prefix$pod/" 2>&1)" && [[ -n "$listing" ]]; then
            ok "s3://$bucket/$prefix$pod/ holds $(wc -l <<<"$listing") objects"
        else
            bad "aws s3 ls s3://$bucket/$prefix$pod/ shows nothing" "check the uploads above and your local AWS credentials"
        fi
    fi
}

cmd_verify() {
    need_cluster
    local pod failed=0 metrics sessions
    pod="$(vllm_pod)"
    log "verifying pod $pod"
    ok() { printf '  [ ok ] %s\n' "$*"; }
    bad() {
        printf '  [FAIL] %s\n         fix: %s\n' "$1" "$2"
        failed=1
    }
    local ready
    ready="$(k -n "$NAMESPACE" get pod "$pod" -o jsonpath="{.status.containerStatuses[?(@.name==\"$TRACER_CONTAINER\")].ready}")"
    if [[ "$ready" == true ]]; then ok "sidecar $TRACER_CONTAINER is ready (probes loaded, /traces writable)"; else
        bad "sidecar $TRACER_CONTAINER is not ready" "./deploy.sh logs; kubectl -n $NAMESPACE exec $pod -c $TRACER_CONTAINER -- cuda-tracer check"
    fi
    if ! metrics="$(k get --raw "/api/v1/namespaces/$NAMESPACE/pods/$pod:$METRICS_PORT/proxy/metrics" 2>&1)"; then
        bad "tracer metrics unreachable: ${metrics##*$'\n'}" "./deploy.sh logs (is METRICS_ADDR set in tracer-config?)"
        metrics=""
    fi
    local traced calls written uploaded pending errors
    traced="$(metric_sum cuda_tracer_traced_processes "$metrics")"
    calls="$(metric_sum cuda_tracer_calls_total "$metrics")"
    written="$(metric_sum cuda_tracer_files_written_total "$metrics")"
    uploaded="$(metric_sum cuda_tracer_files_uploaded "$metrics")"
    pending="$(metric_sum cuda_tracer_files_pending "$metrics")"
    errors="$(metric_sum cuda_tracer_upload_errors "$metrics")"
    if ((traced > 0)); then ok "sidecar found vLLM: $traced traced processes, $calls CUDA calls"; else
        bad "sidecar traces no process" "wait until vLLM has loaded the model (./deploy.sh logs), check TARGET_PROCESS ($TARGET_PROCESS)"
    fi
    sessions="$(k -n "$NAMESPACE" exec "$pod" -c "$TRACER_CONTAINER" -- \
        sh -c 'ls -t /traces/*/metadata.json 2>/dev/null | head -n 1 | xargs -r grep -c "\"pid\"" ; ls /traces/*/trace_*.jsonl* 2>/dev/null | wc -l' 2>/dev/null || true)"
    local pids files
    pids="$(sed -n 1p <<<"$sessions")"
    files="$(sed -n 2p <<<"$sessions")"
    if [[ -n "$pids" && "$pids" -gt 0 ]]; then ok "session metadata.json lists traced processes"; else
        bad "no session metadata.json with processes under /traces" "./deploy.sh logs"
    fi
    if ((written > 0 || ${files:-0} > 0)); then ok "trace files: $written closed so far, ${files:-0} on /traces now"; else
        bad "no trace file written yet" "files close every TRACE_INTERVAL ($TRACE_INTERVAL s): send prompts (./deploy.sh test) and retry"
    fi
    verify_uploads "$pod" "$metrics"
    ((failed == 0)) || die "verification failed (see [FAIL] lines above)" "fix them, then ./deploy.sh verify"
    log "all checks passed"
}

cmd_status() {
    need_cluster
    k -n "$NAMESPACE" get deployments,pods,services,pvc -o wide || true
    log "GPUs per node"
    k get nodes -o jsonpath='{range .items[*]}{.metadata.name}{"\t"}{.status.capacity.nvidia\.com/gpu}{"\n"}{end}'
}

cmd_logs() {
    need_cluster
    local tail="${TAIL:-100}"
    if [[ "${FOLLOW:-0}" == 1 ]]; then
        k -n "$NAMESPACE" logs -l "$APP_LABEL" -c "$TRACER_CONTAINER" --tail="$tail" -f
        return
    fi
    log "vllm (last $tail lines)"
    k -n "$NAMESPACE" logs -l "$APP_LABEL" -c vllm --tail="$tail" || true
    log "$TRACER_CONTAINER (last $tail lines)"
    k -n "$NAMESPACE" logs -l "$APP_LABEL" -c "$TRACER_CONTAINER" --tail="$tail" || true
}

cmd_destroy() {
    need_cluster
    log "deleting k8s/ (namespace $NAMESPACE: trace files not yet uploaded are lost with its volume)"
    k delete -k "$ROOT/k8s" --ignore-not-found --wait=true
}

# The webhook's own scripts (k8s/webhook/), arguments passed through.
delegate() {
    local script="$ROOT/k8s/webhook/$1"
    shift
    [[ -f "$script" ]] || die "$script is missing" "check out the full repository (the admission webhook lives in k8s/webhook/)"
    exec bash "$script" "$@"
}

main() {
    local verb="${1:-}"
    [[ $# -gt 0 ]] && shift
    case "$verb" in
    all)
        cmd_build
        cmd_deploy
        cmd_test
        cmd_verify
        ;;
    build) cmd_build ;;
    deploy) cmd_deploy ;;
    test) cmd_test "$@" ;;
    verify) cmd_verify ;;
    render) cmd_render ;;
    status) cmd_status ;;
    logs) cmd_logs ;;
    destroy) cmd_destroy ;;
    webhook) delegate install.sh "$@" ;;
    teardown) delegate uninstall.sh "$@" ;;
    help | -h | --help) usage ;;
    "")
        usage >&2
        exit 2
        ;;
    *)
        printf "error: unknown command '%s'\n\n" "$verb" >&2
        usage >&2
        exit 2
        ;;
    esac
}

main "$@"
