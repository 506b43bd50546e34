//! The seed's test and verify steps of deploy.sh: `./deploy.sh test` sends
//! one prompt then 15 in sequence (`--parallel --workers 4`: 20 with 4 in
//! flight) to a local OpenAI-compatible stub and leaves the seed's two
//! result files in the working directory; `./deploy.sh verify` checks
//! uploads against the bucket of the deployed tracer-config (a recording
//! fake kubectl answers for the cluster), not the caller's S3_BUCKET.

use std::{
    path::Path,
    process::{Command, Output},
};

use cuda_tracer_tests::openai_stub::{result_file, stub, Stub};

use crate::k8s_support::*;

fn deploy_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(root().join("deploy.sh")).args(args).current_dir(dir).env("PATH", tool_path());
    for var in ["KUBECONFIG", "RESULTS_DIR", "S3_BUCKET", "S3_PREFIX", "S3_ENDPOINT", "API_URL", "MODEL"] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("bash")
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// `./deploy.sh test ARGS` against `stub` in a fresh working directory.
fn deploy_test(stub: &Stub, args: &[&str]) -> (tempfile::TempDir, Output) {
    let tracer = cuda_tracer_tests::tracer();
    let here = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}", stub.port);
    let env = [("CUDA_TRACER", tracer.to_str().unwrap()), ("API_URL", url.as_str()), ("MODEL", "stub/model-a")];
    let out = deploy_in(here.path(), &[&["test"], args].concat(), &env);
    (here, out)
}

/// Completions the stub answered.
fn completions(stub: &Stub) -> usize {
    stub.seen.0.lock().unwrap().requests.iter().filter(|(_, p, _)| p == "/v1/completions").count()
}

#[test]
fn deploy_sh_test_is_the_seeds_single_prompt_then_batch() {
    // Sequential: nothing is held, one request at a time.
    let sequential = stub(usize::MAX, 1, false);
    let (here, out) = deploy_test(&sequential, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(completions(&sequential), 1 + 15, "one prompt, then the seed's batch of 15");
    assert_eq!(sequential.seen.0.lock().unwrap().max_in_flight_early, 1, "one after another");
    let single = result_file(here.path(), "single_prompt_result_");
    assert_eq!(single["result"]["ok"], true);
    let batch = result_file(here.path(), "batch_prompts_result_");
    assert_eq!(batch["sequential"]["summary"]["requests"], 15);
    assert!(batch["parallel"].is_null(), "{batch}");

    // --parallel --workers 4: the seed's 20 prompts, 4 in flight (held until 4 are).
    let parallel = stub(1, 4, false);
    let (here, out) = deploy_test(&parallel, &["--parallel", "--workers", "4"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(completions(&parallel), 1 + 20, "one prompt, then 20 in parallel only");
    assert_eq!(parallel.seen.0.lock().unwrap().max_in_flight_late, 4, "4 requests in flight");
    result_file(here.path(), "single_prompt_result_");
    let batch = result_file(here.path(), "batch_prompts_result_");
    assert!(batch["sequential"].is_null(), "{batch}");
    assert_eq!(batch["parallel"]["summary"]["requests"], 20);
    assert_eq!(batch["parallel"]["summary"]["concurrency"], 4);
    let nothing_else: Vec<_> = std::fs::read_dir(here.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(nothing_else.len(), 2, "only the two result files: {nothing_else:?}");

    let (_, out) = deploy_test(&parallel, &["--workers", "x"]);
    assert!(!out.status.success() && text(&out).contains("--workers needs a number"), "{}", text(&out));
}

/// A kubectl standing in for a cluster with one running vLLM pod whose
/// sidecar traces, writes and uploads; tracer-config's bucket is
/// `$FAKE_BUCKET`. Every call's argv is logged.
const FAKE_CLUSTER_KUBECTL: &str = r#"#!/usr/bin/env bash
printf '%s\n' "$*" >>"$FAKE_LOG"
case "$*" in
*"get --raw=/version"*) echo '{}' ;;
*"get pods -l app=vllm"*) echo vllm-0 ;;
*"get pod vllm-0 -o jsonpath"*) echo true ;;
*"/proxy/metrics"*)
    printf '%s\n' 'cuda_tracer_traced_processes 2' 'cuda_tracer_calls_total 1000' \
        'cuda_tracer_files_written_total 3' 'cuda_tracer_files_uploaded 2' 'cuda_tracer_files_pending 1' ;;
*"get configmap tracer-config -o jsonpath={.data.S3_BUCKET}"*) printf '%s' "$FAKE_BUCKET" ;;
*"get configmap tracer-config -o jsonpath={.data.S3_PREFIX}"*) printf 'k3s-vllm/' ;;
*"get configmap tracer-config"*) ;;
*"exec vllm-0 -c ebpf-tracer -- cuda-tracer check --s3"*)
    echo "[ ok ] s3://$FAKE_BUCKET/k3s-vllm/vllm-0 (endpoint AWS, region from the AWS chain): reachable and writable" ;;
*"exec vllm-0 -c ebpf-tracer -- sh -c"*) printf '2\n3\n' ;;
*) echo "fake kubectl: unexpected call: $*" >&2; exit 1 ;;
esac
"#;

/// An `aws` that lists one object under whatever `s3 ls` asks for.
const FAKE_AWS: &str = r#"#!/usr/bin/env bash
printf 'aws %s\n' "$*" >>"$FAKE_LOG"
echo "2026-01-01 00:00:00  1234 ${*: -1}session/trace_00001_x.jsonl"
"#;

#[test]
fn deploy_sh_verify_checks_the_deployed_bucket() {
    let scratch = tempfile::tempdir().unwrap();
    let bin = scratch.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for (name, script) in [("kubectl", FAKE_CLUSTER_KUBECTL), ("aws", FAKE_AWS)] {
        std::fs::write(bin.join(name), script).unwrap();
        std::fs::set_permissions(bin.join(name), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let (kubeconfig, log) = (scratch.path().join("kubeconfig"), scratch.path().join("argv"));
    std::fs::write(&kubeconfig, "").unwrap();
    let path = std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(&tool_path()))).unwrap();
    let base = [
        ("PATH", path.to_str().unwrap()),
        ("KUBECONFIG", kubeconfig.to_str().unwrap()),
        ("FAKE_LOG", log.to_str().unwrap()),
    ];

    // No S3_BUCKET in this shell: the deployed one is checked all the same.
    let env = [&base[..], &[("FAKE_BUCKET", "deployed-bucket")]].concat();
    let out = deploy_in(scratch.path(), &["verify"], &env);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("s3://deployed-bucket is reachable and writable"), "{shown}");
    assert!(shown.contains("uploads to s3://deployed-bucket: 2 files uploaded"), "{shown}");
    let argv = std::fs::read_to_string(&log).unwrap();
    assert!(argv.contains("exec vllm-0 -c ebpf-tracer -- cuda-tracer check --s3"), "{argv}");
    assert!(argv.contains("aws s3 ls --recursive s3://deployed-bucket/k3s-vllm/vllm-0/"), "{argv}");

    // A bucket exported here but never deployed is named as such.
    let env = [&base[..], &[("FAKE_BUCKET", ""), ("S3_BUCKET", "only-in-my-shell")]].concat();
    let out = deploy_in(scratch.path(), &["verify"], &env);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("S3_BUCKET=only-in-my-shell in this shell was never deployed"), "{shown}");
}
