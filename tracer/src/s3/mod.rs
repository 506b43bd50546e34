//! The S3 client every part of the tracer builds the same way (the upload,
//! `check --s3`, and `report`/`export` reading `s3://` inputs): the standard
//! credential chain, the endpoint and addressing flags, bounded timeouts,
//! and one classification of what went wrong so each caller names the fix.

use std::time::Duration;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// How to reach the store (the `--s3-endpoint`, `--s3-region`,
/// `--s3-path-style` and `--s3-timeout-secs` flags).
#[derive(Clone, Debug, Default)]
pub struct ClientSettings {
    /// For S3-compatible stores (MinIO, Ceph, R2, SeaweedFS).
    pub endpoint: Option<String>,
    /// Region; otherwise the standard chain (env, profile, IMDS).
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`).
    pub path_style: bool,
    /// The longest one request may wait for the store's answer.
    pub timeout: Duration,
}

/// The longest a connection to the store may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The SDK's timeouts for `request`: connecting, the first byte of an
/// answer and a whole attempt each within `request` (connecting within
/// [`CONNECT_TIMEOUT`] too), an operation with the SDK's own retries within
/// three times that. Without them a store that accepts and never answers
/// holds a request forever.
fn timeouts(request: Duration) -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(request.min(CONNECT_TIMEOUT))
        .read_timeout(request)
        .operation_attempt_timeout(request)
        .operation_timeout(request * 3)
        .build()
}

/// Builds a client from the standard credential chain (env variables,
/// web identity / IRSA, shared config files, instance profile).
pub async fn client(settings: &ClientSettings) -> aws_sdk_s3::Client {
    let mut loader =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(timeouts(settings.timeout));
    if let Some(region) = &settings.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    let shared = loader.load().await;
    let mut s3 = aws_sdk_s3::config::Builder::from(&shared).force_path_style(settings.path_style);
    if let Some(endpoint) = &settings.endpoint {
        s3 = s3.endpoint_url(endpoint);
    }
    if shared.region().is_none() && settings.region.is_none() {
        // S3-compatible stores ignore the region but the signer needs one.
        s3 = s3.region(aws_config::Region::new("us-east-1"));
    }
    aws_sdk_s3::Client::from_conf(s3.build())
}

/// What a failed request means for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The store refused the credentials (the code it answered).
    Credentials(String),
    NoBucket,
    /// No answer: connection refused, DNS, timeout.
    Unreachable(String),
    /// Anything else, with the SDK's whole message.
    Other(String),
}

/// Sorts a failed request into [`Failure`]. Messages never hold a
/// credential: the SDK prints neither keys nor signatures.
pub fn classify<E, R>(err: &SdkError<E, R>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match err {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            Failure::Unreachable(DisplayErrorContext(err).to_string())
        }
        _ => match err.code() {
            Some(code @ ("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied" | "ExpiredToken")) => {
                Failure::Credentials(code.to_string())
            }
            Some("NoSuchBucket") => Failure::NoBucket,
            _ => Failure::Other(DisplayErrorContext(err).to_string()),
        },
    }
}
