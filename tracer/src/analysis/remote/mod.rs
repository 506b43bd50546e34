//! `report s3://bucket/prefix` and `export chrome s3://…`: the store's
//! objects the filters may want are listed by the key layout ([`prune`],
//! never downloading what they exclude), checked ([`keys`]), downloaded
//! into a private temp dir ([`download`], 0700, removed when the report
//! ends) that mirrors the keys, and read there by the local readers.

pub mod download;
pub mod keys;
pub mod list;
mod plan;
pub mod prune;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::analysis::trace::filter::TraceFilter;
use crate::s3::{ClientSettings, Failure};

/// An `s3://bucket/prefix` input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    /// Empty, or ending with `/`.
    pub prefix: String,
}

impl S3Url {
    /// `None` for anything that does not start with `s3://`.
    pub fn parse(input: &Path) -> Option<Result<Self, RemoteError>> {
        let rest = input.to_str()?.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Some(Err(RemoteError::Url(input.display().to_string())));
        }
        let mut prefix = prefix.to_string();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Some(Ok(Self { bucket: bucket.to_string(), prefix }))
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// How to reach the store and how much to take from it.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub client: ClientSettings,
    /// The largest object downloaded (`--max-object-bytes`).
    pub max_object_bytes: u64,
    /// The most bytes one report downloads (`--max-download-bytes`).
    pub max_total_bytes: u64,
}

/// 1 GiB: a Parquet file of a day of one pod is far smaller.
pub const MAX_OBJECT_BYTES: u64 = 1 << 30;
/// 16 GiB in all.
pub const MAX_TOTAL_BYTES: u64 = 16 << 30;

/// What the store held and what of it was read, for report.json.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StoreCounts {
    pub url: String,
    /// Objects listed.
    pub listed: u64,
    /// Listed but excluded by `--since`/`--until`/`--node`/`--pod`, or a
    /// JSONL file whose Parquet twin was read instead.
    pub skipped_by_filters: u64,
    /// Listed objects that are neither trace files nor metadata.
    pub not_traces: u64,
    /// Keys refused as local paths (see [`keys::relative`]), the first few named.
    pub bad_keys: u64,
    pub bad_key_examples: Vec<String>,
    pub downloaded: u64,
    pub downloaded_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{0} is not an S3 URL: give s3://bucket or s3://bucket/prefix")]
    Url(String),
    #[error("the store refused the credentials for s3://{bucket}/{key} ({code}): check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, the IRSA role, the instance profile) and --s3-endpoint")]
    Credentials { bucket: String, key: String, code: String },
    #[error("bucket {bucket} does not exist at this endpoint: check the bucket in the s3:// URL and --s3-endpoint / S3_ENDPOINT")]
    NoBucket { bucket: String },
    #[error("the store at {endpoint} is unreachable for s3://{bucket}/{key} ({message}): check --s3-endpoint / S3_ENDPOINT and the network; --s3-timeout-secs bounds each request")]
    Unreachable { endpoint: String, bucket: String, key: String, message: String },
    #[error("reading s3://{bucket}/{key} failed: {message}")]
    Store { bucket: String, key: String, message: String },
    #[error("the body of s3://{bucket}/{key} broke off: {message}")]
    Body { bucket: String, key: String, message: String },
    #[error("the body of s3://{bucket}/{key} ({size} bytes) did not arrive within {secs} s (a stalled or trickling store): check the store and the network, or raise --s3-timeout-secs")]
    BodyDeadline { bucket: String, key: String, size: u64, secs: u64 },
    #[error("{object} would pass {max} bytes: raise {flag}, or narrow the report with --since/--until/--node/--pod")]
    Cap { object: String, flag: &'static str, max: u64 },
    #[error("more than {max} objects listed: narrow the report with --since/--until/--node/--pod or a longer prefix")]
    TooManyObjects { max: usize },
    #[error("{path}: {source}")]
    Local { path: PathBuf, source: std::io::Error },
}

impl RemoteError {
    /// A failed request, classified the way uploads classify theirs.
    pub fn store<E, R>(bucket: &str, key: &str, err: &aws_sdk_s3::error::SdkError<E, R>) -> Self
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let (bucket, key) = (bucket.to_string(), key.to_string());
        match crate::s3::classify(err) {
            Failure::Credentials(code) => Self::Credentials { bucket, key, code },
            Failure::NoBucket => Self::NoBucket { bucket },
            Failure::Unreachable(message) => Self::Unreachable { endpoint: String::new(), bucket, key, message },
            Failure::Other(message) => Self::Store { bucket, key, message },
        }
    }
}

impl RemoteError {
    /// Names the endpoint in an unreachable store's error.
    fn at(self, endpoint: Option<&str>) -> Self {
        match self {
            Self::Unreachable { bucket, key, message, .. } => {
                let endpoint = endpoint.unwrap_or("the region's AWS endpoint").to_string();
                Self::Unreachable { endpoint, bucket, key, message }
            }
            other => other,
        }
    }
}

/// A prefix downloaded: its objects lie under `root` as under the prefix.
pub struct Fetched {
    pub url: S3Url,
    pub root: PathBuf,
    pub counts: StoreCounts,
    /// Removed (with everything in it) when dropped.
    _dir: tempfile::TempDir,
}

impl Fetched {
    /// The object a local path under `root` was downloaded from.
    pub fn object_of(&self, path: &Path) -> Option<PathBuf> {
        let rel = path.strip_prefix(&self.root).ok()?;
        Some(PathBuf::from(format!("{}{}", self.url, rel.display())))
    }
}

/// Downloads what `filter` may want of `url` into a new private temp dir.
/// Blocking: runs its own small runtime.
pub fn fetch(url: &S3Url, opts: &StoreOptions, filter: &TraceFilter) -> Result<Fetched, RemoteError> {
    let local = |source| RemoteError::Local { path: std::env::temp_dir(), source };
    use std::os::unix::fs::PermissionsExt as _;
    let private = std::fs::Permissions::from_mode(0o700);
    let dir = tempfile::Builder::new().prefix("cuda-tracer-s3-").permissions(private).tempdir().map_err(local)?;
    let root = dir.path().join("store");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(local)?;
    let counts = runtime.block_on(async {
        let client = crate::s3::client(&opts.client).await;
        plan::fetch_into(&client, url, opts, filter, &root).await
    });
    let counts = counts.map_err(|e| e.at(opts.client.endpoint.as_deref()))?;
    Ok(Fetched { url: url.clone(), root, counts, _dir: dir })
}
