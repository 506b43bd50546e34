//! Fuzzes the webhook's answer to a request body (any bytes a client can
//! POST to /mutate): it must never panic, every answer is a JSON
//! AdmissionReview, and a patch it returns applies to the pod it was for
//! (one with metadata, as every pod the API server sends has).
#![no_main]

use std::{
    future::Future,
    sync::LazyLock,
    task::{Context, Poll, Waker},
};

use axum::http::StatusCode;
use cuda_tracer::kube::webhook::{
    server::answer,
    settings::{InjectConfig, SecretEnvRef},
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// The defaults (namespace `downstream-llm-d`, label
/// `llm-d.ai/inferenceServing=true`) with an upload target and a secret
/// reference, so the sidecar patch has all of its parts.
static INJECT: LazyLock<InjectConfig> = LazyLock::new(|| InjectConfig {
    s3_bucket: Some("traces".into()),
    s3_endpoint: Some("http://minio:9000".into()),
    traces_pvc: Some("traces".into()),
    secret_env: vec![SecretEnvRef { var: "AWS_SECRET_ACCESS_KEY".into(), secret: "s3".into(), key: "secret".into() }],
    ..InjectConfig::default()
});

fuzz_target!(|data: &[u8]| {
    let response = answer(&INJECT, data);
    let status = response.status();
    assert!(status == StatusCode::OK || status == StatusCode::BAD_REQUEST, "status {status}");
    // The body is built in memory: it is ready at the first poll.
    let mut body = std::pin::pin!(axum::body::to_bytes(response.into_body(), usize::MAX));
    let Poll::Ready(Ok(body)) = body.as_mut().poll(&mut Context::from_waker(Waker::noop())) else {
        panic!("the answer's body is not in memory")
    };
    let review: Value = serde_json::from_slice(&body).expect("every answer is JSON");
    assert_eq!(review["kind"], "AdmissionReview");
    let Some(patch) = review["response"].get("patch") else { return };
    let patch: Vec<u8> = serde_json::from_value(patch.clone()).expect("the patch is bytes");
    let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("the patch is a JSON patch");
    // The webhook skips what it does not read unchecked (a lone `\ud800`
    // escape in an ignored field), so the request need not be valid JSON;
    // the API server always sends valid JSON and a pod's metadata.
    let Ok(request) = serde_json::from_slice::<Value>(data) else { return };
    let mut pod = request["request"]["object"].clone();
    if !pod["metadata"].is_object() {
        return;
    }
    json_patch::patch(&mut pod, &patch).unwrap_or_else(|e| panic!("the patch does not apply to the pod ({e}): {pod}"));
});
