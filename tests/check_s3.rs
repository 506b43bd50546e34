//! `cuda-tracer check --s3` (the seed's `aws s3 ls` credential check)
//! against a real S3 server (SeaweedFS, checking signatures): a reachable,
//! writable bucket passes and its probe object is gone afterwards; a
//! missing bucket, wrong credentials and a store that is down each fail
//! with what is wrong and how to fix it, never printing a credential.

use std::process::Output;

use cuda_tracer_tests::{
    s3::{s3_flags, S3Server, SECRET_KEY},
    *,
};

fn check_s3(bucket: &str, secret: &str) -> (Output, String) {
    let mut cmd = tracer_cmd();
    cmd.args(["check", "--s3"]);
    s3_flags(&mut cmd, bucket, secret);
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    for secret in [SECRET_KEY, "not-the-secret"] {
        assert!(!text.contains(secret), "a secret key was printed: {text}");
    }
    (out, text)
}

fn assert_fails_with(out: &Output, text: &str, wants: &[&str]) {
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("[FAIL]") && text.contains("fix:"), "{text}");
    for want in wants {
        assert!(text.contains(want), "{want:?} not in: {text}");
    }
}

#[test]
fn check_s3_says_whether_the_bucket_is_reachable_and_writable() {
    let (_one_server, server) = S3Server::with_bucket("traces");

    let (out, text) = check_s3("traces", SECRET_KEY);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("[ ok ] s3://traces/test/node-1") && text.contains("reachable and writable"), "{text}");
    let left: Vec<String> =
        server.objects("traces", "").into_keys().filter(|k| k.contains("cuda-tracer-check")).collect();
    assert!(left.is_empty(), "the probe object was deleted: {left:?}");

    let (out, text) = check_s3("no-such-bucket", SECRET_KEY);
    assert_fails_with(&out, &text, &["no-such-bucket does not exist", "create the bucket"]);

    let (out, text) = check_s3("traces", "not-the-secret");
    assert_fails_with(&out, &text, &["rejected the credentials", "aws-credentials Secret"]);

    drop(server);
    let down = S3Server::stopped();
    let (out, text) = check_s3("traces", SECRET_KEY);
    assert_fails_with(&out, &text, &["unreachable", "http://127.0.0.1:8333", "S3_ENDPOINT"]);
    drop(down);

    // No bucket at all: named, with the settings to set.
    let out = tracer_cmd().args(["check", "--s3"]).env_remove("S3_BUCKET").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_fails_with(&out, &text, &["no S3 bucket is configured", "S3_BUCKET"]);
}
