//! Keeps secrets out of the webhook's settings: every value there ends up in
//! the JSON patch that any client of the webhook can read back, so a
//! secret-looking literal stops the webhook at startup.

use super::settings::InjectConfig;
use crate::secrets::{credential_kind as secret_value, is_secret_name as secret_name};

/// A setting that would put a secret into the patch. The message names the
/// setting, never the value.
#[derive(Debug, thiserror::Error)]
#[error(
    "{setting} would put a secret into the sidecar as a literal value ({why}); the webhook returns its patch, \
     values included, to every client, so secrets must come from a Secret: create one in the pod's namespace \
     and pass --sidecar-secret-env VAR=SECRET:KEY (SIDECAR_SECRET_ENV) or --aws-secret NAME instead"
)]
pub struct LiteralSecret {
    pub setting: String,
    pub why: &'static str,
}

/// Refuses settings that would inject a secret as a value: a `--sidecar-env`
/// variable named like a secret (`*SECRET*`, `*TOKEN*`, `*PASSWORD*`, ...)
/// or any literal whose value looks like a credential.
pub fn refuse_literal_secrets(args: &InjectConfig) -> Result<(), LiteralSecret> {
    for (name, value) in &args.extra_env {
        let setting = || format!("--sidecar-env (SIDECAR_ENV) {name}");
        if secret_name(name) {
            return Err(LiteralSecret { setting: setting(), why: "the name is a secret's" });
        }
        if let Some(why) = secret_value(value) {
            return Err(LiteralSecret { setting: setting(), why });
        }
    }
    let urls = [
        ("--s3-endpoint (S3_ENDPOINT)", args.s3_endpoint.as_deref().unwrap_or("")),
        ("--vllm-metrics-url (VLLM_METRICS_URL)", args.vllm_metrics_url.as_str()),
    ];
    for (setting, value) in urls {
        if let Some(why) = secret_value(value) {
            return Err(LiteralSecret { setting: setting.into(), why });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(argv: &[&str]) -> Result<(), String> {
        refuse_literal_secrets(&super::super::settings::parse_for_test(argv)).map_err(|e| e.to_string())
    }

    #[test]
    fn secret_names_and_values_are_refused_without_echoing_them() {
        for pair in [
            "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "AWS_SESSION_TOKEN=abc",
            "HF_TOKEN=hf_x",
            "hf_token=x",
            "DB_PASSWORD=x",
            "AWS_ACCESS_KEY_ID=x",
            "OPENAI_API_KEY=x",
            "ID=AKIAIOSFODNN7EXAMPLE",
            "HUB=hf_abcdefghijklmnopqrstuvwxyzABCDEF",
            "PROXY=http://user:pa55@proxy:3128/",
        ] {
            let e = check(&["--sidecar-env", pair]).unwrap_err();
            let (name, value) = pair.split_once('=').unwrap();
            assert!(e.contains(&format!("SIDECAR_ENV) {name} ")), "{e}");
            assert!(e.contains("--sidecar-secret-env VAR=SECRET:KEY"), "{e}");
            assert!(!e.contains(value), "the error echoes the secret: {e}");
        }
        let e = check(&["--s3-endpoint", "https://k:s3cret@minio:9000"]).unwrap_err();
        assert!(e.contains("--s3-endpoint") && e.contains("password") && !e.contains("s3cret"), "{e}");
    }

    #[test]
    fn ordinary_settings_and_references_pass() {
        check(&[
            "--sidecar-env",
            "TRACE_INTERVAL=30,TARGET_PROCESS=python,PROXY=http://proxy:3128/,MAX_TOKENS_NOTE=",
            "--sidecar-secret-env",
            "AWS_SECRET_ACCESS_KEY=aws:secret,HF_TOKEN=hf:token",
            "--s3-endpoint",
            "http://minio:9000",
        ])
        .expect_err("MAX_TOKENS_NOTE is named like a token");
        check(&["--sidecar-env", "TRACE_INTERVAL=30,PROXY=http://proxy@host:3128/"]).unwrap();
        check(&["--sidecar-secret-env", "AWS_SECRET_ACCESS_KEY=aws:secret", "--s3-endpoint", "http://m:9000"]).unwrap();
    }
}
